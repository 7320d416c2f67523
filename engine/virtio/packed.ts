/**
 * The device side of one packed virtqueue (virtio 1.2 §2.8) over guest
 * memory: one descriptor ring the driver and the device both write, with
 * wrap counters instead of indices; event suppression areas in both
 * directions (§2.8.10, §2.8.21).
 *
 * Descriptor (§2.8.13), 16 bytes: le64 addr, le32 len, le16 id, le16 flags
 * (NEXT 1, WRITE 2, INDIRECT 4, AVAIL 1<<7, USED 1<<15). A descriptor is
 * available when AVAIL equals the driver's wrap counter and USED does not
 * (§2.8.1); the device marks a buffer used by writing one descriptor at its
 * used position with the buffer id, the bytes written and AVAIL = USED = its
 * own wrap counter, then skips as many slots as the chain had descriptors.
 * The buffer id is that of the chain's last descriptor (§2.8.6).
 *
 * The "head" the device core passes around (pop → walk → push) is the
 * buffer id: ids are unique among the buffers the driver has outstanding,
 * ring slots are not (the device's used descriptors overwrite slots of
 * chains still in flight, which were read at pop).
 *
 * Event suppression structure, 4 bytes: le16 desc (bits 0-14 offset, bit 15
 * wrap counter), le16 flags (ENABLE 0, DISABLE 1, DESC 2 with EVENT_IDX).
 * availAddr of the queue is the driver's area, usedAddr the device's.
 *
 * Memory ordering: available() scans the flags with plain loads, then
 * (except on x86-64, where a plain load already acquires: memory.ts) reads
 * the head flags of the last chain it counted once more with Atomics.load
 * (the driver stores a head's flags after the rest of its chain, and chains
 * in ring order, §2.8.21, so every chain counted is in memory once that
 * acquire load returns); pop() of a chain available() did not count reads
 * its head with Atomics.load. The chains' fields are plain loads after
 * that. Each descriptor's flags are checked once: available()
 * remembers how far it has checked (`ahead`) and each chain's length and id
 * (read with its last flags: id and flags share a 32-bit word), pop() takes
 * from there. Used descriptors: len at push(); at flush() the id | flags
 * word of all but the batch's first with plain stores, the first's one
 * Atomics.store last (§2.8.21's batching, one barrier per batch; on
 * x86-64 a plain store, the barrier deferred to settle(): order.ts). An
 * Atomics op on a Node 20 typed array costs ~15-25 ns against ~3 ns for a
 * plain one, so these are counted per batch, not per descriptor.
 *
 * Thread: the engine worker that owns the device.
 */
import type { QueueDesc, RingPos } from '../control';
import { type GuestMemory, PLAIN_LOAD_ACQUIRES } from '../memory';
import { addDescriptor, ChainError, type DescChain } from './chain';
import type { PackedInflightQueue, PackedInflightRegion } from './inflight-packed';
import { type InflightTracker, Resubmits, type Virtqueue } from './queue';
import { InterruptDecision, PLAIN_STORE_RELEASES } from './order';
import { DESC_SIZE, DescFlag, MAX_QUEUE_SIZE, VirtioFeature } from './spec';
import { QueueSetupError, wordIndex } from './split';

const RING_INDIRECT_DESC = 1n << BigInt(VirtioFeature.RingIndirectDesc);
const RING_EVENT_IDX = 1n << BigInt(VirtioFeature.RingEventIdx);

/** The hot paths' flag constants as a const enum: tsc writes literals (a use of an exported const compiles to an `exports.X` load). */
const enum PF {
  Avail = 1 << 7,
  Used = 1 << 15,
  AvailUsed = Avail | Used,
}
export const PACKED_DESC_F_AVAIL = PF.Avail;
export const PACKED_DESC_F_USED = PF.Used;
export const enum PackedEventFlags {
  Enable = 0,
  Disable = 1,
  Desc = 2,
}

const TWO_32 = 4294967296;
const MAX_SAFE_HIGH = 0x1fffff;
/** How far available() looks ahead (the device core takes at most a batch per poll). */
const SCAN_LIMIT = 32;

