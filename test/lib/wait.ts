/**
 * Waiting helpers for tests: poll a condition, or wait until a Unix socket
 * accepts connections. Main-thread test helper.
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Polls `cond` every `intervalMs` until it returns true; rejects after `timeoutMs`. */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
  intervalMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Resolves true when a connection to the Unix socket at `path` succeeds (then closes it). */
export function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(path);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => {
      sock.destroy();
      resolve(false);
    });
  });
}
