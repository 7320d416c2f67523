/**
 * vhostd's virtio-blk against another of its front-end protocols on the same
 * bdev, driven by the native load generator (vhostd-perf) on another core:
 * the shared runner of `npm run bench -- --scsi` (bench/scsi.ts: virtio-scsi,
 * issue #9) and `npm run bench -- --nvme` (bench/nvme.ts: NVMe over
 * vfio-user, issue #11).
 *
 * One vhostd per bdev kind (engine on core 1, generator on core 0), one bdev;
 * for every case and round a blk controller is created on the bdev, driven and
 * deleted, then the other protocol's device likewise — back to back,
 * alternating, so both see the same daemon, bdev and machine load.
 * Prints a Markdown table (medians, min–max, other/blk ratio) and writes it
 * with the raw runs to <out>/<date>-<name>.{md,json}. Main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Daemon } from '../test/lib/daemon';
import { rpcCall } from '../test/lib/rpc';
import { canConnect, waitFor } from '../test/lib/wait';
import { type PerfOptions, type PerfReport, runPerf } from './perf/perf';

const TARGET_CORE = 1;
const GENERATOR_CORE = 0;
const BLOCK_SIZE = 512;

type Kind = 'null' | 'malloc';
type Rw = 'randread' | 'randwrite';
type Proto = 'blk' | 'other';

/** What a run asks of the generator besides the socket and the protocol. */
export type JobSpec = Pick<PerfOptions, 'rw' | 'blockSizeBytes' | 'iodepth' | 'queues' | 'runtimeSec' | 'rampSec' | 'cpu' | 'timeoutMs'>;

/** The vhostd a comparison runs against. */
export interface BenchVhostd {
  rpc: (m: string, p?: unknown) => Promise<unknown>;
  /** Its -S directory. */
  dir: string;
}

/** The protocol compared with virtio-blk. */
export interface Contender {
  /** Short name: the option (--scsi), the file suffix and the table column. */
  name: string;
  /** Title line of the report. */
  title: string;
  /** The goal, quoted under the table. */
  goal: string;
  /** Once per vhostd, before any case (e.g. nvmf_create_transport). */
  prepare?(v: BenchVhostd): Promise<void>;
  /** Create the device on bdev `bdev`; returns its run and its removal. */
  attach(v: BenchVhostd, bdev: string): Promise<{ run(job: JobSpec): Promise<PerfReport>; detach(): Promise<void> }>;
}

interface Run {
  proto: Proto;
  round: number;
  iops?: number;
  latMeanUs?: number;
  /** The generator's loop gaps > 200 µs (it was descheduled: a shared core), seconds of the window. */
  descheduledSec?: number;
  errors?: number;
  error?: string;
}

interface CaseResult {
  id: string;
  kind: Kind;
  rw: Rw;
  qd: number;
  runs: Run[];
  blk: number | null;
  other: number | null;
  ratio: number | null;
  blkLatUs: number | null;
  otherLatUs: number | null;
}