export class PackedQueue extends InterruptDecision implements Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  broken: string | null = null;
  protected readonly decidableSpan: number;
  /** Unused: a packed ring is tracked in the packed layout (`inflight`). */
  tracker: InflightTracker | null = null;
  /** The in-flight region in QEMU's packed layout (INFLIGHT_SHMFD), or null. */
  inflight: PackedInflightRegion | null = null;
  /** This queue's part of `inflight` once resumeInflight() ran (the hooks call it directly: no per-call lookup). */
  private track: PackedInflightQueue | null = null;
  /** Next descriptor to take and the driver wrap counter expected there. */
  availIdx: number;
  availWrap: boolean;
  /** Next descriptor to write back and the device's wrap counter. */
  usedIdx: number;
  usedWrap: boolean;

  private readonly desc: QueueDesc;
  private mem!: GuestMemory;
  private words!: Uint16Array;
  /** The ring's region as 32-bit words (the ring is 16-byte aligned in it: descriptor i at ringWord + 4i). */
  private ring32!: Uint32Array;
  private ringWord = 0;
  /** Word (16-bit) index of descriptor 0's flags; descriptor i's are at +8i, its id at +8i-1. */
  private wFlags0 = 0;
  /** Complete chains from availIdx that available() has checked, their descriptors, and the slot/wrap after them. */
  private ahead = 0;
  private aheadSlots = 0;
  /** Descriptors and buffer id of each chain available() counted, oldest at aheadFirst (rings of SCAN_LIMIT): pop() takes them without reading the ring again. */
  private readonly aheadLen = new Uint16Array(SCAN_LIMIT);
  private readonly aheadId = new Uint16Array(SCAN_LIMIT);
  private aheadFirst = 0;
  /** The buffer id take() accepted last (pop()'s answer). */
  private takenId = 0;
  private scanIdx = 0;
  private scanWrap = false;
  /** Word indices of the two event areas. */
  private wDriverOff = 0;
  private wDriverFlags = 0;
  private wDeviceFlags = 0;
  private driverWords!: Uint16Array;
  private deviceWords!: Uint16Array;
  /** Per buffer id in flight: its first slot and how many descriptors it had (0 = not in flight). */
  private readonly slotOf: Uint16Array;
  private readonly ndesc: Uint16Array;
  /**
   * Used descriptors whose id and flags are not yet stored (made visible
   * once per batch): the ring32 index of each one's last word and that word
   * (id | flags << 16, an int32: one store writes both).
   */
  private readonly pendingWord: Int32Array;
  private readonly pendingValue: Int32Array;
  private unpublished = 0;
  /** Of those, how many flush() has made visible already (pendingWord/pendingValue hold the rest from index `flushed`). */
  private flushed = 0;
  /** Chains of a previous back-end to run again (resumeInflight), in order, and the next one's index. */
  private readonly resubmit = new Resubmits();
  /** Per buffer id being resubmitted: its descriptors (copied from the region), else null. */
  private resubDescs: (DataView | null)[] | null = null;

  constructor(mem: GuestMemory, q: QueueDesc, features: bigint) {
    super();
    const size = q.size;
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE) {
      throw new QueueSetupError(`queue ${q.index}: packed ring size ${size} is not in [1, ${MAX_QUEUE_SIZE}]`);
    }
    const p = q.pos;
    for (const [what, v] of [['avail', p.availIdx], ['used', p.usedIdx]] as const) {
      if (!Number.isInteger(v) || v < 0 || v >= size) throw new QueueSetupError(`queue ${q.index}: ${what} index ${v} is not below the ring size ${size}`);
    }
    this.index = q.index;
    this.size = size;
    this.desc = q;
    this.eventIdx = (features & RING_EVENT_IDX) !== 0n;
    this.indirect = (features & RING_INDIRECT_DESC) !== 0n;
    this.availIdx = p.availIdx;
    this.availWrap = p.availWrap;
    this.usedIdx = p.usedIdx;
    this.usedWrap = p.usedWrap;
    this.decidableSpan = size;
    this.slotOf = new Uint16Array(size);
    this.ndesc = new Uint16Array(size);
    this.pendingWord = new Int32Array(size);
    this.pendingValue = new Int32Array(size);
    this.locate(mem);
  }

  private locate(mem: GuestMemory): void {
    const q = this.desc;
    const ring = area(mem, q, 'descriptor ring', q.descAddr, DESC_SIZE * this.size, 16);
    const drv = area(mem, q, 'driver event area', q.availAddr, 4, 4);
    const dev = area(mem, q, 'device event area', q.usedAddr, 4, 4);
    this.mem = mem;
    this.words = mem.words[ring.region];
    if (ring.offset % 4 !== 0) throw new QueueSetupError(`queue ${q.index}: descriptor ring is not addressable`);
    this.ring32 = mem.words32[ring.region];
    this.ringWord = wordIndex(q, ring.offset / 4);
    this.wFlags0 = wordIndex(q, (ring.offset + 14) / 2);
    this.rescan();
    this.driverWords = mem.words[drv.region];
    this.wDriverOff = wordIndex(q, drv.offset / 2);
    this.wDriverFlags = this.wDriverOff + 1;
    this.deviceWords = mem.words[dev.region];
    this.wDeviceFlags = wordIndex(q, dev.offset / 2 + 1);
  }

  /** Forget what available() checked ahead: the scan starts again at availIdx. */
  private rescan(): void {
    this.ahead = 0;
    this.aheadSlots = 0;
    this.aheadFirst = 0;
    this.scanIdx = this.availIdx;
    this.scanWrap = this.availWrap;
  }

  /**
   * How many complete chains are available from availIdx (checked up to
   * SCAN_LIMIT ahead). Each descriptor is checked once: the chains counted
   * stay available until pop() takes them (the driver cannot take a buffer
   * back), so the next call goes on from where this one stopped. A chain
   * whose head is available but whose rest is not yet (or that runs past the
   * ring) is not counted; pop() on it would break the queue.
   *
   * The flags are read with plain loads, then the head flags of the last
   * chain counted once more with Atomics.load (acquire) before returning:
   * the driver stores each head's flags after the rest of its chain, and
   * its chains in ring order (§2.8.21), so that one acquire orders every
   * chain counted before the reads of their descriptors (pop, walk). A flag
   * seen available by a plain load is the driver's store of this lap (a
   * slot's older values have the other wrap bit, or AVAIL = USED), so the
   * count stands. One Atomics op per scan that finds chains, none when
   * there is nothing new (an Atomics op is a builtin call on Node 20, ~10 ns),
   * and none on x86-64, where the plain loads acquire (memory.ts).
   */
  available(): number {
    if (this.broken !== null) return 0;
    if (this.resubmit.left > 0) return this.resubmit.left;
    let chains = this.ahead;
    if (chains >= SCAN_LIMIT) return chains;
    // Each descriptor's last 32-bit word: id | flags << 16 (one load gives the chain's id with its last flags).
    const r32 = this.ring32;
    const w3 = this.ringWord + 3;
    const size = this.size;
    let slot = this.scanIdx;
    let wrap = this.scanWrap;
    let slots = this.aheadSlots;
    let lastHead = -1;
    while (chains < SCAN_LIMIT && slots < size) {
      let x = r32[w3 + 4 * slot];
      let f = x >>> 16;
      if ((f & PF.AvailUsed) !== (wrap ? PF.Avail : PF.Used)) break;
      let s = slot;
      let sw = wrap;
      let n = 0;
      let complete = false;
      for (;;) {
        n++;
        if (++s === size) {
          s = 0;
          sw = !sw;
        }
        if ((f & DescFlag.Next) === 0) {
          complete = true;
          break;
        }
        if (slots + n >= size) break;
        x = r32[w3 + 4 * s];
        f = x >>> 16;
        if ((f & PF.AvailUsed) !== (sw ? PF.Avail : PF.Used)) break;
      }
      if (!complete) break;
      const k = (this.aheadFirst + chains) & (SCAN_LIMIT - 1);
      this.aheadLen[k] = n;
      this.aheadId[k] = x & 0xffff;
      lastHead = slot;
      chains++;
      slots += n;
      slot = s;
      wrap = sw;
    }
    // Acquire: the chains counted are in memory before pop() and walk() read them (see above).
    if (lastHead >= 0 && !PLAIN_LOAD_ACQUIRES) Atomics.load(r32, w3 + 4 * lastHead);
    this.ahead = chains;
    this.aheadSlots = slots;
    this.scanIdx = slot;
    this.scanWrap = wrap;
    return chains;
  }

  /**
   * Take the chain at availIdx: note its id (from its last descriptor) and
   * length. A chain available() counted was checked there (every
   * descriptor available with the right wrap bit, §2.8.1, ordered by the
   * scan's acquire load, the chain ending within the ring): its length comes from
   * that scan, no flag is read again. Otherwise (pop() without available())
   * the chain is checked here. -1 and broken on a bad chain or an id
   * already in flight.
   */
  pop(): number {
    if (this.resubmit.left > 0) {
      // Recorded in flight already; availIdx is past it.
      return this.resubmit.take();
    }
    const size = this.size;
    const start = this.availIdx;
    if (this.ahead > 0) {
      const n = this.aheadLen[this.aheadFirst];
      let end = start + n;
      let wrap = this.availWrap;
      if (end >= size) {
        end -= size;
        wrap = !wrap;
      }
      if (!this.take(start, n, this.aheadId[this.aheadFirst], end, wrap)) return -1;
      this.aheadFirst = (this.aheadFirst + 1) & (SCAN_LIMIT - 1);
      this.ahead--;
      this.aheadSlots -= n;
      return this.takenId;
    }
    const w = this.words;
    const f0 = this.wFlags0;
    let slot = start;
    let wrap = this.availWrap;
    let n = 0;
    let flags = Atomics.load(w, f0 + slot * 8);
    for (;;) {
      if (n === size) {
        this.broken = `chain at descriptor ${start} has no final descriptor within the ring size ${size}`;
        return -1;
      }
      if ((flags & PF.AvailUsed) !== (wrap ? PF.Avail : PF.Used)) {
        this.broken = `descriptor ${slot} of the chain at ${start} is not available (AVAIL/USED flags do not match wrap counter ${wrap ? 1 : 0})`;
        return -1;
      }
      n++;
      const last = slot;
      if (++slot === size) {
        slot = 0;
        wrap = !wrap;
      }
      if ((flags & DescFlag.Next) === 0) {
        if (!this.take(start, n, w[f0 + last * 8 - 1], slot, wrap)) return -1;
        this.rescan();
        return this.takenId;
      }
      flags = w[f0 + slot * 8];
    }
  }

  /**
   * The chain of `n` descriptors at `start` with buffer id `id` (its last
   * descriptor's) is taken: check the id, record the chain (and in the
   * in-flight region), move availIdx to `next`/`wrap`. False and broken when
   * the id is bad or already in flight.
   */
  private take(start: number, n: number, id: number, next: number, wrap: boolean): boolean {
    const size = this.size;
    if (id >= size) {
      this.broken = `chain at descriptor ${start} has buffer id ${id} >= ring size ${size}`;
      return false;
    }
    if (this.ndesc[id] !== 0) {
      this.broken = `chain at descriptor ${start} reuses buffer id ${id}, which is still in flight`;
      return false;
    }
    if (this.track !== null && !this.track.popped(id, this.ring32, this.ringWord, start, n, size)) {
      this.broken = `chain at descriptor ${start} makes more descriptors in flight than the ring size ${size}`;
      return false;
    }
    this.slotOf[id] = start;
    this.ndesc[id] = n;
    this.availIdx = next;
    this.availWrap = wrap;
    this.takenId = id;
    return true;
  }

  /** Walk buffer `id`'s descriptors (ring, or one indirect table) into `out`. */
  walk(id: number, out: DescChain): ChainError {
    out.reset(id);
    const n = this.ndesc[id];
    if (n === 0) return ChainError.HeadOutOfRange;
    const mem = this.mem;
    // The ring, and an indirect table that is 4-byte aligned, are read as 32-bit words (addr lo, addr hi,
    // len, id | flags << 16: `words` from word `w0`); another table or a resubmitted chain's copy through
    // a DataView (`view` set).
    let words = this.ring32;
    let w0 = this.ringWord;
    let view: DataView | null = null;
    let base = 0;
    let slot = this.slotOf[id];
    let count = n;
    let ringSize = this.size;
    const copy = this.resubDescs?.[id] ?? null;
    if (copy !== null) {
      // A resubmitted chain: its descriptors as the previous back-end copied them (the ring slots may be reused).
      view = copy;
      slot = 0;
      ringSize = count;
    }
    let inIndirect = false;
    let err: ChainError = ChainError.Ok;
    for (let i = 0; i < count; i++) {
      let lo: number, hi: number, len: number, flags: number;
      if (view === null) {
        const d = (w0 + 4 * slot) | 0;
        lo = words[d];
        hi = words[(d + 1) | 0];
        len = words[(d + 2) | 0];
        flags = words[(d + 3) | 0] >>> 16;
      } else {
        const d = base + slot * DESC_SIZE;
        lo = view.getUint32(d, true);
        hi = view.getUint32(d + 4, true);
        len = view.getUint32(d + 8, true);
        flags = view.getUint16(d + 14, true);
      }
      if (++slot === ringSize) slot = 0;
      if (flags & DescFlag.Indirect) {
        // §2.8.7: one indirect descriptor, alone in its chain, pointing at a table of descriptors.
        if (inIndirect) return ChainError.NestedIndirect;
        if (!this.indirect) return ChainError.IndirectNotNegotiated;
        if (n !== 1 || flags & DescFlag.Next) return ChainError.IndirectWithNext;
        if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > this.size) return ChainError.BadIndirectTable;
        if (hi > MAX_SAFE_HIGH) return ChainError.BadAddress;
        const r = mem.translate(hi * TWO_32 + lo, len);
        if (r < 0) return ChainError.BadAddress;
        base = mem.offset;
        if ((base & 3) === 0) {
          // As the ring: offsets in a window are below 2^32, word indices int32.
          words = mem.words32[r];
          w0 = (base / 4) | 0;
          view = null;
        } else {
          view = mem.views[r];
        }
        slot = 0;
        count = len / DESC_SIZE;
        ringSize = count;
        inIndirect = true;
        i = -1;
        continue;
      }
      err = addDescriptor(mem, lo, hi, len, flags, i === count - 1, err, out);
    }
    return err;
  }

  /**
   * Write buffer `id` back as used (len now; its id and flags, one 32-bit
   * word, at flush(), so the driver sees a batch at once) and skip the
   * slots its chain took.
   */
  push(id: number, len: number): void {
    if (this.resubDescs !== null) this.resubDescs[id] = null;
    if (this.track !== null) this.track.pushed(id, this.ndesc[id]);
    const d = this.ringWord + 4 * this.usedIdx;
    this.ring32[d + 2] = len;
    const k = this.unpublished++;
    this.pendingWord[k] = d + 3;
    this.pendingValue[k] = this.usedWrap ? id | (PF.AvailUsed << 16) : id;
    const n = this.ndesc[id];
    this.ndesc[id] = 0;
    this.sinceDecision += n;
    let u = this.usedIdx + n;
    if (u >= this.size) {
      u -= this.size;
      this.usedWrap = !this.usedWrap;
    }
    this.usedIdx = u;
  }

  get pending(): number {
    return this.unpublished;
  }

  /**
   * Store the id and flags (one 32-bit word) of every used descriptor
   * written since the last publish: the first one last (§2.8.21's
   * batching: the driver reads in ring order and stops at the first
   * descriptor not yet used, so storing the first last makes the whole
   * batch visible at once). Only that last store is
   * an Atomics.store: it orders every earlier plain store (lengths, the
   * other ids and flags) before it, and the event area load after it. On
   * x86-64 it is a plain store and a "no" from that load is settled later
   * (settle(), order.ts).
   */
  publish(): boolean {
    if (this.unpublished === 0) return false;
    this.flush();
    this.unpublished = 0;
    this.flushed = 0;
    return this.decideAfterStore();
  }

  /** Used descriptors written and whose flags are not yet stored. */
  get unflushed(): number {
    return this.unpublished - this.flushed;
  }

  /**
   * Store the flags of the used descriptors written since the last flush
   * (the first of them last), without an interrupt decision: publish()
   * makes that for everything since the previous one.
   */
  flush(): void {
    const first = this.flushed;
    const n = this.unpublished;
    if (n === first) return;
    this.flushed = n;
    const r32 = this.ring32;
    const track = this.track;
    if (track !== null) track.publishing(this.usedIdx, this.usedWrap);
    for (let k = n - 1; k > first; k--) r32[this.pendingWord[k]] = this.pendingValue[k];
    if (PLAIN_STORE_RELEASES) r32[this.pendingWord[first]] = this.pendingValue[first];
    else Atomics.store(r32, this.pendingWord[first], this.pendingValue[first]);
    if (track !== null) track.published();
  }

  /** §2.8.10: whether the driver's event suppression area, as read now, asks for an interrupt for the descriptors used since the previous decision. */
  protected wantsInterrupt(hint: boolean): boolean {
    const newIdx = this.usedIdx;
    let old = this.signalledUsed;
    const dw = this.driverWords;
    const flags = (hint ? dw[this.wDriverFlags] : Atomics.load(dw, this.wDriverFlags)) & 3;
    if (flags === PackedEventFlags.Disable) return false;
    if (flags !== PackedEventFlags.Desc || !this.eventIdx || !this.signalledValid) return true;
    // A whole ring or more used since the decision: the positions below no longer tell (at worst one interrupt too many).
    if (this.sinceDecision >= this.decidableSpan) return true;
    const offWrap = hint ? dw[this.wDriverOff] : Atomics.load(dw, this.wDriverOff);
    // Unwrapped as DPDK's vhost_vring_call_packed does: indices below `size`, the event index shifted when its wrap differs.
    let off = offWrap & 0x7fff;
    if (newIdx <= old) old -= this.size;
    if ((offWrap >> 15 !== 0) !== this.usedWrap) off -= this.size;
    return ((newIdx - off - 1) & 0xffff) < ((newIdx - old) & 0xffff);
  }

  setNotification(enabled: boolean): void {
    Atomics.store(this.deviceWords, this.wDeviceFlags, enabled ? PackedEventFlags.Enable : PackedEventFlags.Disable);
    // The re-check after enabling reads flags with plain loads: they must come after this store is visible
    // (store→load). An Atomics.load after it orders them (arm64: stlr then ldar, acquire; x86-64: xchg).
    if (enabled) Atomics.load(this.deviceWords, this.wDeviceFlags);
  }

  /**
   * Resume from the in-flight region (vhost-user "Inflight I/O tracking",
   * packed layout): the ring position comes from the region (QEMU cannot
   * know it after the previous back-end died: it sends the last one it got),
   * and the chains still in flight run first, from their recorded copies.
   */
  resumeInflight(): number {
    const region = this.inflight;
    if (region === null) return 0;
    const r = region.resume(this.index, this.size, (slot) => Atomics.load(this.words, this.wFlags0 + slot * 8), this.position());
    this.track = region.track(this.index);
    this.availIdx = r.availIdx;
    this.availWrap = r.availWrap;
    this.usedIdx = r.usedIdx;
    this.usedWrap = r.usedWrap;
    this.rescan();
    if (r.chains.length === 0) return 0;
    this.resubDescs = new Array<DataView | null>(this.size).fill(null);
    const ids: number[] = [];
    for (const c of r.chains) {
      this.resubDescs[c.id] = c.descs;
      this.ndesc[c.id] = c.descs.byteLength / DESC_SIZE;
      this.slotOf[c.id] = 0;
      ids.push(c.id);
    }
    this.resubmit.reset(ids);
    return r.chains.length;
  }

  position(): RingPos {
    return { availIdx: this.availIdx, availWrap: this.availWrap, usedIdx: this.usedIdx, usedWrap: this.usedWrap };
  }

  remap(mem: GuestMemory): void {
    this.locate(mem);
  }
}

function area(mem: GuestMemory, q: QueueDesc, name: string, uva: number, len: number, align: number): { region: number; offset: number } {
  if (!Number.isSafeInteger(uva) || uva < 0) throw new QueueSetupError(`queue ${q.index}: ${name} address ${uva} is not a valid address`);
  const gpa = mem.uvaToGpa(uva, len);
  if (gpa < 0) throw new QueueSetupError(`queue ${q.index}: ${name} 0x${uva.toString(16)}+${len} is not inside one memory region`);
  if (gpa % align !== 0) throw new QueueSetupError(`queue ${q.index}: ${name} at guest address 0x${gpa.toString(16)} is not ${align}-byte aligned`);
  const region = mem.translate(gpa, len);
  const offset = mem.offset;
  if (region < 0 || offset % 2 !== 0) throw new QueueSetupError(`queue ${q.index}: ${name} is not addressable`);
  return { region, offset };
}
