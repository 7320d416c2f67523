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
import type { StopResult } from '../../engine/control';
import type { Logger } from '../../reactor/log';
import type { DeviceRunState, VhostBackend } from '../../reactor/vhost-user/backend';
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
import { VhostUserSession } from '../../reactor/vhost-user/session';

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
const BLK_FEATURES = F_VERSION_1 | F_PROTOCOL | (1n << 28n) | (1n << 29n) | (1n << 12n) | (1n << 9n) | (1n << 6n);

class FakeBackend implements VhostBackend {
  readonly name = 'fake0';
  readonly features = BLK_FEATURES;
  readonly protocolFeatures = PROTO_ALL;
  calls: string[] = [];
  starts: DeviceRunState[] = [];
  running: DeviceRunState | null = null;
  /** fds whose openness is recorded at each stop(), to prove replaced fds live through the stop. */
  watch: number[] = [];
  openAtStop: boolean[][] = [];
  /** Each stop reports lastAvailIdx = started value + this. */
  advance = 7;
  connected: boolean[] = [];
  failStart = false;

  constructor(readonly maxQueues = 4) {}

  readConfig(size: number): Uint8Array {
    const b = new Uint8Array(Math.max(size, 60));
    for (let i = 0; i < b.length; i++) b[i] = (i * 7 + 3) & 0xff;
    return b;
  }

  async start(state: DeviceRunState): Promise<void> {
    if (this.running) throw new Error('start while running');
    if (this.failStart) throw new Error('engine refused');
    this.calls.push(`start(${state.queues.map((q) => q.index).join(',')})`);
    this.starts.push(structuredClone(state));
    this.running = state;
  }

  async stop(): Promise<StopResult> {
    if (!this.running) throw new Error('stop while stopped');
    this.calls.push('stop');
    this.openAtStop.push(this.watch.map(isOpen));
    const r = { queues: this.running.queues.map((q) => ({ index: q.index, lastAvailIdx: q.lastAvailIdx + this.advance })) };
    this.running = null;
    return r;
  }

  connectionChanged(connected: boolean): void {
    this.connected.push(connected);
  }
}

const quiet: Logger = { error() {}, warn() {}, notice() {}, info() {}, debug() {} };

/** Encode, decode (through the real codec) and handle one request. */
async function send(
  s: VhostUserSession,
  request: number,
  payload: Uint8Array = new Uint8Array(0),
  fds: number[] = [],
  needReply = false,
): Promise<{ request: number; payload: Uint8Array } | null> {
  const bytes = encodeRequest(request, payload, needReply);
  const h = decodeHeader(bytes);
  const msg = decodeMessage(h, bytes.subarray(12), fds);
  const reply = await s.handle(msg);
  if (reply === null) return null;
  const rh = decodeReplyHeader(reply);
  t.equal(rh.size, reply.byteLength - 12, 'reply size matches');
  return { request: rh.request, payload: reply.subarray(12) };
}

function u64(r: { payload: Uint8Array } | null): bigint {
  if (!r) throw new Error('no reply');
  return Buffer.from(r.payload).readBigUInt64LE(0);
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
  tt.same(be.calls, ['start(0)'], 'queue 0 ready: start');
  await send(s, Request.SetVringEnable, vringStatePayload(1, 1));
  tt.same(be.calls, ['start(0)', 'stop', 'start(0,1)'], 'queue 1 ready: restart with both');
  // QEMU enables every queue, also those that never got addresses: not ready, nothing changes.
  await send(s, Request.SetVringEnable, vringStatePayload(2, 1));
  await send(s, Request.SetVringEnable, vringStatePayload(3, 1));
  tt.same(be.calls, ['start(0)', 'stop', 'start(0,1)'], 'queues without addresses change nothing');
  return { s, be, fds };
}

function allFds(f: Setup['fds']): number[] {
  return [f.backendReq, ...f.call, ...f.err, ...f.kick, ...f.regions];
}

