/**
 * Methods of SPDK's bdev subsystem (lib/bdev/bdev_rpc.c and the modules'
 * own): every bdev module's methods (its descriptor's, see
 * reactor/bdev/modules.ts: bdev_malloc_create, bdev_null_resize, ...), then
 * bdev_get_bdevs. Parameter names and results are SPDK's.
 * Thread: main (reactor).
 */

import { ErrorCode, VhostdError } from '../../errors';
import type { BdevInfo } from '../../info';
import type { BdevRegistry } from '../../bdev/registry';
import { BDEV_MODULES } from '../../bdev/modules';
import { defineMethod, paramsSchema, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

interface GetBdevsParams {
  name?: string;
  /** ms to wait for the named bdev to appear */
  timeout?: number;
}

/** How often bdev_get_bdevs looks again for a bdev it waits for. */
const BDEV_WAIT_POLL_MS = 10;

/**
 * bdev_get_bdevs with a name and a timeout: SPDK waits up to `timeout` ms for
 * the bdev to be registered (spdk_bdev_open_async) and then fails with -19.
 */
async function getBdevsWaiting(bdevs: BdevRegistry, name: string, timeoutMs: number): Promise<BdevInfo[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return bdevs.infos(name);
    } catch (err) {
      const remaining = deadline - Date.now();
      if (!(err instanceof VhostdError) || err.code !== ErrorCode.NoBdev || remaining <= 0) throw err;
      await new Promise((resolve) => setTimeout(resolve, Math.min(BDEV_WAIT_POLL_MS, remaining)));
    }
  }
}

export function bdevMethods(ctx: MethodContext): RpcMethod[] {
  const { services } = ctx;
  return [
    ...BDEV_MODULES.flatMap((m) => m.methods(services.bdevs)),

    defineMethod<GetBdevsParams>('bdev_get_bdevs', paramsSchema({}, { name: s.string(), timeout: s.u64() }), (p) => {
      // As in SPDK, the timeout only applies when a name is given.
      if (p.name !== undefined && p.timeout !== undefined && p.timeout > 0) {
        return getBdevsWaiting(services.bdevs, p.name, p.timeout);
      }
      return services.bdevs.infos(p.name);
    }),
  ];
}
