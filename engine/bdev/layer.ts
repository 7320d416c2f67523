/**
 * The bdev layer of one engine worker (after SPDK's lib/bdev/bdev.c): what
 * devices use instead of talking to bdev modules themselves.
 *
 * - One handle per bdev name per worker, refcounted: every device on this
 *   worker that uses the bdev gets the same underlying module object and the
 *   same channel (SPDK's io_channel), however many devices share it.
 * - submit() does what SPDK's bdev layer does around a module's submit:
 *   QoS (bdev_set_qos_limit's 1 ms budgets; over-budget I/Os wait in order),
 *   the NOMEM wait queue (an I/O the module refuses for want of resources is
 *   resubmitted after a later completion), iostat (per bdev and worker).
 *   It never throws: every I/O completes exactly once with a status through
 *   io.onComplete(), and only from poll().
 * - Events (resize now, hot-remove next) are addressed by bdev name and
 *   reach every user of the bdev on this worker.
 *
 * Thread: the engine worker that owns the layer; nothing here is shared.
 */
import type { BdevDesc } from '../control';
import { logger } from '../log';
import { type Bdev, type BdevChannel, type BdevIo, BdevIoStatus, type BdevIoType, type IoRoute } from './bdev';
import { IoStatRecorder } from './iostat';
import type { BdevModuleEngine, ModuleWorkerState } from './module';
import { BDEV_MODULES } from './modules';
import { QosGate } from './qos';
import { Fifo } from '../fifo';
import { performance } from 'node:perf_hooks';

/** What a device that opened a bdev is told. */
export interface BdevUser {
  /** The bdev now has numBlocks blocks (bdevResize); I/O is checked against the new size from now on. */
  bdevResized(numBlocks: number): void;
}

/** One user's view of an open bdev. */
export interface BdevHandle {
  readonly name: string;
  readonly blockSize: number;
  /** Current size (changes with bdevResize). */
  readonly numBlocks: number;
  ioTypeSupported(type: BdevIoType): boolean;
  /**
   * Start `io` (QoS, NOMEM retry and iostat included). `nowMs` is the
   * worker's clock (the submission stamp for latency statistics). Never
   * throws; io.onComplete() is called once, from BdevLayer.poll().
   */
  submit(io: BdevIo, nowMs: number): void;
  /** I/Os this user submitted that have not completed yet. */
  readonly outstanding: number;
  /**
   * A stopping user: its I/Os waiting for QoS budget go at full speed (a rate
   * limit must not hold up a stop).
   */
  drain(): void;
  /** Give the handle back (only when outstanding is 0); the last close releases the channel and the module object. */
  close(): void;
}

