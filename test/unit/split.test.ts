/**
 * Split virtqueue and guest memory tests against a driver-side mock ring
 * (test/lib/mock-vring.ts): popping chains, 16-bit index wrap-around,
 * indirect tables, hostile chains, notification and interrupt decisions.
 */
import t from 'tap';
import { GuestMemory } from '../../engine/memory';
import { ChainError, DescChain } from '../../engine/virtio/chain';
import { PLAIN_STORE_RELEASES } from '../../engine/virtio/order';
import { QueueSetupError, SplitQueue, vringNeedEvent } from '../../engine/virtio/split';
import { F_EVENT_IDX, F_INDIRECT, F_VERSION_1, MockVring } from '../lib/mock-vring';

const BASE = F_VERSION_1 | F_INDIRECT;

function setup(features = BASE, size = 16) {
  const vr = new MockVring({ size });
  const mem = vr.memory();
  const q = new SplitQueue(mem, vr.queueDesc(), features);
  const chain = new DescChain(size);
  return { vr, mem, q, chain };
}

/** `n` chains of one 8-byte writable buffer (they share it) made available and popped: their heads. */
function popChains(vr: MockVring, q: SplitQueue, n: number): number[] {
  const b = vr.alloc(8);
  const heads: number[] = [];
  for (let i = 0; i < n; i++) heads.push(vr.addChain([{ addr: b, len: 8, write: true }]));
  for (let i = 0; i < n; i++) q.pop();
  return heads;
}

function segs(mem: GuestMemory, c: DescChain, gpaBase: number) {
  const out: { gpa: number; len: number; write: boolean }[] = [];
  for (let i = 0; i < c.count; i++) {
    out.push({ gpa: gpaBase + c.offset[i], len: c.len[i], write: i >= c.readable });
  }
  return out;
}

t.test('GuestMemory translate and uvaToGpa', async (t) => {
  const a = new ArrayBuffer(4096);
  const b = new ArrayBuffer(8192);
  const mem = GuestMemory.fromBuffers([
    { guestPhysAddr: 0, userAddr: 0x7f0000000000, buffer: a },
    { guestPhysAddr: 0x100000, userAddr: 0x7f0000100000, buffer: b },
  ]);
  t.equal(mem.translate(0, 4096), 0);
  t.equal(mem.offset, 0);
  t.equal(mem.translate(0x100010, 16), 1);
  t.equal(mem.offset, 0x10);
  t.equal(mem.translate(0x100000 + 8192 - 1, 1), 1, 'last byte');
  t.equal(mem.translate(0x100000 + 8192 - 1, 2), -1, 'one past the end');
  t.equal(mem.translate(4000, 200), -1, 'straddles the end of region 0');
  t.equal(mem.translate(4096, 1), -1, 'hole');
  t.equal(mem.translate(Number.MAX_SAFE_INTEGER, 1), -1, 'huge address');
  t.equal(mem.translate(0x100000, 2 ** 40), -1, 'huge length');
  t.equal(mem.uvaToGpa(0x7f0000100020, 8), 0x100020);
  t.equal(mem.uvaToGpa(0x7f0000000ff8, 16), -1, 'uva range straddles');
  t.throws(() => GuestMemory.fromBuffers([]), /1 to 32 regions/);
  mem.unmap();
  t.equal(mem.translate(0, 1), -1, 'nothing translates after unmap');
});

t.test('pops a direct chain with readable then writable segments', async (t) => {
  const { vr, mem, q, chain } = setup();
  const hdr = vr.alloc(16);
  const data = vr.alloc(4096);
  const st = vr.alloc(1);
  const head = vr.addChain([
    { addr: hdr, len: 16 },
    { addr: data, len: 4096, write: true },
    { addr: st, len: 1, write: true },
  ]);
  t.equal(q.available(), 1);
  t.equal(q.pop(), head);
  t.equal(q.walk(head, chain), ChainError.Ok);
  t.same(segs(mem, chain, vr.gpa), [
    { gpa: hdr, len: 16, write: false },
    { gpa: data, len: 4096, write: true },
    { gpa: st, len: 1, write: true },
  ]);
  t.equal(chain.readableBytes, 16);
  t.equal(chain.writableBytes, 4097);
  t.equal(q.available(), 0);

  q.push(head, 4097);
  t.same(vr.readUsed(), [], 'not visible before publish');
  q.publish();
  t.same(vr.readUsed(), [{ id: head, len: 4097 }]);
  t.equal(q.lastAvailIdx, 1);
});

