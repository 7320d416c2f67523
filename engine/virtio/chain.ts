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
 * per-request pool; nothing here allocates.
 */
import type { GuestMemory } from '../memory';
import { DESC_SIZE, DescFlag } from './spec';

/** Why a chain was refused. */
export const enum ChainError {
  Ok = 0,
  /** The head index is not below the queue size. */
  HeadOutOfRange = 1,
  /** A `next` field points outside the table it is in. */
  NextOutOfRange = 2,
  /** More descriptors than the queue size (or the indirect table size): a loop or an over-long chain. */
  TooLong = 3,
  /** A buffer (or indirect table) does not lie inside guest memory. */
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
  /** More buffer segments than one request of this device may use (the driver ignored seg_max). */
  TooManySegments = 10,
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
  'more segments than a request may use (seg_max)',
];

export function chainErrorName(err: ChainError): string {
  return CHAIN_ERROR_NAMES[err] ?? `chain error ${err}`;
}

/**
 * One request's buffers: segments [0, readable) are device-readable,
 * [readable, count) device-writable, in chain order. Each segment is a
 * region index, an offset in that region and a length (never 0: zero-length
 * descriptors are walked but not recorded; a buffer that runs over from one
 * guest region into the adjacent one is two segments).
 *
 * The walk also locates the chain's last byte (the virtio-blk status byte,
 * §5.2.6) in the same pass: `tailRegion`/`tailOffset` say where the last
 * byte of the last descriptor is when that descriptor is device-writable,
 * not empty and its last byte lies in guest memory, else tailRegion is -1.
 * It is set even when the walk refused the chain for a bad data buffer (the
 * walk goes on to the last descriptor after such an error, recording no more
 * segments), and is -1 when the chain's structure cannot be followed (loop,
 * bad next index, bad indirect table): then no byte of it can be trusted.
 *
 * Capacity: the most segments one request of the device may use (its
 * seg_max plus header and status), not the queue size.
 */
export class DescChain {
  head = -1;
  count = 0;
  readable = 0;
  readableBytes = 0;
  writableBytes = 0;
  tailRegion = -1;
  tailOffset = 0;
  readonly region: Uint8Array;
  readonly offset: Float64Array;
  readonly len: Uint32Array;

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
    this.tailRegion = -1;
  }
}

/** 2^32, to assemble a le64 from two le32 halves. */
const TWO_32 = 4294967296;
/** Largest high word of an address below 2^53. */
const MAX_SAFE_HIGH = 0x1fffff;

/**
 * Record a buffer of `len` (> 0) bytes at guest address `addr` as segments of
 * `out`: one when a region holds it, several when it runs over adjacent
 * regions. Returns Ok, BadAddress or TooManySegments.
 */
export function addBuffer(mem: GuestMemory, addr: number, len: number, out: DescChain): ChainError {
  let r = mem.translate(addr, len);
  let n = out.count;
  if (r >= 0) {
    if (n >= out.capacity) return ChainError.TooManySegments;
    out.region[n] = r;
    out.offset[n] = mem.offset;
    out.len[n] = len;
    out.count = n + 1;
    return ChainError.Ok;
  }
  // Not inside one region: it may span regions adjacent in guest-physical space.
  while (len > 0) {
    r = mem.translatePart(addr, len);
    if (r < 0) return ChainError.BadAddress;
    if (n >= out.capacity) return ChainError.TooManySegments;
    const part = mem.partLen;
    out.region[n] = r;
    out.offset[n] = mem.offset;
    out.len[n] = part;
    n++;
    addr += part;
    len -= part;
  }
  out.count = n;
  return ChainError.Ok;
}

/**
 * One data descriptor (addr = hi * 2^32 + lo, len, flags) of a chain being
 * walked into `out`, for both ring layouts: its buffer is recorded as
 * segments unless the chain already has an error (`err`, returned as it
 * is), and the first error of this one is returned instead of Ok:
 * readable after writable (§2.7.4.2), outside guest memory, too many
 * segments. The chain's `last` descriptor also sets the tail (DescChain):
 * the last byte just recorded, or, for a refused chain, that byte when it
 * lies in guest memory.
 */
export function addDescriptor(mem: GuestMemory, lo: number, hi: number, len: number, flags: number, last: boolean, err: ChainError, out: DescChain): ChainError {
  if (err === ChainError.Ok && len !== 0) {
    if (flags & DescFlag.Write) {
      out.writableBytes += len;
    } else if (out.count !== out.readable) {
      // §2.7.4.2: readable buffers come before writable ones.
      err = ChainError.ReadableAfterWritable;
    } else {
      out.readableBytes += len;
    }
    if (err === ChainError.Ok) {
      err = hi > MAX_SAFE_HIGH ? ChainError.BadAddress : addBuffer(mem, hi * TWO_32 + lo, len, out);
      if (err === ChainError.Ok && !(flags & DescFlag.Write)) out.readable = out.count;
      if (err === ChainError.Ok && last && flags & DescFlag.Write) {
        // The tail is the last byte of the last segment just recorded.
        const k = out.count - 1;
        out.tailRegion = out.region[k];
        out.tailOffset = out.offset[k] + out.len[k] - 1;
      }
    }
  }
  if (last && err !== ChainError.Ok && flags & DescFlag.Write && len !== 0 && hi <= MAX_SAFE_HIGH) {
    // A refused chain still has a tail when its last byte lies in guest memory.
    const r = mem.translate(hi * TWO_32 + lo + len - 1, 1);
    if (r >= 0) {
      out.tailRegion = r;
      out.tailOffset = mem.offset;
    }
  }
  return err;
}

