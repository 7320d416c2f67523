/**
 * virtio-scsi end to end without a guest: the real vhostd, driven over its
 * RPC socket and by the in-repo vhost-user front-end acting as a virtio-scsi
 * driver (control queue 0, event queue 1, request queue 2): delayed start,
 * SCSI commands and data, BAD_TARGET, hot-add / hot-remove with their
 * events, a bdev deletion that hot-removes its target, a resize that raises
 * PARAM_CHANGE, backend_specific.scsi, save_config, and the errors of the
 * scsi methods.
 */
import fs from 'node:fs';
import t from 'tap';
import { VhostUserFrontend } from '../lib/frontend';
import { bit, ProtoBit } from '../lib/frontend-wire';
import type { SplitQueue } from '../lib/frontend-ring';
import { deleteControllerOnceFree, startVhostd, type VhostdHandle } from '../lib/vhostd';
import { be16, be32, be64, cdb } from '../lib/scsi';

t.setTimeout(180_000);

const REQ = 51;
const RESP = 108;
/** vhost-user-scsi in QEMU does not negotiate CONFIG (it builds the config space itself). */
const PROTOCOL = bit(ProtoBit.MQ) | bit(ProtoBit.REPLY_ACK) | bit(ProtoBit.BACKEND_REQ) | bit(ProtoBit.CONFIGURE_MEM_SLOTS);

interface CmdResult {
  usedLen: number;
  response: number;
  status: number;
  residual: number;
  sense: number[];
  data: Uint8Array;
}

async function scsi(fe: VhostUserFrontend, target: number, c: number[], o: { out?: Uint8Array; inLen?: number } = {}): Promise<CmdResult> {
  const m = fe.memory;
  if (m === null) throw new Error('no memory');
  const req = new Uint8Array(REQ);
  req.set([1, target, 0x40, 0], 0);
  req.set(c, 19);
  const reqGpa = fe.alloc(req);
  const respGpa = fe.alloc(RESP);
  const segs = [{ gpa: reqGpa, len: REQ, writable: false }];
  let outGpa = -1;
  let inGpa = -1;
  if (o.out) {
    outGpa = fe.alloc(o.out);
    segs.push({ gpa: outGpa, len: o.out.length, writable: false });
  }
  segs.push({ gpa: respGpa, len: RESP, writable: true });
  if (o.inLen) {
    inGpa = fe.alloc(o.inLen);
    segs.push({ gpa: inGpa, len: o.inLen, writable: true });
  }
  const used = await fe.queue(2).submit(segs);
  const r = m.read(respGpa, RESP);
  const v = new DataView(r.buffer, r.byteOffset, r.byteLength);
  const result: CmdResult = {
    usedLen: used.len,
    response: r[11],
    status: r[10],
    residual: v.getUint32(4, true),
    sense: [r[14] & 0x0f, r[24], r[25]],
    data: inGpa >= 0 ? m.read(inGpa, o.inLen as number) : new Uint8Array(0),
  };
  fe.release(reqGpa, REQ);
  fe.release(respGpa, RESP);
  if (outGpa >= 0) fe.release(outGpa, (o.out as Uint8Array).length);
  if (inGpa >= 0) fe.release(inGpa, o.inLen as number);
  return result;
}

interface ScsiEvent {
  event: number;
  target: number;
  reason: number;
}

/** Post one event buffer on queue 1; resolves with the event the device put in it. */
function eventBuffer(fe: VhostUserFrontend): Promise<ScsiEvent> {
  const gpa = fe.alloc(16);
  return fe
    .queue(1)
    .submit([{ gpa, len: 16, writable: true }])
    .then((used) => {
      const b = (fe.memory as NonNullable<typeof fe.memory>).read(gpa, 16);
      const v = new DataView(b.buffer, b.byteOffset, 16);
      if (used.len !== 16) throw new Error(`event of ${used.len} bytes`);
      return { event: v.getUint32(0, true), target: b[5], reason: v.getUint32(12, true) };
    });
}

