/**
 * vhost-user message fuzzer: one case = one message on the hostile
 * connection. A connection follows QEMU 7.2's order (design.md) with its own
 * mutation rate: each message may be replaced by a mutated one (size field,
 * flags, payload bits, fields set to boundary values, fds added, dropped or
 * of the wrong kind — eventfds, memfds of any size, a full blocking FIFO as
 * a call fd, /dev/null, sockets), or a random request may be slipped in. A
 * connection ends after a random number of messages or when vhostd closes
 * it; then a new one starts. Replies are read and their fds closed.
 * Thread: the fuzz runner's main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { native } from '../../bindings';
import { MessageChannel } from '../lib/frontend-channel';
import { GuestMemory } from '../lib/frontend-memory';
import {
  bit,
  concat,
  configMsg,
  encodeHeader,
  Flags,
  memTable,
  ProtoBit,
  Req,
  singleRegion,
  u64,
  vringAddr,
  vringFdPayload,
  vringState,
  type WireRegion,
} from '../lib/frontend-wire';
import type { Fuzzer } from './fuzzer';
import type { Rng } from './rng';
import type { ControllerInfo, FuzzTarget } from './target';

interface Msg {
  request: number;
  flags: number;
  payload: Uint8Array;
  /** fds to send (the fuzzer's copies are closed after sending). */
  fds: number[];
  sizeField?: number;
}

const ALL_REQUESTS = Object.values(Req) as number[];

