/**
 * An fd this process owns, closed exactly once: close() gives the number
 * back to the kernel the first time and does nothing after, and `fd` reads
 * -1 from then on, so a closed OwnedFd can neither be closed twice nor be
 * handed to anyone (a recycled fd number would be someone else's file).
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';
import { log } from '../log';

export class OwnedFd {
  #fd: number;

  /** Take ownership of `fd` (>= 0). */
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`OwnedFd: invalid fd ${fd}`);
    this.#fd = fd;
  }

  /** The fd number, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Close it (the first call only). A failure (EBADF: an ownership bug elsewhere) is logged, never thrown. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    try {
      fs.closeSync(fd);
    } catch (err) {
      log('error', 'vhost', 'close failed', { fd, err: err as Error });
    }
  }
}

/** The number of an optional OwnedFd, -1 for none. */
export function fdOf(f: OwnedFd | null): number {
  return f === null ? -1 : f.fd;
}
