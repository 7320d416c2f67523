/**
 * virtio-scsi request fuzzer (virtio 1.2 §5.6.6; SPC-4/SBC-3 CDBs): one case
 * = one request on request queue 2 of a scsi controller (target 0: a 512 B
 * malloc LUN, target 1: a 4 KiB null LUN), published in batches on the split
 * ring the chain fuzzer (chains.ts) drives, with its shadow copy of guest
 * memory, its used-element checks and its hostile chain shapes (indirect
 * tables, loops, out-of-range next, buffers across the two regions or out of
 * guest memory). What is scsi here is the request:
 *   - virtio_scsi_req_cmd (51 bytes): a LUN field that is mostly well-formed
 *     (target 0, 1 or absent, LUN 0 or another) and sometimes any 8 bytes;
 *     any tag, task attribute, priority, CRN; the header sometimes cut short;
 *   - a CDB: one of ~40 opcodes the target knows (READ/WRITE/VERIFY/SYNC/
 *     WRITE SAME 6-16, COMPARE AND WRITE, UNMAP, INQUIRY with any page, MODE
 *     SENSE/SELECT, READ CAPACITY, REPORT LUNS, PERSISTENT RESERVE IN/OUT,
 *     RESERVE/RELEASE, REQUEST SENSE, GET LBA STATUS, REPORT SUPPORTED
 *     OPCODES, ...) with LBAs and lengths near the LUN's end or at boundary
 *     values, random control bytes, or an opcode at random, and sometimes
 *     random bytes anywhere in the 32;
 *   - data-out (parameter lists: well-formed UNMAP / PR OUT / MODE SELECT
 *     lists from the read-only header area, or any guest memory), then the
 *     108-byte virtio_scsi_resp_cmd (sometimes short, read-only or missing),
 *     then data-in buffers of any length — or the two directions mixed.
 * check(): a fresh connection to a second scsi controller on the same core
 * (that took no abuse) does verified WRITE(16)/READ(16), and a fresh
 * connection to the abused controller answers INQUIRY (allowed whatever
 * reservation the fuzzer left).
 * Thread: the fuzz runner's main thread.
 */
import { randomBytes } from 'node:crypto';
import { VhostUserFrontend } from '../lib/frontend';
import { bit, Desc, ProtoBit } from '../lib/frontend-wire';
import { be16, be32, be64, cdb, prParams, unmapParams } from '../lib/scsi';
import { ChainFuzzer, type D } from './chains';
import type { Rng } from './rng';
import type { FuzzTarget } from './target';

export const SCSI_REQ = 51;
export const SCSI_RESP = 108;
const CDB_AT = 19;
/** vhost-user-scsi as QEMU drives it: no CONFIG protocol feature. */
export const SCSI_PROTOCOL = bit(ProtoBit.MQ) | bit(ProtoBit.REPLY_ACK) | bit(ProtoBit.BACKEND_REQ) | bit(ProtoBit.CONFIGURE_MEM_SLOTS);
const BLOCKS = 4096;

export interface ScsiResult {
  usedLen: number;
  response: number;
  status: number;
  sense: [number, number, number];
  data: Uint8Array;
}

/** One command on request queue 2 of a connected, set-up front-end (a well-behaved driver). */
export async function scsiCommand(fe: VhostUserFrontend, target: number, c: number[], o: { out?: Uint8Array; inLen?: number } = {}): Promise<ScsiResult> {
  const m = fe.memory;
  if (m === null) throw new Error('no memory');
  const req = new Uint8Array(SCSI_REQ);
  req.set([1, target, 0x40, 0], 0);
  req.set(c, CDB_AT);
  const reqGpa = fe.alloc(req);
  const respGpa = fe.alloc(SCSI_RESP);
  const segs = [{ gpa: reqGpa, len: SCSI_REQ, writable: false }];
  let outGpa = -1;
  let inGpa = -1;
  if (o.out) {
    outGpa = fe.alloc(o.out);
    segs.push({ gpa: outGpa, len: o.out.length, writable: false });
  }
  segs.push({ gpa: respGpa, len: SCSI_RESP, writable: true });
  if (o.inLen) {
    inGpa = fe.alloc(o.inLen);
    segs.push({ gpa: inGpa, len: o.inLen, writable: true });
  }
  try {
    const used = await fe.queue(2).submit(segs);
    const r = m.read(respGpa, SCSI_RESP);
    return { usedLen: used.len, response: r[11], status: r[10], sense: [r[14] & 0x0f, r[24], r[25]], data: inGpa >= 0 ? m.read(inGpa, o.inLen as number) : new Uint8Array(0) };
  } finally {
    fe.release(reqGpa, SCSI_REQ);
    fe.release(respGpa, SCSI_RESP);
    if (outGpa >= 0) fe.release(outGpa, (o.out as Uint8Array).length);
    if (inGpa >= 0) fe.release(inGpa, o.inLen as number);
  }
}

