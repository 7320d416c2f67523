/**
 * NVMe command fuzzer over vfio-user (NVMe Base 2.0 §3-5, NVM command set;
 * vfio-user.rst): one case = one command from the in-repo NVMe driver
 * (bench/perf/vfio-user-client.ts) on the admin queue or I/O queue 1 of a
 * vhostd NVMe controller (namespace 1: a 512 B malloc bdev, 2: a 4 KiB null
 * bdev), or now and then a controller-level fault that ends the connection.
 *
 *   - commands: any admin or NVM opcode (Identify with any CNS/CNTID/NSID,
 *     Get Log Page with any LID/NUMD/offset, Get/Set Features with any FID,
 *     Create/Delete I/O queues with any QID/size/flags/vector, Abort, AER,
 *     Format, Read/Write/Compare/Write Zeroes/Flush/DSM/Verify, ...) with
 *     any NSID (mostly 1 or 2), LBAs near the end or at boundary values,
 *     and data pointers: PRP1 at any offset, PRP2 direct or a PRP list
 *     (entries misaligned, out of the DMA window, list chains), PSDT = SGL
 *     with data block / segment / last segment descriptors (bad types,
 *     lengths, counts), fused bits, reserved dwords;
 *   - faults (about 1 case in 150, then a fresh connection): a doorbell past
 *     the queue size (CSTS.CFS), a random BAR0 register write, CC.EN off and
 *     on, DEVICE_RESET, DMA_UNMAP of guest memory with queues live, a
 *     connection dropped mid-flight.
 *
 * Guest memory (4 MiB DMA-mapped at 1 MiB) is laid out so the device may
 * write only the completion queues and the data area:
 *   [0, 4K) admin SQ  [4K, 8K) admin CQ  [8K, 16K) SQ 1  [16K, 20K) CQ 1
 *   [20K, 64K) PRP lists and SGL segments (read-only to the device)
 *   [64K, 128K) completion queues the fuzz creates     [128K, 4M) data
 * Every pointer the fuzzer puts in a command or list points into the data
 * area, the list area (segments, lists) or outside the window; after each
 * case every byte of [0, 16K) except CQ bytes and of [20K, 64K) must equal
 * the shadow copy. Each command must complete within 10 s with a completion
 * carrying its cid, sqid and a phase-correct entry, unless it is an AER.
 * check(): a fresh connection to a second controller on the same core
 * does verified Write/Read, and a fresh connection to the abused one answers
 * Identify.
 *
 * The vfio-user message fuzzer (VfioUserFuzzer, below) shares the target.
 * Thread: the fuzz runner's main thread.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../../bindings';
import { attachNvme, type AttachedNvme, Cmd, detachNvme, eventfdCount, type NvmeDriver, sleep, type Completion } from '../../bench/perf/vfio-user-client';
import type { Fuzzer } from './fuzzer';
import type { Rng } from './rng';
import type { FuzzTarget } from './target';

export const NVME_BASE = 0x100000;
export const NVME_MEM = 4 << 20;
const ASQ = NVME_BASE;
const ACQ = NVME_BASE + 0x1000;
const SQ1 = NVME_BASE + 0x2000;
const CQ1 = NVME_BASE + 0x4000;
const LIST = NVME_BASE + 0x5000;
const LIST_END = NVME_BASE + 0x10000;
const FUZZ_CQ = NVME_BASE + 0x10000;
const DATA = NVME_BASE + 0x20000;
const DATA_END = NVME_BASE + NVME_MEM;
const AQ_SIZE = 32;
const IOQ_SIZE = 64;
const BLOCKS = 8192;
const COMPLETION_TIMEOUT_MS = 10_000;

/** Connect, negotiate, map doorbells and guest memory, MSI-X eventfds, enable; optionally I/O queue pair 1. */
export async function nvmeAttach(socket: string, ioQueue = true, sealed = false): Promise<AttachedNvme> {
  const a = await attachNvme(socket, { memBase: NVME_BASE, memSize: NVME_MEM, asq: ASQ, acq: ACQ, aqSize: AQ_SIZE, sealed });
  if (!ioQueue) return a;
  try {
    const { drv } = a;
    let c = await drv.run(0, 0x09, (v, at) => {
      v.setUint32(at + 40, 0x07, true);
      v.setUint32(at + 44, 0x00030003, true);
    });
    if (c.status !== 0) throw new Error(`Set Features number of queues: status 0x${c.status.toString(16)}`);
    c = await drv.run(0, 0x05, (v, at) => {
      v.setUint32(at + 24, CQ1, true);
      v.setUint32(at + 40, 1 | ((IOQ_SIZE - 1) << 16), true);
      v.setUint32(at + 44, 0x3 | (1 << 16), true);
    });
    if (c.status !== 0) throw new Error(`Create I/O CQ 1: status 0x${c.status.toString(16)}`);
    c = await drv.run(0, 0x01, (v, at) => {
      v.setUint32(at + 24, SQ1, true);
      v.setUint32(at + 40, 1 | ((IOQ_SIZE - 1) << 16), true);
      v.setUint32(at + 44, 0x1 | (1 << 16), true);
    });
    if (c.status !== 0) throw new Error(`Create I/O SQ 1: status 0x${c.status.toString(16)}`);
    drv.addQueuePair(1, SQ1, CQ1, IOQ_SIZE);
    return a;
  } catch (e) {
    detachNvme(a);
    throw e;
  }
}

