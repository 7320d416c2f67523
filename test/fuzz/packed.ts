/**
 * Packed-ring chain fuzzer (virtio 1.2 §2.8): the chain fuzzer's hostile
 * virtio-blk chains (chains.ts: any request, 0-140 data segments, buffers
 * across the two regions' boundary or out of guest memory, status missing or
 * read-only, stray flag bits, indirect tables of any length, nested INDIRECT,
 * tables out of memory) published on a 256-entry packed ring this fuzzer
 * drives itself, plus what only a packed ring has:
 *   - wrap counters: every batch continues where the last ended, so the
 *     ring wraps and the AVAIL/USED bits flip (a fresh connection starts at
 *     wrap 1);
 *   - INDIRECT together with NEXT, INDIRECT inside a multi-descriptor chain,
 *     stray id fields on descriptors that are not a chain's last;
 *   - queue-breaking faults, at most one per batch, on its last chain: a
 *     buffer id >= the ring size (the device must stop the queue), a chain
 *     whose second descriptor carries the wrong AVAIL/USED bits (never
 *     available: the device must wait). Either way exactly the chains before
 *     it come back, then the fuzzer reconnects (a new ring, wrap 1).
 * Checked per batch as in chains.ts: every id published (before a fault)
 * comes back exactly once in ring order positions, no other id does, a used
 * length never exceeds the chain's writable bytes, and guest memory outside
 * the device-writable bytes (the descriptor ring, the device event area, the
 * WRITE descriptors of the ring and of the indirect area) equals the shadow.
 * Thread: the fuzz runner's main thread.
 */
import { native } from '../../bindings';
import { DRIVER_FEATURES, VhostUserFrontend } from '../lib/frontend';
import { Desc, Req, vringAddr, vringFdPayload, vringState } from '../lib/frontend-wire';
import { BATCH_TIMEOUT_MS, ChainFuzzer, type Built, type D, HEADER_END, HEADER_GPA, INDIRECT_END, INDIRECT_GPA, MEM_END, QSIZE, REGION } from './chains';
import type { Rng } from './rng';
import type { FuzzTarget } from './target';

const RING_GPA = 0;
const RING_END = 16 * QSIZE;
const DRIVER_EVENT_GPA = 0x1000;
const DEVICE_EVENT_GPA = 0x2000;
const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;
const RING_PACKED = 1n << 34n;
/** How long a faulted batch is watched for used buffers past the fault. */
const FAULT_SETTLE_MS = 20;

interface PackedBuilt extends Built {
  /** The buffer id (that of its last descriptor). */
  id: number;
  /** Ring slots the chain took. */
  ndesc: number;
  /** A fault that stops the queue at this chain: nothing from here on comes back. */
  fault: boolean;
}

export class PackedChainFuzzer extends ChainFuzzer {
  override readonly name = 'packed';
  /** The driver's next ring slot and wrap counter. */
  private slot = 0;
  private wrap = true;
  /** The next used slot to read and the device's wrap counter there. */
  private usedSlot = 0;
  private usedWrap = true;
  /** Ring slot at which the batch being built began, and its first descriptor's flags (stored last). */
  private batchSlot = 0;
  private firstFlags = -1;
  private packedBatch: PackedBuilt[] = [];
  private readonly pcount = { faults: 0, wraps: 0, indirectWithNext: 0 };

  override async setup(target: FuzzTarget): Promise<void> {
    this.target = target;
    this.ctrl = await target.createBlk('fz.packed', 4096, { packedRing: true });
    await this.connect();
  }

  override counters(): Record<string, number> {
    return { ...super.counters(), ...this.pcount };
  }

  override replayStart(caseNo: number): number {
    return this.packedBatch.length > 0 ? this.batchStart : caseNo;
  }

