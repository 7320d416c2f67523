/**
 * The virtio-scsi transport (engine/virtio-scsi/model.ts) against driver-side
 * mock queues: control queue 0, event queue 1, request queue 2, each a
 * MockVring in its own guest region, over the real bdev layer with null and
 * malloc bdevs. Commands, LUN addressing, transport responses, bad input,
 * task management, AN, hot-plug events and capacity change events.
 */
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { WorkerBdevLayer } from '../../engine/bdev/layer';
import { BDEV_MODULES } from '../../engine/bdev/modules';
import { type BdevDesc, type DeviceDesc, DeviceStat, type ModelOp } from '../../engine/control';
import { GuestMemory } from '../../engine/memory';
import type { VirtioDevice } from '../../engine/virtio/device';
import { createScsiDevice, type VscsiTask } from '../../engine/virtio-scsi/model';
import { type Buf, F_EVENT_IDX, F_INDIRECT, F_VERSION_1, MockVring } from '../lib/mock-vring';
import { be16, be32, be64, cdb } from '../lib/scsi';

const F_HOTPLUG = 1n << 1n;
const F_CHANGE = 1n << 2n;
const FEATURES = F_VERSION_1 | F_INDIRECT | F_EVENT_IDX | F_HOTPLUG | F_CHANGE;
const REQ = 51;
const RESP = 108;

function malloc(name: string, blocks: number): BdevDesc & { storage: Uint8Array } {
  const storage = new SharedArrayBuffer(512 * blocks);
  return { name, module: 'malloc', blockSize: 512, numBlocks: blocks, params: { storage }, storage: new Uint8Array(storage) };
}

function harness(opts: { features?: bigint; targets?: number[] } = {}) {
  const ctrl = new MockVring({ size: 16, gpa: 0x10000, memBytes: 1 << 20 });
  const evq = new MockVring({ size: 16, gpa: 0x1000_0000, memBytes: 1 << 20 });
  const rq = new MockVring({ size: 64, gpa: 0x2000_0000, memBytes: 4 << 20 });
  const mem = () =>
    GuestMemory.fromBuffers([
      { guestPhysAddr: ctrl.gpa, buffer: ctrl.buffer },
      { guestPhysAddr: evq.gpa, buffer: evq.buffer },
      { guestPhysAddr: rq.gpa, buffer: rq.buffer },
    ]);
  const layer = new WorkerBdevLayer(new Map(BDEV_MODULES));
  const disk0 = malloc('Malloc0', 256);
  const statsBuf = new SharedArrayBuffer(DeviceStat.Count * 8);
  const targets = opts.targets ?? [0];
  const desc: DeviceDesc = {
    id: 1,
    name: 'vhost.0',
    features: opts.features ?? FEATURES,
    model: { kind: 'scsi', targets: targets.map((target) => ({ target, bdev: 0, identifier: 'uuid-0' })) },
    bdevs: [disk0],
    regions: [],
    queues: [
      { ...ctrl.queueDesc(0), callFd: 40 },
      { ...evq.queueDesc(1), callFd: 41 },
      { ...rq.queueDesc(2), callFd: 42 },
    ],
    stats: statsBuf,
  };
  const dev = createScsiDevice(desc, { signal: () => {}, mapMemory: mem, bdevs: layer }) as VirtioDevice<VscsiTask>;
  const step = () => dev.poll(performance.now()) + layer.poll(performance.now()) + dev.poll(performance.now());
  const settle = () => {
    for (let i = 0; i < 20; i++) step();
  };
  return { ctrl, evq, rq, dev, layer, disk0, stats: new Float64Array(statsBuf), step, settle };
}

type H = ReturnType<typeof harness>;

interface CmdOptions {
  target?: number;
  lunBytes?: number[];
  out?: Uint8Array;
  inLen?: number;
  /** Bytes of the request header given (default 51). */
  reqLen?: number;
  respLen?: number;
  /** Data buffers of both directions. */
  both?: boolean;
}

