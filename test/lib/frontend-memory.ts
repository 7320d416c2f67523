/**
 * Guest memory of the test front-end: memfd-backed regions mapped into this
 * process (native.memfdCreate + ftruncate + mmap), a guest-physical address
 * space laid over them, a first-fit allocator for rings and request buffers,
 * and the region descriptions sent with SET_MEM_TABLE / ADD_MEM_REG.
 *
 * The "userspace address" announced for each region is a synthetic one
 * (UVA_BASE + offset), deliberately different from the guest-physical address,
 * so a back-end that confuses the two address spaces fails. The back-end only
 * uses it to translate SET_VRING_ADDR, so it need not be our real mapping.
 * Thread: the test's main thread.
 */
import { native } from '../../bindings';
import type { WireRegion } from './frontend-wire';

/** Prefix of every memfd name; tests count `/memfd:<prefix>` lines in the back-end's /proc/<pid>/maps. */
export const MEMFD_PREFIX = 'vhostfe-';

const UVA_BASE = 0x7f3a_0000_0000;
const PAGE = 4096;

export interface RegionSpec {
  /** Guest-physical start (page aligned). */
  gpa: number;
  sizeBytes: number;
  /** Offset of the region inside its memfd (page aligned); the file is offset+size long. */
  mmapOffset?: number;
  /** Seal the memfd against shrinking and growing (as QEMU's memory-backend-memfd, seal=on). */
  sealed?: boolean;
}

export class GuestRegion {
  readonly fd: number;
  readonly gpa: number;
  readonly sizeBytes: number;
  readonly mmapOffset: number;
  readonly uva: number;
  readonly name: string;
  private buf: ArrayBuffer | null;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly u16: Uint16Array;
  /** Free list of [start, end) guest-physical ranges, sorted. */
  private free: [number, number][];

  constructor(spec: RegionSpec, index: number, serial: number) {
    this.gpa = spec.gpa;
    this.sizeBytes = spec.sizeBytes;
    this.mmapOffset = spec.mmapOffset ?? 0;
    if (this.gpa % PAGE !== 0 || this.sizeBytes % PAGE !== 0 || this.mmapOffset % PAGE !== 0 || this.sizeBytes <= 0) {
      throw new Error('region gpa, sizeBytes and mmapOffset must be positive multiples of 4096');
    }
    // Distinct per memory, but bounded: after ~129k memories in one process an unbounded serial pushed
    // the address past 2^53, which vhostd rightly refuses (found by the soak, issue #15).
    this.uva = UVA_BASE + index * 0x1_0000_0000 + (serial % 1024) * 0x10_0000_0000;
    this.name = `${MEMFD_PREFIX}${process.pid}-${serial}-${index}`;
    this.fd = native.memfdCreate(this.name, spec.sealed ? 2 /* MFD_ALLOW_SEALING */ : 0);
    try {
      native.ftruncate(this.fd, this.mmapOffset + this.sizeBytes);
      if (spec.sealed) native.fdAddSeals(this.fd, 1 | 2 | 4); // F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW
      this.buf = native.mmap(this.fd, this.mmapOffset, this.sizeBytes, true);
    } catch (e) {
      native.close(this.fd);
      throw e;
    }
    this.bytes = new Uint8Array(this.buf);
    this.view = new DataView(this.buf);
    this.u16 = new Uint16Array(this.buf);
    this.free = [[this.gpa, this.gpa + this.sizeBytes]];
  }

  contains(gpa: number, len: number): boolean {
    return gpa >= this.gpa && len >= 0 && gpa + len <= this.gpa + this.sizeBytes;
  }

  wire(): WireRegion {
    return {
      guestPhysAddr: BigInt(this.gpa),
      sizeBytes: BigInt(this.sizeBytes),
      userspaceAddr: BigInt(this.uva),
      mmapOffset: BigInt(this.mmapOffset),
    };
  }

  alloc(size: number, align: number): number | null {
    for (let i = 0; i < this.free.length; i++) {
      const [s, e] = this.free[i];
      const a = Math.ceil(s / align) * align;
      if (a + size <= e) {
        const pieces: [number, number][] = [];
        if (a > s) pieces.push([s, a]);
        if (a + size < e) pieces.push([a + size, e]);
        this.free.splice(i, 1, ...pieces);
        return a;
      }
    }
    return null;
  }

  release(gpa: number, size: number): void {
    this.free.push([gpa, gpa + size]);
    this.free.sort((x, y) => x[0] - y[0]);
    const merged: [number, number][] = [];
    for (const r of this.free) {
      const last = merged[merged.length - 1];
      if (last && last[1] >= r[0]) last[1] = Math.max(last[1], r[1]);
      else merged.push([r[0], r[1]]);
    }
    this.free = merged;
  }

