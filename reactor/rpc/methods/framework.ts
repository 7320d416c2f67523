/**
 * Methods of SPDK's application framework and init library:
 * framework_get_subsystems, framework_get_config (lib/init/subsystem_rpc.c),
 * framework_start_init, framework_wait_init, spdk_kill_instance
 * (lib/event/app.c, app_rpc.c). With these, rpc.py's client-side save_config
 * and load_config work. States as SPDK registers them. Thread: main (reactor).
 */

import { RpcCode, RpcError } from '../errors';
import { defineMethod, NO_PARAMS, paramsSchema, RpcState, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

/**
 * Signals spdk_kill_instance accepts: SPDK's list (by name, or by number as
 * SPDK's spdk_strtol fallback), except SIGUSR1, which in Node.js starts the
 * inspector (a debugger port) instead of anything SPDK's SIGUSR1 does.
 */
const KILL_SIGNALS: { name: NodeJS.Signals; number: number }[] = [
  { name: 'SIGINT', number: 2 },
  { name: 'SIGTERM', number: 15 },
  { name: 'SIGQUIT', number: 3 },
  { name: 'SIGHUP', number: 1 },
  { name: 'SIGKILL', number: 9 },
];

/** sig_name → signal, or undefined (SPDK: -32602 "Invalid parameters"). */
export function killSignal(sigName: string): NodeJS.Signals | undefined {
  const n = /^\s*[+-]?\d+$/.test(sigName) ? Number(sigName) : NaN;
  return KILL_SIGNALS.find((sig) => sig.name === sigName || sig.number === n)?.name;
}

interface GetConfigParams {
  name: string;
  /** rpc.py sends it; vhostd's configs never contain batch arrays, so it changes nothing. */
  with_batches?: boolean;
}

export function frameworkMethods(ctx: MethodContext): RpcMethod[] {
  const { services, framework } = ctx;
  return [
    defineMethod<Record<string, never>>('framework_get_subsystems', NO_PARAMS, () => {
      return services.subsystems.list();
    }),

    defineMethod<GetConfigParams>(
      'framework_get_config',
      paramsSchema({ name: s.string() }, { with_batches: s.boolean() }),
      (p) => {
        return services.subsystems.config(p.name);
      },
    ),

    defineMethod<Record<string, never>>(
      'framework_start_init',
      NO_PARAMS,
      async () => {
        await framework.startInit();
        return true;
      },
      { states: RpcState.Startup },
    ),

    defineMethod<Record<string, never>>(
      'framework_wait_init',
      NO_PARAMS,
      async () => {
        await framework.waitInit();
        return true;
      },
      { states: RpcState.Startup | RpcState.Runtime },
    ),

    defineMethod<{ sig_name: string }>('spdk_kill_instance', paramsSchema({ sig_name: s.string() }), (p) => {
      const sig = killSignal(p.sig_name);
      if (sig === undefined) {
        throw new RpcError(
          RpcCode.InvalidParams,
          `params.sig_name: must be one of ${KILL_SIGNALS.map((k) => k.name).join(', ')} (or its number)`,
        );
      }
      framework.kill(sig);
      return true;
    }),
  ];
}