async function rpcError(h: VhostdHandle, method: string, params: unknown): Promise<{ code: number; message: string }> {
  try {
    await h.rpc(method, params);
  } catch (err) {
    return err as { code: number; message: string };
  }
  throw new Error(`${method} succeeded`);
}

async function connect(h: VhostdHandle, ctrlr: string): Promise<{ fe: VhostUserFrontend; queues: SplitQueue[] }> {
  const fe = await VhostUserFrontend.connect(h.socketOf(ctrlr));
  const neg = await fe.negotiate({ protocolFeatures: PROTOCOL, numQueues: 3 });
  if (neg.queueNum < 3) throw new Error(`GET_QUEUE_NUM ${neg.queueNum}`);
  // QEMU's vhost-user-scsi builds the config space itself (and warns when CONFIG is offered).
  if ((neg.offeredProtocolFeatures & bit(ProtoBit.CONFIG)) !== 0n) throw new Error('a scsi controller offers VHOST_USER_PROTOCOL_F_CONFIG');
  // HOTPLUG and CHANGE offered and taken, T10_PI (3) and INOUT (0) not offered.
  if ((neg.offeredFeatures & 0xfn) !== 0x6n) throw new Error(`scsi feature bits offered: ${neg.offeredFeatures & 0xfn}`);
  const queues = [await fe.setupQueue(0, 32), await fe.setupQueue(1, 32), await fe.setupQueue(2, 128)];
  return { fe, queues };
}

