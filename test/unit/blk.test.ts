/**
 * virtio-blk: request parsing cases, the config space and feature bits, and
 * a BlkDevice over a malloc bdev (and over a deliberately asynchronous bdev)
 * driven through a mock driver ring.
 */
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { type Bdev, type BdevChannel, type BdevIo, BdevIoStatus, BdevIoType } from '../../engine/bdev/bdev';
import { WorkerBdevLayer } from '../../engine/bdev/layer';
import { BDEV_MODULES } from '../../engine/bdev/modules';
import { blkConfigSpace, blkFeatures } from '../../reactor/vhost/blk/model';
import { BlkLimit } from '../../engine/virtio/spec';
import { BLK_MAX_SEGMENTS, type BlkTask, createBlkDevice } from '../../engine/blk/model';
import { type BlkDisk, BlkRequest, PARSE_EXECUTE, PARSE_NO_STATUS, parseBlkRequest } from '../../engine/blk/parse';
import { type DeviceDesc, DeviceStat } from '../../engine/control';
import { GuestMemory } from '../../engine/memory';
import { ChainError, DescChain } from '../../engine/virtio/chain';
import { EARLY_FLUSH, MAX_INFLIGHT_PER_QUEUE, SETTLE_QUIET, VIRTIO_BATCH, type VirtioDevice } from '../../engine/virtio/device';
import { BlkStatus, BlkType } from '../../engine/virtio/spec';
import { PLAIN_STORE_RELEASES } from '../../engine/virtio/order';
import { SplitQueue } from '../../engine/virtio/split';
import { type Buf, F_EVENT_IDX, F_INDIRECT, F_VERSION_1, MockVring } from '../lib/mock-vring';

const FEATURES = F_VERSION_1 | F_INDIRECT | F_EVENT_IDX;

function header(vr: MockVring, type: number, sector: bigint | number): number {
  const a = vr.alloc(16);
  const o = a - vr.gpa;
  vr.view.setUint32(o, type, true);
  vr.view.setUint32(o + 4, 0, true);
  vr.view.setBigUint64(o + 8, BigInt(sector), true);
  return a;
}

function dwzSegment(vr: MockVring, sector: number, count: number, flags: number): number {
  const a = vr.alloc(16);
  const o = a - vr.gpa;
  vr.view.setBigUint64(o, BigInt(sector), true);
  vr.view.setUint32(o + 8, count, true);
  vr.view.setUint32(o + 12, flags, true);
  return a;
}

/** A parse harness: a mock ring, a queue, and parse() of one chain. */
function parser(disk: BlkDisk) {
  const vr = new MockVring({ size: 16 });
  const mem = vr.memory();
  const q = new SplitQueue(mem, vr.queueDesc(), FEATURES);
  const chain = new DescChain(16);
  const req = new BlkRequest();
  return {
    vr,
    req,
    parse(bufs: Buf[]): number {
      const head = vr.addChain(bufs);
      q.available();
      q.pop();
      if (q.walk(head, chain) !== ChainError.Ok) throw new Error('bad chain in test');
      const r = parseBlkRequest(mem, chain, disk, req);
      q.push(head, 0);
      q.publish();
      vr.readUsed();
      return r;
    },
  };
}

const DISK: BlkDisk = { capacitySectors: 2048, blockSize: 512, readonly: false };

t.test('parse: valid requests', async (t) => {
  const { vr, req, parse } = parser(DISK);
  const st = vr.alloc(1);
  t.equal(parse([{ addr: header(vr, BlkType.In, 8), len: 16 }, { addr: vr.alloc(1024), len: 1024, write: true }, { addr: st, len: 1, write: true }]), PARSE_EXECUTE);
  t.equal(req.type, BlkType.In);
  t.equal(req.sector, 8);
  t.equal(req.dataBytes, 1024);
  t.equal(req.statusOffset, st - vr.gpa);

  // Status byte shares the last data buffer; header split over two descriptors.
  const h = header(vr, BlkType.In, 2047);
  const buf = vr.alloc(513);
  t.equal(parse([{ addr: h, len: 8 }, { addr: h + 8, len: 8 }, { addr: buf, len: 513, write: true }]), PARSE_EXECUTE);
  t.equal(req.sector, 2047, 'sector read across a split header');
  t.equal(req.dataBytes, 512);
  t.equal(req.statusOffset, buf - vr.gpa + 512);

  // OUT with the data in the header's buffer.
  const hb = vr.alloc(16 + 512);
  vr.view.setUint32(hb - vr.gpa, BlkType.Out, true);
  t.equal(parse([{ addr: hb, len: 528 }, { addr: st, len: 1, write: true }]), PARSE_EXECUTE);
  t.equal(req.dataBytes, 512);
  t.equal(req.dataSeg, 0);
  t.equal(req.dataSkip, 16);

  t.equal(parse([{ addr: header(vr, BlkType.Flush, 0), len: 16 }, { addr: st, len: 1, write: true }]), PARSE_EXECUTE);
  t.equal(parse([{ addr: header(vr, BlkType.GetId, 0), len: 16 }, { addr: vr.alloc(20), len: 20, write: true }, { addr: st, len: 1, write: true }]), PARSE_EXECUTE);
  t.equal(req.dataBytes, 20);

  const seg = dwzSegment(vr, 100, 8, 0);
  t.equal(parse([{ addr: header(vr, BlkType.Discard, 0), len: 16 }, { addr: seg, len: 16 }, { addr: st, len: 1, write: true }]), PARSE_EXECUTE);
  t.equal(req.sector, 100);
  t.equal(req.numSectors, 8);
  const wz = dwzSegment(vr, 2040, 8, 1);
  t.equal(parse([{ addr: header(vr, BlkType.WriteZeroes, 0), len: 16 }, { addr: wz, len: 16 }, { addr: st, len: 1, write: true }]), PARSE_EXECUTE, 'write zeroes may carry the unmap flag');
});

