/**
 * Guest memory as one engine worker sees it: the front-end's regions, each
 * mapped once (MAP_SHARED, through the addon) as an external ArrayBuffer with
 * one Uint8Array, one DataView and one Uint16Array (for Atomics on ring
 * indices) made at construction. Address translation never allocates: it
 * returns a region index and leaves the offset in `offset`.
 *
 * Thread: owned by the engine worker that runs the device; created on its
 * `start`, unmapped on its `stop` after every I/O into it has completed.
 *
 * Numbers: every address and length is a JS number below 2^53 (callers build
 * 64-bit guest values from two u32 halves and refuse anything larger), so the
 * range checks below are exact.
 */
import type { Native } from '../bindings/native';
import type { RegionDesc } from './control';

/**
 * A plain typed-array load is an acquire load (x86-64: TSO keeps loads in
 * order, and V8 emits typed-array loads in program order, on the effect
 * chain). A driver's index, flags or doorbell that makes entries available can
 * then be read without `Atomics.load`, a builtin call on a non-shared buffer in
 * Node 20 (~10 ns): a poll loop spinning on an idle queue called it every
 * iteration. Elsewhere (arm64) a plain load that sees new entries is
 * followed by an Atomics.load (ldar) before they are read.
 */
export const PLAIN_LOAD_ACQUIRES = process.arch === 'x64';

/** The addon calls guest memory needs (injected so tests run without the addon). */
export type Mapper = Pick<Native, 'mmap' | 'munmap'>;

/** A test or in-process region: memory the caller already holds. */
export interface BufferRegion {
  guestPhysAddr: number;
  /** Front-end virtual address of the region; defaults to guestPhysAddr. */
  userAddr?: number;
  buffer: ArrayBuffer;
}

export class GuestMemoryError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'GuestMemoryError';
  }
}

/** Largest number of regions a front-end may share (the session's GET_MAX_MEM_SLOTS answer). */
export const MAX_REGIONS = 32;

/**
 * Node 20 cannot make an external ArrayBuffer larger than 4 GiB, so a larger
 * region is mapped as several overlapping windows ("chunks"): each at most
 * CHUNK_BYTES long, starting every CHUNK_STRIDE bytes. Any range of at most
 * CHUNK_BYTES - CHUNK_STRIDE bytes (1 GiB: far above a descriptor buffer, an
 * indirect table or a ring) lies wholly inside one window. The stride is a
 * multiple of 1 GiB so windows stay aligned even on 1 GiB hugetlbfs pages.
 */
export const CHUNK_BYTES = 4 * 2 ** 30;
export const CHUNK_STRIDE = 3 * 2 ** 30;
/** Chain segments store a window index in a byte. */
const MAX_CHUNKS = 255;

export interface ChunkLayout {
  chunkBytes: number;
  strideBytes: number;
}

export class GuestMemory {
  readonly count: number;
  /** Per region: a byte view over all of it. */
  readonly bytes: Uint8Array[];
  /** Per region: a DataView over all of it (little-endian reads of guest structures). */
  readonly views: DataView[];
  /** Per region: 16-bit words, for Atomics on ring indices (host order = little-endian on every target). */
  readonly words: Uint16Array[];
  /** Per region: 32-bit words (host order = little-endian), for aligned loads of descriptors. */
  readonly words32: Uint32Array[];
  /** Offset inside the region of the last successful translate()/uvaToGpa()/translatePart() look-up. */
  offset = 0;
  /** Bytes of the range the last successful translatePart() covered (from `offset` in its region). */
  partLen = 0;

  private readonly gpa: Float64Array;
  private readonly uva: Float64Array;
  private readonly size: Float64Array;
  private readonly buffers: ArrayBuffer[];
  private readonly mapper: Mapper | null;
  private lastHit = 0;
  private unmapped = false;

