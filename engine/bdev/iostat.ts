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

export class IoStatRecorder {
  private readonly s: Float64Array;

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

  /** Count one op and keep max/min (min is meaningful once the count is > 0). */
  private extremes(ops: BdevStat, max: BdevStat, min: BdevStat, latencyNs: number): void {
    const s = this.s;
    const n = s[ops];
    if (latencyNs > s[max]) s[max] = latencyNs;
    if (n === 0 || latencyNs < s[min]) s[min] = latencyNs;
    s[ops] = n + 1;
  }
}