/** Queue a command on the request queue; returns a reader of its response. */
function submit(h: H, c: number[], o: CmdOptions = {}) {
  const vr = h.rq;
  const reqLen = o.reqLen ?? REQ;
  const req = vr.alloc(Math.max(reqLen, REQ), 0);
  const b = vr.at(req, REQ);
  b.set(o.lunBytes ?? [1, o.target ?? 0, 0x40, 0, 0, 0, 0, 0], 0);
  b.set(c, 19);
  const bufs: Buf[] = [{ addr: req, len: reqLen }];
  if (o.out) {
    const a = vr.alloc(o.out.length);
    vr.at(a, o.out.length).set(o.out);
    bufs.push({ addr: a, len: o.out.length });
  }
  const respLen = o.respLen ?? RESP;
  const resp = vr.alloc(respLen, 0xcc);
  bufs.push({ addr: resp, len: respLen, write: true });
  let din = 0;
  if (o.inLen) {
    din = vr.alloc(o.inLen, 0xee);
    bufs.push({ addr: din, len: o.inLen, write: true });
  }
  if (o.both) {
    const a = vr.alloc(512);
    bufs.splice(1, 0, { addr: a, len: 512 });
  }
  const head = vr.addChain(bufs);
  return {
    head,
    resp: () => {
      const r = vr.at(resp, Math.min(respLen, RESP));
      const v = new DataView(r.buffer, r.byteOffset, r.byteLength);
      return {
        senseLen: v.getUint32(0, true),
        residual: v.getUint32(4, true),
        status: r[10],
        response: r[11],
        sense: [r[12 + 2] & 0x0f, r[12 + 12], r[12 + 13]],
      };
    },
    data: () => (o.inLen ? vr.at(din, o.inLen) : new Uint8Array(0)),
  };
}

/** Submit, settle, and return the used element with the response. */
function run(h: H, c: number[], o: CmdOptions = {}) {
  const s = submit(h, c, o);
  h.settle();
  const used = h.rq.readUsed();
  const mine = used.find((u) => u.id === s.head);
  if (!mine) throw new Error(`command ${c[0].toString(16)} not completed`);
  return { len: mine.len, ...s.resp(), data: s.data() };
}

/** Clear the power-on unit attention of a target. */
function clearUa(h: H, target = 0): void {
  run(h, cdb.tur(), { target });
}

t.test('INQUIRY, READ CAPACITY, WRITE 16 / READ 16 through the transport', async (t) => {
  const h = harness();
  const inq = run(h, cdb.inquiry(false, 0, 96), { inLen: 96 });
  t.equal(inq.response, 0);
  t.equal(inq.status, 0);
  t.equal(inq.data[0], 0x00, 'direct-access block device');
  t.equal(Buffer.from(inq.data.subarray(8, 14)).toString(), 'VHOSTD');
  t.equal(inq.len, RESP + 36, 'used length: response + the 36 bytes of standard INQUIRY data');
  t.equal(inq.residual, 60, 'residual: the rest of the buffer');

  const ua = run(h, cdb.tur());
  t.equal(ua.status, 2, 'first command of the nexus: CHECK CONDITION');
  t.same(ua.sense, [6, 0x29, 0x00], 'POWER ON, RESET unit attention');
  t.equal(ua.senseLen, 18);
  t.equal(run(h, cdb.tur()).status, 0);

  const cap = run(h, cdb.readCapacity16(32), { inLen: 32 });
  t.equal(cap.status, 0);
  t.equal(Number(new DataView(cap.data.buffer, cap.data.byteOffset).getBigUint64(0)), 255, 'last LBA');

  const data = new Uint8Array(4096).map((_, i) => (i * 7 + 3) & 0xff);
  const w = run(h, cdb.write16(8, 8), { out: data });
  t.equal(w.status, 0);
  t.equal(w.response, 0);
  t.equal(w.len, RESP);
  t.same(h.disk0.storage.subarray(8 * 512, 16 * 512), data, 'on the bdev');
  const r = run(h, cdb.read16(8, 8), { inLen: 4096 });
  t.equal(r.status, 0);
  t.equal(r.residual, 0);
  t.same(r.data, data, 'read back');
  t.equal(h.stats[DeviceStat.ReadOps], 1);
  t.equal(h.stats[DeviceStat.WriteOps], 1);
  t.equal(h.stats[DeviceStat.WriteBytes], 4096);

  // Underrun: a buffer longer than the transfer is reported as residual.
  const under = run(h, cdb.read10(0, 1), { inLen: 1024 });
  t.equal(under.status, 0);
  t.equal(under.response, 0);
  t.equal(under.residual, 512, 'residual: buffer bytes not used');
  t.equal(under.len, RESP + 512);
});