/** Connect a well-behaved virtio-scsi front-end with its three queues. */
export async function scsiConnect(socket: string, timeoutMs = 15_000): Promise<VhostUserFrontend> {
  const fe = await VhostUserFrontend.connect(socket, timeoutMs, { waitAccepted: true });
  try {
    await fe.negotiate({ protocolFeatures: SCSI_PROTOCOL, numQueues: 3, regions: [{ gpa: 0, sizeBytes: 1 << 20 }] });
    for (const [q, n] of [[0, 16], [1, 16], [2, 32]]) await fe.setupQueue(q, n, { timeoutMs });
    return fe;
  } catch (e) {
    fe.close();
    throw e;
  }
}

/** A command that retries while the LUN reports UNIT ATTENTION (a fresh nexus sees power-on first). */
async function scsiRetryUa(fe: VhostUserFrontend, target: number, c: number[], o: { out?: Uint8Array; inLen?: number } = {}): Promise<ScsiResult> {
  for (let i = 0; ; i++) {
    const r = await scsiCommand(fe, target, c, o);
    if (r.response === 0 && r.status === 2 && r.sense[0] === 6 && i < 8) continue;
    return r;
  }
}

/** CDB opcodes the fuzzer draws from (SPC-4, SBC-3), with how to fill them. */
const OPCODES = [
  0x00, 0x03, 0x04, 0x08, 0x0a, 0x12, 0x15, 0x16, 0x17, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x25, 0x28, 0x2a, 0x2e, 0x2f, 0x34, 0x35, 0x37, 0x41, 0x42, 0x4d, 0x55,
  0x56, 0x57, 0x5a, 0x5e, 0x5f, 0x7f, 0x83, 0x84, 0x88, 0x89, 0x8a, 0x8e, 0x8f, 0x91, 0x93, 0x9e, 0xa0, 0xa3, 0xa8, 0xaa, 0xae, 0xaf, 0xb7,
];

export class ScsiFuzzer extends ChainFuzzer {
  override readonly name: string = 'scsi';
  override readonly checkEvery = 10_000;
  private live!: { socket: string };
  private readonly scount = { wellFormedLun: 0, structuredParams: 0, randomOpcode: 0, liveIo: 0 };

  override async setup(target: FuzzTarget): Promise<void> {
    this.target = target;
    this.queueIndex = 2;
    this.negotiateExtra = { protocolFeatures: SCSI_PROTOCOL, numQueues: 3 };
    await target.rpc('bdev_malloc_create', { name: 'Malloc_fz.scsi', num_blocks: BLOCKS, block_size: 512 });
    await target.rpc('bdev_null_create', { name: 'Null_fz.scsi', num_blocks: BLOCKS, block_size: 4096 });
    await target.rpc('vhost_create_scsi_controller', { ctrlr: 'fz.scsi' });
    await target.rpc('vhost_scsi_controller_add_target', { ctrlr: 'fz.scsi', scsi_target_num: 0, bdev_name: 'Malloc_fz.scsi' });
    await target.rpc('vhost_scsi_controller_add_target', { ctrlr: 'fz.scsi', scsi_target_num: 1, bdev_name: 'Null_fz.scsi' });
    await target.rpc('bdev_malloc_create', { name: 'Malloc_fz.scsi.live', num_blocks: BLOCKS, block_size: 512 });
    await target.rpc('vhost_create_scsi_controller', { ctrlr: 'fz.scsi.live' });
    await target.rpc('vhost_scsi_controller_add_target', { ctrlr: 'fz.scsi.live', scsi_target_num: 0, bdev_name: 'Malloc_fz.scsi.live' });
    this.ctrl = { name: 'fz.scsi', bdev: 'Malloc_fz.scsi', socket: target.h.socketOf('fz.scsi'), numBlocks: BLOCKS };
    this.live = { socket: target.h.socketOf('fz.scsi.live') };
    await this.connect();
  }

  override counters(): Record<string, number> {
    return { ...super.counters(), ...this.scount };
  }