  protected override async connect(): Promise<void> {
    const fe = await VhostUserFrontend.connect(this.ctrl.socket, 15_000, { waitAccepted: true });
    const n = await fe.negotiate({ features: DRIVER_FEATURES | RING_PACKED, regions: [{ gpa: 0, sizeBytes: REGION }, { gpa: REGION, sizeBytes: REGION }] });
    if ((n.features & RING_PACKED) === 0n) {
      fe.close();
      throw new Error('the blk controller does not offer VIRTIO_F_RING_PACKED');
    }
    const mem = fe.memory!;
    mem.bytes(0, 64 << 10).fill(0);
    // The driver event area asks for no notifications (the fuzzer polls the ring).
    mem.setU16(DRIVER_EVENT_GPA + 2, 1);
    this.kickFd = native.eventfd(0, 0);
    const callFd = native.eventfd(0, 0);
    await fe.request(Req.SET_VRING_NUM, vringState(0, QSIZE));
    await fe.request(Req.SET_VRING_BASE, vringState(0, 0x8000)); // slot 0, wrap counter 1 (§2.8.1)
    await fe.request(Req.SET_VRING_ADDR, vringAddr(0, 0, mem.uva(RING_GPA), mem.uva(DEVICE_EVENT_GPA), mem.uva(DRIVER_EVENT_GPA), 0n));
    await fe.request(Req.SET_VRING_KICK, vringFdPayload(0, false), [this.kickFd]);
    await fe.request(Req.SET_VRING_CALL, vringFdPayload(0, false), [callFd]);
    native.close(callFd);
    await fe.request(Req.SET_VRING_ENABLE, vringState(0, 1));
    await fe.sync();
    this.fe = fe;
    this.slot = 0;
    this.wrap = true;
    this.usedSlot = 0;
    this.usedWrap = true;
    this.shadow = mem.regions.map((r) => r.bytes.slice());
  }

  override async quiesce(): Promise<void> {
    if (this.packedBatch.length > 0) await this.flush();
  }

  override async runCase(rng: Rng, caseNo: number): Promise<void> {
    const batchEmpty = this.packedBatch.length === 0;
    await this.prepareCase(rng, caseNo, batchEmpty);
    if (batchEmpty) {
      this.batchSlot = this.slot;
      this.firstFlags = -1;
    }
    const last = this.packedBatch.length + 1 >= this.batchSize;
    const built = this.buildPacked(rng, last);
    if (built === null) {
      await this.flush();
      return this.runCase(rng, caseNo);
    }
    this.packedBatch.push(built);
    this.count.chains++;
    if (last || built.fault) await this.flush();
  }

  // --- building -----------------------------------------------------------------

  /** A packed descriptor (§2.8.13): addr, len, id, flags. */
  private writePacked(at: number, d: D, id: number): void {
    const m = this.mem();
    m.setU64(at, d.addr);
    m.setU32(at + 8, d.len >>> 0);
    m.setU16(at + 12, id & 0xffff);
    m.setU16(at + 14, d.flags & 0xffff);
  }

  /** Availability bits for the driver's wrap counter `w`: AVAIL = w, USED = !w. */
  private static availBits(w: boolean): number {
    return w ? F_AVAIL : F_USED;
  }

