/**
 * vhost-user session state machine against a fake VhostBackend that records
 * start/stop calls: QEMU 7.2's vhost-user-blk-pci sequence, ring stop with
 * GET_VRING_BASE, memory table swaps and call fd replacement while running
 * (old fds must stay open through the stop and be closed after it),
 * ADD/REM_MEM_REG, REPLY_ACK, GET_CONFIG, and every error path closing fds.
 * fds are real (/dev/null); closure is checked with fstat → EBADF.
 */
import t from 'tap';
import * as fs from 'node:fs';
import type { QueueDesc, QueueStopResult, RegionDesc, RingPos, StopResult } from '../../engine/control';
import { native } from '../../bindings';
import type { Logger } from '../../reactor/log';
import type { BackendChannel, DeviceRunState, VhostBackend } from '../../reactor/vhost-user/backend';
import {
  configPayload,
  decodeHeader,
  decodeMessage,
  decodeReplyHeader,
  encodeRequest,
  memRegionPayload,
  memTablePayload,
  u64Payload,
  vringAddrPayload,
  vringFdPayload,
  vringStatePayload,
  ProtocolError,
  type WireRegion,
} from '../../reactor/vhost-user/codec';
import { Request } from '../../reactor/vhost-user/messages';
import { decodeRingBase, encodeRingBase, VhostUserSession, type SessionEffect } from '../../reactor/vhost-user/session';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

function openFd(): number {
  return fs.openSync('/dev/null', 'r+');
}

function isOpen(fd: number): boolean {
  try {
    fs.fstatSync(fd);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EBADF') return false;
    throw err;
  }
}

const PROTO_ALL = (1n << 0n) | (1n << 3n) | (1n << 5n) | (1n << 9n) | (1n << 15n) | (1n << 16n);
const F_PROTOCOL = 1n << 30n;
const F_VERSION_1 = 1n << 32n;
const BLK_FEATURES = F_VERSION_1 | F_PROTOCOL | (1n << 28n) | (1n << 29n) | (1n << 12n) | (1n << 9n) | (1n << 6n) | (1n << 34n);

const F_RING_PACKED = 1n << 34n;

/** The engine's side as a recording fake: every call, in order, with the openness of `watch` fds at each. */
class FakeBackend implements VhostBackend {
  readonly name = 'fake0';
  readonly features = BLK_FEATURES;
  readonly protocolFeatures = PROTO_ALL;
  calls: string[] = [];
  starts: DeviceRunState[] = [];
  /** The queues the engine runs, by index. */
  queues = new Map<number, QueueDesc>();
  running = false;
  lastRegions: RegionDesc[] = [];
  callFds = new Map<number, number>();
  /** fds whose openness is recorded at each stop/stopQueue/setCallFd/updateMemory, to prove replaced fds live through it. */
  watch: number[] = [];
  openAtCall: boolean[][] = [];
  /** Each stop reports the started position + this. */
  advance = 7;
  connected: boolean[] = [];
  failStart = false;
  refuseWrite = false;
  writes: [number, number[]][] = [];
  session: BackendChannel | null = null;

  constructor(readonly maxQueues = 4) {}

  readConfig(size: number): Uint8Array {
    const b = new Uint8Array(Math.max(size, 60));
    for (let i = 0; i < b.length; i++) b[i] = (i * 7 + 3) & 0xff;
    return b;
  }

  writeConfig(offset: number, data: Uint8Array): boolean {
    this.writes.push([offset, [...data]]);
    return !this.refuseWrite;
  }

  private moved(p: RingPos): RingPos {
    return { ...p, availIdx: (p.availIdx + this.advance) & 0xffff, usedIdx: (p.usedIdx + this.advance) & 0xffff };
  }

  async start(state: DeviceRunState): Promise<void> {
    if (this.running) throw new Error('start while running');
    if (this.failStart) throw new Error('engine refused');
    this.calls.push(`start(${state.queues.map((q) => q.index).join(',')})`);
    this.starts.push(structuredClone(state));
    this.running = true;
    this.lastRegions = state.regions;
    for (const q of state.queues) this.queues.set(q.index, structuredClone(q));
  }

  async stop(): Promise<StopResult> {
    if (!this.running) throw new Error('stop while stopped');
    this.calls.push('stop');
    this.openAtCall.push(this.watch.map(isOpen));
    const r = { queues: [...this.queues.values()].map((q) => ({ index: q.index, pos: this.moved(q.pos) })) };
    this.running = false;
    this.queues.clear();
    return r;
  }

  async startQueue(queue: QueueDesc): Promise<void> {
    if (!this.running || this.queues.has(queue.index)) throw new Error(`startQueue(${queue.index}) in the wrong state`);
    this.calls.push(`startQueue(${queue.index})`);
    this.queues.set(queue.index, structuredClone(queue));
  }

  async stopQueue(index: number): Promise<QueueStopResult> {
    const q = this.queues.get(index);
    if (!this.running || !q) throw new Error(`stopQueue(${index}) of a queue that does not run`);
    this.calls.push(`stopQueue(${index})`);
    this.openAtCall.push(this.watch.map(isOpen));
    this.queues.delete(index);
    return { index, pos: this.moved(q.pos) };
  }

  async setCallFd(index: number, callFd: number): Promise<void> {
    const q = this.queues.get(index);
    if (!this.running || !q) throw new Error(`setCallFd(${index}) of a queue that does not run`);
    this.calls.push(`setCallFd(${index})`);
    this.openAtCall.push(this.watch.map(isOpen));
    q.callFd = callFd;
  }

  async updateMemory(regions: RegionDesc[]): Promise<void> {
    if (!this.running) throw new Error('updateMemory while stopped');
    this.calls.push(`updateMemory(${regions.length})`);
    this.openAtCall.push(this.watch.map(isOpen));
    this.lastRegions = structuredClone(regions);
  }

  connectionChanged(connected: boolean): void {
    this.connected.push(connected);
  }

  attachSession(session: BackendChannel | null): void {
    this.session = session;
  }
}

const quiet: Logger = { error() {}, warn() {}, notice() {}, info() {}, debug() {} };

