/**
 * The device side of one split virtqueue (virtio 1.2 §2.7) over guest memory:
 * taking heads from the available ring, walking their chains (chain.ts),
 * putting used elements, publishing the used index once per batch, and the
 * notification rules in both directions (§2.7.7, §2.7.10: flags, or
 * VIRTIO_F_EVENT_IDX's used_event / avail_event).
 *
 * Thread: the engine worker that owns the device. The ring views are made
 * once at construction from the worker's GuestMemory.
 *
 * Layout (§2.7.5, §2.7.6, §2.7.8), offsets in bytes:
 *   descriptor table: 16 * size, 16-byte aligned
 *   available ring:   le16 flags @0, le16 idx @2, le16 ring[size] @4, le16 used_event @4+2*size; 2-byte aligned
 *   used ring:        le16 flags @0, le16 idx @2, {le32 id, le32 len} ring[size] @4, le16 avail_event @4+8*size; 4-byte aligned
 *
 * Memory ordering: the guest runs on other CPUs. Index words are written
 * with Atomics on a Uint16Array over the region (sequentially consistent: an
 * `xchg`/`stlr`+`ldar` on x86-64/arm64 in V8, whether or not the buffer is
 * shared); the avail idx is read with a plain load, an acquire on x86-64,
 * followed elsewhere by an Atomics.load once it shows new entries (memory.ts), so
 *   - ring entries are read after the avail idx load that made them visible,
 *   - used elements (plain DataView stores) are written before the used idx store,
 *   - the used idx store comes before the used_event / flags load that
 *     decides the interrupt, and the avail_event / flags store before the
 *     re-check of the avail idx (the store→load pairs need a full barrier).
 * Except on x86-64, where the used idx is a plain store and the interrupt
 * decision's barrier is taken only when the load says "no" and then later
 * (order.ts, publish() and settle()).
 * Uint16Array is host order: vhostd targets little-endian hosts only.
 */
import type { QueueDesc, RingPos } from '../control';
import { type GuestMemory, PLAIN_LOAD_ACQUIRES } from '../memory';
import { type ChainError, type DescChain, walkChain } from './chain';
import { type InflightTracker, Resubmits, type Virtqueue } from './queue';
import { DESC_SIZE, MAX_QUEUE_SIZE, VirtioFeature, VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY } from './spec';
import { InterruptDecision, PLAIN_STORE_RELEASES } from './order';

const RING_INDIRECT_DESC = 1n << BigInt(VirtioFeature.RingIndirectDesc);
const RING_EVENT_IDX = 1n << BigInt(VirtioFeature.RingEventIdx);

/** A queue that cannot be started (bad size or ring addresses). */
export class QueueSetupError extends Error {
  readonly code = 'ERR_QUEUE_SETUP';
  constructor(message: string) {
    super(message);
    this.name = 'QueueSetupError';
  }
}

