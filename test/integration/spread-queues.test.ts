/**
 * One device's queues on two cores (issue #12 item 2) on a real vhostd with
 * -m 0x3: a controller created with `spread_queues` runs queue 0 on core 0
 * and queue 1 on core 1 (framework_get_reactors lists it on both), I/O on
 * both queues reads back what either queue wrote (one bdev, two workers'
 * channels), a bdev resize reaches both workers (I/O past the old end works
 * on both queues), a queue stopped and restarted resumes where it ended, the
 * device stops and starts again, and save_config keeps the option.
 * Thread: test main thread.
 */
import t from 'tap';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus } from '../lib/frontend-wire';
import { startVhostd } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(120_000);

interface Reactors {
  reactors: { lcore: number; lw_threads: { name: string }[] }[];
}

function pattern(seed: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (seed * 13 + i * 5 + (i >> 8)) & 0xff;
  return b;
}

t.test('a device with spread queues on two cores', async (t) => {
  const vhostd = await startVhostd({ cpumask: '0x3', startTimeoutMs: 20_000 });
  t.teardown(() => vhostd.stop());
  await vhostd.rpc('bdev_null_create', { name: 'N0', num_blocks: 4096, block_size: 512 });
  await vhostd.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 8192, block_size: 512 });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'sp.m', dev_name: 'M0', spread_queues: true });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'sp.n', dev_name: 'N0', cpumask: '0x3', spread_queues: true });

  const fe = await VhostUserFrontend.connect(vhostd.socketOf('sp.m'), 5000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate({ numQueues: 2 });
  await fe.setupQueue(0, 64);
  await fe.setupQueue(1, 64);

  // The device starts asynchronously to the front-end's last message: wait for it to show.
  const coresOf = async (): Promise<number[]> =>
    ((await vhostd.rpc('framework_get_reactors')) as Reactors).reactors.filter((r) => r.lw_threads.some((l) => l.name.endsWith('sp.m'))).map((r) => r.lcore);
  await waitFor(async () => (await coresOf()).length === 2, 20_000, 'sp.m on two cores', 50);
  t.same(await coresOf(), [0, 1], 'the device runs on both cores of its mask');

  // Writes through one queue, reads through the other (different workers, one bdev).
  let bad = 0;
  for (let round = 0; round < 4; round++) {
    const sectors = Array.from({ length: 16 }, (_, i) => (round * 16 + i) * 8);
    const w = await Promise.all(sectors.map((s, i) => fe.write(i % 2, s, pattern(s, 4096))));
    if (w.some((x) => x.status !== BlkStatus.OK)) bad++;
    const r = await Promise.all(sectors.map((s, i) => fe.read((i + 1) % 2, s, 4096)));
    r.forEach((x, i) => {
      if (x.status !== BlkStatus.OK || Buffer.compare(Buffer.from(x.data), Buffer.from(pattern(sectors[i], 4096))) !== 0) bad++;
    });
  }
  t.equal(bad, 0, 'what one core wrote the other reads back');

  // inflight_task_cnt is a gauge each worker stores once per poll pass, after it publishes: a worker
  // preempted between the two (two busy workers on a 2-CPU host) shows the old count for a moment.
  type Sessions = { sessions: { max_queues: number; inflight_task_cnt: number }[] }[];
  const sessions = async () => ((await vhostd.rpc('vhost_get_controllers', { name: 'sp.m' })) as Sessions)[0].sessions;
  await waitFor(async () => (await sessions())[0]?.inflight_task_cnt === 0, 5_000, 'no request in flight on sp.m', 20);
  t.match(await sessions(), [{ max_queues: 2, inflight_task_cnt: 0 }]);

  // A queue stopped (GET_VRING_BASE) and restarted where it ended.
  const base = await fe.getVringBase(1);
  t.ok(base > 0, `queue 1 stopped at ${base}`);
  await fe.setupQueue(1, 64, { base });
  const again = await fe.read(1, 0, 4096);
  t.equal(again.status, BlkStatus.OK, 'the restarted queue serves I/O on its core');
  t.same(Buffer.from(again.data), Buffer.from(pattern(0, 4096)));

  // Resize of a null bdev behind a spread device: both workers learn the new size.
  const fn = await VhostUserFrontend.connect(vhostd.socketOf('sp.n'), 5000, { waitAccepted: true });
  t.teardown(() => fn.close());
  await fn.negotiate({ numQueues: 2 });
  await fn.setupQueue(0, 64);
  await fn.setupQueue(1, 64);
  const past = 4096; // the first sector past the old end
  t.equal((await fn.read(0, past, 512)).status, BlkStatus.IOERR, 'before the resize: past the end on queue 0');
  t.equal((await fn.read(1, past, 512)).status, BlkStatus.IOERR, 'and on queue 1');
  await vhostd.rpc('bdev_null_resize', { name: 'N0', new_size: 4 });
  t.equal((await fn.read(0, past, 512)).status, BlkStatus.OK, 'after: the worker of queue 0 knows the new size');
  t.equal((await fn.read(1, past, 512)).status, BlkStatus.OK, 'and the worker of queue 1');
  fn.close();

  const config = (await vhostd.rpc('framework_get_config', { name: 'vhost_blk' })) as { method: string; params: Record<string, unknown> }[];
  t.match(
    config.find((c) => c.params.ctrlr === 'sp.m'),
    { method: 'vhost_create_blk_controller', params: { spread_queues: true } },
    'save_config keeps spread_queues',
  );
});