interface Sent {
  request: number;
  payload: Uint8Array;
}

/** Effects of the last send (as the connection would perform them: fds closed, signals written). */
let lastEffects: SessionEffect[] = [];
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

/** Encode, decode (through the real codec) and handle one request; perform its effects like the connection. */
async function send(
  s: VhostUserSession,
  request: number,
  payload: Uint8Array = new Uint8Array(0),
  fds: number[] = [],
  needReply = false,
): Promise<Sent | null> {
  const bytes = encodeRequest(request, payload, needReply);
  const h = decodeHeader(bytes);
  const msg = decodeMessage(h, bytes.subarray(12), fds);
  const result = await s.handle(msg);
  lastEffects = result.effects;
  for (const e of result.effects) {
    if (e.kind === 'close') for (const f of e.fds) f.close();
    else if (e.kind === 'signal') fs.writeSync(e.fd.fd, ONE);
  }
  t.same(result.fds, [], 'no fds ride on these replies');
  const reply = result.reply;
  if (reply === null) return null;
  const rh = decodeReplyHeader(reply);
  t.equal(rh.size, reply.byteLength - 12, 'reply size matches');
  return { request: rh.request, payload: reply.subarray(12) };
}

function u64(r: { payload: Uint8Array } | null): bigint {
  if (!r) throw new Error('no reply');
  return Buffer.from(r.payload).readBigUInt64LE(0);
}

/** A split ring position at avail index n. */
function at(n: number): RingPos {
  return { availIdx: n, availWrap: false, usedIdx: n, usedWrap: false };
}

const GUEST_BASE = 0x7f00_0000_0000;
const LOW: WireRegion = { guestPhysAddr: 0, sizeBytes: 0xa0000, userAddr: GUEST_BASE, mmapOffset: 0 };
const HIGH: WireRegion = {
  guestPhysAddr: 0x100000,
  sizeBytes: 0x3ff0_0000,
  userAddr: GUEST_BASE + 0x100000,
  mmapOffset: 0x100000,
};

/** Ring addresses for queue i inside HIGH. */
function ringAddr(i: number): { index: number; descAddr: number; availAddr: number; usedAddr: number } {
  const base = GUEST_BASE + 0x200000 + i * 0x10000;
  return { index: i, descAddr: base, availAddr: base + 0x1000, usedAddr: base + 0x2000 };
}

interface Setup {
  s: VhostUserSession;
  be: FakeBackend;
  fds: { backendReq: number; call: number[]; err: number[]; kick: number[]; regions: number[] };
}

/** QEMU 7.2 vhost-user-blk-pci with num-queues=2 on a 4-queue device, up to ring enable. */
async function qemuSequence(tt: Tap, be = new FakeBackend()): Promise<Setup> {
  const s = new VhostUserSession(be, quiet);
  const fds: Setup['fds'] = { backendReq: -1, call: [], err: [], kick: [], regions: [] };
  tt.equal(u64(await send(s, Request.GetFeatures)), BLK_FEATURES, 'GET_FEATURES');
  tt.equal(u64(await send(s, Request.GetProtocolFeatures)), PROTO_ALL, 'GET_PROTOCOL_FEATURES');
  tt.equal(await send(s, Request.SetProtocolFeatures, u64Payload(PROTO_ALL)), null);
  tt.equal(u64(await send(s, Request.GetQueueNum)), 4n, 'GET_QUEUE_NUM');
  tt.equal(u64(await send(s, Request.GetMaxMemSlots, new Uint8Array(0), [], true)), 32n, 'GET_MAX_MEM_SLOTS');
  fds.backendReq = openFd();
  tt.equal(u64(await send(s, Request.SetBackendReqFd, new Uint8Array(0), [fds.backendReq], true)), 0n, 'ack');
  tt.equal(await send(s, Request.SetOwner), null);
  tt.equal(u64(await send(s, Request.GetFeatures)), BLK_FEATURES);
  for (let i = 0; i < 2; i++) {
    fds.call.push(openFd());
    await send(s, Request.SetVringCall, vringFdPayload(i, false), [fds.call[i]]);
    fds.err.push(openFd());
    await send(s, Request.SetVringErr, vringFdPayload(i, false), [fds.err[i]]);
  }
  const cfg = await send(s, Request.GetConfig, configPayload(0, 60, 0));
  tt.equal(cfg?.payload.byteLength, 72, 'GET_CONFIG 60 bytes');
  const acked = F_VERSION_1 | F_PROTOCOL | (1n << 29n) | (1n << 12n);
  await send(s, Request.SetFeatures, u64Payload(acked));
  await send(s, Request.SetFeatures, u64Payload(acked));
  for (const r of [LOW, HIGH]) {
    const fd = openFd();
    fds.regions.push(fd);
    tt.equal(u64(await send(s, Request.AddMemReg, memRegionPayload(r), [fd], true)), 0n, 'ADD_MEM_REG ack');
  }
  for (let i = 0; i < 2; i++) {
    await send(s, Request.SetVringNum, vringStatePayload(i, 128));
    await send(s, Request.SetVringBase, vringStatePayload(i, 10 * i));
    await send(s, Request.SetVringAddr, vringAddrPayload(ringAddr(i)));
    fds.kick.push(openFd());
    await send(s, Request.SetVringKick, vringFdPayload(i, false), [fds.kick[i]]);
  }
  tt.same(be.calls, [], 'nothing starts before SET_VRING_ENABLE (protocol features negotiated)');
  await send(s, Request.SetVringEnable, vringStatePayload(0, 1));
  tt.same(be.calls, ['start(0)'], 'queue 0 ready: the device starts with it');
  await send(s, Request.SetVringEnable, vringStatePayload(1, 1));
  tt.same(be.calls, ['start(0)', 'startQueue(1)'], 'queue 1 ready: it starts alone, queue 0 keeps running');
  // QEMU enables every queue, also those that never got addresses: not ready, nothing changes.
  await send(s, Request.SetVringEnable, vringStatePayload(2, 1));
  await send(s, Request.SetVringEnable, vringStatePayload(3, 1));
  tt.same(be.calls, ['start(0)', 'startQueue(1)'], 'queues without addresses change nothing');
  return { s, be, fds };
}