/**
 * vring_need_event (§2.7.10): true when `eventIdx` lies in the window of
 * indices (old, new] just published, i.e. the other side asked to be told
 * once the index passes eventIdx.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

export class SplitQueue extends InterruptDecision implements Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  /** Next avail ring slot to take (free-running u16). */
  lastAvailIdx: number;
  /** Next used ring slot to fill (free-running u16); published by publishUsed(). */
  usedIdx: number;
  /** Set when the guest broke the ring protocol; the queue is no longer read. */
  broken: string | null = null;
  tracker: InflightTracker | null = null;
  protected readonly decidableSpan = 0x8000;

  private readonly desc: QueueDesc;
  private mem: GuestMemory;
  private readonly mask: number;
  private descRegion = 0;
  private descOffset = 0;
  /** The descriptor table's region as 32-bit words when the table is 4-byte aligned in it (it is 16-byte aligned in guest memory), else null. */
  private desc32: Uint32Array | null = null;
  private usedView!: DataView;
  private usedOffset = 0;
  /**
   * The used ring's region as 32-bit words when the ring is 4-byte aligned in it (as desc32), else
   * null (push() then writes through usedView at usedOffset), and the int32 index of used ring
   * entry 0's first word in it. A word index, unlike usedOffset (a byte offset that may pass 2^31,
   * kept as a double), is always an int32: push() indexes with no float conversion.
   */
  private used32: Uint32Array | null = null;
  private wUsedRing32 = 0;
  private availWords!: Uint16Array;
  private usedWords!: Uint16Array;
  /** Word indices into availWords / usedWords. */
  private wAvailFlags = 0;
  private wAvailIdx = 0;
  private wAvailRing = 0;
  private wUsedEvent = 0;
  private wUsedFlags = 0;
  private wUsedIdx = 0;
  private wAvailEvent = 0;
  /** Used entries pushed since the last publish, and how many of them flush() has made visible already. */
  private unpublished = 0;
  private flushed = 0;
  /** In-flight heads of a previous back-end to run again before new ones (resumeInflight), and the next one's index. */
  private readonly resubmit = new Resubmits();

  constructor(mem: GuestMemory, q: QueueDesc, features: bigint) {
    super();
    const size = q.size;
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
      throw new QueueSetupError(`queue ${q.index}: size ${size} is not a power of 2 in [1, ${MAX_QUEUE_SIZE}]`);
    }
    const start = q.pos.availIdx;
    if (!Number.isInteger(start) || start < 0 || start > 0xffff) {
      throw new QueueSetupError(`queue ${q.index}: avail index ${start} is not a u16`);
    }
    this.index = q.index;
    this.size = size;
    this.mask = size - 1;
    this.desc = q;
    this.mem = mem;
    this.eventIdx = (features & RING_EVENT_IDX) !== 0n;
    this.indirect = (features & RING_INDIRECT_DESC) !== 0n;
    this.lastAvailIdx = start;
    // Everything before the resume point was completed (in-flight resubmission is issue #10's).
    this.usedIdx = start;
    this.locate(mem);
  }

  /** Find the rings in `mem` and build the views (construction and remap). */
  private locate(mem: GuestMemory): void {
    const q = this.desc;
    const size = this.size;
    const ev = this.eventIdx ? 2 : 0;
    const desc = ringLocation(mem, q, 'desc', q.descAddr, DESC_SIZE * size, 16);
    const avail = ringLocation(mem, q, 'avail', q.availAddr, 4 + 2 * size + ev, 2);
    const used = ringLocation(mem, q, 'used', q.usedAddr, 4 + 8 * size + ev, 4);
    this.descRegion = desc.region;
    this.descOffset = desc.offset;
    this.desc32 = desc.offset % 4 === 0 ? mem.words32[desc.region] : null;
    this.availWords = mem.words[avail.region];
    this.usedWords = mem.words[used.region];
    this.usedView = mem.views[used.region];
    this.usedOffset = used.offset;
    this.used32 = used.offset % 4 === 0 ? mem.words32[used.region] : null;
    this.wUsedRing32 = this.used32 !== null ? wordIndex(q, (used.offset + 4) / 4) : 0;
    // Word indices as int32 (offsets are below 2^32, so offset / 2 is below 2^31), not doubles.
    const a = wordIndex(q, avail.offset / 2);
    const u = wordIndex(q, used.offset / 2);
    this.wAvailFlags = a;
    this.wAvailIdx = a + 1;
    this.wAvailRing = a + 2;
    this.wUsedEvent = a + 2 + size;
    this.wUsedFlags = u;
    this.wUsedIdx = u + 1;
    this.wAvailEvent = u + 2 + 4 * size;
  }

  /**
   * How many heads the driver has made available beyond lastAvailIdx. More
   * than the queue size is a driver bug (§2.7.13.3): the queue is marked
   * broken and 0 returned.
   */
  available(): number {
    if (this.broken !== null) return 0;
    if (this.resubmit.left > 0) return this.resubmit.left;
    const words = this.availWords;
    let idx = words[this.wAvailIdx];
    if (idx === this.lastAvailIdx) return 0;
    // Acquire before the new entries are read (memory.ts).
    if (!PLAIN_LOAD_ACQUIRES) idx = Atomics.load(words, this.wAvailIdx);
    const n = (idx - this.lastAvailIdx) & 0xffff;
    if (n > this.size) {
      this.broken = `avail idx ${idx} is ${n} entries past ${this.lastAvailIdx}, more than the queue size ${this.size}`;
      return 0;
    }
    return n;
  }

  /**
   * Take the next available head (call only after available() said there is
   * one). Returns -1 and marks the queue broken if the head is out of range.
   */
  pop(): number {
    if (this.resubmit.left > 0) {
      // Already recorded in flight (with its original order); lastAvailIdx is past it.
      return this.resubmit.take();
    }
    const head = this.availWords[this.wAvailRing + (this.lastAvailIdx & this.mask)];
    this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
    if (head >= this.size) {
      this.broken = `avail ring entry ${(this.lastAvailIdx - 1) & 0xffff} holds head ${head} >= queue size ${this.size}`;
      return -1;
    }
    if (this.tracker !== null) this.tracker.popped(head);
    return head;
  }

  /** Walk the chain of `head` into `out`. */
  walk(head: number, out: DescChain): ChainError {
    return walkChain(this.mem, this.descRegion, this.descOffset, this.size, head, this.indirect, out, this.desc32);
  }

  /** Put one used element (not yet visible to the driver: see publish()). */
  push(id: number, len: number): void {
    if (this.tracker !== null) this.tracker.pushed(id);
    const u32 = this.used32;
    if (u32 !== null) {
      // Host order is little-endian on every target (as the 16-bit ring words).
      const w = this.wUsedRing32 + 2 * (this.usedIdx & this.mask);
      u32[w] = id;
      u32[w + 1] = len;
    } else {
      const off = this.usedOffset + 4 + 8 * (this.usedIdx & this.mask);
      this.usedView.setUint32(off, id, true);
      this.usedView.setUint32(off + 4, len, true);
    }
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.unpublished++;
  }

  /** Used entries pushed since the last publish (visible or not). */
  get pending(): number {
    return this.unpublished;
  }

  /** Used entries pushed and not yet visible. */
  get unflushed(): number {
    return this.unpublished - this.flushed;
  }

  /**
   * Make every pushed element visible now (one used idx store; the
   * in-flight record sees it as a batch), without an interrupt decision:
   * publish() makes that for everything since the previous one
   * (signalledUsed spans the flushes in between).
   */
  flush(): void {
    if (this.unpublished === this.flushed) return;
    this.flushed = this.unpublished;
    const t = this.tracker;
    if (t !== null && t.publishing !== undefined) t.publishing();
    if (PLAIN_STORE_RELEASES) this.usedWords[this.wUsedIdx] = this.usedIdx;
    else Atomics.store(this.usedWords, this.wUsedIdx, this.usedIdx);
    if (t !== null) t.published();
  }

  /**
   * Make every pushed element visible (one used idx store per batch) and say
   * whether the driver wants an interrupt for them. Returns false when
   * nothing was pushed since the last publish. Where the store is a plain
   * one (order.ts), a "no" is not final: settle() decides it.
   */
  publish(): boolean {
    if (this.unpublished === 0) return false;
    this.flush();
    this.sinceDecision += this.unpublished;
    this.unpublished = 0;
    this.flushed = 0;
    return this.decideAfterStore();
  }

  /**
   * Resume from the in-flight record (vhost-user "Inflight I/O tracking",
   * on reconnect): the used index is the ring's own, the avail index is past
   * every head still in flight, and those heads run first, in the order the
   * previous back-end took them.
   */
  resumeInflight(): number {
    const t = this.tracker;
    if (t === null || t.resume === undefined) return 0;
    const ringUsed = Atomics.load(this.usedWords, this.wUsedIdx);
    const r = t.resume(this.size, ringUsed, this.lastAvailIdx);
    for (const h of r.heads) {
      if (h >= this.size) throw new QueueSetupError(`queue ${this.index}: in-flight head ${h} >= queue size ${this.size}`);
    }
    this.usedIdx = r.usedIdx;
    this.lastAvailIdx = r.availIdx;
    this.resubmit.reset(r.heads);
    return r.heads.length;
  }

  position(): RingPos {
    return { availIdx: this.lastAvailIdx, availWrap: false, usedIdx: this.usedIdx, usedWrap: false };
  }

  remap(mem: GuestMemory): void {
    this.locate(mem);
    this.mem = mem;
  }

  /**
   * Suppress (false) or request (true) kicks from the driver. Requesting
   * then needs a re-check of available(): the driver may have added buffers
   * before it saw the request. While polling with EVENT_IDX, avail_event is
   * parked one behind lastAvailIdx so the driver's next kick only comes after
   * the 16-bit index wraps around.
   */
  setNotification(enabled: boolean): void {
    if (this.eventIdx) {
      const v = enabled ? this.lastAvailIdx : (this.lastAvailIdx - 1) & 0xffff;
      Atomics.store(this.usedWords, this.wAvailEvent, v);
    } else {
      Atomics.store(this.usedWords, this.wUsedFlags, enabled ? 0 : VRING_USED_F_NO_NOTIFY);
    }
    // The re-check's avail idx load (plain, memory.ts) must come after that store (store→load):
    // an Atomics.load after it orders them (arm64: stlr then ldar; x86-64: the store's xchg already does).
    if (enabled) Atomics.load(this.availWords, this.wAvailIdx);
  }

  /** Whether the driver's words, as read now, ask for an interrupt for the entries since the previous decision. */
  protected wantsInterrupt(hint: boolean): boolean {
    const w = this.availWords;
    if (this.eventIdx) {
      // Past 2^15 entries undecided the 16-bit arithmetic no longer tells: interrupt (at worst one too many).
      if (!this.signalledValid || this.sinceDecision >= this.decidableSpan) return true;
      const usedEvent = hint ? w[this.wUsedEvent] : Atomics.load(w, this.wUsedEvent);
      return vringNeedEvent(usedEvent, this.usedIdx, this.signalledUsed);
    }
    return ((hint ? w[this.wAvailFlags] : Atomics.load(w, this.wAvailFlags)) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }
}

