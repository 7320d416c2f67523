/**
 * A driver-side split virtqueue for unit tests: lays out a descriptor table,
 * available ring and used ring (virtio 1.2 §2.7) inside a plain ArrayBuffer
 * that stands for guest memory, adds chains (direct or through an indirect
 * table) the way a guest driver would, and reads back used elements. Data
 * buffers come from a bump allocator in the same memory.
 * Thread: the test's.
 */
import type { QueueDesc } from '../../engine/control';
import { GuestMemory } from '../../engine/memory';

export const F_INDIRECT = 1n << 28n;
export const F_EVENT_IDX = 1n << 29n;
export const F_VERSION_1 = 1n << 32n;

export interface Buf {
  addr: number;
  len: number;
  write?: boolean;
}

export interface MockOptions {
  size?: number;
  /** Guest physical address of the memory (and its front-end virtual address). */
  gpa?: number;
  memBytes?: number;
  /** Use this memory (e.g. a mapped memfd) instead of a new ArrayBuffer. */
  buffer?: ArrayBuffer;
}

export class MockVring {
  readonly size: number;
  readonly gpa: number;
  readonly buffer: ArrayBuffer;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  /** The driver's next avail index (free-running u16). */
  availIdx = 0;
  /** Used elements already read by readUsed(). */
  lastUsed = 0;
  private next: number;
  private readonly freeDescs: number[] = [];
  private readonly chainDescs = new Map<number, number[]>();

  constructor(opts: MockOptions = {}) {
    this.size = opts.size ?? 16;
    this.gpa = opts.gpa ?? 0x10000;
    this.buffer = opts.buffer ?? new ArrayBuffer(opts.memBytes ?? 1 << 20);
    this.bytes = new Uint8Array(this.buffer);
    this.view = new DataView(this.buffer);
    this.descAddr = this.gpa;
    this.availAddr = this.align(this.descAddr + 16 * this.size, 2);
    this.usedAddr = this.align(this.availAddr + 6 + 2 * this.size, 4096);
    this.next = this.align(this.usedAddr + 6 + 8 * this.size, 4096);
    for (let i = this.size - 1; i >= 0; i--) this.freeDescs.push(i);
  }

  memory(): GuestMemory {
    return GuestMemory.fromBuffers([{ guestPhysAddr: this.gpa, buffer: this.buffer }]);
  }

  queueDesc(index = 0, availIdx = 0): QueueDesc {
    return {
      index,
      size: this.size,
      descAddr: this.descAddr,
      availAddr: this.availAddr,
      usedAddr: this.usedAddr,
      pos: { availIdx, availWrap: false, usedIdx: availIdx, usedWrap: false },
      kickFd: -1,
      callFd: -1,
    };
  }

  /** Allocate `len` bytes of guest memory (16-byte aligned); returns its guest address. */
  alloc(len: number, fill?: number): number {
    const addr = this.align(this.next, 16);
    this.next = addr + len;
    if (this.next > this.gpa + this.buffer.byteLength) throw new Error('mock guest memory exhausted');
    if (fill !== undefined) this.bytes.fill(fill, addr - this.gpa, addr - this.gpa + len);
    return addr;
  }

  /** Bytes of guest memory at a guest address (a view, not a copy). */
  at(addr: number, len: number): Uint8Array {
    return new Uint8Array(this.buffer, addr - this.gpa, len);
  }

  writeDesc(table: number, i: number, addr: number, len: number, flags: number, next: number): void {
    const o = table - this.gpa + 16 * i;
    this.view.setBigUint64(o, BigInt(addr), true);
    this.view.setUint32(o + 8, len, true);
    this.view.setUint16(o + 12, flags, true);
    this.view.setUint16(o + 14, next, true);
  }

  /** Add a chain of direct descriptors and make it available. Returns the head. */
  addChain(bufs: Buf[], publish = true): number {
    const idx = bufs.map(() => this.takeDesc());
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      this.writeDesc(this.descAddr, idx[k], b.addr, b.len, (last ? 0 : 1) | (b.write ? 2 : 0), last ? 0 : idx[k + 1]);
    });
    this.chainDescs.set(idx[0], idx);
    this.makeAvailable(idx[0], publish);
    return idx[0];
  }

  /**
   * Add a chain as one direct descriptor pointing at an indirect table (`misalign` bytes past a 16-byte
   * boundary: one the device must read without aligned loads). Returns the head.
   */
  addIndirect(bufs: Buf[], publish = true, misalign = 0): number {
    const table = this.alloc(16 * bufs.length + misalign) + misalign;
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      this.writeDesc(table, k, b.addr, b.len, (last ? 0 : 1) | (b.write ? 2 : 0), last ? 0 : k + 1);
    });
    const head = this.takeDesc();
    this.writeDesc(this.descAddr, head, table, 16 * bufs.length, 4, 0);
    this.chainDescs.set(head, [head]);
    this.makeAvailable(head, publish);
    return head;
  }

  /** Put `head` in the next avail ring slot; with publish, bump avail idx. */
  makeAvailable(head: number, publish = true): void {
    this.view.setUint16(this.availAddr - this.gpa + 4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    if (publish) this.publishAvail();
  }

  publishAvail(idx = this.availIdx): void {
    this.view.setUint16(this.availAddr - this.gpa + 2, idx, true);
  }

  set availFlags(v: number) {
    this.view.setUint16(this.availAddr - this.gpa, v, true);
  }

  /** EVENT_IDX: used_event, in the avail ring after its entries. */
  set usedEvent(v: number) {
    this.view.setUint16(this.availAddr - this.gpa + 4 + 2 * this.size, v, true);
  }

  get usedFlags(): number {
    return this.view.getUint16(this.usedAddr - this.gpa, true);
  }

  get usedIdx(): number {
    return this.view.getUint16(this.usedAddr - this.gpa + 2, true);
  }

  /** EVENT_IDX: avail_event, in the used ring after its entries. */
  get availEvent(): number {
    return this.view.getUint16(this.usedAddr - this.gpa + 4 + 8 * this.size, true);
  }

  /** Used elements published since the last call; their descriptors go back to the free list. */
  readUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const end = this.usedIdx;
    while (this.lastUsed !== end) {
      const o = this.usedAddr - this.gpa + 4 + 8 * (this.lastUsed % this.size);
      const id = this.view.getUint32(o, true);
      out.push({ id, len: this.view.getUint32(o + 4, true) });
      for (const d of this.chainDescs.get(id) ?? []) this.freeDescs.push(d);
      this.chainDescs.delete(id);
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Reserve a descriptor slot by hand (for crafted chains); it is freed when used. */
  takeDesc(): number {
    const d = this.freeDescs.pop();
    if (d === undefined) throw new Error('mock vring: no free descriptors');
    return d;
  }

  /** Start both indices at `idx` (a queue resumed at a given base, e.g. near 65535). */
  startAt(idx: number): void {
    this.availIdx = idx & 0xffff;
    this.lastUsed = idx & 0xffff;
    this.publishAvail();
    this.view.setUint16(this.usedAddr - this.gpa + 2, idx & 0xffff, true);
  }

  private align(v: number, a: number): number {
    return Math.ceil(v / a) * a;
  }
}