function allFds(f: Setup['fds']): number[] {
  return [f.backendReq, ...f.call, ...f.err, ...f.kick, ...f.regions];
}

t.test('QEMU 7.2 vhost-user-blk sequence starts the device, then the second queue alone', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  tt.equal(be.starts.length, 1);
  const st = be.starts[0];
  tt.equal(st.features, F_VERSION_1 | F_PROTOCOL | (1n << 29n) | (1n << 12n));
  tt.same(
    st.regions.map((r) => [r.fd, r.guestPhysAddr, r.sizeBytes, r.userAddr, r.mmapOffset]),
    [
      [fds.regions[0], 0, 0xa0000, GUEST_BASE, 0],
      [fds.regions[1], 0x100000, 0x3ff0_0000, GUEST_BASE + 0x100000, 0x100000],
    ],
  );
  tt.same(st.queues, [{ ...ringAddr(0), size: 128, pos: at(0), kickFd: fds.kick[0], callFd: fds.call[0] }]);
  // Queue 1 starts from its SET_VRING_BASE.
  tt.same(be.queues.get(1), { ...ringAddr(1), size: 128, pos: at(10), kickFd: fds.kick[1], callFd: fds.call[1] });
  tt.ok(allFds(fds).every(isOpen), 'every fd still open while running');
  await s.close();
  tt.same(be.calls.slice(-1), ['stop'], 'close stops the device');
  tt.ok(allFds(fds).every((fd) => !isOpen(fd)), 'close closed every fd');
  await s.close();
  tt.same(be.calls.slice(-1), ['stop'], 'second close is a no-op');
});

t.test('QEMU 7.2 with 16 queues: one start, 15 queue starts, no stop, no remap', async (tt) => {
  const be = new FakeBackend(16);
  const s = new VhostUserSession(be, quiet);
  await send(s, Request.SetProtocolFeatures, u64Payload(PROTO_ALL));
  await send(s, Request.SetOwner);
  for (let i = 0; i < 16; i++) {
    await send(s, Request.SetVringCall, vringFdPayload(i, false), [openFd()]);
    await send(s, Request.SetVringErr, vringFdPayload(i, false), [openFd()]);
  }
  const acked = F_VERSION_1 | F_PROTOCOL | (1n << 29n) | (1n << 12n);
  await send(s, Request.SetFeatures, u64Payload(acked));
  await send(s, Request.SetFeatures, u64Payload(acked));
  for (const r of [LOW, HIGH]) await send(s, Request.AddMemReg, memRegionPayload(r), [openFd()]);
  for (let i = 0; i < 16; i++) {
    await send(s, Request.SetVringNum, vringStatePayload(i, 128));
    await send(s, Request.SetVringBase, vringStatePayload(i, 0));
    await send(s, Request.SetVringAddr, vringAddrPayload(ringAddr(i)));
    await send(s, Request.SetVringKick, vringFdPayload(i, false), [openFd()]);
  }
  for (let i = 0; i < 16; i++) await send(s, Request.SetVringEnable, vringStatePayload(i, 1));
  // QEMU re-sends the memory table while the rings run (same memory, new fds): nothing to remap.
  const again = [openFd(), openFd()];
  await send(s, Request.SetMemTable, memTablePayload([LOW, HIGH]), again);
  tt.ok(again.every((fd) => !isOpen(fd)), 'the duplicate fds of an unchanged table are closed');
  tt.same(s.calls, { start: 1, stop: 0, startQueue: 15, stopQueue: 0, setCallFd: 0, updateMemory: 0 });
  tt.same(be.calls, ['start(0)', ...Array.from({ length: 15 }, (_, i) => `startQueue(${i + 1})`)]);
  tt.equal(be.queues.size, 16, 'every queue runs');
  await s.close();
  tt.same(s.calls.stop, 1, 'one stop, at the end of the connection');
});

t.test('GET_VRING_BASE stops that queue alone and answers where it ended', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  be.calls = [];
  be.advance = 100;
  be.watch = [fds.kick[0]];
  const r0 = await send(s, Request.GetVringBase, vringStatePayload(0, 0));
  tt.equal(r0?.request, Request.GetVringBase);
  tt.same(Buffer.from(r0!.payload), Buffer.from(vringStatePayload(0, 100)), 'queue 0 ran from 0, the fake advanced 100');
  tt.same(be.calls, ['stopQueue(0)'], 'only queue 0 stopped; the device and queue 1 keep running');
  tt.same(be.openAtCall, [[true]], 'its kick fd was open through the stop');
  tt.notOk(isOpen(fds.kick[0]), 'and closed after it');
  const r1 = await send(s, Request.GetVringBase, vringStatePayload(1, 0));
  tt.same(Buffer.from(r1!.payload), Buffer.from(vringStatePayload(1, 110)), 'queue 1: 10 + 100');
  tt.same(be.calls, ['stopQueue(0)', 'stopQueue(1)']);
  tt.ok(be.running, 'a running device may have no queue running');
  // A ring that is not running answers its recorded index without touching the device.
  const again = await send(s, Request.GetVringBase, vringStatePayload(1, 0));
  tt.same(Buffer.from(again!.payload), Buffer.from(vringStatePayload(1, 110)));
  tt.equal(be.calls.length, 2);
  // Restart of queue 1 needs a new kick: then it runs from 110.
  const k = openFd();
  await send(s, Request.SetVringKick, vringFdPayload(1, false), [k]);
  tt.same(be.calls.slice(2), ['startQueue(1)']);
  tt.same(be.queues.get(1)?.pos, at(110));
  await s.close();
  tt.notOk(isOpen(k));
});

t.test('QEMU stop order: SET_VRING_ENABLE 0 then GET_VRING_BASE', async (tt) => {
  const { s, be } = await qemuSequence(tt);
  be.calls = [];
  for (let i = 0; i < 4; i++) await send(s, Request.SetVringEnable, vringStatePayload(i, 0));
  tt.same(be.calls, ['stopQueue(0)', 'stopQueue(1)'], 'disabling queues stops each alone');
  const r0 = await send(s, Request.GetVringBase, vringStatePayload(0, 0));
  const r1 = await send(s, Request.GetVringBase, vringStatePayload(1, 0));
  tt.same(Buffer.from(r0!.payload), Buffer.from(vringStatePayload(0, 7)));
  tt.same(Buffer.from(r1!.payload), Buffer.from(vringStatePayload(1, 17)));
  tt.equal(be.calls.length, 2, 'no further engine call');
  await s.close();
});

