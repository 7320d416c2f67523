/**
 * Starts the real vhostd (`node bin/vhostd.js`) for a test, in its own
 * temporary socket directory, and waits until its JSON-RPC socket accepts
 * connections. Main-thread test helper.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Daemon, type DaemonExit } from './daemon';
import { repoRoot } from './repo';
import { rpcCall } from './rpc';
import { waitFor } from './wait';

export interface VhostdHandle {
  daemon: Daemon;
  /** The -S directory; controller sockets appear as <dir>/<ctrlr>. */
  dir: string;
  rpcSocket: string;
  rpc(method: string, params?: unknown): Promise<unknown>;
  socketOf(ctrlr: string): string;
  /** Graceful stop (SIGTERM); removes the directory. */
  stop(): Promise<DaemonExit & { killed: boolean }>;
}

/**
 * Waits until the first controller's first session (of `ctrlr`, or of the only
 * controller) holds requests in flight, or `done()` says the load is over;
 * returns the count last seen. The moment for the e2e tests to disturb vhostd.
 */
export async function waitRequestsHeld(rpc: (method: string, params?: unknown) => Promise<unknown>, done: () => boolean, ctrlr?: string): Promise<number> {
  let held = 0;
  await waitFor(async () => {
    const c = (await rpc('vhost_get_controllers', ctrlr === undefined ? undefined : { name: ctrlr })) as { sessions: { inflight_task_cnt: number }[] }[];
    held = c[0]?.sessions[0]?.inflight_task_cnt ?? 0;
    return held > 0 || done();
  }, 60_000, 'requests in flight', 20);
  return held;
}

/**
 * vhost_delete_controller once the controller is free: a front-end's close
 * reaches vhostd a moment after the test's close(), and until then the delete
 * is refused with -16 (EBUSY, as SPDK does). Retries only that refusal.
 */
export async function deleteControllerOnceFree(rpc: (method: string, params?: unknown) => Promise<unknown>, ctrlr: string, timeoutMs = 5000): Promise<unknown> {
  let result: unknown;
  await waitFor(async () => {
    try {
      result = await rpc('vhost_delete_controller', { ctrlr });
      return true;
    } catch (err) {
      if ((err as { code?: number }).code !== -16) throw err;
      return false;
    }
  }, timeoutMs, `controller ${ctrlr} free to delete`, 20);
  return result;
}

export interface VhostdOptions {
  cpumask?: string;
  extraArgs?: string[];
  startTimeoutMs?: number;
  /** The process's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

export async function startVhostd(opts: VhostdOptions = {}): Promise<VhostdHandle> {
  const root = repoRoot();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-e2e-'));
  const rpcSocket = path.join(dir, 'rpc.sock');
  const daemon = new Daemon(
    'vhostd',
    process.execPath,
    // Tests run several targets on the same cores (and beside each other): no per-core lock files.
    [path.join(root, 'bin', 'vhostd.js'), '-m', opts.cpumask ?? '0x2', '-S', dir, '-r', rpcSocket, '--disable-cpumask-locks', ...(opts.extraArgs ?? [])],
    { cwd: root, env: opts.env },
  );
  const stop = async (): Promise<DaemonExit & { killed: boolean }> => {
    const exit = await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    return exit;
  };
  try {
    await daemon.waitSocket(rpcSocket, { timeoutMs: opts.startTimeoutMs ?? 30_000 });
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    daemon,
    dir,
    rpcSocket,
    rpc: (method, params) => rpcCall(rpcSocket, method, params),
    socketOf: (ctrlr) => path.join(dir, ctrlr),
    stop,
  };
}
