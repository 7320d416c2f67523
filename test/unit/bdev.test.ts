/**
 * The malloc and null modules' engine halves and the completion queue
 * (the worker's bdev layer on top of them: bdev-layer.test.ts).
 */
import t from 'tap';
import fs from 'node:fs';
import { native } from '../../bindings';

type Tap = Pick<typeof t, "equal">;
import { type Bdev, BdevIo, BdevIoStatus, BdevIoType, CompletionQueue } from '../../engine/bdev/bdev';
import { MallocBdev, mallocEngine } from '../../modules/bdev/malloc/engine';
import { NullBdev, nullEngine } from '../../modules/bdev/null/engine';

class TestIo extends BdevIo {
  completions: BdevIoStatus[] = [];
  constructor(
    capacity = 8,
    readonly order?: TestIo[],
  ) {
    super(capacity);
  }
  override done(): void {
    this.completions.push(this.status);
    this.order?.push(this);
  }
}

function run(t: Tap, bdev: Bdev, io: TestIo): BdevIoStatus {
  const ch = bdev.createChannel();
  ch.submit(io);
  t.equal(io.completions.length, 0, 'no completion inside submit()');
  t.equal(ch.outstanding, 1);
  t.equal(ch.poll(), 1);
  t.equal(ch.outstanding, 0);
  t.equal(io.completions.length, 1, 'completed exactly once');
  ch.destroy();
  return io.completions[0];
}

function malloc(numBlocks = 16, blockSize = 512) {
  const sab = new SharedArrayBuffer(numBlocks * blockSize);
  return { bdev: new MallocBdev('Malloc0', blockSize, numBlocks, sab), storage: new Uint8Array(sab) };
}

t.test('malloc: scattered write then read', async (t) => {
  const { bdev, storage } = malloc();
  const guest = new Uint8Array(8192);
  for (let i = 0; i < 1536; i++) guest[100 + i] = (i * 7) & 0xff;
  const w = new TestIo();
  w.prepare(BdevIoType.Write, 2, 3);
  w.addIov(guest, 100, 1000);
  w.addIov(guest, 1100, 536);
  t.equal(run(t, bdev, w), BdevIoStatus.Success);
  t.same(storage.subarray(1024, 1024 + 1536), guest.subarray(100, 1636));
  t.equal(storage[1023], 0, 'nothing before');
  t.equal(storage[1024 + 1536], 0, 'nothing after');

  const other = new Uint8Array(4096);
  const r = new TestIo();
  r.prepare(BdevIoType.Read, 2, 3);
  r.addIov(other, 0, 512);
  r.addIov(other, 2048, 1024);
  t.equal(run(t, bdev, r), BdevIoStatus.Success);
  t.same(other.subarray(0, 512), guest.subarray(100, 612));
  t.same(other.subarray(2048, 3072), guest.subarray(612, 1636));
  t.equal(other[512], 0, 'gap between iovs untouched');
});

t.test('malloc: refuses bad ranges and scatter lists', async (t) => {
  const { bdev, storage } = malloc();
  const buf = new Uint8Array(1024).fill(9);
  const cases: [string, (io: TestIo) => void][] = [
    ['past the end', (io) => { io.prepare(BdevIoType.Write, 15, 2); io.addIov(buf, 0, 1024); }],
    ['offset beyond 2^53', (io) => { io.prepare(BdevIoType.Write, 2 ** 60, 1); io.addIov(buf, 0, 512); }],
    ['scatter list shorter than the blocks', (io) => { io.prepare(BdevIoType.Write, 0, 2); io.addIov(buf, 0, 512); }],
    ['iov beyond its buffer', (io) => { io.prepare(BdevIoType.Write, 0, 2); io.addIov(buf, 512, 1024); }],
    ['unmap past the end', (io) => io.prepare(BdevIoType.Unmap, 10, 7)],
  ];
  for (const [name, setup] of cases) {
    const io = new TestIo();
    setup(io);
    t.equal(run(t, bdev, io), BdevIoStatus.Failed, name);
  }
  t.ok(storage.every((b) => b === 0), 'storage untouched by refused I/O');
});

t.test('malloc: unmap and write zeroes zero the range, flush succeeds', async (t) => {
  const { bdev, storage } = malloc();
  storage.fill(0xab);
  const u = new TestIo();
  u.prepare(BdevIoType.Unmap, 1, 2);
  t.equal(run(t, bdev, u), BdevIoStatus.Success);
  const z = new TestIo();
  z.prepare(BdevIoType.WriteZeroes, 8, 8);
  t.equal(run(t, bdev, z), BdevIoStatus.Success);
  t.ok(storage.subarray(512, 1536).every((b) => b === 0));
  t.ok(storage.subarray(4096).every((b) => b === 0));
  t.equal(storage[511], 0xab);
  t.equal(storage[1536], 0xab);
  t.equal(storage[4095], 0xab);
  const f = new TestIo();
  f.prepare(BdevIoType.Flush, 0, 0);
  t.equal(run(t, bdev, f), BdevIoStatus.Success);
});

