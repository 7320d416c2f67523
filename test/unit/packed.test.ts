/**
 * Packed virtqueue (virtio 1.2 §2.8) against a driver-side mock written here
 * from the spec: chains made available with the driver's wrap counter (head
 * flags last), used descriptors read back in ring order, wrap-around of both
 * counters, indirect tables, event suppression, and refused rings (wrong
 * wrap bit, a chain without a final descriptor, bad or reused buffer ids).
 */
import t from 'tap';
import { ChainError, DescChain } from '../../engine/virtio/chain';
import { PLAIN_STORE_RELEASES } from '../../engine/virtio/order';
import { PackedQueue } from '../../engine/virtio/packed';
import { FEATURES, NEXT, PackedDriver } from '../lib/packed-driver';

function setup(size = 8) {
  const drv = new PackedDriver(size);
  const q = new PackedQueue(drv.memory(), drv.queueDesc(), FEATURES);
  return { drv, q, chain: new DescChain(16) };
}

t.test('chains in, used descriptors out in completion order, segments as laid out', async (t) => {
  const { drv, q, chain } = setup();
  const h = drv.alloc(16);
  const data = drv.alloc(4096);
  const st = drv.alloc(1);
  drv.add([{ addr: h, len: 16 }, { addr: data, len: 4096, write: true }, { addr: st, len: 1, write: true }], 5);
  drv.add([{ addr: h, len: 16 }, { addr: st, len: 1, write: true }], 2);
  t.equal(q.available(), 2, 'two chains');
  t.equal(q.pop(), 5, 'buffer id of the first chain');
  t.equal(q.walk(5, chain), ChainError.Ok);
  t.same([chain.count, chain.readable, chain.readableBytes, chain.writableBytes], [3, 1, 16, 4097]);
  t.equal(chain.offset[1], data);
  t.equal(chain.tailOffset, st, 'tail is the status byte');
  t.equal(q.pop(), 2);
  t.equal(q.walk(2, chain), ChainError.Ok);
  t.equal(q.available(), 0);
  t.same(drv.readUsed(), [], 'nothing used yet');
  q.push(2, 1);
  q.push(5, 4097);
  t.same(drv.readUsed(), [], 'not visible before publish');
  drv.setDriverEvent(0);
  t.equal(q.publish(), true, 'ENABLE: interrupt');
  t.same(drv.readUsed(), [{ id: 2, len: 1 }, { id: 5, len: 4097 }], 'in completion order');
  t.same(q.position(), { availIdx: 5, availWrap: true, usedIdx: 5, usedWrap: true }, 'used skips the slots of each chain');
});

t.test('flush() stores the used flags of what was pushed since the last flush; publish() decides for everything since the last decision', async (t) => {
  const { drv, q, chain } = setup();
  const h = drv.alloc(16);
  const st = drv.alloc(1);
  for (const id of [0, 1, 2]) drv.add([{ addr: h, len: 16 }, { addr: st, len: 1, write: true }], id);
  t.equal(q.available(), 3);
  for (let i = 0; i < 3; i++) t.equal(q.walk(q.pop(), chain), ChainError.Ok);
  drv.setDriverEvent(0);
  q.push(1, 1);
  t.equal(q.unflushed, 1);
  q.flush();
  t.same(drv.readUsed(), [{ id: 1, len: 1 }], 'visible after flush');
  t.equal(q.unflushed, 0);
  t.equal(q.pending, 1, 'still waiting for an interrupt decision');
  q.push(0, 1);
  q.push(2, 1);
  t.same(drv.readUsed(), [], 'the next ones are not visible before their flush');
  q.flush();
  t.same(drv.readUsed(), [{ id: 0, len: 1 }, { id: 2, len: 1 }], 'the second flush shows exactly the new ones');
  t.equal(q.publish(), true, 'ENABLE: the decision covers the flushed entries');
  t.equal(q.publish(), false, 'nothing pushed since');
  t.same(q.position(), { availIdx: 6, availWrap: true, usedIdx: 6, usedWrap: true });
});

t.test('wrap counters flip at the end of the ring, many times', async (t) => {
  const { drv, q, chain } = setup(5);
  const b = drv.alloc(16);
  const s = drv.alloc(1);
  for (let round = 0; round < 20; round++) {
    drv.add([{ addr: b, len: 16 }, { addr: s, len: 1, write: true }], round % 5);
    t.equal(q.available(), 1);
    const id = q.pop();
    t.equal(id, round % 5);
    t.equal(q.walk(id, chain), ChainError.Ok);
    q.push(id, 1);
    q.publish();
    t.same(drv.readUsed(), [{ id, len: 1 }]);
  }
  // 40 descriptors through a ring of 5: 8 wraps, counters back to 1.
  t.same(q.position(), { availIdx: 0, availWrap: true, usedIdx: 0, usedWrap: true });
  t.same([drv.availIdx, drv.availWrap], [0, true]);
});