t.test('zero-length descriptors are walked but not recorded', async (t) => {
  const { vr, q, chain } = setup();
  const a = vr.alloc(16);
  const head = vr.addChain([
    { addr: a, len: 16 },
    { addr: 0, len: 0 },
    { addr: a, len: 1, write: true },
  ]);
  q.available();
  q.pop();
  t.equal(q.walk(head, chain), ChainError.Ok);
  t.equal(chain.count, 2);
});

t.test('16-bit avail and used indices wrap around', async (t) => {
  const vr = new MockVring({ size: 8 });
  vr.startAt(65533);
  const mem = vr.memory();
  const q = new SplitQueue(mem, vr.queueDesc(0, 65533), BASE);
  const chain = new DescChain(8);
  const heads: number[] = [];
  for (let i = 0; i < 6; i++) {
    const b = vr.alloc(8);
    heads.push(vr.addChain([{ addr: b, len: 8, write: true }]));
  }
  t.equal(vr.availIdx, 3, 'driver index wrapped');
  t.equal(q.available(), 6);
  const popped: number[] = [];
  for (let i = 0; i < 6; i++) {
    const h = q.pop();
    t.equal(q.walk(h, chain), ChainError.Ok);
    popped.push(h);
    q.push(h, 8);
  }
  t.same(popped, heads);
  t.equal(q.lastAvailIdx, 3);
  t.equal(q.available(), 0);
  q.publish();
  t.equal(vr.usedIdx, 3);
  t.same(
    vr.readUsed().map((u) => u.id),
    heads,
  );
});

t.test('more than queue-size entries outstanding breaks the queue', async (t) => {
  const { vr, q } = setup(BASE, 8);
  vr.publishAvail(9);
  t.equal(q.available(), 0);
  t.match(q.broken, /more than the queue size/);
  vr.publishAvail(1);
  t.equal(q.available(), 0, 'a broken queue stays broken');
});

t.test('a head index beyond the queue size breaks the queue', async (t) => {
  const { vr, q } = setup(BASE, 8);
  vr.makeAvailable(8);
  t.equal(q.available(), 1);
  t.equal(q.pop(), -1);
  t.match(q.broken, /head 8/);
});

t.test('indirect descriptors, in an aligned table and in one 2 and 4 bytes off', async (t) => {
  for (const misalign of [0, 2, 4]) {
    const { vr, mem, q, chain } = setup();
    const hdr = vr.alloc(16);
    const d1 = vr.alloc(512);
    const d2 = vr.alloc(512);
    const st = vr.alloc(1);
    const head = vr.addIndirect(
      [
        { addr: hdr, len: 16 },
        { addr: d1, len: 512 },
        { addr: d2, len: 512 },
        { addr: st, len: 1, write: true },
      ],
      true,
      misalign,
    );
    q.available();
    t.equal(q.pop(), head);
    t.equal(q.walk(head, chain), ChainError.Ok);
    t.same(
      segs(mem, chain, vr.gpa),
      [
        { gpa: hdr, len: 16, write: false },
        { gpa: d1, len: 512, write: false },
        { gpa: d2, len: 512, write: false },
        { gpa: st, len: 1, write: true },
      ],
      `table ${misalign} bytes past 16-byte alignment`,
    );
  }
});

t.test('direct descriptors followed by an indirect one', async (t) => {
  const { vr, q, chain } = setup();
  const hdr = vr.alloc(16);
  const st = vr.alloc(1);
  const table = vr.alloc(16);
  vr.writeDesc(table, 0, st, 1, 2, 0);
  const d0 = vr.takeDesc();
  const d1 = vr.takeDesc();
  vr.writeDesc(vr.descAddr, d0, hdr, 16, 1, d1);
  vr.writeDesc(vr.descAddr, d1, table, 16, 4, 0);
  vr.makeAvailable(d0);
  q.available();
  q.pop();
  t.equal(q.walk(d0, chain), ChainError.Ok);
  t.equal(chain.count, 2);
  t.equal(chain.readable, 1);
});

