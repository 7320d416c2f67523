/**
 * The generic vhost controller with the virtio-blk model, as the session
 * drives it (VhostBackend) against a recording engine worker: the DeviceDesc
 * it builds, placement, the per-queue / call fd / memory operations, config
 * space and SET_CONFIG, bdev events reaching the front-end, coalescing,
 * vhost_get_controllers' entry and save_config. Also the subsystem registry.
 * Runs on the tap main thread; no socket, no worker.
 */
import t from 'tap';
import type { DeviceDesc, QueueDesc, RegionDesc } from '../../engine/control';
import { BlkConfigOffset, BlkFeature, VirtioFeature } from '../../engine/virtio/spec';
import { BDEV_MODULES } from '../../reactor/bdev/modules';
import { BdevRegistry } from '../../reactor/bdev/registry';
import type { EngineWorker } from '../../reactor/engine-pool';
import { ErrorCode } from '../../reactor/errors';
import { Placement } from '../../reactor/placement';
import { SubsystemRegistry, SUBSYSTEMS, subsystemRegistry } from '../../reactor/subsystems';
import { orderedCalls } from '../../reactor/config';
import { BLK_MAX_QUEUES, BlkModel, blkConfigSpace } from '../../reactor/vhost/blk/model';
import { Controller } from '../../reactor/vhost/controller';

const bit = (n: number): bigint => 1n << BigInt(n);

function fixture(opts: { readonly?: boolean; failStart?: boolean } = {}) {
  const calls: unknown[][] = [];
  const bdevs = new BdevRegistry(BDEV_MODULES, { engine: { bdevResize: async (n, b) => void calls.push(['bdevResize', n, b]) } });
  const malloc = BDEV_MODULES.find((m) => m.name === 'malloc')!;
  const bdev = bdevs.create(malloc, { name: 'm0', blockSize: 4096 }, () => ({
    blockSize: 4096,
    numBlocks: 256,
    state: { storage: new SharedArrayBuffer(4096 * 256) },
  }));
  const placement = new Placement([0, 1, 2]);
  const worker = (core: number) =>
    ({
      start: async (device: DeviceDesc) => {
        calls.push(['start', core, device]);
        if (opts.failStart) throw new Error('refused');
      },
      stop: async (id: number) => (calls.push(['stop', core, id]), { queues: [{ index: 0, pos: { availIdx: 7, availWrap: false, usedIdx: 7, usedWrap: false } }] }),
      queueStart: async (id: number, q: QueueDesc) => void calls.push(['queueStart', core, id, q.index]),
      queueStop: async (id: number, index: number) => (calls.push(['queueStop', core, id, index]), { index, pos: { availIdx: 3, availWrap: false, usedIdx: 3, usedWrap: false } }),
      setCallFd: async (id: number, index: number, fd: number) => void calls.push(['setCallFd', core, id, index, fd]),
      memUpdate: async (id: number, regions: RegionDesc[]) => void calls.push(['memUpdate', core, id, regions.length]),
    }) as unknown as EngineWorker;
  const ctrl = new Controller({
    name: 'vhost.0',
    socketPath: '/nonexistent/vhost.0',
    socketMode: 0o600,
    cores: [1, 2],
    model: new BlkModel(bdev, opts.readonly ?? false),
    bdevs,
    engine: { worker },
    placement,
  });
  bdevs.claim(bdev, ctrl);
  return { calls, bdevs, bdev, placement, ctrl };
}

const queue = (index: number): QueueDesc => ({
  index,
  size: 128,
  descAddr: 0x1000,
  availAddr: 0x2000,
  usedAddr: 0x3000,
  pos: { availIdx: 0, availWrap: true, usedIdx: 0, usedWrap: true },
  kickFd: -1,
  callFd: -1,
});
const region: RegionDesc = { fd: 99, guestPhysAddr: 0, sizeBytes: 1 << 20, userAddr: 0x7f0000000000, mmapOffset: 0 };

