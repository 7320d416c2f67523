/**
 * SPDK as a bench peer (issue #12 item 4): where its build is, its vhost app
 * as a target (the same shape as bench/lib/targets.ts' vhostd and
 * qemu-storage-daemon), SPDK's bdevperf with its virtio-user initiator as a
 * load generator, the hugepage setup both need, and the target's busy time
 * (thread_get_stats for the targets that have it, /proc/PID/stat for
 * any process). Main thread of the bench runner.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Daemon } from '../../test/lib/daemon';
import { rpcCall } from '../../test/lib/rpc';
import type { RunFigures } from './rounds';

/** An SPDK build: the binaries the bench uses. */
export interface SpdkBuild {
  dir: string;
  vhost: string;
  /** Absent when the build has no bdevperf (then the bdevperf generator is skipped, said so). */
  bdevperf: string | null;
  /** examples/interrupt_tgt: v23.05's vhost target with an interrupt mode (-E); null when absent. */
  interruptTgt: string | null;
}

/**
 * Where SPDK is built: $SPDK_DIR when set (and only there), else
 * $SPDK_WORK/spdk (../shared/peers/build-spdk.sh's location), else
 * /var/tmp/spdk-work/spdk. Returns the build or the reason there is none.
 */
export function findSpdk(env: NodeJS.ProcessEnv = process.env): SpdkBuild | { missing: string } {
  const candidates =
    env.SPDK_DIR !== undefined && env.SPDK_DIR !== ''
      ? [env.SPDK_DIR]
      : [...new Set([path.join(env.SPDK_WORK ?? '/var/tmp/spdk-work', 'spdk'), '/var/tmp/spdk-work/spdk'])];
  const exe = (f: string): boolean => {
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return fs.statSync(f).isFile();
    } catch {
      return false;
    }
  };
  for (const dir of candidates) {
    const vhost = path.join(dir, 'build', 'bin', 'vhost');
    if (!exe(vhost)) continue;
    const bdevperf = path.join(dir, 'build', 'examples', 'bdevperf');
    const itgt = path.join(dir, 'build', 'examples', 'interrupt_tgt');
    return { dir, vhost, bdevperf: exe(bdevperf) ? bdevperf : null, interruptTgt: exe(itgt) ? itgt : null };
  }
  return {
    missing:
      `no SPDK build: no executable build/bin/vhost in ${candidates.join(' or ')} ` +
      '(set SPDK_DIR, or build one with ../shared/peers/build-spdk.sh)',
  };
}

/** 2 MiB pages SPDK's vhost (-s), bdevperf (-s 512) and vhostd-perf --hugepages need; hugetlbfs on /dev/hugepages. */
export function ensureHugepages(pages: number): void {
  const nr = '/proc/sys/vm/nr_hugepages';
  if (Number(fs.readFileSync(nr, 'utf8').trim()) < pages) fs.writeFileSync(nr, String(pages));
  const mounts = fs.readFileSync('/proc/mounts', 'utf8');
  if (!mounts.split('\n').some((l) => l.split(' ')[1] === '/dev/hugepages' && l.split(' ')[2] === 'hugetlbfs')) {
    throw new Error('hugetlbfs is not mounted on /dev/hugepages (mount -t hugetlbfs nodev /dev/hugepages)');
  }
}

/** Busy seconds summed over a target's threads from its own accounting (thread_get_stats: busy / tick_rate), null when it fails. */
export async function threadBusySec(rpcSocket: string, only?: (name: string) => boolean): Promise<number | null> {
  try {
    const s = (await rpcCall(rpcSocket, 'thread_get_stats', undefined, 10_000)) as { tick_rate: number; threads: { name: string; busy: number }[] };
    return s.threads.filter((t) => only === undefined || only(t.name)).reduce((a, t) => a + t.busy, 0) / s.tick_rate;
  } catch {
    return null;
  }
}

export interface SpdkTarget {
  name: 'spdk';
  /** Its JSON-RPC socket; its -S directory (controller sockets) is the same directory. */
  rpcSocket: string;
  pid: number;
  log(): string;
  stop(): Promise<void>;
}

export interface SpdkTargetConfig {
  build: SpdkBuild;
  /** The core of the target: -m mask and taskset for the whole process. */
  core: number;
  /** Hugepage memory of the app, MiB (-s). */
  memMiB: number;
  /** Run examples/interrupt_tgt -E instead of the vhost app (v23.05's interrupt-mode vhost target). */
  interrupt?: boolean;
}

