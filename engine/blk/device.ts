/**
 * A virtio-blk device (virtio 1.2 §5.2) running in an engine worker: its
 * guest memory, its split virtqueues, a channel to its bdev. Each poll takes
 * up to BLK_BATCH requests per queue, walks and parses them (parse.ts),
 * submits the valid ones to the bdev, completes the rest at once, then reaps
 * bdev completions, writes status bytes, pushes used elements and, once per
 * queue per poll, publishes the used index and signals the call eventfd if
 * the driver wants it. Completion is asynchronous by design: an I/O finishes
 * only when the channel's poll() delivers it.
 *
 * No allocation per request: every queue has a pool of BlkTask objects (one
 * per ring slot), each with its DescChain, BlkRequest and BdevIo.
 *
 * Thread: the engine worker the reactor placed the device on; created on
 * `start`, torn down on `stop`. It owns the GuestMemory it is given.
 */
import { performance } from 'node:perf_hooks';
import { type BlkDeviceDesc, CoalescingSlot, DeviceStat, type QueueDesc, type StopResult } from '../control';
import type { DeviceEnv, EngineDevice } from '../device';
import { logger } from '../log';
import type { GuestMemory } from '../memory';
import { type Bdev, type BdevChannel, BdevIo, BdevIoStatus, BdevIoType } from '../bdev/bdev';
import { openBdev } from '../bdev';
import { IoStatRecorder } from '../bdev/iostat';
import { QosGate } from '../bdev/qos';
import { ChainError, chainErrorName, DescChain } from '../virtio/chain';
import { SplitQueue } from '../virtio/split';
import { type BlkDisk, BlkRequest, BlkStatus, BlkType, BLK_ID_BYTES, PARSE_EXECUTE, PARSE_NO_STATUS, parseBlkRequest } from './parse';

/** Most requests taken from one queue per poll. */
export const BLK_BATCH = 32;

const SECTOR = 512;
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

class BlkIo extends BdevIo {
  constructor(
    capacity: number,
    private readonly task: BlkTask,
    private readonly device: BlkDevice,
  ) {
    super(capacity);
  }

  override onComplete(): void {
    this.device.ioDone(this.task);
  }
}

/** One request slot of a queue. */
class BlkTask {
  readonly chain: DescChain;
  readonly req = new BlkRequest();
  readonly io: BlkIo;
  /** When the I/O went to the bdev layer (the poll's clock), for latency accounting. */
  startMs = 0;

  constructor(
    readonly queue: QueueState,
    device: BlkDevice,
  ) {
    this.chain = new DescChain(queue.q.size);
    this.io = new BlkIo(queue.q.size, this, device);
  }
}

class QueueState {
  readonly free: BlkTask[] = [];
  nfree = 0;
  guestErrors = 0;
  brokenLogged = false;
  /** Coalescing: the driver wants an interrupt that has not been sent yet. */
  owed = false;
  /** Coalescing: used elements published since the last rate check. */
  reqCnt = 0;
  irqDelayMs = 0;
  /** Coalescing: no interrupt before this time. */
  nextEventMs = 0;

  constructor(
    readonly q: SplitQueue,
    readonly desc: QueueDesc,
  ) {}
}

const enum State {
  Running,
  Stopping,
  Failed,
  Stopped,
}

export class BlkDevice implements EngineDevice {
  readonly id: number;
  readonly name: string;
  private readonly mem: GuestMemory;
  private readonly env: DeviceEnv;
  private readonly bdev: Bdev;
  private readonly channel: BdevChannel;
  private readonly disk: BlkDisk;
  private readonly queues: QueueState[] = [];
  private readonly stats: Float64Array;
  private readonly idBytes = new Uint8Array(BLK_ID_BYTES);
  private readonly sectorsPerBlock: number;
  private readonly canFlush: boolean;
  private readonly canUnmap: boolean;
  private readonly canWriteZeroes: boolean;
  private readonly retry: BlkTask[] = [];
  private nretry = 0;
  private state = State.Running;
  private inflightCount = 0;
  /** bdev QoS (bdev_set_qos_limit), when the bdev description carries limits. */
  private readonly gate: QosGate | null;
  private readonly iostat: IoStatRecorder;
  /** The poll's clock (see EngineDevice.poll). */
  private nowMs = 0;
  /** Coalescing settings (CoalescingSlot) from the reactor, or null (off for good). */
  private readonly coalescing: Float64Array | null;
  private delayBaseMs = 0;
  private nextCheckMs = 0;

