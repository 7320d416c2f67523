/**
 * SVG chart of a bench run: one horizontal bar per case, its length the
 * vhostd/qemu-storage-daemon IOPS ratio (median), a whisker for the paired
 * min–max, and a line at 1.0. Hand-written SVG, no dependencies. Pure
 * function of the results file; any thread.
 */
import type { BenchResults, BenchRun } from './lib/results';
import type { TargetName } from './lib/targets';
import { spread } from './lib/stats';

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function svgChart(results: BenchResults): string {
  const rowH = 22;
  const labelW = 230;
  const plotW = 520;
  const top = 46;
  const cases = results.cases;
  const height = top + Math.max(1, cases.length) * rowH + 40;
  const width = labelW + plotW + 80;
  let maxRatio = 1.25;
  for (const c of cases) {
    maxRatio = Math.max(maxRatio, c.ratio ?? 0, c.pairedRatio?.max ?? 0);
  }
  maxRatio = Math.ceil(maxRatio * 4) / 4;
  const x = (r: number): number => labelW + (r / maxRatio) * plotW;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<title>vhostd / qemu-storage-daemon IOPS ratio, ${esc(results.startedAt)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">vhostd / qemu-storage-daemon IOPS (median), ${esc(results.startedAt)}</text>`,
    `<text x="10" y="36" fill="#555">load average at start ${esc(results.environment.loadAvgStart.join(' / '))}; green: vhostd faster, red: slower; whisker: paired min–max</text>`,
  );
  // Grid every 0.25.
  for (let g = 0; g <= maxRatio + 1e-9; g += 0.25) {
    const gx = x(g).toFixed(1);
    const bold = Math.abs(g - 1) < 1e-9;
    parts.push(
      `<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${top + cases.length * rowH}" stroke="${bold ? '#000' : '#ddd'}" stroke-width="${bold ? 1.5 : 1}"/>`,
      `<text x="${gx}" y="${top + cases.length * rowH + 16}" text-anchor="middle" fill="#333">${g.toFixed(2)}</text>`,
    );
  }
  cases.forEach((c, i) => {
    const y = top + i * rowH;
    parts.push(`<text x="${labelW - 8}" y="${y + rowH / 2 + 4}" text-anchor="end">${esc(c.id)}</text>`);
    if (c.ratio === null) {
      parts.push(`<text x="${labelW + 4}" y="${y + rowH / 2 + 4}" fill="#a00">no ratio (a side failed)</text>`);
      return;
    }
    const w = Math.max(1, x(c.ratio) - labelW);
    const color = c.ratio >= 1 ? '#3a9d4a' : '#c8553d';
    parts.push(`<rect x="${labelW}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${color}"><title>${esc(c.id)}: ${c.ratio.toFixed(3)}</title></rect>`);
    if (c.pairedRatio !== null && c.pairedRatio.n > 1) {
      const y0 = (y + rowH / 2).toFixed(1);
      parts.push(`<line x1="${x(c.pairedRatio.min).toFixed(1)}" y1="${y0}" x2="${x(c.pairedRatio.max).toFixed(1)}" y2="${y0}" stroke="#222" stroke-width="1.5"/>`);
    }
    parts.push(`<text x="${(labelW + w + 4).toFixed(1)}" y="${y + rowH / 2 + 4}" fill="#222">${c.ratio.toFixed(2)}</text>`);
  });
  parts.push('</svg>', '');
  return parts.join('\n');
}

/** The latency percentiles a case's chart row shows, each the median over the target's successful runs (µs). */
export interface LatencyPercentiles {
  p50: number;
  p99: number;
  p999: number;
}

/** Median p50 / p99 / p99.9 of `target`'s successful runs of a case; null when it has none. */
export function casePercentiles(runs: readonly BenchRun[], target: TargetName): LatencyPercentiles | null {
  const ok = runs.filter((r) => r.target === target && r.error === undefined);
  const p50 = spread(ok.map((r) => r.latP50Us ?? NaN));
  const p99 = spread(ok.map((r) => r.latP99Us ?? NaN));
  const p999 = spread(ok.map((r) => r.latP999Us ?? NaN));
  if (p50 === null || p99 === null || p999 === null) return null;
  return { p50: p50.median, p99: p99.median, p999: p999.median };
}

