/**
 * The bench's result file (bench/results/<date>.json): its types, the
 * per-case summary (medians, min–max, vhostd/peer ratio) and a shape check
 * the smoke test uses. Pure data; any thread.
 */
import type { BenchEnvironment } from './env';
import { type Spread, spread } from './stats';
import type { BdevKind, TargetName } from './targets';

export const RESULTS_SCHEMA = 'vhostd-bench/1';

export type BenchRw = 'randread' | 'randwrite';

export interface BenchCaseSpec {
  /** e.g. `null-randread-4k-qd32`. */
  id: string;
  kind: BdevKind;
  rw: BenchRw;
  blockSizeBytes: number;
  iodepth: number;
}

/** One run of one target on one case. */
export interface BenchRun {
  target: TargetName;
  /** 0-based position in the case's A B A B sequence. */
  round: number;
  /** Set when the run failed (then the figures are absent). */
  error?: string;
  iops?: number;
  mibPerSec?: number;
  latMeanUs?: number;
  latP50Us?: number;
  latP99Us?: number;
  latP999Us?: number;
  /** Generator thread: CPU utilisation over the window, and how long it was descheduled (shared core). */
  generatorUtilization?: number;
  generatorStallSec?: number;
  /** Target process CPU (user+sys, all threads) during the run divided by wall time: 1.0 = one core. */
  targetCpuCores?: number;
  errors?: number;
  /** 1-minute load average just before the run. */
  loadAvg1: number;
}

export interface TargetSummary {
  iops: Spread | null;
  latMeanUs: Spread | null;
  mibPerSec: Spread | null;
}

export interface BenchCaseResult extends BenchCaseSpec {
  runs: BenchRun[];
  vhostd: TargetSummary;
  qsd: TargetSummary;
  /** median(vhostd IOPS) / median(qsd IOPS); null when either side has no successful run. */
  ratio: number | null;
  /** Per-round vhostd/qsd IOPS ratios (rounds where both sides succeeded), min and max. */
  pairedRatio: Spread | null;
}

export interface BenchOptionsRecord {
  quick: boolean;
  runs: number;
  runtimeSec: number;
  rampSec: number;
  sizeBytes: number;
  blockSizeBytes: number;
  eventIdx: boolean;
  /** INFLIGHT_SHMFD negotiated when offered (both targets then record every request in the shared region). */
  inflight?: boolean;
  targetCore: number;
  generatorCore: number;
  qsdIothread: boolean;
  caseFilter: string[] | null;
}

export interface BenchResults {
  schema: typeof RESULTS_SCHEMA;
  startedAt: string;
  finishedAt: string;
  options: BenchOptionsRecord;
  environment: BenchEnvironment;
  loadAvgEnd: number[];
  /** Bdev kinds left out, with the reason (e.g. vhostd has no bdev_uring_create). */
  unavailable: { kind: BdevKind; reason: string }[];
  cases: BenchCaseResult[];
}

function summarize(runs: BenchRun[], target: TargetName): TargetSummary {
  const ok = runs.filter((r) => r.target === target && r.error === undefined);
  return {
    iops: spread(ok.map((r) => r.iops ?? NaN)),
    latMeanUs: spread(ok.map((r) => r.latMeanUs ?? NaN)),
    mibPerSec: spread(ok.map((r) => r.mibPerSec ?? NaN)),
  };
}

export function summarizeCase(spec: BenchCaseSpec, runs: BenchRun[]): BenchCaseResult {
  const vhostd = summarize(runs, 'vhostd');
  const qsd = summarize(runs, 'qsd');
  const ratio = vhostd.iops !== null && qsd.iops !== null && qsd.iops.median > 0 ? vhostd.iops.median / qsd.iops.median : null;
  const paired: number[] = [];
  for (const a of runs) {
    if (a.target !== 'vhostd' || a.iops === undefined) continue;
    const b = runs.find((r) => r.target === 'qsd' && r.round === a.round && r.iops !== undefined);
    if (b?.iops !== undefined && b.iops > 0) paired.push(a.iops / b.iops);
  }
  return { ...spec, runs, vhostd, qsd, ratio, pairedRatio: spread(paired) };
}

/** Problems with a parsed results file (empty when it is well-formed). */
export function checkResults(value: unknown): string[] {
  const problems: string[] = [];
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObj(value)) return ['not an object'];
  if (value.schema !== RESULTS_SCHEMA) problems.push(`schema is ${String(value.schema)}`);
  for (const k of ['startedAt', 'finishedAt']) {
    if (typeof value[k] !== 'string' || Number.isNaN(Date.parse(value[k]))) problems.push(`${k} is not a date`);
  }
  const env = value.environment;
  if (!isObj(env)) problems.push('environment missing');
  else {
    for (const k of ['kernel', 'cpuModel', 'node']) if (typeof env[k] !== 'string') problems.push(`environment.${k} missing`);
    if (!Array.isArray(env.loadAvgStart) || env.loadAvgStart.length !== 3) problems.push('environment.loadAvgStart missing');
  }
  if (!Array.isArray(value.cases)) {
    problems.push('cases missing');
    return problems;
  }
  value.cases.forEach((c: unknown, i) => {
    if (!isObj(c)) {
      problems.push(`cases[${i}] not an object`);
      return;
    }
    if (typeof c.id !== 'string') problems.push(`cases[${i}].id missing`);
    if (!Array.isArray(c.runs) || c.runs.length === 0) problems.push(`cases[${i}].runs empty`);
    else {
      c.runs.forEach((r: unknown, j) => {
        if (!isObj(r) || (r.target !== 'vhostd' && r.target !== 'qsd')) {
          problems.push(`cases[${i}].runs[${j}] bad target`);
          return;
        }
        if (r.error === undefined) {
          for (const k of ['iops', 'latMeanUs', 'mibPerSec']) {
            const v = r[k];
            if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) problems.push(`cases[${i}].runs[${j}].${k} = ${String(v)}`);
          }
        } else if (typeof r.error !== 'string') problems.push(`cases[${i}].runs[${j}].error not a string`);
      });
    }
    if (c.ratio !== null && (typeof c.ratio !== 'number' || !Number.isFinite(c.ratio) || c.ratio <= 0)) {
      problems.push(`cases[${i}].ratio = ${String(c.ratio)}`);
    }
  });
  return problems;
}