t.test('parse: malformed and refused requests', async (t) => {
  const { vr, req, parse } = parser(DISK);
  const st = vr.alloc(1);
  const data = vr.alloc(4096);
  const w = (len: number): Buf => ({ addr: data, len, write: true });
  const r = (len: number): Buf => ({ addr: data, len });
  const S: Buf = { addr: st, len: 1, write: true };

  t.equal(parse([{ addr: header(vr, BlkType.In, 0), len: 16 }]), PARSE_NO_STATUS, 'no writable byte');
  t.equal(parse([{ addr: header(vr, BlkType.In, 0), len: 12 }, w(512), S]), BlkStatus.IoErr, 'short header');
  t.equal(req.statusOffset, st - vr.gpa, 'status located even for a short header');
  t.equal(parse([w(1)]), BlkStatus.IoErr, 'no header at all');
  t.equal(parse([{ addr: header(vr, BlkType.In, 0), len: 16 }, r(512), S]), BlkStatus.IoErr, 'IN with readable data');
  t.equal(parse([{ addr: header(vr, BlkType.In, 0), len: 16 }, S]), BlkStatus.IoErr, 'IN without data');
  t.equal(parse([{ addr: header(vr, BlkType.Out, 0), len: 16 }, w(512), S]), BlkStatus.IoErr, 'OUT with writable data');
  t.equal(parse([{ addr: header(vr, BlkType.Out, 0), len: 16 }, S]), BlkStatus.IoErr, 'OUT without data');
  t.equal(parse([{ addr: header(vr, BlkType.In, 0), len: 16 }, w(500), S]), BlkStatus.IoErr, 'IN length not a multiple of 512');
  t.equal(parse([{ addr: header(vr, BlkType.Out, 0), len: 16 }, r(1000), S]), BlkStatus.IoErr, 'OUT length not a multiple of 512');
  t.equal(parse([{ addr: header(vr, BlkType.In, 2047), len: 16 }, w(1024), S]), BlkStatus.IoErr, 'runs past the capacity');
  t.equal(parse([{ addr: header(vr, BlkType.In, 2048), len: 16 }, w(512), S]), BlkStatus.IoErr, 'starts at the capacity');
  t.equal(parse([{ addr: header(vr, BlkType.In, 0xffffffffffffffffn), len: 16 }, w(512), S]), BlkStatus.IoErr, 'sector near 2^64');
  t.equal(parse([{ addr: header(vr, BlkType.In, 1n << 53n), len: 16 }, w(512), S]), BlkStatus.IoErr, 'sector beyond 2^53');
  t.equal(parse([{ addr: header(vr, 99, 0), len: 16 }, S]), BlkStatus.Unsupp, 'unknown type');
  t.equal(parse([{ addr: header(vr, 10, 0), len: 16 }, w(48), S]), BlkStatus.Unsupp, 'GET_LIFETIME is not supported');
  t.equal(parse([{ addr: header(vr, BlkType.GetId, 0), len: 16 }, S]), BlkStatus.IoErr, 'GET_ID without room');

  const H = (type: number) => ({ addr: header(vr, type, 0), len: 16 });
  t.equal(parse([H(BlkType.Discard), { addr: dwzSegment(vr, 0, 8, 1), len: 16 }, S]), BlkStatus.Unsupp, 'discard with the unmap flag');
  t.equal(parse([H(BlkType.WriteZeroes), { addr: dwzSegment(vr, 0, 8, 2), len: 16 }, S]), BlkStatus.Unsupp, 'unknown write-zeroes flag');
  t.equal(parse([H(BlkType.Discard), { addr: dwzSegment(vr, 2044, 8, 0), len: 16 }, S]), BlkStatus.IoErr, 'discard past the capacity');
  t.equal(parse([H(BlkType.Discard), { addr: dwzSegment(vr, 0, 0, 0), len: 16 }, S]), BlkStatus.IoErr, 'discard of 0 sectors');
  t.equal(parse([H(BlkType.Discard), { addr: dwzSegment(vr, 0, 40000, 0), len: 16 }, S]), BlkStatus.IoErr, 'discard over the limit');
  t.equal(parse([H(BlkType.Discard), { addr: vr.alloc(32), len: 32 }, S]), BlkStatus.IoErr, 'two segments, max is 1');
  t.equal(parse([H(BlkType.Discard), { addr: vr.alloc(8), len: 8 }, S]), BlkStatus.IoErr, 'partial segment');
  t.equal(parse([H(BlkType.Discard), S]), BlkStatus.IoErr, 'no segment');

  const ro = parser({ ...DISK, readonly: true });
  const st2 = ro.vr.alloc(1);
  const S2: Buf = { addr: st2, len: 1, write: true };
  t.equal(ro.parse([{ addr: header(ro.vr, BlkType.Out, 0), len: 16 }, { addr: ro.vr.alloc(512), len: 512 }, S2]), BlkStatus.IoErr, 'readonly: OUT');
  t.equal(ro.parse([{ addr: header(ro.vr, BlkType.Discard, 0), len: 16 }, { addr: dwzSegment(ro.vr, 0, 8, 0), len: 16 }, S2]), BlkStatus.IoErr, 'readonly: DISCARD');
  t.equal(ro.parse([{ addr: header(ro.vr, BlkType.WriteZeroes, 0), len: 16 }, { addr: dwzSegment(ro.vr, 0, 8, 0), len: 16 }, S2]), BlkStatus.IoErr, 'readonly: WRITE_ZEROES');
  t.equal(ro.parse([{ addr: header(ro.vr, BlkType.In, 0), len: 16 }, { addr: ro.vr.alloc(512), len: 512, write: true }, S2]), PARSE_EXECUTE, 'readonly: IN');
  t.equal(ro.parse([{ addr: header(ro.vr, BlkType.Flush, 0), len: 16 }, S2]), PARSE_EXECUTE, 'readonly: FLUSH');

  const big = parser({ capacitySectors: 64, blockSize: 4096, readonly: false });
  const st3 = big.vr.alloc(1);
  const S3: Buf = { addr: st3, len: 1, write: true };
  t.equal(big.parse([{ addr: header(big.vr, BlkType.In, 4), len: 16 }, { addr: big.vr.alloc(4096), len: 4096, write: true }, S3]), BlkStatus.IoErr, '4 KiB blocks: unaligned sector');
  t.equal(big.parse([{ addr: header(big.vr, BlkType.In, 8), len: 16 }, { addr: big.vr.alloc(512), len: 512, write: true }, S3]), BlkStatus.IoErr, '4 KiB blocks: short length');
  t.equal(big.parse([{ addr: header(big.vr, BlkType.In, 8), len: 16 }, { addr: big.vr.alloc(4096), len: 4096, write: true }, S3]), PARSE_EXECUTE);
});

