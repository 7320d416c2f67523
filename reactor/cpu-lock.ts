/**
 * Per-core lock files, as SPDK's app framework holds them: for every core of
 * -m, /var/tmp/spdk_cpu_lock_NNN (three digits) with an fcntl write lock on
 * the whole file and the holder's pid written in it (a native 32-bit int, as SPDK writes and reads it), held while the target
 * runs. A second target (vhostd or SPDK) asking for a held core refuses to
 * start, naming the core and the holder. The kernel drops the locks when the
 * process dies; release() also removes the files.
 * Thread: main (reactor). fcntl locks belong to the process: no other code
 * may open and close these files (closing any fd of a file drops its lock).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from '../bindings';

export const CPU_LOCK_DIR = '/var/tmp';

export function cpuLockPath(core: number, dir = CPU_LOCK_DIR): string {
  return path.join(dir, `spdk_cpu_lock_${String(core).padStart(3, '0')}`);
}

export class CpuLockError extends Error {
  readonly code = 'ERR_CPU_LOCKED';
  constructor(
    readonly core: number,
    /** The holder's pid, when the kernel could tell it. */
    readonly holderPid: number | null,
  ) {
    super(
      holderPid !== null
        ? `cannot lock core ${core}: process ${holderPid} has claimed it (${cpuLockPath(core)}); ` +
            'give a different -m, or --disable-cpumask-locks to run anyway'
        : `cannot lock core ${core}: another process has claimed it (${cpuLockPath(core)}); ` +
            'give a different -m, or --disable-cpumask-locks to run anyway',
    );
    this.name = 'CpuLockError';
  }
}

/** The locks of one process's cores; release() once at exit. */
export class CpuLocks {
  private readonly held = new Map<number, { fd: number; file: string }>();

  /** Lock every core of `cores` or none: on a conflict, the ones already taken are released and it throws CpuLockError. */
  static claim(cores: readonly number[], dir = CPU_LOCK_DIR): CpuLocks {
    const locks = new CpuLocks();
    try {
      for (const core of cores) locks.take(core, dir);
    } catch (err) {
      locks.release();
      throw err;
    }
    return locks;
  }

  private take(core: number, dir: string): void {
    const file = cpuLockPath(core, dir);
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    let holder: number;
    try {
      holder = native.lockFile(fd);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    if (holder !== 0) {
      // Our fd was never locked, so closing it drops nothing of the holder's.
      fs.closeSync(fd);
      throw new CpuLockError(core, holder > 0 ? holder : null);
    }
    // As SPDK (lib/event/app.c claim_cpu_cores): the file is one native int, the holder's pid, which
    // SPDK reads back to name the holder ("probably process N has claimed it"); text read as an int
    // printed garbage there (e.g. 909195065 for "9716").
    fs.ftruncateSync(fd, 4);
    const pid = Buffer.alloc(4);
    pid.writeInt32LE(process.pid);
    fs.writeSync(fd, pid, 0, 4, 0);
    this.held.set(core, { fd, file });
  }

  get cores(): number[] {
    return [...this.held.keys()];
  }

  /** Remove the files and drop the locks. Idempotent. */
  release(): void {
    for (const { fd, file } of this.held.values()) {
      try {
        fs.unlinkSync(file);
      } catch {
        // already gone
      }
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
    }
    this.held.clear();
  }
}

/** -f: write the pid; returns the remover (idempotent, for exit). */
export function writePidFile(file: string): () => void {
  fs.writeFileSync(file, `${process.pid}\n`);
  let removed = false;
  return () => {
    if (removed) return;
    removed = true;
    try {
      // Only our own: a successor may have written its pid meanwhile.
      if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.unlinkSync(file);
    } catch {
      // already gone
    }
  };
}
