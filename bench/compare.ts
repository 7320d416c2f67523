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
import os from 'node:os';
import { runPerf, type PerfReport } from './perf/perf';
import { type AttachedDevice, type BenchVhostd, GENERATOR_CORE, type Kind, type Run, type Rw, TARGET_CORE, attachBlk, goodIops, goodRuns, median, parseRoundsOptions, roundsUsage, runRounds, writeRoundsReport } from './lib/rounds';

export { type BenchVhostd, type JobSpec, waitDetached } from './lib/rounds';

type Proto = 'blk' | 'other';

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
  attach(v: BenchVhostd, bdev: string): Promise<AttachedDevice>;
}

interface CaseResult {
  id: string;
  kind: Kind;
  rw: Rw;
  qd: number;
  runs: (Omit<Run, 'variant'> & { proto: Proto })[];
  blk: number | null;
  other: number | null;
  ratio: number | null;
  blkLatUs: number | null;
  otherLatUs: number | null;
}

/** A virtio-blk controller on the bdev, the generator with EVENT_IDX. */
const BLK: Contender = {
  name: 'blk',
  title: '',
  goal: '',
  attach: (v, bdev) => attachBlk(v, bdev, 'bench.blk', {}, (socketPath, job): Promise<PerfReport> => runPerf({ ...job, socketPath, eventIdx: true })),
};

export async function compareMain(argv: string[], repo: string, other: Contender): Promise<number> {
  const name = other.name;
  const o = parseRoundsOptions(argv, name, roundsUsage(name, `each blk then ${name}`, '32,1'), '32,1');
  if (typeof o === 'number') return o;
  const { runs, runtimeSec, rampSec, sizeMiB } = o;
  const startedAt = new Date();
  const ratioOf = (blk: number | null, oth: number | null): number | null => (blk !== null && oth !== null && blk > 0 ? oth / blk : null);
  const rounds = await runRounds(
    repo,
    name,
    o,
    [
      { key: 'blk', name: 'blk', attach: BLK.attach },
      { key: 'other', name, attach: (v, bdev) => other.attach(v, bdev) },
    ],
    {
      prepare: other.prepare?.bind(other),
      extra: (c) => `${name}/blk ${ratioOf(median(goodIops(c.runs, 'blk')), median(goodIops(c.runs, 'other')))?.toFixed(3) ?? '–'}`,
    },
  );
  const cases: CaseResult[] = rounds.map((c) => {
    const blk = median(goodIops(c.runs, 'blk'));
    const oth = median(goodIops(c.runs, 'other'));
    return {
      id: c.id, kind: c.kind, rw: c.rw, qd: c.qd,
      runs: c.runs.map(({ variant, ...r }) => ({ proto: variant as Proto, ...r })),
      blk, other: oth,
      ratio: ratioOf(blk, oth),
      blkLatUs: median(goodRuns(c.runs, 'blk').map((r) => r.latMeanUs as number)),
      otherLatUs: median(goodRuns(c.runs, 'other').map((r) => r.latMeanUs as number)),
    };
  });
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
  const json = { startedAt: startedAt.toISOString(), protocol: name, runs, runtimeSec, rampSec, sizeMiB, cases };
  return writeRoundsReport(repo, name, o, startedAt, lines.join('\n'), json, rounds);
}
