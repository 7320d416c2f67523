/**
 * The bench runner (issue #5 part 2): vhostd against qemu-storage-daemon, in
 * one sitting, with the same kind of bdev, on the same core, driven by the
 * native load generator (vhostd-perf) on another core.
 *
 *   node dist/bench/run.js [--quick] [--runs N] [--cases PATTERN,...] [--runtime S] [--ramp S]
 *                          [--kinds null,malloc,uring] [--out DIR] [--qsd-iothread] [--no-event-idx] [--inflight]
 *
 * For every case of the matrix (bdev null/malloc/uring × rw randread/randwrite
 * × bs 4k/64k × QD 1/32/128) it runs vhostd, then qemu-storage-daemon, then
 * vhostd again…, `--runs` times each, each run on a freshly started daemon
 * (vhostd busy-polls its core while it lives, so the two never run at once).
 * One progress line per case goes to stderr. At the end it writes
 * <out>/<date>.json (every run, the environment, the load average),
 * <out>/<date>.md (medians, min–max, vhostd/QSD ratio per case) and
 * <out>/<date>.svg (a bar chart of the ratios), and prints the Markdown.
 *
 * `--quick`: one run each, null 4k randread QD32 only, 1 s measured — for the
 * smoke test. Exit status: 0 when every run succeeded, 1 when some failed,
 * 2 on bad usage. Main thread; the I/O loop runs on the generator's native thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runPerf } from './perf/perf';
import { svgChart, svgLatencyChart } from './chart';
import { collectEnvironment, processCpuSec } from './lib/env';
import {
  type BenchCaseResult,
  type BenchCaseSpec,
  type BenchOptionsRecord,
  type BenchResults,
  type BenchRun,
  type BenchRw,
  RESULTS_SCHEMA,
  summarizeCase,
} from './lib/results';
import { shortCount } from './lib/stats';
import {
  BDEV_KINDS,
  BLOCK_SIZE,
  type BdevKind,
  type RunningTarget,
  type TargetConfig,
  type TargetName,
  createShmFile,
  probeVhostdKinds,
  startTarget,
} from './lib/targets';
import { markdownReport } from './report';
import { ringsMain } from './rings';
import { scsiMain } from './scsi';
import { nvmeMain } from './nvme';
import { peerMain } from './peer';
import { exitWhenDone } from '../reactor/cli-exit';

const USAGE = `usage: node dist/bench/run.js [options]
  --quick              one run each, null 4k randread QD32 only, 1 s measured (smoke use)
  --runs N             runs per target per case, alternating vhostd / QSD (default 3)
  --runtime S          measured seconds per run (default 5; quick 1)
  --ramp S             warm-up seconds per run (default 1; quick 0.5)
  --cases P,...        only cases whose id matches a pattern (* wildcard), e.g. 'null-*-4k-qd32'
                       ids: <kind>-<rw>-<bs>-qd<N>, kind null|malloc|uring, rw randread|randwrite
  --kinds K,...        bdev kinds (default null,malloc,uring)
  --size SIZE_MIB      device size in MiB (default 512)
  --out DIR            where to write the report (default bench/results)
  --qsd-iothread       give qemu-storage-daemon's export an iothread (adaptive polling)
  --no-event-idx       do not negotiate VIRTIO_F_EVENT_IDX (default: negotiated when offered)
  --inflight           negotiate INFLIGHT_SHMFD when offered, as QEMU does (the cost of in-flight tracking)
  --vhostd-node-args A node flags for vhostd, space-separated (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p")
  --verbose            a line per run as well
  --scsi               instead: vhostd virtio-scsi against virtio-blk on the same bdev (--scsi --help)
  --nvme               instead: vhostd NVMe over vfio-user against virtio-blk on the same bdev (--nvme --help)
  --rings              instead: split/packed rings with and without INFLIGHT_SHMFD on vhostd (--rings --help)
  --peer spdk          instead: vhostd, SPDK's vhost app and qemu-storage-daemon side by side (--peer spdk --help)
  -h, --help`;

const RWS: readonly BenchRw[] = ['randread', 'randwrite'];
const BSS = [4096, 65536] as const;
const QDS = [1, 32, 128] as const;
const TARGET_CORE = 1;
const GENERATOR_CORE = 0;

function repoRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'bin', 'vhostd.js'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error(`cannot find the vhostd repository above ${__dirname}`);
}

export function caseId(kind: BdevKind, rw: BenchRw, bs: number, qd: number): string {
  return `${kind}-${rw}-${bs / 1024}k-qd${qd}`;
}

/** The full matrix, in run order: kind, rw, bs, QD. */
export function matrix(kinds: readonly BdevKind[]): BenchCaseSpec[] {
  const out: BenchCaseSpec[] = [];
  for (const kind of kinds) {
    for (const rw of RWS) {
      for (const bs of BSS) {
        for (const qd of QDS) out.push({ id: caseId(kind, rw, bs, qd), kind, rw, blockSizeBytes: bs, iodepth: qd });
      }
    }
  }
  return out;
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
  return new RegExp(`^${body}$`);
}

