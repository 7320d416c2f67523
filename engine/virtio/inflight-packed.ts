/**
 * The shared in-flight region of vhost-user's INFLIGHT_SHMFD for packed
 * rings (docs/interop/vhost-user.rst, "Inflight I/O tracking", the
 * QueueRegionPacked / DescStatePacked layout; DPDK lays it out the same):
 *
 *   per queue, at index * packedInflightQueueBytes(queue_size) (64-byte multiples):
 *     le64 features @0, le16 version @8 (1; 0 = never used), le16 desc_num @10,
 *     le16 free_head @12, le16 old_free_head @14, le16 used_idx @16,
 *     le16 old_used_idx @18, u8 used_wrap_counter @20, u8 old_used_wrap_counter @21,
 *     padding to 29; desc[desc_num] @32 (8-byte aligned), 32 bytes each:
 *       u8 inflight @0, u8 pad, le16 next @2, le16 last @4, le16 num @6,
 *       le64 counter @8, le16 id @16, le16 flags @18, le32 len @20, le64 addr @24
 *
 * Unlike the split layout, entries are not indexed by buffer id: a chain
 * taken from the ring is copied, descriptor by descriptor, into entries
 * taken from a free list (its head entry holds inflight, counter, num and
 * last). The copy matters: once the device has written used descriptors,
 * the ring slots of chains still in flight may be overwritten, so a new
 * back-end resubmits from the copies.
 *
 * One difference from the spec's sequence, for a device that completes
 * between pops: completed entries go back to the free list at publish, not
 * at push, so every pop starts with free_head == old_free_head (the spec's
 * head entry is old_free_head, its first copy goes to free_head: they must
 * be the same entry). Publishing a batch is, in this order:
 *   link each completed chain's entries before free_head, free_head = head;
 *   used_idx/used_wrap_counter = the ring's new used position;
 *   (the queue stores the used descriptors' flags, the batch's first slot last);
 *   inflight = 0 on each completed head; old_* = free_head/used_idx/used_wrap.
 *
 * Reconnect (resume): when used_idx/wrap differ from old_*, the ring slot at
 * old_used_idx tells whether the batch reached the driver (its flags are no
 * longer the available flags of old_used_wrap_counter): commit (old_* = new)
 * or roll back (new = old_*). Chains with inflight = 1 are resubmitted in
 * counter order, from their copies; the used position is old_used_idx/wrap
 * and the next available descriptor is that many slots further (the slots
 * between used and available are exactly those of the chains in flight).
 *
 * The region is a MAP_SHARED memfd kept by the front-end: it is input. The
 * running queue never follows links read from it (the free list lives in a
 * private mirror and is only written out); at resume every index is bounded
 * and every chain checked (QueueSetupError), and the free list is rebuilt
 * from the entries no chain holds.
 *
 * Thread: the engine worker that owns the device.
 */
import { QueueSetupError } from './split';
import { DESC_SIZE } from './spec';
import { alignInflight, checkInflightQueue, InflightCounter, inflightInUse, inflightRegionViews, readInflightCounter, setInflightInUse } from './inflight';

/** Bytes of a packed queue region's header (29, padded to the 8-byte alignment of desc[]). */
export const PACKED_INFLIGHT_HEADER_BYTES = 32;
/** Bytes of one DescStatePacked. */
export const PACKED_INFLIGHT_DESC_BYTES = 32;

// version @8 and desc_num @10 as in the split layout (inflight.ts reads and writes them).
const OFF_FREE_HEAD = 12;
const OFF_OLD_FREE_HEAD = 14;
const OFF_USED_IDX = 16;
const OFF_OLD_USED_IDX = 18;
const OFF_USED_WRAP = 20;
const OFF_OLD_USED_WRAP = 21;
const D_INFLIGHT = 0;
const D_NEXT = 2;
const D_LAST = 4;
const D_NUM = 6;
const D_COUNTER = 8;
const D_ID = 16;
const D_FLAGS = 18;
const D_LEN = 20;
const D_ADDR = 24;
const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;
const F_NEXT = 1;

/** Bytes of one packed queue's region for rings of `queueSize` descriptors. */
export function packedInflightQueueBytes(queueSize: number): number {
  // 8 + 6·2 + 9 header bytes (DPDK's sum) and the descriptors, in 64-byte multiples.
  return alignInflight(29 + PACKED_INFLIGHT_DESC_BYTES * queueSize);
}

