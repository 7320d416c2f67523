/**
 * Parses a metrics exposition with the Prometheus project's own parser
 * (prometheus_client in Python; test/lib/prom-parse.py), so that the
 * format is judged by a real consumer, not by the code under test. It is
 * required (Debian: python3-prometheus-client): when no python3 has it, the
 * call throws and the test fails. Main-thread test helper.
 */
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from './repo';

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number | string;
}

export interface PromFamily {
  name: string;
  type: string;
  samples: PromSample[];
}

let python: string | null = null;

/** The first python3 (PATH's, then the system's) that can import prometheus_client. */
function findPython(): string {
  if (python !== null) return python;
  for (const candidate of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(candidate, ['-c', 'import prometheus_client.openmetrics.parser'], { stdio: 'ignore' });
    if (r.status === 0) return (python = candidate);
  }
  throw new Error('no python3 with prometheus_client (install python3-prometheus-client): it judges the metrics format');
}

/** Parse `text` as `format`; rejects with the parser's message when it refuses the text. */
export function parseExposition(text: string, format: 'prometheus' | 'openmetrics'): Promise<PromFamily[]> {
  const py = findPython();
  return new Promise((resolve, reject) => {
    const child = spawn(py, [path.join(repoRoot(), 'test', 'lib', 'prom-parse.py'), format], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`${format} parser refused the text: ${stderr.trim()}`));
      else resolve((JSON.parse(stdout) as { families: PromFamily[] }).families);
    });
    child.stdin.end(text);
  });
}

/** The value of the sample named `name` whose labels include `labels` (undefined if none). */
export function sampleValue(families: PromFamily[], name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of families) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return typeof s.value === 'number' ? s.value : Number(s.value.replace('+Inf', 'Infinity'));
    }
  }
  return undefined;
}
