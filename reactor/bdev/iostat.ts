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
import {
  CTL_ACK,
  CTL_HIST_GRANULARITY,
  CTL_HIST_MAX_RANGE,
  CTL_HIST_MIN_RANGE,
  CTL_HIST_TYPES,
  CTL_OFFSET,
  CTL_RESET,
  CTL_SEQ,
  CTL_WORDS,
  HIST_MAX_BUCKETS,
  HIST_OFFSET,
  RESET_ALL,
  RESET_HISTOGRAM,
  RESET_MAXMIN,
  STATS_BUFFER_BYTES,
} from '../../engine/bdev/iostat';

/** bdev_reset_iostat's modes (SPDK's spdk_bdev_reset_stat_mode); `error` and `none` reset nothing here (vhostd keeps no per-status error counts beyond io_error.failed, which `all` resets). */
export type ResetMode = 'all' | 'maxmin' | 'error' | 'none';

/** A histogram's shape, as SPDK's spdk_histogram_data. */
export interface HistogramSettings {
  granularity: number;
  minRange: number;
  maxRange: number;
  /** I/O types recorded: bit 1 read, 2 write, 4 unmap. */
  types: number;
}

interface Channel {
  stats: Float64Array;
  ctl: Int32Array;
  hist: Float64Array;
}

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
  private readonly perCore = new Map<number, Channel>();
  /** The histogram every channel records (null: off). */
  private histogramSettings: HistogramSettings | null = null;

  /** The buffer the worker on `core` writes (made on first use), with the current histogram settings. */
  channel(core: number): SharedArrayBuffer {
    let c = this.perCore.get(core);
    if (!c) {
      const buf = new SharedArrayBuffer(STATS_BUFFER_BYTES);
      c = { stats: new Float64Array(buf, 0, BdevStat.Count), ctl: new Int32Array(buf, CTL_OFFSET, CTL_WORDS), hist: new Float64Array(buf, HIST_OFFSET, HIST_MAX_BUCKETS) };
      this.perCore.set(core, c);
      if (this.histogramSettings) this.request(c, 0, this.histogramSettings);
    }
    return c.stats.buffer as SharedArrayBuffer;
  }

  /** Ask the worker of a channel to reset (`bits`) and/or take histogram settings; it applies them at its next poll. */
  private request(c: Channel, bits: number, hist?: HistogramSettings | null): void {
    if (hist !== undefined) {
      Atomics.store(c.ctl, CTL_HIST_MIN_RANGE, hist?.minRange ?? 0);
      Atomics.store(c.ctl, CTL_HIST_MAX_RANGE, hist?.maxRange ?? 0);
      Atomics.store(c.ctl, CTL_HIST_TYPES, hist?.types ?? 0);
      Atomics.store(c.ctl, CTL_HIST_GRANULARITY, hist?.granularity ?? 0);
    }
    if (bits !== 0) Atomics.or(c.ctl, CTL_RESET, bits);
    Atomics.add(c.ctl, CTL_SEQ, 1);
  }

  /** bdev_reset_iostat: shows at once (reads apply a pending reset), done by each worker at its next poll. */
  reset(mode: ResetMode): void {
    const bits = mode === 'all' ? RESET_ALL : mode === 'maxmin' ? RESET_MAXMIN : 0;
    if (bits === 0) return;
    for (const c of this.perCore.values()) this.request(c, bits);
  }

  /** bdev_enable_histogram: a fresh (zeroed) histogram with these settings, or none. */
  setHistogram(settings: HistogramSettings | null): void {
    this.histogramSettings = settings;
    for (const c of this.perCore.values()) this.request(c, RESET_HISTOGRAM, settings);
  }

  get histogram(): HistogramSettings | null {
    return this.histogramSettings;
  }

  /** The histogram summed over every worker, bucket counts in SPDK's order (null: not enabled). */
  histogramCounts(): number[] | null {
    const h = this.histogramSettings;
    if (!h) return null;
    const n = (h.maxRange - h.minRange + 1) * 2 ** h.granularity;
    const out = new Array<number>(n).fill(0);
    for (const c of this.perCore.values()) {
      if (pendingBits(c) & RESET_HISTOGRAM) continue; // the worker has not zeroed it yet: it counts as zero
      for (let i = 0; i < n; i++) out[i] += c.hist[i];
    }
    return out;
  }

  /** The cores whose workers have served this bdev, ascending. */
  cores(): number[] {
    return [...this.perCore.keys()].sort((a, b) => a - b);
  }

  /** One worker's counters. */
  ofCore(core: number): IoStatCounters {
    const c = this.perCore.get(core);
    return counters(c ? [view(c)] : []);
  }

  /** The sum over every worker (max of maxima, min of minima). */
  total(): IoStatCounters {
    return counters([...this.perCore.values()].map(view));
  }
}

/** Reset bits the worker has not applied yet. */
function pendingBits(c: Channel): number {
  return Atomics.load(c.ctl, CTL_ACK) === Atomics.load(c.ctl, CTL_SEQ) ? 0 : Atomics.load(c.ctl, CTL_RESET);
}

/** A channel's counters as they are once its pending reset is applied. */
function view(c: Channel): Float64Array {
  const bits = pendingBits(c);
  if (bits & RESET_ALL) return new Float64Array(BdevStat.Count);
  if (!(bits & RESET_MAXMIN)) return c.stats;
  const v = Float64Array.from(c.stats);
  v[BdevStat.MaxReadLatencyNs] = v[BdevStat.MaxWriteLatencyNs] = v[BdevStat.MaxUnmapLatencyNs] = 0;
  v[BdevStat.MinReadLatencyNs] = v[BdevStat.MinWriteLatencyNs] = v[BdevStat.MinUnmapLatencyNs] = Infinity;
  return v;
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
