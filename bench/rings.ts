/**
 * Ring layout and in-flight tracking on vhostd (issue #10's performance
 * goals: INFLIGHT_SHMFD costs at most 5 % IOPS at 4k QD32 on null and malloc;
 * packed ≥ split), driven by the native load generator (vhostd-perf,
 * --packed / --inflight) on another core.
 *
 *   npm run bench -- --rings [--runs N] [--runtime S] [--ramp S] [--kinds null,malloc] [--qds 32]
 *                            [--rws randread,randwrite] [--indirect] [--desc-free-list] [--out DIR]
 *
 * --indirect: every request one ring descriptor pointing at a table of its
 * three, as a Linux guest builds them (VIRTIO_F_RING_INDIRECT_DESC).
 * --desc-free-list: the split runs take each request's descriptors from a
 * free list and write them per request, as Linux's virtio_ring does (by
 * default each of vhostd-perf's slots keeps its own, written once, which
 * spares the split ring a cache line per request that packed pays).
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
import os from 'node:os';
import { type PerfReport, runPerf } from './perf/perf';
import { GENERATOR_CORE, type Kind, type Run, type Rw, TARGET_CORE, type Variant as RoundsVariant, attachBlk, goodIops, iopsRange, median, parseRoundsOptions, roundsUsage, runRounds, writeRoundsReport } from './lib/rounds';

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

/** A blk controller (with packed_ring for packed) per run; the generator asks for the ring and INFLIGHT_SHMFD and must get them. */
const roundsVariant = (variant: Variant, indirect: boolean, descFreeList: boolean): RoundsVariant => ({
  key: vname(variant),
  name: vname(variant),
  async attach(v, bdev) {
    const packed = variant.ring === 'packed';
    const ctrlr = `bench.${variant.ring}${variant.inflight ? '.inflight' : ''}`;
    const device = await attachBlk(v, bdev, ctrlr, packed ? { packed_ring: true } : {}, (socketPath, job) =>
      runPerf({ ...job, socketPath, eventIdx: true, inflight: variant.inflight, packed, indirect, descFreeList: descFreeList && !packed }),
    );
    const run = device.run as NonNullable<typeof device.run>;
    return {
      detach: device.detach,
      // vhostd-perf's report, with the generator's own cost per request kept (is the packed driver the bottleneck?).
      async measure(job) {
        const r = await run(job);
        const why =
          r.device.inflight !== variant.inflight
            ? `INFLIGHT_SHMFD ${r.device.inflight ? '' : 'not '}negotiated`
            : r.device.packed !== packed
              ? `RING_PACKED ${r.device.packed ? '' : 'not '}negotiated`
              : undefined;
        if (r.errors === 0 && why !== undefined) throw new Error(why);
        return {
          iops: r.iops,
          latMeanUs: r.latencyNs.mean / 1000,
          descheduledSec: r.cpu.stallSec,
          errors: r.errors,
          extra: { genCpuNsPerIo: genCpuNsPerIo(r), genBusyNsPerIo: r.cpu.busyNsPerIo, genBusyFraction: r.cpu.busyFraction },
        };
      },
    };
  },
});