t.test('SET_VRING_KICK on a running queue restarts that queue alone with the new fd', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  be.calls = [];
  be.watch = [fds.kick[1]];
  const k = openFd();
  await send(s, Request.SetVringKick, vringFdPayload(1, false), [k]);
  tt.same(be.calls, ['stopQueue(1)', 'startQueue(1)']);
  tt.same(be.openAtCall, [[true]], 'old kick open through the stop');
  tt.notOk(isOpen(fds.kick[1]), 'closed after it');
  tt.equal(be.queues.get(1)?.kickFd, k);
  tt.same(be.queues.get(1)?.pos, at(17), 'resumes where it stopped');
  tt.ok(native.fdGetFlags(k) & 0o4000, 'the new kick fd was made nonblocking');
  await s.close();
});

t.test('memory table change while running: updateMemory; old fds closed after it resolved', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  be.calls = [];
  be.watch = [...fds.regions];
  const fresh = [openFd(), openFd()];
  const moved: WireRegion = { ...HIGH, mmapOffset: 0x200000 };
  tt.equal(u64(await send(s, Request.SetMemTable, memTablePayload([LOW, moved]), fresh, true)), 0n, 'ack');
  tt.same(be.calls, ['updateMemory(2)'], 'no stop, no start: the running device remaps');
  tt.same(be.openAtCall, [[true, true]], 'old region fds were open during the update');
  tt.ok(fds.regions.every((fd) => !isOpen(fd)), 'old region fds closed after it');
  tt.ok(fresh.every(isOpen));
  tt.same(be.lastRegions.map((r) => r.fd), fresh);
  tt.equal(be.lastRegions[1].mmapOffset, 0x200000);
  // Same layout, but another file behind a region: that is a change.
  const file = `/tmp/vhostd-session-mem-${process.pid}`;
  const other = fs.openSync(file, 'w+');
  fs.unlinkSync(file);
  fs.ftruncateSync(other, 0x300000);
  await send(s, Request.SetMemTable, memTablePayload([LOW, { ...HIGH, sizeBytes: 0x100000 }]), [openFd(), other]);
  tt.same(be.calls, ['updateMemory(2)', 'stopQueue(0)', 'stopQueue(1)', 'updateMemory(2)'], 'rings outside the smaller region stop first');
  await s.close();
  tt.ok(fresh.every((fd) => !isOpen(fd)));
  tt.notOk(isOpen(other));
});

t.test('call fd replacement', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  be.calls = [];
  be.watch = [fds.call[1]];
  const c = openFd();
  await send(s, Request.SetVringCall, vringFdPayload(1, false), [c]);
  tt.same(be.calls, ['setCallFd(1)'], 'a running queue switches call fd in place');
  tt.same(be.openAtCall, [[true]], 'old call fd open until setCallFd resolved');
  tt.notOk(isOpen(fds.call[1]), 'old call fd closed after it');
  tt.equal(be.queues.get(1)?.callFd, c);
  tt.ok(native.fdGetFlags(c) & 0o4000, 'the new call fd was made nonblocking');
  // The new call fd is signalled once (completions signalled on the old one must not be lost).
  const file = `/tmp/vhostd-session-test-${process.pid}`;
  const sig = fs.openSync(file, 'w+');
  fs.unlinkSync(file);
  await send(s, Request.SetVringCall, vringFdPayload(1, false), [sig]);
  tt.same(
    lastEffects.map((e) => (e.kind === 'signal' ? `signal(${e.queue}:${e.fd.fd})` : e.kind)),
    ['close', `signal(1:${sig})`],
    'the old fd goes, the new one is signalled: as effects, the session writes nothing',
  );
  const got = Buffer.alloc(16);
  tt.equal(fs.readSync(sig, got, 0, 16, 0), 8, 'one 8-byte eventfd write');
  tt.equal(got.readBigUInt64LE(0), 1n, 'value 1');
  tt.notOk(isOpen(c), 'previous call fd closed');
  // "no fd" call: the queue runs without interrupts.
  await send(s, Request.SetVringCall, vringFdPayload(1, true));
  tt.notOk(isOpen(sig));
  tt.equal(be.queues.get(1)?.callFd, -1);
  // A queue that does not run: no engine call, the old fd goes at once.
  be.calls = [];
  const q2a = openFd();
  const q2b = openFd();
  await send(s, Request.SetVringCall, vringFdPayload(2, false), [q2a]);
  await send(s, Request.SetVringCall, vringFdPayload(2, false), [q2b]);
  tt.same(be.calls, []);
  tt.notOk(isOpen(q2a));
  // An err fd replacement does not touch the device.
  const e = openFd();
  await send(s, Request.SetVringErr, vringFdPayload(0, false), [e]);
  tt.same(be.calls, []);
  tt.notOk(isOpen(fds.err[0]));
  await s.close();
  tt.notOk(isOpen(e));
  tt.notOk(isOpen(q2b));
});

