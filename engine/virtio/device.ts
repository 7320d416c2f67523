/**
 * The virtio device core (one for every virtio device model): the queue set,
 * a request pool per queue, pop → walk → the model's handler, completion
 * (used element, publish once per batch, notify honouring NO_INTERRUPT /
 * EVENT_IDX and interrupt coalescing), drain and failure, rate-limited logs
 * of guest errors, and the per-device statistics words it owns (in-flight
 * tasks, call signals, dropped chains). A device model (engine/blk/model.ts:
 * virtio-blk) only parses and executes requests and keeps its own counters.
 *
 * Request pool: per queue, up to queue-size tasks (the most requests the
 * driver can have outstanding), created on demand the first time that many
 * are in flight at once and reused from then on (no allocation per request
 * in the steady state). Each task's scratch (its DescChain, the model's
 * iovecs) is sized by what ONE request may use (model.maxSegments), not by
 * the queue size, so a 32768-entry queue costs memory only for the depth
 * the driver actually uses. Everything is dropped when the queue or the
 * device stops.
 *
 * Thread: the engine worker the reactor placed the device on; created on
 * `start`, torn down on `stop`. It owns its GuestMemory.
 */
import { performance } from 'node:perf_hooks';
import { CoalescingSlot, type DeviceDesc, DeviceStat, type QueueDesc, type QueueStopResult, type RegionDesc, type StopResult, type ModelOp } from '../control';
import type { DeviceEnv, EngineDevice } from '../device';
import { logger } from '../log';
import type { GuestMemory } from '../memory';
import { type ChainError, DescChain } from './chain';
import type { InflightTrackers, Virtqueue } from './queue';
import { VirtioFeature } from './spec';
import { InflightRegion } from './inflight';
import { PackedInflightRegion } from './inflight-packed';

import { DirtyLog } from './dirty-log';
import { PackedQueue } from './packed';
import { QueueSetupError, SplitQueue } from './split';

/** Most requests taken from one queue per poll. */
export const VIRTIO_BATCH = 32;
/**
 * A drained queue (VirtioQueueState.drained) makes its used entries visible
 * every this many completions instead of once per poll. Its driver has
 * nothing left in the ring and waits for completions to submit again: with
 * one used index store per poll, the driver and the device took turns on
 * whole batches (at QD32 the driver reaps and resubmits 32 while the
 * device waits, then the reverse). Flushing early lets the driver refill
 * while the device completes the rest. A queue with requests still waiting
 * in the ring (a deeper driver) keeps one store per poll: both sides are
 * busy already, and each store is a cache line the driver must fetch.
 * Measured against one store per poll (bench/ab.sh, bench/README.md,
 * sixth sitting): null randread QD16 +14 %, QD32 +15-19 %, randwrite QD32
 * +36 %, malloc QD32 +6 %, QD128 within the noise; 4 and 8 alike. The
 * ring logging of live migration is unchanged: the ring's dirty bits are
 * set at publish, in the same poll, after the flushed stores.
 */
export const EARLY_FLUSH = 8;

/**
 * The memory budget of a queue (issue #15 item 2): at most this many of its
 * requests are in flight at once, so its request pool never holds more tasks
 * than this, whatever the ring size (up to 32768). Chains beyond it wait in
 * the avail ring until completions free a task; the guest sees only queueing.
 * With the blk model's per-task scratch (128 segments) a full pool is about
 * 5 MiB per queue (README, "Memory budget").
 */
export const MAX_INFLIGHT_PER_QUEUE = 1024;

/**
 * An unsettled publish (order.ts: its "no interrupt" read without a
 * barrier) is settled — a barrier, then the driver's words — by the
 * queue's SETTLE_QUIET-th publishQueue in a row with nothing new to publish
 * (a busy poll makes two or three such calls, an idle one one), or at once
 * when forced (sleep, stop, memory update). A queue that keeps publishing
 * reads the driver's words again at each publish, so it never pays the
 * barrier; a driver that went to sleep just as the device answered "no" waits
 * a few idle polls longer for its interrupt (a few hundred ns).
 */
export const SETTLE_QUIET = 4;

/** Guest errors logged per queue before the log goes quiet (then one line per 1024). */
const GUEST_ERROR_LOG_LIMIT = 8;

