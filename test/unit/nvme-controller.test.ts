/**
 * The NVMe controller (engine/nvme/controller.ts) against a driver-side mock:
 * guest memory in a memfd (admin and I/O queues, PRP lists, SGL segments,
 * data), BAR0 registers written by the PCI function's rules (as the reactor
 * does), doorbells in the shared page (or shadow doorbells), interrupts as
 * real eventfd counters, namespaces as malloc bdevs through the bdev layer.
 */
import t from 'tap';
import v8 from 'node:v8';
import vm from 'node:vm';
import { native } from '../../bindings';
import { WorkerBdevLayer } from '../../engine/bdev/layer';
import type { BdevDesc } from '../../engine/control';
import { GuestMemory } from '../../engine/memory';
import { NvmeController, type NvmeControllerDesc } from '../../engine/nvme/controller';
import { writeRegister, initRegisters } from '../../engine/nvme/pci';
import { Bar0, Csts, Reg, Status } from '../../engine/nvme/spec';

const BASE = 0x100000; // guest memory starts at 1 MiB: GPA 0 is outside it
const MEM_BYTES = 4 << 20;
const ASQ = BASE + 0x0000;
const ACQ = BASE + 0x1000;
const SQ1 = BASE + 0x2000;
const CQ1 = BASE + 0x3000;
const SHADOW = BASE + 0x4000;
const EVENTIDX = BASE + 0x5000;
const LIST = BASE + 0x8000;
const DATA = BASE + 0x10000;
const QSIZE = 64;

interface Cqe {
  dw0: number;
  sqhd: number;
  sqid: number;
  cid: number;
  status: number;
}

class Driver {
  readonly memFd: number;
  readonly mem: GuestMemory;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly bar = new Uint8Array(Bar0.Size);
  readonly barView = new DataView(this.bar.buffer);
  readonly db = new Uint32Array(this.bar.buffer, Bar0.DoorbellOffset, 1024);
  readonly irqFds: number[];
  readonly layer = new WorkerBdevLayer();
  readonly storage = new SharedArrayBuffer(512 * 4096);
  readonly ctrl: NvmeController;
  readonly sqTail = new Map<number, number>();
  readonly cqHead = new Map<number, number>();
  readonly cqPhase = new Map<number, number>();
  readonly sqBase = new Map<number, number>([[0, ASQ]]);
  readonly cqBase = new Map<number, number>([[0, ACQ]]);
  shadow = false;
  private cid = 1;
  now = 0;

  constructor(desc: Partial<NvmeControllerDesc> = {}) {
    this.memFd = native.memfdCreate('nvme-test', 0);
    native.ftruncate(this.memFd, MEM_BYTES);
    this.mem = GuestMemory.map([{ fd: this.memFd, guestPhysAddr: BASE, sizeBytes: MEM_BYTES, userAddr: BASE, mmapOffset: 0 }], native);
    this.bytes = this.mem.bytes[0];
    this.view = this.mem.views[0];
    this.irqFds = [native.eventfd(0, 0), native.eventfd(0, 0), native.eventfd(0, 0), native.eventfd(0, 0)];
    initRegisters(this.barView);
    const bdev: BdevDesc = { name: 'Malloc0', module: 'malloc', blockSize: 512, numBlocks: 4096, params: { storage: this.storage } };
    this.ctrl = new NvmeController(
      {
        name: 'nvme0',
        serial: 'VHOSTD0001',
        model: 'vhostd NVMe controller',
        firmware: '0.1',
        subnqn: 'nqn.2026-11.io.vhostd:nvme0',
        maxIoQueues: 4,
        vectors: 4,
        namespaces: [{ nsid: 1, bdev }],
        ...desc,
      },
      this.bar,
      this.layer,
      { signal: (v) => native.eventfdWrite(this.irqFds[v], 1) },
    );
    this.ctrl.start(0);
    this.ctrl.setMemory(this.mem);
    for (const q of [0, 1, 2, 3, 4]) {
      this.sqTail.set(q, 0);
      this.cqHead.set(q, 0);
      this.cqPhase.set(q, 1);
    }
  }

