/**
 * Methods of SPDK's log library (lib/event/log_rpc.c): log_set_flag,
 * log_clear_flag, log_get_flags, log_set_level, log_get_level,
 * log_set_print_level, log_get_print_level — all callable in STARTUP and
 * RUNTIME, as in SPDK. Levels travel as SPDK's names (ERROR, WARNING,
 * NOTICE, INFO, DEBUG; case-insensitive on input). The flags are the
 * components that log (reactor/log.ts); "all" sets or clears every one.
 * Engine workers follow the print level and the "engine" flag at once.
 * Thread: main (reactor).
 */

import {
  allLogFlags,
  clearLogFlag,
  getLogLevel,
  getPrintLevel,
  parseSpdkLevel,
  setLogFlag,
  setLogLevel,
  setPrintLevel,
  SPDK_LEVEL_NAMES,
  type LogLevel,
} from '../../log';
import { RpcCode, RpcError } from '../errors';
import { defineMethod, NO_PARAMS, paramsSchema, RpcState, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

const BOTH = { states: RpcState.Startup | RpcState.Runtime };

function level(name: string): LogLevel {
  const l = parseSpdkLevel(name);
  if (l === undefined) {
    throw new RpcError(RpcCode.InvalidParams, `params.level: must be one of ${Object.values(SPDK_LEVEL_NAMES).join(', ')}`);
  }
  return l;
}

function flagError(flag: string): RpcError {
  return new RpcError(RpcCode.InvalidParams, `invalid log flag ${JSON.stringify(flag)} (log_get_flags lists them; "all" means every one)`);
}

export function logMethods(_ctx: MethodContext): RpcMethod[] {
  return [
    defineMethod<{ flag: string }>(
      'log_set_flag',
      paramsSchema({ flag: s.string() }),
      (p) => {
        if (!setLogFlag(p.flag)) throw flagError(p.flag);
        return true;
      },
      BOTH,
    ),
    defineMethod<{ flag: string }>(
      'log_clear_flag',
      paramsSchema({ flag: s.string() }),
      (p) => {
        if (!clearLogFlag(p.flag)) throw flagError(p.flag);
        return true;
      },
      BOTH,
    ),
    defineMethod<Record<string, never>>('log_get_flags', NO_PARAMS, () => allLogFlags(), BOTH),

    defineMethod<{ level: string }>(
      'log_set_level',
      paramsSchema({ level: s.string() }),
      (p) => {
        setLogLevel(level(p.level));
        return true;
      },
      BOTH,
    ),
    defineMethod<Record<string, never>>('log_get_level', NO_PARAMS, () => SPDK_LEVEL_NAMES[getLogLevel()], BOTH),

    defineMethod<{ level: string }>(
      'log_set_print_level',
      paramsSchema({ level: s.string() }),
      (p) => {
        setPrintLevel(level(p.level));
        return true;
      },
      BOTH,
    ),
    defineMethod<Record<string, never>>('log_get_print_level', NO_PARAMS, () => SPDK_LEVEL_NAMES[getPrintLevel()], BOTH),
  ];
}