t.test('malloc: constructor checks', async (t) => {
  t.throws(() => new MallocBdev('m', 512, 4, new SharedArrayBuffer(1000)), /storage holds 1000 bytes/);
  t.throws(() => new MallocBdev('m', 1000, 4, new SharedArrayBuffer(4000)), /power of 2/);
  t.throws(() => new MallocBdev('m', 512, 0, new SharedArrayBuffer(0)), /positive/);
});

t.test('malloc: storage is shared between bdev objects (workers)', async (t) => {
  const sab = new SharedArrayBuffer(4096);
  const a = new MallocBdev('M', 512, 8, sab);
  const b = new MallocBdev('M', 512, 8, sab);
  const src = new Uint8Array(512).fill(0x5a);
  const w = new TestIo();
  w.prepare(BdevIoType.Write, 3, 1);
  w.addIov(src, 0, 512);
  run(t, a, w);
  const dst = new Uint8Array(512);
  const r = new TestIo();
  r.prepare(BdevIoType.Read, 3, 1);
  r.addIov(dst, 0, 512);
  run(t, b, r);
  t.same(dst, src);
});

t.test('null: reads leave buffers untouched, writes dropped, SPDK io types', async (t) => {
  const bdev = new NullBdev('Null0', 512, 1024);
  const buf = new Uint8Array(1024).fill(0x77);
  const r = new TestIo();
  r.prepare(BdevIoType.Read, 0, 2);
  r.addIov(buf, 0, 1024);
  t.equal(run(t, bdev, r), BdevIoStatus.Success);
  t.ok(buf.every((b) => b === 0x77), 'read buffer untouched (as SPDK bdev_null)');
  const w = new TestIo();
  w.prepare(BdevIoType.Write, 1022, 2);
  w.addIov(buf, 0, 1024);
  t.equal(run(t, bdev, w), BdevIoStatus.Success);
  const past = new TestIo();
  past.prepare(BdevIoType.Write, 1023, 2);
  past.addIov(buf, 0, 1024);
  t.equal(run(t, bdev, past), BdevIoStatus.Failed, 'range still checked');
  const z = new TestIo();
  z.prepare(BdevIoType.WriteZeroes, 0, 1024);
  t.equal(run(t, bdev, z), BdevIoStatus.Success);
  t.equal(bdev.ioTypeSupported(BdevIoType.Flush), false);
  t.equal(bdev.ioTypeSupported(BdevIoType.Unmap), false);
  const f = new TestIo();
  f.prepare(BdevIoType.Flush, 0, 0);
  t.equal(run(t, bdev, f), BdevIoStatus.Failed, 'unsupported type fails');
});

t.test('completion queue: FIFO, grows past its first size', async (t) => {
  const q = new CompletionQueue();
  const order: TestIo[] = [];
  const ios = Array.from({ length: 200 }, () => new TestIo(1, order));
  for (const io of ios.slice(0, 50)) q.complete(io, BdevIoStatus.Success);
  t.equal(q.reap(), 50);
  for (const io of ios.slice(50)) q.complete(io, BdevIoStatus.Failed);
  t.equal(q.length, 150);
  t.equal(q.reap(), 150);
  t.equal(q.length, 0);
  t.same(order, ios, 'delivered in completion order');
  t.equal(ios[0].status, BdevIoStatus.Success);
  t.equal(ios[199].status, BdevIoStatus.Failed);
  t.equal(q.reap(), 0);
});

t.test('module engine halves open a BdevDesc', async (t) => {
  const m = mallocEngine.open({ name: 'M0', module: 'malloc', blockSize: 4096, numBlocks: 2, params: { storage: new SharedArrayBuffer(8192) } }, undefined);
  t.ok(m instanceof MallocBdev);
  t.equal(m.blockSize, 4096);
  t.ok(nullEngine.open({ name: 'N0', module: 'null', blockSize: 512, numBlocks: 8, params: undefined }, undefined) instanceof NullBdev);
  t.throws(() => mallocEngine.open({ name: 'M1', module: 'malloc', blockSize: 512, numBlocks: 8, params: undefined }, undefined), /no storage/);
});

t.test('issue #15 soak: the malloc engine half maps a memfd storage and unmaps it when destroyed', async (t) => {
  const fd = native.memfdCreate('bdev-test-malloc', 0);
  t.teardown(() => native.close(fd));
  native.ftruncate(fd, 8 * 512);
  const mapsOf = (): number => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('/memfd:bdev-test-malloc')).length;
  const bdev = mallocEngine.open({ name: 'M', module: 'malloc', blockSize: 512, numBlocks: 8, params: { fd, sizeBytes: 8 * 512 } }, undefined);
  t.equal(mapsOf(), 1, 'mapped once');
  const src = new Uint8Array(512).fill(0x3c);
  const w = new TestIo();
  w.prepare(BdevIoType.Write, 2, 1);
  w.addIov(src, 0, 512);
  t.equal(run(t, bdev, w), BdevIoStatus.Success);
  const onFile = new Uint8Array(native.mmap(fd, 0, 4096, false));
  t.same(onFile.subarray(1024, 1536), src, 'the write is in the memfd');
  native.munmap(onFile.buffer);
  bdev.destroy();
  t.equal(mapsOf(), 0, 'unmapped by destroy');
  bdev.destroy();
  t.equal(mapsOf(), 0, 'a second destroy is harmless');
});
