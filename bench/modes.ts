/**
 * Poll modes side by side (issue #12 item 1): what vhostd costs when idle
 * and what sleeping costs under load, for --poll-mode poll, adaptive and
 * interrupt (SPDK's --interrupt-mode).
 *
 *   node dist/bench/modes.js [--modes poll,adaptive,interrupt] [--devices 16] [--idle-sec 10]
 *                            [--settle-sec 12] [--runtime 5] [--ramp 1] [--runs 1] [--qds 1,32] [--out DIR]
 *
 * Idle: vhostd on core 1 with `--devices` null bdevs and controllers, each
 * with a connected front-end (the in-repo one) whose queue runs with a kick
 * eventfd, so the worker has 16 live queues and nothing to do; the process's
 * CPU time (/proc/PID/stat utime + stime, every thread, the reactor's too)
 * over `--idle-sec`, as % of one core, from `--settle-sec` after the last
 * device started: V8's memory reducer runs a few full GCs (main thread,
 * worker and V8's helper threads) about 8 s after start-up, once; a
 * window that holds them (it did with a 2 s settle) measures start-up,
 * not idling (1.3 % against 0.2 % in the same minute).
 * Load: null bdev, 4 KiB random reads, vhostd-perf on core 0 (polling its
 * used ring), QD from `--qds`; IOPS, mean and p50 latency, and the target's
 * CPU time per second of the run (its busy cores) → IOPS per busy core.
 * Runs alternate between the modes. Prints Markdown; writes
 * <out>/modes-<date>.json. Exit status 0, or 1 when a run failed.
 * Main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runPerf } from './perf/perf';
import { processCpuSec } from './lib/env';
import { startVhostdTarget } from './lib/targets';
import { VhostUserFrontend } from '../test/lib/frontend';
import { Daemon } from '../test/lib/daemon';
import { rpcCall } from '../test/lib/rpc';

const USAGE = `usage: node dist/bench/modes.js [--modes poll,adaptive,interrupt] [--devices N] [--idle-sec S]
                                 [--settle-sec S] [--runtime S] [--ramp S] [--runs N] [--qds 1,32] [--out DIR]`;

type Mode = 'poll' | 'adaptive' | 'interrupt';
const TARGET_CORE = 1;
const GENERATOR_CORE = 0;

function repoRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'bin', 'vhostd.js'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('repository root not found');
}

function modeArgs(mode: Mode): string[] {
  return ['--poll-mode', mode, '--disable-cpumask-locks'];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** vhostd with `devices` idle connected devices: its CPU use in % of one core. */
