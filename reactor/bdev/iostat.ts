/**
 * One bdev's I/O statistics: a SharedArrayBuffer of BdevStat words per
 * engine worker that has served the bdev (SPDK keeps one spdk_bdev_io_stat
 * per channel, i.e. per thread). Each buffer is written only by its worker
 * (engine/bdev/iostat.ts); the reactor reads and sums them for
 * bdev_get_iostat. Buffers live as long as the bdev, so counts survive
 * device restarts and moves between cores.
 *
 * Thread: main (reactor).
 */
import { BdevStat } from '../../engine/control';

/** The counters of bdev_get_iostat (SPDK's spdk_bdev_dump_io_stat_json), in ticks of 1 ns. */
export interface IoStatCounters {
  bytes_read: number;
  num_read_ops: number;
  bytes_written: number;
  num_write_ops: number;
  bytes_unmapped: number;
  num_unmap_ops: number;
  bytes_copied: number;
  num_copy_ops: number;
  read_latency_ticks: number;
  max_read_latency_ticks: number;
  min_read_latency_ticks: number;
  write_latency_ticks: number;
  max_write_latency_ticks: number;
  min_write_latency_ticks: number;
  unmap_latency_ticks: number;
  max_unmap_latency_ticks: number;
  min_unmap_latency_ticks: number;
  copy_latency_ticks: number;
  max_copy_latency_ticks: number;
  min_copy_latency_ticks: number;
  io_error: Record<string, number>;
}

export class BdevIoStats {
  private readonly perCore = new Map<number, Float64Array>();

  /** The buffer the worker on `core` writes (made on first use). */
  channel(core: number): SharedArrayBuffer {
    let v = this.perCore.get(core);
    if (!v) {
      v = new Float64Array(new SharedArrayBuffer(BdevStat.Count * 8));
      this.perCore.set(core, v);
    }
    return v.buffer as SharedArrayBuffer;
  }

  /** The cores whose workers have served this bdev, ascending. */
  cores(): number[] {
    return [...this.perCore.keys()].sort((a, b) => a - b);
  }

  /** One worker's counters. */
  ofCore(core: number): IoStatCounters {
    const v = this.perCore.get(core);
    return counters(v ? [v] : []);
  }

  /** The sum over every worker (max of maxima, min of minima). */
  total(): IoStatCounters {
    return counters([...this.perCore.values()]);
  }
}

function counters(views: Float64Array[]): IoStatCounters {
  const sum = (slot: BdevStat): number => Math.round(views.reduce((n, v) => n + v[slot], 0));
  const max = (slot: BdevStat): number => Math.round(views.reduce((n, v) => Math.max(n, v[slot]), 0));
  // A worker's minimum counts only once it has done an I/O of that kind; 0 when none has (as SPDK prints it).
  const min = (slot: BdevStat, ops: BdevStat): number => {
    let m = Infinity;
    for (const v of views) if (v[ops] > 0 && v[slot] < m) m = v[slot];
    return m === Infinity ? 0 : Math.round(m);
  };
  const failed = sum(BdevStat.FailedOps);
  return {
    bytes_read: sum(BdevStat.BytesRead),
    num_read_ops: sum(BdevStat.ReadOps),
    bytes_written: sum(BdevStat.BytesWritten),
    num_write_ops: sum(BdevStat.WriteOps),
    bytes_unmapped: sum(BdevStat.BytesUnmapped),
    num_unmap_ops: sum(BdevStat.UnmapOps),
    bytes_copied: 0,
    num_copy_ops: 0,
    read_latency_ticks: sum(BdevStat.ReadLatencyNs),
    max_read_latency_ticks: max(BdevStat.MaxReadLatencyNs),
    min_read_latency_ticks: min(BdevStat.MinReadLatencyNs, BdevStat.ReadOps),
    write_latency_ticks: sum(BdevStat.WriteLatencyNs),
    max_write_latency_ticks: max(BdevStat.MaxWriteLatencyNs),
    min_write_latency_ticks: min(BdevStat.MinWriteLatencyNs, BdevStat.WriteOps),
    unmap_latency_ticks: sum(BdevStat.UnmapLatencyNs),
    max_unmap_latency_ticks: max(BdevStat.MaxUnmapLatencyNs),
    min_unmap_latency_ticks: min(BdevStat.MinUnmapLatencyNs, BdevStat.UnmapOps),
    copy_latency_ticks: 0,
    max_copy_latency_ticks: 0,
    min_copy_latency_ticks: 0,
    io_error: failed > 0 ? { failed } : {},
  };
}