/**
 * Interrupt coalescing (SPDK lib/vhost: check_session_vq_io_stats): every
 * STATS_CHECK_INTERVAL_MS each queue's completions in the interval are
 * compared with iops_threshold scaled to the interval; above it the call
 * eventfd is written at most once per irq delay, where
 *   delay = delay_base * (completions - threshold) / threshold,
 * and the first completion after each check that exceeded the threshold
 * signals at once. As in SPDK, a check below the threshold changes nothing:
 * the count keeps growing and the delay stays. One deviation: the delay is
 * capped at the interval (SPDK's checks reset the wait every interval while
 * the rate is high, so in practice it does not wait longer either).
 */
const STATS_CHECK_INTERVAL_MS = 10;
const MAX_IRQ_DELAY_MS = STATS_CHECK_INTERVAL_MS;

const RING_PACKED = 1n << BigInt(VirtioFeature.RingPacked);

/** One request slot of a queue; models extend it with their request state. */
export class VirtioTask {
  readonly chain: DescChain;
  constructor(
    readonly queue: VirtioQueueState,
    maxSegments: number,
  ) {
    this.chain = new DescChain(maxSegments);
  }
}

/** A device model: what one kind of virtio device does with a request. */
export interface VirtioModel<T extends VirtioTask> {
  /** Most buffer segments one request may use (header + seg_max + status for blk): the scratch size of a task. */
  readonly maxSegments: number;
  /** A new request slot of `queue` (called at most queue-size times per queue, on demand). */
  newTask(queue: VirtioQueueState): T;
  /**
   * A request was popped and walked: `walkErr` is the walk's verdict (the
   * chain's segments and tail are in task.chain). Complete it now or later
   * with VirtioDevice.complete() / drop().
   */
  start(task: T, walkErr: ChainError): void;
  /** The device stops: requests held back (QoS) should go now. */
  drain(): void;
  /** The device stopped with nothing in flight: release bdevs. */
  close(): void;
  /**
   * Optional: the most requests to take from `queue` now (absent: as many
   * as are available). A queue whose buffers the device holds until it has
   * something to put in them (virtio-scsi's event queue) answers 0 while it
   * has nothing, so they are never in flight and never keep it awake.
   */
  budget?(queue: VirtioQueueState): number;
  /** Optional: model changes on the running device (EngineDevice.beginModelOp / modelOpReady / finishModelOp). */
  beginModelOp?(op: ModelOp): void;
  modelOpReady?(op: ModelOp): boolean;
  finishModelOp?(op: ModelOp): void;
}

/** One running queue of a device, with its request pool. */
export class VirtioQueueState {
  /** Free tasks: free[0, nfree). */
  readonly free: VirtioTask[] = [];
  nfree = 0;
  /** Tasks ever made for this queue (at most its size). */
  allocated = 0;
  /** Requests of this queue popped and not yet completed. */
  inflight = 0;
  /** False once queueStop began: no more requests are taken. */
  taking = true;
  /**
   * The last look at the ring took everything the driver had made
   * available: the driver has no request the device has not seen, so it
   * waits on completions (see EARLY_FLUSH).
   */
  drained = true;
  callFd: number;
  readonly kickFd: number;
  guestErrors = 0;
  brokenLogged = false;
  /** Coalescing: the driver wants an interrupt that has not been sent yet. */
  owed = false;
  /** publishQueue calls in a row with nothing new while the last publish is unsettled (SETTLE_QUIET). */
  quiet = 0;
  /** Coalescing: used elements published since the last rate check. */
  reqCnt = 0;
  irqDelayMs = 0;
  /** Coalescing: no interrupt before this time. */
  nextEventMs = 0;
  /**
   * Dirty logging (VHOST_VRING_F_LOG): guest-physical [start, length) pairs
   * of what the device writes in this ring — split: the used ring; packed:
   * the descriptor ring and the device event area. Empty: not logged.
   */
  logRanges: number[] = [];

  constructor(
    readonly q: Virtqueue,
    readonly desc: QueueDesc,
  ) {
    this.callFd = desc.callFd;
    this.kickFd = desc.kickFd;
  }
}

/**
 * The ring areas the device writes, as guest-physical ranges, when the
 * front-end asked for ring logging (log_guest_addr: the used ring, or for a
 * packed ring the device event area; a packed ring's descriptor ring, which
 * the device writes back, is found through the memory table).
 */
