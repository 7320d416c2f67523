/**
 * Socket files at the paths vhostd serves: before binding a controller's,
 * the RPC server's or the metrics endpoint's socket, a file left at the path
 * by a process that died is removed — but only when nobody accepts on it. A
 * live socket (another vhostd, or this one's own controller) is never
 * unlinked: that would cut it off from every later client while it still
 * runs. Thread: main (reactor).
 */
import * as fs from 'node:fs';
import { native } from '../bindings';

function pathError(message: string, code: string): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(message);
  e.code = code;
  return e;
}

/**
 * Removes `path` if it is a Unix socket no server accepts on. Throws EEXIST
 * when the file is not a socket, EADDRINUSE when a server accepts on it.
 */
export function removeStaleSocket(path: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw pathError(`${path} exists and is not a socket; not removing it`, 'EEXIST');
  let fd = -1;
  try {
    // A Unix stream connect completes (or is refused) at once: no peer needs to act.
    fd = native.unixConnect(path);
  } catch {
    // ECONNREFUSED: nobody listens; the file is stale.
  }
  if (fd >= 0) {
    native.close(fd);
    throw pathError(`another server is listening on ${path}`, 'EADDRINUSE');
  }
  fs.unlinkSync(path);
}
