/**
 * Per-bdev I/O statistics as SPDK's bdev layer keeps them
 * (bdev_io_update_io_stat): successful reads, writes and unmaps counted with
 * their bytes and latencies (sum, max, min), failures counted apart. Write
 * zeroes and flush are not counted, as in SPDK. The words live in a
 * SharedArrayBuffer per (bdev, worker) (BdevStat slots): only the worker that
 * runs the device writes them, the reactor sums them (bdev_get_iostat).
 *
 * Thread: the engine worker that runs the device using the bdev.
 */
import { BdevStat } from '../control';
import { BdevIoType } from './bdev';

/*
 * After the BdevStat words, the same buffer holds a control block and a
 * latency histogram (STATS_BUFFER_BYTES in all). The reactor writes requests
 * into the control block (Int32 words, Atomics only) and bumps CTL_SEQ; the
 * worker applies them at its next flush() — the only writer of the counters
 * stays the worker — and stores the seq it applied in CTL_ACK. Until then the
 * reactor reads the counters as if the request had been applied
 * (reactor/bdev/iostat.ts), so a reset shows at once.
 */
/** Byte offset of the control block (Int32 words). */
export const CTL_OFFSET = BdevStat.Count * 8;
/** Request counter (reactor increments). */
export const CTL_SEQ = 0;
/** The last CTL_SEQ the worker applied. */
export const CTL_ACK = 1;
/** Pending reset bits (RESET_*), or-ed by the reactor, taken by the worker. */
export const CTL_RESET = 2;
/** Histogram: 0 off, else SPDK's granularity. */
export const CTL_HIST_GRANULARITY = 3;
export const CTL_HIST_MIN_RANGE = 4;
export const CTL_HIST_MAX_RANGE = 5;
/** Histogram: I/O types recorded (bit 1 read, 2 write, 4 unmap). */
export const CTL_HIST_TYPES = 6;
export const CTL_WORDS = 8;
/** Reset bits (bdev_reset_iostat's modes, and a histogram reset). */
export const RESET_ALL = 1;
export const RESET_MAXMIN = 2;
export const RESET_HISTOGRAM = 4;
/** Byte offset of the histogram (Float64 counts, SPDK's bucket order). */
export const HIST_OFFSET = CTL_OFFSET + CTL_WORDS * 4;
/** The most buckets a histogram may have: granularity 7 over every range ((64 - 7 + 1) << 7) fits. */
export const HIST_MAX_BUCKETS = 8192;
export const STATS_BUFFER_BYTES = HIST_OFFSET + HIST_MAX_BUCKETS * 8;

const TWO32 = 4294967296;

/** Count of leading zero bits of a 64-bit value held exactly in a double (0 <= v < 2^53). */
function clz64(v: number): number {
  if (v >= TWO32 * TWO32) return 0;
  const hi = Math.floor(v / TWO32);
  return hi !== 0 ? Math.clz32(hi) : 32 + Math.clz32(v >>> 0);
}

/** SPDK's __spdk_histogram_data_get_bucket_range: the power-of-two range of a datapoint. */
export function histogramRange(granularity: number, v: number): number {
  const lsb = 64 - granularity;
  const clz = v > 0 ? clz64(v) : 64;
  return clz <= lsb ? lsb - clz : 0;
}

/** The bucket a datapoint falls in, as spdk_histogram_data_tally places it (ranges clamped to [minRange, maxRange]). */
export function histogramBucket(granularity: number, minRange: number, maxRange: number, v: number): number {
  let range = histogramRange(granularity, v);
  let index: number;
  const perRange = 2 ** granularity;
  if (range < minRange) {
    range = minRange;
    index = 0;
  } else if (range > maxRange) {
    range = maxRange;
    index = perRange - 1;
  } else {
    const shift = range === 0 ? 0 : range - 1;
    index = Math.floor(v / 2 ** shift) % perRange;
  }
  return (range - minRange) * perRange + index;
}

/** note() accumulators, per type (read, write, unmap): PEND_STRIDE slots each. */
const PEND_OPS = 0;
const PEND_BYTES = 1;
const PEND_START_SUM = 2;
const PEND_START_MIN = 3;
const PEND_START_MAX = 4;
const PEND_STRIDE = 5;

export class IoStatRecorder {
  private readonly s: Float64Array;
  /** note()'s accumulators (worker-private, not shared). */
  private readonly p = new Float64Array(3 * PEND_STRIDE);
  private pFailed = 0;
  private dirty = false;
  /** Types note() saw since the last flush (bits 1 read, 2 write, 4 unmap): flush() touches only those. */
  private types = 0;

  /** The control block and histogram, when the buffer has them (STATS_BUFFER_BYTES). */
  private readonly ctl: Int32Array | null;
  private readonly hist: Float64Array | null;
  private seenSeq = 0;
  /** Histogram settings the worker applied (granularity 0: off). */
  private hGranularity = 0;
  private hMinRange = 0;
  private hMaxRange = 0;
  private hTypes = 0;
  /** Start times (ms) of the I/Os note() saw for the histogram since the last flush. */
  private hStarts = new Float64Array(64);
  private nStarts = 0;