function ringLogRanges(qd: QueueDesc, packed: boolean, mem: GuestMemory): number[] {
  if (qd.logUsedAddr === undefined) return [];
  if (!packed) {
    // virtio 1.2 §2.7.8: flags, idx, ring[size] of 8 bytes, avail_event.
    return [qd.logUsedAddr, 4 + 8 * qd.size + 2];
  }
  const ranges = [qd.logUsedAddr, 4];
  const descGpa = mem.uvaToGpa(qd.descAddr, 16 * qd.size);
  if (descGpa >= 0) ranges.push(descGpa, 16 * qd.size);
  return ranges;
}

const enum State {
  Running,
  Stopping,
  Failed,
  Stopped,
}

export class VirtioDevice<T extends VirtioTask> implements EngineDevice {
  readonly id: number;
  readonly name: string;
  readonly features: bigint;
  /** Per-device counters (DeviceStat); the model writes its own slots. */
  readonly stats: Float64Array;
  /** The worker's clock at the current poll (submission stamps). */
  nowMs = 0;
  private memory: GuestMemory;
  private model!: VirtioModel<T>;
  private readonly env: DeviceEnv;
  private queues: VirtioQueueState[] = [];
  private state = State.Running;
  /** memUpdate in progress: no requests are taken. */
  private paused = false;
  private inflightCount = 0;
  private tracker: InflightTrackers | null = null;
  /** The in-flight region in the packed layout, when the rings are packed. */
  private packedTracker: PackedInflightRegion | null = null;
  /** The mapping of DeviceDesc.inflight (vhost-user INFLIGHT_SHMFD), unmapped at stop. */
  private inflightMem: GuestMemory | null = null;
  /** The dirty log (live migration: VHOST_F_LOG_ALL and SET_LOG_BASE), or null: not logging. */
  private dirtyLog: DirtyLog | null = null;
  /** The mapping of DeviceDesc.log, unmapped at stop. */
  private logMem: GuestMemory | null = null;
  /** Coalescing settings (CoalescingSlot) from the reactor, or null (off for good). */
  private readonly coalescing: Float64Array | null;
  private delayBaseMs = 0;
  private nextCheckMs = 0;

  /**
   * Maps desc.regions, makes the model (makeModel gets the core, so it can
   * open its bdevs) and starts desc.queues. If anything throws, what was
   * taken is released before the error propagates.
   */
  constructor(desc: DeviceDesc, env: DeviceEnv, makeModel: (core: VirtioDevice<T>) => VirtioModel<T>) {
    this.id = desc.id;
    this.name = desc.name;
    this.features = desc.features;
    this.env = env;
    if (desc.stats.byteLength < DeviceStat.Count * 8) {
      throw new RangeError(`device ${desc.name}: stats buffer holds ${desc.stats.byteLength} bytes, needs ${DeviceStat.Count * 8}`);
    }
    if (desc.coalescing !== undefined && desc.coalescing.byteLength < CoalescingSlot.Count * 8) {
      throw new RangeError(`device ${desc.name}: coalescing buffer holds ${desc.coalescing.byteLength} bytes, needs ${CoalescingSlot.Count * 8}`);
    }
    this.stats = new Float64Array(desc.stats, 0, DeviceStat.Count);
    this.coalescing = desc.coalescing ? new Float64Array(desc.coalescing, 0, CoalescingSlot.Count) : null;
    this.nowMs = performance.now();
    this.memory = env.mapMemory(desc.regions);
    let model: VirtioModel<T> | null = null;
    try {
      if (desc.inflight !== undefined) this.mapInflight(desc);
      if (desc.log !== undefined) {
        const l = desc.log;
        this.logMem = env.mapMemory([{ fd: l.fd, guestPhysAddr: 0, userAddr: 0, sizeBytes: l.sizeBytes, mmapOffset: l.mmapOffset }]);
        this.dirtyLog = new DirtyLog(this.logMem.bytes[0]);
        logger.info('dirty logging on', { device: this.name, logBytes: l.sizeBytes });
      }
      model = makeModel(this);
      this.model = model;
      for (const qd of desc.queues) this.queueStart(qd);
    } catch (err) {
      if (model !== null) model.close();
      this.unmap(this.memory);
      this.inflightMem?.unmap();
      this.logMem?.unmap();
      throw err;
    }
  }

