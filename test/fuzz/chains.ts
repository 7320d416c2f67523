/**
 * Descriptor-chain fuzzer (split ring, virtio 1.2 section 2.7): one case = one
 * virtio-blk chain, published in batches on a 256-entry queue this fuzzer
 * drives itself (its own desc/avail/used layout, kick eventfd, used ring
 * polled). Chains are random and hostile: any request type and sector, 0-20
 * data segments (past seg_max too), buffers of any length crossing the
 * boundary of two guest-physically adjacent regions or running out of guest
 * memory, a status byte missing, read-only or empty, NEXT loops and
 * out-of-range next indices, indirect tables (bad lengths, nested INDIRECT,
 * out of memory), unknown flag bits.
 *
 * Guest memory (two adjacent 2 MiB memfd regions) is laid out so the checks
 * can be exact:
 *   [0, 64K)        rings               device may write the used ring only
 *   [64K, 128K)     indirect tables     read-only to the device
 *   [128K, 192K)    request headers     read-only to the device
 *   [192K, 4M)      data buffers        writable where a WRITE descriptor says
 * Device-writable descriptors only ever point at the data area (or outside
 * guest memory), and indirect tables only at their area, so the set of bytes
 * the device may write is known before a batch runs: the ranges of every
 * WRITE descriptor in the descriptor table and the indirect area. After each
 * batch every other byte of guest memory must equal the shadow copy.
 * Also checked per batch: every published head comes back exactly once, no
 * other id does, and a used length never exceeds the chain's writable bytes.
 * Thread: the fuzz runner's main thread.
 */
import { native } from '../../bindings';
import { type NegotiateOptions, VhostUserFrontend } from '../lib/frontend';
import { blkHeader, blkSegment, BlkType, concat, Desc, Req, vringAddr, vringFdPayload, vringState } from '../lib/frontend-wire';
import type { Fuzzer } from './fuzzer';
import type { Rng } from './rng';
import type { ControllerInfo, FuzzTarget } from './target';

export const QSIZE = 256;
export const REGION = 2 << 20;
export const MEM_END = 2 * REGION;
const DESC_GPA = 0;
const AVAIL_GPA = DESC_GPA + 16 * QSIZE;
const USED_GPA = 0x2000;
const USED_END = USED_GPA + 6 + 8 * QSIZE;
export const INDIRECT_GPA = 64 << 10;
export const INDIRECT_END = 128 << 10;
export const HEADER_GPA = 128 << 10;
export const HEADER_END = 192 << 10;
const DATA_GPA = 192 << 10;
export const BATCH_TIMEOUT_MS = 15_000;

export interface D {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

export interface Built {
  head: number;
  /** Writable bytes the chain can carry, when every one of its descriptors is sane; -1 when unknown. */
  writableBytes: number;
}

export class ChainFuzzer implements Fuzzer {
  readonly name: string = 'chains';
  readonly checkEvery: number = 20_000;
  protected target!: FuzzTarget;
  protected ctrl!: ControllerInfo;
  protected fe: VhostUserFrontend | null = null;
  protected kickFd = -1;
  protected shadow: Uint8Array[] = [];
  private availIdx = 0;
  private usedIdx = 0;
  /** The batch being built. */
  protected batch: Built[] = [];
  protected batchSize = 0;
  protected batchStart = 0;
  protected nextSlot = 0;
  protected indirectNext = INDIRECT_GPA;
  protected headerNext = HEADER_GPA;
  /** Test hook: change a byte outside every writable buffer in each batch (the shadow check must catch it). */
  tamper = false;
  protected readonly count = { chains: 0, batches: 0, reconnects: 0, usedLenZero: 0, indirect: 0, crossRegion: 0 };
  /** The virtqueue the chains go on (virtio-scsi: a request queue, 2). */
  protected queueIndex = 0;
  /** What connect() negotiates besides the two regions (virtio-scsi: its protocol features and queue count). */
  protected negotiateExtra: Omit<NegotiateOptions, 'regions'> = {};

  async setup(target: FuzzTarget): Promise<void> {
    this.target = target;
    this.ctrl = await target.createBlk('fz.chain', 4096);
    await this.connect();
  }

  counters(): Record<string, number> {
    return { ...this.count };
  }

  replayStart(caseNo: number): number {
    return this.batch.length > 0 ? this.batchStart : caseNo;
  }