async function idleCost(repo: string, mode: Mode, devices: number, idleSec: number, settleSec: number): Promise<{ cpuPct: number; inInterrupt: boolean[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-modes-'));
  const rpcSocket = path.join(dir, 'rpc.sock');
  const d = new Daemon(
    'vhostd',
    process.execPath,
    [path.join(repo, 'bin', 'vhostd.js'), '-m', `0x${(1 << TARGET_CORE).toString(16)}`, '-S', dir, '-r', rpcSocket, '--log-level', 'warn', ...modeArgs(mode)],
    { cwd: repo },
  );
  const fes: VhostUserFrontend[] = [];
  try {
    await d.waitSocket(rpcSocket, { intervalMs: 50 });
    for (let i = 0; i < devices; i++) {
      await rpcCall(rpcSocket, 'bdev_null_create', { name: `Null${i}`, num_blocks: 2048, block_size: 512 });
      await rpcCall(rpcSocket, 'vhost_create_blk_controller', { ctrlr: `idle${i}`, dev_name: `Null${i}` });
      const fe = await VhostUserFrontend.connect(path.join(dir, `idle${i}`));
      fes.push(fe);
      await fe.negotiate({ numQueues: 1, regions: [{ gpa: 0, sizeBytes: 2 << 20 }] });
      await fe.setupQueue(0, 128);
      // One I/O proves the device runs.
      const r = await fe.read(0, 0, 4096);
      if (r.status !== 0) throw new Error(`idle${i}: read status ${r.status}`);
    }
    await sleep(settleSec * 1000);
    const pid = d.child.pid as number;
    const c0 = processCpuSec(pid);
    const t0 = process.hrtime.bigint();
    await sleep(idleSec * 1000);
    const c1 = processCpuSec(pid);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    if (c0 === null || c1 === null) throw new Error('vhostd went away');
    const reactors = (await rpcCall(rpcSocket, 'framework_get_reactors')) as { reactors: { in_interrupt: boolean }[] };
    return { cpuPct: ((c1 - c0) / wall) * 100, inInterrupt: reactors.reactors.map((r) => r.in_interrupt) };
  } finally {
    for (const fe of fes) fe.close();
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

interface LoadResult {
  mode: Mode;
  qd: number;
  run: number;
  iops: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
  targetCpuPct: number;
  iopsPerBusyCore: number;
}

async function load(repo: string, mode: Mode, qd: number, runtimeSec: number, rampSec: number, run: number): Promise<LoadResult> {
  const shm = path.join('/dev/shm', `vhostd-modes-${process.pid}`);
  const t = await startVhostdTarget({ repo, kind: 'null', sizeBytes: 512 << 20, shmFile: shm, core: TARGET_CORE, vhostdArgs: modeArgs(mode) });
  try {
    const c0 = processCpuSec(t.pid);
    const w0 = process.hrtime.bigint();
    const r = await runPerf({ socketPath: t.socketPath, rw: 'randread', blockSizeBytes: 4096, iodepth: qd, queues: 1, runtimeSec, rampSec, cpu: GENERATOR_CORE, timeoutMs: 15_000 });
    const wall = Number(process.hrtime.bigint() - w0) / 1e9;
    const c1 = processCpuSec(t.pid);
    const cpu = c0 !== null && c1 !== null ? (c1 - c0) / wall : NaN;
    return {
      mode,
      qd,
      run,
      iops: Math.round(r.iops),
      meanUs: r.latencyNs.mean / 1000,
      p50Us: r.latencyNs.p50 / 1000,
      p99Us: r.latencyNs.p99 / 1000,
      targetCpuPct: cpu * 100,
      iopsPerBusyCore: Math.round(r.iops / cpu),
    };
  } finally {
    await t.stop();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      modes: { type: 'string', default: 'poll,adaptive,interrupt' },
      devices: { type: 'string', default: '16' },
      'idle-sec': { type: 'string', default: '10' },
      'settle-sec': { type: 'string', default: '12' },
      runtime: { type: 'string', default: '5' },
      ramp: { type: 'string', default: '1' },
      runs: { type: 'string', default: '1' },
      qds: { type: 'string', default: '1,32' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const modes = (values.modes as string).split(',') as Mode[];
  for (const m of modes) if (!['poll', 'adaptive', 'interrupt'].includes(m)) throw new Error(`--modes: unknown mode ${m}`);
  const devices = Number(values.devices);
  const idleSec = Number(values['idle-sec']);
  const settleSec = Number(values['settle-sec']);
  const runtime = Number(values.runtime);
  const ramp = Number(values.ramp);
  const runs = Number(values.runs);
  const qds = (values.qds as string).split(',').map(Number);
  const repo = repoRoot();
  const out = values.out ?? path.join(repo, 'bench', 'results');
  const loadavg0 = os.loadavg();

  const idle: { mode: Mode; cpuPct: number; inInterrupt: boolean[] }[] = [];
  for (const mode of modes) {
    const r = await idleCost(repo, mode, devices, idleSec, settleSec);
    idle.push({ mode, ...r });
    process.stderr.write(`idle ${mode}: ${r.cpuPct.toFixed(2)} % of a core, in_interrupt ${JSON.stringify(r.inInterrupt)}\n`);
  }
  const loads: LoadResult[] = [];
  let failed = 0;
  for (const qd of qds) {
    for (let run = 0; run < runs; run++) {
      for (const mode of modes) {
        try {
          const r = await load(repo, mode, qd, runtime, ramp, run);
          loads.push(r);
          process.stderr.write(`load ${mode} qd${qd} run ${run}: ${r.iops} IOPS, mean ${r.meanUs.toFixed(1)} µs, target ${r.targetCpuPct.toFixed(0)} %\n`);
        } catch (err) {
          failed++;
          process.stderr.write(`load ${mode} qd${qd} run ${run} FAILED: ${String(err)}\n`);
        }
      }
    }
  }

  const lines: string[] = [];
  lines.push(`Load average at start: ${loadavg0.map((x) => x.toFixed(2)).join(' ')}; at end: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  lines.push('');
  lines.push(`Idle cost, ${devices} connected idle virtio-blk devices (null bdevs), one target core, ${idleSec} s from ${settleSec} s after they started:`);
  lines.push('');
  lines.push('| mode | process CPU, % of one core | in_interrupt |');
  lines.push('|---|---|---|');
  for (const r of idle) lines.push(`| ${r.mode} | ${r.cpuPct.toFixed(2)} | ${r.inInterrupt.join(', ')} |`);
  lines.push('');
  lines.push(`Under load: null bdev, 4 KiB randread, 1 queue, vhostd-perf polling on core ${GENERATOR_CORE}, target on core ${TARGET_CORE}, ${runtime} s (medians of ${runs}):`);
  lines.push('');
  lines.push('| QD | mode | IOPS | mean µs | p50 µs | p99 µs | target CPU % | IOPS per busy core | IOPS vs poll |');
  lines.push('|---|---|---|---|---|---|---|---|---|');
  for (const qd of qds) {
    const poll = loads.filter((l) => l.qd === qd && l.mode === 'poll');
    const pollIops = poll.length ? median(poll.map((l) => l.iops)) : NaN;
    for (const mode of modes) {
      const ls = loads.filter((l) => l.qd === qd && l.mode === mode);
      if (ls.length === 0) continue;
      const m = (f: (l: LoadResult) => number) => median(ls.map(f));
      lines.push(
        `| ${qd} | ${mode} | ${Math.round(m((l) => l.iops))} | ${m((l) => l.meanUs).toFixed(1)} | ${m((l) => l.p50Us).toFixed(1)} | ${m((l) => l.p99Us).toFixed(1)} | ${m((l) => l.targetCpuPct).toFixed(0)} | ${Math.round(m((l) => l.iopsPerBusyCore))} | ${(m((l) => l.iops) / pollIops).toFixed(3)} |`,
      );
    }
  }
  const md = lines.join('\n');
  console.log(md);
  fs.mkdirSync(out, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  fs.writeFileSync(path.join(out, `modes-${stamp}.json`), JSON.stringify({ loadavg0, loadavg1: os.loadavg(), idle, loads }, null, 2));
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(String(err?.stack ?? err));
    process.exit(2);
  },
);