/**
 * Walk the chain starting at `head` of a descriptor table of `size` entries
 * at `descOffset` in region `descRegion`, filling `out` (segments and tail).
 *
 * TTL: the direct chain may visit at most `size` descriptors, and the data
 * descriptors of the whole chain (direct ones plus those in the indirect
 * table) may number at most `size` (§2.7.5.3.1: "A driver MUST NOT create a
 * descriptor chain longer than the Queue Size of the device"); the
 * descriptor that merely points at an indirect table is not a data
 * descriptor. An indirect table may hold at most `size` entries and is
 * walked from its entry 0 with `next` indices inside it (§2.7.5.3.2), after
 * zero or more direct descriptors. Every step is bounded by a table's size,
 * so the walk ends after at most 2 * size descriptor reads.
 *
 * `table32`, when given, is region `descRegion` as 32-bit words (host order
 * = little-endian) and `descOffset` a multiple of 4: the direct table is read
 * through it (one aligned load per field), else through the DataView.
 *
 * Errors of one data buffer (outside memory, wrong direction, too many
 * segments, too many data descriptors) are remembered, the first one is
 * returned, and the walk goes on to the last descriptor to locate the tail;
 * structural errors return at once with no tail.
 */
export function walkChain(
  mem: GuestMemory,
  descRegion: number,
  descOffset: number,
  size: number,
  head: number,
  indirectAllowed: boolean,
  out: DescChain,
  table32: Uint32Array | null = null,
): ChainError {
  out.reset(head);
  if (head >= size) return ChainError.HeadOutOfRange;

  let view = mem.views[descRegion];
  let base = descOffset;
  // The table as 32-bit words (addr lo, addr hi, len, flags | next << 16): the direct one when the caller
  // has them, an indirect one when it is 4-byte aligned; else through the DataView.
  let words = table32;
  // An int32 (table offsets are below 2^32, a window's size, and multiples of 4 when read as words;
  // unused otherwise): the word indices below stay integer arithmetic, no float conversion per field.
  let word0 = (descOffset / 4) | 0;
  let tableSize = size;
  let inIndirect = false;
  let steps = 0;
  let data = 0;
  let idx = head;
  /** The first data error; once set, no more segments are recorded. */
  let err: ChainError = ChainError.Ok;

  for (;;) {
    // In the direct table the TTL is the queue size; inside the indirect
    // table it is that table's entry count (steps restarts at 0 there).
    if (++steps > tableSize) return ChainError.TooLong;
    let lo: number, hi: number, len: number, flags: number, next: number;
    if (words !== null) {
      const w = word0 + 4 * idx;
      lo = words[w];
      hi = words[w + 1];
      len = words[w + 2];
      const fn = words[w + 3];
      flags = fn & 0xffff;
      next = fn >>> 16;
    } else {
      const d = base + idx * DESC_SIZE;
      lo = view.getUint32(d, true);
      hi = view.getUint32(d + 4, true);
      len = view.getUint32(d + 8, true);
      flags = view.getUint16(d + 12, true);
      next = view.getUint16(d + 14, true);
    }

    if (flags & DescFlag.Indirect) {
      // §2.7.5.3.1
      if (inIndirect) return ChainError.NestedIndirect;
      if (!indirectAllowed) return ChainError.IndirectNotNegotiated;
      if (flags & DescFlag.Next) return ChainError.IndirectWithNext;
      if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > size) return ChainError.BadIndirectTable;
      if (hi > MAX_SAFE_HIGH) return ChainError.BadAddress;
      const r = mem.translate(hi * TWO_32 + lo, len);
      if (r < 0) return ChainError.BadAddress;
      base = mem.offset;
      if ((base & 3) === 0) {
        words = mem.words32[r];
        word0 = (base / 4) | 0;
      } else {
        view = mem.views[r];
        words = null;
      }
      tableSize = len / DESC_SIZE;
      inIndirect = true;
      steps = 0;
      idx = 0;
      continue;
    }

    const last = !(flags & DescFlag.Next);
    if (err === ChainError.Ok && ++data > size) err = ChainError.TooLong;
    err = addDescriptor(mem, lo, hi, len, flags, last, err, out);
    if (last) return err;
    if (next >= tableSize) return ChainError.NextOutOfRange;
    idx = next;
  }
}