/** Creates a VFIOUSER subsystem with namespaces on malloc/null bdevs; returns its socket. */
export async function nvmeSubsystem(target: FuzzTarget, dir: string, name: string, transport: boolean): Promise<string> {
  if (transport) await target.rpc('nvmf_create_transport', { trtype: 'VFIOUSER' });
  const nqn = `nqn.2026-11.io.vhostd:${name}`;
  await target.rpc('bdev_malloc_create', { name: `Malloc_${name}`, num_blocks: BLOCKS, block_size: 512 });
  await target.rpc('nvmf_create_subsystem', { nqn, serial_number: 'FZ0001', allow_any_host: true });
  await target.rpc('nvmf_subsystem_add_ns', { nqn, namespace: { bdev_name: `Malloc_${name}`, nsid: 1 } });
  await target.rpc('bdev_null_create', { name: `Null_${name}`, num_blocks: 1024, block_size: 4096 });
  await target.rpc('nvmf_subsystem_add_ns', { nqn, namespace: { bdev_name: `Null_${name}`, nsid: 2 } });
  const traddr = path.join(dir, name);
  await target.rpc('nvmf_subsystem_add_listener', { nqn, listen_address: { trtype: 'VFIOUSER', traddr, trsvcid: '0' } });
  return path.join(traddr, 'cntrl');
}

/** Liveness: a fresh connection writes random blocks to namespace 1 and reads them back. */
export async function nvmeVerifiedIo(socket: string, lba: number, sealed = false): Promise<void> {
  const a = await nvmeAttach(socket, true, sealed);
  try {
    const { drv } = a;
    const data = randomBytes(8192);
    drv.mem.set(data, drv.off(DATA));
    const io = (op: number, buf: number): Promise<Completion> =>
      drv.run(1, op, (v, at) => {
        v.setUint32(at + 4, 1, true);
        v.setUint32(at + 24, buf, true);
        v.setUint32(at + 32, buf + 0x1000, true);
        v.setUint32(at + 40, lba, true);
        v.setUint32(at + 48, 15, true);
      });
    let c = await io(0x01, DATA);
    if (c.status !== 0) throw new Error(`nvme liveness Write: status 0x${c.status.toString(16)}`);
    c = await io(0x02, DATA + 0x4000);
    if (c.status !== 0) throw new Error(`nvme liveness Read: status 0x${c.status.toString(16)}`);
    if (!Buffer.from(drv.mem.subarray(drv.off(DATA + 0x4000), drv.off(DATA + 0x4000) + 8192)).equals(data)) throw new Error('nvme liveness Read returned other data than written');
  } finally {
    detachNvme(a);
  }
}

const ADMIN_OPS = [0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x0c, 0x0d, 0x10, 0x11, 0x14, 0x15, 0x18, 0x19, 0x1a, 0x1c, 0x1d, 0x1e, 0x20, 0x24, 0x7c, 0x7f, 0x80, 0x81, 0x82, 0x84, 0x86, 0xc0];
const IO_OPS = [0x00, 0x01, 0x02, 0x04, 0x05, 0x08, 0x09, 0x0c, 0x0d, 0x0e, 0x11, 0x12, 0x15, 0x19, 0x1d, 0x79, 0x7d, 0x80, 0x81];

export class NvmeFuzzer implements Fuzzer {
  readonly name: string = 'nvme';
  readonly checkEvery: number = 5_000;
  private target!: FuzzTarget;
  private dir = '';
  private socket = '';
  private liveSocket = '';
  private a: AttachedNvme | null = null;
  private shadow = new Uint8Array(0);
  private connStart = 0;
  private liveLba = 0;
  /** cids of AERs outstanding on the admin queue (they complete only on an event). */
  private aers = new Set<number>();
  private readonly count = { commands: 0, admin: 0, io: 0, ok: 0, errors: 0, faults: 0, reconnects: 0, sgl: 0, prpList: 0, aer: 0, statusKinds: 0 };
  private readonly statuses = new Set<number>();
  /** The last command's 16 dwords (hex), for a failure message. */
  private lastCmd = '';
  private lastStatus = 0;
  /** Ranges outside the CQs and the data area the device may write in this case (a PRP2 that may be a page). */
  private caseWritable: [number, number][] = [];

  async setup(target: FuzzTarget): Promise<void> {
    this.target = target;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-fuzz-nvme-'));
    this.socket = await nvmeSubsystem(target, this.dir, 'fz0', true);
    this.liveSocket = await nvmeSubsystem(target, this.dir, 'fzlive', false);
  }

  counters(): Record<string, number> {
    return { ...this.count, statusKinds: this.statuses.size };
  }

  replayStart(): number {
    return this.connStart;
  }

  private async connect(caseNo: number): Promise<void> {
    this.count.reconnects++;
    this.a = await nvmeAttach(this.socket);
    this.connStart = caseNo;
    this.aers.clear();
    this.a.drv.mem.fill(0, this.a.drv.off(LIST), this.a.drv.off(DATA));
    this.shadow = this.a.drv.mem.slice(0, this.a.drv.off(DATA));
  }

  private disconnect(): void {
    if (this.a) detachNvme(this.a);
    this.a = null;
  }

