/**
 * What SPDK's spdk_top asks besides thread_get_stats and
 * framework_get_reactors: thread_get_pollers, thread_get_io_channels,
 * framework_get_scheduler, framework_set_scheduler (lib/event/app_rpc.c).
 * Result shapes are SPDK's; what vhostd's threads and pollers are is
 * described in SystemService. Thread: main (reactor).
 */
import { defineMethod, NO_PARAMS, paramsSchema, RpcState, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

interface SetSchedulerParams {
  name: string;
  period?: number;
  /** dynamic's and gscheduler's options (rpc.py sends what it was given); refused with the scheduler. */
  load_limit?: number;
  core_limit?: number;
  core_busy?: number;
  mappings?: string;
}

export function threadMethods(ctx: MethodContext): RpcMethod[] {
  const { services } = ctx;
  return [
    defineMethod<Record<string, never>>('thread_get_pollers', NO_PARAMS, () => services.system.pollers()),
    defineMethod<Record<string, never>>('thread_get_io_channels', NO_PARAMS, () => services.system.ioChannels()),
    defineMethod<Record<string, never>>('framework_get_scheduler', NO_PARAMS, () => services.system.scheduler.info()),
    defineMethod<SetSchedulerParams>(
      'framework_set_scheduler',
      paramsSchema({ name: s.string() }, { period: s.u64(), load_limit: s.u8(), core_limit: s.u8(), core_busy: s.u8(), mappings: s.string() }),
      (p) => {
        services.system.scheduler.set(p.name, p.period);
        return true;
      },
      { states: RpcState.Startup | RpcState.Runtime },
    ),
  ];
}
