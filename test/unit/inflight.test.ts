/**
 * In-flight tracking (vhost-user INFLIGHT_SHMFD, split layout): the bytes
 * the region holds, resubmission after a back-end died (order, ring
 * positions, the last-batch repair), and refusals of regions that cannot be
 * ours — against a driver-side mock ring and, end to end in the engine, a
 * virtio-blk device that dies with requests in flight and a new one that
 * finishes them.
 */
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { type Bdev, type BdevChannel, type BdevIo, BdevIoStatus, BdevIoType } from '../../engine/bdev/bdev';
import { WorkerBdevLayer } from '../../engine/bdev/layer';
import { BDEV_MODULES } from '../../engine/bdev/modules';
import { type BlkTask, createBlkDevice } from '../../engine/blk/model';
import { type DeviceDesc, DeviceStat } from '../../engine/control';
import { GuestMemory } from '../../engine/memory';
import type { VirtioDevice } from '../../engine/virtio/device';
import { InflightRegion, inflightQueueBytes, inflightRegionBytes } from '../../engine/virtio/inflight';
import { BlkStatus, BlkType } from '../../engine/virtio/spec';
import { QueueSetupError, SplitQueue } from '../../engine/virtio/split';
import { F_EVENT_IDX, F_INDIRECT, F_VERSION_1, MockVring } from '../lib/mock-vring';

const FEATURES = F_VERSION_1 | F_INDIRECT | F_EVENT_IDX;

/** Offsets of the QEMU layout, written out here independently of the implementation. */
const H = { features: 0, version: 8, descNum: 10, lastBatchHead: 12, usedIdx: 14 };
const desc = (i: number) => 16 + 16 * i;

function chain(vr: MockVring): number {
  return vr.addChain([{ addr: vr.alloc(16), len: 16 }, { addr: vr.alloc(1), len: 1, write: true }]);
}

function ringUsedIdx(vr: MockVring): number {
  return vr.view.getUint16(vr.usedAddr - vr.gpa + 2, true);
}

t.test('layout: sizes as QEMU, libvhost-user and DPDK lay the region out', async (t) => {
  t.equal(inflightQueueBytes(128), 2112, '16 + 16·128 rounded up to 64');
  t.equal(inflightQueueBytes(256), 4160);
  t.equal(inflightQueueBytes(1), 64);
  t.equal(inflightRegionBytes(4, 128), 4 * 2112);
});

t.test('the counter carries past 2^30, 2^32 and 2^33 (its halves are kept as small integers)', async (t) => {
  for (const c0 of [2 ** 30 - 1, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 33 - 1, 2 ** 52 + 2 ** 30 - 1]) {
    const vr = new MockVring({ size: 8 });
    const v = new DataView(new ArrayBuffer(inflightRegionBytes(1, 8)));
    // The previous back-end took h0 with counter c0 - 1: the next one taken gets c0.
    const h0 = chain(vr);
    v.setUint16(H.descNum, 8, true);
    v.setUint16(H.version, 1, true);
    v.setUint8(desc(h0), 1);
    v.setBigUint64(desc(h0) + 8, BigInt(c0 - 1), true);
    const q = new SplitQueue(vr.memory(), vr.queueDesc(0), FEATURES);
    q.tracker = new InflightRegion(v, 1, 8).queue(0);
    t.equal(q.resumeInflight(), 1);
    t.equal(q.pop(), h0, 'the one in flight first');
    const heads = [chain(vr), chain(vr), chain(vr)];
    t.equal(q.available(), 3);
    for (const [k, h] of heads.entries()) {
      t.equal(q.pop(), h);
      t.equal(v.getBigUint64(desc(h) + 8, true), BigInt(c0) + BigInt(k), `counter ${c0} + ${k}`);
    }
  }
});

