/**
 * SPDK's scheduler methods (lib/event/app_rpc.c): framework_set_scheduler
 * (static | dynamic, period µs, dynamic's load_limit / core_limit /
 * core_busy) and framework_get_scheduler, served by reactor/scheduler.ts.
 * Thread: main (reactor).
 */
import { ErrorCode, VhostdError } from '../../errors';
import type { SchedulerParams } from '../../scheduler';
import { defineMethod, NO_PARAMS, paramsSchema, RpcState, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

export function schedulerMethods(ctx: MethodContext): RpcMethod[] {
  const scheduler = () => {
    const sch = ctx.services.scheduler;
    if (sch === undefined) throw new VhostdError(ErrorCode.Invalid, 'this target has no scheduler');
    return sch;
  };
  return [
    defineMethod<SchedulerParams>(
      'framework_set_scheduler',
      paramsSchema(
        { name: s.string() },
        { period: s.u32(), load_limit: s.u32(), core_limit: s.u32(), core_busy: s.u32(), mappings: s.string() },
      ),
      (p) => {
        scheduler().set(p);
        return true;
      },
      { states: RpcState.Startup | RpcState.Runtime },
    ),
    defineMethod<Record<string, never>>('framework_get_scheduler', NO_PARAMS, () => scheduler().get(), {
      states: RpcState.Startup | RpcState.Runtime,
    }),
  ];
}