  private buildPacked(rng: Rng, lastOfBatch: boolean): PackedBuilt | null {
    const { descs, writable } = this.chainDescs(rng);
    // Ring descriptors carry only NEXT/WRITE/INDIRECT and stray low bits: never the AVAIL/USED bits themselves.
    for (const d of descs) d.flags &= ~(F_AVAIL | F_USED);
    const id = this.packedBatch.length; // unique among the buffers outstanding (the ring is empty at batch start)
    let sane = true;
    let ring: D[] = descs;
    if (rng.int(10) < 2) {
      // indirect: the table (packed descriptors, taken in order: NEXT means nothing there) in the indirect area
      const tableBytes = 16 * descs.length;
      if (this.indirectNext + tableBytes > INDIRECT_END || descs.length > QSIZE) return null;
      this.count.indirect++;
      const table = this.indirectNext;
      this.indirectNext += tableBytes;
      if (rng.chance(0.05)) {
        sane = false;
        const d = rng.pick(descs);
        d.flags = (d.flags | Desc.INDIRECT) & ~Desc.WRITE; // nested indirect (§2.8.7)
        d.addr = BigInt(INDIRECT_GPA);
      }
      descs.forEach((d, i) => this.writePacked(table + 16 * i, d, rng.chance(0.9) ? 0 : rng.u32()));
      const { taddr, tlen, bent } = this.tableRef(rng, table, tableBytes);
      if (bent) sane = false;
      const ind: D = { addr: taddr, len: tlen, flags: Desc.INDIRECT | (rng.chance(0.02) ? Desc.WRITE : 0), next: 0 };
      ring = [ind];
      if (rng.chance(0.05)) {
        // INDIRECT with NEXT, or inside a longer chain: not allowed (§2.8.7); the chain gets IOERR
        sane = false;
        this.pcount.indirectWithNext++;
        ring = rng.chance(0.5) ? [{ ...ind, flags: ind.flags | Desc.NEXT }, { addr: BigInt(INDIRECT_GPA), len: 16, flags: 0, next: 0 }] : [{ addr: BigInt(INDIRECT_GPA), len: 16, flags: Desc.NEXT, next: 0 }, ind];
      }
      if (ind.flags & Desc.WRITE) sane = false;
    } else {
      // A stray flag bit with NEXT makes the walk read the next chain: only where NEXT is what the chain says.
      descs.forEach((d, i) => {
        if (i + 1 < descs.length) d.flags |= Desc.NEXT;
        else d.flags &= ~Desc.NEXT;
      });
    }
    for (let i = 0; i + 1 < ring.length; i++) ring[i].flags |= Desc.NEXT;
    ring[ring.length - 1].flags &= ~Desc.NEXT;
    if (this.nextSlot + ring.length > QSIZE) return null;
    // A fault that stops the queue, on the last chain of a batch only.
    let fault: 'id' | 'avail' | null = null;
    if (lastOfBatch && rng.chance(0.02)) fault = ring.length >= 2 && rng.chance(0.5) ? 'avail' : 'id';
    let slot = this.slot;
    let w = this.wrap;
    ring.forEach((d, i) => {
      const last = i === ring.length - 1;
      let bufId = last ? id : rng.chance(0.9) ? id : rng.u32(); // the id counts only on the last descriptor (§2.8.6)
      if (last && fault === 'id') bufId = QSIZE + rng.int(0x10000 - QSIZE);
      let bits = PackedChainFuzzer.availBits(w);
      if (i === 1 && fault === 'avail') bits = PackedChainFuzzer.availBits(!w);
      const at = RING_GPA + 16 * slot;
      this.writePacked(at, { ...d, flags: i === 0 ? 0 : d.flags | bits }, bufId);
      if (i === 0) {
        // The first descriptor's flags make the chain available: stored when the batch is published.
        if (this.firstFlags < 0) this.firstFlags = d.flags | bits;
        else this.mem().setU16(at + 14, (d.flags | bits) & 0xffff);
      }
      if (++slot === QSIZE) {
        slot = 0;
        w = !w;
        this.pcount.wraps++;
      }
    });
    this.slot = slot;
    this.wrap = w;
    this.nextSlot += ring.length;
    if (fault !== null) this.pcount.faults++;
    return { head: id, id, ndesc: ring.length, writableBytes: sane && fault === null ? writable : -1, fault: fault !== null };
  }

  // --- running a batch ---------------------------------------------------------