/** A FIFO whose buffer is full: a blocking write to its write end would never return. */
class FullFifo {
  private readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-fuzz-fifo-'));
  private readonly reader: number;
  private readonly fifo: string;
  constructor() {
    this.fifo = path.join(this.dir, 'f');
    execFileSync('mkfifo', [this.fifo]);
    this.reader = fs.openSync(this.fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    const chunk = Buffer.alloc(65536, 1);
    for (;;) {
      try {
        fs.writeSync(this.reader, chunk);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
        throw e;
      }
    }
  }
  /** A new blocking open file description of the full FIFO's write side. */
  blockingWriter(): number {
    return fs.openSync(this.fifo, fs.constants.O_WRONLY);
  }
  close(): void {
    fs.closeSync(this.reader);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export class VhostUserFuzzer implements Fuzzer {
  readonly name = 'vhost-user';
  readonly checkEvery = 2000;
  private target!: FuzzTarget;
  private ctrl!: ControllerInfo;
  private fifo!: FullFifo;
  private ch: MessageChannel | null = null;
  private mem: GuestMemory | null = null;
  private script: ((rng: Rng) => Msg)[] = [];
  private step = 0;
  private left = 0;
  private connStart = 0;
  private mutationRate = 0;
  private offeredFeatures = 0n;
  private readonly count = { connections: 0, closedByTarget: 0, messages: 0, mutated: 0, sendTimeouts: 0 };

  async setup(target: FuzzTarget): Promise<void> {
    this.target = target;
    this.ctrl = await target.createBlk('fz.msg', 4096);
    this.fifo = new FullFifo();
    this.offeredFeatures = 0x1_7000_7e56n; // refreshed from the target's first reply below
    const ch = new MessageChannel(native.unixConnect(this.ctrl.socket));
    await ch.send(encodeHeader(Req.GET_FEATURES, Flags.VERSION, 0));
    const r = await ch.next(10_000);
    this.offeredFeatures = new DataView(r.payload.buffer, r.payload.byteOffset).getBigUint64(0, true);
    ch.close();
  }

  counters(): Record<string, number> {
    return { ...this.count };
  }

  private open(rng: Rng): void {
    this.ch = new MessageChannel(native.unixConnect(this.ctrl.socket));
    this.ch.onMessage = (m) => {
      for (const f of m.fds) native.close(f);
    };
    this.count.connections++;
    this.mem = new GuestMemory(rng.chance(0.3) ? [{ gpa: 0, sizeBytes: 1 << 20 }, { gpa: 1 << 20, sizeBytes: 1 << 20 }] : [{ gpa: 0, sizeBytes: 2 << 20 }]);
    this.script = this.qemuScript(rng);
    this.step = 0;
    this.left = rng.range(1, 80);
    this.mutationRate = rng.pick([0, 0.02, 0.1, 0.3, 1]);
  }

  private closeConn(): void {
    this.ch?.close();
    this.ch = null;
    this.mem?.close();
    this.mem = null;
  }

  async quiesce(): Promise<void> {
    this.closeConn();
  }

  async check(): Promise<void> {
    // Liveness of the abused controller itself: a fresh front-end gets verified I/O.
    await this.target.verifiedIo(this.ctrl);
  }

  replayStart(caseNo: number): number {
    return this.ch === null ? caseNo : this.connStart;
  }

  async runCase(rng: Rng, caseNo: number): Promise<void> {
    if (this.ch === null || this.ch.eof || this.left <= 0) {
      if (this.ch?.eof && this.ch.endReason === 'EOF') this.count.closedByTarget++;
      this.closeConn();
      this.open(rng);
      this.connStart = caseNo;
    }
    const ch = this.ch as MessageChannel;
    this.left--;
    let m: Msg;
    if (rng.chance(this.mutationRate)) {
      this.count.mutated++;
      m = rng.chance(0.3) ? this.randomMessage(rng) : this.mutate(rng, this.nextScripted(rng));
    } else {
      m = this.nextScripted(rng);
    }
    // SCM_RIGHTS carries at most 8 fds here (the target refuses more with MSG_CTRUNC anyway).
    while (m.fds.length > 8) native.close(m.fds.pop() as number);
    const header = encodeHeader(m.request, m.flags, m.sizeField ?? m.payload.byteLength);
    // Sometimes split the bytes: the header alone first (the target must wait for the payload).
    const bytes = concat([header, m.payload]);
    try {
      if (rng.chance(0.05) && bytes.byteLength > 12) {
        await ch.send(bytes.subarray(0, 12), m.fds, 2000);
        await new Promise((r) => setImmediate(r));
        await ch.send(bytes.subarray(12), [], 2000);
      } else {
        await ch.send(bytes, m.fds, 2000);
      }
      this.count.messages++;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ETIMEDOUT') {
        // The target stopped reading this connection for 2 s: not a failure by itself (it may
        // wait for a payload that never comes), but the liveness check that follows must pass.
        this.count.sendTimeouts++;
        this.closeConn();
      } else if (code !== 'EPEERCLOSED') {
        throw e;
      }
    } finally {
      for (const f of m.fds) native.close(f);
    }
    // Let the reactor take it before the next one, most of the time.
    if (rng.chance(0.7)) await new Promise((r) => setImmediate(r));
  }

  private nextScripted(rng: Rng): Msg {
    if (this.step >= this.script.length) return this.randomMessage(rng);
    return this.script[this.step++](rng);
  }

  private regions(): WireRegion[] {
    return (this.mem as GuestMemory).regions.map((r) => r.wire());
  }

  private dupRegionFds(): number[] {
    return (this.mem as GuestMemory).regions.map((r) => native.dup(r.fd));
  }

  /** QEMU 7.2's bring-up of one queue-set (design.md), as message makers. */
  private qemuScript(rng: Rng): ((rng: Rng) => Msg)[] {
    const V = Flags.VERSION;
    const msg = (request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], flags: number = V): Msg => ({ request, flags, payload, fds });
    const proto = bit(ProtoBit.MQ) | bit(ProtoBit.REPLY_ACK) | bit(ProtoBit.BACKEND_REQ) | bit(ProtoBit.CONFIG) | bit(ProtoBit.CONFIGURE_MEM_SLOTS) | bit(ProtoBit.STATUS);
    const nq = rng.range(1, 2);
    const s: ((rng: Rng) => Msg)[] = [
      () => msg(Req.GET_FEATURES),
      () => msg(Req.GET_PROTOCOL_FEATURES),
      () => msg(Req.SET_PROTOCOL_FEATURES, u64(proto)),
      () => msg(Req.GET_QUEUE_NUM),
      () => msg(Req.GET_MAX_MEM_SLOTS),
      () => {
        const [a, b] = native.socketPair();
        native.close(a);
        return msg(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), [b], V | Flags.NEED_REPLY);
      },
      () => msg(Req.SET_OWNER),
      () => msg(Req.GET_FEATURES),
    ];
    for (let q = 0; q < nq; q++) {
      s.push((r) => msg(Req.SET_VRING_CALL, vringFdPayload(q, false), [this.fdOfKind(r, 'eventfd')]));
      s.push((r) => msg(Req.SET_VRING_ERR, vringFdPayload(q, false), [this.fdOfKind(r, 'eventfd')]));
    }
    s.push(() => msg(Req.GET_CONFIG, configMsg(0, 60, 0)));
    const features = this.offeredFeatures & ~bit(33); // everything offered but a packed ring... keep 32 (VERSION_1)
    s.push(() => msg(Req.SET_FEATURES, u64(features)));
    s.push(() => msg(Req.SET_FEATURES, u64(features)));
    if (rng.chance(0.5)) {
      s.push(() => msg(Req.SET_MEM_TABLE, memTable(this.regions()), this.dupRegionFds(), V | Flags.NEED_REPLY));
    } else {
      const n = (this.mem as GuestMemory).regions.length;
      for (let i = 0; i < n; i++) {
        s.push(() => {
          const r = (this.mem as GuestMemory).regions[i];
          return msg(Req.ADD_MEM_REG, singleRegion(r.wire()), [native.dup(r.fd)], V | Flags.NEED_REPLY);
        });
      }
    }
    for (let q = 0; q < nq; q++) {
      const size = 2 ** rng.range(0, 10);
      const base = 0x10000 + q * 0x20000;
      const uva = (gpa: number): bigint => (this.mem as GuestMemory).uva(gpa);
      s.push(() => msg(Req.SET_VRING_NUM, vringState(q, size)));
      s.push(() => msg(Req.SET_VRING_BASE, vringState(q, 0)));
      s.push(() => msg(Req.SET_VRING_ADDR, vringAddr(q, 0, uva(base), uva(base + 0x8000), uva(base + 0x6000), 0n)));
      s.push((r) => msg(Req.SET_VRING_KICK, vringFdPayload(q, false), [this.fdOfKind(r, 'eventfd')]));
      s.push((r) => msg(Req.SET_VRING_CALL, vringFdPayload(q, false), [this.fdOfKind(r, r.chance(0.2) ? 'fifo' : 'eventfd')]));
      s.push(() => msg(Req.SET_VRING_ENABLE, vringState(q, 1)));
    }
    s.push(() => msg(Req.SET_STATUS, u64(0xfn), [], V | Flags.NEED_REPLY));
    // The driver goes away: stop each queue, then maybe start over.
    for (let q = 0; q < nq; q++) s.push(() => msg(Req.GET_VRING_BASE, vringState(q, 0)));
    if (rng.chance(0.3)) s.push(() => msg(Req.RESET_DEVICE));
    return s;
  }