/** Starts SPDK's vhost app on `cfg.core` and waits for framework_wait_init; no bdev yet. */
export async function startSpdk(cfg: SpdkTargetConfig): Promise<SpdkTarget> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spdk-bench-'));
  const rpcSocket = path.join(dir, 'rpc.sock');
  const mask = `0x${(1n << BigInt(cfg.core)).toString(16)}`;
  const app = cfg.interrupt === true ? cfg.build.interruptTgt : cfg.build.vhost;
  if (app === null) throw new Error(`no examples/interrupt_tgt in ${cfg.build.dir}`);
  const args = ['-c', String(cfg.core), app, '-m', mask, '-S', dir, '-s', String(cfg.memMiB), '-u', '-r', rpcSocket, '--disable-cpumask-locks'];
  if (cfg.interrupt === true) args.push('-E');
  const d = new Daemon('spdk', 'taskset', args, { cwd: cfg.build.dir });
  const stop = async (): Promise<void> => {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await d.waitSocket(rpcSocket, { timeoutMs: 60_000, intervalMs: 25 });
    await rpcCall(rpcSocket, 'framework_wait_init', undefined, 60_000);
  } catch (err) {
    await stop();
    throw err;
  }
  const pid = d.child.pid;
  if (pid === undefined) throw new Error('SPDK vhost: no pid');
  return { name: 'spdk', rpcSocket, pid, log: () => d.log, stop };
}

/** The vhost-user socket of controller `ctrlr` of an SPDK target started by startSpdk. */
export function spdkSocket(t: SpdkTarget, ctrlr: string): string {
  return path.join(path.dirname(t.rpcSocket), ctrlr);
}

export interface BdevperfJob {
  socketPath: string;
  rw: 'randread' | 'randwrite';
  blockSizeBytes: number;
  iodepth: number;
  runtimeSec: number;
  /** The generator's core (-m mask). */
  cpu: number;
}

/**
 * Parses bdevperf's output (with -l): the Total line (IOPS, MiB/s, Fail/s,
 * TO/s, Average µs, ...) and the latency summary's 50th/99th percentiles.
 * Returns null when a figure is missing. `errors` is the failed + timed-out
 * rate rounded up (only "any or none" matters to the bench).
 */
export function parseBdevperf(text: string): RunFigures | null {
  const t = text.replace(/\r/g, '');
  const tot = /^\s*Total\s*:\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)/m.exec(t);
  const pct = new Map<string, number>();
  for (const m of t.matchAll(/^\s*([\d.]+)%\s*:\s*([\d.]+)us/gm)) if (!pct.has(m[1]!)) pct.set(m[1]!, Number(m[2]));
  const p50 = pct.get('50.00000');
  const p99 = pct.get('99.00000');
  if (tot === null || p50 === undefined || p99 === undefined) return null;
  const iops = Number(tot[1]);
  const failPerSec = Number(tot[3]);
  const toPerSec = Number(tot[4]);
  return { iops, latMeanUs: Number(tot[5]), latP50Us: p50, latP99Us: p99, errors: failPerSec + toPerSec > 0 ? Math.ceil(failPerSec + toPerSec) : 0 };
}

/**
 * One bdevperf run against a vhost-user-blk socket: SPDK's virtio-user
 * initiator (bdev_virtio_attach_controller trtype user, 1 queue of 512), its
 * DPDK hugetlbfs memory (-s 512, -g single-file segments so the back-end can
 * map them), latency percentiles (-l).
 */
export async function runBdevperf(build: SpdkBuild, job: BdevperfJob): Promise<RunFigures> {
  if (build.bdevperf === null) throw new Error(`no build/examples/bdevperf in ${build.dir}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bdevperf-'));
  try {
    const conf = path.join(dir, 'bp.json');
    const attach = { name: 'VirtioBlk0', trtype: 'user', traddr: job.socketPath, dev_type: 'blk', vq_count: 1, vq_size: 512 };
    fs.writeFileSync(conf, JSON.stringify({ subsystems: [{ subsystem: 'bdev', config: [{ method: 'bdev_virtio_attach_controller', params: attach }, { method: 'bdev_wait_for_examine' }] }] }));
    const mask = `0x${(1n << BigInt(job.cpu)).toString(16)}`;
    const args = ['-m', mask, '-u', '-g', '-s', '512', '--json', conf, '-q', String(job.iodepth), '-o', String(job.blockSizeBytes), '-w', job.rw, '-t', String(job.runtimeSec), '-l'];
    const out = await new Promise<string>((resolve, reject) => {
      execFile(build.bdevperf as string, args, { cwd: build.dir, timeout: (job.runtimeSec + 90) * 1000, maxBuffer: 16 << 20, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        const text = `${stdout}${stderr}`;
        if (err !== null) reject(new Error(`bdevperf failed (${err.message.split('\n')[0]}):\n${text.split('\n').slice(-30).join('\n')}`));
        else resolve(text);
      });
    });
    const f = parseBdevperf(out);
    if (f === null) throw new Error(`bdevperf: no Total line or percentiles in its output:\n${out.split('\n').slice(-30).join('\n')}`);
    return f;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
