/**
 * Test cases shared by test/unit/uring.test.ts and test/unit/aio.test.ts:
 * the native ring (IoUring / LinuxAio) and the file bdev on top of it
 * (engine/bdev/file.ts), against real files on /dev/shm (tmpfs) and under
 * /var/tmp (a disk file system, O_DIRECT), plus ENOSPC on a tiny tmpfs.
 * Guest memory is a memfd mapping (page aligned, as a front-end's would be).
 * Main-thread test helper.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type t from 'tap';
import { native } from '../../bindings';
import type { FileRing } from '../../bindings/native';
import { FileOp } from '../../bindings/native';
import type { BdevDesc } from '../../engine/control';
import { BdevIo, type BdevChannel, BdevIoStatus, BdevIoType } from '../../engine/bdev/bdev';
import { CHANNEL_DEPTH, FileBdev, fileConfigOf, FileRingState, type RingFactory } from '../../engine/bdev/file';

type Test = typeof t;
export type Kind = 'uring' | 'aio';

export function ringFactory(kind: Kind): RingFactory {
  return kind === 'uring' ? (e, m) => new native.IoUring(e, m) : (e, m) => new native.LinuxAio(e, m);
}

export function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** Mappings of guest memory (memfd), io_uring rings and AIO rings in this process. */
export function mapCount(): number {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => /memfd:|io_uring|\[aio\]/.test(l)).length;
}

