/**
 * The restart e2e tests' outside count of what a stopped vhostd holds in
 * flight (test/lib/inflight-probe.ts, written from vhost-user.rst) against
 * the engine's own resumption, on the states a kill can leave: requests in
 * flight, a batch pushed but not published, and — rare under a real kill,
 * so made here on purpose — a batch cut in the middle of its publication
 * (split: used idx stored, flags not cleared; packed: rolled back before the
 * flags, committed after). The probe must give the number of requests the
 * next back-end resubmits in each.
 */
import t from 'tap';
import { InflightRegion, inflightRegionBytes } from '../../engine/virtio/inflight';
import { PackedInflightRegion, packedInflightRegionBytes } from '../../engine/virtio/inflight-packed';
import { PackedQueue } from '../../engine/virtio/packed';
import { SplitQueue } from '../../engine/virtio/split';
import { countPackedQueue, countSplitQueue } from '../lib/inflight-probe';
import { F_EVENT_IDX, F_INDIRECT, F_VERSION_1, MockVring } from '../lib/mock-vring';
import { FEATURES, killInPublish, PackedDriver } from '../lib/packed-driver';

const SPLIT_FEATURES = F_VERSION_1 | F_INDIRECT | F_EVENT_IDX;

function chain(vr: MockVring): number {
  return vr.addChain([{ addr: vr.alloc(16), len: 16 }, { addr: vr.alloc(1), len: 1, write: true }]);
}

t.test('split: the probe counts what the next back-end resubmits', async (t) => {
  for (const how of ['in flight', 'pushed, not published', 'used idx stored, flags not cleared'] as const) {
    const vr = new MockVring({ size: 8 });
    const buf = new ArrayBuffer(inflightRegionBytes(1, 8));
    const q1 = new SplitQueue(vr.memory(), vr.queueDesc(0), SPLIT_FEATURES);
    const tracker = new InflightRegion(new DataView(buf), 1, 8).queue(0);
    q1.tracker = tracker;
    q1.resumeInflight();
    const heads = [chain(vr), chain(vr), chain(vr), chain(vr)];
    for (let i = 0; i < 4; i++) q1.pop();
    // One published completion in every case.
    q1.push(heads[3], 1);
    q1.publish();
    if (how === 'pushed, not published') {
      q1.push(heads[1], 1);
      q1.push(heads[0], 1);
    } else if (how === 'used idx stored, flags not cleared') {
      // The process dies inside publish(), after the used idx store.
      q1.tracker = { popped: () => {}, pushed: (h) => tracker.pushed(h), publishing: () => tracker.publishing(), published: () => {} };
      q1.push(heads[1], 1);
      q1.push(heads[0], 1);
      q1.publish();
    }
    const probe = countSplitQueue(Buffer.from(buf), { queue: 0, size: 8, descPhys: vr.descAddr, usedPhys: vr.usedAddr }, (gpa, len) =>
      Buffer.from(vr.buffer, gpa - vr.gpa, len),
    );
    const q2 = new SplitQueue(vr.memory(), vr.queueDesc(0, 2), SPLIT_FEATURES);
    q2.tracker = new InflightRegion(new DataView(buf), 1, 8).queue(0);
    const again = q2.resumeInflight();
    t.equal(probe.n, again, `${how}: probe ${probe.n} (${probe.repair}), resubmitted ${again}`);
    t.equal(again, how === 'used idx stored, flags not cleared' ? 1 : 3, `${how}: what the guest has not seen`);
    t.equal(probe.repair, how === 'used idx stored, flags not cleared' ? 'last batch of 2 published' : 'none', `${how}: the repair the spec asks for`);
  }
});

t.test('packed: the probe counts what the next back-end resubmits', async (t) => {
  for (const how of ['in flight', 'cut before the flags', 'cut after the flags'] as const) {
    const drv = new PackedDriver(8);
    const buf = new ArrayBuffer(packedInflightRegionBytes(1, 8));
    const r = new PackedInflightRegion(new DataView(buf), 1, 8);
    const start = (): { q: PackedQueue; again: number } => {
      const q = new PackedQueue(drv.memory(), { ...drv.queueDesc(), pos: { availIdx: 0, availWrap: true, usedIdx: 0, usedWrap: true } }, FEATURES);
      q.inflight = r;
      return { q, again: q.resumeInflight() };
    };
    const q0 = start().q;
    drv.add([{ addr: drv.alloc(16), len: 16 }, { addr: drv.alloc(1), len: 1, write: true }], 3);
    drv.add([{ addr: drv.alloc(1), len: 1, write: true }], 0);
    drv.add([{ addr: drv.alloc(1), len: 1, write: true }], 5);
    q0.pop();
    q0.pop();
    q0.pop();
    if (how !== 'in flight') {
      q0.push(0, 1);
      q0.push(3, 1);
      killInPublish(r, 0, how === 'cut before the flags');
      t.throws(() => q0.publish(), /killed/);
    }
    const probe = countPackedQueue(Buffer.from(buf), { queue: 0, size: 8, descPhys: drv.ring, usedPhys: drv.devEvent }, (gpa, len) => Buffer.from(drv.buf, gpa, len));
    const { again } = start();
    t.equal(probe.n, again, `${how}: probe ${probe.n} (${probe.repair}), resubmitted ${again}`);
    t.equal(again, how === 'cut after the flags' ? 1 : 3, `${how}: what the guest has not seen`);
    t.equal(probe.repair, { 'in flight': 'none', 'cut before the flags': 'batch rolled back', 'cut after the flags': 'batch committed' }[how], `${how}: the repair the spec asks for`);
  }
});
