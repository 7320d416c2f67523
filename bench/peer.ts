/**
 * `npm run bench -- --peer spdk` (issue #12 items 4 and 5): vhostd, SPDK's own
 * vhost app and qemu-storage-daemon side by side. Each target serves one
 * bdev (null or malloc, 512-byte blocks) as a vhost-user-blk controller on
 * core 1 and is started fresh for every run (a poll-mode target burns its
 * core while it lives, so two never run at once); the runs of one case
 * alternate between the targets round by round (bench/lib/rounds.ts). Two
 * generators on core 0, each against all three targets:
 *   perf      vhostd-perf with --hugepages (SPDK's vhost maps only 2 MiB hugepage memory)
 *   bdevperf  SPDK's bdevperf with its virtio-user initiator, so no figure depends on vhostd's own generator
 * Per run: IOPS, mean/p50/p99 latency, the target's busy seconds — vhostd's
 * engine workers and SPDK's threads from their own accounting
 * (thread_get_stats), and every target's CPU seconds from
 * /proc/PID/stat (qemu-storage-daemon sleeps when idle, so that is its busy
 * time; a poll-mode SPDK's is all of its core) — giving IOPS per busy
 * target core. Then (--idle-sec > 0) the idle cost of each mode with
 * --idle-devs controllers and no front-end. Report: Markdown (vhostd/SPDK,
 * vhostd/QSD) and JSON in bench/results. Needs root (hugepages) and an SPDK
 * build (bench/lib/spdk.ts findSpdk); exit 3 with the reason when there is
 * none, 2 on bad usage, 1 when a run failed. Main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runPerf } from './perf/perf';
import { rpcCall } from '../test/lib/rpc';
import { GENERATOR_CORE, type JobSpec, type Kind, type RoundsCase, type Run, type RunFigures, TARGET_CORE, alternateRounds, goodRuns, median, parseRoundsOptions, roundsUsage, writeRoundsReport } from './lib/rounds';
import { type SpdkBuild, ensureHugepages, findSpdk, runBdevperf, spdkSocket, startSpdk, threadBusySec } from './lib/spdk';
import { processCpuSec } from './lib/env';
import { createShmFile, startQsdTarget, startVhostdTarget } from './lib/targets';

type Target = 'vhostd' | 'spdk' | 'qsd';
type Gen = 'perf' | 'bdevperf';
const TARGETS: readonly Target[] = ['vhostd', 'spdk', 'qsd'];
const GENS: readonly Gen[] = ['perf', 'bdevperf'];
const BLOCK_SIZE = 512;
const CTRLR = 'bench0';
/**
 * Why bdevperf does not drive qemu-storage-daemon: SPDK v23.05's virtio-user
 * initiator reads the whole virtio-blk config space with GET_CONFIG and
 * refuses QEMU 7.2's reply ("Received bad msg size", then "config read
 * failed" and bdev_virtio_attach_controller fails): seen on every attempt.
 */
const QSD_BDEVPERF = "SPDK v23.05's virtio-user initiator rejects qemu-storage-daemon 7.2's GET_CONFIG reply (\"Received bad msg size\")";
const IDLE_MODES = ['spdk:poll', 'spdk:interrupt', 'vhostd:poll', 'vhostd:adaptive', 'vhostd:interrupt'];

const EXTRA_USAGE = `
  --peer spdk         (required) SPDK's vhost app as the peer; found in $SPDK_DIR, else
                      $SPDK_WORK/spdk or /var/tmp/spdk-work/spdk (../shared/peers/build-spdk.sh)
  --targets T,...     vhostd,spdk,qsd (default all three)
  --gens G,...        perf (vhostd-perf --hugepages), bdevperf (SPDK's) (default both)
  --idle-sec S        idle cost per mode over S seconds after the cases (default 5; 0: skip)
  --idle-devs N       controllers for the idle cost (default 16)
  --idle-modes M,...  target:mode (default ${IDLE_MODES.join(',')})
  --indirect          perf: each request one descriptor pointing at a table of three, as Linux guests
                      build them (VIRTIO_F_RING_INDIRECT_DESC; bdevperf's initiator does not)
Needs root (2 MiB hugepages). Exit 3 when there is no SPDK build.`;

interface Variant {
  key: string;
  name: string;
  target: Target;
  gen: Gen;
}