/** Bytes of a whole packed region: `numQueues` queue regions. */
export function packedInflightRegionBytes(numQueues: number, queueSize: number): number {
  return numQueues * packedInflightQueueBytes(queueSize);
}

/** A chain to run again: its buffer id and its descriptors as the ring held them (16 bytes each, packed layout). */
export interface PackedResubmit {
  id: number;
  /** Descriptors of the chain (their number is the slots it took in the ring). */
  descs: DataView;
}

/** Where a packed queue resumes on a region. */
export interface PackedResume {
  chains: PackedResubmit[];
  availIdx: number;
  availWrap: boolean;
  usedIdx: number;
  usedWrap: boolean;
}

/**
 * One running queue's tracking on its part of the region: PackedQueue calls
 * these once per chain (popped, pushed) and once per batch (publishing,
 * published). Everything they read is private (mirrors); the region is only
 * written, in the order recovery needs (see the file comment).
 */
export class PackedInflightQueue extends InflightCounter {
  /** 32-bit word index of desc[0], and of the header word holding free_head @12 | old_free_head @14. */
  private readonly word0: number;
  private readonly freeWord: number;
  /** 16-bit indices of used_idx @16 and old_used_idx @18; byte indices of used_wrap_counter @20 and old @21. */
  private readonly usedHalf: number;
  private readonly usedWrapByte: number;
  /** 16-bit index of desc[0].next @2 and byte index of desc[0].inflight @0 (entry e: +16e, +32e). */
  private readonly nextHalf0: number;
  private readonly flagByte0: number;
  /** Mirror of the free list links (the shared ones are written, never read back while running). */
  readonly next: Uint16Array;
  freeHead = 0;
  /** Entries on the free list, and entries of the batch that go back to it at publish. */
  nfree: number;
  private nreturn = 0;
  /** Buffer id → its head entry | its last entry << 16 (the mirror of desc[].last). */
  readonly chainOf: Uint32Array;
  /** Chains completed since the last publish (chainOf values: head entry | last entry << 16). */
  private readonly batch: Uint32Array;
  private nbatch = 0;
  /** The used position publishing() wrote, copied to old_* by published(). */
  private pubIdx = 0;
  private pubWrap = 0;

  constructor(
    private readonly words: Uint32Array,
    private readonly halves: Uint16Array,
    private readonly bytes: Uint8Array,
    readonly base: number,
    /** Entries of the region's queue (desc_num) and descriptors of the ring (at most as many). */
    entries: number,
    size: number,
  ) {
    super();
    this.word0 = (base + PACKED_INFLIGHT_HEADER_BYTES) / 4;
    this.freeWord = (base + OFF_FREE_HEAD) / 4;
    this.usedHalf = (base + OFF_USED_IDX) / 2;
    this.usedWrapByte = base + OFF_USED_WRAP;
    this.nextHalf0 = (base + PACKED_INFLIGHT_HEADER_BYTES + D_NEXT) / 2;
    this.flagByte0 = base + PACKED_INFLIGHT_HEADER_BYTES + D_INFLIGHT;
    this.next = new Uint16Array(entries);
    this.nfree = entries;
    this.chainOf = new Uint32Array(size);
    this.batch = new Uint32Array(size);
  }

  /**
   * Buffer `id` was taken: its `n` descriptors start at slot `slot` of the
   * ring (`ringSize` slots) whose descriptor 0 is at 32-bit word `ringWord`
   * of `ring`. Copies them into entries from the free list, the head entry
   * marked in flight last. False when the free list cannot hold them: the
   * driver has more descriptors out than its ring has slots (it rewrote
   * slots still in flight).
   *
   * Word copies: a ring descriptor's words are addr lo, addr hi, len,
   * id | flags << 16; an entry holds id | flags << 16 at word 4, len at 5,
   * addr at 6-7 (the same little-endian fields, moved whole). The entries'
   * next links are the free list's, already in the region.
   */
  popped(id: number, ring: Uint32Array, ringWord: number, slot: number, n: number, ringSize: number): boolean {
    if (n > this.nfree) return false;
    this.nfree -= n;
    const w = this.words;
    const next = this.next;
    const word0 = this.word0;
    const h = this.freeHead;
    let e = h;
    let last = h;
    // Index arithmetic is `| 0` (every index is far below 2^31): TurboFan then adds without overflow checks.
    let r = (ringWord + 4 * slot) | 0;
    const ringEnd = (ringWord + 4 * ringSize) | 0;
    for (let k = 0; k < n; k++) {
      const d = (word0 + 8 * e) | 0;
      w[(d + 4) | 0] = ring[(r + 3) | 0];
      w[(d + 5) | 0] = ring[(r + 2) | 0];
      w[(d + 6) | 0] = ring[r];
      w[(d + 7) | 0] = ring[(r + 1) | 0];
      last = e;
      e = next[e];
      r = (r + 4) | 0;
      if (r === ringEnd) r = ringWord;
    }
    const hd = (word0 + 8 * h) | 0;
    // last @4 and num @6 of the head entry in one word; the counter; then inflight @0 = 1 with next @2 as it is, in one word.
    w[(hd + 1) | 0] = last | (n << 16);
    this.storeCounter(w, (hd + 2) | 0);
    w[hd] = 1 | (next[h] << 16);
    this.freeHead = e;
    this.chainOf[id] = h | (last << 16);
    // free_head @12 and old_free_head @14 in one word.
    w[this.freeWord] = e | (e << 16);
    return true;
  }