  /** Without a buffer the counters are kept privately (nobody reads them). */
  constructor(buffer?: SharedArrayBuffer) {
    if (buffer !== undefined && buffer.byteLength < BdevStat.Count * 8) {
      throw new RangeError(`bdev stats buffer holds ${buffer.byteLength} bytes, needs ${BdevStat.Count * 8}`);
    }
    this.s = buffer ? new Float64Array(buffer, 0, BdevStat.Count) : new Float64Array(BdevStat.Count);
    const full = buffer !== undefined && buffer.byteLength >= STATS_BUFFER_BYTES;
    this.ctl = full ? new Int32Array(buffer, CTL_OFFSET, CTL_WORDS) : null;
    this.hist = full ? new Float64Array(buffer, HIST_OFFSET, HIST_MAX_BUCKETS) : null;
    // Requests made before this worker opened the bdev (a reset, a histogram enabled) apply now.
    if (this.ctl !== null) this.applyControl();
  }

  /** Apply the reactor's pending requests (see CTL_SEQ). */
  private applyControl(): void {
    const ctl = this.ctl as Int32Array;
    const seq = Atomics.load(ctl, CTL_SEQ);
    this.seenSeq = seq;
    const bits = Atomics.exchange(ctl, CTL_RESET, 0);
    const s = this.s;
    if (bits & RESET_ALL) {
      s.fill(0);
      this.p.fill(0);
      this.pFailed = 0;
      this.types = 0;
      this.nStarts = 0;
    }
    if (bits & (RESET_ALL | RESET_MAXMIN)) {
      s[BdevStat.MaxReadLatencyNs] = s[BdevStat.MaxWriteLatencyNs] = s[BdevStat.MaxUnmapLatencyNs] = 0;
      s[BdevStat.MinReadLatencyNs] = s[BdevStat.MinWriteLatencyNs] = s[BdevStat.MinUnmapLatencyNs] = Infinity;
    }
    const g = Atomics.load(ctl, CTL_HIST_GRANULARITY);
    this.hGranularity = g;
    this.hMinRange = Atomics.load(ctl, CTL_HIST_MIN_RANGE);
    this.hMaxRange = Atomics.load(ctl, CTL_HIST_MAX_RANGE);
    this.hTypes = g === 0 ? 0 : Atomics.load(ctl, CTL_HIST_TYPES);
    if (bits & RESET_HISTOGRAM) {
      (this.hist as Float64Array).fill(0);
      this.nStarts = 0;
    }
    Atomics.store(ctl, CTL_ACK, seq);
  }

  /** One I/O the bdev completed. `latencyNs` runs from submission to the bdev (QoS wait included) to completion. */
  record(type: BdevIoType, bytes: number, ok: boolean, latencyNs: number): void {
    const s = this.s;
    if (!ok) {
      s[BdevStat.FailedOps]++;
      return;
    }
    switch (type) {
      case BdevIoType.Read:
        s[BdevStat.BytesRead] += bytes;
        s[BdevStat.ReadLatencyNs] += latencyNs;
        this.extremes(BdevStat.ReadOps, BdevStat.MaxReadLatencyNs, BdevStat.MinReadLatencyNs, latencyNs);
        return;
      case BdevIoType.Write:
        s[BdevStat.BytesWritten] += bytes;
        s[BdevStat.WriteLatencyNs] += latencyNs;
        this.extremes(BdevStat.WriteOps, BdevStat.MaxWriteLatencyNs, BdevStat.MinWriteLatencyNs, latencyNs);
        return;
      case BdevIoType.Unmap:
        s[BdevStat.BytesUnmapped] += bytes;
        s[BdevStat.UnmapLatencyNs] += latencyNs;
        this.extremes(BdevStat.UnmapOps, BdevStat.MaxUnmapLatencyNs, BdevStat.MinUnmapLatencyNs, latencyNs);
        return;
      default:
        return;
    }
  }

