/**
 * SVG chart of a bench run: one horizontal bar per case, its length the
 * vhostd/qemu-storage-daemon IOPS ratio (median), a whisker for the paired
 * min–max, and a line at 1.0. Hand-written SVG, no dependencies. Pure
 * function of the results file; any thread.
 */
import type { BenchResults } from './lib/results';

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