function listOption<T extends string>(text: string | boolean | undefined, all: readonly T[], what: string): T[] {
  if (typeof text !== 'string') return [...all];
  const xs = text.split(',').filter((s) => s !== '');
  for (const x of xs) if (!(all as readonly string[]).includes(x)) throw new Error(`--${what}: unknown ${x} (${all.join(', ')})`);
  return xs as T[];
}

/** I/Os per busy second: completed I/Os over the run (IOPS × the seconds the generator kept it busy) / busy seconds. */
function perBusy(r: Run, busyKey: 'busySec' | 'cpuSec'): number | undefined {
  const busy = r.extra?.[busyKey];
  const ioSec = r.extra?.ioSec;
  if (r.iops === undefined || busy === undefined || ioSec === undefined || !(busy > 0)) return undefined;
  return (r.iops * ioSec) / busy;
}

/** Busy seconds of a target the table uses: vhostd and SPDK by their own accounting, QSD by /proc. */
function busyKeyOf(t: Target): 'busySec' | 'cpuSec' {
  return t === 'qsd' ? 'cpuSec' : 'busySec';
}

export interface PeerRow {
  gen: Gen;
  id: string;
  iops: Partial<Record<Target, number>>;
  p50Us: Partial<Record<Target, number>>;
  p99Us: Partial<Record<Target, number>>;
  perBusyCore: Partial<Record<Target, number>>;
  /** SPDK's IOPS per CPU core by /proc (its poll-mode reactor: all of the core). */
  spdkPerCpuCore?: number;
  rounds: number;
  failed: number;
  load: [number, number] | null;
}

/** The table rows: per generator and case, medians over rounds per target. */
export function peerRows(cases: readonly RoundsCase[], variants: readonly Variant[]): PeerRow[] {
  const rows: PeerRow[] = [];
  for (const gen of GENS) {
    for (const c of cases) {
      const vs = variants.filter((v) => v.gen === gen);
      if (vs.length === 0) continue;
      const row: PeerRow = { gen, id: c.id, iops: {}, p50Us: {}, p99Us: {}, perBusyCore: {}, rounds: 0, failed: 0, load: null };
      const loads: number[] = [];
      let rounds = Infinity;
      for (const v of vs) {
        const good = goodRuns(c.runs, v.key);
        rounds = Math.min(rounds, good.length);
        row.failed += c.runs.filter((r) => r.variant === v.key && r.error !== undefined).length;
        for (const r of c.runs) if (r.variant === v.key && r.loadAvg1 !== undefined) loads.push(r.loadAvg1);
        const med = (f: (r: Run) => number | undefined): number | undefined => median(good.map(f).filter((x): x is number => x !== undefined)) ?? undefined;
        row.iops[v.target] = med((r) => r.iops);
        row.p50Us[v.target] = med((r) => r.latP50Us);
        row.p99Us[v.target] = med((r) => r.latP99Us);
        row.perBusyCore[v.target] = med((r) => perBusy(r, busyKeyOf(v.target)));
        if (v.target === 'spdk') row.spdkPerCpuCore = med((r) => perBusy(r, 'cpuSec'));
      }
      row.rounds = rounds === Infinity ? 0 : rounds;
      row.load = loads.length > 0 ? [Math.min(...loads), Math.max(...loads)] : null;
      rows.push(row);
    }
  }
  return rows;
}

function num(x: number | undefined, digits = 0): string {
  return x === undefined ? '–' : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || !(b > 0) ? '–' : (a / b).toFixed(2);
}

export function peerTable(rows: readonly PeerRow[]): string[] {
  const lines = [
    '| gen | case | vhostd IOPS | SPDK IOPS | QSD IOPS | vhostd/SPDK | vhostd/QSD | p50 µs vhostd / SPDK / QSD | p99 µs vhostd / SPDK / QSD | IOPS/busy core vhostd / SPDK / QSD | per busy core vhostd/SPDK, vhostd/QSD | SPDK IOPS/CPU core (/proc) | rounds | load |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const trio = (m: Partial<Record<Target, number>>, d: number): string => `${num(m.vhostd, d)} / ${num(m.spdk, d)} / ${num(m.qsd, d)}`;
    lines.push(
      `| ${r.gen} | ${r.id} | ${num(r.iops.vhostd)} | ${num(r.iops.spdk)} | ${num(r.iops.qsd)} | ${ratio(r.iops.vhostd, r.iops.spdk)} | ${ratio(r.iops.vhostd, r.iops.qsd)} ` +
        `| ${trio(r.p50Us, 1)} | ${trio(r.p99Us, 1)} | ${trio(r.perBusyCore, 0)} | ${ratio(r.perBusyCore.vhostd, r.perBusyCore.spdk)}, ${ratio(r.perBusyCore.vhostd, r.perBusyCore.qsd)} ` +
        `| ${num(r.spdkPerCpuCore)} | ${r.rounds}${r.failed > 0 ? ` (${r.failed} failed)` : ''} | ${r.load === null ? '–' : `${r.load[0].toFixed(1)}–${r.load[1].toFixed(1)}`} |`,
    );
  }
  return lines;
}