  protected async connect(): Promise<void> {
    const fe = await VhostUserFrontend.connect(this.ctrl.socket, 15_000, { waitAccepted: true });
    await fe.negotiate({ ...this.negotiateExtra, regions: [{ gpa: 0, sizeBytes: REGION }, { gpa: REGION, sizeBytes: REGION }] });
    const mem = fe.memory!;
    mem.bytes(0, 64 << 10).fill(0);
    this.kickFd = native.eventfd(0, 0);
    const callFd = native.eventfd(0, 0);
    const q = this.queueIndex;
    await fe.request(Req.SET_VRING_NUM, vringState(q, QSIZE));
    await fe.request(Req.SET_VRING_BASE, vringState(q, 0));
    await fe.request(Req.SET_VRING_ADDR, vringAddr(q, 0, mem.uva(DESC_GPA), mem.uva(USED_GPA), mem.uva(AVAIL_GPA), 0n));
    await fe.request(Req.SET_VRING_KICK, vringFdPayload(q, false), [this.kickFd]);
    await fe.request(Req.SET_VRING_CALL, vringFdPayload(q, false), [callFd]);
    native.close(callFd); // completions are found by polling the used ring
    await fe.request(Req.SET_VRING_ENABLE, vringState(q, 1));
    await fe.sync();
    this.fe = fe;
    this.availIdx = 0;
    this.usedIdx = 0;
    this.shadow = mem.regions.map((r) => r.bytes.slice());
  }

  protected disconnect(): void {
    this.fe?.close();
    this.fe = null;
    if (this.kickFd >= 0) native.close(this.kickFd);
    this.kickFd = -1;
  }

  async quiesce(): Promise<void> {
    if (this.batch.length > 0) await this.flush();
  }

  async check(): Promise<void> {
    // The connection stays up across liveness checks; the abused controller must still do verified I/O.
    // (The shadow comparison runs after every batch, in flush.)
  }

  dispose(): void {
    this.disconnect();
  }

  /** Reconnect when a batch dropped the connection; with `batchEmpty`, a new batch begins at this case. */
  protected async prepareCase(rng: Rng, caseNo: number, batchEmpty: boolean): Promise<void> {
    if (this.fe === null) {
      this.count.reconnects++;
      await this.connect();
    }
    if (batchEmpty) {
      this.batchSize = rng.range(1, 32);
      this.batchStart = caseNo;
      this.nextSlot = 0;
      this.indirectNext = INDIRECT_GPA;
      this.headerNext = HEADER_GPA;
    }
  }

  async runCase(rng: Rng, caseNo: number): Promise<void> {
    await this.prepareCase(rng, caseNo, this.batch.length === 0);
    const built = this.build(rng);
    if (built === null) {
      // No room left in this batch's descriptor slots or tables: run it and retry.
      await this.flush();
      return this.runCase(rng, caseNo);
    }
    this.batch.push(built);
    this.count.chains++;
    if (this.batch.length >= this.batchSize) await this.flush();
  }

  // --- building -----------------------------------------------------------------

  protected mem() {
    return this.fe!.memory!;
  }

  private writeDesc(at: number, d: D): void {
    const m = this.mem();
    m.setU64(at, d.addr);
    m.setU32(at + 8, d.len >>> 0);
    m.setU16(at + 12, d.flags & 0xffff);
    m.setU16(at + 14, d.next & 0xffff);
  }

  /** A readable address: anywhere in guest memory, sometimes outside or edgy. */
  protected readAddr(rng: Rng, len: number): bigint {
    if (rng.chance(0.9)) return BigInt(rng.int(Math.max(1, MEM_END - len)));
    return rng.edgyU64();
  }

  /** A writable buffer: inside the data area (maybe across the region boundary), or outside guest memory. */
  protected writeBuf(rng: Rng, len: number): { addr: bigint; len: number } {
    const r = rng.int(20);
    if (r === 0) return { addr: rng.chance(0.5) ? BigInt(MEM_END + rng.int(1 << 20)) : rng.edgyU64() | (1n << 40n), len };
    if (r === 1) {
      // across the boundary of the two regions (guest-physically contiguous)
      const before = 1 + rng.int(Math.max(1, Math.min(len - 1, 8192)));
      this.count.crossRegion++;
      return { addr: BigInt(REGION - before), len: Math.max(len, before + 1) };
    }
    if (r === 2) {
      // running off the end of guest memory
      return { addr: BigInt(MEM_END - 1 - rng.int(Math.min(len, 4096))), len };
    }
    const maxLen = MEM_END - DATA_GPA;
    const l = Math.min(len, maxLen);
    return { addr: BigInt(DATA_GPA + rng.int(maxLen - l + 1)), len: l };
  }

