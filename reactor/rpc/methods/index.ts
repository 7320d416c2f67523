/**
 * Every JSON-RPC method vhostd serves, grouped by SPDK subsystem (one file
 * each), and `registerMethods` which puts them on a server. To add a
 * subsystem, write methods/<subsystem>.ts exporting `(ctx) => RpcMethod[]`
 * and list it in SUBSYSTEMS. Thread: main (reactor).
 */

import { Framework, type FrameworkControl } from '../../framework';
import type { RpcMethod } from '../schema';
import type { RpcServer } from '../server';
import { appMethods } from './app';
import { bdevMethods } from './bdev';
import type { MethodContext, Services } from './context';
import { vhostMethods } from './vhost';
import { frameworkMethods } from './framework';
import { logMethods } from './log';
import { optionMethods } from './options';
import { threadMethods } from './threads';
import { tuningMethods } from './tuning';
import { schedulerMethods } from './scheduler';
import { nvmfMethods } from './nvmf';

const SUBSYSTEMS: ((ctx: MethodContext) => RpcMethod[])[] = [appMethods, frameworkMethods, logMethods, bdevMethods, vhostMethods, tuningMethods, schedulerMethods, threadMethods, optionMethods, nvmfMethods];

/**
 * Register every method on `server`, calling into the target's `services`. `framework`
 * defaults to one already initialized (RUNTIME) whose kill signals this process.
 */
export function registerMethods(server: RpcServer, services: Services, framework: FrameworkControl = new Framework(server)): void {
  const ctx: MethodContext = { services, framework, methodNames: (current) => server.methodNames(current) };
  for (const subsystem of SUBSYSTEMS) {
    for (const m of subsystem(ctx)) server.register(m);
  }
}

/** Names of the methods registerMethods adds, in registration order (what rpc_get_methods lists). */
export const METHOD_NAMES: readonly string[] = (() => {
  const ctx: MethodContext = {
    // A service may be handed to a method factory (a bdev module's), but not used while methods are defined.
    services: new Proxy({} as Services, {
      get(_target, service) {
        return new Proxy(
          {},
          {
            get() {
              throw new Error(`METHOD_NAMES: methods must not use services.${String(service)} while being defined`);
            },
          },
        );
      },
    }),
    framework: new Proxy({} as FrameworkControl, {
      get() {
        throw new Error('METHOD_NAMES: methods must not touch the framework while being defined');
      },
    }),
    methodNames: () => [],
  };
  return SUBSYSTEMS.flatMap((subsystem) => subsystem(ctx).map((m) => m.name));
})();
