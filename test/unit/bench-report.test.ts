/**
 * Bench report pieces on synthetic results: the ETA progress line (an
 * injected clock), the latency percentile chart (bars ordered p50 < p99 <
 * p99.9 on a log axis, a failed side said so) and the load column/table.
 * Thread: test main thread.
 */
import t from 'tap';
import { casePercentiles, svgLatencyChart } from '../../bench/chart';
import { latencyTable, loadCell } from '../../bench/report';
import { duration, Progress } from '../../bench/run';
import type { BenchResults, BenchRun } from '../../bench/lib/results';
import { summarizeCase } from '../../bench/lib/results';

t.test('Progress: runs done, elapsed, ETA from the mean run time', async (t) => {
  let now = Date.UTC(2026, 0, 1, 10, 0, 0);
  const p = new Progress(4, () => now);
  now += 30_000;
  t.equal(p.step('a vhostd', 1.5), 'bench: 1/4 runs (25 %) a vhostd done; 30s elapsed, ETA 1m30s (10:02:00 UTC); load 1.50');
  now += 90_000;
  t.equal(p.step('a qsd', 0.25), 'bench: 2/4 runs (50 %) a qsd done; 2m00s elapsed, ETA 2m00s (10:04:00 UTC); load 0.25');
  t.equal(duration(3_725_000), '1h02m');
  t.equal(duration(4_000), '4s');
});

function run(target: 'vhostd' | 'qsd', round: number, p50: number, p99: number, p999: number, load: number): BenchRun {
  return { target, round, iops: 1000, mibPerSec: 4, latMeanUs: p50, latP50Us: p50, latP99Us: p99, latP999Us: p999, loadAvg1: load };
}

t.test('latency chart and table', async (t) => {
  const runs = [run('vhostd', 0, 20, 80, 300, 0.5), run('qsd', 0, 30, 120, 900, 1.25), run('vhostd', 1, 22, 90, 400, 0.75), run('qsd', 1, 32, 130, 1100, 1.0)];
  const c = summarizeCase({ id: 'null-randread-4k-qd32', kind: 'null', rw: 'randread', blockSizeBytes: 4096, iodepth: 32 }, runs);
  const failed = summarizeCase({ id: 'malloc-randwrite-4k-qd1', kind: 'malloc', rw: 'randwrite', blockSizeBytes: 4096, iodepth: 1 }, [run('vhostd', 0, 5, 9, 12, 2), { target: 'qsd', round: 0, error: 'boom', loadAvg1: 2 }]);
  t.same(casePercentiles(c.runs, 'vhostd'), { p50: 21, p99: 85, p999: 350 }, 'medians over runs');
  t.equal(casePercentiles(failed.runs, 'qsd'), null);
  t.equal(loadCell(c), '0.50–1.25');
  t.equal(loadCell(failed), '2.00');
  const results = {
    startedAt: '2026-01-01T10:00:00.000Z',
    loadAvgEnd: [1, 1, 1],
    environment: { loadAvgStart: [0.5, 0.4, 0.3] },
    cases: [c, failed],
  } as unknown as BenchResults;
  const svg = svgLatencyChart(results);
  const width = (title: string): number => Number(new RegExp(`width="([\\d.]+)" height="\\d+" fill="#[0-9a-f]+"><title>${title.replace(/\./g, '\\.')}`).exec(svg)?.[1]);
  const w50 = width('null-randread-4k-qd32 vhostd p50: 21.0 µs');
  const w99 = width('null-randread-4k-qd32 vhostd p99: 85.0 µs');
  const w999 = width('null-randread-4k-qd32 vhostd p99.9: 350.0 µs');
  t.ok(w50 > 0 && w50 < w99 && w99 < w999, `bars grow with the percentile (${w50} < ${w99} < ${w999})`);
  // Log axis: 10 µs to 10 ms here (5 µs → decade 1 µs); equal ratios give equal lengths.
  t.match(svg, />1 µs</);
  t.match(svg, />1 ms</);
  t.match(svg, /qsd: no latency \(failed\)/);
  t.match(svg, /load average at start 0\.5 \/ 0\.4 \/ 0\.3, at end 1 \/ 1 \/ 1/);
  t.equal(latencyTable(results).split('\n')[2], '| null-randread-4k-qd32 | 21.0 / 85.0 / 350 | 31.0 / 125 / 1000 | 0.50–1.25 |');
  t.match(latencyTable(results).split('\n')[3], /^\| malloc-randwrite-4k-qd1 \| 5\.0 \/ 9\.0 \/ 12\.0 \| – \| 2\.00 \|$/);
});