t.test('chains counted by available() pop with their own lengths across wraps; pop() alone checks the chain itself', async (t) => {
  const { drv, q, chain } = setup(7);
  const b = drv.alloc(16);
  const s = drv.alloc(1);
  const lens = [1, 3, 2];
  const bufsOf = (n: number) => Array.from({ length: n }, (_, k) => (k === n - 1 ? { addr: s, len: 1, write: true } : { addr: b, len: 16 }));
  let slots = 0;
  for (let round = 0; round < 12; round++) {
    // Three chains (6 slots of 7) at once; every other round pop() runs without available() first.
    for (let k = 0; k < 3; k++) drv.add(bufsOf(lens[k]), k);
    if (round % 2 === 0) t.equal(q.available(), 3, `round ${round}: three chains counted`);
    for (let k = 0; k < 3; k++) {
      const id = q.pop();
      t.equal(id, k, `round ${round}: chain ${k} id`);
      t.equal(q.walk(id, chain), ChainError.Ok);
      t.equal(chain.count, lens[k], `round ${round}: chain ${k} has its own length`);
    }
    t.equal(q.available(), 0);
    for (let k = 2; k >= 0; k--) q.push(k, 1);
    q.publish();
    t.same(drv.readUsed().map((u) => u.id), [2, 1, 0]);
    slots += 6;
    t.same([q.position().availIdx, q.position().availWrap], [slots % 7, Math.floor(slots / 7) % 2 === 0], `round ${round}: position`);
  }
});

t.test('indirect tables 2 and 4 bytes off 16-byte alignment read as aligned ones', async (t) => {
  const { drv, q, chain } = setup();
  const h = drv.alloc(16);
  const d = drv.alloc(512);
  const st = drv.alloc(1);
  for (const [id, misalign] of [[3, 2], [4, 4], [5, 0]]) {
    drv.addIndirect([{ addr: h, len: 16 }, { addr: d, len: 256 + id, write: true }, { addr: st, len: 1, write: true }], id, misalign);
    t.equal(q.pop(), id);
    t.equal(q.walk(id, chain), ChainError.Ok);
    t.same([chain.count, chain.readable, chain.writableBytes, chain.len[1]], [3, 1, 257 + id, 256 + id], `table ${misalign} bytes off`);
  }
});

t.test('indirect table; event suppression both ways', async (t) => {
  const { drv, q, chain } = setup();
  const h = drv.alloc(16);
  const d = drv.alloc(512);
  const st = drv.alloc(1);
  drv.addIndirect([{ addr: h, len: 16 }, { addr: d, len: 512, write: true }, { addr: st, len: 1, write: true }], 7);
  t.equal(q.pop(), 7);
  t.equal(q.walk(7, chain), ChainError.Ok);
  t.same([chain.count, chain.readable, chain.writableBytes], [3, 1, 513]);
  q.push(7, 513);
  drv.setDriverEvent(1);
  t.equal(q.publish(), false, 'DISABLE: no interrupt');
  t.equal(q.settle(), false, 'DISABLE, settled: no interrupt');
  t.equal(q.unsettled, false);
  t.same(drv.readUsed(), [{ id: 7, len: 513 }]);
  q.setNotification(false);
  t.equal(drv.deviceEventFlags(), 1, 'kicks disabled while polling');
  q.setNotification(true);
  t.equal(drv.deviceEventFlags(), 0, 'enabled');

  // EVENT_IDX (DESC): interrupt only once the used position passes the driver's event offset.
  drv.add([{ addr: h, len: 16 }, { addr: st, len: 1, write: true }], 1);
  drv.add([{ addr: h, len: 16 }, { addr: st, len: 1, write: true }], 2);
  drv.add([{ addr: h, len: 16 }, { addr: st, len: 1, write: true }], 3);
  for (let i = 0; i < 3; i++) q.walk(q.pop(), chain);
  // used is at 1 now; ask to be told when the entry at 5 is used (wrap counter 1).
  drv.setDriverEvent(2, 0x8000 | 5);
  q.push(1, 1);
  t.equal(q.publish(), false, 'used 1→3: event 5 not passed');
  q.push(2, 1);
  t.equal(q.publish(), false, 'used 3→5: not passed (5 is the next to fill)');
  q.push(3, 1);
  t.equal(q.publish(), true, 'used 5→7: passed');
});

