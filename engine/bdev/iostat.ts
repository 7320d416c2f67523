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

  /** Without a buffer the counters are kept privately (nobody reads them). */
  constructor(buffer?: SharedArrayBuffer) {
    if (buffer !== undefined && buffer.byteLength < BdevStat.Count * 8) {
      throw new RangeError(`bdev stats buffer holds ${buffer.byteLength} bytes, needs ${BdevStat.Count * 8}`);
    }
    this.s = buffer ? new Float64Array(buffer, 0, BdevStat.Count) : new Float64Array(BdevStat.Count);
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
    const n = p[b + PEND_OPS];
    p[b + PEND_OPS] = n + 1;
    p[b + PEND_BYTES] += bytes;
    p[b + PEND_START_SUM] += startMs;
    if (n === 0 || startMs < p[b + PEND_START_MIN]) p[b + PEND_START_MIN] = startMs;
    if (n === 0 || startMs > p[b + PEND_START_MAX]) p[b + PEND_START_MAX] = startMs;
    this.dirty = true;
  }

  /** Write what note() gathered into the shared words, completed at `doneMs`. */
  flush(doneMs: number): void {
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
    if (types & 4) this.flushType(2 * PEND_STRIDE, doneMs, BdevStat.UnmapOps, BdevStat.BytesUnmapped, BdevStat.UnmapLatencyNs, BdevStat.MaxUnmapLatencyNs, BdevStat.MinUnmapLatencyNs);
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