t.test('indirect descriptors are refused when not negotiated', async (t) => {
  const { vr, q, chain } = setup(F_VERSION_1);
  const b = vr.alloc(16);
  const head = vr.addIndirect([{ addr: b, len: 16, write: true }]);
  q.available();
  q.pop();
  t.equal(q.walk(head, chain), ChainError.IndirectNotNegotiated);
});

t.test('invalid indirect tables', async (t) => {
  const { vr, q, chain } = setup(BASE, 8);
  const b = vr.alloc(16);
  const table = vr.alloc(16 * 16);
  const cases: [string, number, number, ChainError][] = [
    ['length not a multiple of 16', 24, 4, ChainError.BadIndirectTable],
    ['empty table', 0, 4, ChainError.BadIndirectTable],
    ['more entries than the queue size', 16 * 9, 4, ChainError.BadIndirectTable],
    ['INDIRECT with NEXT', 16, 4 | 1, ChainError.IndirectWithNext],
  ];
  for (const [name, len, flags, want] of cases) {
    vr.writeDesc(table, 0, b, 16, 2, 0);
    const d = vr.takeDesc();
    vr.writeDesc(vr.descAddr, d, table, len, flags, 0);
    vr.makeAvailable(d);
    q.available();
    q.pop();
    t.equal(q.walk(d, chain), want, name);
    q.push(d, 0);
    q.publish();
    vr.readUsed();
  }
  // Nested indirect: an INDIRECT entry inside the table.
  vr.writeDesc(table, 0, table, 16, 4, 0);
  const d = vr.takeDesc();
  vr.writeDesc(vr.descAddr, d, table, 16, 4, 0);
  vr.makeAvailable(d);
  q.available();
  q.pop();
  t.equal(q.walk(d, chain), ChainError.NestedIndirect);
  // An indirect table outside guest memory.
  const e = vr.takeDesc();
  vr.writeDesc(vr.descAddr, e, 0x7fff0000, 16, 4, 0);
  vr.makeAvailable(e);
  q.available();
  q.pop();
  t.equal(q.walk(e, chain), ChainError.BadAddress);
});

t.test('looping chains end after the TTL', async (t) => {
  const { vr, q, chain } = setup(BASE, 8);
  const b = vr.alloc(16);
  const d = vr.takeDesc();
  vr.writeDesc(vr.descAddr, d, b, 16, 1, d); // points at itself
  vr.makeAvailable(d);
  q.available();
  q.pop();
  t.equal(q.walk(d, chain), ChainError.TooLong, 'self loop');

  const x = vr.takeDesc();
  const y = vr.takeDesc();
  vr.writeDesc(vr.descAddr, x, b, 16, 1, y);
  vr.writeDesc(vr.descAddr, y, b, 16, 1, x);
  vr.makeAvailable(x);
  q.available();
  q.pop();
  t.equal(q.walk(x, chain), ChainError.TooLong, 'two-descriptor loop');

  // A loop inside an indirect table.
  const table = vr.alloc(32);
  vr.writeDesc(table, 0, b, 16, 1, 1);
  vr.writeDesc(table, 1, b, 16, 1, 0);
  const z = vr.takeDesc();
  vr.writeDesc(vr.descAddr, z, table, 32, 4, 0);
  vr.makeAvailable(z);
  q.available();
  q.pop();
  t.equal(q.walk(z, chain), ChainError.TooLong, 'indirect loop');
});

