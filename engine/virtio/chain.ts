/**
 * Descriptor chains of a split virtqueue (virtio 1.2 §2.7.5): walking a chain
 * from its head through the descriptor table, and through at most one
 * indirect table (§2.7.5.3), into a reusable DescChain of guest memory
 * segments. Every descriptor is read once from guest memory; every address
 * is translated with overflow-safe arithmetic; the walk stops after a bounded
 * number of steps (a TTL, as rust-vmm's virtio-queue does), so a chain that
 * loops ends in an error instead of a hang. Guest mistakes are returned as a
 * ChainError, never thrown.
 *
 * Thread: the engine worker that owns the queue. DescChain objects live in a
 * per-queue pool; nothing here allocates.
 */
import type { GuestMemory } from '../memory';

/** Descriptor flags (§2.7.5). */
export const enum DescFlag {
  Next = 1,
  Write = 2,
  Indirect = 4,
}

/** Size of one descriptor: le64 addr, le32 len, le16 flags, le16 next. */
export const DESC_SIZE = 16;

/** Why a chain was refused. */
export const enum ChainError {
  Ok = 0,
  /** The head index is not below the queue size. */
  HeadOutOfRange = 1,
  /** A `next` field points outside the table it is in. */
  NextOutOfRange = 2,
  /** More descriptors than the queue size (or the indirect table size): a loop or an over-long chain. */
  TooLong = 3,
  /** A buffer (or indirect table) does not lie inside one guest memory region. */
  BadAddress = 4,
  /** §2.7.4.2: a device-readable descriptor after a device-writable one. */
  ReadableAfterWritable = 5,
  /** INDIRECT used although VIRTIO_F_RING_INDIRECT_DESC was not negotiated. */
  IndirectNotNegotiated = 6,
  /** §2.7.5.3.1: INDIRECT and NEXT set on the same descriptor. */
  IndirectWithNext = 7,
  /** §2.7.5.3.1: an INDIRECT descriptor inside an indirect table. */
  NestedIndirect = 8,
  /** Indirect table length zero, not a multiple of 16, or more entries than the queue size. */
  BadIndirectTable = 9,
}

const CHAIN_ERROR_NAMES = [
  'ok',
  'head index out of range',
  'next index out of range',
  'chain longer than the queue size (loop?)',
  'buffer outside guest memory',
  'readable descriptor after a writable one',
  'indirect descriptor without VIRTIO_F_RING_INDIRECT_DESC',
  'indirect descriptor with NEXT',
  'nested indirect descriptor',
  'bad indirect table length',
];

export function chainErrorName(err: ChainError): string {
  return CHAIN_ERROR_NAMES[err] ?? `chain error ${err}`;
}

/**
 * One request's buffers: segments [0, readable) are device-readable,
 * [readable, count) device-writable, in chain order. Each segment is a
 * region index, an offset in that region and a length (never 0: zero-length
 * descriptors are walked but not recorded).
 */
export class DescChain {
  head = -1;
  count = 0;
  readable = 0;
  readableBytes = 0;
  writableBytes = 0;
  readonly region: Uint8Array;
  readonly offset: Float64Array;
  readonly len: Uint32Array;

  /** capacity: the queue size (the most data descriptors a valid chain has). */
  constructor(readonly capacity: number) {
    this.region = new Uint8Array(capacity);
    this.offset = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
  }

  reset(head: number): void {
    this.head = head;
    this.count = 0;
    this.readable = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
  }
}

/** 2^32, to assemble a le64 from two le32 halves. */
const TWO_32 = 4294967296;
/** Largest high word of an address below 2^53. */
const MAX_SAFE_HIGH = 0x1fffff;

/**
 * Walk the chain starting at `head` of a descriptor table of `size` entries
 * at `descOffset` in region `descRegion`, filling `out`.
 *
 * TTL: the direct chain may visit at most `size` descriptors, and the data
 * descriptors of the whole chain (direct ones plus those in the indirect
 * table) may number at most `size` (§2.7.5.3.1: "A driver MUST NOT create a
 * descriptor chain longer than the Queue Size of the device"); the
 * descriptor that merely points at an indirect table is not a data
 * descriptor. An indirect table may hold at most `size` entries and is
 * walked from its entry 0 with `next` indices inside it (§2.7.5.3.2), after
 * zero or more direct descriptors.
 */