t.test('LUN addressing: BAD_TARGET, missing LUN, unsupported formats', async (t) => {
  const h = harness({ targets: [0, 5] });
  t.equal(run(h, cdb.tur(), { target: 3 }).response, 3, 'absent target: BAD_TARGET');
  t.equal(run(h, cdb.tur(), { target: 8 }).response, 3, 'target 8: BAD_TARGET');
  t.equal(run(h, cdb.tur(), { target: 255 }).response, 3, 'target 255: BAD_TARGET');
  t.equal(run(h, cdb.tur(), { lunBytes: [0, 0, 0x40, 0, 0, 0, 0, 0] }).response, 3, 'lun[0] != 1: BAD_TARGET');
  const five = run(h, cdb.inquiry(false, 0, 36), { target: 5, inLen: 36 });
  t.equal(five.response, 0);
  t.equal(five.status, 0, 'target 5 is there');

  clearUa(h);
  const lun1 = run(h, cdb.tur(), { lunBytes: [1, 0, 0x40, 1, 0, 0, 0, 0] });
  t.equal(lun1.response, 0);
  t.equal(lun1.status, 2);
  t.same(lun1.sense, [5, 0x25, 0], 'LUN 1: LOGICAL UNIT NOT SUPPORTED');
  const inq1 = run(h, cdb.inquiry(false, 0, 36), { lunBytes: [1, 0, 0x40, 1, 0, 0, 0, 0], inLen: 36 });
  t.equal(inq1.data[0], 0x7f, 'INQUIRY to a missing LUN: qualifier 3, type 1Fh');
  t.equal(run(h, cdb.tur(), { lunBytes: [1, 0, 0x00, 0, 0, 0, 0, 0] }).status, 0, 'peripheral addressing of LUN 0');
  t.same(run(h, cdb.tur(), { lunBytes: [1, 0, 0x80, 0, 0, 0, 0, 0] }).sense, [5, 0x25, 0], 'extended addressing: not supported');
  t.same(run(h, cdb.tur(), { lunBytes: [1, 0, 0x40, 0, 1, 0, 0, 0] }).sense, [5, 0x25, 0], 'second level: not supported');
  t.same(run(h, cdb.tur(), { lunBytes: [1, 0, 0x01, 0, 0, 0, 0, 0] }).sense, [5, 0x25, 0], 'peripheral bus 1: not supported');
  const luns = run(h, cdb.reportLuns(64), { inLen: 64 });
  t.equal(luns.status, 0);
  t.same([...luns.data.subarray(0, 16)], [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 'REPORT LUNS: LUN 0 only');
});

t.test('bad input: short header, no room for the response, both directions, short and wrong-way buffers', async (t) => {
  const h = harness();
  clearUa(h);
  const short = run(h, cdb.tur(), { reqLen: 40 });
  t.equal(short.response, 9, 'short cmd_req: VIRTIO_SCSI_S_FAILURE');
  t.equal(short.len, RESP);
  const noRoom = run(h, cdb.tur(), { respLen: 100 });
  t.equal(noRoom.len, 0, 'response area too small: used length 0');
  const both = run(h, cdb.read10(0, 1), { inLen: 512, both: true });
  t.equal(both.response, 9, 'data-out and data-in: FAILURE (INOUT not offered)');
  const over = run(h, cdb.read10(0, 8), { inLen: 1024 });
  t.equal(over.response, 1, 'buffers shorter than the transfer: OVERRUN');
  t.equal(over.status, 2);
  t.equal(over.residual, 4096 - 1024);
  const wrong = run(h, cdb.read10(0, 1), { out: new Uint8Array(512) });
  t.equal(wrong.status, 2, 'READ with data-out buffers');
  t.same(wrong.sense, [5, 0x24, 0]);
  const unknown = run(h, [0xc7, 0, 0, 0, 0, 0]);
  t.equal(unknown.status, 2);
  t.same(unknown.sense, [5, 0x20, 0], 'unknown opcode: INVALID COMMAND OPERATION CODE');
  const range = run(h, cdb.read16(256, 1), { inLen: 512 });
  t.same(range.sense, [5, 0x21, 0], 'LBA OUT OF RANGE');
  t.ok(h.stats[DeviceStat.ErrorOps] >= 6);
  // Still serving.
  t.equal(run(h, cdb.tur()).status, 0);
});

/** Queue a control request; returns its writable area. */
function control(h: H, readable: number[], writable: number) {
  const vr = h.ctrl;
  const a = vr.alloc(readable.length);
  vr.at(a, readable.length).set(readable);
  const w = vr.alloc(Math.max(writable, 1), 0xcc);
  const bufs: Buf[] = [{ addr: a, len: readable.length }];
  if (writable > 0) bufs.push({ addr: w, len: writable, write: true });
  const head = vr.addChain(bufs);
  h.settle();
  const used = vr.readUsed().find((u) => u.id === head);
  return { len: used?.len ?? -1, bytes: vr.at(w, Math.max(writable, 1)) };
}

const le32 = (n: number): number[] => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff];
const tmf = (subtype: number, target = 0): number[] => [...le32(0), ...le32(subtype), 1, target, 0x40, 0, 0, 0, 0, 0, ...le32(0), ...le32(0)];