interface IdleResult {
  target: string;
  mode: string;
  devs: number;
  cpuPctOfCore?: number;
  busySec?: number;
  load: number;
  error?: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The idle cost of one target mode: `devs` controllers on 1 MiB malloc bdevs, no front-end, CPU over `sec`. */
async function idleCost(repo: string, build: SpdkBuild, spec: string, devs: number, sec: number, memMiB: number): Promise<IdleResult> {
  const [target, mode] = spec.split(':') as [string, string];
  const load = Math.round(os.loadavg()[0]! * 100) / 100;
  let t: { pid: number; rpcSocket?: string; stop(): Promise<void> } | undefined;
  try {
    if (target === 'spdk') {
      if (mode !== 'poll' && mode !== 'interrupt') throw new Error(`SPDK modes: poll, interrupt (not ${mode})`);
      t = await startSpdk({ build, core: TARGET_CORE, memMiB, interrupt: mode === 'interrupt' });
    } else if (target === 'vhostd') {
      t = await startVhostdTarget({ repo, kind: 'null', sizeBytes: 1 << 20, shmFile: '', core: TARGET_CORE, vhostdArgs: ['--poll-mode', mode, '--disable-cpumask-locks'] });
    } else throw new Error(`idle: unknown target ${target}`);
    const rpc = t.rpcSocket as string;
    const mask = `0x${(1 << TARGET_CORE).toString(16)}`;
    for (let i = 0; i < devs; i++) {
      await rpcCall(rpc, 'bdev_malloc_create', { name: `Idle${i}`, num_blocks: 2048, block_size: BLOCK_SIZE });
      await rpcCall(rpc, 'vhost_create_blk_controller', { ctrlr: `idle${i}`, dev_name: `Idle${i}`, cpumask: mask });
    }
    await sleep(2000);
    const c0 = processCpuSec(t.pid);
    const b0 = await threadBusySec(rpc);
    const w0 = process.hrtime.bigint();
    await sleep(sec * 1000);
    const c1 = processCpuSec(t.pid);
    const b1 = await threadBusySec(rpc);
    const wall = Number(process.hrtime.bigint() - w0) / 1e9;
    const r: IdleResult = { target, mode, devs, load };
    if (c0 !== null && c1 !== null) r.cpuPctOfCore = (100 * (c1 - c0)) / wall;
    if (b0 !== null && b1 !== null) r.busySec = b1 - b0;
    return r;
  } catch (err) {
    return { target, mode, devs, load, error: (err as Error).message.split('\n')[0] };
  } finally {
    await t?.stop();
  }
}

export async function peerMain(argv: string[], repo: string): Promise<number> {
  const usage = roundsUsage('peer spdk', 'each target in turn', '1,32,128') + EXTRA_USAGE;
  const o = parseRoundsOptions(
    argv,
    'peer',
    usage,
    '1,32,128',
    { targets: { type: 'string' }, gens: { type: 'string' }, 'idle-sec': { type: 'string' }, 'idle-devs': { type: 'string' }, 'idle-modes': { type: 'string' }, indirect: { type: 'boolean' } },
    'string',
  );
  if (typeof o === 'number') return o;
  let targets: Target[];
  let gens: Gen[];
  let idleModes: string[];
  const idleSec = Number(o.more['idle-sec'] ?? 5);
  const idleDevs = Number(o.more['idle-devs'] ?? 16);
  const indirect = o.more.indirect === true;
  try {
    if (argv[argv.indexOf('--peer') + 1] !== 'spdk' && !argv.includes('--peer=spdk')) throw new Error('--peer: only spdk is known');
    targets = listOption(o.more.targets, TARGETS, 'targets');
    gens = listOption(o.more.gens, GENS, 'gens');
    idleModes = listOption(o.more['idle-modes'], IDLE_MODES, 'idle-modes');
    if (!(idleSec >= 0) || !Number.isSafeInteger(idleDevs) || idleDevs < 1 || idleDevs > 256) throw new Error('bad --idle-sec or --idle-devs');
  } catch (err) {
    process.stderr.write(`bench --peer: ${(err as Error).message}\n${usage}\n`);
    return 2;
  }
  const found = findSpdk();
  if ('missing' in found) {
    process.stderr.write(`bench --peer spdk: not run: ${found.missing}\n`);
    return 3;
  }
  const build = found;
  if (gens.includes('bdevperf') && build.bdevperf === null) {
    process.stderr.write(`bench --peer spdk: no build/examples/bdevperf in ${build.dir}: the bdevperf generator is skipped\n`);
    gens = gens.filter((g) => g !== 'bdevperf');
  }
  // SPDK's app: the malloc bdev plus its own pools in hugepage memory; bdevperf -s 512 and vhostd-perf's memfd beside it.
  const spdkMemMiB = Math.max(1024, o.sizeMiB + 512);
  try {
    ensureHugepages(Math.ceil((spdkMemMiB + 512 + 256) / 2));
  } catch (err) {
    process.stderr.write(`bench --peer spdk: not run: hugepages: ${(err as Error).message} (needs root)\n`);
    return 3;
  }
  const variants: Variant[] = gens.flatMap((gen) =>
    targets.filter((target) => !(target === 'qsd' && gen === 'bdevperf')).map((target) => ({ key: `${target}.${gen}`, name: `${target}/${gen}`, target, gen })),
  );
  if (targets.includes('qsd') && gens.includes('bdevperf')) process.stderr.write(`bench --peer spdk: qsd/bdevperf skipped: ${QSD_BDEVPERF}\n`);
  const startedAt = new Date();
  process.stderr.write(`bench --peer spdk: SPDK ${build.dir}; targets on core ${TARGET_CORE}, generators on core ${GENERATOR_CORE}; load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
  const shmFile = path.join('/dev/shm', `vhostd-peer-${process.pid}.img`);
  const sizeBytes = o.sizeMiB * 2 ** 20;
  const mask = `0x${(1 << TARGET_CORE).toString(16)}`;

  const attach = async (kind: Kind, v: Variant) => {
    let t: { pid: number; rpcSocket?: string; socketPath: string; stop(): Promise<void>; log(): string };
    if (v.target === 'spdk') {
      const s = await startSpdk({ build, core: TARGET_CORE, memMiB: spdkMemMiB });
      try {
        await rpcCall(s.rpcSocket, kind === 'null' ? 'bdev_null_create' : 'bdev_malloc_create', { name: 'B0', num_blocks: sizeBytes / BLOCK_SIZE, block_size: BLOCK_SIZE });
        await rpcCall(s.rpcSocket, 'vhost_create_blk_controller', { ctrlr: CTRLR, dev_name: 'B0', cpumask: mask });
      } catch (err) {
        await s.stop();
        throw err;
      }
      t = { ...s, socketPath: spdkSocket(s, CTRLR) };
    } else {
      // Like SPDK's (--disable-cpumask-locks): other vhostd instances on the machine must not stop the run.
      const cfg = { repo, kind, sizeBytes, shmFile, core: TARGET_CORE, vhostdArgs: ['--disable-cpumask-locks'] };
      t = v.target === 'vhostd' ? await startVhostdTarget(cfg) : await startQsdTarget(cfg);
    }
    // The busy time the target reports itself: vhostd's engine workers, all of SPDK's threads.
    const busy = async (): Promise<number | null> =>
      t.rpcSocket === undefined ? null : threadBusySec(t.rpcSocket, v.target === 'vhostd' ? (name) => name.startsWith('engine_') : undefined);
    return {
      async measure(job: JobSpec): Promise<RunFigures> {
        const b0 = await busy();
        const c0 = processCpuSec(t.pid);
        const w0 = process.hrtime.bigint();
        let f: RunFigures;
        let ioSec: number;
        try {
          if (v.gen === 'perf') {
            const r = await runPerf({ ...job, socketPath: t.socketPath, eventIdx: true, hugepages: true, indirect });
            f = { iops: r.iops, latMeanUs: r.latencyNs.mean / 1000, latP50Us: r.latencyNs.p50 / 1000, latP99Us: r.latencyNs.p99 / 1000, descheduledSec: r.cpu.stallSec, errors: r.errors };
            ioSec = (job.runtimeSec ?? 0) + (job.rampSec ?? 0);
          } else {
            f = await runBdevperf(build, { socketPath: t.socketPath, rw: job.rw as 'randread' | 'randwrite', blockSizeBytes: job.blockSizeBytes ?? 4096, iodepth: job.iodepth ?? 1, runtimeSec: job.runtimeSec ?? 5, cpu: job.cpu ?? GENERATOR_CORE });
            ioSec = job.runtimeSec ?? 5;
          }
        } catch (err) {
          throw new Error(`${(err as Error).message}\n${t.log().split('\n').slice(-10).join('\n')}`);
        }
        const wallSec = Number(process.hrtime.bigint() - w0) / 1e9;
        const c1 = processCpuSec(t.pid);
        const b1 = await busy();
        const extra: Record<string, number> = { wallSec, ioSec };
        if (c0 !== null && c1 !== null) extra.cpuSec = c1 - c0;
        if (b0 !== null && b1 !== null) extra.busySec = b1 - b0;
        return { ...f, extra };
      },
      detach: () => t.stop(),
    };
  };

  let cases: RoundsCase[] = [];
  const idle: IdleResult[] = [];
  try {
    cases = await alternateRounds(o, variants, async (kind) => {
      if (kind === 'malloc' && targets.includes('qsd')) createShmFile(shmFile, sizeBytes);
      return {
        attach: (v) => attach(kind, v),
        close: async () => fs.rmSync(shmFile, { force: true }),
      };
    });
    if (idleSec > 0) {
      for (const spec of idleModes) {
        const r = await idleCost(repo, build, spec, idleDevs, idleSec, spdkMemMiB);
        idle.push(r);
        process.stderr.write(`idle ${spec}: ${r.error ?? `${r.cpuPctOfCore?.toFixed(2)} % of a core`} (load ${r.load})\n`);
      }
    }
  } finally {
    fs.rmSync(shmFile, { force: true });
  }

  const rows = peerRows(cases, variants);
  const lines = [
    `# vhostd / SPDK vhost / qemu-storage-daemon (${startedAt.toISOString()})`,
    '',
    `SPDK: ${build.dir}. Each target started fresh per run on core ${TARGET_CORE} (vhostd -m, SPDK -m + taskset, QSD taskset) with one ${o.sizeMiB} MiB bdev (512-byte blocks; QSD: null-co, malloc = a /dev/shm file); ` +
      `generators on core ${GENERATOR_CORE}: perf = vhostd-perf --hugepages with EVENT_IDX${indirect ? ' and indirect descriptors' : ''} (${o.rampSec} s ramp), bdevperf = SPDK's virtio-user initiator (-l). ` +
      `${o.runs} rounds, targets alternating, ${o.runtimeSec} s measured; 4 KiB, 1 queue; medians. Busy core: vhostd's engine workers and SPDK's threads by thread_get_stats, QSD by /proc/PID/stat; ` +
      `SPDK IOPS/CPU core uses its /proc CPU time instead. Load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}.`,
    '',
    ...peerTable(rows),
    '',
    ...(targets.includes('qsd') && gens.includes('bdevperf') ? [`QSD with bdevperf: not measured: ${QSD_BDEVPERF}.`, ''] : []),
  ];
  if (idle.length > 0) {
    lines.push(`Idle: ${idleDevs} controllers on 1 MiB malloc bdevs, no front-end, ${idleSec} s (SPDK interrupt = examples/interrupt_tgt -E).`, '');
    lines.push('| target | mode | CPU % of one core (/proc) | busy s (thread_get_stats) | load |', '|---|---|---|---|---|');
    for (const r of idle) lines.push(`| ${r.target} | ${r.mode} | ${r.error !== undefined ? `failed: ${r.error}` : num(r.cpuPctOfCore, 2)} | ${num(r.busySec, 3)} | ${r.load} |`);
    lines.push('');
  }
  const json = { startedAt: startedAt.toISOString(), spdk: build.dir, targets, gens, options: { ...o, more: undefined }, cases, rows, idle };
  const rc = writeRoundsReport(repo, 'peer-spdk', o, startedAt, lines.join('\n'), json, cases);
  return rc !== 0 || idle.some((r) => r.error !== undefined) ? 1 : 0;
}