  async runCase(rng: Rng, caseNo: number): Promise<void> {
    if (this.a === null) await this.connect(caseNo);
    const a = this.a as AttachedNvme;
    if (rng.chance(1 / 150)) {
      this.count.faults++;
      await this.fault(rng, a);
      this.disconnect();
      return;
    }
    const admin = rng.chance(0.3);
    const qid = admin ? 0 : 1;
    const { drv } = a;
    const v = drv.view;
    let opcode = admin ? (rng.chance(0.9) ? rng.pick(ADMIN_OPS) : rng.int(256)) : rng.chance(0.9) ? rng.pick(IO_OPS) : rng.int(256);
    if (admin && opcode === 0x0c) {
      // Asynchronous Event Request: at most a few outstanding (past AERL the controller answers at once).
      if (this.aers.size >= 8) opcode = 0x06;
      else this.count.aer++;
    }
    const listAt = { next: LIST };
    this.caseWritable = [];
    const cid = drv.submit(qid, opcode, (view, at) => this.fillCommand(rng, view, at, admin, opcode, listAt));
    this.syncShadow(drv);
    const cmdText = (): string => `${admin ? 'admin' : 'I/O'} opcode 0x${opcode.toString(16)} cid ${cid}: ${this.lastCmd}`;
    if (admin && opcode === 0x0c) {
      this.aers.add(cid);
      await drv.ringPending();
      // An AER's completion may come later (or never): give the controller a moment, then go on.
      await sleep(0);
      this.compareShadow(drv, caseNo, cmdText());
      return;
    }
    this.count.commands++;
    if (admin) this.count.admin++;
    else this.count.io++;
    await drv.ringPending();
    const deadline = Date.now() + COMPLETION_TIMEOUT_MS;
    for (;;) {
      let c: Completion;
      try {
        c = await drv.reap(qid, Math.max(1, deadline - Date.now()));
      } catch (e) {
        const csts = await a.client.read32(0, 0x1c).catch(() => -1);
        throw new Error(`no completion for opcode 0x${opcode.toString(16)} cid ${cid} on queue ${qid} in ${COMPLETION_TIMEOUT_MS} ms (CSTS 0x${csts.toString(16)}): ${(e as Error).message}`);
      }
      if (c.sqid !== qid) throw new Error(`completion on CQ ${qid} names SQ ${c.sqid}`);
      if (c.cid === cid) {
        this.lastStatus = c.status;
        if (c.status === 0) this.count.ok++;
        else this.count.errors++;
        this.statuses.add(c.status);
        break;
      }
      if (!(qid === 0 && this.aers.delete(c.cid))) throw new Error(`completion for cid ${c.cid} on queue ${qid}, expected ${cid} (opcode 0x${opcode.toString(16)})`);
    }
    this.compareShadow(drv, caseNo, cmdText());
    // Drain MSI-X eventfds so their counters never saturate.
    for (const f of a.irqs) eventfdCount(f);
    // Shadow doorbells in force: this driver rings only the registers, so the connection ends here.
    if (admin && opcode === 0x7c && this.statuses.has(0) && this.lastStatus === 0) this.disconnect();
  }

  /** An address for a data pointer: data area (aligned or not), the list area, outside the window, or edgy. */
  private dataAddr(rng: Rng): bigint {
    const r = rng.int(20);
    if (r === 0) return BigInt(NVME_BASE + NVME_MEM + rng.int(1 << 20));
    if (r === 1) return rng.pick([0n, 0xffffffffffffffffn, 0xfffffffffffff000n, BigInt(NVME_BASE - 0x1000), BigInt(DATA_END - 0x1000) + 0x800n]);
    if (r === 2) return BigInt(DATA_END - 0x1000 * rng.range(1, 3) + rng.int(0x1000));
    const page = DATA + 0x1000 * rng.int((DATA_END - DATA) / 0x1000);
    return BigInt(rng.chance(0.8) ? page : page + 4 * rng.int(1024));
  }

  /** A PRP list (or SGL segment) in the list area; returns its address or -1 when the area is full. */
  private putList(rng: Rng, listAt: { next: number }, entries: bigint[]): number {
    const bytes = entries.length * 8;
    if (listAt.next + bytes > LIST_END) return -1;
    const at = listAt.next;
    listAt.next += Math.ceil(bytes / 16) * 16 + (rng.chance(0.9) ? 0 : 8);
    const drv = (this.a as AttachedNvme).drv;
    entries.forEach((e, i) => drv.view.setBigUint64(drv.off(at) + 8 * i, e, true));
    return at;
  }

  private fillDptr(rng: Rng, v: DataView, at: number, listAt: { next: number }): void {
    const psdt = rng.chance(0.85) ? 0 : rng.chance(0.9) ? rng.range(1, 2) : 3;
    v.setUint8(at + 1, (v.getUint8(at + 1) & 0x3f) | (psdt << 6) | (rng.chance(0.03) ? rng.int(4) : 0));
    if (psdt === 0) {
      v.setBigUint64(at + 24, this.dataAddr(rng), true);
      const r = rng.int(4);
      if (r === 0) {
        v.setBigUint64(at + 32, 0n, true);
      } else if (r === 1) {
        v.setBigUint64(at + 32, this.dataAddr(rng), true);
      } else {
        // a PRP list: entries in the data area (or bad), sometimes chained through its last entry
        this.count.prpList++;
        const n = rng.chance(0.9) ? rng.range(1, 16) : rng.range(17, 600);
        const entries: bigint[] = [];
        for (let i = 0; i < n; i++) entries.push(rng.chance(0.95) ? BigInt(DATA + 0x1000 * rng.int((DATA_END - DATA) / 0x1000)) : this.dataAddr(rng));
        const list = this.putList(rng, listAt, entries);
        const prp2 = list < 0 ? this.dataAddr(rng) : BigInt(list + (rng.chance(0.9) ? 0 : 8 * rng.range(1, 3)));
        v.setBigUint64(at + 32, prp2, true);
        // A transfer that ends in the second page takes PRP2 as that page, not as a list: the device may write it.
        if (list >= 0) this.caseWritable.push([Number(prp2), (Number(prp2) & ~0xfff) + 0x1000]);
      }
      return;
    }
    this.count.sgl++;
    // SGL descriptor in DPTR: data block (0), segment (2), last segment (3), or any type.
    const desc = (d: DataView | null, off: number, addr: bigint, len: number, type: number): bigint[] => {
      if (d) {
        d.setBigUint64(off, addr, true);
        d.setUint32(off + 8, len >>> 0, true);
        d.setUint32(off + 12, 0, true);
        d.setUint8(off + 15, type);
      }
      const lo = addr;
      const hi = BigInt(len >>> 0) | (BigInt(type) << 56n);
      return [lo, hi];
    };
    const blockLen = (): number => (rng.chance(0.8) ? 512 * rng.range(1, 16) : rng.edgyU32());
    const kind = rng.int(4);
    if (kind === 0) {
      desc(v, at + 24, this.dataAddr(rng), blockLen(), rng.chance(0.9) ? 0x00 : rng.int(256));
      return;
    }
    // a segment chain of 1-3 segments, each holding data blocks (and the last pointing nowhere or on)
    const build = (depth: number): { addr: number; len: number } | null => {
      const n = rng.chance(0.9) ? rng.range(1, 8) : rng.range(0, 40);
      const entries: bigint[] = [];
      for (let i = 0; i < n; i++) entries.push(...desc(null, 0, this.dataAddr(rng), blockLen(), rng.chance(0.95) ? 0x00 : rng.pick([0x01, 0x20, 0x30, rng.int(256)])));
      let nextSeg: { addr: number; len: number } | null = null;
      if (depth < 3 && rng.chance(0.4)) nextSeg = build(depth + 1);
      if (nextSeg !== null) entries.push(...desc(null, 0, BigInt(nextSeg.addr), rng.chance(0.9) ? nextSeg.len : rng.edgyU32(), rng.chance(0.5) ? 0x20 : 0x30));
      if (entries.length === 0) entries.push(0n, 0n);
      const list = this.putList(rng, listAt, entries);
      if (list < 0) return null;
      return { addr: list, len: entries.length * 8 };
    };
    const seg = build(1);
    if (seg === null) desc(v, at + 24, this.dataAddr(rng), blockLen(), 0);
    else desc(v, at + 24, BigInt(seg.addr), rng.chance(0.9) ? seg.len : rng.edgyU32() & ~0xf, rng.chance(0.5) ? 0x30 : 0x20);
  }

