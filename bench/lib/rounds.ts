/**
 * The runner shared by the benchmarks that compare device variants of one
 * vhostd back to back (`npm run bench -- --scsi / --nvme` through
 * bench/compare.ts, `--rings` through bench/rings.ts): their options, one
 * vhostd per bdev kind (engine on core 1, generator on core 0) with one bdev,
 * and per case and round every variant in turn on a device created for the
 * run and removed after, so all variants see the same daemon, bdev and
 * machine load. The callers build their tables from the runs. Main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Daemon } from '../../test/lib/daemon';
import { rpcCall } from '../../test/lib/rpc';
import { waitFor } from '../../test/lib/wait';
import type { PerfOptions, PerfReport } from '../perf/perf';
import { spread } from './stats';

export const TARGET_CORE = 1;
export const GENERATOR_CORE = 0;
const BLOCK_SIZE = 512;

export type Kind = 'null' | 'malloc';
export type Rw = 'randread' | 'randwrite';

/** What a run asks of the generator besides the socket and the device's own options. */
export type JobSpec = Pick<PerfOptions, 'rw' | 'blockSizeBytes' | 'iodepth' | 'queues' | 'runtimeSec' | 'rampSec' | 'cpu' | 'timeoutMs'>;

/** The vhostd the rounds run against. */
export interface BenchVhostd {
  rpc: (m: string, p?: unknown) => Promise<unknown>;
  /** Its -S directory. */
  dir: string;
}

/** What one run measured (a generator's report reduced to the figures the tables use). */
export interface RunFigures {
  iops: number;
  latMeanUs: number;
  latP50Us?: number;
  latP99Us?: number;
  /** The generator's loop gaps > 200 µs (descheduled), seconds of the window. */
  descheduledSec?: number;
  errors: number;
  /** Further figures of the run (e.g. the target's busy seconds), kept in the JSON. */
  extra?: Record<string, number>;
}

/** A device created for one run: either `run` (vhostd-perf's report) or `measure` (any generator). */
export interface AttachedDevice {
  run?(job: JobSpec): Promise<PerfReport>;
  measure?(job: JobSpec): Promise<RunFigures>;
  /** Why an error-free report still does not count (e.g. a feature not negotiated). */
  check?(r: PerfReport): string | undefined;
  detach(): Promise<void>;
}

/** One of the devices compared. */
export interface Variant {
  /** Its key in the runs. */
  key: string;
  /** Its name in the progress line. */
  name: string;
  /** Create the device on bdev `bdev`. */
  attach(v: BenchVhostd, bdev: string): Promise<AttachedDevice>;
}

export interface Run {
  variant: string;
  round: number;
  iops?: number;
  latMeanUs?: number;
  latP50Us?: number;
  latP99Us?: number;
  /** Machine load (1 min) when the run started. */
  loadAvg1?: number;
  extra?: Record<string, number>;
  /** The generator's loop gaps > 200 µs (it was descheduled: a shared core), seconds of the window. */
  descheduledSec?: number;
  errors?: number;
  error?: string;
}

export interface RoundsCase {
  id: string;
  kind: Kind;
  rw: Rw;
  qd: number;
  runs: Run[];
}

export interface RoundsOptions {
  runs: number;
  runtimeSec: number;
  rampSec: number;
  sizeMiB: number;
  kinds: Kind[];
  qds: number[];
  rws: Rw[];
  out: string | undefined;
  /** Start vhostd with --disable-cpumask-locks (a shared machine where another bench holds the core's lock). */
  noCoreLock: boolean;
  /** The values of the caller's own options (parseRoundsOptions' `extra`). */
  more: Record<string, string | boolean | undefined>;
}

/** The usage text of `npm run bench -- --<flag>`; `runsWhat` says what a round is. */
export function roundsUsage(flag: string, runsWhat: string, qdsDefault: string): string {
  return `usage: npm run bench -- --${flag} [options]
  --runs N            rounds per case, ${runsWhat} (default 3)
  --runtime S         measured seconds per run (default 5)
  --ramp S            warm-up seconds per run (default 1)
  --kinds K,...       null,malloc (default both)
  --qds N,...         queue depths (default ${qdsDefault})
  --rws R,...         randread,randwrite (default both)
  --size MIB          bdev size (default 512)
  --out DIR           where to write the report (default bench/results)
  --no-core-lock      start vhostd with --disable-cpumask-locks (another bench holds the core's lock)`;
}

