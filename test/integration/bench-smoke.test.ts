/**
 * Smoke test of the bench runner (bench/run.ts): runs `--quick` (vhostd and
 * qemu-storage-daemon, null bdev, 4k randread QD32, one short run each) into
 * a temporary directory and checks that the JSON, Markdown and SVG reports
 * are produced and well-formed. No assertion on any speed or ratio.
 * Tap main thread; the runner is a child process.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { haveQsd } from '../lib/qsd';
import { repoRoot } from '../lib/repo';
import { checkResults } from '../../bench/lib/results';

const root = repoRoot();
const perfAddon = path.join(root, 'bench', 'native', 'build', 'Release', 'vhostd_perf.node');

function runBench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(root, 'dist', 'bench', 'run.js'), ...args], { cwd: root, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

t.test('bench --quick produces well-formed reports', async (t) => {
  // .ci/run installs qemu-system-common and npm ci builds both addons: a missing one fails here, loudly.
  t.ok(haveQsd(), 'qemu-storage-daemon is installed (Debian package qemu-system-common)');
  t.ok(fs.existsSync(perfAddon), `the load generator addon is built (${perfAddon})`);
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-smoke-'));
  t.teardown(() => fs.rmSync(out, { recursive: true, force: true }));
  const r = await runBench(['--quick', '--out', out]);
  t.equal(r.code, 0, `bench exits 0\n${r.stderr}`);
  t.match(r.stderr, /^\[1\/1\] null-randread-4k-qd32: vhostd .* \| qsd .* \| ratio /m, 'one progress line for the one case');
  t.match(r.stderr, /^bench: 1\/2 runs \(50 %\) null-randread-4k-qd32 vhostd done; \S+ elapsed, ETA \S+ \(\d\d:\d\d:\d\d UTC\); load \d+\.\d\d$/m, 'ETA-bearing progress after the first run');
  t.match(r.stderr, /^bench: 2\/2 runs \(100 %\) null-randread-4k-qd32 qsd done; \S+ elapsed, ETA 0s /m, 'and after the last');

  const files = fs.readdirSync(out).sort();
  const json = files.filter((f) => f.endsWith('-quick.json'));
  t.equal(json.length, 1, `one JSON report (${files.join(', ')})`);
  const base = path.join(out, json[0]!.replace(/\.json$/, ''));
  t.ok(fs.existsSync(`${base}.md`), 'Markdown report');
  t.ok(fs.existsSync(`${base}.svg`), 'SVG chart');
  t.ok(fs.existsSync(`${base}-latency.svg`), 'latency SVG chart');

  const results: unknown = JSON.parse(fs.readFileSync(`${base}.json`, 'utf8'));
  t.same(checkResults(results), [], 'results file is well-formed');
  const res = results as {
    options: { quick: boolean; runs: number };
    environment: { loadAvgStart: number[]; qemu: string | null };
    cases: { id: string; runs: { target: string; error?: string; iops?: number }[]; ratio: number | null }[];
  };
  t.equal(res.options.quick, true);
  t.equal(res.cases.length, 1, 'quick runs one case');
  const c = res.cases[0]!;
  t.equal(c.id, 'null-randread-4k-qd32');
  t.same(c.runs.map((run) => run.target), ['vhostd', 'qsd'], 'vhostd then qemu-storage-daemon');
  t.same(c.runs.filter((run) => run.error !== undefined), [], 'no run failed');
  t.ok(c.runs.every((run) => typeof run.iops === 'number' && run.iops > 0), 'both runs completed I/O');
  t.type(c.ratio, 'number', 'a ratio');
  t.match(res.environment.qemu ?? '', /qemu-storage-daemon version/, 'qemu version recorded');

  const md = fs.readFileSync(`${base}.md`, 'utf8');
  const tables = md.split('\n\n').map((block) => block.split('\n').filter((l) => l.startsWith('|'))).filter((b) => b.length > 0);
  t.equal(tables.length, 2, 'two tables: throughput and latency');
  const rows = tables[0]!;
  t.equal(rows.length, 3, 'table: header, separator, one case row');
  const cells = (line: string): number => line.split('|').length - 2;
  t.equal(cells(rows[0]!), 11, 'header has 11 columns');
  t.ok(rows.every((row) => cells(row) === 11), 'every row has 11 columns');
  t.match(rows[2]!, /\| \d+\.\d\d(–\d+\.\d\d)? \|$/, 'the load average the case ran under');
  const lat = tables[1]!;
  t.equal(lat.length, 3);
  t.match(lat[2]!, /^\| null-randread-4k-qd32 \| [\d.]+ \/ [\d.]+ \/ [\d.]+ \| [\d.]+ \/ [\d.]+ \/ [\d.]+ \| \d+\.\d\d/, 'p50 / p99 / p99.9 of both sides, and the load');
  t.match(md, `![vhostd / QSD IOPS ratio](${path.basename(base)}.svg) ![latency percentiles](${path.basename(base)}-latency.svg)`, 'both charts side by side');
  t.match(rows[2]!, /^\| null \| randread \| 4k \| 32 \| [\d.]+[kM]? \| [\d.]+[kM]? \| \*\*\d+\.\d\d\*\* \|/, 'case row with both medians and the ratio');
  t.equal(md, r.stdout, 'the Markdown is also printed on stdout');

  const latSvg = fs.readFileSync(`${base}-latency.svg`, 'utf8');
  for (const target of ['vhostd', 'qsd']) {
    for (const p of ['p50', 'p99', 'p99.9']) t.match(latSvg, new RegExp(`<title>null-randread-4k-qd32 ${target} ${p.replace('.', '\\.')}: \\d+\\.\\d µs</title>`), `${target} ${p} bar`);
  }
  t.same(wellFormed(latSvg), { bad: '', open: [], roots: 1 }, 'latency SVG well-formed');

  const svg = fs.readFileSync(`${base}.svg`, 'utf8');
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]* width="\d+" height="\d+"/, 'SVG root');
  t.match(svg.trimEnd(), /<\/svg>$/, 'SVG closed');
  t.match(svg, /<rect [^>]*><title>null-randread-4k-qd32: \d+\.\d+<\/title><\/rect>/, 'one bar for the case');
  t.same(wellFormed(svg), { bad: '', open: [], roots: 1 }, 'ratio SVG well-formed: tags balance, all closed, one root');
});

/** Well-formed: tags nest and balance, and there is one root element. */
function wellFormed(svg: string): { bad: string; open: string[]; roots: number } {
  const stack: string[] = [];
  let roots = 0;
  let bad = '';
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)\b[^>]*?(\/?)>/g)) {
    const [, closing, name, selfClosing] = m;
    if (stack.length === 0 && closing === '') roots++;
    if (closing === '/') {
      if (stack.pop() !== name) bad ||= `unbalanced </${name!}> at ${m.index}`;
    } else if (selfClosing !== '/') stack.push(name!);
  }
  return { bad, open: stack, roots };
}

t.test('bench rejects bad usage with exit status 2', async (t) => {
  const r = await runBench(['--runs', 'zero']);
  t.equal(r.code, 2);
  t.match(r.stderr, /--runs must be/);
  const none = await runBench(['--cases', 'no-such-case', '--out', os.tmpdir()]);
  t.equal(none.code, 2, `no matching case: ${none.stderr}`);
});
