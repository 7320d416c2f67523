/**
 * The in-repo vhost-user-blk front-end (test/lib/frontend.ts) against a
 * reference back-end, qemu-storage-daemon: proves the front-end speaks the
 * protocol and drives split rings correctly before it is used to judge vhostd.
 * Thread: test main thread.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus, hasBit, ProtoBit, VirtioBit } from '../lib/frontend-wire';
import { haveQsd, startQsd } from '../lib/qsd';

const SIZE = 64 << 20;

t.setTimeout(60_000);

// .ci/run installs qemu-system-common: a machine without qemu-storage-daemon fails here, loudly.
if (!haveQsd()) {
  t.fail('qemu-storage-daemon is not installed (Debian package qemu-system-common): the peer this test needs is missing');
} else {
  t.test('front-end against qemu-storage-daemon', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fe-qsd-'));
    const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : dir;
    const image = path.join(shm, `fe-qsd-${process.pid}.img`);
    const sock = path.join(dir, 'blk.sock');
    const qsd = await startQsd({ image, sizeBytes: SIZE, socketPath: sock, numQueues: 2 });
    t.teardown(async () => {
      await qsd.stop();
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(image, { force: true });
    });

    const fe = await VhostUserFrontend.connect(sock);
    t.teardown(() => fe.close());
    const n = await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 16 << 20 }, { gpa: 0x1_0000_0000, sizeBytes: 8 << 20, mmapOffset: 1 << 20 }] });
    t.ok(hasBit(n.offeredFeatures, VirtioBit.PROTOCOL_FEATURES), 'QSD offers protocol features');
    t.ok(hasBit(n.protocolFeatures, ProtoBit.CONFIG), 'CONFIG negotiated');
    t.ok(hasBit(n.protocolFeatures, ProtoBit.MQ), 'MQ negotiated');
    t.equal(n.queueNum, 2, 'GET_QUEUE_NUM is 2');
    t.ok(n.config, 'config read');
    t.equal(n.config?.capacity, BigInt(SIZE / 512), 'capacity in sectors');
    t.equal(n.config?.numQueues, 2, 'config num_queues');

    const q0 = await fe.setupQueue(0, 128);
    const q1 = await fe.setupQueue(1, 64, { regionIndex: 1 });

    // write / read back on both queues, buffers in both regions, several segments
    const a = randomBytes(64 * 1024);
    const b = randomBytes(8 * 1024);
    t.same(await fe.write(0, 0, a, { segments: 4 }), { status: BlkStatus.OK, usedLen: 1 }, 'write q0');
    t.same(await fe.write(1, 1024, b, { regionIndex: 1 }), { status: BlkStatus.OK, usedLen: 1 }, 'write q1 (region 1)');
    const ra = await fe.read(1, 0, a.byteLength, { segments: 3 });
    t.equal(ra.status, BlkStatus.OK, 'read q1 status');
    t.equal(ra.usedLen, a.byteLength + 1, 'read used len = data + status');
    t.ok(Buffer.from(ra.data).equals(a), 'data written on q0 reads back on q1');
    const rb = await fe.read(0, 1024, b.byteLength, { regionIndex: 1 });
    t.ok(Buffer.from(rb.data).equals(b), 'data written on q1 reads back on q0');

    // indirect descriptors, if offered
    if (hasBit(n.features, VirtioBit.RING_INDIRECT_DESC)) {
      const c = randomBytes(4096);
      t.equal((await fe.write(0, 4096, c, { indirect: true, segments: 2 })).status, BlkStatus.OK, 'indirect write');
      const rc = await fe.read(0, 4096, 4096, { indirect: true, segments: 3 });
      t.ok(Buffer.from(rc.data).equals(c), 'indirect read back');
    }

    // many requests in flight across both queues
    const writes: Promise<unknown>[] = [];
    const blocks: Buffer[] = [];
    for (let i = 0; i < 32; i++) {
      const d = randomBytes(4096);
      blocks.push(d);
      writes.push(fe.write(i % 2, 8192 + i * 8, d));
    }
    await Promise.all(writes);
    const reads = await Promise.all(blocks.map((_, i) => fe.read((i + 1) % 2, 8192 + i * 8, 4096)));
    t.ok(
      reads.every((r, i) => r.status === BlkStatus.OK && Buffer.from(r.data).equals(blocks[i])),
      '32 concurrent writes read back',
    );

    t.same(await fe.flush(0), { status: BlkStatus.OK, usedLen: 1 }, 'flush');
    const id = await fe.getId(1);
    t.equal(id.status, BlkStatus.OK, 'GET_ID ok');

    if (hasBit(n.features, VirtioBit.BLK_WRITE_ZEROES)) {
      t.equal((await fe.writeZeroes(0, [{ sector: 0, numSectors: 8 }])).status, BlkStatus.OK, 'write zeroes');
      const z = await fe.read(0, 0, 4096);
      t.ok(z.data.every((x) => x === 0), 'zeroes read back');
    }
    const past = await fe.read(0, BigInt(SIZE / 512), 512);
    t.equal(past.status, BlkStatus.IOERR, 'read past capacity is IOERR');
    t.ok(q0.interrupts > 0 && q1.interrupts > 0, 'call eventfds fired on both queues');
    t.same(q0.strayUsed, [], 'no stray used elements');

    t.equal(await fe.getVringBase(0), q0.availIdx, 'GET_VRING_BASE returns the next avail index (q0)');
    t.equal(await fe.getVringBase(1), q1.availIdx, 'GET_VRING_BASE returns the next avail index (q1)');
  });

  t.test('SET_MEM_TABLE path and polling completion against qemu-storage-daemon', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fe-qsd-'));
    const image = path.join(dir, 'img');
    const sock = path.join(dir, 'blk.sock');
    const qsd = await startQsd({ image, sizeBytes: 8 << 20, socketPath: sock, numQueues: 1 });
    t.teardown(async () => {
      await qsd.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const fe = await VhostUserFrontend.connect(sock);
    t.teardown(() => fe.close());
    await fe.negotiate({ addMemReg: false, regions: [{ gpa: 0x10_0000, sizeBytes: 4 << 20 }] });
    await fe.setupQueue(0, 32, { completion: 'poll' });
    const d = randomBytes(4096);
    t.equal((await fe.write(0, 100, d)).status, BlkStatus.OK, 'write');
    // re-send the memory table while the ring runs (QEMU does so)
    await fe.setMemTable();
    const r = await fe.read(0, 100, 4096);
    t.ok(Buffer.from(r.data).equals(d), 'read back after memory table re-sent');
  });
}