interface RunnerOptions {
  quick: boolean;
  runs: number;
  runtimeSec: number;
  rampSec: number;
  kinds: BdevKind[];
  caseFilter: string[] | null;
  sizeBytes: number;
  outDir: string;
  qsdIothread: boolean;
  eventIdx: boolean;
  inflight: boolean;
  vhostdNodeArgs: string[];
  verbose: boolean;
}

class UsageError extends Error {}

function positiveNumber(name: string, text: string | undefined, fallback: number, allowZero = false): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (!Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) throw new UsageError(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} number`);
  return v;
}

function parseOptions(argv: string[], repo: string): RunnerOptions | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      quick: { type: 'boolean' },
      runs: { type: 'string' },
      runtime: { type: 'string' },
      ramp: { type: 'string' },
      cases: { type: 'string' },
      kinds: { type: 'string' },
      size: { type: 'string' },
      out: { type: 'string' },
      'qsd-iothread': { type: 'boolean' },
      'no-event-idx': { type: 'boolean' },
      inflight: { type: 'boolean' },
      'vhostd-node-args': { type: 'string' },
      verbose: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const quick = values.quick ?? false;
  const runs = positiveNumber('runs', values.runs, quick ? 1 : 3);
  if (!Number.isSafeInteger(runs) || runs > 100) throw new UsageError('--runs must be a whole number in [1, 100]');
  let kinds: BdevKind[] = quick ? ['null'] : [...BDEV_KINDS];
  if (values.kinds !== undefined) {
    kinds = [];
    for (const k of values.kinds.split(',')) {
      if (!(BDEV_KINDS as readonly string[]).includes(k)) throw new UsageError(`--kinds: unknown kind ${k} (null, malloc, uring)`);
      kinds.push(k as BdevKind);
    }
  }
  const caseFilter = values.cases !== undefined ? values.cases.split(',').filter((s) => s !== '') : quick ? ['null-randread-4k-qd32'] : null;
  const sizeMiB = positiveNumber('size', values.size, 512);
  if (!Number.isSafeInteger(sizeMiB) || sizeMiB > 65536) throw new UsageError('--size must be a whole number of MiB in [1, 65536]');
  return {
    quick,
    runs,
    runtimeSec: positiveNumber('runtime', values.runtime, quick ? 1 : 5),
    rampSec: positiveNumber('ramp', values.ramp, quick ? 0.5 : 1, true),
    kinds,
    caseFilter,
    sizeBytes: sizeMiB * 2 ** 20,
    outDir: path.resolve(values.out ?? path.join(repo, 'bench', 'results')),
    qsdIothread: values['qsd-iothread'] ?? false,
    eventIdx: !(values['no-event-idx'] ?? false),
    inflight: values.inflight ?? false,
    vhostdNodeArgs: (values['vhostd-node-args'] ?? '').split(' ').filter((s) => s !== ''),
    verbose: values.verbose ?? false,
  };
}

function firstLines(text: string, n: number): string {
  return text.split('\n').slice(0, n).join('\n');
}

/** One run: start the target, drive it, stop it. Never throws: a failure is recorded in the run. */
async function oneRun(spec: BenchCaseSpec, target: TargetName, round: number, cfg: TargetConfig, o: RunnerOptions): Promise<BenchRun> {
  const loadAvg1 = Math.round(os.loadavg()[0]! * 100) / 100;
  let t: RunningTarget | undefined;
  try {
    t = await startTarget(target, cfg);
    const cpu0 = processCpuSec(t.pid);
    const wall0 = process.hrtime.bigint();
    const r = await runPerf({
      socketPath: t.socketPath,
      rw: spec.rw,
      blockSizeBytes: spec.blockSizeBytes,
      iodepth: spec.iodepth,
      queues: 1,
      runtimeSec: o.runtimeSec,
      rampSec: o.rampSec,
      cpu: GENERATOR_CORE,
      eventIdx: o.eventIdx,
      inflight: o.inflight,
      timeoutMs: 15_000,
    });
    const wallSec = Number(process.hrtime.bigint() - wall0) / 1e9;
    const cpu1 = processCpuSec(t.pid);
    const run: BenchRun = {
      target,
      round,
      iops: r.iops,
      mibPerSec: r.mibPerSec,
      latMeanUs: r.latencyNs.mean / 1000,
      latP50Us: r.latencyNs.p50 / 1000,
      latP99Us: r.latencyNs.p99 / 1000,
      latP999Us: r.latencyNs.p999 / 1000,
      generatorUtilization: r.cpu.utilization,
      generatorStallSec: r.cpu.stallSec,
      targetCpuCores: cpu0 !== null && cpu1 !== null && wallSec > 0 ? (cpu1 - cpu0) / wallSec : undefined,
      errors: r.errors,
      loadAvg1,
    };
    if (r.errors > 0) run.error = `${r.errors} requests completed with an error status`;
    return run;
  } catch (err) {
    const log = t?.log() ?? '';
    return { target, round, loadAvg1, error: `${(err as Error).message}${log !== '' ? `\n${firstLines(log, 20)}` : ''}` };
  } finally {
    if (t !== undefined) await t.stop();
  }
}

function runLine(run: BenchRun): string {
  if (run.error !== undefined) return `${run.target} FAILED: ${run.error.split('\n')[0]}`;
  const stall = run.generatorStallSec !== undefined && run.generatorStallSec > 0.05 ? ` stall ${run.generatorStallSec.toFixed(2)}s` : '';
  return `${run.target} ${shortCount(run.iops ?? NaN)} IOPS ${run.latMeanUs?.toFixed(1)}µs${stall}`;
}

function caseLine(i: number, n: number, c: BenchCaseResult): string {
  const side = (name: TargetName): string => {
    const s = c[name].iops;
    if (s === null) return `${name} failed`;
    return s.n > 1 ? `${name} ${shortCount(s.median)} (${shortCount(s.min)}–${shortCount(s.max)})` : `${name} ${shortCount(s.median)}`;
  };
  const ratio = c.ratio === null ? 'ratio –' : `ratio ${c.ratio.toFixed(2)}`;
  const lat = c.vhostd.latMeanUs !== null && c.qsd.latMeanUs !== null ? ` lat ${c.vhostd.latMeanUs.median.toFixed(1)}/${c.qsd.latMeanUs.median.toFixed(1)}µs` : '';
  return `[${i}/${n}] ${c.id}: ${side('vhostd')} | ${side('qsd')} | ${ratio}${lat} | load ${os.loadavg()[0]!.toFixed(2)}`;
}

/** "1h02m", "4m05s", "12s". */
export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/**
 * The progress line after each run: runs done of the total, elapsed time, and
 * the ETA from the mean time per run so far (each run costs about the same:
 * target start, ramp, window, stop), with the machine's load.
 */
export class Progress {
  private done = 0;
  constructor(
    private readonly total: number,
    private readonly now: () => number = Date.now,
    private readonly startedMs: number = now(),
  ) {}

  step(what: string, loadAvg1: number): string {
    this.done++;
    const elapsed = this.now() - this.startedMs;
    const left = ((this.total - this.done) * elapsed) / this.done;
    const at = new Date(this.startedMs + elapsed + left).toISOString().slice(11, 19);
    const pct = Math.floor((100 * this.done) / this.total);
    return `bench: ${this.done}/${this.total} runs (${pct} %) ${what} done; ${duration(elapsed)} elapsed, ETA ${duration(left)} (${at} UTC); load ${loadAvg1.toFixed(2)}`;
  }
}

function stamp(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

export async function main(argv: string[]): Promise<number> {
  const repo = repoRoot();
  // virtio-scsi against virtio-blk on vhostd (bench/scsi.ts).
  if (argv.includes('--scsi')) return scsiMain(argv, repo);
  // NVMe over vfio-user against virtio-blk on vhostd (bench/nvme.ts).
  if (argv.includes('--nvme')) return nvmeMain(argv, repo);
  // split/packed rings × INFLIGHT_SHMFD off/on on vhostd (bench/rings.ts).
  if (argv.includes('--rings')) return ringsMain(argv, repo);
  // vhostd, SPDK's vhost and qemu-storage-daemon side by side (bench/peer.ts).
  if (argv.some((a) => a === '--peer' || a.startsWith('--peer='))) return peerMain(argv, repo);
  let o: RunnerOptions | 'help';
  try {
    o = parseOptions(argv, repo);
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (o === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const startedAt = new Date();
  const environment = collectEnvironment(repo);
  process.stderr.write(
    `bench: ${environment.cpuModel}, ${environment.kernel}, node ${environment.node}, ${environment.qemu ?? 'no qemu-storage-daemon'}; ` +
      `load ${environment.loadAvgStart.join(' ')}\n`,
  );

  const unavailable: { kind: BdevKind; reason: string }[] = [];
  let missing: Map<BdevKind, string>;
  try {
    missing = await probeVhostdKinds(repo, TARGET_CORE);
  } catch (err) {
    process.stderr.write(`bench: vhostd does not start: ${(err as Error).message}\n`);
    return 2;
  }
  const kinds = o.kinds.filter((k) => {
    const why = missing.get(k);
    if (why === undefined) return true;
    unavailable.push({ kind: k, reason: why });
    process.stderr.write(`bench: ${k} not available: ${why}\n`);
    return false;
  });
  const filters = o.caseFilter?.map(globToRegExp) ?? null;
  const specs = matrix(kinds).filter((s) => filters === null || filters.some((f) => f.test(s.id)));
  if (specs.length === 0) {
    process.stderr.write('bench: no case to run (check --cases / --kinds)\n');
    return 2;
  }

  const shmFile = path.join('/dev/shm', `vhostd-bench-${process.pid}.img`);
  const needShm = specs.some((s) => s.kind !== 'null');
  if (needShm) createShmFile(shmFile, o.sizeBytes);
  const cases: BenchCaseResult[] = [];
  let stopping = false;
  const onSignal = (): void => {
    stopping = true;
    process.stderr.write('bench: stopping after the current run\n');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const progress = new Progress(specs.length * o.runs * 2);
  try {
    for (const [i, spec] of specs.entries()) {
      if (stopping) break;
      const cfg: TargetConfig = {
        repo,
        kind: spec.kind,
        sizeBytes: o.sizeBytes,
        shmFile,
        core: TARGET_CORE,
        vhostdNodeArgs: o.vhostdNodeArgs,
        qsdIothread: o.qsdIothread,
      };
      const runs: BenchRun[] = [];
      for (let round = 0; round < o.runs && !stopping; round++) {
        for (const target of ['vhostd', 'qsd'] as const) {
          const run = await oneRun(spec, target, round, cfg, o);
          runs.push(run);
          process.stderr.write(`${progress.step(`${spec.id} ${target}`, run.loadAvg1)}\n`);
          if (o.verbose) process.stderr.write(`  ${spec.id} round ${round}: ${runLine(run)}\n`);
        }
      }
      const result = summarizeCase(spec, runs);
      cases.push(result);
      process.stderr.write(`${caseLine(i + 1, specs.length, result)}\n`);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (needShm) fs.rmSync(shmFile, { force: true });
  }

  const options: BenchOptionsRecord = {
    quick: o.quick,
    runs: o.runs,
    runtimeSec: o.runtimeSec,
    rampSec: o.rampSec,
    sizeBytes: o.sizeBytes,
    blockSizeBytes: BLOCK_SIZE,
    eventIdx: o.eventIdx,
    inflight: o.inflight,
    targetCore: TARGET_CORE,
    generatorCore: GENERATOR_CORE,
    qsdIothread: o.qsdIothread,
    caseFilter: o.caseFilter,
  };
  const results: BenchResults = {
    schema: RESULTS_SCHEMA,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    options,
    environment,
    loadAvgEnd: os.loadavg().map((x) => Math.round(x * 100) / 100),
    unavailable,
    cases,
  };
  fs.mkdirSync(o.outDir, { recursive: true });
  const base = path.join(o.outDir, `${stamp(startedAt)}${o.quick ? '-quick' : ''}`);
  const md = markdownReport(results, { ratio: `${path.basename(base)}.svg`, latency: `${path.basename(base)}-latency.svg` });
  fs.writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
  fs.writeFileSync(`${base}.md`, md);
  fs.writeFileSync(`${base}.svg`, svgChart(results));
  fs.writeFileSync(`${base}-latency.svg`, svgLatencyChart(results));
  process.stdout.write(md);
  process.stderr.write(`bench: wrote ${base}.json, .md, .svg, -latency.svg\n`);
  const anyFailed = cases.some((c) => c.runs.some((r) => r.error !== undefined));
  return anyFailed ? 1 : 0;
}

if (require.main === module) {
  exitWhenDone('bench', main(process.argv.slice(2)), 2);
}
