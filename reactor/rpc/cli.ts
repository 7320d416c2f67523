/**
 * vhostd-rpc: send one JSON-RPC call to vhostd (or any SPDK application) the
 * way SPDK's scripts/rpc.py does, and print the result as rpc.py prints it.
 * Runs on load: bin/vhostd-rpc.js requires this module. The argv parsing
 * lives in commands.ts (pure, tested directly).
 *
 * Exit status: 0 success, 1 the call failed (error reply, no connection,
 * timeout), 2 bad command line.
 *
 * Thread: the CLI process's main thread.
 */

import { RpcError } from './errors';
import { RpcClient } from './client';
import * as fs from 'node:fs';
import { formatResult, parseCommandLine, UsageError, type Command } from './commands';
import { loadConfig, saveConfig } from './config-commands';

/** Connect to the target's socket; on failure say so as rpc.py does and return null. */
async function connectOrSay(socket: string): Promise<RpcClient | null> {
  try {
    return await RpcClient.connect(socket);
  } catch (err) {
    process.stderr.write(
      `Error while connecting to ${socket}\nIs vhostd running?\nError details: ${err instanceof Error ? err.message : String(err)}\n`,
    );
    return null;
  }
}

async function run(cmd: Extract<Command, { kind: 'call' }>): Promise<number> {
  const client = await connectOrSay(cmd.socket);
  if (!client) return 1;
  try {
    const result = await client.call(cmd.method, cmd.params, { timeoutMs: cmd.timeoutMs });
    const text = formatResult(result, cmd.output);
    if (text !== null) process.stdout.write(text + '\n');
    return 0;
  } catch (err) {
    if (err instanceof RpcError) {
      // rpc.py's report: the request, then the error object with its code.
      const request = { ...(cmd.params ?? {}), method: cmd.method };
      process.stderr.write(
        [
          'request:',
          JSON.stringify(request, null, 2),
          'Got JSON-RPC error response',
          'response:',
          JSON.stringify({ code: err.code, message: err.message }, null, 2),
          '',
        ].join('\n'),
      );
    } else {
      process.stderr.write(`${cmd.method}: ${err instanceof Error ? err.message : String(err)}\n`);
    }
    return 1;
  } finally {
    client.close();
  }
}

/** save_config / load_config: several calls on one connection (config-commands.ts). */
async function runClientCommand(cmd: Extract<Command, { kind: 'client' }>): Promise<number> {
  const v = cmd.values;
  let input = '';
  let source = '<stdin>';
  if (cmd.command === 'load_config') {
    source = typeof v.json_conf === 'string' ? v.json_conf : '<stdin>';
    try {
      input = fs.readFileSync(typeof v.json_conf === 'string' ? v.json_conf : 0, 'utf8');
    } catch (err) {
      process.stderr.write(`load_config: cannot read ${source}: ${err instanceof Error ? err.message : String(err)}\n`);
      return 1;
    }
  }
  const client = await connectOrSay(cmd.socket);
  if (!client) return 1;
  try {
    if (cmd.command === 'save_config') {
      process.stdout.write(
        await saveConfig(client, {
          indent: typeof v.indent === 'number' ? v.indent : undefined,
          subsystems: typeof v.subsystems === 'string' ? v.subsystems : undefined,
          withBatches: v.with_batches === true,
          timeoutMs: cmd.timeoutMs,
        }),
      );
    } else {
      const r = await loadConfig(client, input, source, { includeAliases: v.include_aliases === true, timeoutMs: cmd.timeoutMs });
      if (r.skipped.length > 0) {
        process.stdout.write('Some configs were skipped because the RPC state that can call them passed over.\n');
      }
    }
    return 0;
  } catch (err) {
    const detail = err instanceof RpcError ? JSON.stringify({ code: err.code, message: err.message }, null, 2) : err instanceof Error ? err.message : String(err);
    process.stderr.write(`${cmd.command} failed:\n${detail}\n`);
    return 1;
  } finally {
    client.close();
  }
}

export async function main(argv: string[]): Promise<number> {
  let cmd: Command;
  try {
    cmd = parseCommandLine(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.usage}\nvhostd-rpc: error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (cmd.kind === 'help') {
    process.stdout.write(cmd.text);
    return 0;
  }
  if (cmd.kind === 'client') return runClientCommand(cmd);
  return run(cmd);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vhostd-rpc: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