  reg(off: number, value: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value, true);
    if (!writeRegister(this.barView, off, b)) throw new Error(`register write at ${off} refused`);
  }

  reg64(off: number, value: number): void {
    const b = new Uint8Array(8);
    const v = new DataView(b.buffer);
    v.setUint32(0, value % 2 ** 32, true);
    v.setUint32(4, Math.floor(value / 2 ** 32), true);
    if (!writeRegister(this.barView, off, b)) throw new Error(`register write at ${off} refused`);
  }

  get csts(): number {
    return this.barView.getUint32(Reg.Csts, true);
  }

  poll(n = 4): void {
    for (let i = 0; i < n; i++) this.ctrl.poll(++this.now);
  }

  enable(): void {
    this.reg(Reg.Aqa, ((QSIZE - 1) << 16) | (QSIZE - 1));
    this.reg64(Reg.Asq, ASQ);
    this.reg64(Reg.Acq, ACQ);
    this.reg(Reg.Cc, 1 | (6 << 16) | (4 << 20));
    this.poll();
  }

  irqs(v: number): number {
    const n = native.eventfdRead(this.irqFds[v]);
    return n < 0 ? 0 : n;
  }

  /** Put a command in queue `qid` (fields by dword index 0..15) and ring the doorbell; returns its cid. */
  submit(qid: number, dw: Partial<Record<number, number>>, opts: { ring?: boolean } = {}): number {
    const cid = this.cid++ & 0xffff;
    const tail = this.sqTail.get(qid) as number;
    const at = (this.sqBase.get(qid) as number) - BASE + tail * 64;
    this.bytes.fill(0, at, at + 64);
    for (const [k, val] of Object.entries(dw)) this.view.setUint32(at + Number(k) * 4, (val as number) >>> 0, true);
    this.view.setUint32(at, ((dw[0] ?? 0) & 0xffff) | (cid << 16), true);
    const next = (tail + 1) % QSIZE;
    this.sqTail.set(qid, next);
    if (opts.ring !== false) this.ring(qid, next);
    return cid;
  }

  ring(qid: number, tail: number): void {
    if (this.shadow && qid !== 0) this.view.setUint32(SHADOW - BASE + 8 * qid, tail, true);
    else Atomics.store(this.db, 2 * qid, tail);
  }

  /** Reap completions of queue `qid` (polling the controller until `want` arrived). */
  reap(qid: number, want = 1): Cqe[] {
    const out: Cqe[] = [];
    for (let spin = 0; spin < 50 && out.length < want; spin++) {
      this.ctrl.poll(++this.now);
      for (;;) {
        const head = this.cqHead.get(qid) as number;
        const at = (this.cqBase.get(qid) as number) - BASE + head * 16;
        const dw3 = this.view.getUint32(at + 12, true);
        if (((dw3 >>> 16) & 1) !== this.cqPhase.get(qid)) break;
        const dw2 = this.view.getUint32(at + 8, true);
        out.push({ dw0: this.view.getUint32(at, true), sqhd: dw2 & 0xffff, sqid: dw2 >>> 16, cid: dw3 & 0xffff, status: (dw3 >>> 17) & 0x7ff });
        const next = (head + 1) % QSIZE;
        if (next === 0) this.cqPhase.set(qid, (this.cqPhase.get(qid) as number) ^ 1);
        this.cqHead.set(qid, next);
        if (this.shadow && qid !== 0) this.view.setUint32(SHADOW - BASE + 8 * qid + 4, next, true);
        else Atomics.store(this.db, 2 * qid + 1, next);
      }
    }
    return out;
  }

  /** Run one command to completion. */
  cmd(qid: number, dw: Partial<Record<number, number>>): Cqe {
    const cid = this.submit(qid, dw);
    const [e] = this.reap(qid, 1);
    if (e === undefined) throw new Error(`no completion for opcode ${dw[0]} on queue ${qid}`);
    if (e.cid !== cid) throw new Error(`completion for cid ${e.cid}, expected ${cid}`);
    return e;
  }

  ioQueues(): void {
    if (this.cmd(0, { 0: 0x09, 10: 0x07, 11: (3 << 16) | 3 }).status !== 0) throw new Error('set number of queues');
    this.sqBase.set(1, SQ1);
    this.cqBase.set(1, CQ1);
    if (this.cmd(0, { 0: 0x05, 6: CQ1, 10: ((QSIZE - 1) << 16) | 1, 11: (1 << 16) | 3 }).status !== 0) throw new Error('create cq');
    if (this.cmd(0, { 0: 0x01, 6: SQ1, 10: ((QSIZE - 1) << 16) | 1, 11: (1 << 16) | 1 }).status !== 0) throw new Error('create sq');
  }

  close(): void {
    for (let i = 0; i < 20 && this.ctrl.inflight > 0; i++) this.ctrl.poll(++this.now);
    this.ctrl.stop();
    this.mem.unmap();
    native.close(this.memFd);
    for (const fd of this.irqFds) native.close(fd);
  }
}