  /**
   * Hot path: note one completed I/O now and account it at the next flush(),
   * with the flush's clock as its completion time. The poll loop reads the
   * clock once per busy iteration, at its end; a device flushes at the start
   * of its next poll with that reading, so the completion time is the end of
   * the iteration that reaped the I/O (what a second clock read right before
   * the reap used to give, within one iteration) and the shared words are
   * written once per poll instead of per I/O. Per type only the count, the
   * bytes and the sum / min / max of the start times are kept: the latency
   * sum is count * done - sum(start), the max is done - min(start), the min
   * is done - max(start) — exact, no per-I/O state.
   */
  note(type: BdevIoType, bytes: number, ok: boolean, startMs: number): void {
    if (!ok) {
      this.pFailed++;
      this.dirty = true;
      return;
    }
    const p = this.p;
    let b: number;
    switch (type) {
      case BdevIoType.Read:
        b = 0;
        this.types |= 1;
        break;
      case BdevIoType.Write:
        b = PEND_STRIDE;
        this.types |= 2;
        break;
      case BdevIoType.Unmap:
        b = 2 * PEND_STRIDE;
        this.types |= 4;
        break;
      default:
        return;
    }
    if (this.hTypes & (1 << (b / PEND_STRIDE))) {
      if (this.nStarts === this.hStarts.length) {
        const grown = new Float64Array(this.nStarts * 2);
        grown.set(this.hStarts);
        this.hStarts = grown;
      }
      this.hStarts[this.nStarts++] = startMs;
    }
    const n = p[b + PEND_OPS];
    p[b + PEND_OPS] = n + 1;
    p[b + PEND_BYTES] += bytes;
    p[b + PEND_START_SUM] += startMs;
    if (n === 0 || startMs < p[b + PEND_START_MIN]) p[b + PEND_START_MIN] = startMs;
    if (n === 0 || startMs > p[b + PEND_START_MAX]) p[b + PEND_START_MAX] = startMs;
    this.dirty = true;
  }

  /**
   * Write what note() gathered into the shared words, completed at `doneMs`.
   * The reactor's requests are looked for with a plain load of CTL_SEQ: the
   * device polls flush every loop iteration, and an Atomics.load there cost
   * ~15 ns of every request at QD32 (V8 --cpu-prof line ticks); a stale
   * read only delays a request by an iteration, and applyControl() reads
   * the block with Atomics (the acquire that orders what it reads).
   */
  flush(doneMs: number): void {
    if (this.ctl !== null && this.ctl[CTL_SEQ] !== this.seenSeq) this.applyControl();
    if (!this.dirty) return;
    this.dirty = false;
    const s = this.s;
    if (this.pFailed > 0) {
      s[BdevStat.FailedOps] += this.pFailed;
      this.pFailed = 0;
    }
    const types = this.types;
    this.types = 0;
    if (types & 1) this.flushType(0, doneMs, BdevStat.ReadOps, BdevStat.BytesRead, BdevStat.ReadLatencyNs, BdevStat.MaxReadLatencyNs, BdevStat.MinReadLatencyNs);
    if (types & 2) this.flushType(PEND_STRIDE, doneMs, BdevStat.WriteOps, BdevStat.BytesWritten, BdevStat.WriteLatencyNs, BdevStat.MaxWriteLatencyNs, BdevStat.MinWriteLatencyNs);
    if (this.nStarts > 0) this.tally(doneMs);
    if (types & 4) this.flushType(2 * PEND_STRIDE, doneMs, BdevStat.UnmapOps, BdevStat.BytesUnmapped, BdevStat.UnmapLatencyNs, BdevStat.MaxUnmapLatencyNs, BdevStat.MinUnmapLatencyNs);
  }

  /** Histogram: each noted I/O's latency (ns, the same as the counters') into its bucket. */
  private tally(doneMs: number): void {
    const h = this.hist as Float64Array;
    const g = this.hGranularity;
    const n = this.nStarts;
    this.nStarts = 0;
    if (g === 0) return;
    for (let i = 0; i < n; i++) {
      const ns = Math.max(0, Math.round((doneMs - this.hStarts[i]) * 1e6));
      h[histogramBucket(g, this.hMinRange, this.hMaxRange, ns)]++;
    }
  }

  private flushType(b: number, doneMs: number, ops: BdevStat, bytes: BdevStat, sum: BdevStat, max: BdevStat, min: BdevStat): void {
    const p = this.p;
    const n = p[b + PEND_OPS];
    if (n === 0) return;
    const s = this.s;
    const total = n * doneMs - p[b + PEND_START_SUM];
    const hi = doneMs - p[b + PEND_START_MIN];
    const lo = doneMs - p[b + PEND_START_MAX];
    s[bytes] += p[b + PEND_BYTES];
    s[sum] += total > 0 ? Math.round(total * 1e6) : 0;
    const hiNs = hi > 0 ? Math.round(hi * 1e6) : 0;
    const loNs = lo > 0 ? Math.round(lo * 1e6) : 0;
    const had = s[ops];
    if (hiNs > s[max]) s[max] = hiNs;
    if (had === 0 || loNs < s[min]) s[min] = loNs;
    s[ops] = had + n;
    p[b + PEND_OPS] = 0;
    p[b + PEND_BYTES] = 0;
    p[b + PEND_START_SUM] = 0;
  }

  /** Count one op and keep max/min (min is meaningful once the count is > 0). */
  private extremes(ops: BdevStat, max: BdevStat, min: BdevStat, latencyNs: number): void {
    const s = this.s;
    const n = s[ops];
    if (latencyNs > s[max]) s[max] = latencyNs;
    if (n === 0 || latencyNs < s[min]) s[min] = latencyNs;
    s[ops] = n + 1;
  }
}