t.test('config space and features', async (t) => {
  const cfg = blkConfigSpace({ blockSize: 4096, numBlocks: 1000 }, 2, false);
  t.equal(cfg.length, 60);
  const v = new DataView(cfg.buffer);
  t.equal(v.getBigUint64(0, true), 8000n, 'capacity in 512-byte sectors');
  t.equal(v.getUint32(8, true), BlkLimit.SizeMax);
  t.equal(v.getUint32(12, true), BlkLimit.SegMax);
  t.equal(v.getUint32(20, true), 4096);
  t.equal(v.getUint16(26, true), 1);
  t.equal(v.getUint16(34, true), 2, 'num_queues');
  t.equal(v.getUint32(40, true), 1, 'max_discard_seg');
  t.equal(v.getUint32(44, true), 8, 'discard alignment in sectors');
  t.equal(v.getUint32(52, true), 1, 'max_write_zeroes_seg');
  const ro = new DataView(blkConfigSpace({ blockSize: 512, numBlocks: 10 }, 1, true).buffer);
  t.equal(ro.getUint32(36, true), 0, 'no discard limits when readonly');

  const f = blkFeatures(false);
  for (const bit of [1, 2, 6, 9, 10, 12, 13, 14, 28, 29, 32]) t.ok(f & (1n << BigInt(bit)), `bit ${bit} offered`);
  t.notOk(f & (1n << 5n), 'not RO');
  t.notOk(f & (1n << 30n), 'bit 30 is the reactor\'s');
  const fro = blkFeatures(true);
  t.ok(fro & (1n << 5n), 'RO');
  t.notOk(fro & (1n << 13n), 'no DISCARD when readonly');
  t.notOk(fro & (1n << 14n), 'no WRITE_ZEROES when readonly');
});

interface Harness {
  vr: MockVring;
  dev: VirtioDevice<BlkTask>;
  layer: WorkerBdevLayer;
  stats: Float64Array;
  storage: Uint8Array;
  signals: number[];
  /** One worker loop iteration as the poller runs it: the device polls, the bdev layer delivers, the device publishes. */
  step(): number;
}

/** The mock ring's memory, and optionally a second region right after it in guest-physical space. */
function memory(vr: MockVring, next?: ArrayBuffer): GuestMemory {
  if (next === undefined) return vr.memory();
  return GuestMemory.fromBuffers([
    { guestPhysAddr: vr.gpa, buffer: vr.buffer },
    { guestPhysAddr: vr.gpa + vr.buffer.byteLength, buffer: next },
  ]);
}