  override async check(): Promise<void> {
    // Verified I/O on a fresh connection to the controller that took no abuse (same core).
    const fe = await scsiConnect(this.live.socket);
    try {
      const data = randomBytes(8192);
      const lba = 8 * (this.scount.liveIo++ % (BLOCKS / 8 - 2));
      const w = await scsiRetryUa(fe, 0, cdb.write16(lba, 16), { out: data });
      if (w.response !== 0 || w.status !== 0) throw new Error(`scsi liveness WRITE(16) got response ${w.response} status ${w.status} sense ${w.sense}`);
      const r = await scsiRetryUa(fe, 0, cdb.read16(lba, 16), { inLen: 8192 });
      if (r.response !== 0 || r.status !== 0) throw new Error(`scsi liveness READ(16) got response ${r.response} status ${r.status} sense ${r.sense}`);
      if (!Buffer.from(r.data).equals(data)) throw new Error('scsi liveness READ(16) returned other data than written');
    } finally {
      fe.close();
    }
    // The abused controller answers a fresh front-end (its fuzz connection is closed for this).
    this.disconnect();
    await new Promise((r) => setTimeout(r, 20));
    const fe2 = await scsiConnect(this.ctrl.socket);
    try {
      const r = await scsiRetryUa(fe2, 0, cdb.inquiry(false, 0, 36), { inLen: 36 });
      if (r.response !== 0 || r.status !== 0 || (r.data[0] & 0x1f) !== 0) throw new Error(`INQUIRY on the abused controller: response ${r.response} status ${r.status} type ${r.data[0]}`);
    } finally {
      fe2.close();
    }
    await new Promise((r) => setTimeout(r, 20));
    // The next case reconnects (prepareCase).
  }

  /** An LBA: mostly within or just past the LUN, sometimes a boundary value. */
  private lba(rng: Rng, blocks: number): number {
    switch (rng.int(6)) {
      case 0:
        return blocks - rng.int(4);
      case 1:
        return rng.pick([0xffffffff, 0x1fffff, 0xffff, 2 ** 53 - 1, 2 ** 32]);
      default:
        return rng.int(blocks);
    }
  }

  private count32(rng: Rng): number {
    return rng.chance(0.8) ? rng.int(64) : rng.pick([0, 1, 0xff, 0x100, 0xffff, 0x10000, 0xffffffff, 8192, BLOCKS]);
  }