  /**
   * Takes ownership of `mem` only when it returns: if it throws (bad queue
   * addresses, bad bdev), the caller still owns and must unmap `mem`.
   */
  constructor(desc: BlkDeviceDesc, mem: GuestMemory, env: DeviceEnv, bdev?: Bdev) {
    this.id = desc.id;
    this.name = desc.name;
    this.mem = mem;
    this.env = env;
    if (desc.stats.byteLength < DeviceStat.Count * 8) {
      throw new RangeError(`device ${desc.name}: stats buffer holds ${desc.stats.byteLength} bytes, needs ${DeviceStat.Count * 8}`);
    }
    this.stats = new Float64Array(desc.stats, 0, DeviceStat.Count);
    const queues = desc.queues.map((qd) => new QueueState(new SplitQueue(mem, qd, desc.features), qd));
    this.bdev = bdev ?? openBdev(desc.bdev);
    this.sectorsPerBlock = this.bdev.blockSize / SECTOR;
    this.disk = {
      capacitySectors: this.bdev.numBlocks * this.sectorsPerBlock,
      blockSize: this.bdev.blockSize,
      readonly: desc.readonly,
    };
    this.canFlush = this.bdev.ioTypeSupported(BdevIoType.Flush);
    this.canUnmap = this.bdev.ioTypeSupported(BdevIoType.Unmap);
    this.canWriteZeroes = this.bdev.ioTypeSupported(BdevIoType.WriteZeroes);
    // GET_ID: the bdev name, at most 20 bytes, NUL-padded (§5.2.6: not NUL-terminated when 20 long).
    const name = Buffer.from(this.bdev.name, 'utf8');
    this.idBytes.set(name.subarray(0, BLK_ID_BYTES));
    this.channel = this.bdev.createChannel();
    const slots = queues.reduce((n, qs) => n + qs.q.size, 0);
    this.nowMs = performance.now();
    this.gate = desc.bdev.qos ? new QosGate(desc.bdev.qos, this.channel, this.bdev.blockSize, slots, this.nowMs) : null;
    this.iostat = new IoStatRecorder(desc.bdev.stats);
    if (desc.coalescing !== undefined && desc.coalescing.byteLength < CoalescingSlot.Count * 8) {
      throw new RangeError(`device ${desc.name}: coalescing buffer holds ${desc.coalescing.byteLength} bytes, needs ${CoalescingSlot.Count * 8}`);
    }
    this.coalescing = desc.coalescing ? new Float64Array(desc.coalescing, 0, CoalescingSlot.Count) : null;
    for (const qs of queues) {
      for (let i = 0; i < qs.q.size; i++) qs.free.push(new BlkTask(qs, this));
      qs.nfree = qs.q.size;
      this.queues.push(qs);
      // Poll mode: suppress kicks from the start.
      qs.q.setNotification(false);
    }
    // Every request slot of every queue may wait for a retry at once.
    this.retry.length = slots;
  }

  get inflight(): number {
    return this.inflightCount;
  }

  get running(): boolean {
    return this.state === State.Running;
  }

  poll(nowMs: number = performance.now()): number {
    let work = 0;
    this.nowMs = nowMs;
    // What the previous poll reaped completed by now (the end of that busy iteration: see IoStatRecorder.note).
    this.iostat.flush(nowMs);
    if (this.gate !== null) work += this.gate.tick(nowMs);
    if (this.state === State.Running) {
      if (this.nretry > 0) work += this.resubmit();
      for (let i = 0; i < this.queues.length; i++) work += this.processQueue(this.queues[i]);
    }
    work += this.channel.poll();
    this.publishAll(nowMs, false);
    return work;
  }

  beginStop(): void {
    if (this.state === State.Running) this.state = State.Stopping;
    // Requests waiting for QoS budget drain at full speed: a rate limit must not hold up a stop.
    this.gate?.release();
  }

  resize(numBlocks: number): void {
    if (this.bdev.resize === undefined) throw new Error(`device ${this.name}: bdev ${this.bdev.name} cannot change size`);
    this.bdev.resize(numBlocks);
    this.disk.capacitySectors = this.bdev.numBlocks * this.sectorsPerBlock;
  }

  finishStop(): StopResult {
    if (this.inflightCount !== 0) throw new Error(`device ${this.name}: finishStop with ${this.inflightCount} requests in flight`);
    if (this.state === State.Stopped) throw new Error(`device ${this.name}: already stopped`);
    const now = performance.now();
    this.iostat.flush(now);
    this.publishAll(now, true);
    this.state = State.Stopped;
    const result: StopResult = {
      queues: this.queues.map((qs) => ({ index: qs.q.index, lastAvailIdx: qs.q.lastAvailIdx })),
    };
    this.channel.destroy();
    this.bdev.destroy();
    this.mem.unmap();
    return result;
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
    if (enabled) {
      const now = performance.now();
      this.iostat.flush(now);
      this.publishAll(now, true);
    }
    let waiting = false;
    for (const qs of this.queues) {
      qs.q.setNotification(enabled);
      if (enabled && qs.q.available() > 0) waiting = true;
    }
    return waiting;
  }