t.test('start builds the generic DeviceDesc and places the device', async (t) => {
  const { calls, ctrl, placement } = fixture();
  const features = bit(VirtioFeature.Version1) | bit(BlkFeature.Flush);
  await ctrl.start({ features, regions: [region], queues: [queue(0)] });
  const [op, core, device] = calls[0] as [string, number, DeviceDesc];
  t.equal(op, 'start');
  t.equal(core, 1, 'least loaded core of the mask, lowest on a tie');
  t.equal(ctrl.core, 1);
  t.ok(device.id > 0);
  t.equal(device.name, 'vhost.0');
  t.equal(device.features, features);
  t.same(device.model, { kind: 'blk', readonly: false });
  t.equal(device.bdevs.length, 1);
  t.match(device.bdevs[0], { name: 'm0', module: 'malloc', blockSize: 4096, numBlocks: 256 });
  t.ok((device.bdevs[0].params as { storage: SharedArrayBuffer }).storage instanceof SharedArrayBuffer);
  t.same(device.regions, [region]);
  t.same(device.queues.map((q) => q.index), [0]);
  t.equal(device.stats, ctrl.stats);
  t.ok(device.coalescing instanceof SharedArrayBuffer);

  await ctrl.startQueue(queue(1));
  await ctrl.setCallFd(1, 42);
  await ctrl.updateMemory([region, { ...region, fd: 100, guestPhysAddr: 1 << 20 }]);
  t.same(await ctrl.stopQueue(1), { index: 1, pos: { availIdx: 3, availWrap: false, usedIdx: 3, usedWrap: false } });
  t.same(calls.slice(1), [
    ['queueStart', 1, device.id, 1],
    ['setCallFd', 1, device.id, 1, 42],
    ['memUpdate', 1, device.id, 2],
    ['queueStop', 1, device.id, 1],
  ]);
  ctrl.connectionChanged(true);
  t.match(ctrl.info().sessions, [{ started: true }]);

  const stopped = await ctrl.stop();
  t.same(stopped.queues.map((q) => q.index), [0]);
  t.equal(ctrl.core, -1);
  t.equal(placement.acquire([1, 2]), 1, 'core 1 was released');
  t.same(await ctrl.stop(), { queues: [] }, 'stop while stopped: nothing');
  await t.rejects(ctrl.startQueue(queue(0)), { code: ErrorCode.Internal }, 'queue ops need a running device');
  await t.rejects(ctrl.updateMemory([]), { code: ErrorCode.Internal });
});

t.test('a start the engine refuses leaves the core free', async (t) => {
  const { ctrl, placement } = fixture({ failStart: true });
  await t.rejects(ctrl.start({ features: 0n, regions: [], queues: [] }), /refused/);
  t.equal(ctrl.core, -1);
  t.equal(placement.acquire([1]), 1);
  t.equal(placement.acquire([1, 2]), 2, 'core 1 carries only the device just placed');
});

t.test('features, config space and SET_CONFIG of the blk model', async (t) => {
  const rw = fixture().ctrl;
  t.equal(rw.features & bit(VirtioFeature.VhostUserProtocolFeatures), bit(VirtioFeature.VhostUserProtocolFeatures), 'bit 30 added');
  t.equal(rw.features & bit(BlkFeature.Discard), bit(BlkFeature.Discard));
  t.equal(rw.features & bit(BlkFeature.Ro), 0n);
  t.equal(rw.maxQueues, BLK_MAX_QUEUES);
  const ro = fixture({ readonly: true }).ctrl;
  t.equal(ro.features & bit(BlkFeature.Ro), bit(BlkFeature.Ro), 'readonly: RO');
  t.equal(ro.features & (bit(BlkFeature.Discard) | bit(BlkFeature.WriteZeroes)), 0n, 'readonly: no discard, no write zeroes');

  const cfg = rw.readConfig(64);
  t.equal(cfg.length, 64, 'padded to the size asked');
  const v = new DataView(cfg.buffer);
  t.equal(v.getBigUint64(BlkConfigOffset.Capacity, true), 256n * 8n, 'capacity in 512-byte sectors');
  t.equal(v.getUint32(BlkConfigOffset.BlkSize, true), 4096);
  t.equal(v.getUint16(BlkConfigOffset.NumQueues, true), BLK_MAX_QUEUES);
  t.equal(v.getUint32(BlkConfigOffset.DiscardSectorAlignment, true), 8);
  t.equal(cfg[60], 0, 'zero past the struct');
  t.equal(rw.readConfig(8).length, BlkConfigOffset.Size, 'never shorter than the struct');
  t.equal(new DataView(ro.readConfig(60).buffer).getUint32(BlkConfigOffset.MaxDiscardSectors, true), 0, 'readonly: no discard limits');
  t.throws(() => blkConfigSpace({ blockSize: 1536, numBlocks: 1 }, 1, false), RangeError);

  t.equal(rw.writeConfig(BlkConfigOffset.Wce, Uint8Array.of(1)), true, 'wce stays writeback');
  t.equal(rw.writeConfig(BlkConfigOffset.Wce, Uint8Array.of(0)), false, 'writethrough refused (CONFIG_WCE not offered)');
  t.equal(rw.writeConfig(30, Uint8Array.of(0, 0, 0, 0)), false, 'a write covering wce with 0');
  t.equal(rw.writeConfig(0, new Uint8Array(8)), true, 'read-only fields: ignored');
});