  private constructor(buffers: ArrayBuffer[], gpa: number[], uva: number[], mapper: Mapper | null) {
    this.count = buffers.length;
    this.buffers = buffers;
    this.mapper = mapper;
    this.gpa = Float64Array.from(gpa);
    this.uva = Float64Array.from(uva);
    this.size = Float64Array.from(buffers, (b) => b.byteLength);
    this.bytes = buffers.map((b) => new Uint8Array(b));
    this.views = buffers.map((b) => new DataView(b));
    this.words = buffers.map((b) => new Uint16Array(b, 0, Math.floor(b.byteLength / 2)));
    this.words32 = buffers.map((b) => new Uint32Array(b, 0, Math.floor(b.byteLength / 4)));
  }

  /**
   * Map every region fd (read-write, MAP_SHARED), a region larger than
   * layout.chunkBytes as overlapping windows (see CHUNK_BYTES). The indices
   * translate() returns are window indices. On failure, unmaps what was
   * mapped and throws.
   */
  static map(regions: readonly RegionDesc[], mapper: Mapper, layout: ChunkLayout = { chunkBytes: CHUNK_BYTES, strideBytes: CHUNK_STRIDE }): GuestMemory {
    validateLayout(regions.map((r) => ({ gpa: r.guestPhysAddr, uva: r.userAddr, size: r.sizeBytes })));
    // Count the windows before building them: a region of 2^52 bytes is millions of them.
    let count = 0;
    for (const r of regions) count += r.sizeBytes <= layout.chunkBytes ? 1 : 1 + Math.ceil((r.sizeBytes - layout.chunkBytes) / layout.strideBytes);
    if (count > MAX_CHUNKS) {
      throw new GuestMemoryError(`guest memory needs ${count} mapping windows, at most ${MAX_CHUNKS}`, 'ERR_GUEST_MEMORY');
    }
    const windows: { fd: number; offset: number; size: number; gpa: number; uva: number }[] = [];
    for (const r of regions) {
      for (let start = 0; ; start += layout.strideBytes) {
        const size = Math.min(layout.chunkBytes, r.sizeBytes - start);
        windows.push({ fd: r.fd, offset: r.mmapOffset + start, size, gpa: r.guestPhysAddr + start, uva: r.userAddr + start });
        if (start + size >= r.sizeBytes) break;
      }
    }
    if (windows.length > MAX_CHUNKS) {
      throw new GuestMemoryError(`guest memory needs ${windows.length} mapping windows, at most ${MAX_CHUNKS}`, 'ERR_GUEST_MEMORY');
    }
    const buffers: ArrayBuffer[] = [];
    try {
      for (const w of windows) buffers.push(mapper.mmap(w.fd, w.offset, w.size, true));
    } catch (err) {
      for (const b of buffers) mapper.munmap(b);
      throw err;
    }
    return new GuestMemory(
      buffers,
      windows.map((w) => w.gpa),
      windows.map((w) => w.uva),
      mapper,
    );
  }

  /** Guest memory over buffers the caller holds (tests, in-process front-ends). unmap() only forgets them. */
  static fromBuffers(regions: readonly BufferRegion[]): GuestMemory {
    const layout = regions.map((r) => ({
      gpa: r.guestPhysAddr,
      uva: r.userAddr ?? r.guestPhysAddr,
      size: r.buffer.byteLength,
    }));
    validateLayout(layout);
    return new GuestMemory(
      regions.map((r) => r.buffer),
      layout.map((l) => l.gpa),
      layout.map((l) => l.uva),
      null,
    );
  }

  /**
   * Find the region holding all of [gpa, gpa+len). Returns its index and
   * sets `this.offset`, or returns -1 (also for a range that straddles two
   * regions, and after unmap()). len may be 0.
   */
  translate(gpa: number, len: number): number {
    // Fast path: the region of the previous hit.
    let i = this.lastHit;
    if (i < this.count && this.inRange(this.gpa[i], this.size[i], gpa, len)) {
      this.offset = gpa - this.gpa[i];
      return i;
    }
    for (i = 0; i < this.count; i++) {
      if (this.inRange(this.gpa[i], this.size[i], gpa, len)) {
        this.lastHit = i;
        this.offset = gpa - this.gpa[i];
        return i;
      }
    }
    return -1;
  }