function ascii(b: Uint8Array, at: number, len: number): string {
  return Buffer.from(b.subarray(at, at + len)).toString('latin1').trimEnd();
}

t.test('enable: CC.EN with valid admin queues sets CSTS.RDY; CAP and VS read back', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  t.equal(d.barView.getUint32(Reg.Vs, true), 0x00010400);
  t.equal(d.barView.getUint32(Reg.Cap, true) & 0xffff, 1023, 'MQES');
  t.equal(d.csts & Csts.Rdy, 0);
  d.enable();
  t.equal(d.csts, Csts.Rdy);
});

t.test('enable with an admin queue outside guest memory sets CSTS.CFS', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  d.reg(Reg.Aqa, (15 << 16) | 15);
  d.reg64(Reg.Asq, 0x1000); // below the region
  d.reg64(Reg.Acq, ACQ);
  d.reg(Reg.Cc, 1 | (6 << 16) | (4 << 20));
  d.poll();
  t.equal(d.csts & Csts.Cfs, Csts.Cfs);
  t.equal(d.csts & Csts.Rdy, 0);
});

t.test('identify controller, namespace, active list and descriptors', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  d.enable();
  const buf = DATA - BASE;
  let e = d.cmd(0, { 0: 0x06, 6: DATA, 10: 1 });
  t.equal(e.status, 0);
  t.equal(d.view.getUint16(buf, true), 0x4e58, 'VID');
  t.equal(ascii(d.bytes, buf + 4, 20), 'VHOSTD0001', 'SN');
  t.equal(ascii(d.bytes, buf + 24, 40), 'vhostd NVMe controller', 'MN');
  t.equal(d.bytes[buf + 512], 0x66, 'SQES');
  t.equal(d.bytes[buf + 513], 0x44, 'CQES');
  t.equal(d.view.getUint32(buf + 516, true), 32, 'NN');
  t.equal(d.view.getUint32(buf + 80, true), 0x00010400, 'VER');
  t.equal(d.view.getUint16(buf + 256, true) & 0x100, 0x100, 'OACS doorbell buffer config');
  t.equal(ascii(d.bytes, buf + 768, 64).replace(/\0+$/, ''), 'nqn.2026-11.io.vhostd:nvme0');

  e = d.cmd(0, { 0: 0x06, 1: 1, 6: DATA, 10: 0 });
  t.equal(e.status, 0);
  t.equal(d.view.getUint32(buf, true), 4096, 'NSZE');
  t.equal((d.view.getUint32(buf + 128, true) >>> 16) & 0xff, 9, 'LBADS 512');

  e = d.cmd(0, { 0: 0x06, 1: 0, 6: DATA, 10: 2 });
  t.equal(e.status, 0);
  t.same([d.view.getUint32(buf, true), d.view.getUint32(buf + 4, true)], [1, 0], 'active namespace list');

  e = d.cmd(0, { 0: 0x06, 1: 1, 6: DATA, 10: 3 });
  t.equal(e.status, 0);
  t.same([d.bytes[buf], d.bytes[buf + 1]], [2, 16], 'NGUID descriptor');
  t.same([d.bytes[buf + 20], d.bytes[buf + 21]], [3, 16], 'UUID descriptor');
  t.equal(d.bytes[buf + 30] >>> 4, 8, 'UUID version 8');
  t.ok(d.bytes.subarray(buf + 4, buf + 20).some((x) => x !== 0), 'NGUID not zero');

  t.equal(d.cmd(0, { 0: 0x06, 1: 7, 6: DATA, 10: 3 }).status, Status.InvalidNamespace);
  t.equal(d.cmd(0, { 0: 0x06, 6: DATA, 10: 0x55 }).status, Status.InvalidField);
  t.equal(d.cmd(0, { 0: 0x06, 6: 0x200, 10: 1 }).status, Status.DataTransferError, 'identify into memory that is not mapped');
  t.equal(d.cmd(0, { 0: 0x7f }).status, Status.InvalidOpcode);
});