  /** The current guest memory (it changes at memUpdate: never keep it across requests). */
  get mem(): GuestMemory {
    return this.memory;
  }

  get inflight(): number {
    return this.inflightCount;
  }

  get running(): boolean {
    return this.state === State.Running;
  }

  /** Queues that run (tests and statistics). */
  get queueCount(): number {
    return this.queues.length;
  }

  /** Tasks allocated for queue `index` so far (tests: the pool grows with the depth used). */
  tasksAllocated(index: number): number {
    return this.queueState(index).allocated;
  }

  /** In-flight hooks for every queue, now and started later (vhost-user INFLIGHT_SHMFD; split rings). */
  setInflightTracker(tracker: InflightTrackers | null): void {
    this.tracker = tracker;
    const packed = (this.features & RING_PACKED) !== 0n;
    for (const qs of this.queues) qs.q.tracker = packed || tracker === null ? null : tracker.queue(qs.q.index);
  }

  /**
   * Map the in-flight region (a memfd the front-end keeps across our
   * restarts) and track every queue in it. Its words are written with plain
   * stores: they must survive this process dying, not be seen by another
   * thread in order (the next back-end reads them only after we are gone).
   */
  private mapInflight(desc: DeviceDesc): void {
    const inf = desc.inflight as NonNullable<DeviceDesc['inflight']>;
    const mem = this.env.mapMemory([{ fd: inf.fd, guestPhysAddr: 0, userAddr: 0, sizeBytes: inf.sizeBytes, mmapOffset: inf.mmapOffset }]);
    this.inflightMem = mem;
    if ((this.features & RING_PACKED) !== 0n) this.packedTracker = new PackedInflightRegion(mem.views[0], inf.numQueues ?? 1, inf.queueSize);
    else this.setInflightTracker(new InflightRegion(mem.views[0], inf.numQueues ?? 1, inf.queueSize));
  }

  poll(nowMs: number = performance.now()): number {
    let work = 0;
    this.nowMs = nowMs;
    // What the bdev layer delivered this iteration (its poll runs first)
    // reaches the driver before new requests are taken: otherwise each
    // completion waited for a whole batch of submissions (~2 µs at 16 per
    // poll), time in which a driver at a fixed depth has nothing to resubmit.
    this.publishAll(nowMs, false);
    if (this.state === State.Running && !this.paused) {
      const queues = this.queues;
      for (let i = 0; i < queues.length; i++) {
        const qs = queues[i];
        if (qs.taking) work += this.processQueue(qs);
      }
      // Requests the model completed at once (bad chains, GET_ID, nothing to flush).
      if (work > 0) this.publishAll(nowMs, false);
    }
    this.stats[DeviceStat.InflightTasks] = this.inflightCount;
    return work;
  }

  publish(nowMs: number): void {
    this.publishAll(nowMs, false);
  }

  /** Complete `task`: put its head in the used ring with `usedLen` bytes written, free its slot. */
  complete(task: T, usedLen: number): void {
    const qs = task.queue;
    // Live migration: the pages this request wrote (its data and status are in memory by now).
    if (this.dirtyLog !== null) this.dirtyLog.markChain(task.chain, this.memory);
    const q = qs.q;
    q.push(task.chain.head, usedLen);
    if (qs.drained && q.unflushed >= EARLY_FLUSH) q.flush();
    qs.free[qs.nfree++] = task;
    qs.inflight--;
    this.inflightCount--;
  }

  /** A chain that cannot carry a status: give its head back with length 0, count and log it. */
  drop(task: T, why: string): void {
    this.stats[DeviceStat.ErrorOps]++;
    this.guestError(task.queue, why, task.chain.head);
    this.complete(task, 0);
  }

  /** Log a guest mistake on a queue (rate limited per queue). */
  guestError(qs: VirtioQueueState, why: string, head: number): void {
    const n = ++qs.guestErrors;
    if (n <= GUEST_ERROR_LOG_LIMIT || n % 1024 === 0) {
      logger.warn('invalid request from the guest', { device: this.name, queue: qs.q.index, head, error: why, count: n });
    }
  }

  beginStop(): void {
    if (this.state === State.Running) this.state = State.Stopping;
    this.model.drain();
  }