/**
 * SVG latency distribution of a bench run: per case, one row per target
 * (vhostd, qemu-storage-daemon) with percentile bars on a logarithmic µs
 * axis — p99.9 (lightest) behind p99 behind p50 (darkest) — so the tail of
 * each side shows beside its median. Pure function of the results file.
 */
export function svgLatencyChart(results: BenchResults): string {
  const rowH = 14;
  const caseGap = 8;
  const labelW = 230;
  const plotW = 520;
  const top = 62;
  const cases = results.cases;
  const caseH = 2 * rowH + caseGap;
  const height = top + Math.max(1, cases.length) * caseH + 40;
  const width = labelW + plotW + 120;
  const rows = cases.map((c) => ({ c, v: casePercentiles(c.runs, 'vhostd'), q: casePercentiles(c.runs, 'qsd') }));
  let lo = Infinity;
  let hi = 0;
  for (const r of rows) {
    for (const p of [r.v, r.q]) {
      if (p === null) continue;
      lo = Math.min(lo, p.p50);
      hi = Math.max(hi, p.p999);
    }
  }
  if (!(lo > 0) || !Number.isFinite(lo)) lo = 1;
  if (!(hi > lo)) hi = lo * 10;
  const decadeLo = Math.floor(Math.log10(lo));
  const decadeHi = Math.max(decadeLo + 1, Math.ceil(Math.log10(hi)));
  const x = (us: number): number => labelW + ((Math.log10(Math.max(us, 10 ** decadeLo)) - decadeLo) / (decadeHi - decadeLo)) * plotW;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<title>latency percentiles, ${esc(results.startedAt)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">Latency percentiles (µs, log scale, median over runs), ${esc(results.startedAt)}</text>`,
    `<text x="10" y="36" fill="#555">each case: vhostd (blue) above qemu-storage-daemon (grey); darkest p50, then p99, lightest p99.9</text>`,
    `<text x="10" y="50" fill="#555">load average at start ${esc(results.environment.loadAvgStart.join(' / '))}, at end ${esc(results.loadAvgEnd.join(' / '))}</text>`,
  );
  for (let d = decadeLo; d <= decadeHi; d++) {
    const gx = x(10 ** d).toFixed(1);
    const label = d >= 3 ? `${10 ** (d - 3)} ms` : `${10 ** d} µs`;
    parts.push(
      `<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${top + cases.length * caseH}" stroke="#ddd"/>`,
      `<text x="${gx}" y="${top + cases.length * caseH + 16}" text-anchor="middle" fill="#333">${label}</text>`,
    );
  }
  const shades = { vhostd: ['#1f4e8c', '#5b8fd1', '#b7cdee'], qsd: ['#444444', '#888888', '#cccccc'] } as const;
  rows.forEach(({ c, v, q }, i) => {
    const y = top + i * caseH;
    parts.push(`<text x="${labelW - 8}" y="${y + rowH + 4}" text-anchor="end">${esc(c.id)}</text>`);
    ([['vhostd', v], ['qsd', q]] as const).forEach(([target, p], k) => {
      const ry = y + k * rowH;
      if (p === null) {
        parts.push(`<text x="${labelW + 4}" y="${ry + rowH - 3}" fill="#a00" font-size="10">${target}: no latency (failed)</text>`);
        return;
      }
      const [dark, mid, light] = shades[target];
      for (const [value, color, name] of [[p.p999, light, 'p99.9'], [p.p99, mid, 'p99'], [p.p50, dark, 'p50']] as const) {
        const w = Math.max(1, x(value) - labelW);
        parts.push(`<rect x="${labelW}" y="${ry + 1}" width="${w.toFixed(1)}" height="${rowH - 2}" fill="${color}"><title>${esc(c.id)} ${target} ${name}: ${value.toFixed(1)} µs</title></rect>`);
      }
      parts.push(`<text x="${(x(p.p999) + 4).toFixed(1)}" y="${ry + rowH - 3}" fill="#222" font-size="10">${target === 'qsd' ? 'QSD' : 'vhostd'} ${p.p50.toFixed(0)} / ${p.p99.toFixed(0)} / ${p.p999.toFixed(0)}</text>`);
    });
  });
  parts.push('</svg>', '');
  return parts.join('\n');
}
