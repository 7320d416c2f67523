/**
 * What SPDK's spdk_top asks besides thread_get_stats and
 * framework_get_reactors: thread_get_pollers, thread_get_io_channels
 * (lib/event/app_rpc.c); the scheduler methods are in scheduler.ts.
 * Result shapes are SPDK's; what vhostd's threads and pollers are is
 * described in SystemService. Thread: main (reactor).
 */
import { defineMethod, NO_PARAMS, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

export function threadMethods(ctx: MethodContext): RpcMethod[] {
  const { services } = ctx;
  return [
    defineMethod<Record<string, never>>('thread_get_pollers', NO_PARAMS, () => services.system.pollers()),
    defineMethod<Record<string, never>>('thread_get_io_channels', NO_PARAMS, () => services.system.ioChannels()),
  ];
}
