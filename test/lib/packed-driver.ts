/**
 * The driver's side of a packed virtqueue (virtio 1.2 §2.8), written from
 * the spec for the unit tests: chains made available with the driver's wrap
 * counter (head flags last), used descriptors read back in ring order.
 */
import { GuestMemory } from '../../engine/memory';
import type { PackedInflightRegion } from '../../engine/virtio/inflight-packed';

export const AVAIL = 1 << 7;
export const USED = 1 << 15;
export const NEXT = 1;
export const WRITE = 2;
export const INDIRECT = 4;
export const F_INDIRECT = 1n << 28n;
export const F_EVENT_IDX = 1n << 29n;
export const F_PACKED = 1n << 34n;
export const FEATURES = (1n << 32n) | F_PACKED | F_INDIRECT | F_EVENT_IDX;

export interface Buf {
  addr: number;
  len: number;
  write?: boolean;
}

/** The driver's side of a packed ring at guest address 0x1000 (event areas after it), buffers from 0x10000. */
export class PackedDriver {
  readonly buf = new ArrayBuffer(1 << 20);
  readonly v = new DataView(this.buf);
  readonly ring = 0x1000;
  readonly drvEvent: number;
  readonly devEvent: number;
  availIdx = 0;
  availWrap = true;
  usedIdx = 0;
  usedWrap = true;
  private nextBuf = 0x10000;
  private readonly lengths = new Map<number, number>();
  constructor(readonly size: number) {
    this.drvEvent = this.ring + 16 * size;
    this.drvEvent = (this.drvEvent + 3) & ~3;
    this.devEvent = this.drvEvent + 4;
  }
  memory(): GuestMemory {
    return GuestMemory.fromBuffers([{ guestPhysAddr: 0, buffer: this.buf }]);
  }
  queueDesc() {
    return {
      index: 0,
      size: this.size,
      descAddr: this.ring,
      availAddr: this.drvEvent,
      usedAddr: this.devEvent,
      pos: { availIdx: 0, availWrap: true, usedIdx: 0, usedWrap: true },
      kickFd: -1,
      callFd: -1,
    };
  }
  alloc(len: number): number {
    const a = this.nextBuf;
    this.nextBuf += (len + 15) & ~15;
    return a;
  }
  private writeDesc(slot: number, b: Buf, id: number, flags: number): void {
    const d = this.ring + 16 * slot;
    this.v.setBigUint64(d, BigInt(b.addr), true);
    this.v.setUint32(d + 8, b.len, true);
    this.v.setUint16(d + 12, id, true);
    this.v.setUint16(d + 14, flags, true);
  }
  /** Make a chain available (§2.8.21: the head's flags written last); `flagsOverride` corrupts descriptor k. */
  add(bufs: Buf[], id: number, opts: { corrupt?: number; noEnd?: boolean } = {}): void {
    const wrapBits = (w: boolean) => (w ? AVAIL : USED);
    let slot = this.availIdx;
    let wrap = this.availWrap;
    let headFlags = 0;
    bufs.forEach((b, k) => {
      let f = (b.write ? WRITE : 0) | (k < bufs.length - 1 || opts.noEnd ? NEXT : 0) | wrapBits(wrap);
      if (opts.corrupt === k) f = (f & ~(AVAIL | USED)) | wrapBits(!wrap);
      if (k === 0) headFlags = f;
      else this.writeDesc(slot, b, id, f);
      if (k === 0) this.writeDesc(slot, b, id, 0 | (wrap ? USED : AVAIL)); // not yet available
      if (++slot === this.size) {
        slot = 0;
        wrap = !wrap;
      }
    });
    this.v.setUint16(this.ring + 16 * this.availIdx + 14, headFlags, true);
    this.lengths.set(id, bufs.length);
    this.availIdx = slot;
    this.availWrap = wrap;
  }
  addIndirect(bufs: Buf[], id: number, misalign = 0): void {
    // `misalign` bytes past a 16-byte boundary: a table the device must read without aligned loads.
    const table = this.alloc(16 * bufs.length + misalign) + misalign;
    bufs.forEach((b, k) => {
      const d = table + 16 * k;
      this.v.setBigUint64(d, BigInt(b.addr), true);
      this.v.setUint32(d + 8, b.len, true);
      this.v.setUint16(d + 14, b.write ? WRITE : 0, true);
    });
    const slot = this.availIdx;
    const d = this.ring + 16 * slot;
    this.v.setBigUint64(d, BigInt(table), true);
    this.v.setUint32(d + 8, 16 * bufs.length, true);
    this.v.setUint16(d + 12, id, true);
    this.v.setUint16(d + 14, INDIRECT | (this.availWrap ? AVAIL : USED), true);
    this.lengths.set(id, 1);
    if (++this.availIdx === this.size) {
      this.availIdx = 0;
      this.availWrap = !this.availWrap;
    }
  }
  /** Used descriptors in ring order, as a driver reads them. */
  readUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    for (;;) {
      const d = this.ring + 16 * this.usedIdx;
      const f = this.v.getUint16(d + 14, true);
      const used = ((f & AVAIL) !== 0) === this.usedWrap && ((f & USED) !== 0) === this.usedWrap;
      if (!used) return out;
      const id = this.v.getUint16(d + 12, true);
      out.push({ id, len: this.v.getUint32(d + 8, true) });
      this.usedIdx += this.lengths.get(id) ?? 1;
      if (this.usedIdx >= this.size) {
        this.usedIdx -= this.size;
        this.usedWrap = !this.usedWrap;
      }
    }
  }
  setDriverEvent(flags: number, offWrap = 0): void {
    this.v.setUint16(this.drvEvent, offWrap, true);
    this.v.setUint16(this.drvEvent + 2, flags, true);
  }
  deviceEventFlags(): number {
    return this.v.getUint16(this.devEvent + 2, true);
  }
}


/**
 * The back-end dies inside the next publish() of queue `queue` (tracked on
 * `r`, resumed): its in-flight hooks throw "killed" just after publishing()
 * (`beforeFlags`: the used flags are never stored) or at published() (the
 * flags are stored, the region's old_* and inflight flags not updated). The
 * next resume() replaces the queue's tracking, hooks included.
 */
export function killInPublish(r: PackedInflightRegion, queue: number, beforeFlags: boolean): void {
  const track = r.track(queue);
  if (track === null) throw new Error(`queue ${queue} is not tracked`);
  const publishing = track.publishing.bind(track);
  track.publishing = (usedIdx: number, usedWrap: boolean): void => {
    publishing(usedIdx, usedWrap);
    if (beforeFlags) throw new Error('killed');
  };
  track.published = (): void => {
    throw new Error('killed');
  };
}