  private fillCommand(rng: Rng, v: DataView, at: number, admin: boolean, opcode: number, listAt: { next: number }): void {
    const nsid = rng.chance(0.85) ? rng.pick([1, 1, 1, 2]) : rng.pick([0, 3, 0xffffffff, rng.u32()]);
    v.setUint32(at + 4, nsid, true);
    if (rng.chance(0.03)) v.setUint8(at + 1, rng.int(4)); // fused bits
    this.fillDptr(rng, v, at, listAt);
    const lba = rng.chance(0.8) ? BigInt(rng.int(BLOCKS + 16)) : rng.edgyU64();
    const nlb = rng.chance(0.8) ? rng.int(16) : rng.chance(0.5) ? 0xffff : rng.int(0x10000);
    if (admin) {
      switch (opcode) {
        case 0x06: // Identify: CNS, CNTID
          v.setUint32(at + 40, (rng.chance(0.8) ? rng.pick([0, 1, 2, 3, 5, 6, 0x10, 0x11, 0x12, 0x13]) : rng.int(256)) | (rng.chance(0.9) ? 0 : rng.int(0x10000) << 16), true);
          break;
        case 0x02: // Get Log Page: LID, LSP, RAE, NUMDL/NUMDU, offset
          v.setUint32(at + 40, (rng.chance(0.8) ? rng.pick([1, 2, 3, 4, 5, 0x80]) : rng.int(256)) | (rng.int(0x10000) << 16), true);
          v.setUint32(at + 44, rng.chance(0.8) ? 0 : rng.u32(), true);
          v.setBigUint64(at + 48, rng.chance(0.8) ? BigInt(4 * rng.int(64)) : rng.edgyU64(), true);
          break;
        case 0x09:
        case 0x0a: // Set / Get Features: FID, SEL or SV, value
          v.setUint32(at + 40, (rng.chance(0.8) ? rng.pick([1, 2, 4, 5, 6, 7, 8, 9, 0x0a, 0x0b, 0x0e, 0x10, 0x80]) : rng.int(256)) | (rng.chance(0.8) ? 0 : rng.u32() & 0xffffff00), true);
          v.setUint32(at + 44, rng.chance(0.5) ? rng.int(16) | (rng.int(16) << 16) : rng.u32(), true);
          break;
        case 0x01:
        case 0x05: {
          // Create I/O SQ / CQ: never qid 1 (the fuzzer's own), any other; any size, flags, vector/CQID
          let qid = rng.chance(0.8) ? rng.range(2, 5) : rng.pick([0, 1, 0xffff, rng.int(0x10000)]);
          if (qid === 1 && rng.chance(0.5)) qid = 2;
          const size = rng.chance(0.8) ? rng.int(64) : rng.pick([0xffff, 1023, 1024, rng.int(0x10000)]);
          v.setUint32(at + 40, qid | (size << 16), true);
          v.setUint32(at + 44, (rng.chance(0.8) ? 1 : rng.int(8)) | (rng.chance(0.8) ? rng.int(4) << 16 : rng.int(0x10000) << 16), true);
          // Queue memory: created CQs in the fuzz-CQ area (device-writable), SQs in the list area (read-only).
          const base = opcode === 0x05 ? FUZZ_CQ + 0x1000 * rng.int(16) : LIST + 0x1000 * rng.int(10);
          v.setBigUint64(at + 24, rng.chance(0.95) ? BigInt(base) : this.dataAddr(rng), true);
          break;
        }
        case 0x00:
        case 0x04: {
          // Delete I/O SQ / CQ: not queue pair 1 (the fuzz needs it), anything else.
          const qid = rng.chance(0.8) ? rng.range(2, 5) : rng.pick([0, 0xffff, rng.int(0x10000) | 2]);
          v.setUint32(at + 40, qid === 1 ? 2 : qid, true);
          break;
        }
        case 0x08: // Abort: SQID, CID
          v.setUint32(at + 40, rng.int(3) | (rng.int(0x10000) << 16), true);
          break;
        case 0x7c: // Doorbell Buffer Config: PRP1 the shadow doorbells (read), PRP2 the EventIdx buffer (written)
          v.setUint8(at + 1, v.getUint8(at + 1) & 0x3f);
          v.setBigUint64(at + 24, this.dataAddr(rng), true);
          v.setBigUint64(at + 32, this.dataAddr(rng), true);
          break;
        case 0x80: // Format NVM: LBAF, SES, PI
          v.setUint32(at + 40, rng.chance(0.8) ? 0 : rng.u32(), true);
          break;
        default:
          for (let d = 10; d < 16; d++) if (rng.chance(0.5)) v.setUint32(at + 4 * d, rng.u32(), true);
      }
    } else {
      v.setBigUint64(at + 40, lba, true);
      switch (opcode) {
        case 0x09: {
          // Dataset Management: NR, attributes; the range list at PRP1 in the list area (read-only)
          const nr = rng.chance(0.9) ? rng.int(8) : rng.int(256);
          const ranges: bigint[] = [];
          for (let i = 0; i <= Math.min(nr, 40); i++) {
            ranges.push(BigInt(rng.chance(0.9) ? rng.int(64) : rng.u32()) << 32n | BigInt(rng.int(4)), rng.chance(0.9) ? BigInt(rng.int(BLOCKS + 8)) : rng.edgyU64());
          }
          const list = this.putList(rng, listAt, ranges);
          if (list >= 0 && rng.chance(0.9)) {
            v.setBigUint64(at + 24, BigInt(list), true);
            v.setUint8(at + 1, v.getUint8(at + 1) & 0x3f);
          }
          v.setUint32(at + 40, nr, true);
          v.setUint32(at + 44, rng.chance(0.8) ? 4 : rng.u32(), true);
          break;
        }
        default:
          v.setUint32(at + 48, nlb | (rng.chance(0.9) ? 0 : rng.u32() & 0xffff0000), true);
          if (rng.chance(0.1)) v.setUint32(at + 52, rng.u32(), true);
          if (rng.chance(0.05)) for (let d = 13; d < 16; d++) v.setUint32(at + 4 * d, rng.u32(), true);
      }
    }
    if (rng.chance(0.02)) v.setUint32(at + 8, rng.u32(), true); // reserved CDW2/3
    this.lastCmd = Array.from({ length: 16 }, (_, i) => v.getUint32(at + 4 * i, true).toString(16)).join(' ');
  }