t.test('queue creation and deletion statuses', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  d.enable();
  t.equal(d.cmd(0, { 0: 0x01, 6: SQ1, 10: ((QSIZE - 1) << 16) | 1, 11: (1 << 16) | 1 }).status, Status.CompletionQueueInvalid, 'SQ on a missing CQ');
  t.equal(d.cmd(0, { 0: 0x05, 6: CQ1, 10: (4096 << 16) | 1, 11: 1 }).status, Status.InvalidQueueSize, 'CQ too large');
  t.equal(d.cmd(0, { 0: 0x05, 6: CQ1, 10: (15 << 16) | 9, 11: 1 }).status, Status.InvalidQueueIdentifier, 'CQ id above the limit');
  t.equal(d.cmd(0, { 0: 0x05, 6: CQ1, 10: (15 << 16) | 1, 11: 0 }).status, Status.InvalidField, 'not contiguous');
  t.equal(d.cmd(0, { 0: 0x05, 6: CQ1, 10: (15 << 16) | 1, 11: (9 << 16) | 3 }).status, Status.InvalidInterruptVector);
  t.equal(d.cmd(0, { 0: 0x05, 6: 0x7000_0000, 10: (15 << 16) | 1, 11: 1 }).status, Status.InvalidField, 'queue outside memory');
  d.ioQueues();
  t.equal(d.cmd(0, { 0: 0x09, 10: 0x07, 11: 0 }).status, Status.CommandSequenceError, 'number of queues after creation');
  t.equal(d.cmd(0, { 0: 0x04, 10: 1 }).status, Status.InvalidQueueDeletion, 'CQ deleted before its SQ');
  t.equal(d.cmd(0, { 0: 0x00, 10: 3 }).status, Status.InvalidQueueIdentifier);
  t.equal(d.cmd(0, { 0: 0x00, 10: 1 }).status, 0);
  t.equal(d.cmd(0, { 0: 0x04, 10: 1 }).status, 0);
});

function fill(d: Driver, at: number, len: number, seed: number): void {
  for (let i = 0; i < len; i++) d.bytes[at - BASE + i] = (i * 7 + seed) & 0xff;
}

t.test('write and read through PRP1/PRP2, a PRP list and SGL; interrupts on the CQ vector', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  d.enable();
  d.ioQueues();
  d.irqs(1);
  // 8 KiB at an offset inside the first page: PRP1 + PRP2 page... 3 pages touched, so a list.
  fill(d, DATA, 8192, 1);
  t.equal(d.cmd(1, { 0: 0x01, 1: 1, 6: DATA, 8: DATA + 4096, 10: 0, 12: 15 }).status, 0, 'write 8 KiB (PRP1+PRP2)');
  t.ok(d.irqs(1) >= 1, 'vector 1 signalled');
  t.same(Buffer.from(new Uint8Array(d.storage, 0, 8192)), Buffer.from(d.bytes.subarray(DATA - BASE, DATA - BASE + 8192)), 'bdev holds the data');
  // 32 KiB read through a PRP list: PRP1 page, list of 7 pages scattered backwards.
  const pages = [DATA + 0x40000, DATA + 0x47000, DATA + 0x46000, DATA + 0x45000, DATA + 0x44000, DATA + 0x43000, DATA + 0x42000, DATA + 0x41000];
  for (let i = 1; i < 8; i++) {
    d.view.setUint32(LIST - BASE + (i - 1) * 8, pages[i], true);
    d.view.setUint32(LIST - BASE + (i - 1) * 8 + 4, 0, true);
  }
  new Uint8Array(d.storage).set(d.bytes.subarray(DATA - BASE, DATA - BASE + 8192), 8192);
  new Uint8Array(d.storage).set(d.bytes.subarray(DATA - BASE, DATA - BASE + 8192), 16384);
  new Uint8Array(d.storage).set(d.bytes.subarray(DATA - BASE, DATA - BASE + 8192), 24576);
  t.equal(d.cmd(1, { 0: 0x02, 1: 1, 6: pages[0], 8: LIST, 10: 0, 12: 63 }).status, 0, 'read 32 KiB (PRP list)');
  for (let i = 0; i < 8; i++) {
    const got = d.bytes.subarray(pages[i] - BASE, pages[i] - BASE + 4096);
    t.same(Buffer.from(got), Buffer.from(new Uint8Array(d.storage, i * 4096, 4096)), `page ${i}`);
  }
  // SGL: one data block descriptor (PSDT 01).
  fill(d, DATA + 0x50000, 1024, 9);
  const sgl = { 0: 0x01 | (1 << 14), 1: 1, 6: DATA + 0x50000, 7: 0, 8: 1024, 9: 0, 10: 100, 12: 1 };
  t.equal(d.cmd(1, sgl).status, 0, 'write through an SGL data block');
  t.same(Buffer.from(new Uint8Array(d.storage, 100 * 512, 1024)), Buffer.from(d.bytes.subarray(0x50000 + DATA - BASE, 0x50000 + DATA - BASE + 1024)));
  // SGL: last-segment descriptor pointing at two data blocks.
  const seg = LIST + 0x1000 - BASE;
  d.view.setUint32(seg, DATA + 0x60000, true);
  d.view.setUint32(seg + 8, 512, true);
  d.bytes[seg + 15] = 0;
  d.view.setUint32(seg + 16, DATA + 0x61000, true);
  d.view.setUint32(seg + 24, 512, true);
  d.bytes[seg + 31] = 0;
  t.equal(d.cmd(1, { 0: 0x02 | (1 << 14), 1: 1, 6: LIST + 0x1000, 8: 32, 9: 0x30 << 24, 10: 100, 12: 1 }).status, 0, 'read through an SGL last segment');
  t.same(Buffer.from(d.bytes.subarray(0x60000 + DATA - BASE, 0x60000 + DATA - BASE + 512)), Buffer.from(new Uint8Array(d.storage, 100 * 512, 512)));
  t.same(Buffer.from(d.bytes.subarray(0x61000 + DATA - BASE, 0x61000 + DATA - BASE + 512)), Buffer.from(new Uint8Array(d.storage, 101 * 512, 512)));
  t.equal(d.cmd(1, { 0: 0x02 | (1 << 14), 1: 1, 6: DATA, 8: 256, 10: 0, 12: 1 }).status, Status.DataSglLengthInvalid, 'SGL shorter than the transfer');
});

