/**
 * The dirty log of a live migration (engine/virtio/dirty-log.ts): page bits
 * for ranges (inside a page, across pages, whole bytes, past the end of the
 * log), and a virtio-blk device with a log: the pages of read data, status
 * bytes and the used ring are marked — across two guest regions — and
 * nothing else; without ring logging the used ring is not marked.
 */
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { WorkerBdevLayer } from '../../engine/bdev/layer';
import { BDEV_MODULES } from '../../engine/bdev/modules';
import { type BlkTask, createBlkDevice } from '../../engine/blk/model';
import { type DeviceDesc, DeviceStat, type RegionDesc } from '../../engine/control';
import { GuestMemory } from '../../engine/memory';
import type { VirtioDevice } from '../../engine/virtio/device';
import { DirtyLog, logBytesFor, pageMarked } from '../../engine/virtio/dirty-log';
import { BlkType } from '../../engine/virtio/spec';
import { F_EVENT_IDX, F_INDIRECT, F_VERSION_1, MockVring } from '../lib/mock-vring';

const PAGE = 4096;

function marked(bits: Uint8Array): number[] {
  const out: number[] = [];
  for (let p = 0; p < bits.byteLength * 8; p++) if (pageMarked(bits, p)) out.push(p);
  return out;
}

t.test('logBytesFor: one bit per 4 KiB page, rounded up', async (t) => {
  t.equal(logBytesFor(0), 0);
  t.equal(logBytesFor(1), 1);
  t.equal(logBytesFor(8 * PAGE), 1);
  t.equal(logBytesFor(8 * PAGE + 1), 2);
  t.equal(logBytesFor(2 ** 30), 2 ** 30 / PAGE / 8);
});

t.test('markRange: pages of a range, whole bytes, nothing past the log', async (t) => {
  const buf = new Uint8Array(16);
  const log = new DirtyLog(buf.subarray(0, 8)); // 64 pages; bytes 8.. are a guard
  log.markRange(100, 1);
  t.same(marked(buf), [0]);
  log.markRange(PAGE - 1, 2); // straddles pages 0 and 1
  t.same(marked(buf), [0, 1]);
  log.markRange(5 * PAGE, 0);
  t.same(marked(buf), [0, 1], 'a zero-length range marks nothing');
  log.markRange(3 * PAGE + 10, 20 * PAGE); // pages 3..23: whole bytes 1 and 2 on the way
  t.same(marked(buf), [0, 1, ...Array.from({ length: 21 }, (_, i) => 3 + i)]);
  t.equal(buf[1], 0xff);
  t.equal(buf[2], 0xff);
  t.equal(log.outside, 0);
  log.markRange(62 * PAGE, 4 * PAGE); // pages 62..65: 64 and 65 are past the log
  t.ok(pageMarked(buf, 62) && pageMarked(buf, 63));
  t.equal(log.outside, 2, 'pages past the end are counted');
  t.same([...buf.subarray(8)], new Array(8).fill(0), 'the guard bytes after the log are never written');
  log.markRange(1000 * PAGE, PAGE);
  t.equal(log.outside, 3);
  t.same([...buf.subarray(8)], new Array(8).fill(0));
  // Bits already set by someone else stay set (OR, not store).
  const b2 = new Uint8Array(1);
  b2[0] = 0x80;
  new DirtyLog(b2).markRange(0, 1);
  t.equal(b2[0], 0x81);
});

const LOG_FD = 999;

interface LogHarness {
  vr: MockVring;
  dev: VirtioDevice<BlkTask>;
  bits: Uint8Array;
  step(): void;
}

/** A blk device over malloc on a mock ring of region 0 (gpa 0x10000, 1 MiB) and a region 1 right after it. */
function harness(opts: { log: boolean; ringLog: boolean }): LogHarness {
  const vr = new MockVring({ size: 16, memBytes: 1 << 20 });
  const next = new ArrayBuffer(1 << 20);
  const layer = new WorkerBdevLayer(new Map(BDEV_MODULES));
  const storage = new SharedArrayBuffer(512 * 256);
  new Uint8Array(storage).fill(0x5a);
  const logBuf = new ArrayBuffer(logBytesFor(vr.gpa + 2 * (1 << 20)));
  const desc: DeviceDesc = {
    id: 1,
    name: 'mig.0',
    features: F_VERSION_1 | F_INDIRECT | F_EVENT_IDX,
    model: { kind: 'blk', readonly: false },
    bdevs: [{ name: 'Malloc0', module: 'malloc', blockSize: 512, numBlocks: 256, params: { storage } }],
    regions: [],
    queues: [{ ...vr.queueDesc(0), callFd: -1, kickFd: -1, ...(opts.ringLog ? { logUsedAddr: vr.usedAddr } : {}) }],
    stats: new SharedArrayBuffer(DeviceStat.Count * 8),
    ...(opts.log ? { log: { fd: LOG_FD, mmapOffset: 0, sizeBytes: logBuf.byteLength } } : {}),
  };
  const mapMemory = (regions: readonly RegionDesc[]): GuestMemory =>
    regions[0]?.fd === LOG_FD
      ? GuestMemory.fromBuffers([{ guestPhysAddr: 0, buffer: logBuf }])
      : GuestMemory.fromBuffers([
          { guestPhysAddr: vr.gpa, buffer: vr.buffer },
          { guestPhysAddr: vr.gpa + vr.buffer.byteLength, buffer: next },
        ]);
  const dev = createBlkDevice(desc, { signal: () => {}, mapMemory, bdevs: layer }) as VirtioDevice<BlkTask>;
  return {
    vr,
    dev,
    bits: new Uint8Array(logBuf),
    step() {
      dev.poll();
      layer.poll(performance.now());
      dev.poll();
    },
  };
}