const usage = (name: string): string => `usage: npm run bench -- --${name} [options]
  --runs N            rounds per case, each blk then ${name} (default 3)
  --runtime S         measured seconds per run (default 5)
  --ramp S            warm-up seconds per run (default 1)
  --kinds K,...       null,malloc (default both)
  --qds N,...         queue depths (default 32,1)
  --rws R,...         randread,randwrite (default both)
  --size MIB          bdev size (default 512)
  --out DIR           where to write the report (default bench/results)`;

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function startVhostd(repo: string, name: string): Promise<BenchVhostd & { stop: () => Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vhostd-bench-${name}-`));
  const rpcSocket = path.join(dir, 'rpc.sock');
  const mask = `0x${(1 << TARGET_CORE).toString(16)}`;
  const d = new Daemon('vhostd', process.execPath, [path.join(repo, 'bin', 'vhostd.js'), '-m', mask, '-S', dir, '-r', rpcSocket, '--log-level', 'warn'], { cwd: repo });
  const stop = async (): Promise<void> => {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => {
      if (!d.running) throw new Error(`vhostd exited early:\n${d.log}`);
      return fs.existsSync(rpcSocket) && (await canConnect(rpcSocket));
    }, 30_000, 'vhostd RPC socket', 25);
  } catch (err) {
    await stop();
    throw err;
  }
  return { rpc: (m, p) => rpcCall(rpcSocket, m, p), dir, stop };
}

export async function waitDetached(rpc: (m: string, p?: unknown) => Promise<unknown>, ctrlr: string): Promise<void> {
  await waitFor(async () => {
    const [c] = (await rpc('vhost_get_controllers', { name: ctrlr })) as { sessions: unknown[] }[];
    return c.sessions.length === 0;
  }, 10_000, `${ctrlr} front-end gone`, 10);
}

/** A virtio-blk controller on the bdev, the generator with EVENT_IDX. */
const BLK: Contender = {
  name: 'blk',
  title: '',
  goal: '',
  async attach(v, bdev) {
    const ctrlr = 'bench.blk';
    await v.rpc('vhost_create_blk_controller', { ctrlr, dev_name: bdev });
    return {
      run: (job) => runPerf({ ...job, socketPath: path.join(v.dir, ctrlr), eventIdx: true }),
      async detach() {
        await waitDetached(v.rpc, ctrlr);
        await v.rpc('vhost_delete_controller', { ctrlr });
      },
    };
  },
};

export async function compareMain(argv: string[], repo: string, other: Contender): Promise<number> {
  const name = other.name;
  const USAGE = usage(name);
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        [name]: { type: 'boolean' },
        runs: { type: 'string' },
        runtime: { type: 'string' },
        ramp: { type: 'string' },
        kinds: { type: 'string' },
        qds: { type: 'string' },
        rws: { type: 'string' },
        size: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`bench --${name}: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const runs = Number(values.runs ?? 3);
  const runtimeSec = Number(values.runtime ?? 5);
  const rampSec = Number(values.ramp ?? 1);
  const sizeMiB = Number(values.size ?? 512);
  const kinds = (values.kinds ?? 'null,malloc').split(',') as Kind[];
  const qds = (values.qds ?? '32,1').split(',').map(Number);
  const rws = (values.rws ?? 'randread,randwrite').split(',') as Rw[];
  const bad =
    !Number.isSafeInteger(runs) || runs < 1 || !(runtimeSec > 0) || !(rampSec >= 0) || !Number.isSafeInteger(sizeMiB) || sizeMiB < 1 ||
    kinds.some((k) => k !== 'null' && k !== 'malloc') || qds.some((q) => !Number.isSafeInteger(q) || q < 1 || q > 256) ||
    rws.some((r) => r !== 'randread' && r !== 'randwrite');
  if (bad) {
    process.stderr.write(`bench --${name}: bad option value\n${USAGE}\n`);
    return 2;
  }
  const startedAt = new Date();
  const cases: CaseResult[] = [];
  for (const kind of kinds) {
    const v = await startVhostd(repo, name);
    try {
      await other.prepare?.(v);
      const numBlocks = (sizeMiB * 2 ** 20) / BLOCK_SIZE;
      await v.rpc(kind === 'null' ? 'bdev_null_create' : 'bdev_malloc_create', { name: 'B0', num_blocks: numBlocks, block_size: BLOCK_SIZE });
      for (const rw of rws) {
        for (const qd of qds) {
          const id = `${kind}-${rw}-4k-qd${qd}`;
          const res: Run[] = [];
          for (let round = 0; round < runs; round++) {
            for (const proto of ['blk', 'other'] as const) {
              let run: Run = { proto, round };
              let device: Awaited<ReturnType<Contender['attach']>> | null = null;
              try {
                device = await (proto === 'blk' ? BLK : other).attach(v, 'B0');
                const r: PerfReport = await device.run({ rw, blockSizeBytes: 4096, iodepth: qd, queues: 1, runtimeSec, rampSec, cpu: GENERATOR_CORE, timeoutMs: 15_000 });
                run = { proto, round, iops: r.iops, latMeanUs: r.latencyNs.mean / 1000, descheduledSec: r.cpu.stallSec, errors: r.errors };
                if (r.errors > 0) run.error = `${r.errors} requests completed with an error status`;
              } catch (err) {
                run.error = (err as Error).message;
              } finally {
                try {
                  await device?.detach();
                } catch (err) {
                  run.error ??= `cleanup: ${(err as Error).message}`;
                }
              }
              res.push(run);
            }
          }
          const good = (p: Proto): Run[] => res.filter((r) => r.proto === p && r.error === undefined && r.iops !== undefined);
          const ok = (p: Proto): number[] => good(p).map((r) => r.iops as number);
          const blk = median(ok('blk'));
          const oth = median(ok('other'));
          const c: CaseResult = {
            id, kind, rw, qd, runs: res, blk, other: oth,
            ratio: blk !== null && oth !== null && blk > 0 ? oth / blk : null,
            blkLatUs: median(good('blk').map((r) => r.latMeanUs as number)),
            otherLatUs: median(good('other').map((r) => r.latMeanUs as number)),
          };
          cases.push(c);
          const fmt = (p: Proto): string => {
            const xs = ok(p);
            return xs.length === 0 ? 'failed' : `${Math.round(median(xs) as number)} (${Math.round(Math.min(...xs))}–${Math.round(Math.max(...xs))})`;
          };
          process.stderr.write(`${id}: blk ${fmt('blk')} | ${name} ${fmt('other')} | ${name}/blk ${c.ratio?.toFixed(3) ?? '–'} | load ${os.loadavg()[0].toFixed(2)}\n`);
        }
      }
    } finally {
      await v.stop();
    }
  }
  const iops = (x: number | null): string => (x === null ? 'failed' : String(Math.round(x)));
  const lat = (x: number | null): string => (x === null ? '–' : x.toFixed(2));
  const lines = [
    `# ${other.title} (${startedAt.toISOString()})`,
    '',
    `Same vhostd, same bdev, engine on core ${TARGET_CORE}, generator on core ${GENERATOR_CORE}; ${runs} rounds of blk then ${name} per case, ${runtimeSec} s measured after ${rampSec} s; 4 KiB, 1 queue (blk with EVENT_IDX). Load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}. Goal: ${other.goal}`,
    '',
    `| case | blk IOPS (median) | ${name} IOPS (median) | ${name} / blk | blk lat mean µs | ${name} lat mean µs |`,
    '|---|---|---|---|---|---|',
    ...cases.map((c) => `| ${c.id} | ${iops(c.blk)} | ${iops(c.other)} | ${c.ratio === null ? '–' : c.ratio.toFixed(3)} | ${lat(c.blkLatUs)} | ${lat(c.otherLatUs)} |`),
    '',
  ];
  const md = lines.join('\n');
  const outDir = path.resolve(values.out ?? path.join(repo, 'bench', 'results'));
  fs.mkdirSync(outDir, { recursive: true });
  const base = path.join(outDir, `${startedAt.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')}-${name}`);
  fs.writeFileSync(`${base}.md`, md);
  fs.writeFileSync(`${base}.json`, `${JSON.stringify({ startedAt: startedAt.toISOString(), protocol: name, runs, runtimeSec, rampSec, sizeMiB, cases }, null, 2)}\n`);
  process.stdout.write(md);
  process.stderr.write(`bench --${name}: wrote ${base}.md, .json\n`);
  return cases.some((c) => c.runs.some((r) => r.error !== undefined)) ? 1 : 0;
}