  /** A controller-level fault; the connection is dropped after it. */
  private async fault(rng: Rng, a: AttachedNvme): Promise<void> {
    const { client, drv } = a;
    const tolerate = async (p: Promise<unknown>): Promise<void> => {
      try {
        await p;
      } catch {
        // an error reply or a closed connection are both acceptable answers to a fault
      }
    };
    switch (rng.int(6)) {
      case 0: // a doorbell past the queue size, or of a queue that does not exist
        if (drv.doorbells) Atomics.store(drv.doorbells, rng.int(16), rng.chance(0.5) ? IOQ_SIZE + rng.int(1000) : rng.u32());
        await sleep(rng.int(3));
        break;
      case 1: // a BAR0 register write at any offset (CC, AQA, ASQ, ACQ, NSSR, reserved, doorbells)
        await tolerate(client.write(0, rng.chance(0.7) ? rng.pick([0x0c, 0x10, 0x14, 0x20, 0x24, 0x28, 0x30, 0x1000, 0x1004]) : rng.int(0x4000), rng.bytes(rng.pick([1, 2, 4, 8, rng.int(64)]))));
        break;
      case 2: // CC.EN off and on again with other queues
        await tolerate(client.write32(0, 0x14, 0));
        await tolerate(client.write32(0, 0x14, rng.u32()));
        break;
      case 3:
        await tolerate(client.request(Cmd.DEVICE_RESET));
        break;
      case 4: // guest memory unmapped with queues live, then a doorbell
        await tolerate(client.dmaUnmap(NVME_BASE, NVME_MEM));
        if (drv.doorbells) Atomics.store(drv.doorbells, 2, 1);
        await sleep(rng.int(3));
        break;
      default: // commands in flight, then the connection drops
        for (let i = rng.range(1, 20); i > 0; i--) drv.submit(1, rng.pick([0x01, 0x02, 0x00]), (v, at) => {
          v.setUint32(at + 4, 1, true);
          v.setBigUint64(at + 24, BigInt(DATA + 0x1000 * rng.int(64)), true);
          v.setBigUint64(at + 40, BigInt(rng.int(BLOCKS)), true);
          v.setUint32(at + 48, rng.int(8), true);
        });
        await drv.ringPending();
    }
  }

  private syncShadow(drv: NvmeDriver): void {
    this.shadow.set(drv.mem.subarray(0, this.shadow.length));
  }

  /** Bytes the device may not write ([ASQ, CQ1) minus the admin CQ, and the list area) equal the shadow. */
  private compareShadow(drv: NvmeDriver, caseNo: number, what: string): void {
    const ro: [number, number][] = [
      [ASQ, ACQ],
      [ACQ + AQ_SIZE * 16, SQ1 + IOQ_SIZE * 64],
      [CQ1 + IOQ_SIZE * 16, LIST_END],
    ];
    const ranges: [number, number][] = [];
    for (const [from, to] of ro) {
      // minus the case's own writable ranges
      let pos = from;
      for (const [a, b] of [...this.caseWritable].sort((x, y) => x[0] - y[0])) {
        if (b <= pos || a >= to) continue;
        if (a > pos) ranges.push([pos, a]);
        pos = Math.max(pos, b);
      }
      if (pos < to) ranges.push([pos, to]);
    }
    for (const [from, to] of ranges) {
      const a = drv.mem.subarray(drv.off(from), drv.off(to));
      const b = this.shadow.subarray(drv.off(from), drv.off(to));
      if (Buffer.compare(a, b) !== 0) {
        let k = 0;
        while (a[k] === b[k]) k++;
        throw new Error(`case ${caseNo} (${what}): guest memory changed outside every device-writable buffer at gpa 0x${(from + k).toString(16)} (0x${b[k].toString(16)} → 0x${a[k].toString(16)})`);
      }
    }
    this.shadow.set(drv.mem.subarray(0, this.shadow.length));
  }