  unmap(): void {
    if (this.buf) {
      native.munmap(this.buf);
      this.buf = null;
      native.close(this.fd);
    }
  }
}

/** A guest-physical address space made of one or more regions. */
export class GuestMemory {
  private static serials = 0;
  readonly regions: GuestRegion[] = [];
  private readonly serial = GuestMemory.serials++;

  constructor(specs: RegionSpec[]) {
    try {
      for (const s of specs) this.addRegion(s);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Map one more region (for ADD_MEM_REG); it must not overlap the others. */
  addRegion(spec: RegionSpec): GuestRegion {
    for (const r of this.regions) {
      if (spec.gpa < r.gpa + r.sizeBytes && r.gpa < spec.gpa + spec.sizeBytes) {
        throw new Error('regions overlap');
      }
    }
    const r = new GuestRegion(spec, this.regions.length, this.serial);
    this.regions.push(r);
    return r;
  }

  /** Unmap and forget a region (after REM_MEM_REG). */
  removeRegion(r: GuestRegion): void {
    const i = this.regions.indexOf(r);
    if (i >= 0) this.regions.splice(i, 1);
    r.unmap();
  }

  private find(gpa: number, len: number): GuestRegion {
    for (const r of this.regions) if (r.contains(gpa, len)) return r;
    throw new RangeError(`guest range 0x${gpa.toString(16)}+${len} is not inside one region`);
  }

  /** Allocate `size` bytes of guest memory, optionally in a given region. */
  alloc(size: number, align = 16, regionIndex?: number): number {
    const list = regionIndex === undefined ? this.regions : [this.regions[regionIndex]];
    for (const r of list) {
      const a = r.alloc(Math.max(1, size), align);
      if (a !== null) return a;
    }
    throw new Error(`guest memory exhausted (${size} bytes)`);
  }

  release(gpa: number, size: number): void {
    this.find(gpa, Math.max(1, size)).release(gpa, Math.max(1, size));
  }

  /** A live view of guest memory (writes go straight to the shared mapping). */
  bytes(gpa: number, len: number): Uint8Array {
    const r = this.find(gpa, len);
    return r.bytes.subarray(gpa - r.gpa, gpa - r.gpa + len);
  }

  write(gpa: number, data: Uint8Array): void {
    this.bytes(gpa, data.byteLength).set(data);
  }

  /** A copy of guest memory. */
  read(gpa: number, len: number): Uint8Array {
    return this.bytes(gpa, len).slice();
  }

  u8(gpa: number): number {
    const r = this.find(gpa, 1);
    return r.bytes[gpa - r.gpa];
  }

  setU8(gpa: number, v: number): void {
    const r = this.find(gpa, 1);
    r.bytes[gpa - r.gpa] = v;
  }

  u16(gpa: number): number {
    const r = this.find(gpa, 2);
    return r.view.getUint16(gpa - r.gpa, true);
  }

  setU16(gpa: number, v: number): void {
    const r = this.find(gpa, 2);
    r.view.setUint16(gpa - r.gpa, v, true);
  }

  u32(gpa: number): number {
    const r = this.find(gpa, 4);
    return r.view.getUint32(gpa - r.gpa, true);
  }

  setU32(gpa: number, v: number): void {
    const r = this.find(gpa, 4);
    r.view.setUint32(gpa - r.gpa, v, true);
  }

  setU64(gpa: number, v: bigint): void {
    const r = this.find(gpa, 8);
    r.view.setBigUint64(gpa - r.gpa, BigInt.asUintN(64, v), true);
  }

  /**
   * Atomic (sequentially consistent) 16-bit load/store, for ring indices
   * shared with the back-end process: the store orders every earlier write
   * to the ring before the index update.
   */
  atomicLoadU16(gpa: number): number {
    const r = this.find(gpa, 2);
    return Atomics.load(r.u16, (gpa - r.gpa) >>> 1);
  }

  atomicStoreU16(gpa: number, v: number): void {
    const r = this.find(gpa, 2);
    Atomics.store(r.u16, (gpa - r.gpa) >>> 1, v & 0xffff);
  }

  /** The synthetic front-end virtual address of a guest-physical address (for SET_VRING_ADDR). */
  uva(gpa: number): bigint {
    const r = this.find(gpa, 1);
    return BigInt(r.uva) + BigInt(gpa - r.gpa);
  }

  /** The first guest-physical address past every region. */
  end(): number {
    let e = 0;
    for (const r of this.regions) e = Math.max(e, r.gpa + r.sizeBytes);
    return e;
  }

  close(): void {
    for (const r of this.regions) r.unmap();
    this.regions.length = 0;
  }
}