  finishStop(): StopResult {
    if (this.inflightCount !== 0) throw new Error(`device ${this.name}: finishStop with ${this.inflightCount} requests in flight`);
    if (this.state === State.Stopped) throw new Error(`device ${this.name}: already stopped`);
    this.publishAll(performance.now(), true);
    // The rings' last state (notification flags included) reaches the destination.
    for (const qs of this.queues) this.logRing(qs);
    this.state = State.Stopped;
    const result: StopResult = { queues: this.queues.map((qs) => ({ index: qs.q.index, pos: qs.q.position() })) };
    this.releaseQueues();
    try {
      this.model.close();
    } finally {
      this.unmap(this.memory);
      if (this.inflightMem !== null) {
        this.setInflightTracker(null);
        this.packedTracker = null;
        this.inflightMem.unmap();
        this.inflightMem = null;
      }
      this.stopLogging();
    }
    return result;
  }

  queueStart(qd: QueueDesc): void {
    if (this.state === State.Stopped) throw new Error(`device ${this.name} is stopped`);
    if (this.queues.some((qs) => qs.q.index === qd.index)) {
      throw new QueueSetupError(`queue ${qd.index} of ${this.name} already runs`);
    }
    let q: Virtqueue;
    if ((this.features & RING_PACKED) !== 0n) {
      const pq = new PackedQueue(this.memory, qd, this.features);
      pq.inflight = this.packedTracker;
      q = pq;
    } else {
      q = new SplitQueue(this.memory, qd, this.features);
      q.tracker = this.tracker?.queue(qd.index) ?? null;
    }
    const again = q.resumeInflight?.() ?? 0;
    if (again > 0) logger.notice('resubmitting requests in flight at the previous back-end', { device: this.name, queue: qd.index, count: again });
    // Poll mode: suppress kicks from the start.
    q.setNotification(false);
    const qs = new VirtioQueueState(q, qd);
    qs.logRanges = ringLogRanges(qd, (this.features & RING_PACKED) !== 0n, this.memory);
    this.queues.push(qs);
  }

  beginQueueStop(index: number): void {
    this.queueState(index).taking = false;
  }

  queueInflight(index: number): number {
    return this.queueState(index).inflight;
  }

  finishQueueStop(index: number): QueueStopResult {
    const qs = this.queueState(index);
    if (qs.inflight !== 0) throw new Error(`device ${this.name}: queue ${index} stops with ${qs.inflight} requests in flight`);
    this.publishQueue(qs, performance.now(), true);
    this.logRing(qs);
    this.queues.splice(this.queues.indexOf(qs), 1);
    this.releasePool(qs);
    this.packedTracker?.release(index);
    return { index, pos: qs.q.position() };
  }

  setCallFd(index: number, callFd: number): void {
    this.queueState(index).callFd = callFd;
  }

  beginMemUpdate(): void {
    this.paused = true;
  }

  finishMemUpdate(regions: readonly RegionDesc[]): void {
    if (this.inflightCount !== 0) throw new Error(`device ${this.name}: memUpdate with ${this.inflightCount} requests in flight`);
    // Used entries live in the old mapping: make them visible before it goes.
    this.publishAll(performance.now(), true);
    const old = this.memory;
    let next: GuestMemory;
    try {
      next = this.env.mapMemory(regions);
    } catch (err) {
      this.paused = false;
      throw err;
    }
    const moved: VirtioQueueState[] = [];
    try {
      for (const qs of this.queues) {
        qs.q.remap(next);
        moved.push(qs);
      }
    } catch (err) {
      // A ring is not in the new table: stay on the old memory, as before.
      for (const qs of moved) qs.q.remap(old);
      this.unmap(next);
      this.paused = false;
      throw err;
    }
    this.memory = next;
    const packed = (this.features & RING_PACKED) !== 0n;
    for (const qs of this.queues) qs.logRanges = ringLogRanges(qs.desc, packed, next);
    this.paused = false;
    this.unmap(old);
  }

  /** Unmap guest memory nothing points into any more; the bdev layer forgets it first (a file ring's registered buffers). */
  private unmap(mem: GuestMemory): void {
    this.env.bdevs.releaseMemory(mem.bytes);
    mem.unmap();
  }

  fail(err: unknown): void {
    if (this.state !== State.Running && this.state !== State.Stopping) return;
    this.state = State.Failed;
    logger.error('device failed, no longer taking requests', {
      device: this.name,
      err: err instanceof Error ? (err.stack ?? err.message) : String(err),
    });
  }