t.test('QEMU 7.2 vhost-user-blk sequence starts the device with both queues', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  const st = be.starts[be.starts.length - 1];
  tt.equal(st.features, F_VERSION_1 | F_PROTOCOL | (1n << 29n) | (1n << 12n));
  tt.same(
    st.regions.map((r) => [r.fd, r.guestPhysAddr, r.sizeBytes, r.userAddr, r.mmapOffset]),
    [
      [fds.regions[0], 0, 0xa0000, GUEST_BASE, 0],
      [fds.regions[1], 0x100000, 0x3ff0_0000, GUEST_BASE + 0x100000, 0x100000],
    ],
  );
  tt.same(st.queues, [
    { ...ringAddr(0), size: 128, lastAvailIdx: 0, kickFd: fds.kick[0], callFd: fds.call[0] },
    // The restart carries what the first stop reported for queue 0, and queue 1's SET_VRING_BASE.
    { ...ringAddr(1), size: 128, lastAvailIdx: 10, kickFd: fds.kick[1], callFd: fds.call[1] },
  ].map((q, i) => (i === 0 ? { ...q, lastAvailIdx: 7 } : q)));
  tt.ok(allFds(fds).every(isOpen), 'every fd still open while running');
  await s.close();
  tt.same(be.calls.slice(-1), ['stop'], 'close stops the device');
  tt.ok(allFds(fds).every((fd) => !isOpen(fd)), 'close closed every fd');
  await s.close();
  tt.same(be.calls.slice(-1), ['stop'], 'second close is a no-op');
});

t.test('GET_VRING_BASE stops the ring and answers the avail index stop reported', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  be.calls = [];
  be.advance = 100;
  const r0 = await send(s, Request.GetVringBase, vringStatePayload(0, 0));
  tt.equal(r0?.request, Request.GetVringBase);
  // queue 0 ran from 7 (the first stop) and the fake advances by 100.
  tt.same(Buffer.from(r0!.payload), Buffer.from(vringStatePayload(0, 107)));
  tt.same(be.calls, ['stop', 'start(1)'], 'stopped, restarted with the remaining ready queue');
  tt.notOk(isOpen(fds.kick[0]), 'stopped ring: its kick fd is closed after the stop');
  const r1 = await send(s, Request.GetVringBase, vringStatePayload(1, 0));
  // queue 1: 10 → +100 (restart) → +100 (this stop).
  tt.same(Buffer.from(r1!.payload), Buffer.from(vringStatePayload(1, 210)));
  tt.same(be.calls, ['stop', 'start(1)', 'stop'], 'last ring stopped: device stays stopped');
  // A ring that is not running answers its recorded index without touching the device.
  const again = await send(s, Request.GetVringBase, vringStatePayload(1, 0));
  tt.same(Buffer.from(again!.payload), Buffer.from(vringStatePayload(1, 210)));
  tt.equal(be.calls.length, 3);
  // Restart of queue 1 needs a new kick: then it runs from 210.
  const k = openFd();
  await send(s, Request.SetVringKick, vringFdPayload(1, false), [k]);
  tt.same(be.calls.slice(3), ['start(1)']);
  tt.equal(be.starts[be.starts.length - 1].queues[0].lastAvailIdx, 210);
  await s.close();
  tt.notOk(isOpen(k));
});

t.test('QEMU stop order: SET_VRING_ENABLE 0 then GET_VRING_BASE', async (tt) => {
  const { s, be } = await qemuSequence(tt);
  be.calls = [];
  for (let i = 0; i < 4; i++) await send(s, Request.SetVringEnable, vringStatePayload(i, 0));
  tt.same(be.calls, ['stop', 'start(1)', 'stop'], 'disabling queues stops them');
  const r0 = await send(s, Request.GetVringBase, vringStatePayload(0, 0));
  const r1 = await send(s, Request.GetVringBase, vringStatePayload(1, 0));
  tt.same(Buffer.from(r0!.payload), Buffer.from(vringStatePayload(0, 14)));
  tt.same(Buffer.from(r1!.payload), Buffer.from(vringStatePayload(1, 24)));
  tt.equal(be.calls.length, 3, 'no further stop/start');
  await s.close();
});

t.test('memory table swap while running: stop, swap, start; old fds closed after the stop', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  be.calls = [];
  be.openAtStop = [];
  be.watch = [...fds.regions];
  const fresh = [openFd(), openFd()];
  const moved: WireRegion = { ...HIGH, mmapOffset: 0x200000 };
  tt.equal(u64(await send(s, Request.SetMemTable, memTablePayload([LOW, moved]), fresh, true)), 0n, 'ack');
  tt.same(be.calls, ['stop', 'start(0,1)']);
  tt.same(be.openAtStop, [[true, true]], 'old region fds were open during the stop');
  tt.ok(fds.regions.every((fd) => !isOpen(fd)), 'old region fds closed after it');
  tt.ok(fresh.every(isOpen));
  const st = be.starts[be.starts.length - 1];
  tt.same(st.regions.map((r) => r.fd), fresh);
  tt.equal(st.regions[1].mmapOffset, 0x200000);
  await s.close();
  tt.ok(fresh.every((fd) => !isOpen(fd)));
});

