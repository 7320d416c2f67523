/**
 * A controller with `spread_queues` (issue #12 item 2) against a recording
 * engine: queue i runs on the (i mod N)-th core of its mask, one engine
 * device per core with queues, each queue op goes to its queue's core only,
 * memory updates and stop reach every core (stop answers every queue's
 * position), placement counts each core, statistics add up over the cores,
 * save_config keeps the option. Without the option (SPDK's default) all
 * queues stay on one core. Main thread; no socket, no worker.
 */
import t from 'tap';
import { type DeviceDesc, DeviceStat, type QueueDesc, type RegionDesc } from '../../engine/control';
import { BDEV_MODULES } from '../../reactor/bdev/modules';
import { BdevRegistry } from '../../reactor/bdev/registry';
import type { EngineWorker } from '../../reactor/engine-pool';
import { Placement } from '../../reactor/placement';
import { BlkModel } from '../../reactor/vhost/blk/model';
import { Controller } from '../../reactor/vhost/controller';

function fixture(spreadQueues: boolean, cores = [1, 2], failOn = -1) {
  const calls: unknown[][] = [];
  const bdevs = new BdevRegistry(BDEV_MODULES, { engine: { bdevResize: async () => undefined } });
  const malloc = BDEV_MODULES.find((m) => m.name === 'malloc')!;
  const bdev = bdevs.create(malloc, { name: 'm0', blockSize: 512 }, () => ({
    blockSize: 512,
    numBlocks: 64,
    state: { storage: new SharedArrayBuffer(512 * 64) },
  }));
  const placement = new Placement([0, 1, 2]);
  /** device id → its queues (what each engine device runs). */
  const devices = new Map<number, { core: number; queues: Set<number>; stats: SharedArrayBuffer }>();
  const worker = (core: number) =>
    ({
      start: async (device: DeviceDesc) => {
        calls.push(['start', core, device.queues.map((q) => q.index)]);
        if (core === failOn) throw new Error('refused');
        devices.set(device.id, { core, queues: new Set(device.queues.map((q) => q.index)), stats: device.stats });
      },
      stop: async (id: number) => {
        const d = devices.get(id)!;
        devices.delete(id);
        calls.push(['stop', core]);
        return { queues: [...d.queues].map((index) => ({ index, pos: { availIdx: index * 10, availWrap: false, usedIdx: index * 10, usedWrap: false } })) };
      },
      queueStart: async (id: number, q: QueueDesc) => {
        if (devices.get(id)?.core !== core) throw new Error(`device ${id} is not on core ${core}`);
        devices.get(id)!.queues.add(q.index);
        calls.push(['queueStart', core, q.index]);
      },
      queueStop: async (id: number, index: number) => {
        const d = devices.get(id)!;
        if (d.core !== core || !d.queues.has(index)) throw new Error(`queue ${index} is not on core ${core}`);
        d.queues.delete(index);
        calls.push(['queueStop', core, index]);
        return { index, pos: { availIdx: 3, availWrap: false, usedIdx: 3, usedWrap: false } };
      },
      setCallFd: async (id: number, index: number) => {
        if (!devices.get(id)?.queues.has(index)) throw new Error(`queue ${index} is not on device ${id}`);
        calls.push(['setCallFd', core, index]);
      },
      memUpdate: async (id: number, regions: RegionDesc[]) => void calls.push(['memUpdate', core, regions.length]),
    }) as unknown as EngineWorker;
  const ctrl = new Controller({
    name: 'vhost.s',
    socketPath: '/nonexistent/vhost.s',
    socketMode: 0o600,
    cores,
    model: new BlkModel(bdev, false),
    bdevs,
    engine: { worker },
    placement,
    spreadQueues,
  });
  bdevs.claim(bdev, ctrl);
  return { calls, ctrl, placement, devices };
}

const queue = (index: number): QueueDesc => ({
  index,
  size: 128,
  descAddr: 0x1000 * (index + 1),
  availAddr: 0x2000,
  usedAddr: 0x3000,
  pos: { availIdx: 0, availWrap: false, usedIdx: 0, usedWrap: false },
  kickFd: -1,
  callFd: -1,
});
const region: RegionDesc = { fd: 99, guestPhysAddr: 0, sizeBytes: 1 << 20, userAddr: 0x7f0000000000, mmapOffset: 0 };