t.test('bad NVM commands complete with the spec status, never touching memory outside the map', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  d.enable();
  d.ioQueues();
  t.equal(d.cmd(1, { 0: 0x02, 1: 1, 6: DATA, 10: 4096, 12: 0 }).status, Status.LbaOutOfRange);
  t.equal(d.cmd(1, { 0: 0x02, 1: 1, 6: DATA, 10: 4095, 12: 1 }).status, Status.LbaOutOfRange, 'range ends past the namespace');
  t.equal(d.cmd(1, { 0: 0x02, 1: 2, 6: DATA, 10: 0, 12: 0 }).status, Status.InvalidNamespace);
  t.equal(d.cmd(1, { 0: 0x02, 1: 1, 6: 0x1000, 10: 0, 12: 0 }).status, Status.DataTransferError, 'PRP1 below guest memory');
  t.equal(d.cmd(1, { 0: 0x02, 1: 1, 6: BASE + MEM_BYTES - 512, 8: DATA + 8, 10: 0, 12: 1 }).status, Status.InvalidPrpOffset, 'PRP2 not page aligned');
  t.equal(d.cmd(1, { 0: 0x02, 1: 1, 6: BASE + MEM_BYTES - 512, 8: BASE + MEM_BYTES, 10: 0, 12: 1 }).status, Status.DataTransferError, 'PRP2 past the end');
  t.equal(d.cmd(1, { 0: 0x02, 1: 1, 6: DATA, 10: 0, 12: 2047 }).status, Status.InvalidField, 'over MDTS');
  t.equal(d.cmd(1, { 0: 0x7e, 1: 1 }).status, Status.InvalidOpcode);
  t.equal(d.cmd(1, { 0: 0x02 | (1 << 8), 1: 1, 6: DATA, 12: 0 }).status, Status.InvalidField, 'fused');
  t.equal(d.cmd(1, { 0: 0x02 | (1 << 14), 1: 1, 6: DATA, 8: 512, 9: 0x50 << 24, 10: 0, 12: 0 }).status, Status.SglDescriptorTypeInvalid);
  t.equal(d.csts & Csts.Cfs, 0, 'controller still healthy');
});

t.test('compare, write zeroes, dataset management, flush', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  d.enable();
  d.ioQueues();
  fill(d, DATA, 4096, 3);
  t.equal(d.cmd(1, { 0: 0x01, 1: 1, 6: DATA, 10: 8, 12: 7 }).status, 0);
  t.equal(d.cmd(1, { 0: 0x05, 1: 1, 6: DATA, 10: 8, 12: 7 }).status, 0, 'compare equal');
  d.bytes[DATA - BASE + 4000] ^= 0xff;
  t.equal(d.cmd(1, { 0: 0x05, 1: 1, 6: DATA, 10: 8, 12: 7 }).status, Status.CompareFailure, 'compare different');
  t.equal(d.cmd(1, { 0: 0x08, 1: 1, 10: 8, 12: 1 }).status, 0, 'write zeroes 2 blocks');
  t.ok(new Uint8Array(d.storage, 8 * 512, 1024).every((x) => x === 0));
  t.ok(new Uint8Array(d.storage, 10 * 512, 512).some((x) => x !== 0), 'the next block untouched');
  // DSM deallocate two ranges: blocks 10..11 and 14..15.
  const r = LIST - BASE;
  d.bytes.fill(0, r, r + 32);
  d.view.setUint32(r + 4, 2, true);
  d.view.setUint32(r + 8, 10, true);
  d.view.setUint32(r + 20, 2, true);
  d.view.setUint32(r + 24, 14, true);
  t.equal(d.cmd(1, { 0: 0x09, 1: 1, 6: LIST, 10: 1, 11: 4 }).status, 0, 'deallocate');
  t.ok(new Uint8Array(d.storage, 10 * 512, 1024).every((x) => x === 0), 'range 1 zeroed (malloc deallocates to zeroes)');
  t.ok(new Uint8Array(d.storage, 12 * 512, 1024).some((x) => x !== 0), 'between ranges untouched');
  t.ok(new Uint8Array(d.storage, 14 * 512, 1024).every((x) => x === 0), 'range 2 zeroed');
  d.view.setUint32(r + 24, 5000, true);
  t.equal(d.cmd(1, { 0: 0x09, 1: 1, 6: LIST, 10: 1, 11: 4 }).status, Status.LbaOutOfRange, 'a range past the end');
  t.equal(d.cmd(1, { 0: 0x00, 1: 1 }).status, 0, 'flush');
});