/** The options, or the exit code when there is nothing to run (--help: 0, a bad option: 2, said on stderr). */
export function parseRoundsOptions(
  argv: string[],
  flag: string,
  usage: string,
  qdsDefault: string,
  extra: Record<string, { type: 'string' | 'boolean' }> = {},
  flagType: 'string' | 'boolean' = 'boolean',
): RoundsOptions | number {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        [flag]: { type: flagType },
        ...extra,
        runs: { type: 'string' },
        runtime: { type: 'string' },
        ramp: { type: 'string' },
        kinds: { type: 'string' },
        qds: { type: 'string' },
        rws: { type: 'string' },
        size: { type: 'string' },
        out: { type: 'string' },
        'no-core-lock': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`bench --${flag}: ${(err as Error).message}\n${usage}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  const str = (v: string | boolean | undefined): string | undefined => (typeof v === 'string' ? v : undefined);
  const o: RoundsOptions = {
    runs: Number(str(values.runs) ?? 3),
    runtimeSec: Number(str(values.runtime) ?? 5),
    rampSec: Number(str(values.ramp) ?? 1),
    sizeMiB: Number(str(values.size) ?? 512),
    kinds: (str(values.kinds) ?? 'null,malloc').split(',') as Kind[],
    qds: (str(values.qds) ?? qdsDefault).split(',').map(Number),
    rws: (str(values.rws) ?? 'randread,randwrite').split(',') as Rw[],
    out: str(values.out),
    noCoreLock: values['no-core-lock'] === true,
    more: Object.fromEntries(Object.keys(extra).map((k) => [k, (values as Record<string, string | boolean | undefined>)[k]])),
  };
  const bad =
    !Number.isSafeInteger(o.runs) || o.runs < 1 || !(o.runtimeSec > 0) || !(o.rampSec >= 0) || !Number.isSafeInteger(o.sizeMiB) || o.sizeMiB < 1 ||
    o.kinds.some((k) => k !== 'null' && k !== 'malloc') || o.qds.some((q) => !Number.isSafeInteger(q) || q < 1 || q > 256) ||
    o.rws.some((r) => r !== 'randread' && r !== 'randwrite');
  if (bad) {
    process.stderr.write(`bench --${flag}: bad option value\n${usage}\n`);
    return 2;
  }
  return o;
}

/** Median, null for no values. */
export function median(xs: number[]): number | null {
  return spread(xs)?.median ?? null;
}

/** The IOPS of a variant's runs that completed without an error. */
export function goodRuns(runs: readonly Run[], key: string): Run[] {
  return runs.filter((r) => r.variant === key && r.error === undefined && r.iops !== undefined);
}

export function goodIops(runs: readonly Run[], key: string): number[] {
  return goodRuns(runs, key).map((r) => r.iops as number);
}

/** " (min–max)" of `xs`, '' for none. */
export function iopsRange(xs: number[]): string {
  return xs.length === 0 ? '' : ` (${Math.round(Math.min(...xs))}–${Math.round(Math.max(...xs))})`;
}

async function startVhostd(repo: string, flag: string, noCoreLock = false): Promise<BenchVhostd & { stop: () => Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vhostd-bench-${flag}-`));
  const rpcSocket = path.join(dir, 'rpc.sock');
  const mask = `0x${(1 << TARGET_CORE).toString(16)}`;
  const d = new Daemon('vhostd', process.execPath, [path.join(repo, 'bin', 'vhostd.js'), '-m', mask, '-S', dir, '-r', rpcSocket, '--log-level', 'warn', ...(noCoreLock ? ['--disable-cpumask-locks'] : [])], { cwd: repo });
  const stop = async (): Promise<void> => {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await d.waitSocket(rpcSocket, { intervalMs: 25 });
  } catch (err) {
    await stop();
    throw err;
  }
  return { rpc: (m, p) => rpcCall(rpcSocket, m, p), dir, stop };
}

/** Waits until controller `ctrlr` has no front-end any more (the generator has closed its socket). */
export async function waitDetached(rpc: (m: string, p?: unknown) => Promise<unknown>, ctrlr: string): Promise<void> {
  await waitFor(async () => {
    const [c] = (await rpc('vhost_get_controllers', { name: ctrlr })) as { sessions: unknown[] }[];
    return c.sessions.length === 0;
  }, 10_000, `${ctrlr} front-end gone`, 10);
}

/** A virtio-blk controller `ctrlr` on the bdev, created by `params` added to the create call. */
export async function attachBlk(v: BenchVhostd, bdev: string, ctrlr: string, params: Record<string, unknown>, run: (socketPath: string, job: JobSpec) => Promise<PerfReport>): Promise<AttachedDevice> {
  await v.rpc('vhost_create_blk_controller', { ctrlr, dev_name: bdev, ...params });
  return {
    run: (job) => run(path.join(v.dir, ctrlr), job),
    async detach() {
      await waitDetached(v.rpc, ctrlr);
      await v.rpc('vhost_delete_controller', { ctrlr });
    },
  };
}

/**
 * Runs every case (kind × rw × qd, 4 KiB, 1 queue) `o.runs` rounds of all
 * `variants` back to back; after each case a progress line on stderr with
 * each variant's median (min–max) and `extra(case)` if given.
 */
