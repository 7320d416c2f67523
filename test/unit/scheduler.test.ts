/**
 * The scheduler (issue #12 item 3): framework_set_scheduler's checks and
 * framework_get_scheduler's shape; the dynamic policy (planMoves) on given
 * loads; and Controller.move against a recording engine: the device stops
 * on its core (drain + ring positions), then starts on the target core with
 * the same queues at exactly those positions and its current call fds; a
 * front-end operation issued during a move waits for it; a refused start
 * goes back to the old core. Main thread; no socket, no worker.
 */
import t from 'tap';
import type { DeviceDesc, QueueDesc, RegionDesc } from '../../engine/control';
import { BDEV_MODULES } from '../../reactor/bdev/modules';
import { BdevRegistry } from '../../reactor/bdev/registry';
import type { EngineWorker } from '../../reactor/engine-pool';
import { Placement } from '../../reactor/placement';
import { planMoves, Scheduler, type SchedDevice } from '../../reactor/scheduler';
import { BlkModel } from '../../reactor/vhost/blk/model';
import { Controller } from '../../reactor/vhost/controller';

t.test('framework_set_scheduler / framework_get_scheduler', async (t) => {
  const s = new Scheduler({ cores: [0, 1], ticks: () => ({ busyNs: 0, idleNs: 0 }), devices: () => [] });
  t.teardown(() => s.close());
  t.same(s.get(), { scheduler_name: 'static', scheduler_period: 1_000_000 });
  s.set({ name: 'dynamic', period: 500_000, load_limit: 10 });
  t.same(s.get(), { scheduler_name: 'dynamic', scheduler_period: 500_000, load_limit: 10, core_limit: 80, core_busy: 95 });
  t.throws(() => s.set({ name: 'gscheduler' }), /not found/);
  t.throws(() => s.set({ name: 'dynamic', core_busy: 101 }), /percentage/);
  t.throws(() => s.set({ name: 'static', mappings: '1:2' }), /mappings/);
  s.set({ name: 'static' });
  t.same(s.get(), { scheduler_name: 'static', scheduler_period: 500_000 }, 'the period stays as set');
});

function dev(name: string, core: number, cores: number[], spread = false): SchedDevice & { moved: number[] } {
  const moved: number[] = [];
  return { name, core, cores, spreadQueues: spread, activity: () => ({ callSignals: 0, inflight: 0 }), move: async (to) => (moved.push(to), true), moved };
}

t.test('dynamic policy: idle devices gather on the first core of their mask; a busy core sheds its lighter device', async (t) => {
  const limits = { loadLimit: 20, coreLimit: 80, coreBusy: 95 };
  const idleOn1 = dev('a', 1, [0, 1]);
  const pinned = dev('b', 1, [1]);
  const spread = dev('c', 1, [0, 1], true);
  const home = dev('d', 0, [0, 1]);
  const m1 = planMoves(new Map([[0, 5], [1, 5]]), [
    { device: idleOn1, active: false, weight: 0 },
    { device: pinned, active: false, weight: 0 },
    { device: spread, active: false, weight: 0 },
    { device: home, active: false, weight: 0 },
  ], limits);
  t.same(m1.map((m) => [m.device.name, m.to, m.why]), [['a', 0, 'idle']], 'only the idle device off its home core moves; pinned and spread ones stay');

  const heavy = dev('h', 0, [0, 1]);
  const light = dev('l', 0, [0, 1]);
  const m2 = planMoves(new Map([[0, 99], [1, 3]]), [
    { device: heavy, active: true, weight: 9000 },
    { device: light, active: true, weight: 100 },
  ], limits);
  t.same(m2.map((m) => [m.device.name, m.to, m.why]), [['l', 1, 'busy']], 'the lighter device leaves the saturated core for the idle one');

  const m3 = planMoves(new Map([[0, 99], [1, 90]]), [
    { device: heavy, active: true, weight: 9000 },
    { device: light, active: true, weight: 100 },
  ], limits);
  t.same(m3, [], 'no move onto a core that is full (>= core_limit)');
  const m4 = planMoves(new Map([[0, 90], [1, 3]]), [
    { device: heavy, active: true, weight: 9000 },
    { device: light, active: true, weight: 100 },
  ], limits);
  t.same(m4, [], 'no move while the core is below core_busy');
  const m5 = planMoves(new Map([[0, 99], [1, 3]]), [{ device: heavy, active: true, weight: 9000 }], limits);
  t.same(m5, [], 'a single device is not moved off its own core');
});

t.test('a dynamic scheduler tick measures and moves', async (t) => {
  const a = dev('a', 1, [0, 1]);
  const s = new Scheduler({ cores: [0, 1], ticks: (c) => ({ busyNs: c === 0 ? 0 : 1e6, idleNs: 1e9 }), devices: () => [a] });
  t.teardown(() => s.close());
  s.set({ name: 'dynamic', period: 3_600_000_000 }); // no timer tick during the test
  t.equal(await s.tick(), 1, 'a period without completions or requests in flight since the scheduler was set: moved home');
  t.same(a.moved, [0]);
});