  /** Buffer `id`, of `n` descriptors, was written back as used (visible at the next publish). */
  pushed(id: number, n: number): void {
    this.batch[this.nbatch++] = this.chainOf[id];
    this.nreturn += n;
  }

  /** The queue is about to store the flags of its pushed descriptors; the ring's used position will be `usedIdx`/`usedWrap`. */
  publishing(usedIdx: number, usedWrap: boolean): void {
    const nb = this.nbatch;
    if (nb === 0) return;
    const h16 = this.halves;
    const next = this.next;
    const batch = this.batch;
    const next0 = this.nextHalf0;
    let free = this.freeHead;
    for (let k = 0; k < nb; k++) {
      const c = batch[k];
      const l = c >>> 16;
      next[l] = free;
      h16[next0 + 16 * l] = free;
      free = c & 0xffff;
    }
    this.freeHead = free;
    this.nfree += this.nreturn;
    this.nreturn = 0;
    // free_head @12 (old_free_head @14 stays until published), used_idx @16, used_wrap_counter @20.
    h16[this.freeWord * 2] = free;
    h16[this.usedHalf] = usedIdx;
    const wrap = usedWrap ? 1 : 0;
    this.bytes[this.usedWrapByte] = wrap;
    this.pubIdx = usedIdx;
    this.pubWrap = wrap;
  }

  /** The flags are stored: the batch is the driver's. */
  published(): void {
    const nb = this.nbatch;
    if (nb === 0) return;
    const bytes = this.bytes;
    const batch = this.batch;
    const flag0 = this.flagByte0;
    for (let k = 0; k < nb; k++) bytes[flag0 + 32 * (batch[k] & 0xffff)] = 0;
    this.nbatch = 0;
    const h16 = this.halves;
    h16[this.freeWord * 2 + 1] = this.freeHead;
    h16[this.usedHalf + 1] = this.pubIdx;
    bytes[this.usedWrapByte + 1] = this.pubWrap;
  }
}

export class PackedInflightRegion {
  private readonly tracks: (PackedInflightQueue | null)[];
  private readonly perQueue: number;
  /** The region as 32-, 16- and 8-bit elements (it starts 4-byte aligned: a mapping or a buffer; host order = little-endian). */
  private readonly words: Uint32Array;
  private readonly halves: Uint16Array;
  private readonly bytes: Uint8Array;

  constructor(
    private readonly view: DataView,
    readonly numQueues: number,
    readonly queueSize: number,
  ) {
    this.perQueue = packedInflightQueueBytes(queueSize);
    ({ words: this.words, halves: this.halves, bytes: this.bytes } = inflightRegionViews('packed in-flight region', view, numQueues, queueSize, this.perQueue));
    this.tracks = new Array<PackedInflightQueue | null>(numQueues).fill(null);
  }

  private entry(t: { base: number }, i: number): number {
    return t.base + PACKED_INFLIGHT_HEADER_BYTES + PACKED_INFLIGHT_DESC_BYTES * i;
  }