  protected dataLen(rng: Rng): number {
    switch (rng.int(8)) {
      case 0:
        return 0;
      case 1:
        return rng.range(1, 4096);
      case 2:
        return rng.chance(0.5) ? rng.edgyU32() : 512 * rng.range(1, 8192);
      default:
        return 512 * rng.range(1, 16);
    }
  }

  /** One chain's descriptors, in order, before next indices are assigned. */
  protected chainDescs(rng: Rng): { descs: D[]; writable: number } {
    const type = rng.chance(0.9) ? rng.pick([BlkType.IN, BlkType.OUT, BlkType.IN, BlkType.OUT, BlkType.FLUSH, BlkType.GET_ID, BlkType.DISCARD, BlkType.WRITE_ZEROES]) : rng.edgyU32();
    const sector = rng.chance(0.85) ? BigInt(rng.int(4096 + 16)) : rng.edgyU64();
    const descs: D[] = [];
    let writable = 0;
    // header
    if (!rng.chance(0.03)) {
      let hdr = blkHeader(type, sector, rng.chance(0.95) ? 0 : rng.u32());
      if (type === BlkType.DISCARD || type === BlkType.WRITE_ZEROES) {
        const segs: Uint8Array[] = [];
        for (let i = 0; i < rng.range(0, 3); i++) segs.push(blkSegment(rng.chance(0.8) ? BigInt(rng.int(4096)) : rng.edgyU64(), rng.chance(0.8) ? rng.range(0, 64) : rng.edgyU32(), rng.chance(0.8) ? rng.int(2) : rng.u32()));
        if (rng.chance(0.5)) {
          // the segments in the header's own descriptor
          hdr = concat([hdr, ...segs]);
        } else {
          for (const s of segs) descs.push(this.headerDesc(rng, s));
        }
      }
      if (rng.chance(0.1)) hdr = hdr.subarray(0, rng.int(hdr.byteLength));
      descs.unshift(this.headerDesc(rng, hdr));
    }
    const nData = rng.chance(0.95) ? rng.int(5) : rng.range(5, 140);
    const dataWritable = type === BlkType.IN || type === BlkType.GET_ID ? !rng.chance(0.05) : rng.chance(0.05);
    for (let i = 0; i < nData; i++) {
      const len = this.dataLen(rng);
      if (dataWritable) {
        const b = this.writeBuf(rng, len);
        descs.push({ addr: b.addr, len: b.len, flags: Desc.WRITE, next: 0 });
        writable += b.len;
      } else {
        descs.push({ addr: this.readAddr(rng, len), len, flags: 0, next: 0 });
      }
    }
    // status
    const st = rng.int(20);
    if (st === 0) {
      // none
    } else if (st === 1) {
      descs.push({ addr: this.readAddr(rng, 1), len: 1, flags: 0, next: 0 });
    } else {
      const b = this.writeBuf(rng, st === 2 ? rng.int(3) : st === 3 ? rng.range(2, 64) : 1);
      descs.push({ addr: b.addr, len: b.len, flags: Desc.WRITE, next: 0 });
      writable += b.len;
    }
    if (descs.length === 0) descs.push({ addr: this.readAddr(rng, 16), len: 16, flags: 0, next: 0 });
    // stray flag bits (never INDIRECT here: that is placed below)
    if (rng.chance(0.03)) {
      const d = rng.pick(descs);
      d.flags |= rng.u32() & 0xfff8 & ~Desc.WRITE;
    }
    return { descs, writable };
  }

  protected headerDesc(rng: Rng, content: Uint8Array): D {
    const len = content.byteLength;
    if (this.headerNext + len + 16 > HEADER_END) this.headerNext = HEADER_GPA; // wrap: headers are read-only, reuse is harmless once read
    const at = this.headerNext;
    this.headerNext += Math.ceil((len + 1) / 16) * 16;
    if (len > 0) this.mem().write(at, content);
    return { addr: BigInt(at), len: rng.chance(0.97) ? len : rng.edgyU32(), flags: 0, next: 0 };
  }

  /** Where a ring descriptor says an indirect table is: sometimes a wrong length or an address out of guest memory (bent). */
  protected tableRef(rng: Rng, table: number, tableBytes: number): { taddr: bigint; tlen: number; bent: boolean } {
    let tlen = tableBytes;
    let taddr = BigInt(table);
    let bent = false;
    if (rng.chance(0.1)) {
      bent = true;
      tlen = rng.pick([0, 8, tableBytes + 8, tableBytes - 16, rng.edgyU32()]);
    }
    if (rng.chance(0.03)) {
      bent = true;
      taddr = rng.chance(0.5) ? BigInt(MEM_END - 8) : rng.edgyU64() | (1n << 41n);
    }
    return { taddr, tlen, bent };
  }

