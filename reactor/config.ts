/**
 * SPDK-format JSON configuration: `{"subsystems":[{"subsystem":"bdev","config":[{"method":..., "params":...}]}, ...]}`.
 * Loading replays every call through the same handlers the RPC server uses,
 * subsystem by subsystem in dependency order (bdev before vhost).
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';
import { SUBSYSTEM_ORDER } from './subsystems';

export interface ConfigCall {
  method: string;
  params?: Record<string, unknown>;
}

export interface SubsystemConfig {
  subsystem: string;
  config: ConfigCall[] | null;
}

export interface ConfigFile {
  subsystems: SubsystemConfig[];
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Parse and check the shape of a config document (not the params: the methods' schemas do that). */
export function parseConfig(text: string, source: string): ConfigFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${source}: not JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as ConfigFile).subsystems)) {
    throw new ConfigError(`${source}: expected an object with a "subsystems" array`);
  }
  const subsystems = (doc as ConfigFile).subsystems;
  subsystems.forEach((s, i) => {
    if (typeof s !== 'object' || s === null || typeof s.subsystem !== 'string') {
      throw new ConfigError(`${source}: subsystems[${i}] needs a "subsystem" name`);
    }
    if (s.config !== null && s.config !== undefined && !Array.isArray(s.config)) {
      throw new ConfigError(`${source}: subsystems[${i}].config must be an array or null`);
    }
    // SPDK's save_config --with-batches writes a batch (an array of calls) as one element: flatten it.
    const flat: ConfigCall[] = [];
    ((s.config ?? []) as unknown[]).forEach((elem, j) => {
      const batch = Array.isArray(elem) ? (elem as unknown[]) : [elem];
      batch.forEach((raw, k) => {
        const where = `${source}: subsystems[${i}].config[${j}]${Array.isArray(elem) ? `[${k}]` : ''}`;
        const c = raw as ConfigCall;
        if (typeof c !== 'object' || c === null || Array.isArray(c) || typeof c.method !== 'string') {
          throw new ConfigError(`${where} needs a "method"`);
        }
        if (c.params !== undefined && (typeof c.params !== 'object' || c.params === null || Array.isArray(c.params))) {
          throw new ConfigError(`${where}.params must be an object`);
        }
        flat.push(c);
      });
    });
    if (s.config) s.config = flat;
  });
  return { subsystems };
}

export function readConfigFile(file: string): ConfigFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${file}: ${(err as Error).message}`);
  }
  return parseConfig(text, file);
}

/** The calls of a config in replay order: known subsystems first in `order` (dependencies first), the rest as written. */
export function orderedCalls(config: ConfigFile, order: readonly string[] = SUBSYSTEM_ORDER): { subsystem: string; call: ConfigCall }[] {
  const rank = (name: string): number => {
    const i = order.indexOf(name);
    return i < 0 ? order.length : i;
  };
  const subsystems = config.subsystems.map((s, i) => ({ s, i })).sort((a, b) => rank(a.s.subsystem) - rank(b.s.subsystem) || a.i - b.i);
  return subsystems.flatMap(({ s }) => (s.config ?? []).map((call) => ({ subsystem: s.subsystem, call })));
}

/**
 * Replay a config through `invoke` (the RPC dispatcher). Stops at the first
 * failing call. `only`: replay just the calls it accepts — SPDK's loader
 * (lib/init/json_config.c) makes two passes, first the calls whose method is
 * allowed in the STARTUP state (before the subsystems initialize), then the
 * others in RUNTIME.
 */
export async function replayConfig(
  config: ConfigFile,
  invoke: (method: string, params: Record<string, unknown> | undefined) => Promise<unknown>,
  only: (call: ConfigCall) => boolean = () => true,
): Promise<void> {
  for (const { subsystem, call } of orderedCalls(config)) {
    if (!only(call)) continue;
    try {
      await invoke(call.method, call.params);
    } catch (err) {
      throw new ConfigError(`config ${subsystem}: ${call.method} failed: ${(err as Error).message}`);
    }
  }
}