  /**
   * Queue `queue`, a packed ring of `size` descriptors, starts. `ringFlags(slot)`
   * reads the flags word of a ring slot; `start` is SET_VRING_BASE's position
   * (used only on a region never used). Returns where the ring stands and the
   * chains to run again, oldest first.
   */
  resume(
    queue: number,
    size: number,
    ringFlags: (slot: number) => number,
    start: { availIdx: number; availWrap: boolean; usedIdx: number; usedWrap: boolean },
  ): PackedResume {
    checkInflightQueue(queue, size, this.numQueues, this.queueSize);
    const v = this.view;
    const n = this.queueSize;
    const base = queue * this.perQueue;
    const t = new PackedInflightQueue(this.words, this.halves, this.bytes, base, n, size);
    if (!inflightInUse(v, base, queue, n)) {
      // Never used: every entry free, in index order; the ring at SET_VRING_BASE's position.
      for (let i = 0; i < n; i++) {
        const d = this.entry(t, i);
        v.setUint8(d + D_INFLIGHT, 0);
        v.setUint16(d + D_NEXT, i + 1, true);
        t.next[i] = i + 1;
      }
      v.setUint16(base + OFF_FREE_HEAD, 0, true);
      v.setUint16(base + OFF_OLD_FREE_HEAD, 0, true);
      this.writeUsed(t, start.usedIdx, start.usedWrap, true);
      setInflightInUse(v, base, n);
      this.tracks[queue] = t;
      return { chains: [], ...start };
    }
    let usedIdx = v.getUint16(base + OFF_USED_IDX, true);
    let usedWrap = v.getUint8(base + OFF_USED_WRAP);
    let oldUsedIdx = v.getUint16(base + OFF_OLD_USED_IDX, true);
    let oldUsedWrap = v.getUint8(base + OFF_OLD_USED_WRAP);
    let freeHead = v.getUint16(base + OFF_FREE_HEAD, true);
    let oldFreeHead = v.getUint16(base + OFF_OLD_FREE_HEAD, true);
    for (const [what, x] of [['used_idx', usedIdx], ['old_used_idx', oldUsedIdx]] as const) {
      if (x >= size) throw new QueueSetupError(`queue ${queue}: in-flight region ${what} ${x} is not below the ring size ${size}`);
    }
    for (const [what, x] of [['used_wrap_counter', usedWrap], ['old_used_wrap_counter', oldUsedWrap]] as const) {
      if (x > 1) throw new QueueSetupError(`queue ${queue}: in-flight region ${what} is ${x}`);
    }
    // Step 1: a batch being published when the previous back-end stopped: did the driver get it?
    if (usedIdx !== oldUsedIdx || usedWrap !== oldUsedWrap) {
      const f = ringFlags(oldUsedIdx) & (F_AVAIL | F_USED);
      const availFlags = oldUsedWrap === 1 ? F_AVAIL : F_USED;
      if (f !== availFlags) {
        oldUsedIdx = usedIdx;
        oldUsedWrap = usedWrap;
        oldFreeHead = freeHead;
      }
    }
    // Step 2: roll back whatever was in progress.
    usedIdx = oldUsedIdx;
    usedWrap = oldUsedWrap;
    freeHead = oldFreeHead;
    // Step 3: entries on the free list are not in flight (a bounded walk: the list is input).
    const state = new Uint8Array(n); // 0 unknown, 1 free, 2 in a chain
    for (let e = freeHead, steps = 0; e < n && state[e] === 0 && steps < n; steps++) {
      state[e] = 1;
      const d = this.entry(t, e);
      v.setUint8(d + D_INFLIGHT, 0);
      e = v.getUint16(d + D_NEXT, true);
    }
    // Step 4: the heads still in flight, by counter; their chains from the copies.
    const heads: { h: number; counter: number }[] = [];
    for (let i = 0; i < n; i++) {
      const d = this.entry(t, i);
      const flag = v.getUint8(d + D_INFLIGHT);
      if (flag === 0) continue;
      if (flag !== 1) throw new QueueSetupError(`queue ${queue}: in-flight flag of entry ${i} is ${flag}`);
      heads.push({ h: i, counter: readInflightCounter(v, d + D_COUNTER) });
    }
    heads.sort((a, b) => a.counter - b.counter);
    const chains: PackedResubmit[] = [];
    const ids = new Uint8Array(size);
    let slots = 0;
    for (const { h } of heads) {
      const hd = this.entry(t, h);
      const num = v.getUint16(hd + D_NUM, true);
      const last = v.getUint16(hd + D_LAST, true);
      if (num < 1 || num > size) throw new QueueSetupError(`queue ${queue}: in-flight entry ${h} holds a chain of ${num} descriptors (ring size ${size})`);
      const descs = new DataView(new ArrayBuffer(DESC_SIZE * num));
      let e = h;
      let id = 0;
      for (let k = 0; k < num; k++) {
        if (e >= n) throw new QueueSetupError(`queue ${queue}: in-flight chain at entry ${h} links to entry ${e} >= ${n}`);
        if (state[e] !== 0) throw new QueueSetupError(`queue ${queue}: in-flight chain at entry ${h} reaches entry ${e}, which is free or in another chain`);
        state[e] = 2;
        const d = this.entry(t, e);
        const flags = v.getUint16(d + D_FLAGS, true);
        const isLast = k === num - 1;
        if (isLast !== (e === last)) throw new QueueSetupError(`queue ${queue}: in-flight chain at entry ${h} does not end at its last entry ${last} after ${num}`);
        if (((flags & F_NEXT) === 0) !== isLast) throw new QueueSetupError(`queue ${queue}: in-flight chain at entry ${h}: descriptor ${k} of ${num} has NEXT ${flags & F_NEXT}`);
        descs.setUint32(DESC_SIZE * k, v.getUint32(d + D_ADDR, true), true);
        descs.setUint32(DESC_SIZE * k + 4, v.getUint32(d + D_ADDR + 4, true), true);
        descs.setUint32(DESC_SIZE * k + 8, v.getUint32(d + D_LEN, true), true);
        id = v.getUint16(d + D_ID, true);
        descs.setUint16(DESC_SIZE * k + 12, id, true);
        descs.setUint16(DESC_SIZE * k + 14, flags, true);
        if (!isLast) {
          // The chain's own links: they become free list links again once it completes.
          t.next[e] = v.getUint16(d + D_NEXT, true);
          e = t.next[e];
        }
      }
      if (id >= size) throw new QueueSetupError(`queue ${queue}: in-flight chain at entry ${h} has buffer id ${id} >= ring size ${size}`);
      if (ids[id] !== 0) throw new QueueSetupError(`queue ${queue}: buffer id ${id} is in flight twice`);
      ids[id] = 1;
      slots += num;
      if (slots > size) throw new QueueSetupError(`queue ${queue}: chains in flight hold ${slots} descriptors, more than the ring size ${size}`);
      t.chainOf[id] = h | (last << 16);
      chains.push({ id, descs });
    }
    // The free list again: every entry no chain holds, in index order (mirror and region).
    let prev = -1;
    for (let i = 0; i < n; i++) {
      if (state[i] === 2) continue;
      const d = this.entry(t, i);
      v.setUint8(d + D_INFLIGHT, 0);
      if (prev < 0) freeHead = i;
      else {
        t.next[prev] = i;
        v.setUint16(this.entry(t, prev) + D_NEXT, i, true);
      }
      prev = i;
    }
    if (prev < 0) freeHead = n;
    else {
      t.next[prev] = n;
      v.setUint16(this.entry(t, prev) + D_NEXT, n, true);
    }
    t.freeHead = freeHead;
    t.nfree = n - slots;
    v.setUint16(base + OFF_FREE_HEAD, freeHead, true);
    v.setUint16(base + OFF_OLD_FREE_HEAD, freeHead, true);
    this.writeUsed(t, usedIdx, usedWrap === 1, true);
    const counter = heads.length > 0 ? heads[heads.length - 1].counter + 1 : 0;
    t.setCounter(counter);
    this.tracks[queue] = t;
    let availIdx = usedIdx + slots;
    let availWrap = usedWrap === 1;
    if (availIdx >= size) {
      availIdx -= size;
      availWrap = !availWrap;
    }
    return { chains, availIdx, availWrap, usedIdx, usedWrap: usedWrap === 1 };
  }

  private writeUsed(t: PackedInflightQueue, idx: number, wrap: boolean, old: boolean): void {
    const v = this.view;
    v.setUint16(t.base + OFF_USED_IDX, idx, true);
    v.setUint8(t.base + OFF_USED_WRAP, wrap ? 1 : 0);
    if (old) {
      v.setUint16(t.base + OFF_OLD_USED_IDX, idx, true);
      v.setUint8(t.base + OFF_OLD_USED_WRAP, wrap ? 1 : 0);
    }
  }

  /** The queue stopped: forget its bookkeeping (the region stays for the next start). */
  release(queue: number): void {
    if (queue >= 0 && queue < this.numQueues) this.tracks[queue] = null;
  }

  /** Queue `queue`'s tracking since its last resume(), or null (not started, or released). */
  track(queue: number): PackedInflightQueue | null {
    return this.tracks[queue] ?? null;
  }
}