t.test('split queue: pop/push/publish write the region as the spec says', async (t) => {
  const vr = new MockVring({ size: 8 });
  const buf = new ArrayBuffer(inflightRegionBytes(2, 8));
  const v = new DataView(buf);
  const track = new InflightRegion(v, 2, 8).queue(1);
  const q = new SplitQueue(vr.memory(), vr.queueDesc(1), FEATURES);
  q.tracker = track;
  t.equal(q.resumeInflight(), 0, 'a fresh region resubmits nothing');
  const base = inflightQueueBytes(8); // queue 1
  t.equal(v.getUint16(base + H.version, true), 1, 'version 1 once the queue started');
  t.equal(v.getUint16(base + H.descNum, true), 8, 'desc_num = queue size');
  t.equal(v.getUint16(H.version, true), 0, 'queue 0 untouched');

  const heads = [chain(vr), chain(vr), chain(vr)];
  t.equal(q.available(), 3);
  const popped = [q.pop(), q.pop(), q.pop()];
  t.same(popped, heads);
  for (const [n, h] of heads.entries()) {
    t.equal(v.getUint8(base + desc(h)), 1, `head ${h} in flight`);
    t.equal(v.getBigUint64(base + desc(h) + 8, true), BigInt(n), `head ${h} counter ${n}`);
  }
  q.push(heads[2], 1);
  q.push(heads[0], 1);
  // The batch list is written once per batch, just before the used idx store (publish() calls this; it is idempotent).
  track.publishing();
  t.equal(ringUsedIdx(vr), 0, 'not yet published');
  t.equal(v.getUint16(base + H.lastBatchHead, true), heads[0], 'last_batch_head is the last pushed');
  t.equal(v.getUint16(base + desc(heads[0]) + 6, true), heads[2], 'its next is the one pushed before');
  t.equal(v.getUint8(base + desc(heads[2])), 1, 'still in flight until published');
  q.publish();
  t.equal(v.getUint8(base + desc(heads[2])), 0);
  t.equal(v.getUint8(base + desc(heads[0])), 0);
  t.equal(v.getUint8(base + desc(heads[1])), 1, 'the uncompleted one stays');
  t.equal(v.getUint16(base + H.usedIdx, true), 2, 'used_idx follows the ring');
  t.equal(ringUsedIdx(vr), 2);
});

t.test('restart: in-flight heads run again first, in the order they were taken; ring positions repaired', async (t) => {
  const vr = new MockVring({ size: 16 });
  const buf = new ArrayBuffer(inflightRegionBytes(1, 16));
  const q1 = new SplitQueue(vr.memory(), vr.queueDesc(0), FEATURES);
  q1.tracker = new InflightRegion(new DataView(buf), 1, 16).queue(0);
  q1.resumeInflight();
  const heads = [chain(vr), chain(vr), chain(vr), chain(vr), chain(vr)];
  for (let i = 0; i < 5; i++) q1.pop();
  // Completed out of order: 3 and 1; 0, 2, 4 are in flight when the back-end dies.
  q1.push(heads[3], 1);
  q1.push(heads[1], 1);
  q1.publish();
  const late = chain(vr); // the driver adds one more meanwhile

  // A new back-end: QEMU says the ring resumes at the used idx (it restored last_avail_idx from it).
  const q2 = new SplitQueue(vr.memory(), vr.queueDesc(0, ringUsedIdx(vr)), FEATURES);
  q2.tracker = new InflightRegion(new DataView(buf), 1, 16).queue(0);
  t.equal(q2.resumeInflight(), 3, 'three heads to resubmit');
  t.same(q2.position(), { availIdx: 5, availWrap: false, usedIdx: 2, usedWrap: false }, 'avail = used + in flight');
  t.equal(q2.available(), 3, 'the resubmitted ones come first');
  t.same([q2.pop(), q2.pop(), q2.pop()], [heads[0], heads[2], heads[4]], 'in counter order');
  t.equal(q2.available(), 1, 'then the new one');
  t.equal(q2.pop(), late);
  for (const h of [heads[4], heads[0], late, heads[2]]) q2.push(h, 1);
  q2.publish();
  t.same(
    vr.readUsed().map((u) => u.id),
    [heads[3], heads[1], heads[4], heads[0], late, heads[2]],
    'each request used exactly once',
  );
  t.equal(ringUsedIdx(vr), 6, 'every request used exactly once: 2 before the restart, 4 after');

  // A third back-end finds nothing in flight.
  const q3 = new SplitQueue(vr.memory(), vr.queueDesc(0, 6), FEATURES);
  q3.tracker = new InflightRegion(new DataView(buf), 1, 16).queue(0);
  t.equal(q3.resumeInflight(), 0);
  t.equal(q3.available(), 0);
});