t.test('ADD_MEM_REG / REM_MEM_REG', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  be.calls = [];
  const extra: WireRegion = { guestPhysAddr: 0x1_0000_0000, sizeBytes: 0x1000_0000, userAddr: GUEST_BASE + 0x1_0000_0000, mmapOffset: 0x4000_0000 };
  const x = openFd();
  await send(s, Request.AddMemReg, memRegionPayload(extra), [x]);
  tt.same(be.calls, ['updateMemory(3)'], 'added region: remap, no restart');
  tt.equal(be.lastRegions.length, 3);
  be.watch = [x];
  tt.equal(u64(await send(s, Request.RemMemReg, memRegionPayload({ ...extra, mmapOffset: 0 }), [], true)), 0n, 'removed (mmap offset ignored)');
  tt.same(be.calls.slice(-1), ['updateMemory(2)']);
  tt.same(be.openAtCall[be.openAtCall.length - 1], [true], 'removed region fd open during the update');
  tt.notOk(isOpen(x), 'and closed after it');
  // Unknown region with REPLY_ACK: a non-zero ack, the session survives.
  const n = be.calls.length;
  tt.not(u64(await send(s, Request.RemMemReg, memRegionPayload(extra), [], true)), 0n, 'unknown region: failure ack');
  tt.equal(be.calls.length, n, 'device untouched');
  // Removing the region that holds the rings does not kill the session: the queues are held back.
  be.calls = [];
  await send(s, Request.RemMemReg, memRegionPayload(HIGH));
  tt.same(be.calls, ['stopQueue(0)', 'stopQueue(1)', 'updateMemory(1)'], 'rings outside memory stop before the remap');
  tt.notOk(isOpen(fds.regions[1]));
  tt.ok(be.running && be.queues.size === 0, 'device runs without queues');
  const h = openFd();
  await send(s, Request.AddMemReg, memRegionPayload(HIGH), [h]);
  tt.same(be.calls.slice(3), ['updateMemory(2)', 'startQueue(0)', 'startQueue(1)'], 'memory back: rings run again');
  tt.same(be.queues.get(0)?.pos, at(7), 'from where they stopped');
  // The last region gone: the device stops.
  await send(s, Request.RemMemReg, memRegionPayload(HIGH));
  await send(s, Request.RemMemReg, memRegionPayload(LOW));
  tt.same(be.calls.slice(-1), ['stop']);
  tt.notOk(be.running);
  await s.close();
  tt.notOk(isOpen(h));
});

t.test('a feature change restarts the device; the same features change nothing', async (tt) => {
  const { s, be } = await qemuSequence(tt);
  be.calls = [];
  const acked = F_VERSION_1 | F_PROTOCOL | (1n << 29n) | (1n << 12n);
  await send(s, Request.SetFeatures, u64Payload(acked));
  tt.same(be.calls, [], 'same features');
  await send(s, Request.SetFeatures, u64Payload(acked | (1n << 9n)));
  tt.same(be.calls, ['stop', 'start(0,1)']);
  tt.equal(be.starts[1].features, acked | (1n << 9n));
  tt.same(be.starts[1].queues.map((q) => q.pos), [at(7), at(17)], 'each queue resumes where the stop left it');
  be.calls = [];
  await send(s, Request.ResetOwner);
  tt.same(be.calls, ['stop'], 'RESET_OWNER stops the device');
  tt.same(s.describe().queues.map((q) => q.ready), [false, false, false, false], 'and disables the rings');
  await s.close();
});

t.test('SET/GET_VRING_BASE: split u16 (larger refused), packed avail/used with wrap counters', async (tt) => {
  tt.same(decodeRingBase(0xffff, false), at(0xffff));
  tt.equal(decodeRingBase(0x10000, false), null, 'split: more than 16 bits is refused');
  tt.same(decodeRingBase(0x8005, true), { availIdx: 5, availWrap: true, usedIdx: 5, usedWrap: true }, 'packed, bits 0-15 only');
  tt.same(decodeRingBase(0x0003_8005, true), { availIdx: 5, availWrap: true, usedIdx: 3, usedWrap: false });
  tt.same(decodeRingBase(0x8003_0005, true), { availIdx: 5, availWrap: false, usedIdx: 3, usedWrap: true });
  tt.equal(encodeRingBase({ availIdx: 5, availWrap: true, usedIdx: 3, usedWrap: true }, true), 0x8003_8005);
  tt.equal(encodeRingBase(at(0x1234), false), 0x1234);

  const { s, be } = await qemuSequence(tt);
  be.calls = [];
  await send(s, Request.SetVringEnable, vringStatePayload(1, 0));
  tt.not(u64(await send(s, Request.SetVringBase, vringStatePayload(1, 0x1_0000), [], true)), 0n, 'split base > 0xffff: failure ack');
  const r = await send(s, Request.GetVringBase, vringStatePayload(1, 0));
  tt.same(Buffer.from(r!.payload), Buffer.from(vringStatePayload(1, 17)), 'the refused base changed nothing');
  await s.close();

  // A packed ring, as QEMU drives it: SET_VRING_BASE with the used half in bits 16-31.
  const pb = new FakeBackend(1);
  const p = new VhostUserSession(pb, quiet);
  await send(p, Request.SetFeatures, u64Payload(F_VERSION_1 | F_RING_PACKED));
  await send(p, Request.SetMemTable, memTablePayload([HIGH]), [openFd()]);
  await send(p, Request.SetVringNum, vringStatePayload(0, 100));
  await send(p, Request.SetVringBase, vringStatePayload(0, 0x8003_8005));
  await send(p, Request.SetVringAddr, vringAddrPayload(ringAddr(0)));
  await send(p, Request.SetVringKick, vringFdPayload(0, false), [openFd()]);
  tt.same(pb.calls, ['start(0)']);
  tt.same(pb.starts[0].queues[0].pos, { availIdx: 5, availWrap: true, usedIdx: 3, usedWrap: true });
  tt.equal(pb.starts[0].queues[0].size, 100, 'packed rings need not be a power of 2');
  pb.advance = 10;
  const g = await send(p, Request.GetVringBase, vringStatePayload(0, 0));
  tt.same(Buffer.from(g!.payload), Buffer.from(vringStatePayload(0, 0x800d_800f)), 'answered in the same layout');
  await p.close();
});

t.test('a packed ring never given a base starts with wrap counters set', async (tt) => {
  const pb = new FakeBackend(1);
  const p = new VhostUserSession(pb, quiet);
  await send(p, Request.SetFeatures, u64Payload(F_VERSION_1 | F_RING_PACKED));
  await send(p, Request.SetMemTable, memTablePayload([HIGH]), [openFd()]);
  await send(p, Request.SetVringNum, vringStatePayload(0, 256));
  await send(p, Request.SetVringAddr, vringAddrPayload(ringAddr(0)));
  await send(p, Request.SetVringKick, vringFdPayload(0, true));
  tt.same(pb.starts[0].queues[0].pos, { availIdx: 0, availWrap: true, usedIdx: 0, usedWrap: true });
  await p.close();
});