  kickFds(): readonly number[] {
    return this.queues.filter((qs) => qs.desc.kickFd >= 0).map((qs) => qs.desc.kickFd);
  }

  /** A bdev I/O finished (called from the channel's poll()). */
  ioDone(task: BlkTask): void {
    const io = task.io;
    if (io.status === BdevIoStatus.NoMem) {
      this.retry[this.nretry++] = task;
      return;
    }
    this.inflightCount--;
    this.stats[DeviceStat.InflightTasks] = this.inflightCount;
    const ok = io.status === BdevIoStatus.Success;
    this.iostat.note(io.type, io.numBlocks * this.disk.blockSize, ok, task.startMs);
    const written = ok && task.req.type === BlkType.In ? task.req.dataBytes : 0;
    this.complete(task, ok ? BlkStatus.Ok : BlkStatus.IoErr, written);
  }

  private resubmit(): number {
    const n = this.nretry;
    this.nretry = 0;
    for (let i = 0; i < n; i++) {
      // Completions (and so new retries) arrive only in channel.poll(), never inside submit().
      this.channel.submit(this.retry[i].io);
    }
    return n;
  }

  private processQueue(qs: QueueState): number {
    const q = qs.q;
    let n = q.available();
    if (n === 0) {
      if (q.broken !== null && !qs.brokenLogged) this.logBroken(qs);
      return 0;
    }
    if (n > BLK_BATCH) n = BLK_BATCH;
    let taken = 0;
    while (taken < n && qs.nfree > 0) {
      const head = q.pop();
      if (head < 0) {
        this.logBroken(qs);
        break;
      }
      taken++;
      this.start(qs.free[--qs.nfree], head);
    }
    return taken;
  }

  private start(task: BlkTask, head: number): void {
    const qs = task.queue;
    const err = qs.q.walk(head, task.chain);
    if (err !== ChainError.Ok) {
      // A bad data buffer still gets IOERR when the status descriptor itself is sound.
      const r = qs.q.statusByteOf(head);
      if (r < 0) {
        this.dropChain(task, head, chainErrorName(err));
        return;
      }
      this.mem.bytes[r][this.mem.offset] = BlkStatus.IoErr;
      qs.q.push(head, 1);
      this.stats[DeviceStat.ErrorOps]++;
      this.guestError(qs, chainErrorName(err), head);
      this.release(task);
      return;
    }
    const req = task.req;
    const parsed = parseBlkRequest(this.mem, task.chain, this.disk, req);
    if (parsed === PARSE_NO_STATUS) {
      this.dropChain(task, head, 'no writable status byte');
      return;
    }
    if (parsed !== PARSE_EXECUTE) {
      this.complete(task, parsed, 0);
      return;
    }
    const io = task.io;
    const spb = this.sectorsPerBlock;
    switch (req.type) {
      case BlkType.In:
      case BlkType.Out:
        io.prepare(req.type === BlkType.In ? BdevIoType.Read : BdevIoType.Write, req.sector / spb, req.dataBytes / this.disk.blockSize);
        this.addData(task);
        this.submit(task);
        return;
      case BlkType.Flush:
        if (!this.canFlush) {
          // No volatile cache behind this bdev: nothing to flush.
          this.complete(task, BlkStatus.Ok, 0);
          return;
        }
        io.prepare(BdevIoType.Flush, 0, 0);
        this.submit(task);
        return;
      case BlkType.GetId:
        this.writeId(task);
        this.complete(task, BlkStatus.Ok, req.dataBytes);
        return;
      case BlkType.Discard:
        if (!this.canUnmap) {
          // A discard is a hint (§5.2.6.2: data after it is unspecified); nothing to release.
          this.complete(task, BlkStatus.Ok, 0);
          return;
        }
        io.prepare(BdevIoType.Unmap, req.sector / spb, req.numSectors / spb);
        this.submit(task);
        return;
      case BlkType.WriteZeroes:
        if (!this.canWriteZeroes) {
          this.complete(task, BlkStatus.Unsupp, 0);
          return;
        }
        io.prepare(BdevIoType.WriteZeroes, req.sector / spb, req.numSectors / spb);
        this.submit(task);
        return;
      default:
        this.complete(task, BlkStatus.Unsupp, 0);
    }
  }

  private submit(task: BlkTask): void {
    this.inflightCount++;
    this.stats[DeviceStat.InflightTasks] = this.inflightCount;
    task.startMs = this.nowMs;
    const gate = this.gate;
    if (gate !== null && gate.active) gate.submit(task.io);
    else this.channel.submit(task.io);
  }