t.test('a chain longer than the queue size, counting indirect entries', async (t) => {
  const { vr, q, chain } = setup(BASE, 4);
  const b = vr.alloc(16);
  const table = vr.alloc(64);
  for (let i = 0; i < 4; i++) vr.writeDesc(table, i, b, 16, i < 3 ? 1 : 0, i + 1);
  const d0 = vr.takeDesc();
  const d1 = vr.takeDesc();
  vr.writeDesc(vr.descAddr, d0, b, 16, 1, d1);
  vr.writeDesc(vr.descAddr, d1, table, 64, 4, 0);
  vr.makeAvailable(d0);
  q.available();
  q.pop();
  t.equal(q.walk(d0, chain), ChainError.TooLong, '1 direct + 4 indirect data descriptors > 4');

  // Exactly queue-size data descriptors through an indirect table is fine.
  const e = vr.takeDesc();
  vr.writeDesc(vr.descAddr, e, table, 64, 4, 0);
  vr.makeAvailable(e);
  q.available();
  q.pop();
  t.equal(q.walk(e, chain), ChainError.Ok);
  t.equal(chain.count, 4);
});

t.test('hostile addresses and indices', async (t) => {
  const { vr, q, chain } = setup(BASE, 8);
  const ok = vr.alloc(16);
  const cases: [string, bigint, number, number, number, ChainError][] = [
    ['beyond guest memory', BigInt(vr.gpa + vr.buffer.byteLength), 16, 2, 0, ChainError.BadAddress],
    ['below guest memory', 0n, 16, 2, 0, ChainError.BadAddress],
    ['straddles the end', BigInt(vr.gpa + vr.buffer.byteLength - 8), 16, 2, 0, ChainError.BadAddress],
    ['addr + len overflows 2^64', 0xfffffffffffffff0n, 0x20, 2, 0, ChainError.BadAddress],
    ['address above 2^53', 1n << 60n, 16, 2, 0, ChainError.BadAddress],
    ['next out of range', BigInt(ok), 16, 1, 8, ChainError.NextOutOfRange],
  ];
  for (const [name, addr, len, flags, next, want] of cases) {
    const d = vr.takeDesc();
    const o = vr.descAddr - vr.gpa + 16 * d;
    vr.view.setBigUint64(o, addr, true);
    vr.view.setUint32(o + 8, len, true);
    vr.view.setUint16(o + 12, flags, true);
    vr.view.setUint16(o + 14, next, true);
    vr.makeAvailable(d);
    t.equal(q.available(), 1);
    t.equal(q.pop(), d);
    t.equal(q.walk(d, chain), want, name);
    q.push(d, 0);
    q.publish();
    vr.readUsed();
  }
  // Readable after writable (§2.7.4.2).
  const h = vr.addChain([
    { addr: ok, len: 8, write: true },
    { addr: ok, len: 8 },
  ]);
  q.available();
  q.pop();
  t.equal(q.walk(h, chain), ChainError.ReadableAfterWritable);
  t.equal(q.broken, null, 'chain errors do not break the queue');
});

t.test('queue setup refuses bad rings', async (t) => {
  const vr = new MockVring({ size: 8 });
  const mem = vr.memory();
  t.throws(() => new SplitQueue(mem, { ...vr.queueDesc(), size: 12 }, BASE), QueueSetupError, 'size not a power of 2');
  t.throws(() => new SplitQueue(mem, { ...vr.queueDesc(), size: 65536 }, BASE), QueueSetupError);
  t.throws(() => new SplitQueue(mem, { ...vr.queueDesc(), descAddr: vr.descAddr + 8 }, BASE), /aligned/);
  t.throws(() => new SplitQueue(mem, { ...vr.queueDesc(), usedAddr: vr.usedAddr + 2 }, BASE), /aligned/);
  t.throws(
    () => new SplitQueue(mem, { ...vr.queueDesc(), usedAddr: vr.gpa + vr.buffer.byteLength - 16 }, BASE),
    /not inside one memory region/,
  );
  t.throws(() => new SplitQueue(mem, { ...vr.queueDesc(), availAddr: 0x10 }, BASE), /not inside/);
  t.throws(() => new SplitQueue(mem, vr.queueDesc(0, 70000), BASE), /u16/);
});

