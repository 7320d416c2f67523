/**
 * Every bdev module end to end through the real process: created by its
 * RPC method (its reactor half), described to a worker (describe() →
 * BdevDesc.params → its engine half), served to an in-repo vhost-user
 * front-end through a blk controller; then deleted, which releases what the
 * module held. Thread: test main thread.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus, decodeBlkConfig } from '../lib/frontend-wire';
import { deleteControllerOnceFree, startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(120_000);

let vhostd: VhostdHandle;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-modules-'));

t.before(async () => {
  vhostd = await startVhostd({ cpumask: '0x1', startTimeoutMs: 20_000 });
});

t.teardown(async () => {
  await vhostd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

function backingFile(name: string, sizeBytes: number): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, Buffer.alloc(0));
  fs.truncateSync(f, sizeBytes);
  return f;
}

const SIZE = 4 << 20;

const CASES: { module: string; create: () => Record<string, unknown>; stores: boolean }[] = [
  { module: 'malloc', create: () => ({ name: 'mod.malloc', num_blocks: SIZE / 4096, block_size: 4096 }), stores: true },
  { module: 'null', create: () => ({ name: 'mod.null', num_blocks: SIZE / 512, block_size: 512 }), stores: false },
  { module: 'uring', create: () => ({ name: 'mod.uring', filename: backingFile('uring', SIZE) }), stores: true },
  { module: 'aio', create: () => ({ name: 'mod.aio', filename: backingFile('aio', SIZE), fallocate: true }), stores: true },
];

for (const c of CASES) {
  t.test(`${c.module}: RPC create, a front-end's I/O, delete`, async (t) => {
    const params = c.create();
    const name = params.name as string;
    t.equal(await vhostd.rpc(`bdev_${c.module}_create`, params), name);
    const ctrlr = `ctl.${c.module}`;
    t.equal(await vhostd.rpc('vhost_create_blk_controller', { ctrlr, dev_name: name }), true);

    const fe = await VhostUserFrontend.connect(vhostd.socketOf(ctrlr), 5000, { waitAccepted: true });
    await fe.negotiate();
    await fe.setupQueue(0, 128);
    const cfg = decodeBlkConfig(await fe.getConfig(60));
    t.equal(cfg.capacity, BigInt(SIZE / 512), 'capacity from the module geometry');

    const data = randomBytes(16384);
    t.equal((await fe.write(0, 64, data)).status, BlkStatus.OK, 'write');
    const back = await fe.read(0, 64, data.byteLength);
    t.equal(back.status, BlkStatus.OK, 'read');
    // A null bdev keeps no data (as SPDK's, it leaves read buffers as they are).
    if (c.stores) t.ok(Buffer.from(back.data).equals(data), 'the data written is read back');

    await fe.close();
    t.equal(await deleteControllerOnceFree(vhostd.rpc, ctrlr), true);
    t.equal(await vhostd.rpc(`bdev_${c.module}_delete`, { name }), true, 'deleted once its controller is gone');
    t.same(await vhostd.rpc('bdev_get_bdevs'), [], 'nothing left');
  });
}
