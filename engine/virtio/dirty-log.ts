/**
 * The dirty log of a live migration (vhost-user.rst "Migration", protocol
 * feature LOG_SHMFD): a bitmap in memory the front-end shares with
 * SET_LOG_BASE, one bit per 4 KiB page of guest-physical address space —
 * page p is bit p mod 8 of byte p / 8 (QEMU's vhost_log_chunk_t words are
 * little-endian u64s, so byte addressing gives the same bits). While
 * VHOST_F_LOG_ALL is negotiated the device sets the bit of every page it
 * writes: data of reads, status bytes and response buffers (the
 * device-writable part of each chain), the used ring (split) or written-back
 * descriptors (packed), so the front-end sends those pages again.
 *
 * The front-end reads and clears the bitmap concurrently (QEMU's log sync
 * does an atomic exchange per word), so every bit is set with Atomics.or on
 * the shared mapping: a plain read-modify-write could lose a bit the
 * front-end cleared and we set at once, or set back a bit it already took.
 *
 * Bad input: a page past the end of the log is never written; it is counted
 * (`outside`) so the device can say the front-end's log was too small.
 *
 * Thread: the engine worker that owns the device (every shard of a spread
 * device has its own DirtyLog over its own mapping of the same memfd).
 */
import type { DescChain } from './chain';
import type { GuestMemory } from '../memory';

/** vhost-user's log page: VHOST_LOG_PAGE = 4096 (one bit each). */
export const LOG_PAGE_BYTES = 4096;

/** Bytes of log needed to cover guest-physical addresses below `gpaEnd`. */
export function logBytesFor(gpaEnd: number): number {
  return Math.ceil(Math.ceil(gpaEnd / LOG_PAGE_BYTES) / 8);
}

export class DirtyLog {
  /** Pages a write touched that lie past the end of the log (not logged: the log is too small). */
  outside = 0;
  /** Pages marked (every call counts its pages, bits already set included). */
  marked = 0;
  private readonly pages: number;

  constructor(private readonly bits: Uint8Array) {
    this.pages = bits.byteLength * 8;
  }

  /** Mark every page of [gpa, gpa + len). len 0 marks nothing. gpa and len are exact (< 2^53). */
  markRange(gpa: number, len: number): void {
    if (len <= 0) return;
    // Page numbers stay below 2^41: exact in a double, but beyond int32, so no shifts on them.
    const first = Math.floor(gpa / LOG_PAGE_BYTES);
    const last = Math.floor((gpa + len - 1) / LOG_PAGE_BYTES);
    const bits = this.bits;
    let p = first;
    const end = last < this.pages ? last : this.pages - 1;
    while (p <= end) {
      const byte = Math.floor(p / 8);
      const bit = p - byte * 8;
      if (bit === 0 && end - p >= 7) {
        // A whole byte of pages at once.
        Atomics.or(bits, byte, 0xff);
        p += 8;
        this.marked += 8;
      } else {
        Atomics.or(bits, byte, 1 << bit);
        p++;
        this.marked++;
      }
    }
    if (last >= this.pages) this.outside += last - (first > this.pages ? first : this.pages) + 1;
  }

  /**
   * Mark the pages of a chain's device-writable segments (data read for the
   * driver, the status byte) and of its tail byte when the walk found one
   * (a chain the walk refused still gets its status written there).
   */
  markChain(chain: DescChain, mem: GuestMemory): void {
    for (let i = chain.readable; i < chain.count; i++) {
      this.markRange(mem.regionGpa(chain.region[i]) + chain.offset[i], chain.len[i]);
    }
    if (chain.tailRegion >= 0) this.markRange(mem.regionGpa(chain.tailRegion) + chain.tailOffset, 1);
  }
}

/** For tests and logs: is page `page` marked in `bits`? */
export function pageMarked(bits: Uint8Array, page: number): boolean {
  const byte = Math.floor(page / 8);
  return byte < bits.byteLength && (bits[byte] & (1 << (page - byte * 8))) !== 0;
}
