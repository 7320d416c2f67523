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
 * Memory ordering: flags are read and written with Atomics on 16-bit words
 * (sequentially consistent in V8); a descriptor's other fields are read
 * after its flags said it is available, and the used descriptor's id/len
 * are written before its flags.
 *
 * Thread: the engine worker that owns the device.
 */
import type { QueueDesc, RingPos } from '../control';
import type { GuestMemory } from '../memory';
import { addBuffer, ChainError, type DescChain } from './chain';
import type { PackedInflightRegion } from './inflight-packed';
import { type InflightTracker, Resubmits, type Virtqueue } from './queue';
import { DESC_SIZE, DescFlag, MAX_QUEUE_SIZE, VirtioFeature } from './spec';
import { QueueSetupError } from './split';

const RING_INDIRECT_DESC = 1n << BigInt(VirtioFeature.RingIndirectDesc);
const RING_EVENT_IDX = 1n << BigInt(VirtioFeature.RingEventIdx);

export const PACKED_DESC_F_AVAIL = 1 << 7;
export const PACKED_DESC_F_USED = 1 << 15;
export const enum PackedEventFlags {
  Enable = 0,
  Disable = 1,
  Desc = 2,
}

const TWO_32 = 4294967296;
const MAX_SAFE_HIGH = 0x1fffff;
/** How far available() looks ahead (the device core takes at most a batch per poll). */
const SCAN_LIMIT = 32;

