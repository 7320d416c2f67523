/**
 * SPDK's own JSON-RPC client (scripts/rpc.py and python/spdk), kept unchanged
 * as a peer beside the repository: ../shared/peers/spdk-rpc, or $SPDK_RPC_DIR.
 * Tests run it with python3 to prove that SPDK users' client drives vhostd.
 * It is required on every machine, CI included: when it is missing,
 * spdkRpcDir() throws, so the test fails (it never skips).
 * Main-thread test helper.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './repo';

/** The directory holding scripts/rpc.py and python/spdk; throws with a clear message when absent. */
export function spdkRpcDir(): string {
  const env = process.env.SPDK_RPC_DIR;
  const dir = env ? path.resolve(env) : path.resolve(repoRoot(), '../shared/peers/spdk-rpc');
  const script = path.join(dir, 'scripts', 'rpc.py');
  if (!fs.existsSync(script)) {
    throw new Error(
      `SPDK's rpc.py not found at ${script} (${env ? 'from SPDK_RPC_DIR' : "the peer directory ../shared/peers/spdk-rpc beside the repository"}): ` +
        'it is required to prove rpc.py compatibility; put shared/ beside the clone or set SPDK_RPC_DIR',
    );
  }
  return dir;
}

export interface RpcPyResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `python3 <dir>/scripts/rpc.py ARGS` with `stdin` (empty by default: rpc.py reads a script from a non-tty stdin). */
export function runRpcPy(dir: string, args: string[], stdin?: string, timeoutMs = 120_000): Promise<RpcPyResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', [path.join(dir, 'scripts', 'rpc.py'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`python3 rpc.py: ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => {}); // rpc.py may exit before reading stdin
    child.stdin.end(stdin ?? '');
  });
}
