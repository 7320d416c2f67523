/**
 * What both halves of the rbd bdev module share: the BdevDesc params the
 * reactor half writes and the engine half opens, and the I/O types.
 *
 * The engine half drives librbd through the same staging/completion engine
 * as the file bdevs (engine/bdev/file.ts over the addon's RbdRing), so the
 * description is a FileBdevDesc whose `fd` is an image handle of the addon's
 * process-wide table (bindings/src/rbd.cc), not a file descriptor.
 */
import type { FileBdevDesc } from '../../../engine/control';
import type { IoTypeSet } from '../io-types';

export interface RbdBdevDesc extends FileBdevDesc {
  /** "rbd:<pool>/<image>", for logs. */
  filename: string;
  /** The addon's image handle (rbdOpen), valid in every thread of the process. */
  fd: number;
  pool: string;
  image: string;
}

/** Read, write, flush (rbd_aio_flush), unmap (rbd_aio_discard), write zeroes (rbd_aio_write_zeroes); no writes on a read-only image. */
export function rbdIoTypes(readonly: boolean): IoTypeSet {
  return { read: true, write: !readonly, flush: true, unmap: !readonly, write_zeroes: !readonly };
}