  private fdOfKind(rng: Rng, kind?: 'eventfd' | 'fifo' | 'memfd' | 'devnull' | 'socket' | 'maxed-eventfd'): number {
    const k = kind ?? rng.pick(['eventfd', 'eventfd', 'fifo', 'memfd', 'devnull', 'socket', 'maxed-eventfd'] as const);
    switch (k) {
      case 'eventfd':
        return native.eventfd(0, 0);
      case 'maxed-eventfd': {
        // counter at 0xffff_ffff_ffff_fffe: one more write would block
        const fd = native.eventfd(0, 0);
        const b = new Uint8Array(8);
        new DataView(b.buffer).setBigUint64(0, 0xfffffffffffffffen, true);
        native.write(fd, b);
        return fd;
      }
      case 'fifo':
        return this.fifo.blockingWriter();
      case 'memfd': {
        const fd = native.memfdCreate('vhostfe-fuzz', 0);
        native.ftruncate(fd, rng.pick([0, 4096, 65536, 1 << 20, 3 << 20]));
        return fd;
      }
      case 'devnull':
        return fs.openSync('/dev/null', 'r+');
      case 'socket': {
        const [a, b] = native.socketPair();
        native.close(a);
        return b;
      }
    }
  }

  private randomFds(rng: Rng): number[] {
    const n = rng.chance(0.6) ? 0 : rng.range(1, rng.chance(0.1) ? 8 : 2);
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(this.fdOfKind(rng));
    return out;
  }