export async function runRounds(
  repo: string,
  flag: string,
  o: RoundsOptions,
  variants: readonly Variant[],
  hooks: { prepare?(v: BenchVhostd): Promise<void>; extra?(c: RoundsCase): string } = {},
): Promise<RoundsCase[]> {
  return alternateRounds(o, variants, async (kind) => {
    const v = await startVhostd(repo, flag, o.noCoreLock);
    try {
      await hooks.prepare?.(v);
      const numBlocks = (o.sizeMiB * 2 ** 20) / BLOCK_SIZE;
      await v.rpc(kind === 'null' ? 'bdev_null_create' : 'bdev_malloc_create', { name: 'B0', num_blocks: numBlocks, block_size: BLOCK_SIZE });
    } catch (err) {
      await v.stop();
      throw err;
    }
    return { attach: (variant) => variant.attach(v, 'B0'), close: v.stop };
  }, hooks.extra);
}

/** What `alternateRounds` needs per bdev kind: a device of a variant for one run, and the cleanup after the kind. */
export interface KindSetup<V> {
  attach(variant: V): Promise<AttachedDevice>;
  close(): Promise<void>;
}

/**
 * The alternation itself, for variants of any shape (one vhostd's devices in
 * runRounds; whole target processes in bench/peer.ts): per kind `open(kind)`,
 * then per rw, qd and round every variant in turn — attach, drive, detach —
 * so all see the same machine load; a progress line per case on stderr.
 */
export async function alternateRounds<V extends { key: string; name: string }>(
  o: RoundsOptions,
  variants: readonly V[],
  open: (kind: Kind) => Promise<KindSetup<V>>,
  extra?: (c: RoundsCase) => string,
): Promise<RoundsCase[]> {
  const cases: RoundsCase[] = [];
  for (const kind of o.kinds) {
    const setup = await open(kind);
    try {
      for (const rw of o.rws) {
        for (const qd of o.qds) {
          const id = `${kind}-${rw}-4k-qd${qd}`;
          const runs: Run[] = [];
          for (let round = 0; round < o.runs; round++) {
            for (const variant of variants) {
              const loadAvg1 = Math.round(os.loadavg()[0]! * 100) / 100;
              let run: Run = { variant: variant.key, round, loadAvg1 };
              let device: AttachedDevice | null = null;
              try {
                device = await setup.attach(variant);
                const job: JobSpec = { rw, blockSizeBytes: 4096, iodepth: qd, queues: 1, runtimeSec: o.runtimeSec, rampSec: o.rampSec, cpu: GENERATOR_CORE, timeoutMs: 15_000 };
                let f: RunFigures;
                let why: string | undefined;
                if (device.measure !== undefined) f = await device.measure(job);
                else if (device.run !== undefined) {
                  const r = await device.run(job);
                  f = { iops: r.iops, latMeanUs: r.latencyNs.mean / 1000, descheduledSec: r.cpu.stallSec, errors: r.errors };
                  if (r.errors === 0) why = device.check?.(r);
                } else throw new Error(`${variant.name}: the device has neither run nor measure`);
                run = { variant: variant.key, round, loadAvg1, ...f };
                if (f.errors > 0) run.error = `${f.errors} requests completed with an error status`;
                else if (why !== undefined) run.error = why;
              } catch (err) {
                run.error = (err as Error).message;
              } finally {
                try {
                  await device?.detach();
                } catch (err) {
                  run.error ??= `cleanup: ${(err as Error).message}`;
                }
              }
              runs.push(run);
            }
          }
          const c: RoundsCase = { id, kind, rw, qd, runs };
          cases.push(c);
          const parts = variants.map((variant) => {
            const xs = goodIops(runs, variant.key);
            return `${variant.name} ${xs.length === 0 ? 'failed' : `${Math.round(median(xs) as number)}${iopsRange(xs)}`}`;
          });
          if (extra) parts.push(extra(c));
          process.stderr.write(`${id}: ${parts.join(' | ')} | load ${os.loadavg()[0]!.toFixed(2)}\n`);
        }
      }
    } finally {
      await setup.close();
    }
  }
  return cases;
}

/**
 * Writes the report to <out>/<date>-<flag>.{md,json} (out: `o.out`, default
 * bench/results), prints it; returns the exit code: 1 if any run failed.
 */
export function writeRoundsReport(repo: string, flag: string, o: RoundsOptions, startedAt: Date, md: string, json: unknown, cases: readonly RoundsCase[]): number {
  const outDir = path.resolve(o.out ?? path.join(repo, 'bench', 'results'));
  fs.mkdirSync(outDir, { recursive: true });
  const base = path.join(outDir, `${startedAt.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')}-${flag}`);
  fs.writeFileSync(`${base}.md`, md);
  fs.writeFileSync(`${base}.json`, `${JSON.stringify(json, null, 2)}\n`);
  process.stdout.write(md);
  process.stderr.write(`bench --${flag}: wrote ${base}.md, .json\n`);
  return cases.some((c) => c.runs.some((r) => r.error !== undefined)) ? 1 : 0;
}