t.test('control queue: TMFs and asynchronous notification', async (t) => {
  const h = harness();
  clearUa(h);
  const reset = control(h, tmf(5), 1);
  t.equal(reset.len, 1);
  t.equal(reset.bytes[0], 0, 'LOGICAL UNIT RESET: FUNCTION COMPLETE');
  t.same(run(h, cdb.tur()).sense, [6, 0x29, 0x03], 'the reset raised its unit attention');
  t.equal(control(h, tmf(4), 1).bytes[0], 0, 'I_T NEXUS RESET: FUNCTION COMPLETE');
  t.same(run(h, cdb.tur()).sense, [6, 0x29, 0x07], 'I_T NEXUS LOSS OCCURRED');
  t.equal(control(h, tmf(0), 1).bytes[0], 2, 'ABORT TASK: ABORTED (as SPDK)');
  t.equal(control(h, tmf(1), 1).bytes[0], 2, 'ABORT TASK SET: ABORTED');
  t.equal(control(h, tmf(99), 1).bytes[0], 11, 'unknown subtype: FUNCTION REJECTED');
  t.equal(control(h, tmf(5, 4), 1).bytes[0], 3, 'absent target: BAD_TARGET');
  t.equal(control(h, tmf(5).slice(0, 20), 1).len, 0, 'short TMF: used length 0');
  t.equal(control(h, tmf(5), 0).len, 0, 'TMF without a response byte: used length 0');
  const an = control(h, [...le32(1), 1, 0, 0x40, 0, 0, 0, 0, 0, ...le32(0xff)], 5);
  t.equal(an.len, 5);
  t.same([...an.bytes.subarray(0, 5)], [0, 0, 0, 0, 0], 'AN query: no events, OK');
  const sub = control(h, [...le32(2), 1, 0, 0x40, 0, 0, 0, 0, 0, ...le32(0xff)], 5);
  t.same([...sub.bytes.subarray(0, 5)], [0, 0, 0, 0, 0], 'AN subscribe: no events, OK');
  t.equal(control(h, [...le32(7), 0, 0, 0, 0], 8).len, 0, 'unknown control type: used length 0');
  t.equal(run(h, cdb.tur()).status, 0, 'requests still served');
});