function deviceHarness(opts: { readonly?: boolean; bdev?: Bdev; blocks?: number; size?: number; memBytes?: number; nextRegion?: ArrayBuffer } = {}): Harness {
  const vr = new MockVring({ size: opts.size ?? 32, memBytes: opts.memBytes ?? 4 << 20 });
  const numBlocks = opts.blocks ?? 256;
  const storageBuf = new SharedArrayBuffer(512 * numBlocks);
  const statsBuf = new SharedArrayBuffer(DeviceStat.Count * 8);
  // The real bdev layer; a test bdev comes in as a module of its own.
  const held = opts.bdev;
  const modules = new Map(BDEV_MODULES);
  if (held !== undefined) modules.set('held', { name: 'held', open: () => held });
  const layer = new WorkerBdevLayer(modules);
  const bdevDesc =
    held !== undefined
      ? { name: held.name, module: 'held', blockSize: held.blockSize, numBlocks: held.numBlocks, params: null }
      : { name: 'Malloc0', module: 'malloc', blockSize: 512, numBlocks, params: { storage: storageBuf } };
  const desc: DeviceDesc = {
    id: 7,
    name: 'vhost.0',
    features: FEATURES,
    model: { kind: 'blk', readonly: opts.readonly ?? false },
    bdevs: [bdevDesc],
    regions: [],
    queues: [{ ...vr.queueDesc(0), callFd: 42, kickFd: 43 }],
    stats: statsBuf,
  };
  const signals: number[] = [];
  const dev = createBlkDevice(desc, { signal: (fd) => signals.push(fd), mapMemory: () => memory(vr, opts.nextRegion), bdevs: layer }) as VirtioDevice<BlkTask>;
  const step = () => dev.poll() + layer.poll(performance.now()) + dev.poll();
  return { vr, dev, layer, stats: new Float64Array(statsBuf), storage: new Uint8Array(storageBuf), signals, step };
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
}

t.test('BlkDevice over malloc: writes then reads, data and used lengths', async (t) => {
  const { vr, dev, stats, storage, signals, step } = deviceHarness();
  vr.usedEvent = 0xffff; // leave interrupt decisions to the first-batch rule first

  // Write 3 requests with different layouts.
  const w1 = pattern(4096, 1);
  const w2 = pattern(1024, 2);
  const w3 = pattern(512, 3);
  const writes: { sector: number; data: Uint8Array; head: number; status: number }[] = [];
  {
    const d = vr.alloc(4096);
    vr.at(d, 4096).set(w1);
    const st = vr.alloc(1, 0xee);
    const head = vr.addChain([{ addr: header(vr, BlkType.Out, 16), len: 16 }, { addr: d, len: 4096 }, { addr: st, len: 1, write: true }]);
    writes.push({ sector: 16, data: w1, head, status: st });
  }
  {
    // Two data segments, sent through an indirect table.
    const a = vr.alloc(512);
    const b = vr.alloc(512);
    vr.at(a, 512).set(w2.subarray(0, 512));
    vr.at(b, 512).set(w2.subarray(512));
    const st = vr.alloc(1, 0xee);
    const head = vr.addIndirect([{ addr: header(vr, BlkType.Out, 100), len: 16 }, { addr: a, len: 512 }, { addr: b, len: 512 }, { addr: st, len: 1, write: true }]);
    writes.push({ sector: 100, data: w2, head, status: st });
  }
  {
    // Header and data in one buffer.
    const hb = vr.alloc(16 + 512);
    vr.view.setUint32(hb - vr.gpa, BlkType.Out, true);
    vr.view.setBigUint64(hb - vr.gpa + 8, 255n, true);
    vr.at(hb + 16, 512).set(w3);
    const st = vr.alloc(1, 0xee);
    const head = vr.addChain([{ addr: hb, len: 528 }, { addr: st, len: 1, write: true }]);
    writes.push({ sector: 255, data: w3, head, status: st });
  }

  t.ok(step() > 0);
  t.equal(dev.inflight, 0);
  const used = vr.readUsed();
  t.same(
    used,
    writes.map((w) => ({ id: w.head, len: 1 })),
    'writes: used len 1 (only the status byte written)',
  );
  for (const w of writes) {
    t.equal(vr.bytes[w.status - vr.gpa], BlkStatus.Ok);
    t.same(storage.subarray(w.sector * 512, w.sector * 512 + w.data.length), w.data, `storage at sector ${w.sector}`);
  }
  t.same(signals, [42], 'one interrupt for the batch');
  t.equal(stats[DeviceStat.WriteOps], 3);
  t.equal(stats[DeviceStat.WriteBytes], 4096 + 1024 + 512);

  // Read them back with other layouts.
  vr.usedEvent = vr.usedIdx; // interrupt once the next used entry is published
  const reads: { head: number; buf: number; len: number; want: Uint8Array }[] = [];
  {
    // Split header; data and status share one buffer.
    const h = header(vr, BlkType.In, 16);
    const buf = vr.alloc(4096 + 1, 0xaa);
    const head = vr.addChain([{ addr: h, len: 8 }, { addr: h + 8, len: 8 }, { addr: buf, len: 4097, write: true }]);
    reads.push({ head, buf, len: 4096, want: w1 });
  }
  {
    // Three writable segments through an indirect table: 512 + 256 + (256 + status).
    const a = vr.alloc(512, 0xaa);
    const b = vr.alloc(256, 0xaa);
    const c = vr.alloc(257, 0xaa);
    const head = vr.addIndirect([
      { addr: header(vr, BlkType.In, 100), len: 16 },
      { addr: a, len: 512, write: true },
      { addr: b, len: 256, write: true },
      { addr: c, len: 257, write: true },
    ]);
    t.equal(b, a + 512);
    t.equal(c, b + 256, 'the allocator made the three buffers contiguous');
    reads.push({ head, buf: a, len: 1024, want: w2 });
  }
  t.ok(step() > 0);
  const used2 = vr.readUsed();
  t.same(
    used2,
    reads.map((r) => ({ id: r.head, len: r.len + 1 })),
    'reads: used len = data bytes + 1',
  );
  for (const r of reads) {
    t.same(vr.at(r.buf, r.len), r.want, 'data read back');
    t.equal(vr.bytes[r.buf - vr.gpa + r.len], BlkStatus.Ok, 'status byte after the data');
  }
  t.same(signals, [42, 42], 'used_event passed: one more interrupt');
  t.equal(stats[DeviceStat.ReadOps], 2);
  t.equal(stats[DeviceStat.ReadBytes], 4096 + 1024);

  // A batch the driver asked no interrupt for (used_event far ahead).
  vr.usedEvent = (vr.usedIdx + 100) & 0xffff;
  const st = vr.alloc(1);
  vr.addChain([{ addr: header(vr, BlkType.Flush, 0), len: 16 }, { addr: st, len: 1, write: true }]);
  step();
  t.same(vr.readUsed().map((u) => u.len), [1]);
  t.same(signals, [42, 42], 'no interrupt before used_event');
  t.equal(stats[DeviceStat.FlushOps], 1);
  t.equal(step(), 0, 'idle poll does no work');
});

