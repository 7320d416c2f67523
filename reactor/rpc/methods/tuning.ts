/**
 * Statistics, QoS and interrupt coalescing, from several SPDK subsystems:
 * bdev_get_iostat, bdev_set_qos_limit (lib/bdev/bdev_rpc.c),
 * vhost_controller_set_coalescing (lib/vhost/vhost_rpc.c) and
 * thread_get_stats (lib/event/app_rpc.c). Parameter names, results and error
 * codes are SPDK's. Thread: main (reactor).
 */

import { HIST_MAX_BUCKETS, histogramRange } from '../../../engine/bdev/iostat';
import type { ResetMode } from '../../bdev/iostat';
import { ErrorCode, VhostdError } from '../../errors';
import { RpcCode, RpcError } from '../errors';
import { defineMethod, NO_PARAMS, paramsSchema, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

interface GetIostatParams {
  /** Older rpc.py (-b NAME). */
  name?: string;
  /** Newer rpc.py (--names a,b). */
  names?: string[];
  per_channel?: boolean;
  reset_mode?: ResetMode;
}

const RESET_MODES = ['all', 'maxmin', 'error', 'none'];

interface EnableHistogramParams {
  name: string;
  enable: boolean;
  /** An I/O type name (bdev_get_bdevs' supported_io_types): only that type; absent: every type vhostd records (read, write, unmap). */
  opc?: string;
  granularity?: number;
  min_nsec?: number;
  max_nsec?: number;
}

/** The I/O types whose latencies vhostd records (IoStatRecorder): histogram type bits. */
const HISTOGRAM_TYPES: Record<string, number> = { read: 1, write: 2, unmap: 4 };
/** SPDK_HISTOGRAM_GRANULARITY_DEFAULT */
const DEFAULT_GRANULARITY = 7;

interface SetQosLimitParams {
  name: string;
  rw_ios_per_sec?: number;
  rw_mbytes_per_sec?: number;
  r_mbytes_per_sec?: number;
  w_mbytes_per_sec?: number;
}

interface SetCoalescingParams {
  ctrlr: string;
  delay_base_us: number;
  iops_threshold: number;
}

export function tuningMethods(ctx: MethodContext): RpcMethod[] {
  const { services } = ctx;
  return [
    defineMethod<GetIostatParams>(
      'bdev_get_iostat',
      paramsSchema(
        {},
        {
          name: s.string(),
          names: { type: 'array', items: { type: 'string' } },
          per_channel: s.boolean(),
          reset_mode: { type: 'string', enum: RESET_MODES },
        },
      ),
      (p) => {
        const names = p.name === undefined && p.names === undefined ? undefined : [...(p.name !== undefined ? [p.name] : []), ...(p.names ?? [])];
        const perChannel = p.per_channel ?? false;
        if (perChannel && names?.length !== 1) throw new VhostdError(ErrorCode.Invalid, "Can't use per_channel without exactly one bdev name");
        return services.bdevs.iostat({ names, perChannel, resetMode: p.reset_mode });
      },
    ),

    defineMethod<{ name?: string; mode?: ResetMode }>(
      'bdev_reset_iostat',
      paramsSchema({}, { name: s.string(), mode: { type: 'string', enum: RESET_MODES } }),
      (p) => {
        // SPDK's default mode is all.
        services.bdevs.resetIostat(p.name, p.mode ?? 'all');
        return true;
      },
    ),

    defineMethod<EnableHistogramParams>(
      'bdev_enable_histogram',
      paramsSchema({ name: s.string(), enable: s.boolean() }, { opc: s.string(), granularity: s.u32(), min_nsec: s.u64(), max_nsec: s.u64() }),
      (p) => {
        services.bdevs.require(p.name);
        if (!p.enable) {
          services.bdevs.setHistogram(p.name, null);
          return true;
        }
        let types = 1 | 2 | 4;
        if (p.opc !== undefined) {
          const bit = HISTOGRAM_TYPES[p.opc];
          if (bit === undefined) throw new VhostdError(ErrorCode.Invalid, `params.opc: ${p.opc}: vhostd records latencies of ${Object.keys(HISTOGRAM_TYPES).join(', ')}`);
          types = bit;
        }
        const granularity = p.granularity ?? DEFAULT_GRANULARITY;
        if (granularity < 1 || granularity > 30) throw new VhostdError(ErrorCode.Invalid, `params.granularity: ${granularity} must be 1..30`);
        // Ticks are nanoseconds (tsc_rate 1e9): min_nsec/max_nsec are datapoints as SPDK converts them.
        const minVal = p.min_nsec ?? 0;
        const maxVal = p.max_nsec ?? 2 ** 64;
        if (minVal >= maxVal) throw new VhostdError(ErrorCode.Invalid, 'params.min_nsec must be below params.max_nsec');
        const minRange = histogramRange(granularity, minVal);
        const maxRange = histogramRange(granularity, maxVal - 1);
        const buckets = (maxRange - minRange + 1) * 2 ** granularity;
        if (buckets > HIST_MAX_BUCKETS) {
          throw new VhostdError(ErrorCode.Invalid, `histogram of ${buckets} buckets: vhostd keeps at most ${HIST_MAX_BUCKETS} (lower granularity or narrow min_nsec..max_nsec)`);
        }
        services.bdevs.setHistogram(p.name, { granularity, minRange, maxRange, types });
        return true;
      },
    ),

    defineMethod<{ name: string }>('bdev_get_histogram', paramsSchema({ name: s.string() }), (p) => {
      const b = services.bdevs.require(p.name);
      const h = b.iostat.histogram;
      const counts = b.iostat.histogramCounts();
      // SPDK: -EFAULT when no histogram is enabled, reported as an internal error with strerror's text.
      if (!h || !counts) throw new RpcError(RpcCode.InternalError, 'Bad address');
      const data = Buffer.alloc(counts.length * 8);
      counts.forEach((n, i) => data.writeBigUInt64LE(BigInt(n), i * 8));
      return {
        histogram: data.toString('base64'),
        granularity: h.granularity,
        min_range: h.minRange,
        max_range: h.maxRange,
        tsc_rate: 1_000_000_000,
      };
    }),

    defineMethod<SetQosLimitParams>(
      'bdev_set_qos_limit',
      paramsSchema(
        { name: s.string() },
        { rw_ios_per_sec: s.u64(), rw_mbytes_per_sec: s.u64(), r_mbytes_per_sec: s.u64(), w_mbytes_per_sec: s.u64() },
      ),
      (p) => {
        const { name, ...limits } = p;
        // As SPDK: the bdev must exist (-19) before "no limits" (-22) is looked at.
        services.bdevs.require(name);
        if (Object.keys(limits).length === 0) throw new VhostdError(ErrorCode.Invalid, 'No rate limits specified');
        services.bdevs.setQosLimit(name, limits);
        return true;
      },
    ),

    defineMethod<SetCoalescingParams>(
      'vhost_controller_set_coalescing',
      paramsSchema({ ctrlr: s.string(), delay_base_us: s.u32(), iops_threshold: s.u32() }),
      (p) => {
        services.vhost.setCoalescing(p.ctrlr, p.delay_base_us, p.iops_threshold);
        return true;
      },
    ),

    defineMethod<Record<string, never>>('thread_get_stats', NO_PARAMS, () => services.system.threadStats()),
  ];
}