/** Post one event buffer; returns a reader. */
function eventBuffer(h: H, len = 16) {
  const a = h.evq.alloc(len, 0xcc);
  const head = h.evq.addChain([{ addr: a, len, write: true }]);
  return { head, bytes: () => h.evq.at(a, len) };
}

/** Applies a model op the way the poller does (begin, poll until ready, finish); the error, or null. */
async function ctl(h: H, op: ModelOp): Promise<Error | null> {
  try {
    h.dev.beginModelOp(op);
    for (let i = 0; i < 50 && !h.dev.modelOpReady(op); i++) h.step();
    if (!h.dev.modelOpReady(op)) return new Error('model op never became ready');
    h.dev.finishModelOp(op);
    return null;
  } catch (err) {
    return err as Error;
  }
}

t.test('hot-plug: RESCAN and REMOVED events, outstanding I/O on a removed target, capacity change', async (t) => {
  const h = harness();
  const bufs = [eventBuffer(h), eventBuffer(h)];
  h.settle();
  t.same(h.evq.readUsed(), [], 'event buffers are held only when there is an event');
  t.equal(h.dev.inflight, 0, 'and are never in flight');

  const disk2 = malloc('Malloc2', 64);
  t.equal(await ctl(h, { kind: 'scsiAddTarget', target: 2, bdev: disk2, identifier: 'uuid-2' }), null);
  h.settle();
  let used = h.evq.readUsed();
  t.equal(used.length, 1);
  t.equal(used[0].len, 16);
  const ev = new DataView(bufs[0].bytes().buffer, bufs[0].bytes().byteOffset, 16);
  t.equal(ev.getUint32(0, true), 1, 'TRANSPORT_RESET');
  t.same([...bufs[0].bytes().subarray(4, 8)], [1, 2, 0, 0], 'lun: target 2');
  t.equal(ev.getUint32(12, true), 1, 'reason RESCAN');
  const inq = run(h, cdb.inquiry(false, 0, 36), { target: 2, inLen: 36 });
  t.equal(inq.status, 0, 'the new target answers');
  t.not(await ctl(h, { kind: 'scsiAddTarget', target: 2, bdev: disk2, identifier: 'uuid-2' }), null, 'a present target cannot be added again');

  // A write in flight when the target is removed completes (the bdev layer has not polled yet).
  clearUa(h, 2);
  const data = new Uint8Array(512).fill(0xab);
  const w = submit(h, cdb.write10(3, 1), { target: 2, out: data });
  h.dev.poll(performance.now());
  const removal: ModelOp = { kind: 'scsiRemoveTarget', target: 2 };
  h.dev.beginModelOp(removal);
  t.notOk(h.dev.modelOpReady(removal), 'removal waits for the outstanding write');
  t.equal(run(h, cdb.tur(), { target: 2 }).response, 3, 'the removed target answers BAD_TARGET at once');
  h.settle();
  t.ok(h.dev.modelOpReady(removal), 'removal complete');
  h.dev.finishModelOp(removal);
  t.equal(w.resp().status, 0, 'the acknowledged write succeeded');
  t.same(disk2.storage.subarray(3 * 512, 4 * 512), data);
  used = h.evq.readUsed();
  t.equal(used.length, 1);
  t.same([...bufs[1].bytes().subarray(0, 16)], [1, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0], 'TRANSPORT_RESET / REMOVED for target 2');
  t.not(await ctl(h, { kind: 'scsiRemoveTarget', target: 2 }), null, 'removing an absent target fails');

  // An event that finds no buffer waits; a buffer too small is given back empty and the event kept.
  await ctl(h, { kind: 'scsiAddTarget', target: 6, bdev: malloc('Malloc6', 8), identifier: 'u6' });
  t.equal((h.dev as unknown as { model: { pendingEvents: number } }).model.pendingEvents, 1, 'event waits for a buffer');
  const small = eventBuffer(h, 8);
  h.settle();
  used = h.evq.readUsed();
  t.same(used, [{ id: small.head, len: 0 }], 'a too-small event buffer: used length 0');
  const good = eventBuffer(h);
  h.settle();
  t.equal(h.evq.readUsed().length, 1);
  t.same([...good.bytes().subarray(4, 6)], [1, 6], 'the kept event arrives');

  // Resize: PARAM_CHANGE with ASC 2Ah ASCQ 09h, and the unit attention.
  await ctl(h, { kind: 'scsiAddTarget', target: 0 + 3, bdev: { name: 'Null3', module: 'null', blockSize: 512, numBlocks: 256, params: null }, identifier: 'n3' });
  eventBuffer(h);
  h.settle();
  h.evq.readUsed();
  const pc = eventBuffer(h);
  clearUa(h, 3);
  h.layer.resize('Null3', 128);
  h.settle();
  t.equal(h.evq.readUsed().length, 1);
  const pv = new DataView(pc.bytes().buffer, pc.bytes().byteOffset, 16);
  t.equal(pv.getUint32(0, true), 3, 'PARAM_CHANGE');
  t.equal(pv.getUint32(12, true), 0x2a | (0x09 << 8), 'reason: CAPACITY DATA HAS CHANGED');
  t.same([...pc.bytes().subarray(4, 6)], [1, 3], 'for target 3');
  t.same(run(h, cdb.tur(), { target: 3 }).sense, [6, 0x2a, 0x09], 'unit attention: CAPACITY DATA HAS CHANGED');
  const cap = run(h, cdb.readCapacity10(), { target: 3, inLen: 8 });
  t.equal(new DataView(cap.data.buffer, cap.data.byteOffset).getUint32(0), 127, 'new size');
  h.dev.beginStop();
  t.equal(h.dev.inflight, 0);
  h.dev.finishStop();
});