t.test('restart after a published batch that was not cleared (died between used idx and the in-flight flags)', async (t) => {
  const vr = new MockVring({ size: 8 });
  const buf = new ArrayBuffer(inflightRegionBytes(1, 8));
  const q1 = new SplitQueue(vr.memory(), vr.queueDesc(0), FEATURES);
  q1.tracker = new InflightRegion(new DataView(buf), 1, 8).queue(0);
  q1.resumeInflight();
  const heads = [chain(vr), chain(vr), chain(vr)];
  for (let i = 0; i < 3; i++) q1.pop();
  // Without tracker.published: what the ring shows right after the used idx store.
  const tracker = q1.tracker;
  q1.tracker = { popped: () => {}, pushed: (h) => tracker.pushed(h), publishing: () => tracker.publishing?.(), published: () => {} };
  q1.push(heads[1], 1);
  q1.push(heads[0], 1);
  q1.publish();
  t.equal(new DataView(buf).getUint8(desc(heads[0])), 1, 'flags not cleared (simulated death)');

  const q2 = new SplitQueue(vr.memory(), vr.queueDesc(0, 2), FEATURES);
  q2.tracker = new InflightRegion(new DataView(buf), 1, 8).queue(0);
  t.equal(q2.resumeInflight(), 1, 'only the one never used is resubmitted');
  t.equal(q2.pop(), heads[2]);
  t.equal(new DataView(buf).getUint16(H.usedIdx, true), 2, 'used_idx repaired to the ring idx');
});

t.test('bad regions are refused, never followed', async (t) => {
  const vr = new MockVring({ size: 8 });
  const fresh = () => {
    const buf = new ArrayBuffer(inflightRegionBytes(1, 8));
    const v = new DataView(buf);
    v.setUint16(H.version, 1, true);
    v.setUint16(H.descNum, 8, true);
    return { buf, v };
  };
  const start = (buf: ArrayBuffer, size = 8, queue = 0) => {
    const q = new SplitQueue(vr.memory(), { ...vr.queueDesc(0), index: queue, size }, FEATURES);
    q.tracker = new InflightRegion(new DataView(buf), 1, 8).queue(queue);
    return q.resumeInflight();
  };
  t.throws(() => new InflightRegion(new DataView(new ArrayBuffer(100)), 1, 8), QueueSetupError, 'region too small');
  t.throws(() => new InflightRegion(new DataView(new ArrayBuffer(1 << 16)), 1, 0), QueueSetupError, 'queue size 0');
  {
    const { buf, v } = fresh();
    v.setUint16(H.version, 2, true);
    t.throws(() => start(buf), /version 2/, 'unknown layout version');
  }
  {
    const { buf, v } = fresh();
    v.setUint16(H.descNum, 16, true);
    t.throws(() => start(buf), /laid out for 16/, 'desc_num does not match');
  }
  {
    const { buf } = fresh();
    t.throws(() => start(buf, 16), /larger than/, 'queue larger than the region');
  }
  {
    const { buf } = fresh();
    t.throws(() => start(buf, 8, 1), /covers 1 queues/, 'queue beyond the region');
  }
  {
    const { buf, v } = fresh();
    v.setUint8(desc(3), 2);
    t.throws(() => start(buf), /flag of descriptor 3 is 2/);
  }
  {
    const { buf, v } = fresh();
    v.setUint8(desc(6), 1);
    t.throws(() => start(buf, 4), /larger than|queue has 4/, 'in-flight head past a smaller ring');
  }
  {
    // The ring says 5 were used since the record's used_idx: more than the queue... of 4.
    const { buf, v } = fresh();
    vr.view.setUint16(vr.usedAddr - vr.gpa + 2, 5, true);
    v.setUint16(H.usedIdx, 0, true);
    const q = new SplitQueue(vr.memory(), { ...vr.queueDesc(0), size: 4 }, FEATURES);
    q.tracker = new InflightRegion(v, 1, 8).queue(0);
    t.throws(() => q.resumeInflight(), /more than the queue size/);
    // A batch list that points outside the queue.
    v.setUint16(H.usedIdx, 4, true);
    v.setUint16(H.lastBatchHead, 7, true);
    t.throws(() => q.resumeInflight(), /batch list holds head 7/);
    vr.view.setUint16(vr.usedAddr - vr.gpa + 2, 0, true);
  }
});

/** A bdev whose I/O never completes: the back-end "dies" with it in flight. */
class StuckBdev implements Bdev {
  readonly name = 'Stuck0';
  readonly blockSize = 512;
  readonly numBlocks = 256;
  readonly held: BdevIo[] = [];
  ioTypeSupported(type: BdevIoType): boolean {
    return type === BdevIoType.Read || type === BdevIoType.Write;
  }
  createChannel(): BdevChannel {
    const held = this.held;
    const done: BdevIo[] = [];
    return {
      submit(io: BdevIo): void {
        // Writes to sector 8 complete; everything else is stuck.
        if (io.offsetBlocks === 8) {
          io.status = BdevIoStatus.Success;
          done.push(io);
        } else held.push(io);
      },
      poll(): number {
        const n = done.length;
        for (const io of done.splice(0)) io.onComplete();
        return n;
      },
      get outstanding() {
        return held.length + done.length;
      },
      destroy(): void {},
    };
  }
  destroy(): void {}
}

