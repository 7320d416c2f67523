/**
 * Placement on a real vhostd with two cores (-m 0x3): two controllers whose
 * masks both cover the app mask start on different cores (fewest devices
 * wins), a controller pinned to one core lands there, and a mask outside
 * -m is refused with -22. Placement shows in framework_get_reactors.
 * Thread: test main thread.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus } from '../lib/frontend-wire';
import { deleteControllerOnceFree, startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(90_000);

interface Reactor {
  lcore: number;
  lw_threads: { name: string }[];
}

let vhostd: VhostdHandle;

t.before(async () => {
  vhostd = await startVhostd({ cpumask: '0x3', startTimeoutMs: 20_000 });
});

t.teardown(async () => {
  await vhostd?.stop();
});

async function attach(t: Test, ctrlr: string): Promise<VhostUserFrontend> {
  const fe = await VhostUserFrontend.connect(vhostd.socketOf(ctrlr), 5000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate();
  await fe.setupQueue(0, 64);
  const r = await fe.write(0, 0, new Uint8Array(4096).fill(7));
  t.equal(r.status, BlkStatus.OK, `${ctrlr} serves I/O`);
  return fe;
}

async function coreOf(ctrlr: string): Promise<number> {
  const info = (await vhostd.rpc('framework_get_reactors')) as { reactors: Reactor[] };
  const r = info.reactors.find((x) => x.lw_threads.some((l) => l.name.endsWith(ctrlr)));
  return r ? r.lcore : -1;
}

t.test('devices spread over the cores of their mask', async (t) => {
  for (const [i, name] of ['pl.a', 'pl.b', 'pl.c'].entries()) {
    t.equal(await vhostd.rpc('bdev_malloc_create', { name: `M${i}`, num_blocks: 2048, block_size: 512 }), `M${i}`);
  }
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'pl.a', dev_name: 'M0' });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'pl.b', dev_name: 'M1', cpumask: '[0-1]' });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'pl.c', dev_name: 'M2', cpumask: '0x2' });

  await attach(t, 'pl.a');
  t.equal(await coreOf('pl.a'), 0, 'first device: lowest core of an empty pair');
  await attach(t, 'pl.b');
  t.equal(await coreOf('pl.b'), 1, 'second device: the core with fewer devices');
  await attach(t, 'pl.c');
  t.equal(await coreOf('pl.c'), 1, 'a device masked to core 1 lands there');
  const ctrls = (await vhostd.rpc('vhost_get_controllers', { name: 'pl.b' })) as { cpumask: string }[];
  t.equal(ctrls[0].cpumask, '0x3', 'the list mask is reported as SPDK formats it');
});

t.test('a mask outside -m is refused with -22', async (t) => {
  await vhostd.rpc('bdev_malloc_create', { name: 'M9', num_blocks: 2048, block_size: 512 });
  await t.rejects(vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'pl.x', dev_name: 'M9', cpumask: '0x4' }), {
    code: -22,
    message: /not a subset/,
  });
  await t.rejects(vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'pl.y', dev_name: 'M9', cpumask: 'bogus' }), { code: -22 });
  const ctrls = (await vhostd.rpc('vhost_get_controllers')) as { ctrlr: string }[];
  t.notOk(ctrls.some((c) => c.ctrlr === 'pl.x' || c.ctrlr === 'pl.y'), 'refused controllers were not created');
});

t.test('vhost_delete_controller: -16 while a front-end is connected, then removes the socket', async (t) => {
  await vhostd.rpc('bdev_malloc_create', { name: 'MD', num_blocks: 2048, block_size: 512 });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'pl.del', dev_name: 'MD' });
  const fe = await VhostUserFrontend.connect(vhostd.socketOf('pl.del'), 5000, { waitAccepted: true });
  await fe.negotiate();
  await fe.setupQueue(0, 64);
  await t.rejects(vhostd.rpc('vhost_delete_controller', { ctrlr: 'pl.del' }), { code: -16 }, 'busy while connected');
  await t.rejects(vhostd.rpc('bdev_malloc_delete', { name: 'MD' }), { code: -16 }, 'its bdev cannot go either');
  const r = await fe.read(0, 0, 4096);
  t.equal(r.status, BlkStatus.OK, 'the front-end still works after the refusals');
  fe.close();
  const result = await deleteControllerOnceFree(vhostd.rpc, 'pl.del');
  t.equal(result, true, 'deleted once the front-end is gone');
  t.notOk(fs.existsSync(vhostd.socketOf('pl.del')), 'socket file removed');
  t.equal(await vhostd.rpc('bdev_malloc_delete', { name: 'MD' }), true, 'then the bdev can be deleted');
  await t.rejects(vhostd.rpc('vhost_delete_controller', { ctrlr: 'pl.del' }), { code: -19 }, 'a second delete: no such device');
});
