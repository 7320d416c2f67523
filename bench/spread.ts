/**
 * One device with its queues on one core vs spread over the cores of its
 * mask (`spread_queues`, issue #12 item 2): null bdev, 4 KiB random reads,
 * vhostd-perf driving `--queues` queues from one generator thread.
 *
 *   node dist/bench/spread.js [--cores 0,1] [--queues 2] [--qd 32] [--runtime 5] [--ramp 1] [--runs 1]
 *                             [--generator-cpu 0] [--mode poll]
 *
 * Runs alternate: one core (cpumask = the first core), spread over all of
 * `--cores`. Reports IOPS, the target's CPU time per second (its busy cores)
 * and IOPS per busy core, and the spread/one-core ratio. On a machine with
 * as many cores as the target uses, the generator shares a core with a
 * worker: the initiator is then the limit, and the report says so.
 * Main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runPerf } from './perf/perf';
import { processCpuSec } from './lib/env';
import { Daemon } from '../test/lib/daemon';
import { rpcCall } from '../test/lib/rpc';

function repoRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'bin', 'vhostd.js'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('repository root not found');
}

interface Run {
  spread: boolean;
  iops: number;
  targetCpu: number;
  iopsPerBusyCore: number;
  generatorCpu: number;
}

async function once(repo: string, cores: number[], spread: boolean, o: { queues: number; qd: number; runtime: number; ramp: number; gen: number; mode: string }): Promise<Run> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-spread-'));
  const rpc = path.join(dir, 'rpc.sock');
  const mask = '0x' + cores.reduce((m, c) => m | (1 << c), 0).toString(16);
  const d = new Daemon(
    'vhostd',
    process.execPath,
    [path.join(repo, 'bin', 'vhostd.js'), '-m', mask, '-S', dir, '-r', rpc, '--log-level', 'warn', '--disable-cpumask-locks', '--poll-mode', o.mode],
    { cwd: repo },
  );
  try {
    await d.waitSocket(rpc, { intervalMs: 50 });
    await rpcCall(rpc, 'bdev_null_create', { name: 'Null0', num_blocks: 1 << 20, block_size: 512 });
    const ctrlMask = spread ? mask : `0x${(1 << cores[0]).toString(16)}`;
    await rpcCall(rpc, 'vhost_create_blk_controller', { ctrlr: 'sp', dev_name: 'Null0', cpumask: ctrlMask, ...(spread ? { spread_queues: true } : {}) });
    const pid = d.child.pid as number;
    const c0 = processCpuSec(pid);
    const w0 = process.hrtime.bigint();
    const r = await runPerf({ socketPath: path.join(dir, 'sp'), rw: 'randread', blockSizeBytes: 4096, iodepth: o.qd, queues: o.queues, runtimeSec: o.runtime, rampSec: o.ramp, cpu: o.gen, timeoutMs: 15_000 });
    const wall = Number(process.hrtime.bigint() - w0) / 1e9;
    const c1 = processCpuSec(pid);
    const cpu = c0 !== null && c1 !== null ? (c1 - c0) / wall : NaN;
    return { spread, iops: Math.round(r.iops), targetCpu: cpu, iopsPerBusyCore: Math.round(r.iops / cpu), generatorCpu: (r.cpu.userSec + r.cpu.sysSec) / r.cpu.wallSec };
  } finally {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      cores: { type: 'string', default: '0,1' },
      queues: { type: 'string', default: '2' },
      qd: { type: 'string', default: '32' },
      runtime: { type: 'string', default: '5' },
      ramp: { type: 'string', default: '1' },
      runs: { type: 'string', default: '1' },
      'generator-cpu': { type: 'string', default: '0' },
      mode: { type: 'string', default: 'poll' },
    },
  });
  const cores = (values.cores as string).split(',').map(Number);
  const o = {
    queues: Number(values.queues),
    qd: Number(values.qd),
    runtime: Number(values.runtime),
    ramp: Number(values.ramp),
    gen: Number(values['generator-cpu']),
    mode: values.mode as string,
  };
  const repo = repoRoot();
  const l0 = os.loadavg();
  const runs: Run[] = [];
  for (let i = 0; i < Number(values.runs); i++) {
    for (const spread of [false, true]) {
      const r = await once(repo, cores, spread, o);
      runs.push(r);
      process.stderr.write(`${spread ? 'spread' : 'one core'}: ${r.iops} IOPS, target ${(r.targetCpu * 100).toFixed(0)} %, generator ${(r.generatorCpu * 100).toFixed(0)} %\n`);
    }
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const one = runs.filter((r) => !r.spread);
  const sp = runs.filter((r) => r.spread);
  console.log(`load average ${l0.map((x) => x.toFixed(1)).join(' ')} → ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}; cores ${cores.join(',')}, ${o.queues} queues × QD${o.qd}, generator on core ${o.gen}${cores.includes(o.gen) ? ' (shares a core with a worker: the initiator is a limit)' : ''}`);
  console.log('| placement | IOPS | target CPU (cores) | IOPS per busy core | generator CPU |');
  console.log('|---|---|---|---|---|');
  for (const [name, rs] of [['one core', one], ['spread', sp]] as const) {
    console.log(`| ${name} | ${med(rs.map((r) => r.iops))} | ${med(rs.map((r) => r.targetCpu)).toFixed(2)} | ${med(rs.map((r) => r.iopsPerBusyCore))} | ${med(rs.map((r) => r.generatorCpu)).toFixed(2)} |`);
  }
  console.log(`spread / one core: ${(med(sp.map((r) => r.iops)) / med(one.map((r) => r.iops))).toFixed(2)}×`);
  return 0;
}

main().then(
  (c) => process.exit(c),
  (err) => {
    console.error(String(err?.stack ?? err));
    process.exit(2);
  },
);
