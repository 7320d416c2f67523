/**
 * Closing fds this process owns (received on a vhost-user or vfio-user
 * socket, or handed over by a session), shared by both protocol codecs.
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';
import { log } from './log';

/** Close an fd this process owns, exactly once. A failure (EBADF: an ownership bug) is logged, never thrown. */
export function closeFd(fd: number): void {
  if (fd < 0) return;
  try {
    fs.closeSync(fd);
  } catch (err) {
    log('error', 'reactor', 'close failed', { fd, err: err as Error });
  }
}

export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) closeFd(fd);
}