export interface BdevLayer {
  /** Open `desc` for `user` (the first open on this worker opens the module and its channel). Throws on a bad description. */
  open(desc: BdevDesc, user: BdevUser, nowMs?: number): BdevHandle;
  /**
   * Once per loop iteration: QoS timeslices, NOMEM resubmissions, module
   * completions (each io.onComplete()), statistics. Returns how much work
   * was done (0 = idle).
   */
  poll(nowMs: number): number;
  /**
   * Later in the same iteration, after devices submitted: module
   * completions only (each io.onComplete(); a kernel ring also gets what was
   * just queued). What a bdev finished at once (null, malloc, a fast ring)
   * then reaches the driver in the iteration that took the request, not the
   * next one. Statistics, QoS and NOMEM retries stay with poll(). Returns the
   * completions delivered.
   */
  reap(): number;
  /** bdevResize: the bdev takes the new size, then every user of `name` on this worker is told. Returns how many users were told (0: not open here). */
  resize(name: string, numBlocks: number): number;
  /**
   * A user is about to unmap guest memory that its I/Os pointed into (all of
   * them completed): modules forget what they registered about these views
   * (a file ring's registered buffers). Call before every unmap.
   */
  releaseMemory(views: readonly Uint8Array[]): void;
  /** Bdevs open on this worker (for tests and statistics). */
  readonly openCount: number;
  /**
   * The worker may sleep (adaptive and interrupt mode): from now on kernel
   * rings keep a completion eventfd, so an I/O in the kernel wakes it.
   */
  enableSleep(): void;
  /** Append the fds that signal bdev completions (after enableSleep). */
  sleepFds(out: number[]): void;
  /**
   * How long the worker may sleep without losing or delaying anything the
   * layer must do: 0 when a poll has work now (completions to deliver, NOMEM
   * retries, unsignalled I/O), the time to the next QoS timeslice while I/Os
   * wait for budget, else Infinity (every outstanding I/O signals a sleepFd).
   */
  sleepLimitMs(nowMs: number): number;
  /**
   * I/Os the modules hold (submitted to a channel, not yet delivered; QoS
   * queues and NOMEM waits not counted): what an adaptive-mode worker waits
   * on instead of a guest. With sleepLimitMs() > 0 every one of them will
   * signal a sleepFd, so the worker sleeps at once rather than spin.
   */
  inFlight(): number;
  /**
   * The part of inFlight() on modules whose I/O completes on helper threads
   * of this process (BdevModuleEngine.completesOnHelperThreads: librbd).
   */
  helperInFlight(): number;
  /** Completion eventfds on (about to sleep: poll once more afterwards, the re-check) or off (busy polling). */
  setCompletionNotify(on: boolean): void;
}

/** Initial size of an entry's NOMEM wait list and QoS queue (both grow by doubling). */
const INITIAL_WAIT_SLOTS = 64;

/** One bdev open on this worker: the module's object, its channel, QoS, statistics and the NOMEM wait list. */
class BdevEntry {
  readonly handles: Handle[] = [];
  readonly gate: QosGate | null;
  readonly iostat: IoStatRecorder;
  /** The module's I/O completes on helper threads (BdevModuleEngine.completesOnHelperThreads). */
  readonly helperThreads: boolean;
  private readonly retry = new Fifo<BdevIo>(INITIAL_WAIT_SLOTS);

  constructor(
    readonly desc: BdevDesc,
    readonly module: BdevModuleEngine,
    readonly bdev: Bdev,
    readonly channel: BdevChannel,
    nowMs: number,
  ) {
    this.gate = desc.qos ? new QosGate(desc.qos, channel, bdev.blockSize, INITIAL_WAIT_SLOTS, nowMs) : null;
    this.iostat = new IoStatRecorder(desc.stats);
    this.helperThreads = module.completesOnHelperThreads === true;
  }

  submit(io: BdevIo): void {
    const gate = this.gate;
    if (gate !== null && gate.active) gate.submit(io);
    else this.channel.submit(io);
  }

  /** The module ran out of resources for `io`: it goes again after the channel's next completions. */
  waitForMemory(io: BdevIo): void {
    this.retry.push(io);
  }

  /** See BdevLayer.sleepLimitMs: 0, the time to the next QoS slice, or Infinity. */
  sleepLimitMs(): number {
    if (this.retry.length > 0) return 0;
    const ch = this.channel;
    if (ch.outstanding > 0 && (ch.sleepReady === undefined || !ch.sleepReady())) return 0;
    const gate = this.gate;
    // Budget arrives every 1 ms timeslice; queued I/Os must not wait for a kick.
    if (gate !== null && gate.queued > 0) return 1;
    return Infinity;
  }

  poll(nowMs: number): number {
    // What the previous poll reaped completed by now (the end of that busy iteration: see IoStatRecorder.note).
    this.iostat.flush(nowMs);
    let work = 0;
    if (this.gate !== null) work += this.gate.tick(nowMs);
    const n = this.retry.length;
    // Completions (and so new retries) arrive only in channel.poll(), never inside submit().
    for (let i = 0; i < n; i++) this.channel.submit(this.retry.shift());
    work += n;
    return work + this.channel.poll();
  }
}

