/** What both halves of the null module share. */
import type { IoTypeSet } from '../io-types';

/** As SPDK's null bdev: reads and writes (and write zeroes) succeed without data; no flush, no unmap. */
export const NULL_IO_TYPES: IoTypeSet = { read: true, write: true, flush: false, unmap: false, write_zeroes: true };