t.test('an interrupt the driver asks for while the device decides without a barrier comes within SETTLE_QUIET polls (order.ts)', async (t) => {
  const { vr, dev, signals, step } = deviceHarness();
  const flush = () => {
    const st = vr.alloc(1);
    vr.addChain([{ addr: header(vr, BlkType.Flush, 0), len: 16 }, { addr: st, len: 1, write: true }]);
  };
  flush();
  step();
  t.same(signals, [42], 'the first decision interrupts');
  vr.usedEvent = (vr.usedIdx + 100) & 0xffff;
  flush();
  // One loop turn: the device takes the request, the bdev completes it, the device publishes it; used_event says no.
  step();
  t.equal(vr.usedIdx, 2);
  t.same(signals, [42], 'no interrupt as used_event was read');
  // The driver, about to sleep, asks for an interrupt at the entry just published (its re-check raced the device's store).
  vr.usedEvent = 1;
  let polls = 0;
  while (signals.length < 2 && polls < SETTLE_QUIET) {
    t.equal(step(), 0, 'an idle poll');
    polls++;
  }
  t.same(signals, PLAIN_STORE_RELEASES ? [42, 42] : [42], PLAIN_STORE_RELEASES ? 'idle polls settle the decision: interrupt' : 'decided at the publish already');
  if (PLAIN_STORE_RELEASES) t.ok(polls > 1, `not at the first idle poll (${polls})`);
  step();
  t.equal(signals.length, PLAIN_STORE_RELEASES ? 2 : 1, 'settled once');
});