  setNotification(enabled: boolean): boolean {
    // About to sleep: an interrupt held back by coalescing cannot wait for a poll that may not come.
    if (enabled) this.publishAll(performance.now(), true);
    let waiting = false;
    for (const qs of this.queues) {
      qs.q.setNotification(enabled);
      if (enabled && qs.taking && qs.q.available() > 0 && (this.model.budget === undefined || this.model.budget(qs) > 0)) waiting = true;
    }
    return waiting;
  }

  beginModelOp(op: ModelOp): void {
    if (this.model.beginModelOp === undefined) throw Object.assign(new Error(`device ${this.name} takes no model changes (${op.kind})`), { code: 'ERR_MODEL_OP' });
    this.model.beginModelOp(op);
  }

  modelOpReady(op: ModelOp): boolean {
    return this.model.modelOpReady?.(op) ?? true;
  }

  finishModelOp(op: ModelOp): void {
    this.model.finishModelOp?.(op);
  }

  kickFds(): readonly number[] {
    return this.queues.filter((qs) => qs.taking && qs.kickFd >= 0).map((qs) => qs.kickFd);
  }

  private queueState(index: number): VirtioQueueState {
    const qs = this.queues.find((s) => s.q.index === index);
    if (qs === undefined) throw new Error(`device ${this.name}: queue ${index} does not run`);
    return qs;
  }

  private processQueue(qs: VirtioQueueState): number {
    const q = qs.q;
    const avail = q.available();
    let n = avail;
    if (n === 0) {
      qs.drained = true;
      if (q.broken !== null && !qs.brokenLogged) this.logBroken(qs);
      return 0;
    }
    if (n > VIRTIO_BATCH) n = VIRTIO_BATCH;
    const model = this.model;
    if (model.budget !== undefined) {
      const b = model.budget(qs);
      if (b < n) n = b;
      if (n <= 0) return 0;
    }
    let taken = 0;
    while (taken < n) {
      let task: T;
      if (qs.nfree > 0) {
        task = qs.free[--qs.nfree] as T;
      } else if (qs.allocated < q.size && qs.allocated < MAX_INFLIGHT_PER_QUEUE) {
        // The pool grows to the deepest the driver has gone, at most the queue size and the budget.
        task = model.newTask(qs);
        qs.allocated++;
      } else {
        break;
      }
      const head = q.pop();
      if (head < 0) {
        qs.free[qs.nfree++] = task;
        this.logBroken(qs);
        break;
      }
      taken++;
      qs.inflight++;
      this.inflightCount++;
      model.start(task, q.walk(head, task.chain));
    }
    // A full batch may have left more behind (packed rings count at most VIRTIO_BATCH chains): look again.
    qs.drained = taken === avail && (taken < VIRTIO_BATCH || q.available() === 0);
    return taken;
  }

  /**
   * Publish every queue's used entries and signal the queues whose driver
   * wants an interrupt — at once, or (coalescing on) not before the queue's
   * next event time unless `force` (stop, sleep).
   */
  private publishAll(nowMs: number, force: boolean): void {
    if (this.coalescing !== null && nowMs >= this.nextCheckMs) this.checkRates(nowMs);
    const queues = this.queues;
    for (let i = 0; i < queues.length; i++) this.publishQueue(queues[i], nowMs, force);
  }

  /**
   * A publish whose "no interrupt" is unsettled (order.ts) is decided once
   * the queue had nothing new to publish SETTLE_QUIET times in a row, or
   * at once when forced (before the worker sleeps or the device stops) —
   * by when its stores have drained; while the queue keeps publishing, each
   * publish reads the driver's words again and covers the earlier entries.
   */
  private publishQueue(qs: VirtioQueueState, nowMs: number, force: boolean): void {
    const q = qs.q;
    if (this.delayBaseMs === 0) {
      if (q.pending > 0) {
        qs.quiet = 0;
        const wants = q.publish();
        // After the ring writes: a bit set before them could be taken by the front-end's sync too early.
        if (this.dirtyLog !== null) this.logRing(qs);
        if (wants && qs.callFd >= 0) this.signal(qs);
      } else if (this.settles(qs, force) && qs.callFd >= 0) {
        this.signal(qs);
      }
      return;
    }
    const n = q.pending;
    if (n > 0) {
      qs.quiet = 0;
      qs.reqCnt += n;
      if (q.publish()) qs.owed = true;
      if (this.dirtyLog !== null) this.logRing(qs);
    } else if (this.settles(qs, force)) {
      qs.owed = true;
    }
    if (!qs.owed) return;
    if (qs.callFd < 0) {
      qs.owed = false;
      return;
    }
    if (!force && nowMs < qs.nextEventMs) return;
    qs.owed = false;
    this.signal(qs);
    qs.nextEventMs = nowMs + qs.irqDelayMs;
  }

