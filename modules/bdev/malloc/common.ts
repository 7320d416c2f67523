/** What both halves of the malloc module share. */
import type { IoTypeSet } from '../io-types';

/**
 * BdevDesc.params of a malloc bdev: its blocks, shared by every worker —
 * a memfd each worker maps (what the reactor makes, up to MAX_MEMFD_BYTES:
 * its memory goes back to the system when the bdev is deleted and the last
 * worker has unmapped it, not at some later garbage collection), or a
 * SharedArrayBuffer (larger bdevs; tests).
 */
export type MallocParams = { storage: SharedArrayBuffer } | { fd: number; sizeBytes: number };

/**
 * The largest malloc bdev kept in a memfd: a worker maps it as one external
 * ArrayBuffer, which Node 20 caps at 4 GiB; larger ones use a SharedArrayBuffer.
 */
export const MAX_MEMFD_BYTES = 4 * 1024 ** 3;

/** A RAM disk does everything; flush has nothing to write back (it completes at once). */
export const MALLOC_IO_TYPES: IoTypeSet = { read: true, write: true, flush: true, unmap: true, write_zeroes: true };
