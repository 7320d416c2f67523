/**
 * Ring layout and in-flight tracking on vhostd (issue #10's performance
 * goals: INFLIGHT_SHMFD costs at most 5 % IOPS at 4k QD32 on null and malloc;
 * packed ≥ split), driven by the native load generator (vhostd-perf,
 * --packed / --inflight) on another core.
 *
 *   npm run bench -- --rings [--runs N] [--runtime S] [--ramp S] [--kinds null,malloc] [--qds 32]
 *                            [--rws randread,randwrite] [--out DIR]
 *
 * One vhostd per bdev kind (engine on core 1, generator on core 0), one bdev;
 * for every case and round four runs back to back, each on a controller
 * created for it and deleted after: split ring without in-flight tracking,
 * split with INFLIGHT_SHMFD negotiated (GET/SET_INFLIGHT_FD as QEMU does),
 * packed (a controller with packed_ring) without, packed with. Prints a
 * Markdown table with a ring column and an in-flight column (medians,
 * min–max, ratio to split without tracking) and the two ratios of the goals,
 * and writes it with the raw runs to <out>/<date>-rings.{md,json}. Main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Daemon } from '../test/lib/daemon';
import { rpcCall } from '../test/lib/rpc';
import { canConnect, waitFor } from '../test/lib/wait';
import { type PerfReport, runPerf } from './perf/perf';

const TARGET_CORE = 1;
const GENERATOR_CORE = 0;
const BLOCK_SIZE = 512;

type Kind = 'null' | 'malloc';
type Rw = 'randread' | 'randwrite';
type Ring = 'split' | 'packed';

interface Variant {
  ring: Ring;
  inflight: boolean;
}

const VARIANTS: readonly Variant[] = [
  { ring: 'split', inflight: false },
  { ring: 'split', inflight: true },
  { ring: 'packed', inflight: false },
  { ring: 'packed', inflight: true },
];

const vname = (v: Variant): string => `${v.ring}${v.inflight ? '+inflight' : ''}`;

interface Run {
  variant: string;
  round: number;
  iops?: number;
  latMeanUs?: number;
  errors?: number;
  error?: string;
}

interface CaseResult {
  id: string;
  kind: Kind;
  rw: Rw;
  qd: number;
  runs: Run[];
  /** Median IOPS per variant name (null: every run failed). */
  medians: Record<string, number | null>;
}