t.test('virtio-scsi controller: RPC, commands, hot-plug, hot-remove on bdev delete, resize', async (t) => {
  const h = await startVhostd({ cpumask: '0x2' });
  t.teardown(() => h.stop());
  await h.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 512, uuid: '0c0ffee0-0000-4000-8000-000000000001' });
  await h.rpc('bdev_null_create', { name: 'N0', num_blocks: 1024, block_size: 4096 });
  await h.rpc('bdev_null_create', { name: 'N1', num_blocks: 1024, block_size: 512 });
  await h.rpc('bdev_malloc_create', { name: 'B0', num_blocks: 64, block_size: 512 });
  await h.rpc('vhost_create_blk_controller', { ctrlr: 'b0', dev_name: 'B0' });

  t.equal(await h.rpc('vhost_create_scsi_controller', { ctrlr: 's0', delay: true }), true);
  t.notOk(fs.existsSync(h.socketOf('s0')), 'delay: no socket before vhost_start_scsi_controller');
  t.equal(await h.rpc('vhost_scsi_controller_add_target', { ctrlr: 's0', scsi_target_num: -1, bdev_name: 'M0' }), 0, '-1: the first free target');
  t.equal(await h.rpc('vhost_start_scsi_controller', { ctrlr: 's0' }), true);
  t.ok(fs.existsSync(h.socketOf('s0')), 'listening after start');
  t.equal(await h.rpc('vhost_start_scsi_controller', { ctrlr: 's0' }), true, 'starting again is harmless (SPDK)');

  // Errors, in SPDK's way.
  t.equal((await rpcError(h, 'vhost_scsi_controller_add_target', { ctrlr: 's0', scsi_target_num: 0, bdev_name: 'N0' })).code, -32602, 'occupied target');
  t.equal((await rpcError(h, 'vhost_scsi_controller_add_target', { ctrlr: 's0', scsi_target_num: 8, bdev_name: 'N0' })).code, -32602, 'target 8');
  t.equal((await rpcError(h, 'vhost_scsi_controller_add_target', { ctrlr: 's0', scsi_target_num: 1, bdev_name: 'nope' })).code, -19, 'no such bdev');
  t.equal((await rpcError(h, 'vhost_scsi_controller_add_target', { ctrlr: 's0', scsi_target_num: 1, bdev_name: 'B0' })).code, -16, 'bdev used by a blk controller');
  t.equal((await rpcError(h, 'vhost_scsi_controller_add_target', { ctrlr: 's0', scsi_target_num: 1, bdev_name: 'M0' })).code, -16, 'bdev used by another target');
  t.equal((await rpcError(h, 'vhost_scsi_controller_add_target', { ctrlr: 'b0', scsi_target_num: 1, bdev_name: 'N0' })).code, -32602, 'not a SCSI controller');
  t.equal((await rpcError(h, 'vhost_scsi_controller_add_target', { ctrlr: 'zz', scsi_target_num: 1, bdev_name: 'N0' })).code, -19, 'no controller');
  t.equal((await rpcError(h, 'vhost_scsi_controller_remove_target', { ctrlr: 's0', scsi_target_num: 5 })).code, -32602, 'absent target');
  t.equal((await rpcError(h, 'vhost_scsi_controller_remove_target', { ctrlr: 's0', scsi_target_num: 9 })).code, -32602, 'target 9');
  t.equal((await rpcError(h, 'vhost_start_scsi_controller', { ctrlr: 'b0' })).code, -32602, 'start of a blk controller');
  t.equal((await rpcError(h, 'vhost_create_scsi_controller', { ctrlr: 's0' })).code, -17, 'controller exists');

  const [info] = (await h.rpc('vhost_get_controllers', { name: 's0' })) as { backend_specific: unknown; cpumask: string }[];
  t.same(info.backend_specific, { scsi: [{ scsi_dev_num: 0, id: 0, target_name: 'Target 0', luns: [{ id: 0, bdev_name: 'M0' }] }] }, 'backend_specific.scsi');

  const { fe } = await connect(h, 's0');
  t.teardown(() => fe.close());
  const inq = await scsi(fe, 0, cdb.inquiry(false, 0, 36), { inLen: 36 });
  t.same([inq.response, inq.status, inq.usedLen], [0, 0, RESP + 36], 'INQUIRY');
  const sn = await scsi(fe, 0, cdb.inquiry(true, 0x80, 64), { inLen: 64 });
  t.equal(sn.status, 0, 'VPD 80');
  t.same((await scsi(fe, 0, cdb.tur())).sense, [6, 0x29, 0], 'power-on unit attention first');
  t.equal((await scsi(fe, 0, cdb.tur())).status, 0);
  t.equal((await scsi(fe, 1, cdb.tur())).response, 3, 'target 1: BAD_TARGET');
  t.equal((await scsi(fe, 200, cdb.tur())).response, 3, 'target 200: BAD_TARGET');
  const data = new Uint8Array(8192).map((_, i) => (i * 13 + 1) & 0xff);
  t.equal((await scsi(fe, 0, cdb.write16(100, 16), { out: data })).status, 0, 'WRITE 16');
  const rd = await scsi(fe, 0, cdb.read16(100, 16), { inLen: 8192 });
  t.equal(rd.status, 0, 'READ 16');
  t.same(rd.data, data, 'data read back');
  const cap = await scsi(fe, 0, cdb.readCapacity16(32), { inLen: 32 });
  t.equal(Number(new DataView(cap.data.buffer, cap.data.byteOffset).getBigUint64(0)), 2047);
  const unmap = new Uint8Array([...be16(22), ...be16(16), 0, 0, 0, 0, ...be64(0), ...be32(8), 0, 0, 0, 0]);
  t.equal((await scsi(fe, 0, cdb.unmap(unmap.length), { out: unmap })).status, 0, 'UNMAP');
  t.equal((await scsi(fe, 0, [0xc7, 0, 0, 0, 0, 0])).sense[1], 0x20, 'unknown opcode: 20h');

  // Hot-add while the device runs: RESCAN on the event queue.
  const ev1 = eventBuffer(fe);
  const ev2 = eventBuffer(fe);
  t.equal(await h.rpc('vhost_scsi_controller_add_target', { ctrlr: 's0', scsi_target_num: 3, bdev_name: 'N0' }), 3);
  t.same(await ev1, { event: 1, target: 3, reason: 1 }, 'TRANSPORT_RESET / RESCAN for target 3');
  const inq3 = await scsi(fe, 3, cdb.readCapacity10(), { inLen: 8 });
  t.same(inq3.sense, [6, 0x29, 0], 'target 3 answers (power-on attention first)');
  const cap3 = await scsi(fe, 3, cdb.readCapacity10(), { inLen: 8 });
  t.same([...cap3.data.subarray(4, 8)], [0, 0, 0x10, 0], 'block size 4096');

  // Deleting the bdev hot-removes the target (SPDK behaviour).
  t.equal(await h.rpc('bdev_null_delete', { name: 'N0' }), true, 'bdev_null_delete of a target bdev succeeds');
  t.same(await ev2, { event: 1, target: 3, reason: 2 }, 'TRANSPORT_RESET / REMOVED for target 3');
  t.equal((await scsi(fe, 3, cdb.tur())).response, 3, 'target 3 gone: BAD_TARGET');
  const bdevs = (await h.rpc('bdev_get_bdevs')) as { name: string }[];
  t.notOk(bdevs.some((b) => b.name === 'N0'), 'N0 deleted');
  t.equal((await rpcError(h, 'bdev_malloc_delete', { name: 'B0' })).code, -16, 'a blk controller still refuses its bdev deletion');

  // Resize: PARAM_CHANGE (CAPACITY DATA HAS CHANGED).
  t.equal(await h.rpc('vhost_scsi_controller_add_target', { ctrlr: 's0', scsi_target_num: -1, bdev_name: 'N1' }), 1, '-1 picks target 1');
  const ev3 = eventBuffer(fe);
  const ev4 = eventBuffer(fe);
  t.same(await ev3, { event: 1, target: 1, reason: 1 });
  await scsi(fe, 1, cdb.tur());
  await h.rpc('bdev_null_resize', { name: 'N1', new_size: 1 });
  t.same(await ev4, { event: 3, target: 1, reason: 0x2a | (0x09 << 8) }, 'PARAM_CHANGE 2Ah/09h');
  t.same((await scsi(fe, 1, cdb.tur())).sense, [6, 0x2a, 0x09], 'CAPACITY DATA HAS CHANGED');
  const cap1 = await scsi(fe, 1, cdb.readCapacity10(), { inLen: 8 });
  t.equal(new DataView(cap1.data.buffer, cap1.data.byteOffset).getUint32(0), 2047, '1 MiB of 512-byte blocks');

  // Remove by RPC.
  const ev5 = eventBuffer(fe);
  t.equal(await h.rpc('vhost_scsi_controller_remove_target', { ctrlr: 's0', scsi_target_num: 1 }), true);
  t.same(await ev5, { event: 1, target: 1, reason: 2 });
  t.equal((await scsi(fe, 1, cdb.tur())).response, 3);

  const cfg = (await h.rpc('framework_get_config', { name: 'vhost_scsi' })) as unknown[];
  t.same(cfg, [
    { method: 'vhost_create_scsi_controller', params: { ctrlr: 's0', cpumask: '0x2', delay: true } },
    { method: 'vhost_scsi_controller_add_target', params: { ctrlr: 's0', scsi_target_num: 0, bdev_name: 'M0' } },
    { method: 'vhost_start_scsi_controller', params: { ctrlr: 's0' } },
  ], 'save_config: create with delay, targets, start');
  const stats = (await h.rpc('vhost_get_controllers', { name: 's0' })) as { sessions: { started: boolean }[] }[];
  t.equal(stats[0].sessions[0]?.started, true);

  t.equal((await rpcError(h, 'vhost_delete_controller', { ctrlr: 's0' })).code, -16, 'delete refused while a front-end is connected');
  fe.close();
  t.equal(await deleteControllerOnceFree(h.rpc, 's0'), true);
  t.equal(await h.rpc('bdev_malloc_delete', { name: 'M0' }), true, 'the bdev is free again');
  t.ok(h.daemon.running, 'vhostd still runs');
});