t.test('notifyConfigChange hands a CONFIG_CHANGE_MSG to the connection, never writing itself', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  tt.equal(be.session, s, 'the session attached itself');
  tt.notOk(s.notifyConfigChange(), 'no connection (effect sink): false');
  const got: SessionEffect[][] = [];
  s.setEffectSink((e) => got.push(e));
  tt.ok(s.notifyConfigChange());
  tt.equal(got.length, 1);
  const e = got[0][0];
  tt.equal(e.kind, 'backendMessage');
  if (e.kind === 'backendMessage') {
    tt.equal(e.fd.fd, fds.backendReq);
    tt.same(Buffer.from(e.bytes), Buffer.from([2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]), 'request 2, version 1, no payload, no need_reply');
  }
  await s.close();
  tt.notOk(s.notifyConfigChange(), 'closed: false');
  tt.equal(be.session, null, 'detached');

  const plain = new VhostUserSession(new FakeBackend(), quiet);
  plain.setEffectSink(() => tt.fail('no effect expected'));
  await send(plain, Request.SetProtocolFeatures, u64Payload(1n << 9n));
  await send(plain, Request.SetBackendReqFd, new Uint8Array(0), [openFd()]);
  tt.notOk(plain.notifyConfigChange(), 'BACKEND_REQ not negotiated: false');
  await plain.close();
});

t.test('REPLY_ACK', async (tt) => {
  const be = new FakeBackend();
  const s = new VhostUserSession(be, quiet);
  tt.equal(await send(s, Request.SetOwner, new Uint8Array(0), [], true), null, 'not negotiated: no ack');
  await send(s, Request.SetProtocolFeatures, u64Payload(1n << 3n));
  const ack = await send(s, Request.SetOwner, new Uint8Array(0), [], true);
  tt.equal(ack?.request, Request.SetOwner);
  tt.equal(u64(ack), 0n);
  tt.equal(await send(s, Request.SetOwner), null, 'no need_reply: no ack');
  // A request with its own reply answers only that.
  const f = await send(s, Request.GetFeatures, new Uint8Array(0), [], true);
  tt.equal(u64(f), BLK_FEATURES);
  await s.close();
});

t.test('GET_CONFIG of 256 bytes and SET_CONFIG', async (tt) => {
  const be = new FakeBackend();
  const s = new VhostUserSession(be, quiet);
  const r = await send(s, Request.GetConfig, configPayload(0, 256, 0));
  tt.equal(r?.request, Request.GetConfig);
  const p = Buffer.from(r!.payload);
  tt.equal(p.length, 12 + 256);
  tt.same([p.readUInt32LE(0), p.readUInt32LE(4), p.readUInt32LE(8)], [0, 256, 0], 'echoes offset/size/flags');
  tt.same(p.subarray(12), Buffer.from(be.readConfig(256)));
  // A range inside the device struct is read at its offset (crosvm forwards each guest config read so).
  const part = await send(s, Request.GetConfig, configPayload(20, 4, 1));
  const q = Buffer.from(part!.payload);
  tt.same([q.readUInt32LE(0), q.readUInt32LE(4), q.readUInt32LE(8)], [20, 4, 1]);
  tt.same(q.subarray(12), Buffer.from(be.readConfig(60).subarray(20, 24)), 'offset 20 size 4: bytes 20..23');
  const last = await send(s, Request.GetConfig, configPayload(56, 4, 1));
  tt.same(Buffer.from(last!.payload).subarray(12), Buffer.from(be.readConfig(60).subarray(56, 60)), 'the last field of the struct');
  // Past the struct (and not 0x100-based): from the start, as DPDK, SPDK and libvhost-user answer.
  const past = await send(s, Request.GetConfig, configPayload(58, 4, 0));
  tt.same(Buffer.from(past!.payload).subarray(12), Buffer.from(be.readConfig(4).subarray(0, 4)), 'offset 58 size 4: from the start');
  // rust-vmm's 0x100 base plus a field offset.
  const based = await send(s, Request.GetConfig, configPayload(0x100 + 20, 4, 1));
  tt.same(Buffer.from(based!.payload).subarray(12), Buffer.from(be.readConfig(60).subarray(20, 24)), 'offset 0x114 size 4: bytes 20..23');
  // cloud-hypervisor: offset 0x100, size 60 → the 60 bytes of the virtio-blk config.
  const ch = await send(s, Request.GetConfig, configPayload(0x100, 60, 0));
  const c = Buffer.from(ch!.payload);
  tt.same([c.readUInt32LE(0), c.readUInt32LE(4), c.readUInt32LE(8)], [0x100, 60, 0]);
  tt.same(c.subarray(12), Buffer.from(be.readConfig(60).subarray(0, 60)));
  await send(s, Request.SetProtocolFeatures, u64Payload(PROTO_ALL));
  tt.equal(u64(await send(s, Request.SetConfig, configPayload(32, 1, 0, new Uint8Array([1])), [], true)), 0n, 'SET_CONFIG acked');
  tt.same(be.writes, [[32, [1]]], 'the device model got the write');
  be.refuseWrite = true;
  tt.equal(u64(await send(s, Request.SetConfig, configPayload(0, 8, 0, new Uint8Array(8)), [], true)), 1n, 'refused write: failure ack');
  await s.close();
});

