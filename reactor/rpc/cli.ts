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
import { RpcClient, type RpcTrace } from './client';
import * as fs from 'node:fs';
import { formatDryRun, formatResult, parseCommandLine, pyDumps, UsageError, type Command, type GlobalOptions, type Verbosity } from './commands';
import { loadConfig, saveConfig } from './config-commands';
import { exitWhenDone } from '../cli-exit';

/** Python logging's numbers for rpc.py's levels ("Log level set to 20"). */
const LEVEL_NUMBER: Record<Verbosity, number> = { DEBUG: 10, INFO: 20, ERROR: 40 };

/**
 * rpc.py's client logger: "LEVEL: message" lines on stderr at or above the
 * chosen level (ERROR, the default, prints none of these).
 */
class RpcLog {
  private readonly threshold: number;
  constructor(level: Verbosity) {
    this.threshold = LEVEL_NUMBER[level];
  }
  debug(msg: string): void {
    if (this.threshold <= 10) process.stderr.write(`DEBUG: ${msg}\n`);
  }
  info(msg: string): void {
    if (this.threshold <= 20) process.stderr.write(`INFO: ${msg}\n`);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
/** rpc.py's pause between connection attempts (-r). */
const RETRY_INTERVAL_MS = 200;

/**
 * Connect to the target's socket, as rpc.py's JSONRPCClient: up to
 * `connRetries` attempts 200 ms apart whose failures are silent, then a last
 * one; its failure is reported as rpc.py does and null returned. With -v the
 * traffic is logged as rpc.py logs it.
 */
async function connectOrSay(g: GlobalOptions): Promise<RpcClient | null> {
  const log = new RpcLog(g.verbose);
  log.info(`Log level set to ${LEVEL_NUMBER[g.verbose]}`);
  let pending = '';
  const trace: RpcTrace = {
    sent: (request) => {
      log.debug(`call('${String(request.method)}')`);
      log.debug(`append request:\n${pyDumps(request)}\n`);
      log.debug('Flushing buffer');
      log.info(`Requests:\n${JSON.stringify(request, null, 2)}\n`);
      log.debug(`Trying to decode response '${pending}'`);
      if (pending === '') log.debug('Partial response');
    },
    data: (chunk) => {
      pending = (pending + chunk.toString('utf8')).trimStart();
      log.debug(`Trying to decode response '${pending}'`);
    },
    reply: (reply) => {
      pending = '';
      log.info(`response:\n${JSON.stringify(reply, null, 2)}\n`);
    },
  };
  const attempt = (): Promise<RpcClient> => {
    log.debug(`Trying to connect to UNIX socket: ${g.socket}`);
    return RpcClient.connect(g.socket, trace);
  };
  for (let i = 0; i < g.connRetries; i++) {
    try {
      return await attempt();
    } catch {
      await sleep(RETRY_INTERVAL_MS);
    }
  }
  try {
    return await attempt();
  } catch (err) {
    process.stderr.write(
      `Error while connecting to ${g.socket}\nIs vhostd running?\nError details: ${err instanceof Error ? err.message : String(err)}\n`,
    );
    return null;
  }
}

async function run(cmd: Extract<Command, { kind: 'call' }>): Promise<number> {
  if (cmd.dryRun) {
    process.stdout.write(formatDryRun(cmd.method, cmd.params) + '\n');
    return 0;
  }
  const client = await connectOrSay(cmd);
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
  const client = await connectOrSay(cmd);
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

exitWhenDone('vhostd-rpc', main(process.argv.slice(2)), 1);