/** The generator thread's CPU time (user + system) per request of the measured window. */
function genCpuNsPerIo(r: PerfReport): number {
  const ios = r.iops * r.cpu.wallSec;
  return ios > 0 ? Math.round(((r.cpu.userSec + r.cpu.sysSec) * 1e9) / ios) : 0;
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

const USAGE = `${roundsUsage('rings', 'each the four variants back to back', '32')}
  --indirect          each request one descriptor pointing at a table of three, as Linux guests build them
  --desc-free-list    split runs: descriptors from a free list, written per request, as Linux's virtio_ring
                      (packed runs write theirs per request anyway)`;

export async function ringsMain(argv: string[], repo: string): Promise<number> {
  const o = parseRoundsOptions(argv, 'rings', USAGE, '32', { indirect: { type: 'boolean' }, 'desc-free-list': { type: 'boolean' } });
  if (typeof o === 'number') return o;
  const indirect = o.more.indirect === true;
  const descFreeList = o.more['desc-free-list'] === true;
  const { runs, runtimeSec, rampSec, sizeMiB } = o;
  const startedAt = new Date();
  const rounds = await runRounds(
    repo,
    'rings',
    o,
    VARIANTS.map((v) => roundsVariant(v, indirect, descFreeList)),
  );
  const cases: CaseResult[] = rounds.map((c) => {
    const medians: Record<string, number | null> = {};
    for (const variant of VARIANTS) medians[vname(variant)] = median(goodIops(c.runs, vname(variant)));
    return { ...c, medians };
  });
  const ratio = (a: number | null, b: number | null): string => (a === null || b === null || b === 0 ? '–' : (a / b).toFixed(3));
  const rows: string[] = [];
  for (const c of cases) {
    const base = c.medians.split;
    for (const variant of VARIANTS) {
      const m = c.medians[vname(variant)];
      rows.push(`| ${c.id} | ${variant.ring} | ${variant.inflight ? 'on' : 'off'} | ${m === null ? 'failed' : Math.round(m)}${iopsRange(goodIops(c.runs, vname(variant)))} | ${ratio(m, base)} |`);
    }
  }
  // The generator's CPU per request (median of the runs): a packed driver costing more than a split one would cap packed IOPS.
  const gen = (c: CaseResult, key: string, field: string): string => {
    const xs = c.runs.filter((r) => r.variant === key && r.error === undefined && r.extra?.[field] !== undefined).map((r) => r.extra?.[field] as number);
    const m = median(xs);
    return m === null ? '–' : field === 'genBusyFraction' ? m.toFixed(2) : String(Math.round(m));
  };
  const genRows = cases.flatMap((c) =>
    VARIANTS.map((variant) => `| ${c.id} | ${vname(variant)} | ${gen(c, vname(variant), 'genCpuNsPerIo')} | ${gen(c, vname(variant), 'genBusyNsPerIo')} | ${gen(c, vname(variant), 'genBusyFraction')} |`),
  );
  const goals = cases.map(
    (c) =>
      `| ${c.id} | ${ratio(c.medians['split+inflight'], c.medians.split)} | ${ratio(c.medians['packed+inflight'], c.medians.packed)} | ${ratio(c.medians.packed, c.medians.split)} | ${ratio(c.medians['packed+inflight'], c.medians['split+inflight'])} |`,
  );
  const lines = [
    `# vhostd ring layout and in-flight tracking (${startedAt.toISOString()})`,
    '',
    `Same vhostd, same bdev, engine on core ${TARGET_CORE}, generator on core ${GENERATOR_CORE}; ${runs} rounds of the four variants back to back per case, ${runtimeSec} s measured after ${rampSec} s; 4 KiB, 1 queue, EVENT_IDX${indirect ? ', indirect descriptors (one ring descriptor per request)' : ''}${descFreeList ? ', split descriptors from a free list' : ''}. Load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}.`,
    '',
    '| case | ring | in-flight | IOPS median (min–max) | vs split, off |',
    '|---|---|---|---|---|',
    ...rows,
    '',
    '| case | in-flight on/off, split | in-flight on/off, packed | packed/split, off | packed/split, on |',
    '|---|---|---|---|---|',
    ...goals,
    '',
    'Generator (vhostd-perf) per request, medians: CPU ns (thread user + system / requests), busy-loop ns, busy fraction (below 1: it waited for the target).',
    '',
    '| case | variant | generator CPU ns/req | busy ns/req | busy fraction |',
    '|---|---|---|---|---|',
    ...genRows,
    '',
  ];
  const json = { startedAt: startedAt.toISOString(), runs, runtimeSec, rampSec, sizeMiB, cases };
  return writeRoundsReport(repo, 'rings', o, startedAt, lines.join('\n'), json, rounds);
}
