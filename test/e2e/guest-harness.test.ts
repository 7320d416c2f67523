/**
 * Self-test of the guest harness (test/lib/guest.ts) against
 * qemu-storage-daemon as the vhost-user-blk back-end: proves the guest image,
 * the markers and the checks that guest-blk.test.ts runs against vhostd work
 * with a known-good back-end. Skipped when qemu-storage-daemon is absent.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { bootGuest } from '../lib/guest';
import { assertCompleted, assertFioOverQueues, assertGeometry } from '../lib/guest-checks';
import { fioVerify, probeDisk, readPattern, trimAndFlush, tryWrite, writePattern } from '../lib/guest-scripts';
import { haveQsd, startQsd } from '../lib/qsd';

t.setTimeout(900_000);

const SIZE_BYTES = 256 * 1024 * 1024;

t.test('the harness reports failures and timeouts', async (t) => {
  const run = await bootGuest({
    sockets: [],
    script: 'check good true\ncheck bad false\nvalue answer 42 and more\ncheck sg sg_inq --version\ncheck nvme nvme version\nexit 7',
    timeoutMs: 120_000,
  });
  t.equal(run.results.get('sg'), 0, 'sg3-utils run in the guest (their libraries are in the image)');
  t.equal(run.results.get('nvme'), 0, 'nvme-cli runs in the guest');
  t.equal(run.timedOut, false, 'guest finished');
  t.equal(run.results.get('good'), 0, 'a passing check reports 0');
  t.equal(run.results.get('bad'), 1, 'a failing check reports its status');
  t.equal(run.values.get('answer'), '42 and more', 'values carry the rest of the line');
  t.equal(run.exitCode, 7, "the script's exit status comes back");

  const hung = await bootGuest({ sockets: [], script: 'echo @@HANGING\nsleep 3600', timeoutMs: 45_000 });
  t.equal(hung.timedOut, true, 'a hung guest is killed at the timeout');
  t.equal(hung.exitCode, null, 'and reports no exit status');
  t.match(hung.output, /@@HANGING/, 'its console output up to then is kept');
});

t.test('guest harness against qemu-storage-daemon', async (t) => {
  // .ci/run installs qemu-system-common; without the peer this test must fail, not vanish.
  t.ok(haveQsd(), 'qemu-storage-daemon is installed (Debian package qemu-system-common)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-harness-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const image = path.join(dir, 'disk.img');

  await t.test('read-write disk: geometry, 2 queues, fio verify, trim, flush, data kept', async (t) => {
    const socketPath = path.join(dir, 'rw.sock');
    const qsd = await startQsd({ image, sizeBytes: SIZE_BYTES, socketPath, numQueues: 2 });
    t.teardown(() => qsd.stop());
    const run = await bootGuest({
      sockets: [{ path: socketPath, kind: 'blk', numQueues: 2 }],
      script: probeDisk() + fioVerify({ jobs: 2, sizeMiB: 32, runtimeS: 20 }) + trimAndFlush() + writePattern(4),
      memMiB: 512,
      smp: 2,
      timeoutMs: 300_000,
    });
    assertCompleted(t, run, 'first boot');
    assertGeometry(t, run, { sectors: SIZE_BYTES / 512, ro: 0, hwq: 2 });
    assertFioOverQueues(t, run, 2);
    t.equal(run.results.get('discard'), 0, 'blkdiscard passed');
    t.equal(run.results.get('flush'), 0, 'fio with fsync passed');
    t.equal(run.results.get('write'), 0, 'pattern written');
    const written = run.values.get('written');
    t.match(written, /^[0-9a-f]{64}$/, 'pattern hash reported');
    await qsd.stop();

    // Second boot, new back-end process over the same image: the data is there.
    const qsd2 = await startQsd({ image, sizeBytes: SIZE_BYTES, socketPath, numQueues: 2 });
    t.teardown(() => qsd2.stop());
    const run2 = await bootGuest({
      sockets: [{ path: socketPath, kind: 'blk', numQueues: 2 }],
      script: probeDisk() + readPattern(4),
      timeoutMs: 120_000,
    });
    assertCompleted(t, run2, 'second boot');
    t.equal(run2.values.get('read'), written, 'data written in the first boot reads back in the second');
  });

  await t.test('read-only export: ro=1, writes fail, reads work', async (t) => {
    const socketPath = path.join(dir, 'ro.sock');
    const qsd = await startQsd({ image, sizeBytes: SIZE_BYTES, socketPath, numQueues: 1, readonly: true });
    t.teardown(() => qsd.stop());
    const run = await bootGuest({
      sockets: [{ path: socketPath, kind: 'blk', numQueues: 1 }],
      script: probeDisk() + tryWrite(),
      timeoutMs: 120_000,
    });
    assertCompleted(t, run, 'read-only boot');
    assertGeometry(t, run, { sectors: SIZE_BYTES / 512, ro: 1, hwq: 1 });
    t.not(run.results.get('rowrite'), undefined, 'write was attempted');
    t.not(run.results.get('rowrite'), 0, 'write fails');
    t.equal(run.results.get('roread'), 0, 'read works');
  });
});
