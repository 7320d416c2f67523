/** What both halves of the malloc module share. */
import type { IoTypeSet } from '../io-types';

/** BdevDesc.params of a malloc bdev: its blocks, shared by every worker. */
export interface MallocParams {
  storage: SharedArrayBuffer;
}

/** A RAM disk does everything; flush has nothing to write back (it completes at once). */
export const MALLOC_IO_TYPES: IoTypeSet = { read: true, write: true, flush: true, unmap: true, write_zeroes: true };