const USAGE = `usage: npm run bench -- --rings [options]
  --runs N            rounds per case, each the four variants back to back (default 3)
  --runtime S         measured seconds per run (default 5)
  --ramp S            warm-up seconds per run (default 1)
  --kinds K,...       null,malloc (default both)
  --qds N,...         queue depths (default 32)
  --rws R,...         randread,randwrite (default both)
  --size MIB          bdev size (default 512)
  --out DIR           where to write the report (default bench/results)`;

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function startVhostd(repo: string): Promise<{ rpc: (m: string, p?: unknown) => Promise<unknown>; dir: string; stop: () => Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-bench-rings-'));
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

async function waitDetached(rpc: (m: string, p?: unknown) => Promise<unknown>, ctrlr: string): Promise<void> {
  await waitFor(async () => {
    const [c] = (await rpc('vhost_get_controllers', { name: ctrlr })) as { sessions: unknown[] }[];
    return c.sessions.length === 0;
  }, 10_000, `${ctrlr} front-end gone`, 10);
}

export async function ringsMain(argv: string[], repo: string): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        rings: { type: 'boolean' },
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
    process.stderr.write(`bench --rings: ${(err as Error).message}\n${USAGE}\n`);
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
  const qds = (values.qds ?? '32').split(',').map(Number);
  const rws = (values.rws ?? 'randread,randwrite').split(',') as Rw[];
  const bad =
    !Number.isSafeInteger(runs) || runs < 1 || !(runtimeSec > 0) || !(rampSec >= 0) || !Number.isSafeInteger(sizeMiB) || sizeMiB < 1 ||
    kinds.some((k) => k !== 'null' && k !== 'malloc') || qds.some((q) => !Number.isSafeInteger(q) || q < 1 || q > 256) ||
    rws.some((r) => r !== 'randread' && r !== 'randwrite');
  if (bad) {
    process.stderr.write(`bench --rings: bad option value\n${USAGE}\n`);
    return 2;
  }
  const startedAt = new Date();
  const cases: CaseResult[] = [];
  for (const kind of kinds) {
    const v = await startVhostd(repo);
    try {
      const numBlocks = (sizeMiB * 2 ** 20) / BLOCK_SIZE;
      await v.rpc(kind === 'null' ? 'bdev_null_create' : 'bdev_malloc_create', { name: 'B0', num_blocks: numBlocks, block_size: BLOCK_SIZE });
      for (const rw of rws) {
        for (const qd of qds) {
          const id = `${kind}-${rw}-4k-qd${qd}`;
          const res: Run[] = [];
          for (let round = 0; round < runs; round++) {
            for (const variant of VARIANTS) {
              const ctrlr = `bench.${variant.ring}${variant.inflight ? '.inflight' : ''}`;
              let run: Run = { variant: vname(variant), round };
              try {
                await v.rpc('vhost_create_blk_controller', { ctrlr, dev_name: 'B0', ...(variant.ring === 'packed' ? { packed_ring: true } : {}) });
                const r: PerfReport = await runPerf({
                  socketPath: path.join(v.dir, ctrlr),
                  rw,
                  blockSizeBytes: 4096,
                  iodepth: qd,
                  queues: 1,
                  runtimeSec,
                  rampSec,
                  cpu: GENERATOR_CORE,
                  eventIdx: true,
                  inflight: variant.inflight,
                  packed: variant.ring === 'packed',
                  timeoutMs: 15_000,
                });
                run = { variant: vname(variant), round, iops: r.iops, latMeanUs: r.latencyNs.mean / 1000, errors: r.errors };
                if (r.errors > 0) run.error = `${r.errors} requests completed with an error status`;
                else if (r.device.inflight !== variant.inflight) run.error = `INFLIGHT_SHMFD ${r.device.inflight ? '' : 'not '}negotiated`;
                else if (r.device.packed !== (variant.ring === 'packed')) run.error = `RING_PACKED ${r.device.packed ? '' : 'not '}negotiated`;
              } catch (err) {
                run.error = (err as Error).message;
              } finally {
                try {
                  await waitDetached(v.rpc, ctrlr);
                  await v.rpc('vhost_delete_controller', { ctrlr });
                } catch (err) {
                  run.error ??= `cleanup: ${(err as Error).message}`;
                }
              }
              res.push(run);
            }
          }
          const ok = (name: string): number[] => res.filter((r) => r.variant === name && r.error === undefined && r.iops !== undefined).map((r) => r.iops as number);
          const medians: Record<string, number | null> = {};
          for (const variant of VARIANTS) medians[vname(variant)] = median(ok(vname(variant)));
          cases.push({ id, kind, rw, qd, runs: res, medians });
          const parts = VARIANTS.map((variant) => {
            const xs = ok(vname(variant));
            return `${vname(variant)} ${xs.length === 0 ? 'failed' : `${Math.round(median(xs) as number)} (${Math.round(Math.min(...xs))}–${Math.round(Math.max(...xs))})`}`;
          });
          process.stderr.write(`${id}: ${parts.join(' | ')} | load ${os.loadavg()[0].toFixed(2)}\n`);
        }
      }
    } finally {
      await v.stop();
    }
  }
  const ratio = (a: number | null, b: number | null): string => (a === null || b === null || b === 0 ? '–' : (a / b).toFixed(3));
  const rows: string[] = [];
  for (const c of cases) {
    const base = c.medians.split;
    for (const variant of VARIANTS) {
      const xs = c.runs.filter((r) => r.variant === vname(variant) && r.error === undefined && r.iops !== undefined).map((r) => r.iops as number);
      const m = c.medians[vname(variant)];
      const range = xs.length === 0 ? '' : ` (${Math.round(Math.min(...xs))}–${Math.round(Math.max(...xs))})`;
      rows.push(`| ${c.id} | ${variant.ring} | ${variant.inflight ? 'on' : 'off'} | ${m === null ? 'failed' : Math.round(m)}${range} | ${ratio(m, base)} |`);
    }
  }
  const goals = cases.map(
    (c) =>
      `| ${c.id} | ${ratio(c.medians['split+inflight'], c.medians.split)} | ${ratio(c.medians['packed+inflight'], c.medians.packed)} | ${ratio(c.medians.packed, c.medians.split)} | ${ratio(c.medians['packed+inflight'], c.medians['split+inflight'])} |`,
  );
  const lines = [
    `# vhostd ring layout and in-flight tracking (${startedAt.toISOString()})`,
    '',
    `Same vhostd, same bdev, engine on core ${TARGET_CORE}, generator on core ${GENERATOR_CORE}; ${runs} rounds of the four variants back to back per case, ${runtimeSec} s measured after ${rampSec} s; 4 KiB, 1 queue, EVENT_IDX. Load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}.`,
    '',
    '| case | ring | in-flight | IOPS median (min–max) | vs split, off |',
    '|---|---|---|---|---|',
    ...rows,
    '',
    '| case | in-flight on/off, split | in-flight on/off, packed | packed/split, off | packed/split, on |',
    '|---|---|---|---|---|',
    ...goals,
    '',
  ];
  const md = lines.join('\n');
  const outDir = path.resolve(values.out ?? path.join(repo, 'bench', 'results'));
  fs.mkdirSync(outDir, { recursive: true });
  const base = path.join(outDir, `${startedAt.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')}-rings`);
  fs.writeFileSync(`${base}.md`, md);
  fs.writeFileSync(`${base}.json`, `${JSON.stringify({ startedAt: startedAt.toISOString(), runs, runtimeSec, rampSec, sizeMiB, cases }, null, 2)}\n`);
  process.stdout.write(md);
  process.stderr.write(`bench --rings: wrote ${base}.md, .json\n`);
  return cases.some((c) => c.runs.some((r) => r.error !== undefined)) ? 1 : 0;
}