  /**
   * The leading part of [gpa, gpa+len) that one region holds, for a buffer
   * that runs on into the next region (regions adjacent in guest-physical
   * space: a guest buffer may span them). Returns the region holding gpa
   * (the one holding the most of the range when windows overlap), sets
   * `offset` and `partLen` (1 <= partLen <= len), or returns -1 when no
   * region holds gpa. Callers loop on the rest: gpa + partLen is exact
   * (both < 2^53 and the sum is inside a region or at its end). len > 0.
   */
  translatePart(gpa: number, len: number): number {
    let best = -1;
    let bestLen = 0;
    for (let i = 0; i < this.count; i++) {
      const base = this.gpa[i];
      const size = this.size[i];
      if (gpa < base || gpa - base >= size) continue;
      const room = size - (gpa - base);
      const n = room < len ? room : len;
      if (n > bestLen) {
        best = i;
        bestLen = n;
      }
    }
    if (best < 0) return -1;
    this.offset = gpa - this.gpa[best];
    this.partLen = bestLen;
    return best;
  }

  /**
   * Front-end virtual address → guest physical address, for vring addresses
   * (SET_VRING_ADDR). The whole [uva, uva+len) must lie in one region.
   * Returns -1 when it does not.
   */
  uvaToGpa(uva: number, len: number): number {
    for (let i = 0; i < this.count; i++) {
      if (this.inRange(this.uva[i], this.size[i], uva, len)) {
        return this.gpa[i] + (uva - this.uva[i]);
      }
    }
    return -1;
  }

  /** Base guest physical address of region (window) i, no allocation (dirty logging of chain segments). */
  regionGpa(i: number): number {
    return this.gpa[i];
  }

  /** Base guest physical address and size of region i (for logs and tests). */
  region(i: number): { guestPhysAddr: number; sizeBytes: number } {
    return { guestPhysAddr: this.gpa[i], sizeBytes: this.size[i] };
  }

  get isUnmapped(): boolean {
    return this.unmapped;
  }

  /**
   * Release the mappings (munmap detaches the ArrayBuffers, so every view
   * becomes empty). Call only when no I/O points into guest memory.
   * Idempotent; translate() fails afterwards.
   */
  unmap(): void {
    if (this.unmapped) return;
    this.unmapped = true;
    // Make every later look-up fail even for a region of size 0.
    this.size.fill(-1);
    if (this.mapper) {
      let first: unknown = null;
      for (const b of this.buffers) {
        try {
          this.mapper.munmap(b);
        } catch (err) {
          first ??= err;
        }
      }
      if (first !== null) throw first;
    }
  }

  private inRange(base: number, size: number, addr: number, len: number): boolean {
    // Overflow-safe: never forms addr + len. All operands are exact (< 2^53).
    return addr >= base && len >= 0 && len <= size && addr - base <= size - len;
  }
}

function validateLayout(regions: { gpa: number; uva: number; size: number }[]): void {
  if (regions.length === 0 || regions.length > MAX_REGIONS) {
    throw new GuestMemoryError(`guest memory needs 1 to ${MAX_REGIONS} regions, got ${regions.length}`, 'ERR_GUEST_MEMORY');
  }
  for (const r of regions) {
    for (const [name, v] of [
      ['guestPhysAddr', r.gpa],
      ['userAddr', r.uva],
      ['sizeBytes', r.size],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0) {
        throw new GuestMemoryError(`region ${name} must be a safe non-negative integer, got ${v}`, 'ERR_GUEST_MEMORY');
      }
    }
    if (r.size === 0 || r.gpa > Number.MAX_SAFE_INTEGER - r.size || r.uva > Number.MAX_SAFE_INTEGER - r.size) {
      throw new GuestMemoryError('region is empty or ends beyond 2^53', 'ERR_GUEST_MEMORY');
    }
  }
}