  protected build(rng: Rng): Built | null {
    const { descs, writable } = this.chainDescs(rng);
    const mode = rng.int(10);
    if (mode < 2) {
      // indirect: the table in the indirect area, one ring descriptor pointing at it
      const tableBytes = 16 * descs.length;
      if (this.indirectNext + tableBytes > INDIRECT_END || this.nextSlot >= QSIZE) return null;
      if (descs.length > QSIZE * 4) return null;
      this.count.indirect++;
      const table = this.indirectNext;
      this.indirectNext += Math.ceil(tableBytes / 16) * 16;
      descs.forEach((d, i) => {
        d.next = i + 1;
        if (i + 1 < descs.length) d.flags |= Desc.NEXT;
      });
      let sane = true;
      if (rng.chance(0.1)) {
        sane = false;
        const d = rng.pick(descs);
        switch (rng.int(3)) {
          case 0:
            d.next = rng.chance(0.5) ? rng.int(descs.length) : rng.edgyU32() & 0xffff; // loop or out of range
            d.flags |= Desc.NEXT;
            break;
          case 1:
            d.flags |= Desc.INDIRECT; // nested indirect: not allowed (2.7.5.3.1)
            d.addr = BigInt(INDIRECT_GPA);
            d.flags &= ~Desc.WRITE;
            break;
          default:
            d.flags &= ~Desc.NEXT; // chain cut short
        }
      }
      descs.forEach((d, i) => this.writeDesc(table + 16 * i, d));
      const { taddr, tlen, bent } = this.tableRef(rng, table, tableBytes);
      if (bent) sane = false;
      const slot = this.nextSlot++;
      const ringFlags = Desc.INDIRECT | (rng.chance(0.03) ? Desc.NEXT : 0) | (rng.chance(0.02) ? Desc.WRITE : 0);
      if (ringFlags !== Desc.INDIRECT) sane = false;
      this.writeDesc(DESC_GPA + 16 * slot, { addr: taddr, len: tlen, flags: ringFlags, next: rng.int(QSIZE) });
      return { head: slot, writableBytes: sane ? writable : -1 };
    }
    if (this.nextSlot + descs.length > QSIZE) return null;
    const slots = descs.map(() => this.nextSlot++);
    let sane = true;
    descs.forEach((d, i) => {
      if (i + 1 < descs.length) {
        d.flags |= Desc.NEXT;
        d.next = slots[i + 1];
      }
    });
    if (rng.chance(0.08)) {
      sane = false;
      const i = rng.int(descs.length);
      const d = descs[i];
      switch (rng.int(3)) {
        case 0:
          d.next = slots[rng.int(i + 1)]; // a loop back into the chain
          d.flags |= Desc.NEXT;
          break;
        case 1:
          d.next = rng.chance(0.5) ? QSIZE + rng.int(1000) : rng.int(QSIZE); // out of range, or another chain's slot
          d.flags |= Desc.NEXT;
          break;
        default:
          d.flags &= ~Desc.NEXT;
      }
    }
    descs.forEach((d, i) => this.writeDesc(DESC_GPA + 16 * slots[i], d));
    return { head: slots[0], writableBytes: sane ? writable : -1 };
  }

  // --- running a batch ---------------------------------------------------------

  /** Bytes the device may write during this batch: every WRITE descriptor of the table and the indirect area. */
  protected writableRanges(): [number, number][] {
    const m = this.mem();
    const out: [number, number][] = [[USED_GPA, USED_END]];
    const scan = (from: number, to: number): void => {
      for (let at = from; at + 16 <= to; at += 16) {
        const flags = m.u16(at + 12);
        // A descriptor that points at an indirect table never lets the device write (the table is read-only).
        if ((flags & Desc.WRITE) === 0 || (flags & Desc.INDIRECT) !== 0) continue;
        const addr = Number(m.u32(at)) + Number(m.u32(at + 4)) * 0x1_0000_0000;
        const len = m.u32(at + 8);
        if (addr >= MEM_END) continue;
        out.push([addr, Math.min(MEM_END, addr + len)]);
      }
    };
    scan(DESC_GPA, DESC_GPA + 16 * QSIZE);
    scan(INDIRECT_GPA, INDIRECT_END);
    return out;
  }

