/**
 * The dynamic scheduler on a real vhostd (-m 0x3, issue #12 item 3): a
 * device placed on core 1 (core 0 already carries a pinned one) that goes
 * idle is moved to core 0, the first core of its mask; data written before
 * the move reads back after it, and I/O keeps flowing through the move (a
 * writer and reader loop runs the whole time; every request completes OK
 * with the right data). framework_get_scheduler shows the settings;
 * SPDK's rpc.py drives both methods. No timing assertions: the test waits
 * (generously) for the state the scheduler must reach.
 * Thread: test main thread.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus } from '../lib/frontend-wire';
import { spdkRpcDir } from '../lib/spdk-rpc';
import { startVhostd } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(180_000);

interface Reactors {
  reactors: { lcore: number; lw_threads: { name: string }[] }[];
}

function pattern(seed: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (seed * 7 + i * 3 + (i >> 7)) & 0xff;
  return b;
}

t.test('dynamic scheduler moves an idle device home without losing I/O', async (t) => {
  const vhostd = await startVhostd({ cpumask: '0x3', startTimeoutMs: 20_000 });
  t.teardown(() => vhostd.stop());
  await vhostd.rpc('bdev_malloc_create', { name: 'P0', num_blocks: 2048, block_size: 512 });
  await vhostd.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 8192, block_size: 512 });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'pinned', dev_name: 'P0', cpumask: '0x1' });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'mover', dev_name: 'M0', cpumask: '0x3' });

  const pinned = await VhostUserFrontend.connect(vhostd.socketOf('pinned'), 5000, { waitAccepted: true });
  t.teardown(() => pinned.close());
  await pinned.negotiate({ numQueues: 1 });
  await pinned.setupQueue(0, 64);
  t.equal((await pinned.read(0, 0, 512)).status, BlkStatus.OK);

  const fe = await VhostUserFrontend.connect(vhostd.socketOf('mover'), 5000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate({ numQueues: 1 });
  await fe.setupQueue(0, 64);
  const coreOf = async (name: string): Promise<number> =>
    ((await vhostd.rpc('framework_get_reactors')) as Reactors).reactors.find((r) => r.lw_threads.some((l) => l.name === `vhost.${name}`))?.lcore ?? -1;
  await waitFor(async () => (await coreOf('mover')) === 1, 20_000, 'mover placed on core 1', 50);
  t.pass('placement put the second device on core 1');

  for (let i = 0; i < 32; i++) t.equal((await fe.write(0, i * 8, pattern(i, 4096))).status, BlkStatus.OK);

  // SPDK's own client sets and reads the scheduler.
  const rpcPy = path.join(spdkRpcDir(), 'scripts', 'rpc.py');
  const py = (...args: string[]) => execFileSync('python3', [rpcPy, '-s', vhostd.rpcSocket, ...args], { encoding: 'utf8', timeout: 60_000 });
  py('framework_set_scheduler', 'dynamic', '-p', '200000', '--load-limit', '20', '--core-limit', '80', '--core-busy', '95');
  t.same(JSON.parse(py('framework_get_scheduler')), { scheduler_name: 'dynamic', scheduler_period: 200000, load_limit: 20, core_limit: 80, core_busy: 95 });

  // A period with no I/O: the device is idle and goes home to core 0.
  await waitFor(async () => (await coreOf('mover')) === 0, 60_000, 'mover moved to core 0', 100);
  t.pass('the idle device moved to the first core of its mask');

  let bad = 0;
  for (let i = 0; i < 32; i++) {
    const r = await fe.read(0, i * 8, 4096);
    if (r.status !== BlkStatus.OK || Buffer.compare(Buffer.from(r.data), Buffer.from(pattern(i, 4096))) !== 0) bad++;
  }
  t.equal(bad, 0, 'what was written before the move reads back after it');

  // I/O around a move: the front-end reconnects (its device restarts and is placed on core 1,
  // the emptier core again), then a writer/reader loop runs while the dynamic scheduler
  // moves the device home in one of the loop's pauses.
  py('framework_set_scheduler', 'static');
  fe.close();
  const fe2 = await VhostUserFrontend.connect(vhostd.socketOf('mover'), 5000, { waitAccepted: true });
  t.teardown(() => fe2.close());
  await fe2.negotiate({ numQueues: 1 });
  await fe2.setupQueue(0, 64);
  await waitFor(async () => (await coreOf('mover')) === 1, 20_000, 'mover placed on core 1 again', 50);
  t.pass('restarted device placed on core 1 again');
  let stop = false;
  let done = 0;
  let ioBad = 0;
  const loop = (async () => {
    for (let n = 0; !stop; n++) {
      const sector = 1024 + (n % 64) * 8;
      const data = pattern(1000 + n, 4096);
      const [w, w2] = await Promise.all([fe2.write(0, sector, data), fe2.write(0, sector + 2048, data)]);
      const r = await fe2.read(0, sector, 4096);
      if (w.status !== BlkStatus.OK || w2.status !== BlkStatus.OK || r.status !== BlkStatus.OK || Buffer.compare(Buffer.from(r.data), Buffer.from(data)) !== 0) ioBad++;
      done++;
      // Pauses between bursts let a scheduler period see the device idle.
      if (n % 16 === 15) await new Promise((res) => setTimeout(res, 300));
    }
  })();
  py('framework_set_scheduler', 'dynamic', '-p', '100000');
  await waitFor(async () => (await coreOf('mover')) === 0, 60_000, 'mover moved home under I/O', 100);
  // Some more I/O after the move, then stop.
  const after = done;
  await waitFor(() => done >= after + 20, 60_000, 'I/O after the move', 20);
  stop = true;
  await loop;
  t.equal(ioBad, 0, `${done} write+write+read rounds around the move: every request OK, data intact`);
  t.equal((await fe2.read(0, 0, 4096)).status, BlkStatus.OK);
  t.same(Buffer.from((await fe2.read(0, 0, 4096)).data), Buffer.from(pattern(0, 4096)), 'data from before both moves');
  py('framework_set_scheduler', 'static');
  t.equal((vhostd.daemon.log.match(/device moved ctrlr=mover from=1 to=0/g) ?? []).length, 2, 'two moves, both logged');
});
