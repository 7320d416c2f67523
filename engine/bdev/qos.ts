/**
 * Bdev QoS as SPDK defines it (lib/bdev/bdev.c, bdev_set_qos_limit): up to
 * four per-second limits — read+write I/Os, read+write bytes, read bytes,
 * write bytes; 0 = unlimited — enforced with a 1 ms timeslice budget. At the
 * start of each timeslice every limit gets limit/1000 (at least 1 I/O or 512
 * bytes); an I/O may start while the budget of each limit that applies to
 * it is above zero and then takes its share (bytes may overrun: the overrun
 * is taken off the next timeslice); unused budget is not carried over. I/Os
 * over budget wait in FIFO order (later I/Os never overtake them) and start
 * in a later timeslice; nothing is failed. Only reads and writes are
 * limited (as SPDK's bdev_qos_io_to_limit); other I/O types wait only for
 * the I/Os queued before them.
 *
 * The limits live in a SharedArrayBuffer the reactor writes (QosSlot); the
 * gate looks at it once per timeslice, so a new limit takes effect within
 * 1 ms with no control message.
 *
 * Late refills: SPDK's poller runs every millisecond and adds one slice of
 * budget per elapsed slice when it runs late. Here the refill happens in the
 * device's poll, which may come late when the worker was descheduled (or
 * slept, idle). When I/Os were waiting, every elapsed slice is granted (up
 * to MAX_CATCHUP_SLICES, 100 ms) so the average rate holds on a busy host;
 * when none was waiting, one slice — an idle pause earns no burst, as with
 * SPDK, whose poller kept expiring the unused budget meanwhile.
 *
 * Thread: the engine worker that runs the device using the bdev.
 */
import { QosSlot } from '../control';
import { Fifo } from '../fifo';
import { type BdevChannel, type BdevIo, BdevIoType } from './bdev';

/** SPDK_BDEV_QOS_TIMESLICE_IN_USEC. */
export const QOS_TIMESLICE_MS = 1;
/** SPDK_BDEV_QOS_MIN_IO_PER_TIMESLICE / MIN_BYTE_PER_TIMESLICE. */
const MIN_IO_PER_TIMESLICE = 1;
const MIN_BYTE_PER_TIMESLICE = 512;
/** Most timeslices of budget one late refill adds. */
export const MAX_CATCHUP_SLICES = 100;

export class QosGate {
  private readonly limits: Float64Array;
  /** The limits the budgets were computed from. */
  private readonly applied = new Float64Array(QosSlot.Count);
  private readonly maxPerSlice = new Float64Array(QosSlot.Count);
  private readonly remaining = new Float64Array(QosSlot.Count);
  private limited = false;
  /** Set by release(): every queued and future I/O passes (a stopping device drains at full speed). */
  private released = false;
  private lastSliceMs: number;
  private readonly waiting: Fifo<BdevIo>;

  /**
   * @param buffer QosSlot.Count Float64 limits (bytes and I/Os per second)
   * @param capacity I/Os that may wait before the queue grows (it doubles when full; nothing is dropped)
   */
  constructor(
    buffer: SharedArrayBuffer,
    private readonly channel: BdevChannel,
    private readonly blockSize: number,
    capacity: number,
    nowMs: number,
  ) {
    if (buffer.byteLength < QosSlot.Count * 8) throw new RangeError(`QoS buffer holds ${buffer.byteLength} bytes, needs ${QosSlot.Count * 8}`);
    this.limits = new Float64Array(buffer, 0, QosSlot.Count);
    this.waiting = new Fifo<BdevIo>(capacity);
    this.lastSliceMs = nowMs;
    this.readLimits();
  }

  /** True when submit() must go through the gate (a limit is set, or I/Os wait). */
  get active(): boolean {
    return this.limited || this.waiting.length > 0;
  }

  /** I/Os waiting for budget. */
  get queued(): number {
    return this.waiting.length;
  }

  /** Start `io` now if the budget allows and nothing waits before it; otherwise queue it. */
  submit(io: BdevIo): void {
    this.waiting.push(io);
    if (this.waiting.length === 1) this.drain();
  }