t.test('vring_need_event', async (t) => {
  t.equal(vringNeedEvent(0, 1, 0), true, 'event at the old index');
  t.equal(vringNeedEvent(1, 1, 0), false, 'event not yet reached');
  t.equal(vringNeedEvent(4, 8, 2), true, 'event inside the window');
  t.equal(vringNeedEvent(8, 8, 2), false, 'event at the new index');
  t.equal(vringNeedEvent(1, 8, 2), false, 'event behind the window');
  t.equal(vringNeedEvent(65535, 2, 65534), true, 'window wraps');
  t.equal(vringNeedEvent(3, 2, 65534), false);
});

t.test('NO_INTERRUPT and NO_NOTIFY without EVENT_IDX', async (t) => {
  const { vr, q } = setup(BASE);
  q.setNotification(false);
  t.equal(vr.usedFlags, 1, 'VRING_USED_F_NO_NOTIFY while polling');
  q.setNotification(true);
  t.equal(vr.usedFlags, 0);

  t.equal(q.publish(), false, 'nothing to publish');
  const b = vr.alloc(8);
  for (let i = 0; i < 2; i++) vr.addChain([{ addr: b, len: 8, write: true }]);
  t.equal(q.available(), 2);
  const h0 = q.pop();
  const h1 = q.pop();
  vr.availFlags = 1; // VRING_AVAIL_F_NO_INTERRUPT
  q.push(h0, 1);
  t.equal(q.publish(), false, 'driver asked for no interrupts');
  vr.availFlags = 0;
  q.push(h1, 1);
  t.equal(q.publish(), true);
  t.equal(vr.usedIdx, 2);
});

t.test('EVENT_IDX: used_event decides interrupts, avail_event asks for kicks', async (t) => {
  const { vr, q } = setup(BASE | F_EVENT_IDX);
  q.setNotification(false);
  t.equal(vr.usedFlags, 0, 'flags unused with EVENT_IDX');
  t.equal(vr.availEvent, 0xffff, 'avail_event parked behind lastAvailIdx');
  q.setNotification(true);
  t.equal(vr.availEvent, 0, 'kick wanted for the next entry');

  const b = vr.alloc(8);
  const heads: number[] = [];
  for (let i = 0; i < 6; i++) heads.push(vr.addChain([{ addr: b, len: 8, write: true }]));
  t.equal(q.available(), 6);
  for (let i = 0; i < 6; i++) q.pop();
  q.setNotification(true);
  t.equal(vr.availEvent, 6);

  vr.availFlags = 1; // ignored with EVENT_IDX
  vr.usedEvent = 5;
  q.push(heads[0], 1);
  t.equal(q.publish(), true, 'the first decision always interrupts');
  q.push(heads[1], 1);
  q.push(heads[2], 1);
  t.equal(q.publish(), false, 'used idx 1→3 does not pass used_event 5');
  q.push(heads[3], 1);
  q.push(heads[4], 1);
  q.push(heads[5], 1);
  t.equal(q.publish(), true, 'used idx 3→6 passes used_event 5');
  t.equal(vr.usedIdx, 6);
  t.equal(vr.readUsed().length, 6);
});

t.test('a "no interrupt" read without a barrier is settled later (order.ts): a driver that asked in between is told', async (t) => {
  const { vr, q } = setup(BASE | F_EVENT_IDX);
  const heads = popChains(vr, q, 4);
  vr.usedEvent = 0x7fff;
  q.push(heads[0], 1);
  t.equal(q.publish(), true, 'the first decision always interrupts');
  t.equal(q.unsettled, false, 'a yes is final');
  q.push(heads[1], 1);
  t.equal(q.publish(), false, 'used_event far ahead as read');
  t.equal(q.unsettled, PLAIN_STORE_RELEASES, 'undecided where the used idx was a plain store');
  // The driver asks for an interrupt at entry 1 (and re-checks used idx) while the decision is open.
  vr.usedEvent = 1;
  t.equal(q.settle(), PLAIN_STORE_RELEASES, 'settled after a barrier: used idx 1→2 passed used_event 1');
  t.equal(q.unsettled, false);
  t.equal(q.settle(), false, 'nothing left to settle');
  vr.usedEvent = 0x7fff;
  q.push(heads[2], 1);
  t.equal(q.publish(), false);
  // Still undecided, a later publish that the driver wants decides both.
  vr.usedEvent = 2;
  q.push(heads[3], 1);
  t.equal(q.publish(), true, 'used idx 2→4 passed used_event 2');
  t.equal(q.unsettled, false);
  t.equal(vr.usedIdx, 4);

  // Without EVENT_IDX the flags word is read the same way.
  const f = setup(BASE);
  const fb = f.vr.alloc(8);
  const fh = [f.vr.addChain([{ addr: fb, len: 8, write: true }]), f.vr.addChain([{ addr: fb, len: 8, write: true }])];
  f.q.pop();
  f.q.pop();
  f.vr.availFlags = 1;
  f.q.push(fh[0], 1);
  t.equal(f.q.publish(), false, 'NO_INTERRUPT as read');
  f.vr.availFlags = 0;
  t.equal(f.q.settle(), PLAIN_STORE_RELEASES, 'the flag cleared before the settle: interrupt');
});

