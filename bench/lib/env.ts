/**
 * The environment a bench run records next to its figures: kernel, CPU
 * model, core count, Node and QEMU versions, vhostd's version and git
 * commit, and the load average. Main thread of the bench runner.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface BenchEnvironment {
  hostname: string;
  kernel: string;
  cpuModel: string;
  cpus: number;
  memTotalBytes: number;
  node: string;
  qemu: string | null;
  vhostdVersion: string;
  gitCommit: string | null;
  /** True when the work tree had uncommitted changes (the figures then describe more than the commit). */
  gitDirty: boolean | null;
  /** os.loadavg() when the run started: 1, 5, 15 minutes. */
  loadAvgStart: number[];
  /** Processes other than this one using over 10 % of a CPU when the run started (ps). */
  busyProcessesStart: string[];
}

function firstLine(command: string, args: string[], cwd?: string): string | null {
  try {
    const out = execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
    const line = out.split('\n')[0]?.trim() ?? '';
    return line === '' ? null : line;
  } catch {
    return null;
  }
}

/** Busy processes (ps, over 10 % CPU), so a noisy machine shows in the record. */
export function busyProcesses(): string[] {
  try {
    const out = execFileSync('ps', ['-eo', 'pid,pcpu,comm', '--sort=-pcpu', '--no-headers'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
    });
    return out
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => {
        const [pid, pcpu] = l.split(/\s+/);
        return pid !== undefined && Number(pid) !== process.pid && Number(pcpu) > 10;
      });
  } catch {
    return [];
  }
}

export function collectEnvironment(repo: string): BenchEnvironment {
  const cpus = os.cpus();
  let vhostdVersion = '0.0.0';
  try {
    vhostdVersion = (JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as { version?: string }).version ?? vhostdVersion;
  } catch {
    // keep the default
  }
  const status = (() => {
    try {
      return execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
        cwd: repo,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 10_000,
      });
    } catch {
      return null;
    }
  })();
  return {
    hostname: os.hostname(),
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    cpuModel: cpus[0]?.model ?? 'unknown',
    cpus: cpus.length,
    memTotalBytes: os.totalmem(),
    node: process.version,
    qemu: firstLine('qemu-storage-daemon', ['--version']),
    vhostdVersion,
    gitCommit: firstLine('git', ['rev-parse', 'HEAD'], repo),
    gitDirty: status === null ? null : status.trim() !== '',
    loadAvgStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
    busyProcessesStart: busyProcesses(),
  };
}

/** User + system CPU seconds a process has used so far (/proc/PID/stat), or null when it is gone. */
export function processCpuSec(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
    return (utime + stime) / 100; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}