  protected async flush(): Promise<void> {
    const fe = this.fe!;
    const m = this.mem();
    const batch = this.batch;
    this.batch = [];
    const allowed = this.writableRanges();
    // The driver's own writes of this batch (descriptors, tables, headers) go into the shadow first.
    const syncShadow = (from: number, to: number): void => this.syncShadow(from, to);
    syncShadow(DESC_GPA, USED_GPA);
    syncShadow(INDIRECT_GPA, HEADER_END);
    for (const b of batch) {
      m.setU16(AVAIL_GPA + 4 + 2 * (this.availIdx % QSIZE), b.head);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    syncShadow(AVAIL_GPA, AVAIL_GPA + 4 + 2 * QSIZE + 2);
    m.atomicStoreU16(AVAIL_GPA + 2, this.availIdx);
    syncShadow(AVAIL_GPA, AVAIL_GPA + 4);
    if (this.tamper) {
      // Self-test of the check: a byte changed where no device-writable buffer is (a request header).
      m.setU8(HEADER_GPA + 3, m.u8(HEADER_GPA + 3) ^ 0x40);
    }
    native.eventfdWrite(this.kickFd, 1);
    const deadline = Date.now() + BATCH_TIMEOUT_MS;
    while (m.atomicLoadU16(USED_GPA + 2) !== this.availIdx) {
      if (fe.channel.eof) throw new Error(`vhostd closed the connection during a batch of ${batch.length} chains (${fe.channel.endReason})`);
      if (Date.now() > deadline) {
        throw new Error(`batch of ${batch.length} chains not completed in ${BATCH_TIMEOUT_MS} ms: used idx ${m.atomicLoadU16(USED_GPA + 2)}, avail idx ${this.availIdx}`);
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    // Used elements: each published head exactly once, lengths within what the chain could take.
    const expect = new Map<number, Built>();
    for (const b of batch) expect.set(b.head, b);
    for (let i = 0; i < batch.length; i++) {
      const at = USED_GPA + 4 + 8 * ((this.usedIdx + i) % QSIZE);
      const id = m.u32(at);
      const len = m.u32(at + 4);
      const b = expect.get(id);
      if (!b) throw new Error(`used element with id ${id}, which is not a head of this batch (or came twice)`);
      expect.delete(id);
      if (len === 0) this.count.usedLenZero++;
      if (b.writableBytes >= 0 && len > b.writableBytes) throw new Error(`used length ${len} for head ${id}, more than its ${b.writableBytes} writable bytes`);
    }
    this.usedIdx = this.availIdx;
    this.compareShadow(allowed);
    this.count.batches++;
  }

  /** Copy the driver's own writes in [from, to) into the shadow. */
  protected syncShadow(from: number, to: number): void {
    const m = this.mem();
    for (let i = 0; i < m.regions.length; i++) {
      const r = m.regions[i];
      const a = Math.max(from, r.gpa);
      const b = Math.min(to, r.gpa + r.sizeBytes);
      if (a < b) this.shadow[i].set(r.bytes.subarray(a - r.gpa, b - r.gpa), a - r.gpa);
    }
  }

  /** Guest memory outside the device-writable ranges `allowed` equals the shadow; then the shadow takes the memory. */
  protected compareShadow(allowed: [number, number][]): void {
    const m = this.mem();
    allowed.sort((a, b) => a[0] - b[0]);
    for (let i = 0; i < m.regions.length; i++) {
      const r = m.regions[i];
      const cur = r.bytes;
      const sh = this.shadow[i];
      let pos = r.gpa;
      const end = r.gpa + r.sizeBytes;
      const cmp = (from: number, to: number): void => {
        if (from >= to) return;
        const a = cur.subarray(from - r.gpa, to - r.gpa);
        const b = sh.subarray(from - r.gpa, to - r.gpa);
        if (Buffer.compare(a, b) !== 0) {
          let k = 0;
          while (a[k] === b[k]) k++;
          throw new Error(`guest memory changed outside every device-writable buffer at gpa 0x${(from + k).toString(16)} (0x${b[k].toString(16)} → 0x${a[k].toString(16)})`);
        }
      };
      for (const [a, b] of allowed) {
        if (b <= pos || a >= end) continue;
        cmp(pos, Math.max(pos, a));
        pos = Math.max(pos, b);
      }
      cmp(pos, end);
      sh.set(cur);
    }
  }
}