t.test('flush() makes used entries visible, publish() decides the interrupt for everything since the last decision', async (t) => {
  const { vr, q } = setup(BASE | F_EVENT_IDX);
  const heads = popChains(vr, q, 6);
  vr.usedEvent = 0xffff;
  q.push(heads[0], 1);
  t.equal(q.publish(), true, 'the first decision always interrupts');
  vr.usedEvent = 2; // interrupt once used idx passes 2
  q.push(heads[1], 1);
  q.push(heads[2], 1);
  t.equal(q.unflushed, 2);
  q.flush();
  t.equal(vr.usedIdx, 3, 'visible after flush');
  t.equal(q.unflushed, 0);
  t.equal(q.pending, 2, 'still waiting for an interrupt decision');
  q.flush();
  t.equal(vr.usedIdx, 3, 'a second flush with nothing new stores nothing new');
  q.push(heads[3], 1);
  t.equal(q.publish(), true, 'used idx 1→4 passed used_event 2 during the flush: the decision spans it');
  t.equal(vr.usedIdx, 4);
  t.equal(q.pending, 0);
  q.push(heads[4], 1);
  q.flush();
  t.equal(q.publish(), false, 'used idx 4→5, all flushed: decided (no interrupt: used_event 2 is behind)');
  t.equal(q.publish(), false, 'nothing pushed since');
  t.same(
    vr.readUsed().map((u) => u.id),
    heads.slice(0, 5),
  );
});

t.test('one walk locates the tail (status byte) even when a data buffer is bad', async (t) => {
  const { vr, q, chain } = setup(BASE, 16);
  const hdr = vr.alloc(16);
  const st = vr.alloc(1);
  const bad = vr.gpa + vr.buffer.byteLength + 4096;
  const h = vr.addChain([
    { addr: hdr, len: 16 },
    { addr: bad, len: 512, write: true },
    { addr: st, len: 1, write: true },
  ]);
  q.available();
  q.pop();
  t.equal(q.walk(h, chain), ChainError.BadAddress);
  t.equal(chain.tailRegion, 0, 'tail found');
  t.equal(chain.tailOffset, st - vr.gpa, 'tail is the last byte of the last descriptor');

  // A sound chain: the tail is the last byte of its last segment.
  const d = vr.alloc(8);
  const h2 = vr.addChain([{ addr: hdr, len: 16 }, { addr: d, len: 8, write: true }]);
  q.available();
  q.pop();
  t.equal(q.walk(h2, chain), ChainError.Ok);
  t.equal(chain.tailOffset, d - vr.gpa + 7);

  // Last descriptor readable, or outside memory, or a structural error: no tail.
  const h3 = vr.addChain([{ addr: bad, len: 16 }, { addr: hdr, len: 16 }]);
  q.available();
  q.pop();
  t.equal(q.walk(h3, chain), ChainError.BadAddress);
  t.equal(chain.tailRegion, -1, 'readable last descriptor: no tail');
  const h4 = vr.addChain([{ addr: hdr, len: 16 }, { addr: bad, len: 1, write: true }]);
  q.available();
  q.pop();
  t.equal(q.walk(h4, chain), ChainError.BadAddress);
  t.equal(chain.tailRegion, -1, 'tail outside guest memory');
  const loop = vr.takeDesc();
  vr.writeDesc(vr.descAddr, loop, st, 1, 1 | 2, loop);
  vr.makeAvailable(loop);
  q.available();
  q.pop();
  t.equal(q.walk(loop, chain), ChainError.TooLong);
  t.equal(chain.tailRegion, -1, 'a loop has no trusted tail');
});