t.test('bad rings are refused, never followed', async (t) => {
  const b = { addr: 0x10000, len: 16 };
  const s = { addr: 0x10010, len: 1, write: true };
  {
    const { drv, q } = setup();
    drv.add([b, b, s], 1, { corrupt: 1 });
    t.equal(q.pop(), -1, 'a descriptor of the chain with the wrong wrap bit');
    t.match(q.broken, /not available/);
    t.equal(q.available(), 0, 'a broken queue offers nothing');
  }
  {
    const { drv, q } = setup(4);
    drv.add([b, b, b, b], 1, { noEnd: true });
    t.equal(q.pop(), -1, 'a chain without a final descriptor');
    t.match(q.broken, /no final descriptor|not available/);
  }
  {
    const { drv, q } = setup();
    drv.add([b, s], 9);
    t.equal(q.pop(), -1, 'buffer id >= ring size');
    t.match(q.broken, /buffer id 9/);
  }
  {
    const { drv, q, chain } = setup();
    drv.add([b, s], 3);
    drv.add([b, s], 3);
    t.equal(q.pop(), 3);
    q.walk(3, chain);
    t.equal(q.pop(), -1, 'an id still in flight');
    t.match(q.broken, /still in flight/);
  }
  {
    const { drv, q, chain } = setup();
    drv.addIndirect([b, s], 2);
    // Make it INDIRECT|NEXT: refused by the walk with a status-less error.
    const f = drv.v.getUint16(drv.ring + 14, true);
    drv.v.setUint16(drv.ring + 14, f | NEXT, true);
    drv.add([s], 4);
    const id = q.pop();
    t.equal(id, 4, 'the indirect+NEXT descriptor chains into the next one, whose id is taken');
    t.equal(q.walk(id, chain), ChainError.IndirectWithNext);
  }
  {
    const drv = new PackedDriver(8);
    t.throws(() => new PackedQueue(drv.memory(), { ...drv.queueDesc(), pos: { availIdx: 8, availWrap: true, usedIdx: 0, usedWrap: true } }, FEATURES), /not below the ring size/);
    t.throws(() => new PackedQueue(drv.memory(), { ...drv.queueDesc(), descAddr: (1 << 20) - 8 }, FEATURES), /not inside one memory region/);
  }
});

t.test('a "no interrupt" read without a barrier is settled later (order.ts): a driver that asked in between is told', async (t) => {
  const { drv, q, chain } = setup(8);
  const h = drv.alloc(16);
  const st = drv.alloc(1);
  for (const id of [0, 1, 2, 3]) drv.add([{ addr: h, len: 16 }, { addr: st, len: 1, write: true }], id);
  for (let i = 0; i < 4; i++) q.walk(q.pop(), chain);
  drv.setDriverEvent(0);
  q.push(0, 1);
  t.equal(q.publish(), true, 'ENABLE: interrupt');
  t.equal(q.unsettled, false, 'a yes is final');
  drv.setDriverEvent(1);
  q.push(1, 1);
  t.equal(q.publish(), false, 'DISABLE as read');
  t.equal(q.unsettled, PLAIN_STORE_RELEASES, 'undecided where the used flags were a plain store');
  // The driver switches to ENABLE (and re-checks the ring) while the device's decision is open.
  drv.setDriverEvent(0);
  t.equal(q.settle(), PLAIN_STORE_RELEASES, 'settled after a barrier: the driver now asks, so it is told');
  t.equal(q.unsettled, false);
  t.equal(q.settle(), false, 'nothing left to settle');
  // A yes while undecided decides everything before it.
  drv.setDriverEvent(1);
  q.push(2, 1);
  t.equal(q.publish(), false);
  t.equal(q.unsettled, PLAIN_STORE_RELEASES);
  drv.setDriverEvent(0);
  q.push(3, 1);
  t.equal(q.publish(), true, 'ENABLE as read: interrupt, final');
  t.equal(q.unsettled, false);
  t.same(drv.readUsed().map((u) => u.id), [0, 1, 2, 3]);
});

t.test('EVENT_IDX: a publish that would leave half a ring undecided settles at once (the event offset tells only within a ring)', async (t) => {
  const { drv, q, chain } = setup(4);
  const h = drv.alloc(16);
  const st = drv.alloc(1);
  drv.setDriverEvent(0);
  let id = 0;
  const one = (): boolean => {
    drv.add([{ addr: h, len: 16 }, { addr: st, len: 1, write: true }], id);
    q.walk(q.pop(), chain);
    q.push(id, 1);
    id = (id + 1) % 4;
    return q.publish();
  };
  t.equal(one(), true, 'the first decision interrupts');
  // Ask for slot 1 of a wrap-1 lap: just passed (the first chain used slots 0-1), next due two laps (4 chains) on.
  drv.setDriverEvent(2, 0x8000 | 1);
  const answers: boolean[] = [];
  for (let i = 0; i < 4; i++) answers.push(one());
  // Each chain takes 2 slots, half of this ring: on x86-64 every publish reaches the span and settles with a barrier.
  t.same(answers, [false, false, false, true], 'decided at each publish: only when slot 1 of a wrap-1 lap is used again');
  t.equal(q.unsettled, false, 'nothing left undecided');
});