  /** The request's data segments as the I/O's scatter list. */
  private addData(task: BlkTask): void {
    const { chain, req, io } = task;
    let remaining = req.dataBytes;
    let skip = req.dataSkip;
    for (let seg = req.dataSeg; remaining > 0 && seg < req.dataEnd; seg++) {
      let len = chain.len[seg] - skip;
      if (len > remaining) len = remaining;
      io.addIov(this.mem.bytes[chain.region[seg]], chain.offset[seg] + skip, len);
      remaining -= len;
      skip = 0;
    }
  }

  /** GET_ID: copy req.dataBytes (<= 20) bytes of the id into the writable data segments. */
  private writeId(task: BlkTask): void {
    const { chain, req } = task;
    let done = 0;
    for (let seg = req.dataSeg; done < req.dataBytes && seg < req.dataEnd; seg++) {
      const dst = this.mem.bytes[chain.region[seg]];
      const off = chain.offset[seg];
      const n = Math.min(chain.len[seg], req.dataBytes - done);
      for (let i = 0; i < n; i++) dst[off + i] = this.idBytes[done + i];
      done += n;
    }
  }

  /** Write the status byte, push the used element (len = bytes written + 1), count, free the slot. */
  private complete(task: BlkTask, status: number, written: number): void {
    const req = task.req;
    this.mem.bytes[req.statusRegion][req.statusOffset] = status;
    task.queue.q.push(task.chain.head, written + 1);
    const s = this.stats;
    if (status !== BlkStatus.Ok) {
      s[DeviceStat.ErrorOps]++;
    } else {
      switch (req.type) {
        case BlkType.In:
          s[DeviceStat.ReadOps]++;
          s[DeviceStat.ReadBytes] += req.dataBytes;
          break;
        case BlkType.Out:
          s[DeviceStat.WriteOps]++;
          s[DeviceStat.WriteBytes] += req.dataBytes;
          break;
        case BlkType.Flush:
          s[DeviceStat.FlushOps]++;
          break;
        case BlkType.Discard:
        case BlkType.WriteZeroes:
          // Both release or zero a range: counted as unmaps (SPDK's vhost counts them apart from writes).
          s[DeviceStat.UnmapOps]++;
          s[DeviceStat.UnmapBytes] += req.numSectors * SECTOR;
          break;
        default:
          break;
      }
    }
    this.release(task);
  }

  /** A chain that cannot carry a status: give the head back with length 0. */
  private dropChain(task: BlkTask, head: number, why: string): void {
    const qs = task.queue;
    qs.q.push(head, 0);
    this.stats[DeviceStat.ErrorOps]++;
    this.guestError(qs, why, head);
    this.release(task);
  }

  private release(task: BlkTask): void {
    const qs = task.queue;
    qs.free[qs.nfree++] = task;
  }

  /**
   * Publish every queue's used entries and signal the queues whose driver
   * wants an interrupt — at once, or (coalescing on) not before the queue's
   * next event time unless `force` (stop, sleep).
   */
  private publishAll(nowMs: number, force: boolean): void {
    if (this.coalescing !== null && nowMs >= this.nextCheckMs) this.checkRates(nowMs);
    if (this.delayBaseMs > 0) {
      this.publishCoalesced(nowMs, force);
      return;
    }
    for (let i = 0; i < this.queues.length; i++) {
      const qs = this.queues[i];
      if (qs.q.pending > 0 && qs.q.publish() && qs.desc.callFd >= 0) {
        this.env.signal(qs.desc.callFd);
        this.stats[DeviceStat.CallSignals]++;
      }
    }
  }

  private publishCoalesced(nowMs: number, force: boolean): void {
    for (let i = 0; i < this.queues.length; i++) {
      const qs = this.queues[i];
      const n = qs.q.pending;
      if (n > 0) {
        qs.reqCnt += n;
        if (qs.q.publish()) qs.owed = true;
      }
      if (!qs.owed) continue;
      if (qs.desc.callFd < 0) {
        qs.owed = false;
        continue;
      }
      if (!force && nowMs < qs.nextEventMs) continue;
      qs.owed = false;
      this.env.signal(qs.desc.callFd);
      this.stats[DeviceStat.CallSignals]++;
      qs.nextEventMs = nowMs + qs.irqDelayMs;
    }
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
    if (wasOn && this.delayBaseMs === 0) this.publishCoalesced(nowMs, true);
  }

  private guestError(qs: QueueState, why: string, head: number): void {
    const n = ++qs.guestErrors;
    if (n <= GUEST_ERROR_LOG_LIMIT || n % 1024 === 0) {
      logger.warn('invalid request from the guest', { device: this.name, queue: qs.q.index, head, error: why, count: n });
    }
  }

  private logBroken(qs: QueueState): void {
    if (qs.brokenLogged) return;
    qs.brokenLogged = true;
    logger.error('virtqueue broken by the guest, no longer processed', {
      device: this.name,
      queue: qs.q.index,
      error: qs.q.broken ?? 'unknown',
    });
  }
}