t.test('no HOTPLUG negotiated: no events', async (t) => {
  const h = harness({ features: F_VERSION_1 });
  const b = eventBuffer(h);
  await ctl(h, { kind: 'scsiAddTarget', target: 1, bdev: { name: 'Null1', module: 'null', blockSize: 512, numBlocks: 256, params: null }, identifier: 'x' });
  h.layer.resize('Null1', 100);
  h.settle();
  t.same(h.evq.readUsed(), [], 'nothing on the event queue');
  t.equal(b.bytes()[0], 0xcc);
  t.equal(run(h, cdb.inquiry(false, 0, 36), { target: 1, inLen: 36 }).status, 0, 'target 1 is there all the same');
});

t.test('UNMAP and WRITE SAME through the transport', async (t) => {
  const h = harness();
  clearUa(h);
  h.disk0.storage.fill(0x11, 0, 64 * 512);
  const list = new Uint8Array([...be16(22), ...be16(16), 0, 0, 0, 0, ...be64(4), ...be32(4), 0, 0, 0, 0]);
  const u = run(h, cdb.unmap(list.length), { out: list });
  t.equal(u.status, 0);
  t.equal(h.stats[DeviceStat.UnmapOps], 1);
  const ws = run(h, cdb.writeSame16(20, 4), { out: new Uint8Array(512).fill(0x77) });
  t.equal(ws.status, 0);
  t.same(h.disk0.storage.subarray(20 * 512, 24 * 512), new Uint8Array(2048).fill(0x77));
});

