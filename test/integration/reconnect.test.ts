/**
 * One front-end per controller, and quick reconnects: a front-end that
 * connects while the previous connection is still being torn down is held
 * until the teardown ends and then served; a second front-end next to a live
 * one is refused. Drives the real vhostd with the in-repo front-end.
 * Thread: test main thread.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus } from '../lib/frontend-wire';
import { startTarget, type BlkController, type BlkTarget } from '../lib/frontend-target';

t.setTimeout(60_000);

let target: BlkTarget;
let ctrl: BlkController;

t.before(async () => {
  target = await startTarget();
  ctrl = await target.createBlk({ name: 'rc.blk0', numBlocks: 4096 });
});

t.teardown(async () => {
  await target?.stop();
});

async function writeRead(fe: VhostUserFrontend, sector: number): Promise<boolean> {
  const data = randomBytes(4096);
  const w = await fe.write(0, sector, data);
  const r = await fe.read(0, sector, 4096);
  return w.status === BlkStatus.OK && r.status === BlkStatus.OK && Buffer.from(r.data).equals(data);
}

t.test('a front-end that reconnects at once, while the old one drains, is served', async (t) => {
  const first = await VhostUserFrontend.connect(ctrl.socket, 5000);
  await first.negotiate();
  await first.setupQueue(0, 128);
  t.ok(await writeRead(first, 0), 'first connection does I/O');
  // Close and connect again in the same tick: vhostd cannot have seen the EOF yet.
  first.close();
  const second = await VhostUserFrontend.connect(ctrl.socket, 5000);
  t.teardown(() => second.close());
  await second.negotiate();
  await second.setupQueue(0, 128);
  t.ok(await writeRead(second, 8), 'reconnected front-end does I/O without retrying');
});

t.test('a second front-end next to a live one is refused', async (t) => {
  const live = await VhostUserFrontend.connect(ctrl.socket, 5000, { waitAccepted: true });
  t.teardown(() => live.close());
  await live.negotiate();
  await live.setupQueue(0, 128);
  const intruder = await VhostUserFrontend.connect(ctrl.socket, 5000);
  t.teardown(() => intruder.close());
  await t.rejects(intruder.sync(), 'the second connection is closed without an answer');
  t.ok(await writeRead(live, 16), 'the live front-end is untouched');
});

t.test('a VM stop/resume on one connection: the ring stops alone and resumes from its base', async (t) => {
  const fe = await VhostUserFrontend.connect(ctrl.socket, 5000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate();
  await fe.setupQueue(0, 128);
  await fe.setupQueue(1, 128);
  t.ok(await writeRead(fe, 24), 'queue 0 does I/O');
  // QEMU's vhost_dev_stop: disable, then GET_VRING_BASE; the answer is where the ring stopped.
  await fe.enableQueue(0, false);
  const base = await fe.getVringBase(0);
  t.equal(base, 2, 'a write and a read were taken');
  // Queue 1 kept running meanwhile (queues stop alone, not the whole device).
  const w = await fe.write(1, 32, randomBytes(4096));
  t.equal(w.status, BlkStatus.OK, 'queue 1 still serves I/O while queue 0 is stopped');
  await fe.setupQueue(0, 128, { base });
  t.ok(await writeRead(fe, 40), 'queue 0 resumed from its base');
});