function ringLocation(
  mem: GuestMemory,
  q: QueueDesc,
  name: string,
  uva: number,
  len: number,
  align: number,
): { region: number; offset: number } {
  if (!Number.isSafeInteger(uva) || uva < 0) {
    throw new QueueSetupError(`queue ${q.index}: ${name} address ${uva} is not a valid address`);
  }
  const gpa = mem.uvaToGpa(uva, len);
  if (gpa < 0) {
    throw new QueueSetupError(`queue ${q.index}: ${name} ring 0x${uva.toString(16)}+${len} is not inside one memory region`);
  }
  if (gpa % align !== 0) {
    throw new QueueSetupError(`queue ${q.index}: ${name} ring at guest address 0x${gpa.toString(16)} is not ${align}-byte aligned`);
  }
  const region = mem.translate(gpa, len);
  const offset = mem.offset;
  if (region < 0 || offset % 2 !== 0) {
    throw new QueueSetupError(`queue ${q.index}: ${name} ring is not addressable`);
  }
  return { region, offset };
}

/**
 * A word index into a region's typed array (a byte offset over 2 or 4) as an
 * int32, for the split and packed rings. Region offsets come from float
 * arithmetic (GuestMemory.offset), and a field assigned such a value is kept
 * as a double by V8: every index derived from it then costs float
 * conversions and checks per access (and a heap number when passed to
 * Atomics). `| 0` makes it a small integer; a region (window) is at most
 * 4 GiB, so a 16-bit word index is below 2^31.
 */
export function wordIndex(q: QueueDesc, x: number): number {
  const i = x | 0;
  if (i !== x) throw new QueueSetupError(`queue ${q.index}: ring word index ${x} is not a 31-bit integer`);
  return i;
}