/**
 * READ/WRITE 10/16 on the transport's fast path (VscsiModel decodes the CDB
 * from guest memory itself and calls ScsiLun.readWriteFast): on a fresh
 * device the command right after the power-on unit attention runs the
 * generic path (ScsiTarget.execute, the CDB copied), the same command again
 * the fast one. Every outcome (used length, response, status, sense,
 * residual, data, medium) must be the same. The LBAs and transfer lengths
 * have a different value in every byte, so a byte decoded from the wrong
 * place, dropped or swapped changes a range check or the data moved.
 */
t.test('fast path: the transport decodes READ/WRITE 10/16 as the generic path does, errors included', async (t) => {
  // A null LU too large for 32-bit LBAs: bytes 2-9 of READ 16 all matter (0x0011_2233_4455_6677 < 2^53).
  const BIG = 0x0011_2233_4455_6677;
  type Case = { what: string; c: number[]; o: () => CmdOptions; big?: boolean };
  const cases: Case[] = [];
  const pat = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 13 + seed) & 0xff);
  for (const [name, mk] of [
    ['READ 10', cdb.read10],
    ['READ 16', cdb.read16],
  ] as const) {
    cases.push({ what: `${name} 3 blocks at 0x41`, c: mk(0x41, 3), o: () => ({ inLen: 1536 }) });
    cases.push({ what: `${name} 258 (0x0102) blocks`, c: mk(0, 0x102), o: () => ({ inLen: 0x102 * 512 }) });
    cases.push({ what: `${name} last block`, c: mk(255, 1), o: () => ({ inLen: 512 }) });
    cases.push({ what: `${name} past the end`, c: mk(255, 2), o: () => ({ inLen: 1024 }) });
    cases.push({ what: `${name} 0 blocks`, c: mk(8, 0), o: () => ({ inLen: 512 }) });
    cases.push({ what: `${name} short buffer`, c: mk(8, 2), o: () => ({ inLen: 600 }) });
    cases.push({ what: `${name} longer buffer`, c: mk(8, 1), o: () => ({ inLen: 700 }) });
    cases.push({ what: `${name} data-out buffer`, c: mk(8, 1), o: () => ({ out: new Uint8Array(512) }) });
    cases.push({ what: `${name} RDPROTECT`, c: mk(8, 1, 0x20), o: () => ({ inLen: 512 }) });
    cases.push({ what: `${name} FUA`, c: mk(8, 1, 0x08), o: () => ({ inLen: 512 }) });
    cases.push({ what: `${name} on a missing LUN`, c: mk(8, 1), o: () => ({ inLen: 512, lunBytes: [1, 0, 0x40, 1, 0, 0, 0, 0] }) });
  }
  for (const [name, mk] of [
    ['WRITE 10', cdb.write10],
    ['WRITE 16', cdb.write16],
  ] as const) {
    cases.push({ what: `${name} 2 blocks at 0x53`, c: mk(0x53, 2), o: () => ({ out: pat(1024, 1) }) });
    cases.push({ what: `${name} 258 (0x0102) blocks`, c: mk(0, 0x102), o: () => ({ out: pat(0x102 * 512, 2) }) });
    cases.push({ what: `${name} FUA`, c: mk(9, 1, 0x08), o: () => ({ out: pat(512, 3) }) });
    cases.push({ what: `${name} WRPROTECT`, c: mk(9, 1, 0x40), o: () => ({ out: pat(512, 4) }) });
    cases.push({ what: `${name} past the end`, c: mk(256, 1), o: () => ({ out: pat(512, 5) }) });
    cases.push({ what: `${name} short buffer`, c: mk(10, 2), o: () => ({ out: pat(700, 6) }) });
    cases.push({ what: `${name} data-in buffer`, c: mk(10, 1), o: () => ({ inLen: 512 }) });
  }
  cases.push({ what: 'READ 10 LBA 0xfffffffe (bytes 2-5)', c: cdb.read10(0xfffffffe, 1), o: () => ({ inLen: 512 }) });
  cases.push({ what: 'READ 16 transfer length 0x00010002 (bytes 10-13)', c: cdb.read16(0, 0x0001_0002), o: () => ({ inLen: 1024 }) });
  cases.push({ what: 'READ 16 transfer length 0x01000002', c: cdb.read16(0, 0x0100_0002), o: () => ({ inLen: 1024 }) });
  cases.push({ what: 'READ 16 the last LBA of a 2^52-block LU', c: cdb.read16(BIG - 1, 1), o: () => ({ inLen: 512, target: 1 }), big: true });
  cases.push({ what: 'READ 16 one past it', c: cdb.read16(BIG, 1), o: () => ({ inLen: 512, target: 1 }), big: true });
  cases.push({ what: 'READ 16 two blocks over the end', c: cdb.read16(BIG - 1, 2), o: () => ({ inLen: 1024, target: 1 }), big: true });
  cases.push({ what: 'WRITE 16 the last LBA of a 2^52-block LU', c: cdb.write16(BIG - 1, 1), o: () => ({ out: pat(512, 7), target: 1 }), big: true });
  cases.push({ what: 'READ 10 on the large LU', c: cdb.read10(0x7766_5544, 1), o: () => ({ inLen: 512, target: 1 }), big: true });
  // A decoding slip that made the buffers match a smaller transfer, or a range on the medium from a
  // wrong LBA, would take the fast path where the generic one fails: one more byte set in each field.
  for (let b = 1; b < 8; b++) {
    const c16 = cdb.read16(5, 1);
    c16[9 - b] = 1; // LBA byte 9 - b: 2^(8b) + 5, beyond the 256 blocks
    cases.push({ what: `READ 16 LBA 2^${8 * b} + 5`, c: c16, o: () => ({ inLen: 512 }) });
    if (b < 4) cases.push({ what: `READ 10 LBA 2^${8 * b} + 5`, c: cdb.read10(2 ** (8 * b) + 5, 1), o: () => ({ inLen: 512 }) });
  }
  for (let b = 1; b < 4; b++) {
    cases.push({ what: `READ 16 transfer length 2^${8 * b} + 2 with a 2-block buffer`, c: cdb.read16(0, 2 ** (8 * b) + 2), o: () => ({ inLen: 1024 }) });
  }
  cases.push({ what: 'READ 10 transfer length 0x0102 with a 2-block buffer', c: cdb.read10(0, 0x102), o: () => ({ inLen: 1024 }) });
  cases.push({ what: 'WRITE 10 transfer length 0x0102 with a 2-block buffer', c: cdb.write10(0, 0x102), o: () => ({ out: pat(1024, 8) }) });
  for (const k of cases) {
    const h = harness();
    h.disk0.storage.set(pat(h.disk0.storage.length, 9));
    if (k.big) {
      t.equal(await ctl(h, { kind: 'scsiAddTarget', target: 1, bdev: { name: 'Null1', module: 'null', blockSize: 512, numBlocks: BIG, params: null }, identifier: 'big' }), null);
    }
    const target = k.o().target ?? 0;
    t.equal(run(h, cdb.tur(), { target }).status, 2, `${k.what}: the power-on unit attention first`);
    const outcome = () => {
      const r = run(h, k.c, k.o());
      return { len: r.len, response: r.response, status: r.status, sense: r.status === 0 ? [] : r.sense, senseLen: r.senseLen, residual: r.residual, data: Buffer.from(r.data).toString('base64'), medium: Buffer.from(h.disk0.storage).toString('base64') };
    };
    const generic = outcome();
    const fast = outcome();
    t.same(fast, generic, k.what);
  }
});