t.test('BlkDevice: errors, GET_ID, discard, write zeroes, stop', async (t) => {
  const { vr, dev, stats, storage, step } = deviceHarness({ blocks: 64 });
  storage.fill(0x55);
  const S = () => {
    const a = vr.alloc(1, 0xee);
    return { addr: a, len: 1, write: true } as Buf;
  };
  const s1 = S();
  const h1 = vr.addChain([{ addr: header(vr, BlkType.In, 64), len: 16 }, { addr: vr.alloc(512), len: 512, write: true }, s1]);
  const s2 = S();
  const h2 = vr.addChain([{ addr: header(vr, 77, 0), len: 16 }, s2]);
  const id = vr.alloc(20, 0xff);
  const s3 = S();
  const h3 = vr.addChain([{ addr: header(vr, BlkType.GetId, 0), len: 16 }, { addr: id, len: 20, write: true }, s3]);
  const s4 = S();
  const h4 = vr.addChain([{ addr: header(vr, BlkType.Discard, 0), len: 16 }, { addr: dwzSegment(vr, 8, 8, 0), len: 16 }, s4]);
  const s5 = S();
  const h5 = vr.addChain([{ addr: header(vr, BlkType.WriteZeroes, 0), len: 16 }, { addr: dwzSegment(vr, 32, 16, 1), len: 16 }, s5]);
  const h6 = vr.addChain([{ addr: header(vr, BlkType.In, 0), len: 16 }]); // no status byte
  const loop = vr.takeDesc();
  vr.writeDesc(vr.descAddr, loop, vr.alloc(16), 16, 1, loop);
  vr.makeAvailable(loop);

  step();
  // Immediate completions come first, bdev completions when the channel delivers them.
  const byId = (a: { id: number }, b: { id: number }) => a.id - b.id;
  t.same(vr.readUsed().sort(byId), [
    { id: h1, len: 1 },
    { id: h2, len: 1 },
    { id: h3, len: 21 },
    { id: h4, len: 1 },
    { id: h5, len: 1 },
    { id: h6, len: 0 },
    { id: loop, len: 0 },
  ].sort(byId));
  t.equal(vr.bytes[s1.addr - vr.gpa], BlkStatus.IoErr, 'read past the end');
  t.equal(vr.bytes[s2.addr - vr.gpa], BlkStatus.Unsupp, 'unknown type');
  t.equal(vr.bytes[s3.addr - vr.gpa], BlkStatus.Ok);
  t.same(Buffer.from(vr.at(id, 20)), Buffer.concat([Buffer.from('Malloc0'), Buffer.alloc(13)]), 'GET_ID: bdev name, NUL padded');
  t.equal(vr.bytes[s4.addr - vr.gpa], BlkStatus.Ok);
  t.equal(vr.bytes[s5.addr - vr.gpa], BlkStatus.Ok);
  t.ok(storage.subarray(8 * 512, 16 * 512).every((b) => b === 0), 'discarded range zeroed (malloc)');
  t.ok(storage.subarray(32 * 512, 48 * 512).every((b) => b === 0), 'write-zeroes range zeroed');
  t.equal(storage[16 * 512], 0x55, 'untouched between');
  t.equal(storage[48 * 512], 0x55, 'untouched after');
  t.equal(stats[DeviceStat.ErrorOps], 4);
  t.equal(stats[DeviceStat.UnmapOps], 2);
  t.equal(stats[DeviceStat.UnmapBytes], 24 * 512);

  t.equal(dev.running, true);
  dev.beginStop();
  t.equal(dev.running, false);
  vr.addChain([{ addr: header(vr, BlkType.Flush, 0), len: 16 }, S()]);
  step();
  t.same(vr.readUsed(), [], 'a stopping device takes no new requests');
  const res = dev.finishStop();
  t.same(res, { queues: [{ index: 0, pos: { availIdx: 7, availWrap: false, usedIdx: 7, usedWrap: false } }] });
});

t.test('BlkDevice: readonly device refuses writes', async (t) => {
  const { vr, step, storage } = deviceHarness({ readonly: true });
  const d = vr.alloc(512, 0x11);
  const st = vr.alloc(1);
  const h = vr.addChain([{ addr: header(vr, BlkType.Out, 0), len: 16 }, { addr: d, len: 512 }, { addr: st, len: 1, write: true }]);
  step();
  t.same(vr.readUsed(), [{ id: h, len: 1 }]);
  t.equal(vr.bytes[st - vr.gpa], BlkStatus.IoErr);
  t.equal(storage[0], 0, 'storage unchanged');
});

/** A bdev that completes only when the test says so, and can answer NOMEM. */
class HeldBdev implements Bdev {
  readonly name = 'Held0';
  readonly blockSize = 512;
  readonly numBlocks = 256;
  readonly held: BdevIo[] = [];
  readonly done: BdevIo[] = [];
  nomem = 0;
  ioTypeSupported(type: BdevIoType): boolean {
    return type === BdevIoType.Read || type === BdevIoType.Write;
  }
  createChannel(): BdevChannel {
    const self = this;
    return {
      submit(io: BdevIo): void {
        if (self.nomem > 0) {
          self.nomem--;
          io.status = BdevIoStatus.NoMem;
          self.done.push(io);
          return;
        }
        self.held.push(io);
      },
      poll(): number {
        const n = self.done.length;
        for (const io of self.done.splice(0)) io.onComplete();
        return n;
      },
      get outstanding() {
        return self.held.length + self.done.length;
      },
      destroy(): void {},
    };
  }
  /** Complete the held I/O (the first `count` of it when given) with `status`. */
  release(status: BdevIoStatus, count?: number): void {
    for (const io of this.held.splice(0, count ?? this.held.length)) {
      io.status = status;
      this.done.push(io);
    }
  }
  destroy(): void {}
}