function fixture(failOnCore = -1) {
  const calls: unknown[][] = [];
  const bdevs = new BdevRegistry(BDEV_MODULES, { engine: { bdevResize: async () => undefined } });
  const malloc = BDEV_MODULES.find((m) => m.name === 'malloc')!;
  const bdev = bdevs.create(malloc, { name: 'm0', blockSize: 512 }, () => ({ blockSize: 512, numBlocks: 64, state: { storage: new SharedArrayBuffer(512 * 64) } }));
  const placement = new Placement([0, 1]);
  let gate: Promise<void> | null = null;
  const worker = (core: number) =>
    ({
      start: async (device: DeviceDesc) => {
        calls.push(['start', core, device.queues.map((q) => [q.index, q.pos.availIdx, q.callFd])]);
        if (core === failOnCore) throw new Error('refused');
      },
      stop: async () => {
        calls.push(['stop', core]);
        if (gate) await gate;
        return { queues: [{ index: 0, pos: { availIdx: 17, availWrap: false, usedIdx: 17, usedWrap: false } }, { index: 1, pos: { availIdx: 5, availWrap: false, usedIdx: 5, usedWrap: false } }] };
      },
      queueStart: async () => undefined,
      queueStop: async (_id: number, index: number) => (calls.push(['queueStop', core, index]), { index, pos: { availIdx: 1, availWrap: false, usedIdx: 1, usedWrap: false } }),
      setCallFd: async (_id: number, index: number, fd: number) => void calls.push(['setCallFd', core, index, fd]),
      memUpdate: async () => undefined,
    }) as unknown as EngineWorker;
  const ctrl = new Controller({ name: 'mv', socketPath: '/nonexistent/mv', socketMode: 0o600, cores: [0, 1], model: new BlkModel(bdev, false), bdevs, engine: { worker }, placement });
  bdevs.claim(bdev, ctrl);
  return { calls, ctrl, placement, hold: () => { let release!: () => void; gate = new Promise((r) => (release = r)); return () => { gate = null; release(); }; } };
}

const q = (index: number, callFd: number): QueueDesc => ({
  index,
  size: 64,
  descAddr: 0x1000,
  availAddr: 0x2000,
  usedAddr: 0x3000,
  pos: { availIdx: 0, availWrap: false, usedIdx: 0, usedWrap: false },
  kickFd: 10 + index,
  callFd,
});
const region: RegionDesc = { fd: 9, guestPhysAddr: 0, sizeBytes: 1 << 20, userAddr: 0, mmapOffset: 0 };

t.test('Controller.move: stop (drain) on the old core, start on the new one at the ring positions it ended at', async (t) => {
  const { calls, ctrl, placement, hold } = fixture();
  await ctrl.start({ features: 0n, regions: [region], queues: [q(0, 20)] });
  await ctrl.startQueue(q(1, 21));
  await ctrl.setCallFd(1, 31);
  t.equal(ctrl.core, 0);
  calls.length = 0;

  const release = hold();
  const moving = ctrl.move(1);
  // The front-end asks for something while the device is moving: it waits for the move.
  const during = ctrl.stopQueue(1);
  await new Promise((r) => setImmediate(r));
  t.same(calls, [['stop', 0]], 'nothing else reaches the engine while the old core drains');
  release();
  t.equal(await moving, true);
  const stopped = await during;
  t.same(calls, [
    ['stop', 0],
    ['start', 1, [[0, 17, 20], [1, 5, 31]]],
    ['queueStop', 1, 1],
  ], 'restarted at the positions the stop answered, with the current call fd; the queued op then goes to the new core');
  t.equal(stopped.index, 1);
  t.equal(ctrl.core, 1);
  t.equal(placement.devicesOn(0), 0);
  t.equal(placement.devicesOn(1), 1);
  t.equal(ctrl.moves, 1);
  t.equal(await ctrl.move(1), false, 'no move to where it is');
  await ctrl.stop();
  t.equal(await ctrl.move(0), false, 'a stopped device does not move');
});

t.test('Controller.move: a start the target core refuses goes back to the old core', async (t) => {
  const { calls, ctrl, placement } = fixture(1);
  await ctrl.start({ features: 0n, regions: [region], queues: [q(0, 20)] });
  calls.length = 0;
  t.equal(await ctrl.move(1), false);
  t.same(calls.map((c) => c.slice(0, 2)), [['stop', 0], ['start', 1], ['start', 0]]);
  t.equal(ctrl.core, 0, 'running on its old core again');
  t.equal(placement.devicesOn(0), 1);
  t.equal(placement.devicesOn(1), 0);
  await ctrl.stop();
});
