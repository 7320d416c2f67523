/**
 * What a subsystem's RPC methods get to work with: the target they control
 * and the list of every method served (for rpc_get_methods). Each file in
 * this directory exports `(ctx: MethodContext) => RpcMethod[]` for one SPDK
 * subsystem. Thread: main (reactor).
 */

import type { FrameworkControl } from '../../framework';
import type { Target } from '../../target';

export interface MethodContext {
  readonly target: Target;
  /** The application framework: init state, signals (framework_*, spdk_kill_instance). */
  readonly framework: FrameworkControl;
  /** Names of every method the server serves, in registration order; `current`: only those callable now. */
  methodNames(current?: boolean): string[];
}