t.test('features, log pages and the namespace-change async event', async (t) => {
  const d = new Driver({
    namespaces: [
      { nsid: 1, bdev: { name: 'Malloc0', module: 'malloc', blockSize: 512, numBlocks: 4096, params: { storage: new SharedArrayBuffer(512 * 4096) } } },
      { nsid: 2, bdev: { name: 'Null1', module: 'null', blockSize: 4096, numBlocks: 1000, params: undefined } },
    ],
  });
  t.teardown(() => d.close());
  d.enable();
  let e = d.cmd(0, { 0: 0x09, 10: 0x07, 11: (7 << 16) | 7 });
  t.equal(e.status, 0);
  t.equal(e.dw0, (3 << 16) | 3, 'four queue pairs granted of eight asked');
  t.equal(d.cmd(0, { 0: 0x0a, 10: 0x07 }).dw0, (3 << 16) | 3);
  t.equal(d.cmd(0, { 0: 0x0a, 10: 0x06 }).dw0, 1, 'volatile write cache on');
  t.equal(d.cmd(0, { 0: 0x09, 10: 0x06, 11: 0 }).status, 0);
  t.equal(d.cmd(0, { 0: 0x0a, 10: 0x06 }).dw0, 0);
  t.equal(d.cmd(0, { 0: 0x0a, 10: 0x06 | (1 << 8) }).dw0, 1, 'default value');
  t.equal(d.cmd(0, { 0: 0x09, 10: 0x08, 11: 0x0a05 }).status, 0, 'interrupt coalescing');
  t.equal(d.cmd(0, { 0: 0x0a, 10: 0x08 }).dw0, 0x0a05);
  t.equal(d.cmd(0, { 0: 0x09, 10: 0x01, 11: 0x03 }).status, 0, 'arbitration');
  t.equal(d.cmd(0, { 0: 0x0a, 10: 0x01 }).dw0, 0x03);
  t.equal(d.cmd(0, { 0: 0x0a, 10: 0x77 }).status, Status.InvalidField);
  t.equal(d.cmd(0, { 0: 0x09, 10: 0x06 | (1 << 31), 11: 1 }).status, Status.FeatureNotSaveable);
  t.equal(d.cmd(0, { 0: 0x18 }).status, 0, 'keep alive');
  t.equal(d.cmd(0, { 0: 0x08, 10: 1 << 16 }).dw0 & 1, 1, 'abort: not aborted');

  // SMART after I/O counts commands and data units.
  d.ioQueues();
  fill(d, DATA, 4096, 5);
  for (let i = 0; i < 3; i++) d.cmd(1, { 0: 0x01, 1: 1, 6: DATA, 10: i * 8, 12: 7 });
  e = d.cmd(0, { 0: 0x02, 1: 0xffffffff, 6: DATA, 10: 0x02 | (127 << 16) });
  t.equal(e.status, 0);
  t.equal(d.view.getUint32(DATA - BASE + 80, true), 3, 'host write commands');
  t.equal(d.bytes[DATA - BASE + 3], 100, 'available spare');
  e = d.cmd(0, { 0: 0x02, 6: DATA, 10: 0x03 | (127 << 16) });
  t.equal(e.status, 0);
  t.equal(ascii(d.bytes, DATA - BASE + 8, 8), '0.1', 'firmware slot 1');
  t.equal(d.cmd(0, { 0: 0x02, 6: DATA, 10: 0x42 | (127 << 16) }).status, Status.InvalidLogPage);

  // Async event: enabled, requested, then the namespace is resized.
  t.equal(d.cmd(0, { 0: 0x09, 10: 0x0b, 11: 1 << 8 }).status, 0);
  const aer = d.submit(0, { 0: 0x0c });
  t.same(d.reap(0, 1), [], 'no event yet');
  t.equal(d.layer.resize('Null1', 2048), 1, 'the namespace was told');
  const [ev] = d.reap(0, 1);
  t.equal(ev?.cid, aer);
  t.equal(ev?.dw0, 0x040002, 'notice, namespace attribute changed, log page 4');
  e = d.cmd(0, { 0: 0x02, 6: DATA, 10: 0x04 | (1023 << 16) });
  t.equal(e.status, 0);
  t.same([d.view.getUint32(DATA - BASE, true), d.view.getUint32(DATA - BASE + 4, true)], [2, 0], 'changed namespace list');
  d.cmd(0, { 0: 0x06, 1: 2, 6: DATA, 10: 0 });
  t.equal(d.view.getUint32(DATA - BASE, true), 2048, 'identify shows the new size');
  t.equal((d.view.getUint32(DATA - BASE + 128, true) >>> 16) & 0xff, 12, 'LBADS 4096');
  d.cmd(0, { 0: 0x06, 1: 0, 6: DATA, 10: 2 });
  t.same([d.view.getUint32(DATA - BASE, true), d.view.getUint32(DATA - BASE + 4, true), d.view.getUint32(DATA - BASE + 8, true)], [1, 2, 0], 'two active namespaces');
  for (let i = 0; i < 5; i++) d.submit(0, { 0: 0x0c }); // the earlier one completed: 4 fit, the fifth does not
  t.equal(d.reap(0, 1)[0]?.status, Status.AsyncEventLimitExceeded, 'AERL+1 outstanding at most');
});