/** One user's handle (BdevHandle) and the route of its I/Os' completions. */
class Handle implements BdevHandle, IoRoute {
  outstanding = 0;
  private closed = false;

  constructor(
    private readonly layer: WorkerBdevLayer,
    readonly entry: BdevEntry,
    readonly user: BdevUser,
  ) {}

  get name(): string {
    return this.entry.bdev.name;
  }

  get blockSize(): number {
    return this.entry.bdev.blockSize;
  }

  get numBlocks(): number {
    return this.entry.bdev.numBlocks;
  }

  ioTypeSupported(type: BdevIoType): boolean {
    return this.entry.bdev.ioTypeSupported(type);
  }

  submit(io: BdevIo, nowMs: number): void {
    if (this.closed) {
      // A device bug, not a guest's: fail the I/O the normal way rather than throw in the loop.
      io.route = null;
      io.status = BdevIoStatus.Failed;
      this.layer.failLater(io);
      return;
    }
    io.route = this;
    io.startMs = nowMs;
    this.outstanding++;
    this.entry.submit(io);
  }

  ioDone(io: BdevIo): void {
    if (io.status === BdevIoStatus.NoMem) {
      io.status = BdevIoStatus.Pending;
      this.entry.waitForMemory(io);
      return;
    }
    this.outstanding--;
    io.route = null;
    this.entry.iostat.note(io.type, io.numBlocks * this.entry.bdev.blockSize, io.status === BdevIoStatus.Success, io.startMs);
    io.done();
  }

  drain(): void {
    this.entry.gate?.releaseWhere((io) => io.route === this);
  }

  close(): void {
    if (this.closed) return;
    if (this.outstanding !== 0) throw new Error(`bdev ${this.name}: handle closed with ${this.outstanding} I/Os outstanding`);
    this.closed = true;
    this.layer.closeHandle(this);
  }
}

/**
 * The bdev layer of one engine worker (see BdevLayer). Made once per worker;
 * `modules` is injectable for tests.
 */
export class WorkerBdevLayer implements BdevLayer {
  private readonly entries = new Map<string, BdevEntry>();
  /** The same entries, for the loop. */
  private list: BdevEntry[] = [];
  private readonly states = new Map<string, { state: ModuleWorkerState; bdevs: number }>();
  /** I/Os failed at submit (a closed handle), delivered at the next poll like any completion. */
  private readonly failed: BdevIo[] = [];
  /** enableSleep() was called: module states keep completion eventfds. */
  private sleepEnabled = false;

  constructor(private readonly modules: ReadonlyMap<string, BdevModuleEngine> = BDEV_MODULES) {}

  get openCount(): number {
    return this.list.length;
  }

  /** Module states alive on this worker (for tests and leak checks). */
  moduleState(module: string): ModuleWorkerState | undefined {
    return this.states.get(module)?.state;
  }

  open(desc: BdevDesc, user: BdevUser, nowMs = 0): BdevHandle {
    let entry = this.entries.get(desc.name);
    if (entry !== undefined) {
      const had = entry.desc;
      if (had.module !== desc.module || had.blockSize !== desc.blockSize) {
        throw new RangeError(`bdev ${desc.name} is open here as a ${had.module} bdev of ${had.blockSize}-byte blocks, not ${desc.module} / ${desc.blockSize}`);
      }
    } else {
      entry = this.openEntry(desc, nowMs);
    }
    const handle = new Handle(this, entry, user);
    entry.handles.push(handle);
    return handle;
  }