  /** Device-writable bytes: the ring (used descriptors), the device event area, WRITE descriptors in the ring and the indirect area. */
  protected override writableRanges(): [number, number][] {
    const m = this.mem();
    const out: [number, number][] = [
      [RING_GPA, RING_END],
      [DEVICE_EVENT_GPA, DEVICE_EVENT_GPA + 4],
    ];
    const scan = (from: number, to: number, firstAt: number, firstFlags: number): void => {
      for (let at = from; at + 16 <= to; at += 16) {
        const flags = at === firstAt ? firstFlags : m.u16(at + 14);
        if ((flags & Desc.WRITE) === 0 || (flags & Desc.INDIRECT) !== 0) continue;
        const addr = Number(m.u32(at)) + Number(m.u32(at + 4)) * 0x1_0000_0000;
        const len = m.u32(at + 8);
        if (addr >= MEM_END) continue;
        out.push([addr, Math.min(MEM_END, addr + len)]);
      }
    };
    scan(RING_GPA, RING_END, RING_GPA + 16 * this.batchSlot, this.firstFlags);
    scan(INDIRECT_GPA, INDIRECT_END, -1, 0);
    return out;
  }

  protected override async flush(): Promise<void> {
    const fe = this.fe!;
    const m = this.mem();
    const batch = this.packedBatch;
    this.packedBatch = [];
    if (batch.length === 0) return;
    const allowed = this.writableRanges();
    this.syncShadow(INDIRECT_GPA, HEADER_END);
    // Publish: the batch's first descriptor's flags last (§2.8.21), then the kick.
    const firstAt = RING_GPA + 16 * this.batchSlot;
    this.syncShadow(RING_GPA, RING_END);
    this.syncShadow(DRIVER_EVENT_GPA, DRIVER_EVENT_GPA + 4);
    if (this.tamper) {
      // Self-test of the check: a byte changed where no device-writable buffer is (a request header).
      m.setU8(HEADER_GPA + 3, m.u8(HEADER_GPA + 3) ^ 0x40);
    }
    m.atomicStoreU16(firstAt + 14, this.firstFlags & 0xffff);
    native.eventfdWrite(this.kickFd, 1);
    const expectN = batch.findIndex((b) => b.fault);
    const want = expectN < 0 ? batch.length : expectN;
    const faulted = expectN >= 0;
    const expect = new Map<number, PackedBuilt>();
    for (const b of batch.slice(0, want)) expect.set(b.id, b);
    const deadline = Date.now() + BATCH_TIMEOUT_MS;
    let got = 0;
    let settleUntil = 0;
    for (;;) {
      // Read every used descriptor there is (§2.8.1: AVAIL = USED = the device's wrap counter).
      for (;;) {
        const at = RING_GPA + 16 * this.usedSlot;
        const f = m.atomicLoadU16(at + 14);
        const used = ((f & F_AVAIL) !== 0) === this.usedWrap && ((f & F_USED) !== 0) === this.usedWrap;
        if (!used) break;
        const id = m.u16(at + 12);
        const len = m.u32(at + 8);
        const b = expect.get(id);
        if (!b) throw new Error(`used descriptor at slot ${this.usedSlot} with id ${id}, which is not a buffer of this batch before a fault (or came twice)`);
        expect.delete(id);
        got++;
        if (len === 0) this.count.usedLenZero++;
        if (b.writableBytes >= 0 && len > b.writableBytes) throw new Error(`used length ${len} for id ${id}, more than its ${b.writableBytes} writable bytes`);
        this.usedSlot += b.ndesc;
        if (this.usedSlot >= QSIZE) {
          this.usedSlot -= QSIZE;
          this.usedWrap = !this.usedWrap;
        }
      }
      if (got === want) {
        if (!faulted) break;
        // Nothing past the fault may come back: watch a little longer.
        if (settleUntil === 0) settleUntil = Date.now() + FAULT_SETTLE_MS;
        else if (Date.now() > settleUntil) break;
      }
      if (fe.channel.eof) throw new Error(`vhostd closed the connection during a batch of ${batch.length} chains (${fe.channel.endReason})`);
      if (Date.now() > deadline) throw new Error(`batch of ${batch.length} chains: ${got} of ${want} used in ${BATCH_TIMEOUT_MS} ms`);
      await new Promise((r) => setTimeout(r, 1));
    }
    this.compareShadow(allowed);
    this.count.batches++;
    if (faulted) {
      // The queue stopped at the fault (or waits for a chain never completed): start again on a fresh ring.
      this.disconnect();
    }
  }
}
