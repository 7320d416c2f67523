/**
 * The target every fuzzer and the soak drive: a real vhostd process with
 * malloc-backed blk controllers, and the checks a hostile run makes between
 * cases — the process lives, a fresh front-end gets verified I/O through a
 * controller, the JSON-RPC server answers, and the process's fds and RSS
 * (from /proc) stay where they were.
 * Thread: the fuzz runner's main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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

/** One isolate's V8 heap after a full GC (test/fuzz/heap-probe.ts): tid 0 is the main thread. */
export interface IsolateHeap {
  tid: number;
  usedKiB: number;
  totalKiB: number;
  externalKiB: number;
}

/** One isolate's live heap readings (KiB after a full GC): the baseline (its first), the most seen, the last. */
export interface HeapTrack {
  base: number;
  max: number;
  last: number;
}

/**
 * Record a heap probe in `heap` (an isolate seen for the first time starts
 * its own baseline) and return the first isolate whose reading is more than
 * `slackKiB` above its baseline, or null. The fuzz runner and the soak share it.
 */
export function recordHeap(heap: Map<number, HeapTrack>, isolates: readonly IsolateHeap[], slackKiB: number): IsolateHeap | null {
  let over: IsolateHeap | null = null;
  for (const i of isolates) {
    const h = heap.get(i.tid);
    if (h === undefined) {
      heap.set(i.tid, { base: i.usedKiB, max: i.usedKiB, last: i.usedKiB });
      continue;
    }
    h.last = i.usedKiB;
    if (i.usedKiB > h.max) h.max = i.usedKiB;
    if (over === null && i.usedKiB > h.base + slackKiB) over = i;
  }
  return over;
}

/** An isolate in messages: tid 0 is the main thread. */
export function isolateName(tid: number): string {
  return tid === 0 ? 'the main thread' : `worker thread ${tid}`;
}

/** One reading of every isolate, short: "main 10.9, t1 5.8 MiB". */
export function heapText(heap: ReadonlyMap<number, HeapTrack>, which: keyof HeapTrack): string {
  return [...heap].map(([tid, h]) => `${tid === 0 ? 'main' : `t${tid}`} ${(h[which] / 1024).toFixed(1)}`).join(', ') + ' MiB';
}

export interface ControllerInfo {
  name: string;
  bdev: string;
  socket: string;
  numBlocks: number;
}

export class FuzzTarget {
  private sector = 0;
  private probeSeq = 0;
  /** Threads that answered a heap probe so far (a later probe waits for each of them). */
  private readonly probeTids = new Set<number>();
  private constructor(
    readonly h: VhostdHandle,
    readonly pid: number,
    /** With `heapProbe`: the directory the probe loaded into vhostd reads requests from and writes to. */
    private readonly probeDir: string | null,
  ) {}

  /**
   * `heapProbe`: load test/fuzz/heap-probe.js into vhostd (NODE_OPTIONS
   * --require), so heapProbe() can report each isolate's live V8 heap.
   */
  static async start(opts: { cpumask?: string; extraArgs?: string[]; heapProbe?: boolean } = {}): Promise<FuzzTarget> {
    let probeDir: string | null = null;
    let env: NodeJS.ProcessEnv | undefined;
    if (opts.heapProbe === true) {
      probeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-heap-probe-'));
      const preload = path.join(__dirname, 'heap-probe.js');
      env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${preload}`.trim(), VHOSTD_HEAP_PROBE_DIR: probeDir };
    }
    let h: VhostdHandle;
    try {
      h = await startVhostd({ cpumask: opts.cpumask ?? '0x2', startTimeoutMs: 30_000, extraArgs: opts.extraArgs, env });
    } catch (e) {
      if (probeDir !== null) fs.rmSync(probeDir, { recursive: true, force: true });
      throw e;
    }
    const pid = h.daemon.child.pid;
    if (pid === undefined) throw new Error('vhostd has no pid');
    return new FuzzTarget(h, pid, probeDir);
  }

  /**
   * Every isolate of vhostd collects its garbage and reports the V8 heap it
   * still uses. Waits for each thread that answered before (and, the first
   * time, 600 ms for the workers after the main thread: an engine worker
   * turns its event loop between 100 ms poll slices). Null without
   * `heapProbe`. Throws when a known thread does not answer in `timeoutMs`.
   */
  async heapProbe(timeoutMs = 10_000): Promise<IsolateHeap[] | null> {
    if (this.probeDir === null) return null;
    const seq = ++this.probeSeq;
    const out = path.join(this.probeDir, 'heap.jsonl');
    fs.writeFileSync(path.join(this.probeDir, 'request'), String(seq));
    const deadline = Date.now() + timeoutMs;
    const first = this.probeTids.size === 0;
    let mainAt = 0;
    for (;;) {
      const got = new Map<number, IsolateHeap>();
      let text = '';
      try {
        text = fs.readFileSync(out, 'utf8');
      } catch {
        // nothing answered yet
      }
      for (const line of text.split('\n')) {
        if (line === '') continue;
        const r = JSON.parse(line) as IsolateHeap & { seq: number };
        if (r.seq === seq) got.set(r.tid, { tid: r.tid, usedKiB: r.usedKiB, totalKiB: r.totalKiB, externalKiB: r.externalKiB });
      }
      if (first && got.has(0) && mainAt === 0) mainAt = Date.now();
      const done = first ? mainAt > 0 && Date.now() - mainAt >= 600 : [...this.probeTids].every((t) => got.has(t));
      if (done) {
        for (const t of got.keys()) this.probeTids.add(t);
        // Keep the file short on long runs: earlier answers are no longer needed.
        fs.writeFileSync(out, '');
        return [...got.values()].sort((a, b) => a.tid - b.tid);
      }
      if (Date.now() > deadline) throw new Error(`heap probe ${seq}: threads ${[...this.probeTids].filter((t) => !got.has(t)).join(', ') || 'main'} did not answer in ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
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
    try {
      return await this.h.stop();
    } finally {
      if (this.probeDir !== null) fs.rmSync(this.probeDir, { recursive: true, force: true });
    }
  }
}