t.test('a chain with more segments than the scratch holds is refused with its tail', async (t) => {
  const vr = new MockVring({ size: 16 });
  const q = new SplitQueue(vr.memory(), vr.queueDesc(), BASE);
  const chain = new DescChain(3);
  const b = vr.alloc(64);
  const st = vr.alloc(1);
  const ok = vr.addChain([{ addr: b, len: 16 }, { addr: b, len: 16, write: true }, { addr: st, len: 1, write: true }]);
  q.available();
  q.pop();
  t.equal(q.walk(ok, chain), ChainError.Ok, 'exactly the capacity');
  const h = vr.addChain([{ addr: b, len: 16 }, { addr: b, len: 16, write: true }, { addr: b, len: 16, write: true }, { addr: st, len: 1, write: true }]);
  q.available();
  q.pop();
  t.equal(q.walk(h, chain), ChainError.TooManySegments);
  t.equal(chain.count, 3, 'no segment beyond the capacity');
  t.equal(chain.tailOffset, st - vr.gpa, 'the tail is still found');
});

t.test('a buffer spanning guest regions adjacent in guest-physical space becomes two segments', async (t) => {
  const vr = new MockVring({ size: 8, memBytes: 1 << 20 });
  const next = new ArrayBuffer(1 << 16);
  const end = vr.gpa + vr.buffer.byteLength;
  const mem = GuestMemory.fromBuffers([
    { guestPhysAddr: vr.gpa, buffer: vr.buffer },
    { guestPhysAddr: end, buffer: next },
  ]);
  const q = new SplitQueue(mem, vr.queueDesc(), BASE);
  const chain = new DescChain(8);
  const hdr = vr.alloc(16);
  const h = vr.addChain([
    { addr: hdr, len: 16 },
    { addr: end - 100, len: 612, write: true },
  ]);
  q.available();
  q.pop();
  t.equal(q.walk(h, chain), ChainError.Ok);
  t.equal(chain.count, 3);
  t.same([chain.region[1], chain.offset[1], chain.len[1]], [0, vr.buffer.byteLength - 100, 100], 'first part: the end of region 0');
  t.same([chain.region[2], chain.offset[2], chain.len[2]], [1, 0, 512], 'second part: the start of region 1');
  t.equal(chain.writableBytes, 612);
  t.equal(chain.tailRegion, 1);
  t.equal(chain.tailOffset, 511);

  // Running on past the second region (into a hole) is still refused.
  const h2 = vr.addChain([{ addr: end - 100, len: 100 + (1 << 16) + 1, write: true }]);
  q.available();
  q.pop();
  t.equal(q.walk(h2, chain), ChainError.BadAddress);
});

t.test('in-flight hooks: the tracker sees every pop, push and publish', async (t) => {
  const { vr, q, chain } = setup();
  const events: string[] = [];
  q.tracker = {
    popped: (head) => events.push(`pop ${q.index}:${head}`),
    pushed: (head) => events.push(`push ${q.index}:${head}`),
    published: () => events.push(`publish ${q.index}`),
  };
  const b = vr.alloc(8);
  const h0 = vr.addChain([{ addr: b, len: 8, write: true }]);
  const h1 = vr.addChain([{ addr: b, len: 8, write: true }]);
  t.equal(q.available(), 2);
  t.equal(q.pop(), h0);
  t.equal(q.pop(), h1);
  t.equal(q.walk(h1, chain), ChainError.Ok);
  q.push(h1, 8);
  q.publish();
  q.push(h0, 8);
  q.publish();
  t.same(events, [`pop 0:${h0}`, `pop 0:${h1}`, `push 0:${h1}`, 'publish 0', `push 0:${h0}`, 'publish 0']);
  t.same(q.position(), { availIdx: 2, availWrap: false, usedIdx: 2, usedWrap: false });
});