  /** publishQueue with nothing new: settle an unsettled decision when forced or quiet for SETTLE_QUIET calls; true when the driver wants an interrupt. */
  private settles(qs: VirtioQueueState, force: boolean): boolean {
    const q = qs.q;
    return q.unsettled && (force || ++qs.quiet >= SETTLE_QUIET) && q.settle();
  }

  /** Mark the ring areas the device writes (when logging and the front-end asked for ring logging). */
  private logRing(qs: VirtioQueueState): void {
    const log = this.dirtyLog;
    if (log === null) return;
    const r = qs.logRanges;
    for (let i = 0; i < r.length; i += 2) log.markRange(r[i], r[i + 1]);
  }

  /** Pages of the dirty log written so far, and pages that fell outside it (tests, logs). */
  get dirtyLogStats(): { marked: number; outside: number } | null {
    return this.dirtyLog === null ? null : { marked: this.dirtyLog.marked, outside: this.dirtyLog.outside };
  }

  private stopLogging(): void {
    const log = this.dirtyLog;
    if (log === null) return;
    if (log.outside > 0) logger.warn('dirty log too small for the memory the device wrote: pages not logged', { device: this.name, pages: log.outside });
    this.dirtyLog = null;
    this.logMem?.unmap();
    this.logMem = null;
  }

  private signal(qs: VirtioQueueState): void {
    this.env.signal(qs.callFd);
    this.stats[DeviceStat.CallSignals]++;
  }

  /** Every STATS_CHECK_INTERVAL_MS: take the settings, turn each queue's completion count into its irq delay. */
  private checkRates(nowMs: number): void {
    const c = this.coalescing as Float64Array;
    this.nextCheckMs = nowMs + STATS_CHECK_INTERVAL_MS;
    const baseUs = c[CoalescingSlot.DelayBaseUs];
    const wasOn = this.delayBaseMs > 0;
    this.delayBaseMs = Number.isFinite(baseUs) && baseUs > 0 ? baseUs / 1000 : 0;
    // iops_threshold as completions per interval (SPDK: iops * 10 ms / 1000).
    const threshold = Math.floor((c[CoalescingSlot.IopsThreshold] * STATS_CHECK_INTERVAL_MS) / 1000);
    for (let i = 0; i < this.queues.length; i++) {
      const qs = this.queues[i];
      const count = qs.reqCnt;
      if (this.delayBaseMs === 0 || !(threshold > 0)) {
        qs.reqCnt = 0;
        qs.irqDelayMs = 0;
        continue;
      }
      // As SPDK: below the threshold the count keeps growing and the delay stays.
      if (count <= threshold) continue;
      qs.reqCnt = 0;
      qs.irqDelayMs = Math.min((this.delayBaseMs * (count - threshold)) / threshold, MAX_IRQ_DELAY_MS);
      qs.nextEventMs = nowMs;
    }
    // Switched off: deliver what was held back.
    if (wasOn && this.delayBaseMs === 0) {
      for (let i = 0; i < this.queues.length; i++) {
        const qs = this.queues[i];
        if (qs.owed) {
          qs.owed = false;
          if (qs.callFd >= 0) this.signal(qs);
        }
      }
    }
  }

  private releasePool(qs: VirtioQueueState): void {
    qs.free.length = 0;
    qs.nfree = 0;
    qs.allocated = 0;
  }

  private releaseQueues(): void {
    for (const qs of this.queues) this.releasePool(qs);
    this.queues = [];
  }

  private logBroken(qs: VirtioQueueState): void {
    if (qs.brokenLogged) return;
    qs.brokenLogged = true;
    logger.error('virtqueue broken by the guest, no longer processed', {
      device: this.name,
      queue: qs.q.index,
      error: qs.q.broken ?? 'unknown',
    });
  }
}
