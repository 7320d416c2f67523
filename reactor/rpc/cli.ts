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

import { RpcError } from '../target';
import { RpcClient } from './client';
import { formatResult, parseCommandLine, UsageError, type Command } from './commands';

async function run(cmd: Extract<Command, { kind: 'call' }>): Promise<number> {
  let client: RpcClient;
  try {
    client = await RpcClient.connect(cmd.socket);
  } catch (err) {
    process.stderr.write(
      `Error while connecting to ${cmd.socket}\nIs vhostd running?\nError details: ${err instanceof Error ? err.message : String(err)}\n`,
    );
    return 1;
  }
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