  /** A request with a well-formed-looking payload for its type, fields at boundary values. */
  private randomMessage(rng: Rng): Msg {
    const request = rng.chance(0.9) ? rng.pick(ALL_REQUESTS) : rng.chance(0.5) ? rng.range(0, 64) : rng.u32();
    const flags = Flags.VERSION | (rng.chance(0.3) ? Flags.NEED_REPLY : 0);
    const idx = rng.chance(0.8) ? rng.int(3) : rng.edgyU32();
    const memUva = (): bigint => (rng.chance(0.6) && this.mem ? (this.mem.uva(rng.int(this.mem.end())) & ~0xfn) : rng.edgyU64());
    let payload: Uint8Array;
    let fds: number[] = [];
    switch (request) {
      case Req.SET_FEATURES:
      case Req.SET_PROTOCOL_FEATURES:
      case Req.SET_STATUS:
        payload = u64(rng.chance(0.5) ? this.offeredFeatures ^ (1n << BigInt(rng.int(64))) : rng.edgyU64());
        break;
      case Req.SET_VRING_NUM:
      case Req.SET_VRING_BASE:
      case Req.GET_VRING_BASE:
      case Req.SET_VRING_ENABLE:
        payload = vringState(idx, rng.edgyU32());
        break;
      case Req.SET_VRING_ADDR:
        payload = vringAddr(idx, rng.chance(0.8) ? 0 : rng.edgyU32(), memUva(), memUva(), memUva(), rng.edgyU64());
        break;
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR: {
        const noFd = rng.chance(0.2);
        payload = rng.chance(0.8) ? vringFdPayload(idx, noFd) : u64(rng.edgyU64());
        fds = noFd && rng.chance(0.7) ? [] : [this.fdOfKind(rng)];
        break;
      }
      case Req.SET_MEM_TABLE: {
        const regs = this.mem ? this.regions() : [];
        const n = rng.chance(0.7) ? regs.length : rng.range(0, 9);
        const out: WireRegion[] = [];
        for (let i = 0; i < n; i++) {
          const base = regs[i % Math.max(1, regs.length)];
          const r: WireRegion = base ? { ...base } : { guestPhysAddr: 0n, sizeBytes: 1n << 20n, userspaceAddr: 0x7000_0000_0000n, mmapOffset: 0n };
          if (rng.chance(0.5)) {
            const f = rng.pick(['guestPhysAddr', 'sizeBytes', 'userspaceAddr', 'mmapOffset'] as const);
            r[f] = rng.chance(0.5) ? rng.edgyU64() : BigInt.asUintN(64, r[f] + BigInt(rng.range(-2, 2)) * 4096n);
          }
          out.push(r);
        }
        payload = memTable(out, rng.chance(0.9) ? out.length : rng.edgyU32());
        fds = this.mem && rng.chance(0.8) ? this.dupRegionFds().slice(0, Math.min(8, n)) : this.randomFds(rng);
        if (rng.chance(0.1)) fds.push(this.fdOfKind(rng, 'memfd'));
        break;
      }
      case Req.ADD_MEM_REG:
      case Req.REM_MEM_REG: {
        const regs = this.mem ? this.regions() : [];
        const r: WireRegion = regs.length > 0 && rng.chance(0.7) ? { ...rng.pick(regs) } : { guestPhysAddr: rng.edgyU64(), sizeBytes: rng.edgyU64(), userspaceAddr: rng.edgyU64(), mmapOffset: rng.edgyU64() };
        if (rng.chance(0.3)) r.guestPhysAddr = BigInt(rng.int(8)) << 20n;
        if (rng.chance(0.3)) r.sizeBytes = BigInt(rng.range(0, 4)) << 20n;
        payload = singleRegion(r);
        fds = request === Req.ADD_MEM_REG && rng.chance(0.9) ? [this.fdOfKind(rng, rng.chance(0.7) ? 'memfd' : undefined)] : this.randomFds(rng);
        break;
      }
      case Req.GET_CONFIG:
      case Req.SET_CONFIG: {
        const size = rng.chance(0.7) ? rng.int(80) : rng.edgyU32() & 0xffff;
        payload = configMsg(rng.chance(0.7) ? rng.int(80) : rng.edgyU32(), Math.min(size, 256), rng.chance(0.8) ? 0 : rng.edgyU32(), rng.bytes(Math.min(size, 256)));
        break;
      }
      case Req.SET_LOG_BASE: {
        // u64 mmap_size, u64 mmap_offset and a log fd: sizes around what the memory needs, edgy ones, odd payloads.
        const b = new Uint8Array(rng.chance(0.9) ? 16 : rng.int(24));
        const v = new DataView(b.buffer);
        if (b.byteLength >= 16) {
          v.setBigUint64(0, rng.chance(0.6) ? BigInt(rng.int(1 << 16)) : rng.edgyU64(), true);
          v.setBigUint64(8, rng.chance(0.7) ? 0n : rng.edgyU64(), true);
        }
        payload = b;
        fds = rng.chance(0.9) ? [this.fdOfKind(rng, rng.chance(0.7) ? 'memfd' : undefined)] : this.randomFds(rng);
        break;
      }
      case Req.GET_INFLIGHT_FD:
      case Req.SET_INFLIGHT_FD: {
        const b = new Uint8Array(24);
        const v = new DataView(b.buffer);
        v.setBigUint64(0, rng.chance(0.5) ? BigInt(rng.int(1 << 20)) : rng.edgyU64(), true);
        v.setBigUint64(8, rng.chance(0.5) ? 0n : rng.edgyU64(), true);
        v.setUint16(16, rng.chance(0.5) ? rng.int(4) : rng.edgyU32() & 0xffff, true);
        v.setUint16(18, rng.chance(0.5) ? 2 ** rng.int(16) : rng.edgyU32() & 0xffff, true);
        payload = b;
        if (request === Req.SET_INFLIGHT_FD) fds = [this.fdOfKind(rng, rng.chance(0.7) ? 'memfd' : undefined)];
        break;
      }
      case Req.SET_BACKEND_REQ_FD:
      case Req.SET_LOG_FD:
        payload = rng.chance(0.8) ? new Uint8Array(0) : rng.bytes(8);
        fds = this.randomFds(rng);
        break;
      default:
        payload = rng.chance(0.6) ? new Uint8Array(0) : rng.bytes(rng.chance(0.9) ? rng.int(64) : rng.int(4096));
        fds = this.randomFds(rng);
    }
    return { request, flags, payload, fds };
  }

