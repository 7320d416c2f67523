/**
 * What a subsystem's RPC methods get to work with: the target they control
 * and the list of every method served (for rpc_get_methods). Each file in
 * this directory exports `(ctx: MethodContext) => RpcMethod[]` for one SPDK
 * subsystem. Thread: main (reactor).
 */

import type { Target } from '../../target';

export interface MethodContext {
  readonly target: Target;
  /** Names of every method the server serves, in registration order. */
  methodNames(): string[];
}