  async quiesce(): Promise<void> {
    this.disconnect();
    await sleep(20);
  }

  async check(): Promise<void> {
    this.liveLba = (this.liveLba + 16) % (BLOCKS - 16);
    await nvmeVerifiedIo(this.liveSocket, this.liveLba);
    // The abused controller serves a fresh connection.
    const a = await nvmeAttach(this.socket, false);
    try {
      const c = await a.drv.run(0, 0x06, (v, at) => {
        v.setUint32(at + 24, DATA, true);
        v.setUint32(at + 40, 1, true);
      });
      if (c.status !== 0) throw new Error(`Identify on the abused controller: status 0x${c.status.toString(16)}`);
    } finally {
      detachNvme(a);
    }
    await sleep(20);
  }

  dispose(): void {
    this.disconnect();
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// --- vfio-user messages -------------------------------------------------------------

const HDR = 16;
const F_REPLY = 0x1;
const F_NO_REPLY = 0x10;
const REPLY_TIMEOUT_MS = 10_000;

interface VMsg {
  command: number;
  flags: number;
  payload: Uint8Array;
  fds: number[];
  /** A size field other than the real length: the framing is broken, the connection ends after it. */
  sizeField?: number;
}

function le(size: number, fill: (v: DataView) => void): Uint8Array {
  const b = new Uint8Array(size);
  fill(new DataView(b.buffer));
  return b;
}

/**
 * vfio-user message fuzzer: one case = one message on the hostile connection
 * to the NVMe controller. A connection starts with VERSION (mostly valid;
 * sometimes bad JSON, capabilities out of range, a wrong major, or another
 * command first) and then sends commands: DMA_MAP (memfds of any size, any
 * offset/address/size/flags, no fd, 2 fds, an eventfd), DMA_UNMAP (any
 * range, UNMAP_ALL with or without a range), GET_INFO, GET_REGION_INFO and
 * GET_IRQ_INFO (any index and argsz), SET_IRQS (any index/start/count/
 * action, 0-8 fds of any kind), REGION_READ/WRITE (any region, offset,
 * count, BAR0 registers and doorbells), DEVICE_RESET, unknown and
 * server-to-client commands, replies and bad flags — each maybe mutated
 * (bits flipped, truncated, extended, argsz lies) or, rarely, with a lying
 * size field (the connection ends after that one). Every command must get a
 * reply with its id within 10 s, or the connection must be closed by vhostd.
 */
export class VfioUserFuzzer implements Fuzzer {
  readonly name: string = 'vfio-user';
  readonly checkEvery: number = 5_000;
  private inner = new NvmeFuzzer();
  private fd = -1;
  private left = 0;
  private nextId = 1;
  private connStart = 0;
  private mapped = false;
  private readonly fdsIn = new Int32Array(8);
  private readonly count = { messages: 0, replies: 0, errorReplies: 0, closedByTarget: 0, connections: 0, framingBroken: 0, noReply: 0 };

  async setup(target: FuzzTarget): Promise<void> {
    await this.inner.setup(target);
  }

  counters(): Record<string, number> {
    return { ...this.count };
  }

  replayStart(): number {
    return this.connStart;
  }

  private closeConn(): void {
    if (this.fd >= 0) native.close(this.fd);
    this.fd = -1;
  }

  private socket(): string {
    return (this.inner as unknown as { socket: string }).socket;
  }

  async runCase(rng: Rng, caseNo: number): Promise<void> {
    if (this.fd < 0 || this.left <= 0) {
      this.closeConn();
      this.fd = native.unixConnect(this.socket());
      this.count.connections++;
      this.left = rng.range(1, 120);
      this.connStart = caseNo;
      this.mapped = false;
      this.nextId = rng.int(0x10000);
      // mostly a valid VERSION first
      if (rng.chance(0.9)) {
        const m = this.version(rng, rng.chance(0.9));
        if (!(await this.exchange(rng, m))) {
          this.closeConn();
          return;
        }
        this.left--;
      }
    }
    this.left--;
    let m = this.message(rng);
    if (rng.chance(0.15)) m = this.mutate(rng, m);
    if (!(await this.exchange(rng, m))) this.closeConn();
  }

  private version(rng: Rng, valid: boolean): VMsg {
    let json: string;
    if (valid) json = JSON.stringify({ capabilities: { max_msg_fds: rng.pick([1, 8, 16]), max_data_xfer_size: rng.pick([4096, 1 << 20]) } });
    else
      json = rng.pick([
        '{',
        '[]',
        '{"capabilities":[]}',
        '{"capabilities":{"max_msg_fds":-1}}',
        '{"capabilities":{"max_data_xfer_size":1e300}}',
        '{"capabilities":{"migration":{"pgsize":3}}}',
        '{"capabilities":{"max_msg_fds":1.5}}',
        'x'.repeat(rng.int(9000)),
        '{"capabilities":{"twin_socket":{"supported":true}}}',
      ]);
    const text = new TextEncoder().encode(json + (rng.chance(0.95) ? '\0' : ''));
    const p = new Uint8Array(4 + text.length);
    new DataView(p.buffer).setUint16(0, valid || rng.chance(0.5) ? 0 : rng.int(0x10000), true);
    new DataView(p.buffer).setUint16(2, rng.chance(0.9) ? 0 : rng.int(0x10000), true);
    p.set(text, 4);
    return { command: Cmd.VERSION, flags: 0, payload: p, fds: [] };
  }

  private anyFd(rng: Rng): number {
    switch (rng.int(5)) {
      case 0:
        return native.eventfd(0, 0);
      case 1:
        return fs.openSync('/dev/null', 'r+');
      case 2: {
        const [x, y] = native.socketPair();
        native.close(y);
        return x;
      }
      default: {
        const fd = native.memfdCreate('fz-vfu', 0);
        native.ftruncate(fd, rng.pick([0, 4096, 1 << 20, 4 << 20]));
        return fd;
      }
    }
  }

  private message(rng: Rng): VMsg {
    const fds: number[] = [];
    const u64 = (): bigint => (rng.chance(0.7) ? BigInt(0x1000 * rng.int(2048)) : rng.edgyU64());
    switch (rng.int(16)) {
      case 0:
      case 1: {
        // DMA_MAP
        let fd = -1;
        if (rng.chance(0.9)) {
          fd = rng.chance(0.8) ? native.memfdCreate('fz-vfu', 0) : this.anyFd(rng);
          if (fds.length === 0) fds.push(fd);
        }
        const size = rng.chance(0.8) ? BigInt(0x1000 * rng.range(1, 1024)) : rng.edgyU64();
        if (fd >= 0 && rng.chance(0.8)) {
          try {
            native.ftruncate(fd, rng.chance(0.9) ? Math.min(Number(size), 4 << 20) : rng.int(1 << 20));
          } catch {
            // not a memfd: keep it as it is
          }
        }
        if (rng.chance(0.05)) fds.push(this.anyFd(rng));
        this.mapped = true;
        const p = le(32, (v) => {
          v.setUint32(0, rng.chance(0.9) ? 32 : rng.u32(), true);
          v.setUint32(4, rng.chance(0.9) ? 3 : rng.u32(), true);
          v.setBigUint64(8, rng.chance(0.8) ? 0n : u64(), true);
          v.setBigUint64(16, u64(), true);
          v.setBigUint64(24, size, true);
        });
        return { command: Cmd.DMA_MAP, flags: 0, payload: p, fds };
      }
      case 2: {
        const all = rng.chance(0.1);
        const p = le(24, (v) => {
          v.setUint32(0, rng.chance(0.9) ? 24 : rng.u32(), true);
          v.setUint32(4, all ? 2 : rng.chance(0.9) ? 0 : rng.u32(), true);
          v.setBigUint64(8, all && rng.chance(0.7) ? 0n : u64(), true);
          v.setBigUint64(16, all && rng.chance(0.7) ? 0n : u64(), true);
        });
        return { command: Cmd.DMA_UNMAP, flags: 0, payload: p, fds };
      }
      case 3:
        return { command: Cmd.DEVICE_GET_INFO, flags: 0, payload: le(16, (v) => v.setUint32(0, rng.chance(0.8) ? 16 : rng.u32(), true)), fds };
      case 4:
      case 5:
        return {
          command: Cmd.DEVICE_GET_REGION_INFO,
          flags: 0,
          payload: le(32, (v) => {
            v.setUint32(0, rng.chance(0.7) ? rng.pick([32, 256, 4096]) : rng.u32(), true);
            v.setUint32(8, rng.chance(0.8) ? rng.int(10) : rng.u32(), true);
          }),
          fds,
        };
      case 6:
        return {
          command: Cmd.DEVICE_GET_IRQ_INFO,
          flags: 0,
          payload: le(16, (v) => {
            v.setUint32(0, rng.chance(0.8) ? 16 : rng.u32(), true);
            v.setUint32(8, rng.chance(0.8) ? rng.int(6) : rng.u32(), true);
          }),
          fds,
        };
      case 7:
      case 8: {
        const n = rng.chance(0.8) ? rng.int(4) : rng.int(9);
        for (let i = 0; i < n; i++) fds.push(rng.chance(0.8) ? native.eventfd(0, 0) : this.anyFd(rng));
        const p = le(20, (v) => {
          v.setUint32(0, rng.chance(0.8) ? 20 : rng.u32(), true);
          v.setUint32(4, rng.chance(0.8) ? rng.pick([0x24, 0x21, 0x22, 0x28, 0x44]) : rng.u32(), true);
          v.setUint32(8, rng.chance(0.8) ? rng.pick([0, 2, 2, 3, 4]) : rng.u32(), true);
          v.setUint32(12, rng.chance(0.8) ? rng.int(4) : rng.u32(), true);
          v.setUint32(16, rng.chance(0.8) ? n : rng.chance(0.5) ? rng.int(2048) : rng.u32(), true);
        });
        return { command: Cmd.DEVICE_SET_IRQS, flags: 0, payload: p, fds };
      }
      case 9:
      case 10:
      case 11: {
        const write = rng.chance(0.5);
        const region = rng.chance(0.8) ? rng.pick([0, 0, 0, 7, 1, 2, 8, 9]) : rng.u32();
        const off = rng.chance(0.8) ? rng.pick([0, 0x8, 0xc, 0x10, 0x14, 0x1c, 0x20, 0x24, 0x28, 0x30, 0x1000, 0x1004, 0x1008, 4 * rng.int(64), 0x3ffc]) : Number(rng.edgyU64() & 0xffffffffffffn);
        const count = rng.chance(0.8) ? rng.pick([1, 2, 4, 8]) : rng.chance(0.5) ? rng.int(8192) : rng.u32();
        const data = write ? rng.bytes(Math.min(count, rng.chance(0.9) ? count : rng.int(64), 16384)) : new Uint8Array(0);
        const p = new Uint8Array(16 + data.length);
        const v = new DataView(p.buffer);
        v.setBigUint64(0, BigInt(off), true);
        v.setUint32(8, region, true);
        v.setUint32(12, count >>> 0, true);
        p.set(data, 16);
        return { command: write ? Cmd.REGION_WRITE : Cmd.REGION_READ, flags: 0, payload: p, fds };
      }
      case 12:
        return { command: Cmd.DEVICE_RESET, flags: 0, payload: new Uint8Array(0), fds };
      case 13:
        return this.version(rng, rng.chance(0.5)); // VERSION again
      default: {
        // other commands: GET_REGION_IO_FDS, DMA_READ/WRITE (server-to-client), dirty pages, migration, unknown
        const command = rng.chance(0.7) ? rng.pick([6, 11, 12, 14, 15, 16, 17, 18, 0, 19, 0xffff]) : rng.int(0x10000);
        return { command, flags: 0, payload: rng.bytes(rng.chance(0.8) ? rng.int(64) : rng.int(9000)), fds };
      }
    }
  }

  private mutate(rng: Rng, m: VMsg): VMsg {
    const p = m.payload.slice();
    switch (rng.int(6)) {
      case 0:
        for (let i = rng.range(1, 4); i > 0 && p.length > 0; i--) p[rng.int(p.length)] ^= 1 << rng.int(8);
        return { ...m, payload: p };
      case 1:
        return { ...m, payload: p.subarray(0, rng.int(p.length + 1)) };
      case 2: {
        const more = new Uint8Array(p.length + rng.range(1, 64));
        more.set(p);
        return { ...m, payload: more };
      }
      case 3:
        return { ...m, flags: rng.chance(0.5) ? rng.pick([F_REPLY, 0x20, 0x2, 0xf, F_NO_REPLY]) : rng.u32() };
      case 4:
        return { ...m, sizeField: rng.chance(0.5) ? rng.int(HDR) : HDR + p.length + rng.pick([-1, 1, 8, 4096, 0x7fffffff]) };
      default:
        if (m.fds.length === 0) m.fds.push(this.anyFd(rng));
        else while (m.fds.length > 0 && rng.chance(0.7)) native.close(m.fds.pop() as number);
        return m;
    }
  }

  /** Send `m`; read its reply. False when the connection is over (closed by vhostd, or framing broken on purpose). */
  private async exchange(rng: Rng, m: VMsg): Promise<boolean> {
    const id = this.nextId++ & 0xffff;
    const bytes = new Uint8Array(HDR + m.payload.length);
    const v = new DataView(bytes.buffer);
    v.setUint16(0, id, true);
    v.setUint16(2, m.command, true);
    v.setUint32(4, m.sizeField ?? bytes.length, true);
    v.setUint32(8, m.flags, true);
    bytes.set(m.payload, HDR);
    const fds = m.fds.slice(0, 8);
    try {
      this.count.messages++;
      const deadline = Date.now() + REPLY_TIMEOUT_MS;
      let off = 0;
      let withFds: number[] | null = fds.length > 0 ? fds : null;
      while (off < bytes.length) {
        let n: number;
        try {
          n = native.sendMsg(this.fd, bytes.subarray(off), withFds);
        } catch {
          this.count.closedByTarget++;
          return false;
        }
        if (n < 0) {
          if (Date.now() > deadline) throw new Error(`vhostd did not read a ${bytes.length}-byte ${m.command} message in ${REPLY_TIMEOUT_MS} ms`);
          await sleep(1);
          continue;
        }
        withFds = null;
        off += n;
      }
    } finally {
      for (const f of m.fds) native.close(f);
    }
    if (m.sizeField !== undefined) {
      // The framing is broken on purpose: vhostd may wait for bytes that never come, or close.
      this.count.framingBroken++;
      await sleep(rng.int(2));
      return false;
    }
    const commandType = (m.flags & 0xf) === 0;
    const wantReply = commandType && (m.flags & F_NO_REPLY) === 0;
    // Replies and anything that is not a command are protocol errors: vhostd closes (or, for NO_REPLY, stays silent).
    const waitMs = wantReply ? REPLY_TIMEOUT_MS : 50;
    const r = await this.readReply(waitMs);
    if (r === 'closed') {
      this.count.closedByTarget++;
      return false;
    }
    if (r === 'timeout') {
      if (wantReply) throw new Error(`no reply to command ${m.command} (id ${id}, ${bytes.length} bytes, flags 0x${m.flags.toString(16)}) in ${REPLY_TIMEOUT_MS} ms and the connection is still open`);
      this.count.noReply++;
      return true;
    }
    this.count.replies++;
    if (r.id !== id || r.command !== m.command) throw new Error(`reply ${r.id}/${r.command} to message ${id}/${m.command}`);
    if ((r.flags & 0x20) !== 0) this.count.errorReplies++;
    return true;
  }

  private async readExactly(buf: Uint8Array, deadline: number): Promise<'closed' | 'timeout' | 'ok'> {
    let got = 0;
    while (got < buf.length) {
      let n: number;
      try {
        n = native.recvMsg(this.fd, buf.subarray(got), this.fdsIn);
      } catch {
        return 'closed';
      }
      for (const f of this.fdsIn) if (f >= 0) native.close(f);
      if (n === 0) return 'closed';
      if (n < 0) {
        if (Date.now() > deadline) return 'timeout';
        await sleep(got === 0 ? 1 : 0);
        continue;
      }
      got += n;
    }
    return 'ok';
  }

  private async readReply(waitMs: number): Promise<'closed' | 'timeout' | { id: number; command: number; flags: number }> {
    const deadline = Date.now() + waitMs;
    const head = new Uint8Array(HDR);
    const a = await this.readExactly(head, deadline);
    if (a !== 'ok') return a;
    const h = new DataView(head.buffer);
    const size = h.getUint32(4, true);
    if (size < HDR || size > 64 << 20) throw new Error(`reply with size ${size}`);
    const b = await this.readExactly(new Uint8Array(size - HDR), Date.now() + REPLY_TIMEOUT_MS);
    if (b === 'closed') return 'closed';
    if (b === 'timeout') throw new Error(`reply body of ${size - HDR} bytes not sent in ${REPLY_TIMEOUT_MS} ms`);
    const flags = h.getUint32(8, true);
    if ((flags & 0xf) !== F_REPLY) throw new Error(`a message with flags 0x${flags.toString(16)} where a reply must be`);
    return { id: h.getUint16(0, true), command: h.getUint16(2, true), flags };
  }

  async quiesce(): Promise<void> {
    this.closeConn();
    await sleep(20);
  }

  async check(): Promise<void> {
    await this.inner.check();
  }

  dispose(): void {
    this.closeConn();
    this.inner.dispose();
  }
}