t.test('call fd replacement while running', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  be.calls = [];
  be.openAtStop = [];
  be.watch = [fds.call[1]];
  const c = openFd();
  await send(s, Request.SetVringCall, vringFdPayload(1, false), [c]);
  tt.same(be.calls, ['stop', 'start(0,1)']);
  tt.same(be.openAtStop, [[true]], 'old call fd open during the stop');
  tt.notOk(isOpen(fds.call[1]), 'old call fd closed after the stop');
  tt.equal(be.starts[be.starts.length - 1].queues[1].callFd, c);
  // The new call fd is signalled once (completions signalled on the old one must not be lost).
  const file = `/tmp/vhostd-session-test-${process.pid}`;
  const sig = fs.openSync(file, 'w+');
  fs.unlinkSync(file);
  await send(s, Request.SetVringCall, vringFdPayload(1, false), [sig]);
  const got = Buffer.alloc(16);
  tt.equal(fs.readSync(sig, got, 0, 16, 0), 8, 'one 8-byte eventfd write');
  tt.equal(got.readBigUInt64LE(0), 1n, 'value 1');
  tt.notOk(isOpen(c), 'previous call fd closed');
  // "no fd" call: the queue runs without interrupts.
  await send(s, Request.SetVringCall, vringFdPayload(1, true));
  tt.notOk(isOpen(sig));
  tt.equal(be.starts[be.starts.length - 1].queues[1].callFd, -1);
  // An err fd replacement does not touch the device.
  be.calls = [];
  const e = openFd();
  await send(s, Request.SetVringErr, vringFdPayload(0, false), [e]);
  tt.same(be.calls, []);
  tt.notOk(isOpen(fds.err[0]));
  await s.close();
  tt.notOk(isOpen(e));
});

t.test('ADD_MEM_REG / REM_MEM_REG', async (tt) => {
  const { s, be, fds } = await qemuSequence(tt);
  be.calls = [];
  const extra: WireRegion = { guestPhysAddr: 0x1_0000_0000, sizeBytes: 0x1000_0000, userAddr: GUEST_BASE + 0x1_0000_0000, mmapOffset: 0x4000_0000 };
  const x = openFd();
  await send(s, Request.AddMemReg, memRegionPayload(extra), [x]);
  tt.same(be.calls, ['stop', 'start(0,1)'], 'added region: restart');
  tt.equal(be.starts[be.starts.length - 1].regions.length, 3);
  be.watch = [x];
  tt.equal(u64(await send(s, Request.RemMemReg, memRegionPayload({ ...extra, mmapOffset: 0 }), [], true)), 0n, 'removed (mmap offset ignored)');
  tt.same(be.openAtStop[be.openAtStop.length - 1], [true], 'removed region fd open during the stop');
  tt.notOk(isOpen(x), 'and closed after it');
  tt.equal(be.starts[be.starts.length - 1].regions.length, 2);
  // Unknown region with REPLY_ACK: a non-zero ack, the session survives.
  const n = be.calls.length;
  tt.not(u64(await send(s, Request.RemMemReg, memRegionPayload(extra), [], true)), 0n, 'unknown region: failure ack');
  tt.equal(be.calls.length, n, 'device untouched');
  // Removing the region that holds the rings does not kill the session: the queues are held back.
  await send(s, Request.RemMemReg, memRegionPayload(HIGH));
  tt.notOk(isOpen(fds.regions[1]));
  tt.equal(be.running, null, 'no ring fits: device stopped');
  const h = openFd();
  await send(s, Request.AddMemReg, memRegionPayload(HIGH), [h]);
  tt.same(be.calls.slice(-1), ['start(0,1)'], 'memory back: rings run again');
  await s.close();
  tt.notOk(isOpen(h));
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
  const part = await send(s, Request.GetConfig, configPayload(20, 4, 1));
  const q = Buffer.from(part!.payload);
  tt.same([q.readUInt32LE(0), q.readUInt32LE(4), q.readUInt32LE(8)], [20, 4, 1]);
  tt.same(q.subarray(12), Buffer.from(be.readConfig(24).subarray(20, 24)));
  await send(s, Request.SetProtocolFeatures, u64Payload(PROTO_ALL));
  tt.equal(u64(await send(s, Request.SetConfig, configPayload(32, 1, 0, new Uint8Array([1])), [], true)), 0n, 'SET_CONFIG acked');
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