  private openEntry(desc: BdevDesc, nowMs: number): BdevEntry {
    const module = this.modules.get(desc.module);
    if (module === undefined) throw new RangeError(`bdev ${desc.name}: unknown bdev module ${String(desc.module)}`);
    let st = this.states.get(module.name);
    const fresh = st === undefined && module.createState !== undefined;
    if (fresh) {
      st = { state: (module.createState as () => ModuleWorkerState)(), bdevs: 0 };
      if (this.sleepEnabled) st.state.enableCompletionFds?.();
    }
    let bdev: Bdev | null = null;
    try {
      bdev = module.open(desc, st?.state);
      const entry = new BdevEntry(desc, module, bdev, bdev.createChannel(), nowMs);
      if (st !== undefined) {
        st.bdevs++;
        if (fresh) this.states.set(module.name, st);
      }
      this.entries.set(desc.name, entry);
      this.list = [...this.entries.values()];
      logger.debug('bdev opened', { bdev: desc.name, module: module.name });
      return entry;
    } catch (err) {
      bdev?.destroy();
      if (fresh && st !== undefined) st.state.close();
      throw err;
    }
  }

  /** A handle closed (Handle.close); the last one closes the bdev here. */
  closeHandle(handle: Handle): void {
    const entry = handle.entry;
    const i = entry.handles.indexOf(handle);
    if (i >= 0) entry.handles.splice(i, 1);
    if (entry.handles.length > 0) return;
    entry.iostat.flush(performance.now());
    this.entries.delete(entry.desc.name);
    this.list = [...this.entries.values()];
    try {
      entry.channel.destroy();
    } finally {
      entry.bdev.destroy();
      const st = this.states.get(entry.module.name);
      if (st !== undefined && --st.bdevs === 0) {
        this.states.delete(entry.module.name);
        st.state.close();
      }
    }
    logger.debug('bdev closed', { bdev: entry.desc.name });
  }

  /** Deliver `io` (already failed) at the next poll. */
  failLater(io: BdevIo): void {
    this.failed.push(io);
  }

  poll(nowMs: number): number {
    let work = 0;
    const list = this.list;
    for (let i = 0; i < list.length; i++) work += list[i].poll(nowMs);
    if (this.failed.length > 0) {
      const failed = this.failed.splice(0);
      for (const io of failed) io.done();
      work += failed.length;
    }
    return work;
  }

  reap(): number {
    let n = 0;
    const list = this.list;
    for (let i = 0; i < list.length; i++) n += list[i].channel.poll();
    return n;
  }

  resize(name: string, numBlocks: number): number {
    const entry = this.entries.get(name);
    if (entry === undefined) return 0;
    const bdev = entry.bdev;
    if (bdev.resize === undefined) throw new RangeError(`bdev ${name} (${entry.module.name}) cannot change size`);
    bdev.resize(numBlocks);
    for (const h of entry.handles) h.user.bdevResized(numBlocks);
    return entry.handles.length;
  }

  releaseMemory(views: readonly Uint8Array[]): void {
    for (const { state } of this.states.values()) state.forgetBuffers(views);
  }

  enableSleep(): void {
    if (this.sleepEnabled) return;
    this.sleepEnabled = true;
    for (const { state } of this.states.values()) state.enableCompletionFds?.();
  }

  sleepFds(out: number[]): void {
    for (const { state } of this.states.values()) state.completionFds?.(out);
  }

  sleepLimitMs(): number {
    if (this.failed.length > 0) return 0;
    let limit = Infinity;
    const list = this.list;
    for (let i = 0; i < list.length; i++) {
      const l = list[i].sleepLimitMs();
      if (l < limit) limit = l;
      if (limit === 0) return 0;
    }
    return limit;
  }

  inFlight(): number {
    let n = 0;
    const list = this.list;
    for (let i = 0; i < list.length; i++) n += list[i].channel.outstanding;
    return n;
  }

  helperInFlight(): number {
    let n = 0;
    const list = this.list;
    for (let i = 0; i < list.length; i++) if (list[i].helperThreads) n += list[i].channel.outstanding;
    return n;
  }

  setCompletionNotify(on: boolean): void {
    for (const { state } of this.states.values()) state.setCompletionNotify?.(on);
  }
}