t.test('shadow doorbells: commands rung only in guest memory are taken; event indexes trail', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  d.enable();
  t.equal(d.cmd(0, { 0: 0x7c, 6: SHADOW + 8, 8: EVENTIDX }).status, Status.InvalidField, 'unaligned buffer');
  t.equal(d.cmd(0, { 0: 0x7c, 6: SHADOW, 8: EVENTIDX }).status, 0);
  d.ioQueues();
  d.shadow = true;
  fill(d, DATA, 512, 11);
  for (let i = 0; i < 5; i++) t.equal(d.cmd(1, { 0: 0x01, 1: 1, 6: DATA, 10: i, 12: 0 }).status, 0);
  t.equal(Atomics.load(d.db, 2), 0, 'the MMIO doorbell was never rung');
  t.equal(d.view.getUint32(EVENTIDX - BASE + 8, true), 4, 'SQ event index one behind the tail');
  t.same(Buffer.from(new Uint8Array(d.storage, 4 * 512, 512)), Buffer.from(d.bytes.subarray(DATA - BASE, DATA - BASE + 512)));
});

t.test('shadow doorbells: a page that is not 4-byte aligned in its mapping is refused', async (t) => {
  const d = new Driver();
  const fd = native.memfdCreate('nvme-test-odd', 0);
  native.ftruncate(fd, 0x4000);
  // A second region whose guest address is 2 past a page: the page-aligned GPAs in it sit at offsets of 2 mod 4.
  const odd = BASE + MEM_BYTES + 0x1002;
  const mem = GuestMemory.map(
    [
      { fd: d.memFd, guestPhysAddr: BASE, sizeBytes: MEM_BYTES, userAddr: BASE, mmapOffset: 0 },
      { fd, guestPhysAddr: odd, sizeBytes: 0x4000, userAddr: odd + 0x10000, mmapOffset: 0 },
    ],
    native,
  );
  t.teardown(() => {
    d.close();
    mem.unmap();
    native.close(fd);
  });
  d.ctrl.setMemory(mem);
  d.enable();
  const page = BASE + MEM_BYTES + 0x2000;
  t.equal(d.cmd(0, { 0: 0x7c, 6: page, 8: EVENTIDX }).status, Status.InvalidField, 'shadow page at offset 0xffe of its region');
  t.equal(d.cmd(0, { 0: 0x7c, 6: SHADOW, 8: page }).status, Status.InvalidField, 'event index page at offset 0xffe of its region');
  t.equal(d.cmd(0, { 0: 0x7c, 6: SHADOW, 8: EVENTIDX }).status, 0, 'aligned pages are taken');
});

