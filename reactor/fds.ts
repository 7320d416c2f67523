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

/** What inspectMappedFd finds. */
export interface MappedFdInfo {
  /** The file's identity, device:inode. */
  id: string;
  /** Why a mapping of the window would run past the end of the file, or null. */
  beyond: string | null;
}

/**
 * The fd behind a guest memory mapping of [offset, offset + size) (a
 * vhost-user region, a vfio-user DMA window): its identity, and whether the
 * window lies inside the file. Mapping past the end of a memfd or file and
 * touching it would SIGBUS the engine; only regular files (memfd, shm,
 * hugetlbfs) have a size to check. Throws when the fd cannot be inspected.
 */
export function inspectMappedFd(fd: number, offset: number, size: number): MappedFdInfo {
  const st = fs.fstatSync(fd);
  const beyond = st.isFile() && offset + size > st.size ? `needs bytes up to ${offset + size} of its fd, which has ${st.size}` : null;
  return { id: `${st.dev}:${st.ino}`, beyond };
}