  /** A scripted message made hostile: header fields, payload bits, fds. */
  private mutate(rng: Rng, m: Msg): Msg {
    switch (rng.int(6)) {
      case 0:
        m.flags = rng.chance(0.5) ? rng.edgyU32() : m.flags ^ (1 << rng.int(32));
        break;
      case 1:
        m.sizeField = rng.chance(0.5) ? m.payload.byteLength + rng.range(-8, 8) : rng.edgyU32();
        if (m.sizeField < 0) m.sizeField = 0;
        // A size far larger than the payload would make the target wait for bytes that never come;
        // it must refuse sizes beyond the largest message instead.
        break;
      case 2:
        m.payload = rng.mutate(m.payload.slice());
        break;
      case 3: {
        // truncated or extended payload, size field consistent
        const n = rng.chance(0.5) ? rng.int(m.payload.byteLength + 1) : m.payload.byteLength + rng.range(1, 64);
        const p = new Uint8Array(n);
        p.set(m.payload.subarray(0, Math.min(n, m.payload.byteLength)));
        m.payload = p;
        break;
      }
      case 4:
        // fds dropped or added
        if (m.fds.length > 0 && rng.chance(0.5)) {
          for (const f of m.fds.splice(0)) native.close(f);
        } else {
          m.fds.push(...this.randomFds(rng), this.fdOfKind(rng));
          while (m.fds.length > 8) native.close(m.fds.pop() as number);
        }
        break;
      default:
        m.request = rng.chance(0.5) ? rng.pick(ALL_REQUESTS) : rng.edgyU32();
    }
    return m;
  }

  dispose(): void {
    this.closeConn();
    this.fifo?.close();
  }
}