t.test('protocol violations throw and close the fds they carried', async (tt) => {
  const be = new FakeBackend(2);
  const s = new VhostUserSession(be, quiet);
  await tt.rejects(send(s, Request.SetVringNum, vringStatePayload(2, 128)), /queue index 2 out of range/);
  const fd = openFd();
  await tt.rejects(send(s, Request.SetVringCall, vringFdPayload(7, false), [fd]), ProtocolError);
  tt.notOk(isOpen(fd), 'fd of a rejected SET_VRING_CALL closed');
  await tt.rejects(send(s, Request.SetVringNum, vringStatePayload(0, 100)), /not a power of 2/);
  await tt.rejects(send(s, Request.SetVringNum, vringStatePayload(0, 65536)), /not a power of 2/);
  await tt.rejects(send(s, Request.SetVringNum, vringStatePayload(0, 0)), /size 0/);
  await tt.rejects(send(s, Request.SetFeatures, u64Payload(1n << 40n)), /features 0x10000000000 were not offered/);
  await tt.rejects(send(s, Request.SetProtocolFeatures, u64Payload(1n << 12n)), /protocol features 0x1000 were not offered/);

  const a = openFd();
  const b = openFd();
  const overlapGpa: WireRegion[] = [LOW, { ...HIGH, guestPhysAddr: 0x9f000 }];
  await tt.rejects(send(s, Request.SetMemTable, memTablePayload(overlapGpa), [a, b]), /overlap in guest physical/);
  tt.ok(!isOpen(a) && !isOpen(b), 'both region fds closed');
  const c = openFd();
  const d = openFd();
  const overlapUva: WireRegion[] = [LOW, { ...HIGH, userAddr: GUEST_BASE + 0x1000 }];
  await tt.rejects(send(s, Request.SetMemTable, memTablePayload(overlapUva), [c, d]), /overlap in front-end virtual/);
  tt.ok(!isOpen(c) && !isOpen(d));
  const e = openFd();
  await send(s, Request.SetMemTable, memTablePayload([LOW]), [e]);
  const f = openFd();
  await tt.rejects(send(s, Request.AddMemReg, memRegionPayload({ ...HIGH, userAddr: GUEST_BASE }), [f]), /overlap/);
  tt.notOk(isOpen(f), 'rejected ADD_MEM_REG fd closed');
  tt.ok(isOpen(e), 'the accepted table is kept');
  await s.close();
  tt.notOk(isOpen(e));
  await tt.rejects(send(s, Request.GetFeatures), /after the session closed/);
});

t.test('ring that does not fit in one region is a protocol error', async (tt) => {
  const be = new FakeBackend(1);
  const s = new VhostUserSession(be, quiet);
  await send(s, Request.SetFeatures, u64Payload(F_VERSION_1));
  const r = openFd();
  await send(s, Request.SetMemTable, memTablePayload([LOW]), [r]);
  await send(s, Request.SetVringNum, vringStatePayload(0, 256));
  // desc table 4096 bytes starting 0x800 below LOW's end.
  const end = GUEST_BASE + 0xa0000;
  await send(s, Request.SetVringAddr, vringAddrPayload({ index: 0, descAddr: end - 0x800, availAddr: GUEST_BASE, usedAddr: GUEST_BASE + 0x1000 }));
  const k = openFd();
  // Without VHOST_USER_F_PROTOCOL_FEATURES the kick alone enables the ring.
  await tt.rejects(send(s, Request.SetVringKick, vringFdPayload(0, false), [k]), /descriptor table .* does not lie inside one memory region/);
  tt.same(be.calls, []);
  await s.close();
  tt.ok(!isOpen(r) && !isOpen(k), 'adopted fds closed by close()');
});

t.test('ring without protocol features starts on its kick; polling kick', async (tt) => {
  const be = new FakeBackend(1);
  const s = new VhostUserSession(be, quiet);
  await send(s, Request.SetFeatures, u64Payload(F_VERSION_1));
  const r = openFd();
  await send(s, Request.SetMemTable, memTablePayload([HIGH]), [r]);
  await send(s, Request.SetVringNum, vringStatePayload(0, 256));
  await send(s, Request.SetVringAddr, vringAddrPayload(ringAddr(0)));
  tt.same(be.calls, []);
  await send(s, Request.SetVringKick, vringFdPayload(0, true));
  tt.same(be.calls, ['start(0)']);
  tt.equal(be.starts[0].queues[0].kickFd, -1, 'no fd: the engine polls');
  tt.equal(be.starts[0].queues[0].callFd, -1);
  await s.close();
  tt.notOk(isOpen(r));
});

t.test('start failure propagates; close still closes fds', async (tt) => {
  const be = new FakeBackend(1);
  be.failStart = true;
  const s = new VhostUserSession(be, quiet);
  await send(s, Request.SetFeatures, u64Payload(F_VERSION_1));
  const r = openFd();
  await send(s, Request.SetMemTable, memTablePayload([HIGH]), [r]);
  await send(s, Request.SetVringNum, vringStatePayload(0, 256));
  await send(s, Request.SetVringAddr, vringAddrPayload(ringAddr(0)));
  const k = openFd();
  await tt.rejects(send(s, Request.SetVringKick, vringFdPayload(0, false), [k]), /engine refused/);
  await s.close();
  tt.same(be.calls, [], 'never started, never stopped');
  tt.ok(!isOpen(r) && !isOpen(k));
});

t.test('SET/GET_STATUS and RESET_DEVICE', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  await send(s, Request.SetStatus, u64Payload(0x0f));
  tt.equal(u64(await send(s, Request.GetStatus)), 0x0fn);
  be.calls = [];
  await send(s, Request.ResetDevice);
  tt.same(be.calls, ['stop'], 'reset stops the device');
  tt.ok([...fds.regions, ...fds.kick, ...fds.call, ...fds.err].every((fd) => !isOpen(fd)), 'ring and memory fds closed');
  tt.ok(isOpen(fds.backendReq), 'the back-end request channel stays');
  tt.equal(u64(await send(s, Request.GetStatus)), 0n);
  await s.close();
  tt.notOk(isOpen(fds.backendReq));
});

/** A backend that offers INFLIGHT_SHMFD (bit 12), as the blk model does. */
class InflightBackend extends FakeBackend {
  override readonly protocolFeatures = PROTO_ALL | (1n << 12n);
}

/** As send(), but the reply may carry fds (GET_INFLIGHT_FD). */
async function sendFds(s: VhostUserSession, request: number, payload: Uint8Array, fds: number[] = []): Promise<{ payload: Uint8Array | null; fds: number[] }> {
  const bytes = encodeRequest(request, payload, false);
  const msg = decodeMessage(decodeHeader(bytes), bytes.subarray(12), fds);
  const result = await s.handle(msg);
  for (const e of result.effects) if (e.kind === 'close') for (const f of e.fds) f.close();
  return { payload: result.reply === null ? null : result.reply.subarray(12), fds: result.fds };
}

