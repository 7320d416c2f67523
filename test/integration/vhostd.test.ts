/**
 * vhostd as a vhost-user-blk back-end, driven over its socket by the in-repo
 * front-end (test/lib/frontend.ts): negotiation, config space, memory tables,
 * I/O on two queues, flush, GET_ID, discard / write-zeroes, read-only
 * controllers, indirect descriptors, a memory table replaced under I/O,
 * GET_VRING_BASE, and resource release after each connection.
 * VHOSTD_FE_TARGET=qsd runs the same checks against qemu-storage-daemon.
 * Thread: test main thread.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus, hasBit, ProtoBit, VirtioBit } from '../lib/frontend-wire';
import { settle, stableSnapshot, startTarget, type BlkController, type BlkTarget } from '../lib/frontend-target';

t.setTimeout(120_000);

const NUM_BLOCKS = 32768; // 16 MiB of 512-byte blocks

let target: BlkTarget;
let ctrl: BlkController;
let roCtrl: BlkController;

t.before(async () => {
  target = await startTarget();
  ctrl = await target.createBlk({ name: 'fe.blk0', numBlocks: NUM_BLOCKS });
  roCtrl = await target.createBlk({ name: 'fe.ro', numBlocks: 2048, readonly: true });
});

t.teardown(async () => {
  await target?.stop();
});

async function connect(t: tap.Test, c: BlkController): Promise<VhostUserFrontend> {
  const fe = await VhostUserFrontend.connect(c.socket, 5000, { waitAccepted: true });
  t.teardown(() => fe.close());
  return fe;
}

t.test('negotiation and config space', async (t) => {
  const fe = await connect(t, ctrl);
  const n = await fe.negotiate();
  t.ok(hasBit(n.offeredFeatures, VirtioBit.VERSION_1), 'VERSION_1 offered');
  t.ok(hasBit(n.offeredFeatures, VirtioBit.PROTOCOL_FEATURES), 'protocol features offered (bit 30)');
  t.ok(hasBit(n.offeredProtocolFeatures, ProtoBit.CONFIG), 'CONFIG offered');
  t.ok(hasBit(n.offeredProtocolFeatures, ProtoBit.MQ), 'MQ offered');
  t.ok(hasBit(n.offeredProtocolFeatures, ProtoBit.REPLY_ACK), 'REPLY_ACK offered');
  t.ok(n.queueNum >= 2, `GET_QUEUE_NUM >= 2 (${n.queueNum})`);
  t.ok(hasBit(n.features, VirtioBit.BLK_FLUSH), 'FLUSH negotiated');
  t.equal(n.config?.capacity, BigInt(NUM_BLOCKS), 'capacity (60-byte GET_CONFIG as QEMU asks)');

  if (target.kind === 'qsd') return; // libvhost-user refuses a config read larger than its struct
  const cfg = await fe.getConfig(256);
  t.equal(cfg.byteLength, 256, 'GET_CONFIG returns 256 bytes');
  const v = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
  t.equal(v.getBigUint64(0, true), BigInt(NUM_BLOCKS), 'capacity in 512-byte sectors');
  if (hasBit(n.offeredFeatures, VirtioBit.BLK_BLK_SIZE)) t.equal(v.getUint32(20, true), 512, 'blk_size');
  if (hasBit(n.offeredFeatures, VirtioBit.BLK_SIZE_MAX)) t.ok(v.getUint32(8, true) >= 4096, 'size_max is a real value (>= 4096)');
  if (hasBit(n.offeredFeatures, VirtioBit.BLK_SEG_MAX)) t.ok(v.getUint32(12, true) >= 1, 'seg_max >= 1');
  if (hasBit(n.offeredFeatures, VirtioBit.BLK_MQ)) t.equal(v.getUint16(34, true), n.queueNum, 'num_queues = GET_QUEUE_NUM');
  t.ok(
    cfg.subarray(60).every((b) => b === 0),
    'every byte past the 60-byte virtio_blk_config is zero',
  );
  t.same(await fe.getConfig(60), cfg.subarray(0, 60), 'a 60-byte read returns the same struct');
});

t.test('I/O on two queues over a two-region memory table', async (t) => {
  const base = await stableSnapshot(ctrl.pid);
  const fe = await connect(t, ctrl);
  await fe.negotiate({
    addMemReg: false,
    regions: [
      { gpa: 0, sizeBytes: 8 << 20 },
      { gpa: 0x1_0000_0000, sizeBytes: 8 << 20, mmapOffset: 2 << 20 },
    ],
  });
  const q0 = await fe.setupQueue(0, 128);
  const q1 = await fe.setupQueue(1, 128, { regionIndex: 1 });

  const a = randomBytes(128 * 1024);
  t.same(await fe.write(0, 0, a, { segments: 8 }), { status: BlkStatus.OK, usedLen: 1 }, 'write 128 KiB in 8 segments on q0');
  const ra = await fe.read(1, 0, a.byteLength, { segments: 5, regionIndex: 1 });
  t.same([ra.status, ra.usedLen], [BlkStatus.OK, a.byteLength + 1], 'read on q1: OK, used len = data + 1');
  t.ok(Buffer.from(ra.data).equals(a), 'q1 reads what q0 wrote');

  // the last sector of the device
  const last = randomBytes(512);
  t.equal((await fe.write(1, NUM_BLOCKS - 1, last)).status, BlkStatus.OK, 'write the last sector');
  t.ok(Buffer.from((await fe.read(0, NUM_BLOCKS - 1, 512)).data).equals(last), 'read the last sector back');

  // 100 requests in flight on both queues, then verify
  const blocks = Array.from({ length: 100 }, () => randomBytes(4096));
  const ws = await Promise.all(blocks.map((d, i) => fe.write(i % 2, 1024 + i * 8, d)));
  t.ok(ws.every((w) => w.status === BlkStatus.OK && w.usedLen === 1), '100 concurrent writes complete OK');
  const rs = await Promise.all(blocks.map((_, i) => fe.read((i + 1) % 2, 1024 + i * 8, 4096)));
  t.ok(rs.every((r, i) => r.status === BlkStatus.OK && Buffer.from(r.data).equals(blocks[i])), '100 blocks read back');

  t.same(await fe.flush(0), { status: BlkStatus.OK, usedLen: 1 }, 'flush');
  const id = await fe.getId(1);
  t.equal(id.status, BlkStatus.OK, 'GET_ID status');
  t.equal(id.usedLen, 21, 'GET_ID used len 20 + 1');
  if (target.kind === 'vhostd') t.equal(id.text, ctrl.bdev.slice(0, 20), 'GET_ID reports the bdev name');
  t.ok(q0.interrupts > 0 && q1.interrupts > 0, 'both call eventfds were signalled');
  t.same([q0.strayUsed, q1.strayUsed], [[], []], 'no used element for an unknown id');

  fe.close();
  const after = await settle(ctrl.pid, base);
  t.same(after, base, 'fds and guest mappings back to baseline after close');
});

t.test('discard and write zeroes', async (t) => {
  const fe = await connect(t, ctrl);
  const n = await fe.negotiate();
  await fe.setupQueue(0, 64);
  const data = randomBytes(8192);
  t.equal((await fe.write(0, 4000, data)).status, BlkStatus.OK, 'write');
  if (hasBit(n.features, VirtioBit.BLK_WRITE_ZEROES)) {
    t.same(await fe.writeZeroes(0, [{ sector: 4000, numSectors: 8 }]), { status: BlkStatus.OK, usedLen: 1 }, 'write zeroes');
    const r = await fe.read(0, 4000, 8192);
    t.ok(r.data.subarray(0, 4096).every((b) => b === 0), 'zeroed range reads back as zeroes');
    t.ok(Buffer.from(r.data.subarray(4096)).equals(data.subarray(4096)), 'the rest is untouched');
  } else {
    t.fail('WRITE_ZEROES not offered');
  }
  if (hasBit(n.features, VirtioBit.BLK_DISCARD)) {
    t.same(await fe.discard(0, [{ sector: 4008, numSectors: 8 }]), { status: BlkStatus.OK, usedLen: 1 }, 'discard');
    if (target.kind === 'vhostd') {
      const r = await fe.read(0, 4008, 4096);
      t.ok(r.data.every((b) => b === 0), 'discarded malloc range reads back as zeroes');
    }
  } else {
    t.fail('DISCARD not offered');
  }
});

t.test('read-only controller refuses writes with IOERR', async (t) => {
  const fe = await connect(t, roCtrl);
  const n = await fe.negotiate();
  t.ok(hasBit(n.offeredFeatures, VirtioBit.BLK_RO), 'RO feature offered');
  await fe.setupQueue(0, 32);
  const w = await fe.write(0, 0, randomBytes(4096));
  t.same(w, { status: BlkStatus.IOERR, usedLen: 1 }, 'write → IOERR (1)');
  const r = await fe.read(0, 0, 4096);
  t.equal(r.status, BlkStatus.OK, 'read works');
  t.ok(r.data.every((b) => b === 0), 'and the data was not written');
});

t.test('indirect descriptors', async (t) => {
  const fe = await connect(t, ctrl);
  const n = await fe.negotiate();
  t.ok(hasBit(n.features, VirtioBit.RING_INDIRECT_DESC), 'INDIRECT_DESC negotiated');
  await fe.setupQueue(0, 16);
  const d = randomBytes(16384);
  t.equal((await fe.write(0, 9000, d, { indirect: true, segments: 4 })).status, BlkStatus.OK, 'indirect write, 6 entries');
  // virtio 1.2 2.7.5.3.1: a chain may not be longer than the queue size, indirect tables included
  const r = await fe.read(0, 9000, 16384, { indirect: true, segments: 14 });
  t.equal(r.status, BlkStatus.OK, 'indirect read: a 16-entry table (the queue size) behind one ring slot');
  t.ok(Buffer.from(r.data).equals(d), 'indirect read back');
  // mixed: many indirect requests in flight at once
  const rs = await Promise.all(Array.from({ length: 16 }, (_, i) => fe.read(0, 9000 + (i % 4) * 8, 4096, { indirect: true })));
  t.ok(rs.every((x, i) => x.status === BlkStatus.OK && Buffer.from(x.data).equals(d.subarray((i % 4) * 4096, (i % 4 + 1) * 4096))), '16 indirect reads in flight fill the ring');
});

t.test('memory table replaced while I/O runs', async (t) => {
  const fe = await connect(t, ctrl);
  const n = await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 16 << 20 }] });
  const slots = hasBit(n.protocolFeatures, ProtoBit.CONFIGURE_MEM_SLOTS);
  await fe.setupQueue(0, 256);
  await fe.setupQueue(1, 256);
  const blocks = Array.from({ length: 200 }, () => randomBytes(4096));
  const writes: Promise<{ status: number }>[] = [];
  for (let i = 0; i < blocks.length; i++) {
    // after i = 120 the buffers live in the region added while I/O ran
    writes.push(fe.write(i % 2, 16000 + i * 8, blocks[i], { regionIndex: i > 120 ? 1 : 0 }));
    if (i === 50) await fe.setMemTable(); // the same regions again, as QEMU re-sends them
    if (i === 120) {
      if (slots) await fe.hotplugRegion({ gpa: 0x2_0000_0000, sizeBytes: 4 << 20 });
      else {
        fe.memory?.addRegion({ gpa: 0x2_0000_0000, sizeBytes: 4 << 20 });
        await fe.setMemTable();
      }
    }
  }
  const ws = await Promise.all(writes);
  t.ok(ws.every((w) => w.status === BlkStatus.OK), 'every write submitted around the table changes completed OK');
  const rs = await Promise.all(blocks.map((_, i) => fe.read(i % 2, 16000 + i * 8, 4096, { regionIndex: 1 })));
  t.ok(rs.every((r, i) => r.status === BlkStatus.OK && Buffer.from(r.data).equals(blocks[i])), 'no write lost: all 200 blocks read back (into the new region)');
  if (slots) {
    const added = fe.memory?.regions[1];
    if (added) {
      await fe.remMemReg(added);
      fe.memory?.removeRegion(added);
    }
    const r = await fe.read(0, 16000, 4096);
    t.ok(r.status === BlkStatus.OK && Buffer.from(r.data).equals(blocks[0]), 'I/O continues after REM_MEM_REG');
  }
});

t.test('GET_VRING_BASE returns the next avail index; the ring restarts from it', async (t) => {
  const fe = await connect(t, ctrl);
  await fe.negotiate();
  const q = await fe.setupQueue(0, 32);
  for (let i = 0; i < 45; i++) await fe.write(0, 20000 + i, randomBytes(512));
  t.equal(q.availIdx, 45, '45 requests published');
  const base = await fe.getVringBase(0);
  t.equal(base, 45, 'GET_VRING_BASE = 45');
  // restart the ring at that index (what QEMU does after a stop/start)
  const q2 = await fe.setupQueue(0, 32, { base });
  const d = randomBytes(512);
  t.equal((await fe.write(0, 20100, d)).status, BlkStatus.OK, 'write after restart');
  t.ok(Buffer.from((await fe.read(0, 20100, 512)).data).equals(d), 'read after restart');
  t.equal(await fe.getVringBase(0), 47, 'GET_VRING_BASE counts on from the base');
  t.equal(q2.availIdx, 47, 'driver agrees');
});

t.test('QEMU-like start: every queue enabled, one of them without addresses', async (t) => {
  const fe = await connect(t, ctrl);
  const n = await fe.negotiate();
  await fe.setupQueue(0, 64, { enable: false });
  for (let i = 0; i < n.queueNum; i++) await fe.enableQueue(i, true);
  const d = randomBytes(4096);
  t.equal((await fe.write(0, 30000, d)).status, BlkStatus.OK, 'write');
  t.ok(Buffer.from((await fe.read(0, 30000, 4096)).data).equals(d), 'read back');
  await fe.replaceCallFd(0);
  t.ok(Buffer.from((await fe.read(0, 30000, 4096)).data).equals(d), 'completion signalled on the replaced call fd');
});