  /**
   * Start a new timeslice when one has passed (re-reading the limits), then
   * start the queued I/Os the budget allows. Returns how many started.
   */
  tick(nowMs: number): number {
    const elapsed = nowMs - this.lastSliceMs;
    if (elapsed < QOS_TIMESLICE_MS) return this.waiting.length > 0 && this.released ? this.drain() : 0;
    let slices = Math.floor(elapsed / QOS_TIMESLICE_MS);
    const cap = this.waiting.length > 0 ? MAX_CATCHUP_SLICES : 1;
    if (slices > cap) {
      slices = cap;
      this.lastSliceMs = nowMs;
    } else {
      this.lastSliceMs += slices * QOS_TIMESLICE_MS;
    }
    if (!this.readLimits()) {
      for (let i = 0; i < QosSlot.Count; i++) {
        const max = this.maxPerSlice[i];
        if (max === 0) continue;
        // Unused budget expires; an overrun (negative) is paid back.
        const r = this.remaining[i];
        this.remaining[i] = (r > 0 ? 0 : r) + slices * max;
      }
    }
    return this.waiting.length > 0 ? this.drain() : 0;
  }

  /** Let everything through from now on (the device is stopping). */
  release(): void {
    this.released = true;
    this.limited = false;
  }

  /**
   * Take the queued I/Os `pick` selects out of the queue and start them now,
   * in order, without charging a budget (their submitter is stopping: a rate
   * limit must not hold up a stop). The others keep their order.
   */
  releaseWhere(pick: (io: BdevIo) => boolean): number {
    return this.waiting.removeWhere(pick, (io) => this.channel.submit(io));
  }

  /** Start queued I/Os in order while their budgets allow. */
  private drain(): number {
    let n = 0;
    const waiting = this.waiting;
    while (waiting.length > 0) {
      if (!this.released && this.limited && !this.take(waiting.peek())) break;
      n++;
      this.channel.submit(waiting.shift());
    }
    return n;
  }

  /** Charge `io` to every limit that applies, if each has budget left; false (nothing charged) otherwise. */
  private take(io: BdevIo): boolean {
    const type = io.type;
    if (type !== BdevIoType.Read && type !== BdevIoType.Write) return true;
    const rem = this.remaining;
    const max = this.maxPerSlice;
    const bytesSlot = type === BdevIoType.Read ? QosSlot.RBytesPerSec : QosSlot.WBytesPerSec;
    if (max[QosSlot.RwIosPerSec] > 0 && rem[QosSlot.RwIosPerSec] <= 0) return false;
    if (max[QosSlot.RwBytesPerSec] > 0 && rem[QosSlot.RwBytesPerSec] <= 0) return false;
    if (max[bytesSlot] > 0 && rem[bytesSlot] <= 0) return false;
    const bytes = io.numBlocks * this.blockSize;
    rem[QosSlot.RwIosPerSec] -= 1;
    rem[QosSlot.RwBytesPerSec] -= bytes;
    rem[bytesSlot] -= bytes;
    return true;
  }

  /**
   * Take the limits from the shared buffer. When they changed, recompute the
   * per-timeslice budgets and start the slice full (as SPDK's update does);
   * returns true then.
   */
  private readLimits(): boolean {
    if (this.released) return false;
    let changed = false;
    for (let i = 0; i < QosSlot.Count; i++) {
      const v = this.limits[i];
      if (v !== this.applied[i]) changed = true;
    }
    if (!changed) return false;
    let limited = false;
    for (let i = 0; i < QosSlot.Count; i++) {
      const v = this.limits[i];
      const limit = Number.isFinite(v) && v > 0 ? v : 0;
      this.applied[i] = v;
      if (limit === 0) {
        this.maxPerSlice[i] = 0;
        this.remaining[i] = 0;
        continue;
      }
      limited = true;
      const min = i === QosSlot.RwIosPerSec ? MIN_IO_PER_TIMESLICE : MIN_BYTE_PER_TIMESLICE;
      const perSlice = Math.floor((limit * QOS_TIMESLICE_MS) / 1000);
      this.maxPerSlice[i] = Math.max(perSlice, min);
      this.remaining[i] = this.maxPerSlice[i];
    }
    this.limited = limited;
    return true;
  }
}
