/**
 * Statistics, QoS and interrupt coalescing, from several SPDK subsystems:
 * bdev_get_iostat, bdev_set_qos_limit (lib/bdev/bdev_rpc.c),
 * vhost_controller_set_coalescing (lib/vhost/vhost_rpc.c) and
 * thread_get_stats (lib/event/app_rpc.c). Parameter names, results and error
 * codes are SPDK's. Thread: main (reactor).
 */

import { ErrorCode, VhostdError } from '../../errors';
import { defineMethod, NO_PARAMS, paramsSchema, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

interface GetIostatParams {
  /** Older rpc.py (-b NAME). */
  name?: string;
  /** Newer rpc.py (--names a,b). */
  names?: string[];
  per_channel?: boolean;
  reset_mode?: string;
}

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
          reset_mode: { type: 'string', enum: ['all', 'maxmin', 'error', 'none'] },
        },
      ),
      (p) => {
        if (p.reset_mode !== undefined && p.reset_mode !== 'none') {
          throw new VhostdError(ErrorCode.Invalid, `params.reset_mode: resetting statistics (${p.reset_mode}) is not supported (only none)`);
        }
        const names = p.name === undefined && p.names === undefined ? undefined : [...(p.name !== undefined ? [p.name] : []), ...(p.names ?? [])];
        const perChannel = p.per_channel ?? false;
        if (perChannel && names?.length !== 1) throw new VhostdError(ErrorCode.Invalid, "Can't use per_channel without exactly one bdev name");
        return services.bdevs.iostat({ names, perChannel });
      },
    ),

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