t.test('a drained queue makes its used entries visible every EARLY_FLUSH completions, a deeper one once per poll', async (t) => {
  for (const depth of [20, VIRTIO_BATCH, VIRTIO_BATCH + 8]) {
    const bdev = new HeldBdev();
    const { vr, dev, layer, signals } = deviceHarness({ bdev, size: 128 });
    const buf = vr.alloc(512);
    const heads: number[] = [];
    for (let i = 0; i < depth; i++) heads.push(vr.addChain([{ addr: header(vr, BlkType.In, i), len: 16 }, { addr: buf, len: 512, write: true }, { addr: vr.alloc(1), len: 1, write: true }]));
    dev.poll();
    const drained = depth <= VIRTIO_BATCH;
    t.equal(dev.inflight, Math.min(depth, VIRTIO_BATCH), `depth ${depth}: taken`);
    bdev.release(BdevIoStatus.Success, EARLY_FLUSH + 1);
    layer.poll(performance.now());
    // The bdev's completions reached the device; no device poll has published them yet.
    t.equal(vr.usedIdx, drained ? EARLY_FLUSH : 0, `depth ${depth}: ${drained ? 'the first EARLY_FLUSH are visible already' : 'nothing visible before the poll'}`);
    t.same(signals, [], `depth ${depth}: no interrupt before the poll decides`);
    dev.poll();
    t.equal(vr.usedIdx, EARLY_FLUSH + 1, `depth ${depth}: the poll publishes the rest`);
    t.same(
      vr.readUsed().map((u) => u.id),
      heads.slice(0, EARLY_FLUSH + 1),
      `depth ${depth}: in completion order`,
    );
    t.equal(signals.length, 1, `depth ${depth}: one interrupt for the whole span`);
    bdev.release(BdevIoStatus.Success);
    for (let i = 0; i < 4; i++) {
      dev.poll();
      layer.poll(performance.now());
      bdev.release(BdevIoStatus.Success);
    }
    dev.poll();
    t.equal(dev.inflight, 0, `depth ${depth}: all complete`);
    t.equal(vr.usedIdx, depth, `depth ${depth}: all published`);
  }
});

t.test('BlkDevice: asynchronous completion, NOMEM retry (by the bdev layer), stop waits for in-flight I/O', async (t) => {
  const bdev = new HeldBdev();
  const { vr, dev, signals, stats, step, layer } = deviceHarness({ bdev });
  bdev.nomem = 1;
  const bufs = [vr.alloc(513), vr.alloc(513)];
  const heads = bufs.map((b) => vr.addChain([{ addr: header(vr, BlkType.In, 0), len: 16 }, { addr: b, len: 513, write: true }]));
  step();
  t.equal(dev.inflight, 2);
  t.equal(bdev.held.length, 1, 'one submitted, one refused with NOMEM');
  step();
  t.equal(bdev.held.length, 2, 'the NOMEM one was resubmitted');
  t.equal(stats[DeviceStat.InflightTasks], 2);
  t.same(vr.readUsed(), [], 'nothing completes before the bdev does');
  t.same(signals, []);

  dev.beginStop();
  t.equal(dev.inflight, 2, 'stop does not drop in-flight I/O');
  t.throws(() => dev.finishStop(), /in flight/);

  bdev.release(BdevIoStatus.Failed);
  step();
  t.equal(dev.inflight, 0);
  t.same(
    vr.readUsed().sort((a, b) => a.id - b.id),
    heads.map((h) => ({ id: h, len: 1 })).sort((a, b) => a.id - b.id),
    'failed reads: used len 1',
  );
  for (const b of bufs) t.equal(vr.bytes[b - vr.gpa + 512], BlkStatus.IoErr);
  t.same(signals, [42]);
  t.same(dev.finishStop(), { queues: [{ index: 0, pos: { availIdx: 2, availWrap: false, usedIdx: 2, usedWrap: false } }] });
  t.equal(layer.openCount, 0, 'the bdev handle was closed');
});

t.test('a 32768-entry queue starts with no request slots; slots and scratch follow the depth used', async (t) => {
  const { vr, dev, step, storage } = deviceHarness({ size: 32768, memBytes: 8 << 20 });
  t.equal(BLK_MAX_SEGMENTS, BlkLimit.SegMax + 2, 'per-request scratch: seg_max + header + status');
  t.equal(BLK_MAX_SEGMENTS, 128);
  t.equal(dev.tasksAllocated(0), 0, 'nothing allocated per ring slot at start');
  storage.fill(7);
  const heads: number[] = [];
  for (let i = 0; i < 3; i++) {
    heads.push(vr.addChain([{ addr: header(vr, BlkType.In, i), len: 16 }, { addr: vr.alloc(513), len: 513, write: true }]));
  }
  step();
  t.same(vr.readUsed().map((u) => u.len), [513, 513, 513]);
  t.equal(dev.tasksAllocated(0), 3, 'three requests in flight at once: three slots');
  for (let i = 0; i < 3; i++) vr.addChain([{ addr: header(vr, BlkType.In, i), len: 16 }, { addr: vr.alloc(513), len: 513, write: true }]);
  step();
  t.equal(vr.readUsed().length, 3);
  t.equal(dev.tasksAllocated(0), 3, 'slots are reused, not allocated again');

  // Scratch per request: header + 126 data segments + status fits, one more segment does not.
  const seg = (n: number): Buf[] => Array.from({ length: n }, () => ({ addr: vr.alloc(512), len: 512 }));
  const st1 = vr.alloc(1, 0xee);
  const fits = vr.addChain([{ addr: header(vr, BlkType.Out, 0), len: 16 }, ...seg(BlkLimit.SegMax), { addr: st1, len: 1, write: true }]);
  const st2 = vr.alloc(1, 0xee);
  const over = vr.addChain([{ addr: header(vr, BlkType.Out, 0), len: 16 }, ...seg(BlkLimit.SegMax + 1), { addr: st2, len: 1, write: true }]);
  step();
  // The refused one completes at once, the executed one when the bdev layer delivers it.
  t.same(vr.readUsed(), [{ id: over, len: 1 }, { id: fits, len: 1 }]);
  t.equal(vr.bytes[st1 - vr.gpa], BlkStatus.Ok, 'seg_max segments: executed');
  t.equal(vr.bytes[st2 - vr.gpa], BlkStatus.IoErr, 'seg_max + 1 segments: IOERR (the driver broke seg_max)');

  dev.beginStop();
  dev.finishStop();
  t.equal(dev.queueCount, 0, 'queues and their request pools are dropped at stop');
});

