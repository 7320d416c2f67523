/**
 * Markdown report of a bench run: the environment, then one table row per
 * case with each side's median IOPS (min–max), mean latency, the
 * vhostd/qemu-storage-daemon ratio and how long the generator was
 * descheduled in the case's noisiest run. Pure function of the results file; any thread.
 * `node dist/bench/report.js FILE.json` reprints the table of a saved run.
 */
import fs from 'node:fs';
import type { BenchCaseResult, BenchResults } from './lib/results';
import { type Spread, shortCount, spread } from './lib/stats';
import { casePercentiles } from './chart';

function iopsCell(s: Spread | null): string {
  if (s === null) return 'failed';
  return s.n > 1 ? `${shortCount(s.median)} (${shortCount(s.min)}–${shortCount(s.max)})` : shortCount(s.median);
}

function latCell(s: Spread | null): string {
  return s === null ? '–' : s.median < 100 ? s.median.toFixed(2) : s.median.toFixed(0);
}

function ratioCell(c: BenchCaseResult): string {
  if (c.ratio === null) return '–';
  const r = c.ratio.toFixed(2);
  const p = c.pairedRatio;
  return p !== null && p.n > 1 ? `**${r}** (${p.min.toFixed(2)}–${p.max.toFixed(2)})` : `**${r}**`;
}

/** The largest share of a run the generator spent descheduled (another process on its core): how noisy the case was. */
function stallCell(c: BenchCaseResult, windowSec: number): string {
  let worst = -1;
  for (const r of c.runs) if (r.generatorStallSec !== undefined && r.generatorStallSec > worst) worst = r.generatorStallSec;
  if (worst < 0 || !(windowSec > 0)) return '–';
  return `${Math.min(100, (100 * worst) / windowSec).toFixed(0)} %`;
}

function bsText(bytes: number): string {
  return bytes % 1024 === 0 ? `${bytes / 1024}k` : String(bytes);
}

/** The machine's 1-minute load average just before each run of the case: min–max (or the one value). */
export function loadCell(c: BenchCaseResult): string {
  const s = spread(c.runs.map((r) => r.loadAvg1));
  if (s === null) return '–';
  return s.min === s.max ? s.min.toFixed(2) : `${s.min.toFixed(2)}–${s.max.toFixed(2)}`;
}

function pctCell(p: ReturnType<typeof casePercentiles>): string {
  if (p === null) return '–';
  const f = (v: number): string => (v < 100 ? v.toFixed(1) : v.toFixed(0));
  return `${f(p.p50)} / ${f(p.p99)} / ${f(p.p999)}`;
}

/** Latency percentiles per case and target (median over runs), with the load each case ran under. */
export function latencyTable(results: BenchResults): string {
  const lines = ['| case | vhostd p50 / p99 / p99.9 µs | QSD p50 / p99 / p99.9 µs | load avg (1 min) before runs |', '|---|---|---|---|'];
  for (const c of results.cases) {
    lines.push(`| ${c.id} | ${pctCell(casePercentiles(c.runs, 'vhostd'))} | ${pctCell(casePercentiles(c.runs, 'qsd'))} | ${loadCell(c)} |`);
  }
  return lines.join('\n');
}

/** The per-case table alone. */
export function markdownTable(results: BenchResults): string {
  const lines = [
    '| bdev | rw | bs | QD | vhostd IOPS median (min–max) | QSD IOPS median (min–max) | vhostd / QSD (paired min–max) | lat mean µs vhostd | lat mean µs QSD | generator descheduled, worst run | load avg |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  const window = results.options.runtimeSec;
  for (const c of results.cases) {
    lines.push(
      `| ${c.kind} | ${c.rw} | ${bsText(c.blockSizeBytes)} | ${c.iodepth} | ${iopsCell(c.vhostd.iops)} | ${iopsCell(c.qsd.iops)} | ${ratioCell(c)} | ${latCell(c.vhostd.latMeanUs)} | ${latCell(c.qsd.latMeanUs)} | ${stallCell(c, window)} | ${loadCell(c)} |`,
    );
  }
  return lines.join('\n');
}

/**
 * The whole report. `charts`: file names (relative to the report) of the
 * ratio and latency SVGs written beside it, shown side by side.
 */
export function markdownReport(results: BenchResults, charts?: { ratio: string; latency: string }): string {
  const e = results.environment;
  const o = results.options;
  const out: string[] = [];
  out.push(`# vhostd bench ${results.startedAt}${o.quick ? ' (quick)' : ''}`, '');
  out.push(
    `- machine: ${e.cpuModel}, ${e.cpus} CPUs, ${e.kernel}; node ${e.node}; ${e.qemu ?? 'qemu-storage-daemon not found'}`,
    `- vhostd ${e.vhostdVersion} at ${e.gitCommit ?? 'unknown commit'}${e.gitDirty === true ? ' (work tree with uncommitted changes)' : ''}`,
    `- load average at start ${e.loadAvgStart.join(' / ')}, at end ${results.loadAvgEnd.join(' / ')}`,
    `- targets on core ${o.targetCore} (vhostd -m, qemu-storage-daemon taskset${o.qsdIothread ? ', with an iothread' : ''}), generator (vhostd-perf) on core ${o.generatorCore}; ` +
      `${o.runs} run(s) per target per case, alternating vhostd, QSD, vhostd, QSD…; ${o.runtimeSec} s measured after ${o.rampSec} s ramp; ` +
      `${(o.sizeBytes / 2 ** 20).toFixed(0)} MiB devices, ${o.blockSizeBytes}-byte blocks; EVENT_IDX ${o.eventIdx ? 'negotiated when offered' : 'off'}; in-flight tracking (INFLIGHT_SHMFD) ${o.inflight === true ? 'negotiated when offered' : 'off'}`,
  );
  if (e.busyProcessesStart.length > 0) out.push(`- busy processes at start: ${e.busyProcessesStart.map((p) => `\`${p}\``).join(', ')}`);
  for (const u of results.unavailable) out.push(`- **${u.kind}: not available** — ${u.reason}`);
  out.push('', markdownTable(results), '');
  if (charts) out.push(`![vhostd / QSD IOPS ratio](${charts.ratio}) ![latency percentiles](${charts.latency})`, '');
  out.push('Latency distribution (median over runs of each run\'s percentiles):', '', latencyTable(results), '');
  const failed = results.cases.flatMap((c) => c.runs.filter((r) => r.error !== undefined).map((r) => `${c.id} ${r.target} round ${r.round}: ${r.error}`));
  if (failed.length > 0) {
    out.push('Failed runs:', '', ...failed.map((f) => `- ${f.split('\n')[0]}`), '');
  }
  out.push(
    'Ratios above 1 mean vhostd is faster. Both targets share the machine with whatever else runs; compare ratios, not absolute figures across sittings.',
    '',
  );
  return out.join('\n');
}

if (require.main === module) {
  const file = process.argv[2];
  if (file === undefined) {
    process.stderr.write('usage: node dist/bench/report.js RESULTS.json\n');
    process.exit(2);
  }
  process.stdout.write(markdownReport(JSON.parse(fs.readFileSync(file, 'utf8')) as BenchResults));
}
