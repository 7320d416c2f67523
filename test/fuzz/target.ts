/**
 * The target every fuzzer and the soak drive: a real vhostd process with
 * malloc-backed blk controllers, and the checks a hostile run makes between
 * cases — the process lives, a fresh front-end gets verified I/O through a
 * controller, the JSON-RPC server answers, and the process's fds and RSS
 * (from /proc) stay where they were.
 * Thread: the fuzz runner's main thread.
 */
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus } from '../lib/frontend-wire';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';
import { rpcCall } from '../lib/rpc';

/** A failure a fuzzer found: carries what reproduces it. */
export class FuzzFailure extends Error {
  constructor(
    readonly fuzzer: string,
    readonly seed: number,
    /** The first case to replay (where the failing case's connection or batch began). */
    readonly fromCase: number,
    readonly caseNo: number,
    what: string,
  ) {
    super(`${fuzzer}: ${what} — reproduce with: npm run fuzz -- --only ${fuzzer} --seed ${seed} --from ${fromCase} --cases ${Math.max(1, caseNo - fromCase + 1)}`);
    this.name = 'FuzzFailure';
  }
}

export interface ProcStats {
  fds: number;
  rssKiB: number;
  threads: number;
}

export function procStats(pid: number): ProcStats {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status);
    return m ? Number(m[1]) : -1;
  };
  return { fds: fs.readdirSync(`/proc/${pid}/fd`).length, rssKiB: field('VmRSS'), threads: field('Threads') };
}

export interface ControllerInfo {
  name: string;
  bdev: string;
  socket: string;
  numBlocks: number;
}

export class FuzzTarget {
  private sector = 0;
  private constructor(
    readonly h: VhostdHandle,
    readonly pid: number,
  ) {}

  static async start(opts: { cpumask?: string; extraArgs?: string[] } = {}): Promise<FuzzTarget> {
    const h = await startVhostd({ cpumask: opts.cpumask ?? '0x2', startTimeoutMs: 30_000, extraArgs: opts.extraArgs });
    const pid = h.daemon.child.pid;
    if (pid === undefined) throw new Error('vhostd has no pid');
    return new FuzzTarget(h, pid);
  }

  alive(): boolean {
    return this.h.daemon.running;
  }

  rpc(method: string, params?: unknown, timeoutMs = 30_000): Promise<unknown> {
    return rpcCall(this.h.rpcSocket, method, params, timeoutMs);
  }

  async createBlk(name: string, numBlocks = 8192, opts: { cpumask?: string; packedRing?: boolean } = {}): Promise<ControllerInfo> {
    const bdev = `Malloc_${name}`;
    await this.rpc('bdev_malloc_create', { name: bdev, num_blocks: numBlocks, block_size: 512 });
    const params: Record<string, unknown> = { ctrlr: name, dev_name: bdev };
    if (opts.cpumask) params.cpumask = opts.cpumask;
    if (opts.packedRing) params.packed_ring = true;
    await this.rpc('vhost_create_blk_controller', params);
    return { name, bdev, socket: this.h.socketOf(name), numBlocks };
  }

  async deleteBlk(c: ControllerInfo): Promise<void> {
    await this.rpc('vhost_delete_controller', { ctrlr: c.name });
    await this.rpc('bdev_malloc_delete', { name: c.bdev });
  }

  stats(): ProcStats {
    return procStats(this.pid);
  }

  /** The target's log since it started (capped by Daemon). */
  log(): string {
    return this.h.daemon.log;
  }

  /**
   * Liveness: a fresh front-end on `c` negotiates, writes random data, reads
   * it back and compares; then disconnects. Throws with what went wrong.
   */
  async verifiedIo(c: ControllerInfo, timeoutMs = 15_000): Promise<void> {
    const fe = await VhostUserFrontend.connect(c.socket, timeoutMs, { waitAccepted: true });
    try {
      await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 1 << 20 }] });
      await fe.setupQueue(0, 16, { timeoutMs });
      const data = randomBytes(4096);
      const sector = (this.sector = (this.sector + 8) % (c.numBlocks - 8));
      const w = await fe.write(0, sector, data);
      if (w.status !== BlkStatus.OK) throw new Error(`liveness write on ${c.name} got status ${w.status}`);
      const r = await fe.read(0, sector, 4096);
      if (r.status !== BlkStatus.OK) throw new Error(`liveness read on ${c.name} got status ${r.status}`);
      if (!Buffer.from(r.data).equals(data)) throw new Error(`liveness read on ${c.name} returned other data than written`);
    } finally {
      fe.close();
    }
  }

  /** The RPC server answers a cheap call; resolves with how long it took. */
  async rpcPing(timeoutMs = 10_000): Promise<number> {
    const t0 = performance.now();
    await this.rpc('spdk_get_version', undefined, timeoutMs);
    return performance.now() - t0;
  }

  /** Waits (bounded) until the fd count is at most `fds`; returns the last stats seen. */
  async settleFds(fds: number, timeoutMs = 5000): Promise<ProcStats> {
    const deadline = Date.now() + timeoutMs;
    let s = this.stats();
    while (s.fds > fds && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      s = this.stats();
    }
    return s;
  }

  async stop(): Promise<{ code: number | null; signal: string | null }> {
    return this.h.stop();
  }
}