t.test('spread: queue i on the (i mod N)-th core, ops routed to it, stop and memUpdate on every core', async (t) => {
  const { calls, ctrl, placement, devices } = fixture(true);
  t.ok(ctrl.spreadQueues);
  await ctrl.start({ features: 0n, regions: [region], queues: [queue(0)] });
  t.same(calls, [['start', 1, [0]]], 'the device starts on the first core with queue 0');
  t.same(ctrl.runningCores(), [1]);
  await ctrl.startQueue(queue(1));
  await ctrl.startQueue(queue(2));
  await ctrl.startQueue(queue(3));
  t.same(calls.slice(1), [
    ['start', 2, [1]],
    ['queueStart', 1, 2],
    ['queueStart', 2, 3],
  ], 'queue 1 starts the engine device of core 2; 2 and 3 join cores 1 and 2');
  t.same(ctrl.runningCores(), [1, 2]);
  t.equal(placement.devicesOn(1), 1);
  t.equal(placement.devicesOn(2), 1, 'each core counts the device once');
  const byCore = [...devices.values()].map((d) => [d.core, [...d.queues].sort()]);
  t.same(byCore.sort(), [[1, [0, 2]], [2, [1, 3]]], 'each queue is owned by exactly one core');

  calls.length = 0;
  await ctrl.setCallFd(3, 77);
  t.same(await ctrl.stopQueue(2), { index: 2, pos: { availIdx: 3, availWrap: false, usedIdx: 3, usedWrap: false } });
  await ctrl.updateMemory([region, { ...region, fd: 100, guestPhysAddr: 1 << 20 }]);
  t.same(calls.slice(0, 2), [['setCallFd', 2, 3], ['queueStop', 1, 2]]);
  t.same(calls.slice(2).sort(), [['memUpdate', 1, 2], ['memUpdate', 2, 2]], 'memory updates reach every core');

  // A restarted queue on a core whose device runs: it joins it.
  await ctrl.startQueue(queue(2));
  t.same(calls[calls.length - 1], ['queueStart', 1, 2]);

  // Statistics: in-flight requests of both cores add up.
  const [d1, d2] = [...devices.values()];
  new Float64Array(d1.stats)[DeviceStat.InflightTasks] = 3;
  new Float64Array(d2.stats)[DeviceStat.InflightTasks] = 4;
  t.not(d1.stats, d2.stats, 'each core writes its own statistics words');
  ctrl.connectionChanged(true);
  t.match(ctrl.info().sessions, [{ started: true, inflight_task_cnt: 7, max_queues: 4 }]);
  new Float64Array(d1.stats)[DeviceStat.InflightTasks] = 0;
  new Float64Array(d2.stats)[DeviceStat.InflightTasks] = 0;

  calls.length = 0;
  const stopped = await ctrl.stop();
  t.same(stopped.queues.map((q) => q.index), [0, 1, 2, 3], 'stop answers the position of every queue, of both cores');
  t.same(calls.sort(), [['stop', 1], ['stop', 2]]);
  t.equal(ctrl.core, -1);
  t.same(ctrl.runningCores(), []);
  t.equal(placement.devicesOn(1), 0);
  t.equal(placement.devicesOn(2), 0);

  t.match(ctrl.writeConfigCalls()[0], { method: 'vhost_create_blk_controller', params: { ctrlr: 'vhost.s', cpumask: '0x6', spread_queues: true } });
});

t.test('spread: a start with several queues starts one engine device per core at once', async (t) => {
  const { calls, ctrl } = fixture(true, [0, 1, 2]);
  await ctrl.start({ features: 0n, regions: [region], queues: [0, 1, 2, 3, 4].map(queue) });
  t.same(calls, [
    ['start', 0, [0, 3]],
    ['start', 1, [1, 4]],
    ['start', 2, [2]],
  ]);
  await ctrl.stop();
});

t.test('spread: a core that refuses leaves no core counted and no device running', async (t) => {
  const { ctrl, placement, devices } = fixture(true, [1, 2], 2);
  await t.rejects(ctrl.start({ features: 0n, regions: [region], queues: [queue(0), queue(1)] }), /refused/);
  t.equal(devices.size, 0, 'the device started on core 1 was stopped again');
  t.equal(placement.devicesOn(1), 0);
  t.equal(placement.devicesOn(2), 0);
  t.equal(ctrl.core, -1);
});

t.test('default (SPDK): every queue on the one chosen core; save_config without the option', async (t) => {
  const { calls, ctrl } = fixture(false);
  t.notOk(ctrl.spreadQueues);
  await ctrl.start({ features: 0n, regions: [region], queues: [queue(0)] });
  await ctrl.startQueue(queue(1));
  await ctrl.startQueue(queue(2));
  t.same(calls, [
    ['start', 1, [0]],
    ['queueStart', 1, 1],
    ['queueStart', 1, 2],
  ]);
  t.same(ctrl.runningCores(), [1]);
  await ctrl.stop();
  t.notOk('spread_queues' in (ctrl.writeConfigCalls()[0].params as object));
});

t.test('spread on a one-core mask is the default', async (t) => {
  const { calls, ctrl } = fixture(true, [2]);
  t.notOk(ctrl.spreadQueues);
  await ctrl.start({ features: 0n, regions: [region], queues: [queue(0), queue(1)] });
  t.same(calls, [['start', 2, [0, 1]]]);
  await ctrl.stop();
});