t.test('bad virtio-scsi input does not disturb another controller', async (t) => {
  const h = await startVhostd({ cpumask: '0x2' });
  t.teardown(() => h.stop());
  await h.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 256, block_size: 512 });
  await h.rpc('bdev_malloc_create', { name: 'M1', num_blocks: 256, block_size: 512 });
  await h.rpc('vhost_create_scsi_controller', { ctrlr: 'a' });
  await h.rpc('vhost_create_scsi_controller', { ctrlr: 'b' });
  await h.rpc('vhost_scsi_controller_add_target', { ctrlr: 'a', scsi_target_num: 0, bdev_name: 'M0' });
  await h.rpc('vhost_scsi_controller_add_target', { ctrlr: 'b', scsi_target_num: 0, bdev_name: 'M1' });
  const a = await connect(h, 'a');
  const b = await connect(h, 'b');
  t.teardown(() => {
    a.fe.close();
    b.fe.close();
  });
  const m = a.fe.memory as NonNullable<typeof a.fe.memory>;
  // Short header.
  const short = a.fe.alloc(20);
  const resp = a.fe.alloc(RESP);
  let used: { len: number } = await a.queues[2].submit([
    { gpa: short, len: 20, writable: false },
    { gpa: resp, len: RESP, writable: true },
  ]);
  t.same([used.len, m.read(resp, RESP)[11]], [RESP, 9], 'short cmd_req: FAILURE');
  // No room for the response.
  used = await a.queues[2].submit([
    { gpa: a.fe.alloc(REQ), len: REQ, writable: false },
    { gpa: resp, len: 50, writable: true },
  ]);
  t.equal(used.len, 0, 'response area too small: used length 0');
  // An event buffer too small.
  used = await Promise.race([
    a.queues[1].submit([{ gpa: a.fe.alloc(8), len: 8, writable: false }]),
    new Promise<{ len: number }>((r) => setTimeout(() => r({ len: -1 }), 300)),
  ]);
  t.equal(used.len, -1, 'an event buffer is held until there is an event');
  // TMF with an unknown subtype.
  const tmf = a.fe.alloc(new Uint8Array([0, 0, 0, 0, 77, 0, 0, 0, 1, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  const tresp = a.fe.alloc(1);
  used = await a.queues[0].submit([
    { gpa: tmf, len: 24, writable: false },
    { gpa: tresp, len: 1, writable: true },
  ]);
  t.same([used.len, m.read(tresp, 1)[0]], [1, 11], 'unknown TMF subtype: FUNCTION REJECTED');
  // LUN reset.
  m.write(tmf + 4, new Uint8Array([5]));
  used = await a.queues[0].submit([
    { gpa: tmf, len: 24, writable: false },
    { gpa: tresp, len: 1, writable: true },
  ]);
  t.same([used.len, m.read(tresp, 1)[0]], [1, 0], 'LOGICAL UNIT RESET: FUNCTION COMPLETE');
  // The other controller serves on, and so does this one.
  const d = new Uint8Array(512).fill(0x3c);
  await scsi(b.fe, 0, cdb.tur());
  t.equal((await scsi(b.fe, 0, cdb.write10(1, 1), { out: d })).status, 0);
  t.same((await scsi(b.fe, 0, cdb.read10(1, 1), { inLen: 512 })).data, d, 'controller b unaffected');
  await scsi(a.fe, 0, cdb.tur());
  t.equal((await scsi(a.fe, 0, cdb.read10(1, 1), { inLen: 512 })).status, 0, 'controller a goes on');
  t.ok(h.daemon.running);
});