function inflightMsg(size: number, off: number, nq: number, qs: number): Uint8Array {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(BigInt(size), 0);
  b.writeBigUInt64LE(BigInt(off), 8);
  b.writeUInt16LE(nq, 16);
  b.writeUInt16LE(qs, 18);
  return b;
}

function memfd(size: number): number {
  const fd = native.memfdCreate('test-inflight', 0);
  native.ftruncate(fd, size);
  return fd;
}

t.test('INFLIGHT_SHMFD: GET_INFLIGHT_FD makes a region, SET_INFLIGHT_FD hands it to the device, bad regions are refused', async (tt) => {
  const be = new InflightBackend();
  const s = new VhostUserSession(be, quiet);
  await send(s, Request.SetProtocolFeatures, u64Payload(PROTO_ALL | (1n << 12n)));
  const got = await sendFds(s, Request.GetInflightFd, inflightMsg(0, 0, 2, 128));
  tt.equal(got.fds.length, 1, 'the region fd rides on the reply');
  const p = Buffer.from(got.payload as Uint8Array);
  tt.equal(p.readBigUInt64LE(0), 2n * 2112n, 'mmap_size: 2 queues of 128');
  tt.equal(p.readBigUInt64LE(8), 0n, 'mmap_offset');
  tt.equal(p.readUInt16LE(16), 2);
  tt.equal(p.readUInt16LE(18), 128);
  tt.equal(fs.fstatSync(got.fds[0]).size, 2 * 2112, 'a zero-filled memfd of that size');
  tt.ok(isOpen(got.fds[0]), 'kept open until the reply is sent');
  // QEMU sends it back (its own copy: here a dup).
  const back = native.dup(got.fds[0]);
  await sendFds(s, Request.SetInflightFd, inflightMsg(2 * 2112, 0, 2, 128), [back]);
  tt.notOk(isOpen(got.fds[0]), "the session's copy is closed with the next message");
  tt.ok(isOpen(back), 'the region given back is kept');

  // Bad regions: refused (the connection closes), their fd closed.
  const refuse = async (payload: Uint8Array, fdSize: number, match: RegExp, what: string) => {
    const fd = memfd(fdSize);
    await tt.rejects(sendFds(s, Request.SetInflightFd, payload, [fd]), match, what);
    tt.notOk(isOpen(fd), `${what}: fd closed`);
  };
  await refuse(inflightMsg(100, 0, 2, 128), 4224, /smaller than 4224/, 'mmap_size too small for the layout');
  await refuse(inflightMsg(1 << 24, 0, 2, 128), 1 << 24, /not the layout/, 'mmap_size far larger than the layout');
  await refuse(inflightMsg(4224, 0, 2, 128), 100, /needs bytes up to 4224/, 'fd shorter than the region');
  await refuse(inflightMsg(4224, 100, 2, 128), 8192, /page aligned/, 'offset not page aligned');
  await refuse(inflightMsg(4224, 0, 0, 128), 4224, /num_queues 0/, 'no queues');
  await refuse(inflightMsg(4224, 0, 5, 128), 1 << 16, /num_queues 5 is not in 1..4/, 'more queues than the device');
  await refuse(inflightMsg(4224, 0, 2, 0), 4224, /queue_size 0/, 'queue size 0');
  await tt.rejects(sendFds(s, Request.GetInflightFd, inflightMsg(0, 0, 9, 128)), /num_queues 9/, 'GET with too many queues');
  await s.close();
  tt.notOk(isOpen(back), 'close closes the region fd');

  // Not negotiated: refused.
  const s2 = new VhostUserSession(new InflightBackend(), quiet);
  await send(s2, Request.SetProtocolFeatures, u64Payload(PROTO_ALL));
  await tt.rejects(sendFds(s2, Request.GetInflightFd, inflightMsg(0, 0, 2, 128)), /not negotiated/);
  const fd = memfd(4224);
  await tt.rejects(sendFds(s2, Request.SetInflightFd, inflightMsg(4224, 0, 2, 128), [fd]), /not negotiated/);
  tt.notOk(isOpen(fd));
  await s2.close();
});

t.test('INFLIGHT_SHMFD: the device starts with the region; a new region restarts it, the old fd closed after the stop', async (tt) => {
  const be = new InflightBackend();
  const s = new VhostUserSession(be, quiet);
  await send(s, Request.SetProtocolFeatures, u64Payload(PROTO_ALL | (1n << 12n)));
  const r1 = memfd(4224);
  await sendFds(s, Request.SetInflightFd, inflightMsg(4224, 0, 2, 128), [r1]);
  await send(s, Request.SetFeatures, u64Payload(F_VERSION_1 | F_PROTOCOL));
  const region = openFd();
  await send(s, Request.SetMemTable, memTablePayload([HIGH]), [region]);
  await send(s, Request.SetVringNum, vringStatePayload(0, 128));
  await send(s, Request.SetVringAddr, vringAddrPayload(ringAddr(0)));
  const kick = openFd();
  await send(s, Request.SetVringKick, vringFdPayload(0, false), [kick]);
  await send(s, Request.SetVringEnable, vringStatePayload(0, 1));
  tt.same(be.calls, ['start(0)']);
  tt.same(be.starts[0].inflight, { fd: r1, mmapOffset: 0, sizeBytes: 4224, queueSize: 128, numQueues: 2 });
  be.watch = [r1];
  const r2 = memfd(4224);
  await sendFds(s, Request.SetInflightFd, inflightMsg(4224, 0, 2, 128), [r2]);
  tt.same(be.calls, ['start(0)', 'stop', 'start(0)'], 'stopped off the old region, started on the new one');
  tt.same(be.openAtCall, [[true]], 'the old region was open through the stop');
  tt.notOk(isOpen(r1), 'and closed after it');
  tt.equal(be.starts[1].inflight?.fd, r2);
  // RESET_DEVICE forgets the region (a reset driver has nothing in flight).
  await send(s, Request.ResetDevice);
  tt.notOk(isOpen(r2));
  await s.close();
  tt.ok([region, kick].every((fd) => !isOpen(fd)));
});
