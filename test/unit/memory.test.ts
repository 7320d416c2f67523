/**
 * Guest memory mapped in overlapping windows (engine/memory.ts): Node 20
 * cannot wrap more than 4 GiB of outside memory in one ArrayBuffer, so large
 * regions are mapped as windows. Exercised at a small scale on a real memfd
 * (64 KiB windows every 48 KiB) so the arithmetic is the one real regions use.
 */
import t from 'tap';
import { native } from '../../bindings';
import { GuestMemory } from '../../engine/memory';

const KiB = 1024;
const layout = { chunkBytes: 64 * KiB, strideBytes: 48 * KiB };

t.test('a region larger than a window is mapped as overlapping windows', async (t) => {
  const size = 200 * KiB;
  const fd = native.memfdCreate('memtest', 0);
  t.teardown(() => native.close(fd));
  native.ftruncate(fd, size + 8 * KiB);
  const gpa = 0x100000;
  const uva = 0x7f0000000000;
  const mem = GuestMemory.map([{ fd, guestPhysAddr: gpa, sizeBytes: size, userAddr: uva, mmapOffset: 8 * KiB }], native, layout);
  t.teardown(() => mem.unmap());
  // Windows start at 0, 48, 96, 144 KiB; the last one reaches the end (200 KiB).
  t.equal(mem.count, 4, 'four windows');
  t.same(
    Array.from({ length: mem.count }, (_, i) => mem.region(i)),
    [
      { guestPhysAddr: gpa, sizeBytes: 64 * KiB },
      { guestPhysAddr: gpa + 48 * KiB, sizeBytes: 64 * KiB },
      { guestPhysAddr: gpa + 96 * KiB, sizeBytes: 64 * KiB },
      { guestPhysAddr: gpa + 144 * KiB, sizeBytes: 56 * KiB },
    ],
  );

  const whole = new Uint8Array(native.mmap(fd, 0, size + 8 * KiB, true));
  t.teardown(() => native.munmap(whole.buffer));
  // Every range up to the overlap (16 KiB) lies in one window, wherever it is.
  for (const [off, len] of [
    [0, 4096],
    [60 * KiB, 8 * KiB],
    [64 * KiB - 1, 2],
    [150 * KiB, 16 * KiB],
    [size - 4096, 4096],
  ]) {
    const w = mem.translate(gpa + off, len);
    t.ok(w >= 0, `[${off}, +${len}) found`);
    mem.bytes[w].fill(0xa5, mem.offset, mem.offset + len);
    t.ok(
      whole.subarray(8 * KiB + off, 8 * KiB + off + len).every((b) => b === 0xa5),
      `bytes written through window ${w} land at file offset ${8 * KiB + off}`,
    );
    whole.fill(0, 8 * KiB + off, 8 * KiB + off + len);
  }
  t.equal(mem.translate(gpa + size - 10, 11), -1, 'past the end of the region');
  t.equal(mem.translate(gpa + 10 * KiB, 70 * KiB), -1, 'longer than any window');
  t.equal(mem.uvaToGpa(uva + 100 * KiB, 4096), gpa + 100 * KiB, 'front-end addresses translate through the windows');
});

t.test('a region that fits one window is one mapping', async (t) => {
  const fd = native.memfdCreate('memtest1', 0);
  t.teardown(() => native.close(fd));
  native.ftruncate(fd, 64 * KiB);
  const mem = GuestMemory.map([{ fd, guestPhysAddr: 0, sizeBytes: 64 * KiB, userAddr: 0x1000000, mmapOffset: 0 }], native, layout);
  t.equal(mem.count, 1);
  mem.unmap();
  t.equal(mem.translate(0, 1), -1, 'nothing translates after unmap');
});

t.test('translatePart: the leading part of a range that runs into the next region', async (t) => {
  const mem = GuestMemory.fromBuffers([
    { guestPhysAddr: 0x1000, buffer: new ArrayBuffer(0x1000) },
    { guestPhysAddr: 0x2000, buffer: new ArrayBuffer(0x1000) },
  ]);
  t.equal(mem.translate(0x1f00, 0x200), -1, 'translate wants one region');
  t.equal(mem.translatePart(0x1f00, 0x200), 0);
  t.equal(mem.offset, 0xf00);
  t.equal(mem.partLen, 0x100);
  t.equal(mem.translatePart(0x2000, 0x100), 1);
  t.equal(mem.offset, 0);
  t.equal(mem.partLen, 0x100);
  t.equal(mem.translatePart(0x3000, 1), -1, 'past the last region');
  t.equal(mem.translatePart(0x800, 1), -1, 'below the first region');
  mem.unmap();
  t.equal(mem.translatePart(0x1000, 1), -1, 'nothing after unmap');
});

t.test('a region needing more windows than allowed is refused before any window is planned or mapped', async (t) => {
  // The vfio-user fuzzer's DMA_MAP of 2^52 bytes: the old code built every window's plan (~1.5 million
  // objects, +230 MB) before counting them. At this layout the old loop would build 2^40 of them.
  const mapper = {
    mmap: (): ArrayBuffer => {
      throw new Error('mmap must not be called');
    },
    munmap: (): void => {},
  };
  t.throws(
    () => GuestMemory.map([{ fd: 99, guestPhysAddr: 0, sizeBytes: 2 ** 40, userAddr: 0, mmapOffset: 0 }], mapper, { chunkBytes: 2, strideBytes: 1 }),
    { message: /needs 1099511627775 mapping windows, at most 255/, code: 'ERR_GUEST_MEMORY' },
  );
  // The real layout: 2^52 bytes in 4 GiB windows every 3 GiB.
  t.throws(() => GuestMemory.map([{ fd: 99, guestPhysAddr: 0, sizeBytes: 2 ** 52, userAddr: 0, mmapOffset: 0 }], mapper), { message: /needs 1398101 mapping windows/ });
});