/** Whether `dir`'s file system takes O_DIRECT. */
export function supportsDirect(dir: string): boolean {
  const file = path.join(dir, `vhostd-direct-probe-${process.pid}`);
  fs.writeFileSync(file, '');
  try {
    native.close(native.fileOpen(file, true, true));
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** Page-aligned "guest memory": a memfd mapped shared. */
export function guestMemory(sizeBytes: number): { bytes: Uint8Array; release(): void } {
  const fd = native.memfdCreate('guest', 0);
  native.ftruncate(fd, sizeBytes);
  const buf = native.mmap(fd, 0, sizeBytes, true);
  native.close(fd);
  return { bytes: new Uint8Array(buf), release: () => native.munmap(buf) };
}

export class TestIo extends BdevIo {
  completions = 0;
  constructor(capacity = 16) {
    super(capacity);
  }
  override done(): void {
    this.completions++;
  }
}

/** Poll until every I/O is delivered (the kernel finishes them on its own). */
export async function drain(ch: BdevChannel, limitMs = 20_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (ch.outstanding > 0) {
    if (ch.poll() === 0) {
      if (Date.now() > deadline) throw new Error(`channel still has ${ch.outstanding} I/Os`);
      await new Promise((r) => setImmediate(r));
    }
  }
}

/** Reap from a ring until `n` completions arrived. */
async function reapN(ring: FileRing, n: number): Promise<Map<number, number>> {
  const out = new Float64Array(64);
  const got = new Map<number, number>();
  const deadline = Date.now() + 20_000;
  while (got.size < n) {
    const k = ring.reap(out, 32);
    for (let i = 0; i < k; i++) got.set(out[2 * i], out[2 * i + 1]);
    if (k === 0) {
      if (Date.now() > deadline) throw new Error(`only ${got.size} of ${n} completions`);
      await new Promise((r) => setImmediate(r));
    }
  }
  return got;
}

export interface OpenedTestFile {
  path: string;
  fd: number;
  bufferedFd: number;
  direct: boolean;
  close(): void;
}

/** Create `sizeBytes` file at `file` and open it as the reactor would (O_DIRECT when possible). */
export function openTestFile(file: string, sizeBytes: number): OpenedTestFile {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeBytes);
  let fd: number;
  let direct = true;
  try {
    fd = native.fileOpen(file, true, true);
  } catch {
    direct = false;
    fd = native.fileOpen(file, true, false);
  }
  const bufferedFd = direct ? native.fileOpen(file, true, false) : -1;
  return {
    path: file,
    fd,
    bufferedFd,
    direct,
    close: () => {
      native.close(fd);
      if (bufferedFd >= 0) native.close(bufferedFd);
      fs.rmSync(file, { force: true });
    },
  };
}

/** Every ring state the helpers made (one per worker and kind in vhostd; here one per kind unless a test brings its own factory). */
const ringStates: FileRingState[] = [];
const sharedStates = new Map<Kind, FileRingState>();

function newState(kind: Kind, factory: RingFactory): FileRingState {
  const st = new FileRingState(kind, factory);
  ringStates.push(st);
  return st;
}

/** Rings open in this process. */
export function openRingCount(): number {
  return ringStates.filter((s) => s.ringOpen).length;
}

/** Guest buffers registered with the open rings. */
export function registeredBufferCount(): number {
  return ringStates.reduce((n, s) => n + s.bufferCount, 0);
}

/** What the bdev layer does before a device unmaps guest memory. */
export function forgetBuffers(views: readonly Uint8Array[]): void {
  for (const s of ringStates) s.forgetBuffers(views);
}

export function makeBdev(kind: Kind, f: OpenedTestFile, numBlocks: number, opts: { factory?: RingFactory; blockSize?: number } = {}): FileBdev {
  const desc: BdevDesc = {
    name: `${kind}-test`,
    module: kind,
    blockSize: opts.blockSize ?? 512,
    numBlocks,
    params: { filename: f.path, fd: f.fd, bufferedFd: f.bufferedFd, direct: f.direct, blockDevice: false, readonly: false, unmap: true },
  };
  let state = opts.factory ? newState(kind, opts.factory) : sharedStates.get(kind);
  if (state === undefined) {
    state = newState(kind, ringFactory(kind));
    sharedStates.set(kind, state);
  }
  return new FileBdev(fileConfigOf(desc), state);
}

function fill(bytes: Uint8Array, off: number, len: number, seed: number): void {
  for (let i = 0; i < len; i++) bytes[off + i] = (seed * 131 + i * 7 + (i >> 9)) & 0xff;
}

/** Wraps a ring: counts in-flight requests, and can cut the first N data results in half (to force resubmission). */
function countingFactory(kind: Kind, halveFirst = 0): { factory: RingFactory; maxInflight: () => number; halved: () => number } {
  let inflight = 0;
  let max = 0;
  let halved = 0;
  const factory: RingFactory = (e, m) => {
    const ring = ringFactory(kind)(e, m);
    const ops = new Map<number, number>();
    return {
      get entries() {
        return ring.entries;
      },
      setFile: (s, fd) => ring.setFile(s, fd),
      setBuffer: (s, v) => ring.setBuffer(s, v),
      submit(reqs, count, iovs) {
        const taken = ring.submit(reqs, count, iovs);
        for (let i = 0; i < taken; i++) ops.set(reqs[i * 6 + 5], reqs[i * 6]);
        inflight += taken;
        if (inflight > max) max = inflight;
        return taken;
      },
      reap(out, n) {
        const got = ring.reap(out, n);
        inflight -= got;
        for (let i = 0; i < got; i++) {
          const op = ops.get(out[2 * i]);
          const res = out[2 * i + 1];
          if (halved < halveFirst && (op === FileOp.Readv || op === FileOp.Writev) && res >= 1024) {
            // Pretend the kernel did only half (the data it really moved is moved again).
            out[2 * i + 1] = Math.floor(res / 2);
            halved++;
          }
        }
        return got;
      },
      close: () => ring.close(),
    };
  };
  return { factory, maxInflight: () => max, halved: () => halved };
}

export function nativeRingCases(t: Test, kind: Kind, dir: string): void {
  t.test(`${kind} ring on ${dir}: readv/writev into registered buffers, datasync, fallocate, refusals`, async (t) => {
    const f = openTestFile(path.join(dir, `vhostd-${kind}-ring-${process.pid}`), 1 << 20);
    const mem = guestMemory(1 << 16);
    const ring = ringFactory(kind)(8, 4);
    t.teardown(() => {
      ring.close();
      mem.release();
      f.close();
    });
    ring.setFile(3, f.fd);
    ring.setBuffer(5, mem.bytes);
    fill(mem.bytes, 0, 8192, 1);
    const reqs = new Float64Array(6 * 4);
    const iovs = new Float64Array(3 * 4);
    // write 8 KiB at 64 KiB from two iovs
    iovs.set([5, 0, 4096, 5, 4096, 4096]);
    reqs.set([FileOp.Writev, 3, 65536, 0, 2, 101]);
    t.equal(ring.submit(reqs, 1, iovs), 1, 'write taken');
    t.same([...(await reapN(ring, 1))], [[101, 8192]], 'write completes with 8192 bytes');
    // read it back into 8192.., then datasync
    iovs.set([5, 8192, 8192]);
    reqs.set([FileOp.Readv, 3, 65536, 0, 1, 102, FileOp.Datasync, 3, 0, 0, 0, 103]);
    t.equal(ring.submit(reqs, 2, iovs), 2, 'read and datasync taken');
    const got = await reapN(ring, 2);
    t.equal(got.get(102), 8192, 'read 8192 bytes');
    t.equal(got.get(103), 0, 'datasync succeeded');
    t.same(mem.bytes.subarray(8192, 16384), mem.bytes.subarray(0, 8192), 'read data equals written data (no copy in between)');
    // punch a hole in the first 4 KiB, read → zeros
    reqs.set([FileOp.Fallocate, 3, 65536, 4096, 3, 104]);
    t.equal(ring.submit(reqs, 1, iovs), 1);
    t.equal((await reapN(ring, 1)).get(104), 0, 'fallocate(PUNCH_HOLE|KEEP_SIZE) succeeded');
    iovs.set([5, 16384, 8192]);
    reqs.set([FileOp.Readv, 3, 65536, 0, 1, 105]);
    ring.submit(reqs, 1, iovs);
    t.equal((await reapN(ring, 1)).get(105), 8192);
    t.ok(mem.bytes.subarray(16384, 16384 + 4096).every((b) => b === 0), 'punched range reads as zeros');
    t.same(mem.bytes.subarray(16384 + 4096, 16384 + 8192), mem.bytes.subarray(4096, 8192), 'the rest is intact');
    // refusals: iov beyond its buffer, unknown buffer slot, empty file slot, too many iovs
    iovs.set([5, 65536 - 100, 4096, 6, 0, 512]);
    reqs.set([
      FileOp.Readv, 3, 0, 0, 1, 201,
      FileOp.Readv, 3, 0, 1, 1, 202,
      FileOp.Readv, 9, 0, 0, 1, 203,
      FileOp.Readv, 3, 0, 0, 5, 204,
    ]);
    t.equal(ring.submit(reqs, 4, iovs), 4, 'refused requests are taken too');
    const refused = await reapN(ring, 4);
    t.same([refused.get(201), refused.get(202), refused.get(203), refused.get(204)], [-22, -22, -9, -22], 'EINVAL, EINVAL, EBADF, EINVAL');
    t.throws(() => ring.submit(reqs, 5, iovs), /count exceeds/, 'count beyond the array throws');
  });
}

export function bdevCases(t: Test, kind: Kind, dir: string): void {
  t.test(`${kind} bdev on ${dir}: scattered I/O, flush, unmap, write zeroes, ranges, short results`, async (t) => {
    const fds = fdCount();
    const f = openTestFile(path.join(dir, `vhostd-${kind}-bdev-${process.pid}`), 4 << 20);
    const mem = guestMemory(1 << 20);
    const counting = countingFactory(kind, 4);
    const bdev = makeBdev(kind, f, (4 << 20) / 512, { factory: counting.factory });
    const ch = bdev.createChannel();
    t.equal(openRingCount(), 1, 'one ring for the worker');
    t.comment(`O_DIRECT: ${f.direct}`);

    fill(mem.bytes, 0, 65536, 7);
    const w = new TestIo();
    w.prepare(BdevIoType.Write, 8, 128);
    w.addIov(mem.bytes, 0, 4096);
    w.addIov(mem.bytes, 4096, 61440);
    ch.submit(w);
    t.equal(w.completions, 0, 'no completion inside submit()');
    await drain(ch);
    t.equal(w.status, BdevIoStatus.Success, 'write succeeded');
    const r = new TestIo();
    r.prepare(BdevIoType.Read, 8, 128);
    r.addIov(mem.bytes, 131072, 512);
    r.addIov(mem.bytes, 131072 + 4096, 65024);
    ch.submit(r);
    await drain(ch);
    t.equal(r.status, BdevIoStatus.Success, 'read succeeded');
    t.equal(registeredBufferCount(), 1, 'the guest memory is registered with the ring once');
    forgetBuffers([new Uint8Array(8)]);
    t.equal(registeredBufferCount(), 1, 'forgetting other memory keeps it');
    forgetBuffers([mem.bytes]);
    t.equal(registeredBufferCount(), 0, 'forgotten before its memory is unmapped');
    t.same(mem.bytes.subarray(131072, 131072 + 512), mem.bytes.subarray(0, 512), 'first segment');
    t.same(mem.bytes.subarray(131072 + 4096, 131072 + 4096 + 65024), mem.bytes.subarray(512, 65536), 'second segment');
    t.ok(counting.halved() >= 1, `short results were resubmitted (${counting.halved()} halved) and the data is still right`);
    const onDisk = fs.readFileSync(f.path).subarray(8 * 512, 8 * 512 + 65536);
    t.same(Buffer.from(onDisk), Buffer.from(mem.bytes.subarray(0, 65536)), 'the file holds what was written');

    const fl = new TestIo();
    fl.prepare(BdevIoType.Flush, 0, 0);
    const un = new TestIo();
    un.prepare(BdevIoType.Unmap, 8, 8);
    const wz = new TestIo();
    wz.prepare(BdevIoType.WriteZeroes, 16, 8);
    ch.submit(fl);
    ch.submit(un);
    ch.submit(wz);
    await drain(ch);
    t.same([fl.status, un.status, wz.status], [0, 0, 0], 'flush, unmap, write zeroes succeed');
    const after = fs.readFileSync(f.path).subarray(8 * 512, 24 * 512);
    t.ok(after.every((b) => b === 0), 'unmapped and zeroed blocks read as zeros');

    const bad = new TestIo();
    bad.prepare(BdevIoType.Read, (4 << 20) / 512 - 1, 2);
    bad.addIov(mem.bytes, 0, 1024);
    const short = new TestIo();
    short.prepare(BdevIoType.Write, 0, 2);
    short.addIov(mem.bytes, 0, 512);
    ch.submit(bad);
    ch.submit(short);
    await drain(ch);
    t.same([bad.status, short.status], [BdevIoStatus.Failed, BdevIoStatus.Failed], 'out of range and short scatter list fail');

    // Many I/Os at once: queue depth bounded, all complete, no busy error.
    const ios: TestIo[] = [];
    for (let i = 0; i < 300; i++) {
      const io = new TestIo();
      io.prepare(i % 2 === 0 ? BdevIoType.Write : BdevIoType.Read, (i * 8) % 8000, 8);
      io.addIov(mem.bytes, 262144 + (i % 64) * 4096, 4096);
      ch.submit(io);
      ios.push(io);
    }
    await drain(ch);
    t.ok(ios.every((io) => io.completions === 1 && io.status === BdevIoStatus.Success), '300 queued I/Os all succeed, each once');
    t.ok(counting.maxInflight() <= CHANNEL_DEPTH, `never more than ${CHANNEL_DEPTH} in the kernel (saw ${counting.maxInflight()})`);
    t.ok(counting.maxInflight() > 1, 'I/Os were batched');

    ch.destroy();
    bdev.destroy();
    t.equal(openRingCount(), 0, 'the ring is closed with the last channel');
    mem.release();
    f.close();
    t.equal(fdCount(), fds, 'no fd leaked');
  });

  t.test(`${kind} bdev on ${dir}: end of file is a failure, never a success`, async (t) => {
    const f = openTestFile(path.join(dir, `vhostd-${kind}-eof-${process.pid}`), 4 * 512 + 100);
    const mem = guestMemory(1 << 16);
    // The bdev claims more blocks than the file holds (as if the file shrank).
    const bdev = makeBdev(kind, f, 16);
    const ch = bdev.createChannel();
    const partial = new TestIo();
    partial.prepare(BdevIoType.Read, 3, 3);
    partial.addIov(mem.bytes, 0, 1536);
    const past = new TestIo();
    past.prepare(BdevIoType.Read, 10, 1);
    past.addIov(mem.bytes, 4096, 512);
    ch.submit(partial);
    ch.submit(past);
    await drain(ch);
    t.equal(partial.status, BdevIoStatus.Failed, 'a read crossing the end fails');
    t.equal(past.status, BdevIoStatus.Failed, 'a read past the end fails');
    ch.destroy();
    mem.release();
    f.close();
  });

  t.test(`${kind} bdev on ${dir}: two bdevs share the worker's ring`, async (t) => {
    const f1 = openTestFile(path.join(dir, `vhostd-${kind}-a-${process.pid}`), 1 << 20);
    const f2 = openTestFile(path.join(dir, `vhostd-${kind}-b-${process.pid}`), 1 << 20);
    const mem = guestMemory(1 << 16);
    const b1 = makeBdev(kind, f1, 2048);
    const b2 = makeBdev(kind, f2, 2048);
    const c1 = b1.createChannel();
    const c2 = b2.createChannel();
    t.equal(openRingCount(), 1, 'one ring for both');
    fill(mem.bytes, 0, 4096, 3);
    fill(mem.bytes, 4096, 4096, 4);
    const w1 = new TestIo();
    w1.prepare(BdevIoType.Write, 0, 8);
    w1.addIov(mem.bytes, 0, 4096);
    const w2 = new TestIo();
    w2.prepare(BdevIoType.Write, 0, 8);
    w2.addIov(mem.bytes, 4096, 4096);
    c1.submit(w1);
    c2.submit(w2);
    while (c1.outstanding + c2.outstanding > 0) {
      c1.poll();
      c2.poll();
      await new Promise((r) => setImmediate(r));
    }
    t.same([w1.status, w2.status], [0, 0]);
    t.same(Buffer.from(fs.readFileSync(f1.path).subarray(0, 4096)), Buffer.from(mem.bytes.subarray(0, 4096)), 'file 1');
    t.same(Buffer.from(fs.readFileSync(f2.path).subarray(0, 4096)), Buffer.from(mem.bytes.subarray(4096, 8192)), 'file 2');
    c1.destroy();
    t.equal(openRingCount(), 1, 'still open for the second');
    c2.destroy();
    t.equal(openRingCount(), 0, 'closed with the last');
    mem.release();
    f1.close();
    f2.close();
  });
}

/** O_DIRECT with a buffer it refuses (not 512-aligned): retried through the page cache, data intact. */
export function unalignedCase(t: Test, kind: Kind, dir: string): void {
  const skip = supportsDirect(dir) ? false : `${dir} does not do O_DIRECT`;
  t.test(`${kind} bdev on ${dir}: misaligned guest buffer with O_DIRECT`, { skip }, async (t) => {
    const f = openTestFile(path.join(dir, `vhostd-${kind}-unaligned-${process.pid}`), 1 << 20);
    t.ok(f.direct, 'opened with O_DIRECT');
    const mem = guestMemory(1 << 16);
    const bdev = makeBdev(kind, f, 2048);
    const ch = bdev.createChannel();
    fill(mem.bytes, 1, 4096, 9);
    const w = new TestIo();
    w.prepare(BdevIoType.Write, 4, 8);
    w.addIov(mem.bytes, 1, 4096);
    ch.submit(w);
    await drain(ch);
    t.equal(w.status, BdevIoStatus.Success, 'misaligned write succeeds');
    const r = new TestIo();
    r.prepare(BdevIoType.Read, 4, 8);
    r.addIov(mem.bytes, 8193, 4096);
    ch.submit(r);
    await drain(ch);
    t.equal(r.status, BdevIoStatus.Success, 'misaligned read succeeds');
    t.same(mem.bytes.subarray(8193, 8193 + 4096), mem.bytes.subarray(1, 4097), 'data intact');
    ch.destroy();
    mem.release();
    f.close();
  });
}

/** ENOSPC on a full 1 MiB tmpfs: that write fails, the rest of the I/O goes on. */
export function enospcCase(t: Test, kind: Kind): void {
  const skip = process.getuid?.() === 0 ? false : 'needs root to mount a tmpfs';
  t.test(`${kind} bdev: ENOSPC fails only the writes that hit it`, { skip }, async (t) => {
    const mnt = fs.mkdtempSync(`/tmp/vhostd-enospc-${kind}-`);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'none', mnt]);
    const full = openTestFile(path.join(mnt, 'disk'), 4 << 20); // sparse: 4 MiB on a 1 MiB fs
    const other = openTestFile(path.join('/dev/shm', `vhostd-${kind}-other-${process.pid}`), 1 << 20);
    const mem = guestMemory(1 << 20);
    const b1 = makeBdev(kind, full, (4 << 20) / 512);
    const b2 = makeBdev(kind, other, 2048);
    const c1 = b1.createChannel();
    const c2 = b2.createChannel();
    t.teardown(() => {
      c1.destroy();
      c2.destroy();
      mem.release();
      full.close();
      other.close();
      execFileSync('umount', [mnt]);
      fs.rmdirSync(mnt);
    });
    fill(mem.bytes, 0, 1 << 20, 5);
    // 2 MiB of writes in 64 KiB pieces: the first MiB fits (about), the rest cannot.
    const writes: TestIo[] = [];
    for (let i = 0; i < 32; i++) {
      const io = new TestIo();
      io.prepare(BdevIoType.Write, i * 128, 128);
      io.addIov(mem.bytes, (i % 16) * 65536, 65536);
      c1.submit(io);
      writes.push(io);
    }
    const ok2 = new TestIo();
    ok2.prepare(BdevIoType.Write, 0, 8);
    ok2.addIov(mem.bytes, 0, 4096);
    c2.submit(ok2);
    while (c1.outstanding + c2.outstanding > 0) {
      c1.poll();
      c2.poll();
      await new Promise((r) => setImmediate(r));
    }
    const failed = writes.filter((w) => w.status === BdevIoStatus.Failed).length;
    const succeeded = writes.filter((w) => w.status === BdevIoStatus.Success).length;
    t.ok(failed > 0, `writes beyond the space fail (${failed} failed)`);
    t.ok(succeeded > 0, `writes that fit succeed (${succeeded})`);
    t.ok(writes.every((w) => w.completions === 1), 'every write completed exactly once');
    t.equal(ok2.status, BdevIoStatus.Success, 'the other disk keeps working');
    const rd = new TestIo();
    rd.prepare(BdevIoType.Read, 0, 128);
    rd.addIov(mem.bytes, 0, 65536);
    c1.submit(rd);
    await drain(c1);
    t.equal(rd.status, BdevIoStatus.Success, 'reads of the full disk still work');
  });
}