export class PackedQueue implements Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  broken: string | null = null;
  /** Unused: a packed ring is tracked in the packed layout (`inflight`). */
  tracker: InflightTracker | null = null;
  /** The in-flight region in QEMU's packed layout (INFLIGHT_SHMFD), or null. */
  inflight: PackedInflightRegion | null = null;
  /** Next descriptor to take and the driver wrap counter expected there. */
  availIdx: number;
  availWrap: boolean;
  /** Next descriptor to write back and the device's wrap counter. */
  usedIdx: number;
  usedWrap: boolean;

  private readonly desc: QueueDesc;
  private mem!: GuestMemory;
  private view!: DataView;
  private words!: Uint16Array;
  /** Byte offset of the ring in its region, and word indices of the two event areas. */
  private ringOff = 0;
  private wDriverOff = 0;
  private wDriverFlags = 0;
  private wDeviceFlags = 0;
  private driverWords!: Uint16Array;
  private deviceWords!: Uint16Array;
  /** Per buffer id in flight: its first slot and how many descriptors it had (0 = not in flight). */
  private readonly slotOf: Uint16Array;
  private readonly ndesc: Uint16Array;
  /** Used descriptors written but whose flags are not yet stored (published once per batch). */
  private readonly pendingSlot: Uint16Array;
  private readonly pendingFlags: Uint16Array;
  private unpublished = 0;
  /** EVENT_IDX: the used position at the previous interrupt decision. */
  private signalledUsed = 0;
  private signalledValid = false;
  /** Chains of a previous back-end to run again (resumeInflight), in order, and the next one's index. */
  private readonly resubmit = new Resubmits();
  /** Per buffer id being resubmitted: its descriptors (copied from the region), else null. */
  private resubDescs: (DataView | null)[] | null = null;

  constructor(mem: GuestMemory, q: QueueDesc, features: bigint) {
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
    this.slotOf = new Uint16Array(size);
    this.ndesc = new Uint16Array(size);
    this.pendingSlot = new Uint16Array(size);
    this.pendingFlags = new Uint16Array(size);
    this.locate(mem);
  }

  private locate(mem: GuestMemory): void {
    const q = this.desc;
    const ring = area(mem, q, 'descriptor ring', q.descAddr, DESC_SIZE * this.size, 16);
    const drv = area(mem, q, 'driver event area', q.availAddr, 4, 4);
    const dev = area(mem, q, 'device event area', q.usedAddr, 4, 4);
    this.mem = mem;
    this.view = mem.views[ring.region];
    this.words = mem.words[ring.region];
    this.ringOff = ring.offset;
    this.driverWords = mem.words[drv.region];
    this.wDriverOff = drv.offset / 2;
    this.wDriverFlags = drv.offset / 2 + 1;
    this.deviceWords = mem.words[dev.region];
    this.wDeviceFlags = dev.offset / 2 + 1;
  }

  /** Is descriptor `slot` available for a driver wrap counter of `wrap`? */
  private isAvail(slot: number, wrap: boolean): boolean {
    const f = Atomics.load(this.words, (this.ringOff + slot * DESC_SIZE + 14) / 2);
    return ((f & PACKED_DESC_F_AVAIL) !== 0) === wrap && ((f & PACKED_DESC_F_USED) !== 0) !== wrap;
  }

  /** How many chains are available from availIdx (looking at most SCAN_LIMIT chains ahead). */
  available(): number {
    if (this.broken !== null) return 0;
    if (this.resubmit.left > 0) return this.resubmit.left;
    let slot = this.availIdx;
    let wrap = this.availWrap;
    let chains = 0;
    let seen = 0;
    while (chains < SCAN_LIMIT && seen < this.size && this.isAvail(slot, wrap)) {
      const f = this.words[(this.ringOff + slot * DESC_SIZE + 14) / 2];
      seen++;
      if (++slot === this.size) {
        slot = 0;
        wrap = !wrap;
      }
      if ((f & DescFlag.Next) === 0) chains++;
    }
    return chains;
  }

  /**
   * Take the chain at availIdx: check every descriptor of it is available
   * with the right wrap bit (§2.8.1) and that it ends within the ring, note
   * its id (from its last descriptor) and length. -1 and broken on a bad
   * chain or an id already in flight.
   */
  pop(): number {
    if (this.resubmit.left > 0) {
      // Recorded in flight already; availIdx is past it.
      return this.resubmit.take();
    }
    const start = this.availIdx;
    let slot = start;
    let wrap = this.availWrap;
    let n = 0;
    let flags = 0;
    for (;;) {
      if (n === this.size) {
        this.broken = `chain at descriptor ${start} has no final descriptor within the ring size ${this.size}`;
        return -1;
      }
      if (!this.isAvail(slot, wrap)) {
        this.broken = `descriptor ${slot} of the chain at ${start} is not available (AVAIL/USED flags do not match wrap counter ${wrap ? 1 : 0})`;
        return -1;
      }
      flags = this.words[(this.ringOff + slot * DESC_SIZE + 14) / 2];
      n++;
      const last = slot;
      if (++slot === this.size) {
        slot = 0;
        wrap = !wrap;
      }
      if ((flags & DescFlag.Next) === 0) {
        const id = this.view.getUint16(this.ringOff + last * DESC_SIZE + 12, true);
        if (id >= this.size) {
          this.broken = `chain at descriptor ${start} has buffer id ${id} >= ring size ${this.size}`;
          return -1;
        }
        if (this.ndesc[id] !== 0) {
          this.broken = `chain at descriptor ${start} reuses buffer id ${id}, which is still in flight`;
          return -1;
        }
        if (this.inflight !== null && !this.inflight.popped(this.index, id, this.view, this.ringOff, start, n, this.size)) {
          this.broken = `chain at descriptor ${start} makes more descriptors in flight than the ring size ${this.size}`;
          return -1;
        }
        this.slotOf[id] = start;
        this.ndesc[id] = n;
        this.availIdx = slot;
        this.availWrap = wrap;
        return id;
      }
    }
  }

  /** Walk buffer `id`'s descriptors (ring, or one indirect table) into `out`. */
  walk(id: number, out: DescChain): ChainError {
    out.reset(id);
    const n = this.ndesc[id];
    if (n === 0) return ChainError.HeadOutOfRange;
    const mem = this.mem;
    let view = this.view;
    let base = this.ringOff;
    let slot = this.slotOf[id];
    let count = n;
    let ringSize = this.size;
    const copy = this.resubDescs?.[id] ?? null;
    if (copy !== null) {
      // A resubmitted chain: its descriptors as the previous back-end copied them (the ring slots may be reused).
      view = copy;
      base = 0;
      slot = 0;
      ringSize = count;
    }
    let inIndirect = false;
    let err: ChainError = ChainError.Ok;
    for (let i = 0; i < count; i++) {
      const d = base + slot * DESC_SIZE;
      const lo = view.getUint32(d, true);
      const hi = view.getUint32(d + 4, true);
      const len = view.getUint32(d + 8, true);
      const flags = view.getUint16(d + 14, true);
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
        view = mem.views[r];
        base = mem.offset;
        slot = 0;
        count = len / DESC_SIZE;
        ringSize = count;
        inIndirect = true;
        i = -1;
        continue;
      }
      const last = i === count - 1;
      if (err === ChainError.Ok && len !== 0) {
        if (flags & DescFlag.Write) out.writableBytes += len;
        else if (out.count !== out.readable) err = ChainError.ReadableAfterWritable;
        else out.readableBytes += len;
        if (err === ChainError.Ok) {
          err = hi > MAX_SAFE_HIGH ? ChainError.BadAddress : addBuffer(mem, hi * TWO_32 + lo, len, out);
          if (err === ChainError.Ok && !(flags & DescFlag.Write)) out.readable = out.count;
          if (err === ChainError.Ok && last && flags & DescFlag.Write) {
            const k = out.count - 1;
            out.tailRegion = out.region[k];
            out.tailOffset = out.offset[k] + out.len[k] - 1;
          }
        }
      }
      if (last && err !== ChainError.Ok && flags & DescFlag.Write && len !== 0 && hi <= MAX_SAFE_HIGH) {
        const r = mem.translate(hi * TWO_32 + lo + len - 1, 1);
        if (r >= 0) {
          out.tailRegion = r;
          out.tailOffset = mem.offset;
        }
      }
    }
    return err;
  }

  /**
   * Write buffer `id` back as used (id and len now; its flags at publish(),
   * so the driver sees a batch at once) and skip the slots its chain took.
   */
  push(id: number, len: number): void {
    if (this.resubDescs !== null) this.resubDescs[id] = null;
    if (this.inflight !== null) this.inflight.pushed(this.index, id, this.ndesc[id]);
    const slot = this.usedIdx;
    const d = this.ringOff + slot * DESC_SIZE;
    this.view.setUint16(d + 12, id, true);
    this.view.setUint32(d + 8, len, true);
    const k = this.unpublished++;
    this.pendingSlot[k] = slot;
    this.pendingFlags[k] = this.usedWrap ? PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED : 0;
    const n = this.ndesc[id];
    this.ndesc[id] = 0;
    let u = slot + n;
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
   * Store the flags of every used descriptor written since the last publish:
   * the first one last (§2.8.21-like batching: the driver reads in ring
   * order and stops at the first descriptor not yet used, so storing the
   * first last makes the whole batch visible at once).
   */
  publish(): boolean {
    const n = this.unpublished;
    if (n === 0) return false;
    this.unpublished = 0;
    const w = this.words;
    const base = this.ringOff / 2;
    if (this.inflight !== null) this.inflight.publishing(this.index, this.usedIdx, this.usedWrap);
    for (let k = n - 1; k >= 0; k--) {
      Atomics.store(w, base + this.pendingSlot[k] * (DESC_SIZE / 2) + 7, this.pendingFlags[k]);
    }
    if (this.inflight !== null) this.inflight.published(this.index);
    return this.needInterrupt();
  }

  /** §2.8.10: the driver's event suppression area decides. */
  private needInterrupt(): boolean {
    const newIdx = this.usedIdx;
    let old = this.signalledUsed;
    const valid = this.signalledValid;
    this.signalledUsed = newIdx;
    this.signalledValid = true;
    const flags = Atomics.load(this.driverWords, this.wDriverFlags) & 3;
    if (flags === PackedEventFlags.Disable) return false;
    if (flags !== PackedEventFlags.Desc || !this.eventIdx || !valid) return true;
    const offWrap = Atomics.load(this.driverWords, this.wDriverOff);
    // Unwrapped as DPDK's vhost_vring_call_packed does: indices below `size`, the event index shifted when its wrap differs.
    let off = offWrap & 0x7fff;
    if (newIdx <= old) old -= this.size;
    if ((offWrap >> 15 !== 0) !== this.usedWrap) off -= this.size;
    return ((newIdx - off - 1) & 0xffff) < ((newIdx - old) & 0xffff);
  }

  setNotification(enabled: boolean): void {
    Atomics.store(this.deviceWords, this.wDeviceFlags, enabled ? PackedEventFlags.Enable : PackedEventFlags.Disable);
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
    const r = region.resume(this.index, this.size, (slot) => Atomics.load(this.words, (this.ringOff + slot * DESC_SIZE + 14) / 2), this.position());
    this.availIdx = r.availIdx;
    this.availWrap = r.availWrap;
    this.usedIdx = r.usedIdx;
    this.usedWrap = r.usedWrap;
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
