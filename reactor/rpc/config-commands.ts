/**
 * vhostd-rpc's client-side commands, done the way SPDK's rpc.py does them
 * (python/spdk/rpc/config.py), so either client gives the same result
 * against either target:
 *
 * - save_config: framework_get_subsystems, then framework_get_config for each
 *   subsystem (or only those named with -s, plus what they depend on), printed
 *   as `{"subsystems": [{"subsystem", "config"}...]}`.
 * - load_config: checks that every method of the config is known
 *   (rpc_get_methods), then, round after round, calls every call the current
 *   RPC state allows (rpc_get_methods current) in file order, and
 *   framework_start_init when the target waits for it (--wait-for-rpc).
 *
 * Thread: the CLI process's main thread.
 */

import { ConfigError, parseConfig, type ConfigCall } from '../config';

/** What these commands need of a JSON-RPC client (RpcClient has it). */
export interface CallingClient {
  call(method: string, params?: Record<string, unknown>, options?: { timeoutMs?: number }): Promise<unknown>;
}

export interface SaveConfigOptions {
  /** JSON indentation; < 0 = compact; default 2 (rpc.py's). */
  indent?: number;
  /** Comma-separated subsystems to save (with their dependencies); default all. */
  subsystems?: string;
  withBatches?: boolean;
  timeoutMs?: number;
}

interface SubsystemEntry {
  subsystem: string;
  depends_on: string[];
}

function isSubsystemList(v: unknown): v is SubsystemEntry[] {
  return (
    Array.isArray(v) &&
    v.every(
      (e) =>
        typeof e === 'object' &&
        e !== null &&
        typeof (e as SubsystemEntry).subsystem === 'string' &&
        Array.isArray((e as SubsystemEntry).depends_on) &&
        (e as SubsystemEntry).depends_on.every((d) => typeof d === 'string'),
    )
  );
}

/** save_config: the target's configuration as SPDK's JSON config text (ends with a newline). */
export async function saveConfig(client: CallingClient, opts: SaveConfigOptions = {}): Promise<string> {
  const callOpts = { timeoutMs: opts.timeoutMs };
  const list = await client.call('framework_get_subsystems', undefined, callOpts);
  if (!isSubsystemList(list)) throw new Error('framework_get_subsystems returned something that is not a subsystem list');
  // Every subsystem with the closure of its dependencies (listed in init order, so earlier ones are complete).
  const deps = new Map<string, Set<string>>();
  for (const e of list) {
    const set = new Set([e.subsystem]);
    for (const d of e.depends_on) for (const x of deps.get(d) ?? [d]) set.add(x);
    deps.set(e.subsystem, set);
  }
  let wanted: Set<string>;
  if (opts.subsystems === undefined) {
    wanted = new Set(deps.keys());
  } else {
    wanted = new Set();
    for (const name of opts.subsystems.split(',')) {
      const d = deps.get(name);
      if (!d) throw new Error(`unknown subsystem ${JSON.stringify(name)} (the target has ${[...deps.keys()].join(', ')})`);
      for (const x of d) wanted.add(x);
    }
  }
  const subsystems: { subsystem: string; config: unknown }[] = [];
  for (const e of list) {
    if (!wanted.has(e.subsystem)) continue;
    const config = await client.call('framework_get_config', { name: e.subsystem, with_batches: opts.withBatches ?? false }, callOpts);
    subsystems.push({ subsystem: e.subsystem, config });
  }
  const indent = opts.indent ?? 2;
  return JSON.stringify({ subsystems }, null, indent < 0 ? undefined : indent) + '\n';
}

export interface LoadConfigOptions {
  includeAliases?: boolean;
  timeoutMs?: number;
}

/** What load_config did: calls made, and calls skipped because no RPC state allowed them any more. */
export interface LoadConfigResult {
  called: number;
  skipped: ConfigCall[];
}

function methodList(v: unknown, what: string): Set<string> {
  if (!Array.isArray(v) || !v.every((m) => typeof m === 'string')) throw new Error(`${what} did not return a list of method names`);
  return new Set(v as string[]);
}

/** load_config: replay `text` (a JSON config) against the target. Rejects with the first failing call's error. */
export async function loadConfig(client: CallingClient, text: string, source: string, opts: LoadConfigOptions = {}): Promise<LoadConfigResult> {
  const callOpts = { timeoutMs: opts.timeoutMs };
  const aliases = { include_aliases: opts.includeAliases ?? false };
  const config = parseConfig(text, source);
  const pending = config.subsystems.map((s) => [...(s.config ?? [])]).filter((calls) => calls.length > 0);
  let called = 0;

  const known = methodList(await client.call('rpc_get_methods', aliases, callOpts), 'rpc_get_methods');
  if (pending.length === 0) {
    // rpc.py looks at every method here and so fails on a running target; only a waiting target is started.
    const current = methodList(await client.call('rpc_get_methods', { current: true, ...aliases }, callOpts), 'rpc_get_methods');
    if (current.has('framework_start_init')) {
      await client.call('framework_start_init', undefined, callOpts);
      called++;
    }
    return { called, skipped: [] };
  }
  for (const calls of pending) {
    for (const c of calls) {
      if (!known.has(c.method)) throw new ConfigError(`${source}: unknown method ${JSON.stringify(c.method)} in the config`);
    }
  }

  while (pending.some((calls) => calls.length > 0)) {
    const allowed = methodList(await client.call('rpc_get_methods', { current: true, ...aliases }, callOpts), 'rpc_get_methods');
    let progress = false;
    for (const calls of pending) {
      for (let i = 0; i < calls.length; ) {
        const c = calls[i];
        if (!allowed.has(c.method)) {
          i++;
          continue;
        }
        await client.call(c.method, c.params, callOpts);
        called++;
        calls.splice(i, 1);
        progress = true;
      }
    }
    if (allowed.has('framework_start_init')) {
      await client.call('framework_start_init', undefined, callOpts);
      called++;
      progress = true;
    }
    if (!progress) break;
  }
  return { called, skipped: pending.flat() };
}
