/**
 * `npm run bench -- --peer spdk` pieces that need no SPDK: bdevperf's output
 * parsed (a real v23.05 `-l` run, test/fixtures/spdk-v23.05-bdevperf-l.txt,
 * with its carriage returns), the SPDK build lookup (SPDK_DIR, absent and
 * present), and the table rows (medians, ratios, IOPS per busy core from
 * each target's busy source). Thread: test main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { processCpuSec } from '../../bench/lib/env';
import { findSpdk, parseBdevperf } from '../../bench/lib/spdk';
import { peerMain, peerRows, peerTable } from '../../bench/peer';
import type { RoundsCase, Run } from '../../bench/lib/rounds';
import { repoRoot } from '../lib/repo';

const FIXTURE = path.join(repoRoot(), 'test', 'fixtures', 'spdk-v23.05-bdevperf-l.txt');

t.test('parseBdevperf: Total line and the latency summary', async (t) => {
  const text = fs.readFileSync(FIXTURE, 'utf8');
  t.ok(text.includes('\r'), 'the fixture keeps bdevperf\'s carriage returns');
  t.same(parseBdevperf(text), { iops: 40325.66, latMeanUs: 99, latP50Us: 2.092, latP99Us: 3.249, errors: 0 });
  const failing = text.replace(/(Total\s*:\s*[\d.]+\s+[\d.]+\s+)0\.00/, '$10.40');
  t.equal(parseBdevperf(failing)?.errors, 1, 'a failure rate counts as errors');
  t.equal(parseBdevperf(text.replace(/^\s*Total\s*:.*$/m, '')), null, 'no Total line');
  t.equal(parseBdevperf(text.replace(/^\s*99\.00000%.*$/m, '')), null, 'no p99');
});

t.test('findSpdk: SPDK_DIR only, an executable vhost, bdevperf optional', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-spdk-'));
  t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));
  const dir = path.join(work, 'spdk');
  const missing = findSpdk({ SPDK_DIR: dir });
  t.ok('missing' in missing && missing.missing.includes(dir) && missing.missing.includes('build-spdk.sh'), 'absent: the reason names the place and the build script');
  fs.mkdirSync(path.join(dir, 'build', 'bin'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'build', 'bin', 'vhost'), '#!/bin/sh\n', { mode: 0o644 });
  t.ok('missing' in findSpdk({ SPDK_DIR: dir }), 'not executable: absent');
  fs.chmodSync(path.join(dir, 'build', 'bin', 'vhost'), 0o755);
  t.same(findSpdk({ SPDK_DIR: dir }), { dir, vhost: path.join(dir, 'build', 'bin', 'vhost'), bdevperf: null, interruptTgt: null });
  t.same(findSpdk({ SPDK_WORK: work }), findSpdk({ SPDK_DIR: dir }), 'without SPDK_DIR: $SPDK_WORK/spdk (build-spdk.sh\'s place)');
  fs.mkdirSync(path.join(dir, 'build', 'examples'));
  fs.writeFileSync(path.join(dir, 'build', 'examples', 'bdevperf'), '#!/bin/sh\n', { mode: 0o755 });
  t.equal((findSpdk({ SPDK_DIR: dir }) as { bdevperf: string }).bdevperf, path.join(dir, 'build', 'examples', 'bdevperf'));
  t.ok('missing' in findSpdk({ SPDK_DIR: path.join(work, 'nope'), SPDK_WORK: work }), 'SPDK_DIR set: only there');
});

t.test('processCpuSec (the busy time of QSD, every target\'s CPU): this process has used some CPU; a gone pid is null', async (t) => {
  const s = processCpuSec(process.pid);
  t.ok(s !== null && s >= 0);
  t.equal(processCpuSec(2 ** 22 + 7), null);
});

t.test('peerRows: medians per target, ratios, busy source per target', async (t) => {
  const variants = (['vhostd', 'spdk', 'qsd'] as const).map((target) => ({ key: `${target}.perf`, name: target, target, gen: 'perf' as const }));
  const runs: Run[] = [
    { variant: 'vhostd.perf', round: 0, iops: 100, latMeanUs: 10, latP50Us: 9, latP99Us: 20, loadAvg1: 1, extra: { busySec: 1, cpuSec: 2, ioSec: 2 } },
    { variant: 'spdk.perf', round: 0, iops: 200, latMeanUs: 5, latP50Us: 4, latP99Us: 8, loadAvg1: 2, extra: { busySec: 0.5, cpuSec: 2, ioSec: 2 } },
    { variant: 'qsd.perf', round: 0, iops: 50, latMeanUs: 20, loadAvg1: 1.5, extra: { busySec: 9, cpuSec: 1, ioSec: 2 } },
    { variant: 'vhostd.perf', round: 1, iops: 300, latMeanUs: 10, latP50Us: 11, latP99Us: 30, loadAvg1: 3, extra: { busySec: 2, cpuSec: 2, ioSec: 2 } },
    { variant: 'spdk.perf', round: 1, error: 'boom', loadAvg1: 2 },
    { variant: 'qsd.perf', round: 1, iops: 70, latMeanUs: 20, loadAvg1: 1, extra: { cpuSec: 1, ioSec: 2 } },
  ];
  const c: RoundsCase = { id: 'null-randread-4k-qd1', kind: 'null', rw: 'randread', qd: 1, runs };
  const [row] = peerRows([c], variants);
  t.same(row!.iops, { vhostd: 200, spdk: 200, qsd: 60 });
  t.same(row!.p50Us, { vhostd: 10, spdk: 4, qsd: undefined });
  // vhostd: (100*2/1 + 300*2/2)/2 = 250; SPDK by its own busy: 200*2/0.5; QSD by /proc CPU: 50*2/1, 70*2/1.
  t.same(row!.perBusyCore, { vhostd: 250, spdk: 800, qsd: 120 });
  t.equal(row!.spdkPerCpuCore, 200);
  t.equal(row!.rounds, 1, 'rounds: the fewest good runs of a target');
  t.equal(row!.failed, 1);
  t.same(row!.load, [1, 3]);
  const table = peerTable([row!]);
  t.match(table[2], /^\| perf \| null-randread-4k-qd1 \| 200 \| 200 \| 60 \| 1\.00 \| 3\.33 \|/);
  t.match(table[2], /\| 250 \/ 800 \/ 120 \| 0\.31, 2\.08 \| 200 \| 1 \(1 failed\) \| 1\.0–3\.0 \|$/);
});

t.test('peerMain: no SPDK build → exit 3 before anything starts; bad usage → 2', async (t) => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'no-spdk-'));
  const saved = process.env.SPDK_DIR;
  t.teardown(() => {
    if (saved === undefined) delete process.env.SPDK_DIR;
    else process.env.SPDK_DIR = saved;
    fs.rmSync(empty, { recursive: true, force: true });
  });
  process.env.SPDK_DIR = empty;
  t.equal(await peerMain(['--peer', 'spdk', '--runs', '1'], repoRoot()), 3);
  t.equal(await peerMain(['--peer', 'qemu'], repoRoot()), 2);
  t.equal(await peerMain(['--peer', 'spdk', '--targets', 'vhostd,xyz'], repoRoot()), 2);
  t.equal(await peerMain(['--peer', 'spdk', '--qds', '0'], repoRoot()), 2);
});