t.test('a resized bdev reaches the workers, then the front-end', async (t) => {
  const { calls, bdevs, bdev, ctrl } = fixture();
  const notes: string[] = [];
  ctrl.attachSession({ notifyConfigChange: () => (notes.push('config change'), true), deviceFailed: () => undefined });
  await bdevs.resize(bdev, 512);
  t.same(calls, [['bdevResize', 'm0', 512]]);
  t.same(notes, ['config change']);
  t.equal(new DataView(ctrl.readConfig(60).buffer).getBigUint64(0, true), 512n * 8n, 'GET_CONFIG shows the new capacity');
  ctrl.attachSession(null);
  await bdevs.resize(bdev, 1024);
  t.same(notes, ['config change'], 'no session: nobody to tell');
});

t.test('coalescing, vhost_get_controllers and save_config', async (t) => {
  const { ctrl } = fixture({ readonly: true });
  t.same(ctrl.writeConfigCalls(), [
    { method: 'vhost_create_blk_controller', params: { ctrlr: 'vhost.0', dev_name: 'm0', cpumask: '0x6', readonly: true } },
  ]);
  t.throws(() => ctrl.setCoalescing(5000, 99), { code: ErrorCode.Invalid, message: /iops_threshold 99 is too low/ });
  t.throws(() => ctrl.setCoalescing(2 ** 32, 60000), { code: ErrorCode.Invalid, message: /too big/ });
  ctrl.setCoalescing(50, 100);
  t.same(ctrl.writeConfigCalls()[1], { method: 'vhost_controller_set_coalescing', params: { ctrlr: 'vhost.0', delay_base_us: 50, iops_threshold: 100 } });
  t.same(ctrl.info(), {
    ctrlr: 'vhost.0',
    cpumask: '0x6',
    delay_base_us: 50,
    iops_threshold: 100,
    socket: '/nonexistent/vhost.0',
    sessions: [],
    backend_specific: { block: { readonly: true, bdev: 'm0', transport: 'vhost_user_blk' } },
  });
});

t.test('subsystem registry', async (t) => {
  const reg = subsystemRegistry({ bdev: () => [{ method: 'a', params: {} }], vhost_blk: () => [], scsi: () => [], vhost_scsi: () => [], nvmf: () => [] });
  t.same(reg.list(), [
    { subsystem: 'bdev', depends_on: [] },
    { subsystem: 'vhost_blk', depends_on: ['bdev'] },
    { subsystem: 'scsi', depends_on: ['bdev'] },
    { subsystem: 'vhost_scsi', depends_on: ['scsi'] },
    { subsystem: 'nvmf', depends_on: ['bdev'] },
  ]);
  t.same(reg.config('bdev'), [{ method: 'a', params: {} }]);
  t.throws(() => reg.config('iscsi'), { code: ErrorCode.InvalidParams, message: "Subsystem 'iscsi' not found" }, 'only real subsystems');
  t.throws(() => new SubsystemRegistry([{ name: 'x', dependsOn: ['y'], writeConfig: () => [] }]), /depends on y/);
  t.same(SUBSYSTEMS.map((s) => s.name), ['bdev', 'vhost_blk', 'scsi', 'vhost_scsi', 'nvmf']);
  const order = orderedCalls({
    subsystems: [
      { subsystem: 'other', config: [{ method: 'o' }] },
      { subsystem: 'vhost_blk', config: [{ method: 'v' }] },
      { subsystem: 'bdev', config: [{ method: 'b' }] },
    ],
  }).map((c) => c.call.method);
  t.same(order, ['b', 'v', 'o'], 'replay: dependencies first, unknown subsystems last');
});