export function walkChain(
  mem: GuestMemory,
  descRegion: number,
  descOffset: number,
  size: number,
  head: number,
  indirectAllowed: boolean,
  out: DescChain,
): ChainError {
  out.reset(head);
  if (head >= size) return ChainError.HeadOutOfRange;

  let view = mem.views[descRegion];
  let base = descOffset;
  let tableSize = size;
  let inIndirect = false;
  let steps = 0;
  let data = 0;
  let idx = head;

  for (;;) {
    // In the direct table the TTL is the queue size; inside the indirect
    // table it is that table's entry count (steps restarts at 0 there).
    if (++steps > tableSize) return ChainError.TooLong;
    const d = base + idx * DESC_SIZE;
    const lo = view.getUint32(d, true);
    const hi = view.getUint32(d + 4, true);
    const len = view.getUint32(d + 8, true);
    const flags = view.getUint16(d + 12, true);
    const next = view.getUint16(d + 14, true);

    if (flags & DescFlag.Indirect) {
      // §2.7.5.3.1
      if (inIndirect) return ChainError.NestedIndirect;
      if (!indirectAllowed) return ChainError.IndirectNotNegotiated;
      if (flags & DescFlag.Next) return ChainError.IndirectWithNext;
      if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > size) return ChainError.BadIndirectTable;
      if (hi > MAX_SAFE_HIGH) return ChainError.BadAddress;
      const r = mem.translate(hi * TWO_32 + lo, len);
      if (r < 0) return ChainError.BadAddress;
      view = mem.views[r];
      base = mem.offset;
      tableSize = len / DESC_SIZE;
      inIndirect = true;
      steps = 0;
      idx = 0;
      continue;
    }

    if (++data > size) return ChainError.TooLong;
    if (len !== 0) {
      if (hi > MAX_SAFE_HIGH) return ChainError.BadAddress;
      const r = mem.translate(hi * TWO_32 + lo, len);
      if (r < 0) return ChainError.BadAddress;
      const n = out.count;
      if (flags & DescFlag.Write) {
        out.writableBytes += len;
      } else {
        // §2.7.4.2: readable buffers come before writable ones.
        if (n !== out.readable) return ChainError.ReadableAfterWritable;
        out.readable = n + 1;
        out.readableBytes += len;
      }
      out.region[n] = r;
      out.offset[n] = mem.offset;
      out.len[n] = len;
      out.count = n + 1;
    }

    if (!(flags & DescFlag.Next)) return ChainError.Ok;
    if (next >= tableSize) return ChainError.NextOutOfRange;
    idx = next;
  }
}

/**
 * For a chain that walkChain refused: find its last descriptor and, when that
 * one is device-writable and lies in guest memory, the place of its last byte
 * (the virtio-blk status byte, §5.2.6). The chain's other descriptors may be
 * bad (outside memory, in the wrong direction); the walk is bounded by the
 * same TTL as walkChain, so a loop yields no status. On success returns the
 * region index and leaves the byte's offset in `mem.offset`; otherwise -1.
 * This lets a request with a bad data buffer still complete with IOERR.
 */
export function findStatusByte(
  mem: GuestMemory,
  descRegion: number,
  descOffset: number,
  size: number,
  head: number,
  indirectAllowed: boolean,
): number {
  if (head >= size) return -1;
  let view = mem.views[descRegion];
  let base = descOffset;
  let tableSize = size;
  let inIndirect = false;
  let steps = 0;
  let idx = head;
  for (;;) {
    if (++steps > tableSize) return -1;
    const d = base + idx * DESC_SIZE;
    const lo = view.getUint32(d, true);
    const hi = view.getUint32(d + 4, true);
    const len = view.getUint32(d + 8, true);
    const flags = view.getUint16(d + 12, true);
    const next = view.getUint16(d + 14, true);
    if (flags & DescFlag.Indirect) {
      if (inIndirect || !indirectAllowed || flags & DescFlag.Next) return -1;
      if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > size || hi > MAX_SAFE_HIGH) return -1;
      const r = mem.translate(hi * TWO_32 + lo, len);
      if (r < 0) return -1;
      view = mem.views[r];
      base = mem.offset;
      tableSize = len / DESC_SIZE;
      inIndirect = true;
      steps = 0;
      idx = 0;
      continue;
    }
    if (flags & DescFlag.Next) {
      if (next >= tableSize) return -1;
      idx = next;
      continue;
    }
    // The last descriptor: the status byte is its last byte.
    if (!(flags & DescFlag.Write) || len === 0 || hi > MAX_SAFE_HIGH) return -1;
    const addr = hi * TWO_32 + lo + len - 1;
    const r = mem.translate(addr, 1);
    return r;
  }
}