t.test('engine: a blk device dies with writes in flight; the next one finishes them before new requests', async (t) => {
  const vr = new MockVring({ size: 16, memBytes: 4 << 20 });
  const inflightBuf = new ArrayBuffer(inflightRegionBytes(1, 16));
  const INFLIGHT_FD = 1000;
  const storage = new SharedArrayBuffer(512 * 256);
  const write = (sector: number, fill: number) => {
    const h = vr.alloc(16);
    vr.view.setUint32(h - vr.gpa, BlkType.Out, true);
    vr.view.setBigUint64(h - vr.gpa + 8, BigInt(sector), true);
    const d = vr.alloc(512, fill);
    const st = vr.alloc(1, 0xee);
    return { head: vr.addChain([{ addr: h, len: 16 }, { addr: d, len: 512 }, { addr: st, len: 1, write: true }]), st };
  };
  const device = (bdevModule: 'stuck' | 'malloc', availIdx: number, stuck?: StuckBdev) => {
    const modules = new Map(BDEV_MODULES);
    if (stuck) modules.set('stuck', { name: 'stuck', open: () => stuck });
    const layer = new WorkerBdevLayer(modules);
    const d: DeviceDesc = {
      id: 1,
      name: 'vhost.0',
      features: FEATURES,
      model: { kind: 'blk', readonly: false },
      bdevs: [
        bdevModule === 'stuck'
          ? { name: 'Stuck0', module: 'stuck', blockSize: 512, numBlocks: 256, params: null }
          : { name: 'Malloc0', module: 'malloc', blockSize: 512, numBlocks: 256, params: { storage } },
      ],
      regions: [],
      queues: [{ ...vr.queueDesc(0, availIdx), callFd: 42, kickFd: 43 }],
      stats: new SharedArrayBuffer(DeviceStat.Count * 8),
      inflight: { fd: INFLIGHT_FD, mmapOffset: 0, sizeBytes: inflightBuf.byteLength, queueSize: 16, numQueues: 1 },
    };
    const env = {
      signal: () => {},
      mapMemory: (regions: readonly { fd: number }[]) =>
        regions[0]?.fd === INFLIGHT_FD ? GuestMemory.fromBuffers([{ guestPhysAddr: 0, buffer: inflightBuf }]) : vr.memory(),
      bdevs: layer,
    };
    const dev = createBlkDevice(d, env) as VirtioDevice<BlkTask>;
    return { dev, step: () => dev.poll() + layer.poll(performance.now()) + dev.poll() };
  };

  const stuck = new StuckBdev();
  const first = device('stuck', 0, stuck);
  const w = [write(0, 0xa0), write(8, 0xa1), write(16, 0xa2), write(24, 0xa3)];
  first.step();
  t.equal(first.dev.inflight, 3, 'three writes stuck in the dying back-end');
  t.same(vr.readUsed(), [{ id: w[1].head, len: 1 }], 'the one to sector 8 completed');
  // kill -9: the device is never stopped, its I/O never completes. The driver adds one more.
  const after = write(32, 0xa4);

  const second = device('malloc', ringUsedIdx(vr));
  for (let i = 0; i < 4; i++) second.step();
  t.same(
    vr.readUsed().map((u) => u.id),
    [w[0].head, w[2].head, w[3].head, after.head],
    'resubmitted in order, then the new request; each used once',
  );
  const bytes = new Uint8Array(storage);
  t.equal(bytes[0], 0xa0);
  t.equal(bytes[16 * 512], 0xa2);
  t.equal(bytes[24 * 512], 0xa3);
  t.equal(bytes[32 * 512], 0xa4);
  for (const x of [w[0], w[2], w[3], after]) t.equal(vr.bytes[x.st - vr.gpa], BlkStatus.Ok);
  t.equal(second.dev.inflight, 0);
  second.dev.beginStop();
  const res = second.dev.finishStop();
  t.same(res.queues[0].pos, { availIdx: 5, availWrap: false, usedIdx: 5, usedWrap: false });
  t.equal(new DataView(inflightBuf).getUint16(H.usedIdx, true), 5, 'the region agrees with the ring');
});