t.test('a doorbell past the queue size sets CSTS.CFS; reset clears it', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  d.enable();
  d.ioQueues();
  Atomics.store(d.db, 2, QSIZE + 3);
  d.poll();
  t.equal(d.csts & Csts.Cfs, Csts.Cfs);
  d.reg(Reg.Cc, 0);
  d.poll();
  t.equal(d.csts & (Csts.Cfs | Csts.Rdy), 0, 'disabled and reset');
  for (const q of [0, 1]) {
    d.sqTail.set(q, 0);
    d.cqHead.set(q, 0);
    d.cqPhase.set(q, 1);
  }
  d.bytes.fill(0, ACQ - BASE, ACQ - BASE + 4096);
  d.enable();
  t.equal(d.csts, Csts.Rdy, 'enabled again');
  t.equal(d.cmd(0, { 0: 0x06, 6: DATA, 10: 1 }).status, 0, 'admin works after reset');
});

t.test('shutdown: CC.SHN → CSTS.SHST complete after in-flight I/O', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  d.enable();
  d.ioQueues();
  d.submit(1, { 0: 0x01, 1: 1, 6: DATA, 10: 0, 12: 0 });
  d.ctrl.poll(++d.now); // taken, completes on a later poll
  d.reg(Reg.Cc, 1 | (6 << 16) | (4 << 20) | (1 << 14));
  d.poll(6);
  t.equal(d.csts & Csts.ShstMask, Csts.ShstComplete);
  t.equal(d.ctrl.inflight, 0);
});

t.test('a DMA table that no longer covers a queue pauses it (no CFS) until memory covers it again', async (t) => {
  const d = new Driver();
  t.teardown(() => d.close());
  d.enable();
  d.ioQueues();
  // Only the first 0x3000 bytes: the admin queues and SQ1, not CQ1 (as QEMU remaps the BIOS area under firmware).
  const part = GuestMemory.map([{ fd: d.memFd, guestPhysAddr: BASE, sizeBytes: 0x3000, userAddr: BASE, mmapOffset: 0 }], native);
  d.ctrl.setMemory(part);
  d.submit(1, { 0: 0x00, 1: 1 });
  d.poll();
  t.equal(d.csts & Csts.Cfs, 0, 'not fatal');
  t.equal(d.ctrl.inflight, 1, 'the command was taken (its SQ is reachable)...');
  t.equal(d.ctrl.bdevOutstanding(), 0, '... and its completion waits for the CQ, not for the bdev');
  t.same(d.reap(1, 1), [], 'no completion while the CQ is unreachable');
  d.ctrl.setMemory(d.mem);
  part.unmap();
  const [e] = d.reap(1, 1);
  t.equal(e?.status, 0, 'taken and completed once the queue is reachable again');
});

t.test('compare: the bounce buffer is sized by the command and not kept with the request after it completes', async (t) => {
  // Before: every request that once ran a Compare kept a MAX_TRANSFER (512 KiB) bounce buffer in its
  // queue's pool for the queue's life: a driver with a full queue of Compares in flight left
  // queue size x 512 KiB behind (1024 entries: 512 MiB per queue).
  v8.setFlagsFromString('--expose-gc');
  const gcOnce = vm.runInNewContext('gc') as () => void;
  // ArrayBuffers are freed by a sweeper after the GC: collect until the figure settles.
  const gc = async (): Promise<void> => {
    for (let i = 0; i < 4; i++) {
      gcOnce();
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const d = new Driver();
  t.teardown(() => d.close());
  d.enable();
  d.ioQueues();
  // 8 KiB compares (16 blocks: PRP1 and PRP2 direct).
  const cmp = { 0: 0x05, 1: 1, 6: DATA, 8: DATA + 0x1000, 10: 8, 12: 15 };
  fill(d, DATA, 8192, 5);
  t.equal(d.cmd(1, { ...cmp, 0: 0x01 }).status, 0);
  const n = QSIZE - 4;
  await gc();
  const before = process.memoryUsage().arrayBuffers;
  let tail = 0;
  for (let i = 0; i < n; i++) {
    d.submit(1, cmp, { ring: false });
    tail = d.sqTail.get(1) as number;
  }
  d.ring(1, tail);
  const done = d.reap(1, n);
  t.equal(done.length, n, `${n} compares completed`);
  t.ok(done.every((e) => e.status === 0), 'every compare equal');
  await gc();
  const kept = process.memoryUsage().arrayBuffers - before;
  // Kept with the requests, it would be n x 512 KiB (before), or n x 8 KiB through the bdev I/O's iov.
  t.ok(kept < 64 << 10, `ArrayBuffer memory kept after ${n} compares in flight at once: ${(kept / 1024).toFixed(0)} KiB (< 64 KiB)`);
});
