/**
 * Methods of SPDK's application framework and RPC subsystem: spdk_get_version,
 * rpc_get_methods, framework_get_reactors (lib/rpc/rpc.c, lib/event/app_rpc.c).
 * Thread: main (reactor).
 */

import { RpcCode, RpcError } from '../errors';
import { defineMethod, NO_PARAMS, paramsSchema, RpcState, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

/** spdk_get_version's result (SPDK shape). */
export interface VersionInfo {
  version: string;
  fields: { major: number; minor: number; patch: number; suffix: string };
}

/**
 * Split a version string such as "vhostd v0.1.0" or "vhostd v1.2.3-pre" into
 * SPDK's fields (suffix keeps its leading "-", as SPDK_VERSION_SUFFIX does).
 */
export function versionInfo(version: string): VersionInfo {
  const m = /(?:^|[\s])v?(\d+)\.(\d+)(?:\.(\d+))?(\S*)\s*$/.exec(version);
  if (!m) throw new RpcError(RpcCode.InternalError, `version string ${JSON.stringify(version)} is not "name vMAJOR.MINOR[.PATCH][SUFFIX]"`);
  return {
    version,
    fields: { major: Number(m[1]), minor: Number(m[2]), patch: m[3] === undefined ? 0 : Number(m[3]), suffix: m[4] },
  };
}

interface RpcGetMethodsParams {
  current?: boolean;
  include_aliases?: boolean;
}

export function appMethods(ctx: MethodContext): RpcMethod[] {
  return [
    defineMethod<Record<string, never>>('spdk_get_version', NO_PARAMS, () => versionInfo(ctx.services.version), {
      states: RpcState.Startup | RpcState.Runtime,
    }),

    // `current`: only the methods callable in the RPC state now (STARTUP with
    // --wait-for-rpc until framework_start_init, then RUNTIME). vhostd has no
    // deprecated aliases, so `include_aliases` does not change the list.
    defineMethod<RpcGetMethodsParams>(
      'rpc_get_methods',
      paramsSchema({}, { current: s.boolean(), include_aliases: s.boolean() }),
      (p) => ctx.methodNames(p.current === true),
      { states: RpcState.Startup | RpcState.Runtime },
    ),

    defineMethod<Record<string, never>>('framework_get_reactors', NO_PARAMS, () => ctx.services.system.reactors()),
  ];
}