t.test('a data buffer spanning two adjacent guest regions is split, not refused', async (t) => {
  const next = new ArrayBuffer(1 << 16);
  const { vr, step, storage } = deviceHarness({ nextRegion: next });
  const end = vr.gpa + vr.buffer.byteLength;
  const data = pattern(1024, 9);
  vr.at(end - 300, 300).set(data.subarray(0, 300));
  new Uint8Array(next).set(data.subarray(300), 0);
  const st = vr.alloc(1, 0xee);
  const h = vr.addChain([{ addr: header(vr, BlkType.Out, 4), len: 16 }, { addr: end - 300, len: 1024 }, { addr: st, len: 1, write: true }]);
  step();
  t.same(vr.readUsed(), [{ id: h, len: 1 }]);
  t.equal(vr.bytes[st - vr.gpa], BlkStatus.Ok);
  t.same(storage.subarray(4 * 512, 4 * 512 + 1024), data, 'both parts written in order');
});

t.test('a bad data buffer with a sound status gets IOERR; a chain without a trusted status gets len 0', async (t) => {
  const { vr, step, stats } = deviceHarness();
  const st = vr.alloc(1, 0xee);
  const bad = vr.gpa + vr.buffer.byteLength + 0x10000;
  const h1 = vr.addChain([{ addr: header(vr, BlkType.In, 0), len: 16 }, { addr: bad, len: 512, write: true }, { addr: st, len: 1, write: true }]);
  const h2 = vr.addChain([{ addr: header(vr, BlkType.In, 0), len: 16 }, { addr: vr.alloc(512), len: 512, write: true }, { addr: bad, len: 1, write: true }]);
  step();
  t.same(vr.readUsed(), [{ id: h1, len: 1 }, { id: h2, len: 0 }]);
  t.equal(vr.bytes[st - vr.gpa], BlkStatus.IoErr);
  t.equal(stats[DeviceStat.ErrorOps], 2);
});

t.test('in-flight tracker through the device, and bdev resize through the layer', async (t) => {
  const { vr, dev, step, layer } = deviceHarness({ blocks: 8 });
  const events: string[] = [];
  dev.setInflightTracker({
    queue: (q) => ({
      popped: (h) => events.push(`pop ${q}:${h}`),
      pushed: (h) => events.push(`push ${q}:${h}`),
      published: () => events.push(`publish ${q}`),
    }),
  });
  const st = vr.alloc(1, 0xee);
  const h = vr.addChain([{ addr: header(vr, BlkType.In, 8), len: 16 }, { addr: vr.alloc(512), len: 512, write: true }, { addr: st, len: 1, write: true }]);
  step();
  t.equal(vr.bytes[st - vr.gpa], BlkStatus.IoErr, 'sector 8 is past 8 blocks');
  t.same(events, [`pop 0:${h}`, `push 0:${h}`, 'publish 0']);
  vr.readUsed();
  t.throws(() => layer.resize('Malloc0', 16), /cannot change size/, 'malloc bdevs do not resize');
});

t.test('issue #15 item 2: a queue holds at most MAX_INFLIGHT_PER_QUEUE tasks; the rest waits in the ring, then runs', async (t) => {
  const bdev = new HeldBdev();
  const { vr, dev, step } = deviceHarness({ bdev, size: 4096, memBytes: 16 << 20 });
  const n = MAX_INFLIGHT_PER_QUEUE + 300;
  const heads: number[] = [];
  for (let i = 0; i < n; i++) heads.push(vr.addChain([{ addr: header(vr, BlkType.In, 0), len: 16 }, { addr: vr.alloc(513), len: 513, write: true }]));
  for (let i = 0; i < n / VIRTIO_BATCH + 4; i++) step();
  t.equal(dev.tasksAllocated(0), MAX_INFLIGHT_PER_QUEUE, 'the pool stops at the budget');
  t.equal(dev.inflight, MAX_INFLIGHT_PER_QUEUE, 'as many in flight');
  t.equal(bdev.held.length, MAX_INFLIGHT_PER_QUEUE, 'the bdev sees no more');
  bdev.release(BdevIoStatus.Success);
  for (let i = 0; i < n / VIRTIO_BATCH + 4; i++) {
    step();
    bdev.release(BdevIoStatus.Success);
  }
  step();
  const used = vr.readUsed();
  t.equal(used.length, n, 'every chain completes once tasks are free again');
  t.same(new Set(used.map((u) => u.id)).size, n, 'each head once');
  t.equal(dev.tasksAllocated(0), MAX_INFLIGHT_PER_QUEUE, 'still no more tasks than the budget');
  dev.beginStop();
  dev.finishStop();
});