function header(vr: MockVring, type: number, sector: number): number {
  const a = vr.alloc(16);
  vr.view.setUint32(a - vr.gpa, type, true);
  vr.view.setBigUint64(a - vr.gpa + 8, BigInt(sector), true);
  return a;
}

const page = (gpa: number): number => Math.floor(gpa / PAGE);

t.test('a device with a log marks read data, status bytes and the used ring — and nothing else', async (t) => {
  const h = harness({ log: true, ringLog: true });
  const { vr } = h;
  // A read whose data buffer runs from the last 2 KiB of region 0 into region 1 (two segments).
  const end0 = vr.gpa + vr.buffer.byteLength;
  const data = end0 - 2048;
  const st = vr.alloc(1, 0xee);
  const hdr = header(vr, BlkType.In, 8);
  vr.addChain([{ addr: hdr, len: 16 }, { addr: data, len: 4096, write: true }, { addr: st, len: 1, write: true }]);
  h.step();
  t.same(vr.readUsed().length, 1);
  t.equal(vr.bytes[st - vr.gpa], 0, 'status OK');
  t.equal(vr.bytes[data - vr.gpa], 0x5a, 'data arrived');
  const want = [...new Set([page(data), page(end0), page(st), page(vr.usedAddr)])].sort((a, b) => a - b);
  t.same(marked(h.bits), want, 'data pages in both regions, the status page and the used ring page');
  t.notOk(pageMarked(h.bits, page(hdr)) && page(hdr) !== page(st), 'the header (device-readable) is not marked');

  // A write marks only its status byte (and the used ring).
  h.bits.fill(0);
  const wdata = vr.alloc(PAGE * 2);
  const wst = vr.alloc(PAGE); // its own page
  vr.addChain([{ addr: header(vr, BlkType.Out, 16), len: 16 }, { addr: wdata, len: PAGE * 2 }, { addr: wst, len: 1, write: true }]);
  h.step();
  t.same(vr.readUsed().length, 1);
  t.same(marked(h.bits), [page(wst), page(vr.usedAddr)].sort((a, b) => a - b), 'a write: its status page and the used ring');
  t.ok(h.dev.dirtyLogStats !== null && h.dev.dirtyLogStats.outside === 0);
});

t.test('without VHOST_VRING_F_LOG the used ring is not marked; without a log nothing is', async (t) => {
  {
    const h = harness({ log: true, ringLog: false });
    const { vr } = h;
    const data = vr.alloc(PAGE);
    const st = vr.alloc(1);
    vr.addChain([{ addr: header(vr, BlkType.In, 0), len: 16 }, { addr: data, len: 512, write: true }, { addr: st, len: 1, write: true }]);
    h.step();
    t.same(vr.readUsed().length, 1);
    t.same(marked(h.bits), [...new Set([page(data), page(st)])].sort((a, b) => a - b));
    t.notOk(pageMarked(h.bits, page(vr.usedAddr)));
  }
  {
    const h = harness({ log: false, ringLog: true });
    const { vr } = h;
    vr.addChain([{ addr: header(vr, BlkType.In, 0), len: 16 }, { addr: vr.alloc(PAGE), len: 512, write: true }, { addr: vr.alloc(1), len: 1, write: true }]);
    h.step();
    t.same(vr.readUsed().length, 1);
    t.same(marked(h.bits), [], 'logging off: the bitmap stays 0');
    t.equal(h.dev.dirtyLogStats, null);
  }
});

t.test('the rings are marked once more when the device stops', async (t) => {
  const h = harness({ log: true, ringLog: true });
  h.step();
  t.same(marked(h.bits), [], 'nothing published, nothing marked');
  h.dev.beginStop();
  h.dev.finishStop();
  t.same(marked(h.bits), [page(h.vr.usedAddr)]);
});
