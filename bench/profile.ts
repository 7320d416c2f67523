/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, one .cpuprofile per
 * thread; the engine worker's is the one whose samples sit in Poller.run)
 * by hot-path stage: self time of every function, mapped to a stage by
 * name, as a share of the samples and — given the requests the worker
 * completed during the profile — as nanoseconds per request.
 *
 *   node dist/bench/profile.js FILE.cpuprofile [--ios N] [--top 25]
 *
 * Without --ios only shares are printed. Functions V8 inlined into their
 * caller are charged to the caller (their time is not visible apart), so a
 * stage's figure is the time of the frames that remained. Main thread.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export type Stage =
  | 'avail read + chain walk'
  | 'parse'
  | 'bdev submit/complete'
  | 'used push + status'
  | 'publish + call signal'
  | 'control-message poll'
  | 'accounting (clock, stats, iostat)'
  | 'poll loop / dispatch'
  | 'QoS gate'
  | 'GC'
  | 'idle / program'
  | 'other';

/** Stage of a function, from its name and file (the engine's own names). */
export function stageOf(fn: string, url: string): Stage {
  const file = url.replace(/^.*\/dist\//, '');
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(idle)' || fn === '(program)' || fn === '(root)') return 'idle / program';
  if (/receiveMessageOnPort|takeMessages/.test(fn)) return 'control-message poll';
  if (/^(now|performance\.now)$/.test(fn) || /iostat/.test(file) || fn === 'record' || fn === 'extremes') return 'accounting (clock, stats, iostat)';
  if (/qos/.test(file)) return 'QoS gate';
  if (/virtio\/chain/.test(file) || fn === 'walk' || fn === 'available' || fn === 'pop' || fn === 'processQueue' || fn === 'translate') {
    return 'avail read + chain walk';
  }
  if (/blk\/parse/.test(file) || fn === 'start' || fn === 'addData') return 'parse';
  if (/bdev\//.test(file) || fn === 'submit' || fn === 'ioDone' || fn === 'onComplete' || fn === 'resubmit') return 'bdev submit/complete';
  if (fn === 'push' || fn === 'complete' || fn === 'release') return 'used push + status';
  if (fn === 'publish' || fn === 'publishAll' || fn === 'publishCoalesced' || fn === 'needInterrupt' || fn === 'vringNeedEvent' || fn === 'signal' || fn === 'eventfdWrite' || fn === 'checkRates') {
    return 'publish + call signal';
  }
  if (fn === 'run' || fn === 'poll' || fn === 'finishStops') return 'poll loop / dispatch';
  return 'other';
}

export interface ProfileSummary {
  totalMs: number;
  byStage: Map<Stage, number>;
  byFunction: { name: string; stage: Stage; ms: number }[];
}

/** Self time per function and per stage (ms), from the sample deltas. */
export function summarizeProfile(p: CpuProfile): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    // timeDeltas[i] is the time before sample i; charge it to sample i (V8's DevTools convention uses the next one: close enough).
    const dt = p.timeDeltas[i] ?? 0;
    selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + Math.max(0, dt));
  }
  const fnMs = new Map<string, { stage: Stage; ms: number }>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const fn = node.callFrame.functionName || '(anonymous)';
    const file = node.callFrame.url.replace(/^.*\/dist\//, '');
    const key = `${fn} ${file}:${node.callFrame.lineNumber + 1}`;
    const e = fnMs.get(key) ?? { stage: stageOf(fn, node.callFrame.url), ms: 0 };
    e.ms += us / 1000;
    fnMs.set(key, e);
    total += us / 1000;
  }
  const byStage = new Map<Stage, number>();
  for (const e of fnMs.values()) byStage.set(e.stage, (byStage.get(e.stage) ?? 0) + e.ms);
  const byFunction = [...fnMs.entries()].map(([name, e]) => ({ name, stage: e.stage, ms: e.ms })).sort((a, b) => b.ms - a.ms);
  return { totalMs: total, byStage, byFunction };
}

if (require.main === module) {
  const { values, positionals } = parseArgs({
    args: process.argv.slice(2),
    allowPositionals: true,
    options: { ios: { type: 'string' }, top: { type: 'string' } },
  });
  const file = positionals[0];
  if (file === undefined) {
    process.stderr.write('usage: node dist/bench/profile.js FILE.cpuprofile [--ios N] [--top 25]\n');
    process.exit(2);
  }
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const s = summarizeProfile(p);
  const ios = values.ios !== undefined ? Number(values.ios) : NaN;
  const per = (ms: number): string => (Number.isFinite(ios) && ios > 0 ? `${((ms * 1e6) / ios).toFixed(1).padStart(8)} ns/io` : '');
  process.stdout.write(`profile ${file}: ${s.totalMs.toFixed(0)} ms sampled${Number.isFinite(ios) ? `, ${ios} requests` : ''}\n\nby stage:\n`);
  for (const [stage, ms] of [...s.byStage.entries()].sort((a, b) => b[1] - a[1])) {
    process.stdout.write(`  ${stage.padEnd(36)} ${ms.toFixed(0).padStart(7)} ms ${((100 * ms) / s.totalMs).toFixed(1).padStart(5)} % ${per(ms)}\n`);
  }
  process.stdout.write('\ntop functions (self time):\n');
  for (const f of s.byFunction.slice(0, Number(values.top ?? 25))) {
    process.stdout.write(`  ${((100 * f.ms) / s.totalMs).toFixed(1).padStart(5)} % ${per(f.ms)}  ${f.name}  [${f.stage}]\n`);
  }
}