  /** A CDB (6 to 32 bytes) and a parameter list for the commands that take one. */
  private makeCdb(rng: Rng): { cdb: number[]; params?: Uint8Array } {
    const blocks = rng.chance(0.7) ? BLOCKS : rng.pick([BLOCKS / 8, 2 ** 32, 0x200000]);
    const op = rng.chance(0.95) ? rng.pick(OPCODES) : rng.int(256);
    const lba = this.lba(rng, blocks);
    const n = this.count32(rng);
    const alloc = rng.chance(0.8) ? rng.pick([0, 4, 8, 16, 36, 64, 96, 252, 255, 512, 4096]) : rng.int(0x10000);
    let c: number[];
    let params: Uint8Array | undefined;
    switch (op) {
      case 0x08: c = cdb.read6(lba & 0x1fffff, n & 0xff); break;
      case 0x0a: c = cdb.write6(lba & 0x1fffff, n & 0xff); break;
      case 0x28: c = cdb.read10(lba >>> 0, n & 0xffff, rng.int(256)); break;
      case 0x2a: c = cdb.write10(lba >>> 0, n & 0xffff, rng.chance(0.8) ? 0 : rng.int(256)); break;
      case 0xa8: c = cdb.read12(lba >>> 0, n); break;
      case 0xaa: c = cdb.write12(lba >>> 0, n); break;
      case 0x88: c = cdb.read16(lba, n, rng.chance(0.8) ? 0 : rng.int(256)); break;
      case 0x8a: c = cdb.write16(lba, n, rng.chance(0.8) ? 0 : rng.int(256)); break;
      case 0x2f: c = cdb.verify10(lba >>> 0, n & 0xffff, rng.int(4)); break;
      case 0x8f: c = cdb.verify16(lba, n, rng.int(4)); break;
      case 0x35: c = cdb.sync10(lba >>> 0, n & 0xffff); break;
      case 0x91: c = cdb.sync16(lba, n); break;
      case 0x41: c = cdb.writeSame10(lba >>> 0, n & 0xffff, rng.pick([0, 0x08, 0x10, 0x18, rng.int(256)])); break;
      case 0x93: c = cdb.writeSame16(lba, n, rng.pick([0, 0x01, 0x08, 0x10, 0x18, rng.int(256)])); break;
      case 0x89: c = cdb.compareAndWrite(lba, rng.chance(0.8) ? rng.int(4) : rng.int(256)); break;
      case 0x12: c = cdb.inquiry(rng.chance(0.6), rng.pick([0, 0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2, rng.int(256)]), alloc); break;
      case 0x03: c = cdb.requestSense(alloc & 0xff, rng.chance(0.3)); break;
      case 0x1a: c = cdb.modeSense6(rng.pick([0x3f, 0x08, 0x0a, 0x01, 0x1c, rng.int(64)]), alloc & 0xff, rng.int(4), rng.chance(0.5), rng.chance(0.8) ? 0 : rng.int(256)); break;
      case 0x5a: c = cdb.modeSense10(rng.pick([0x3f, 0x08, 0x0a, 0x01, rng.int(64)]), alloc, rng.int(4), rng.chance(0.3), rng.chance(0.5)); break;
      case 0x15:
      case 0x55: {
        params = rng.chance(0.5) ? Uint8Array.from([0, 0, 0, 0, 0x08, 0x12, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) : rng.bytes(rng.int(64));
        c = op === 0x15 ? cdb.modeSelect6(params.length, rng.chance(0.8), rng.chance(0.2)) : cdb.modeSelect10(params.length, rng.chance(0.8));
        break;
      }
      case 0x25: c = cdb.readCapacity10(); break;
      case 0x9e: c = cdb.readCapacity16(alloc, rng.pick([0x10, 0x12, rng.int(32)])); break;
      case 0xa0: c = cdb.reportLuns(alloc, rng.pick([0, 1, 2, 0x10, rng.int(256)])); break;
      case 0x42: {
        const descs: [number, number][] = [];
        for (let i = rng.int(5); i > 0; i--) descs.push([this.lba(rng, blocks), this.count32(rng)]);
        params = unmapParams(descs);
        if (rng.chance(0.2)) params = params.subarray(0, rng.int(params.length + 1));
        if (rng.chance(0.1)) params[rng.int(Math.max(1, params.length))] ^= 1 << rng.int(8);
        c = cdb.unmap(rng.chance(0.9) ? params.length : rng.int(0x10000), rng.chance(0.1));
        break;
      }
      case 0x5e: c = cdb.prIn(rng.chance(0.9) ? rng.int(4) : rng.int(32), alloc); break;
      case 0x5f: {
        const key = BigInt(rng.int(4));
        params = prParams(key, BigInt(rng.int(4)), rng.chance(0.8) ? rng.pick([0, 1, 4, 8]) : rng.int(256));
        // REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT AND ABORT, REGISTER AND IGNORE, REGISTER AND MOVE
        c = cdb.prOut(rng.chance(0.9) ? rng.int(8) : rng.int(32), rng.pick([1, 3, 5, 6, 7, 8, rng.int(16)]), rng.chance(0.9) ? 24 : rng.int(64), rng.chance(0.9) ? 0 : rng.int(16));
        break;
      }
      case 0xa3: c = [0xa3, rng.pick([0x0c, 0x0d, 0x0a, rng.int(32)]), rng.int(8), rng.int(256), ...be16(rng.int(0x10000)), ...be32(alloc), 0, 0]; break;
      case 0x16: c = cdb.reserve6(); break;
      case 0x17: c = cdb.release6(); break;
      case 0x56: c = cdb.reserve10(); break;
      case 0x57: c = cdb.release10(); break;
      case 0x1b: c = [0x1b, rng.int(2), 0, rng.int(16), rng.int(256), 0]; break;
      case 0x00: c = cdb.tur(); break;
      case 0x7f: c = [0x7f, 0, 0, 0, 0, 0, 0, rng.int(256), rng.int(256), ...be16(rng.int(0x10000)), 0, ...be64(lba), ...be32(n), ...be32(n), ...be32(rng.u32())]; break;
      case 0x83:
      case 0x84:
      case 0x8e:
      case 0x2e:
        c = [op, rng.int(32), ...be64(lba), ...be32(n), 0, 0];
        break;
      default: {
        // Commands with no builder here (FORMAT UNIT, SEND/RECEIVE DIAGNOSTIC, PREVENT ALLOW, LOG SENSE, READ DEFECT DATA, ...) and random opcodes.
        if (!OPCODES.includes(op)) this.scount.randomOpcode++;
        const len = op < 0x20 ? 6 : op < 0x60 ? 10 : op < 0x80 ? rng.pick([6, 10, 12, 16, 32]) : op < 0xa0 ? 16 : 12;
        c = [op, ...rng.bytes(len - 1)];
        break;
      }
    }
    if (rng.chance(0.1)) {
      // Random bytes in the control byte or reserved fields.
      const i = rng.int(c.length);
      c[i] = rng.int(256);
    }
    if (rng.chance(0.05)) c = [...c, ...rng.bytes(rng.int(33 - Math.min(32, c.length)))];
    return { cdb: c.slice(0, 32), params };
  }

  /** The 51-byte request header: LUN, tag, task attribute, priority, CRN, CDB. */
  private reqHeader(rng: Rng, c: number[]): Uint8Array {
    const req = new Uint8Array(SCSI_REQ);
    if (rng.chance(0.9)) {
      this.scount.wellFormedLun++;
      const lun = rng.chance(0.9) ? 0 : rng.pick([1, 2, 255, 0x3fff, rng.int(0x4000)]);
      req.set([1, rng.chance(0.9) ? rng.int(2) : rng.int(256), 0x40 | (lun >> 8), lun & 0xff], 0);
    } else {
      req.set(rng.bytes(8), 0);
    }
    req.set(rng.bytes(8), 8); // tag
    req[16] = rng.chance(0.8) ? rng.int(4) : rng.int(256); // task attribute: SIMPLE, ORDERED, HEAD, ACA
    req[17] = rng.chance(0.9) ? 0 : rng.int(256);
    req[18] = rng.chance(0.9) ? 0 : rng.int(256);
    req.set(c, CDB_AT);
    return req;
  }

  /** One request's descriptors: header, data-out, response, data-in (sometimes out of order or cut). */
  protected override chainDescs(rng: Rng): { descs: D[]; writable: number } {
    const { cdb: c, params } = this.makeCdb(rng);
    const descs: D[] = [];
    let writable = 0;
    let hdr = this.reqHeader(rng, c);
    if (rng.chance(0.05)) hdr = hdr.subarray(0, rng.int(SCSI_REQ));
    const headerWithParams = params !== undefined && rng.chance(0.3);
    if (headerWithParams) {
      // The parameter list in the header's own descriptor (a driver may pack device-readable bytes any way).
      const both = new Uint8Array(hdr.length + params.length);
      both.set(hdr);
      both.set(params, hdr.length);
      descs.push(this.headerDesc(rng, both));
    } else if (!rng.chance(0.02)) {
      descs.push(this.headerDesc(rng, hdr));
    }
    // data-out
    if (params !== undefined && !headerWithParams) {
      this.scount.structuredParams++;
      descs.push(this.headerDesc(rng, params));
    } else if (rng.chance(0.3)) {
      for (let i = rng.range(1, rng.chance(0.95) ? 4 : 140); i > 0; i--) {
        const len = this.dataLen(rng);
        descs.push({ addr: this.readAddr(rng, len), len, flags: 0, next: 0 });
      }
    }
    const writableAt = descs.length;
    // the response
    const r = rng.int(20);
    if (r === 0) {
      // none
    } else if (r === 1) {
      descs.push({ addr: this.readAddr(rng, SCSI_RESP), len: SCSI_RESP, flags: 0, next: 0 });
    } else {
      const b = this.writeBuf(rng, r === 2 ? rng.int(SCSI_RESP) : r === 3 ? rng.range(SCSI_RESP, 4096) : SCSI_RESP);
      descs.push({ addr: b.addr, len: b.len, flags: Desc.WRITE, next: 0 });
      writable += b.len;
    }
    // data-in
    if (rng.chance(0.6)) {
      for (let i = rng.range(1, rng.chance(0.95) ? 4 : 140); i > 0; i--) {
        const b = this.writeBuf(rng, rng.chance(0.5) ? 512 * rng.range(1, 16) : this.dataLen(rng));
        descs.push({ addr: b.addr, len: b.len, flags: Desc.WRITE, next: 0 });
        writable += b.len;
      }
    }
    if (rng.chance(0.03) && descs.length > writableAt + 1) {
      // a device-readable descriptor after a writable one (§2.7.4: the device must refuse or cope)
      const len = this.dataLen(rng);
      descs.splice(rng.range(writableAt + 1, descs.length), 0, { addr: this.readAddr(rng, len), len, flags: 0, next: 0 });
    }
    if (descs.length === 0) descs.push({ addr: this.readAddr(rng, 16), len: 16, flags: 0, next: 0 });
    if (rng.chance(0.03)) {
      const d = rng.pick(descs);
      d.flags |= rng.u32() & 0xfff8 & ~Desc.WRITE;
    }
    return { descs, writable };
  }
}
