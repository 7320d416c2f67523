/**
 * In-process microbenchmark of the engine's request path: one virtio-blk
 * device over a null bdev (through the worker's bdev layer), polled in a
 * loop on this thread as the worker's poller does (bdev layer, then device), with a "driver" in the same
 * loop that resubmits each completion at once (4 KiB reads, one queue of 128,
 * EVENT_IDX with no interrupt wanted). No sockets, no second thread, no load
 * generator: it measures the poll loop alone, which the end-to-end bench
 * cannot once vhostd outruns the generator.
 *
 *   node dist/bench/micro.js [--requests N] [--qd N] [--per-iter K] [--inflight] [--packed] [--scsi] [--malloc MIB [--no-huge]] [--json]
 *
 * `--inflight`: the device records every request in an in-flight region
 * (vhost-user INFLIGHT_SHMFD, engine/virtio/inflight.ts), as with QEMU.
 * `--packed`: a packed ring (VIRTIO_F_RING_PACKED; the driver area says
 * DISABLE, so no interrupt is wanted), in-flight region in the packed layout.
 * `--scsi`: a virtio-scsi device instead (the null bdev as LUN 0 of target
 * 0, request queue 2), each chain a READ 16 of 8 blocks: the 51-byte
 * request, the 108-byte response, 4 KiB of data-in — the same three
 * descriptors as a blk read, so the two figures compare the models.
 * `--malloc MIB`: a malloc bdev of MIB MiB instead of the null bdev, made
 * as bdev_malloc_create makes it (huge pages when the pool holds it; with
 * `--no-huge` 4 KiB pages), each read at a new random 4 KiB-aligned sector
 * (blk only): the copy out of a large RAM disk, TLB misses included.
 * Prints ns per request (wall clock, and the process's CPU time), requests
 * per poll and millions of requests per s.
 */
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { WorkerBdevLayer } from '../engine/bdev/layer';
import { createBlkDevice } from '../engine/blk/model';
import { createScsiDevice } from '../engine/virtio-scsi/model';
import { type DeviceDesc, DeviceStat } from '../engine/control';
import { GuestMemory } from '../engine/memory';
import { inflightRegionBytes } from '../engine/virtio/inflight';
import { packedInflightRegionBytes } from '../engine/virtio/inflight-packed';
import { memfdStorage, setMallocHugepages } from '../modules/bdev/malloc/reactor';
import { native } from '../bindings';

// The in-process ring both micro benchmarks drive (this one and bench/ring-micro.ts): queue size,
// where the descriptor table, avail/driver area, used/device area and request buffers sit in the
// 4 MiB of guest memory, and the descriptor flags used.
export const QUEUE_SIZE = 128;
export const DESC = 0x1000;
export const AVAIL = 0x2000;
export const USED = 0x3000;
export const DATA = 0x10000;
export const F_NEXT = 1;
export const F_WRITE = 2;

export interface MicroResult {
  nsPerReq: number;
  /** CPU time of the process (user + system, all its threads) per request: robust to the thread being descheduled on a shared machine. */
  cpuNsPerReq: number;
  reqPerPoll: number;
  mIops: number;
  /** The device's own counters over the whole run (warm-up included): what it read, and what it failed. */
  readOps: number;
  errorOps: number;
}

/** Run `requests` reads at depth `qd`, the driver adding at most `perIter` avail entries per poll. */
export function runMicro(requests: number, qd: number, perIter: number, inflight = false, packed = false, scsi = false, mallocMiB = 0, noHuge = false): MicroResult {
  if (mallocMiB > 0 && (scsi || packed)) throw new Error('--malloc drives the split blk device only');
  const buf = new ArrayBuffer(4 << 20);
  const v = new DataView(buf);
  const words = new Uint16Array(buf);
  const mem = GuestMemory.fromBuffers([{ guestPhysAddr: 0, buffer: buf }]);
  const desc = (i: number, addr: number, len: number, flags: number, next: number): void => {
    const d = DESC + 16 * i;
    v.setUint32(d, addr, true);
    v.setUint32(d + 4, 0, true);
    v.setUint32(d + 8, len, true);
    v.setUint16(d + 12, flags, true);
    v.setUint16(d + 14, next, true);
  };
  // One 3-descriptor chain per unit of depth. blk: header, 4 KiB data (device-writable), status.
  // scsi: virtio_scsi_req_cmd (51 bytes), response (108, device-writable), 4 KiB data-in.
  const lens = scsi ? [51, 108, 4096] : [16, 4096, 1];
  const offs = scsi ? [0, 64, 4096] : [0, 4096, 32];
  for (let i = 0; i < qd; i++) {
    const h = DATA + i * 8192;
    if (scsi) {
      // LUN: lun[0] = 1, target 0, flat LUN 0 (as Linux writes it); CDB READ 16, LBA i*8, 8 blocks.
      v.setUint8(h, 1);
      v.setUint8(h + 2, 0x40);
      v.setUint8(h + 19, 0x88);
      v.setUint32(h + 19 + 6, i * 8);
      v.setUint32(h + 19 + 10, 8);
    } else {
      v.setUint32(h, 0, true); // VIRTIO_BLK_T_IN
      v.setUint32(h + 8, i * 8, true); // sector
    }
    desc(3 * i, h + offs[0], lens[0], F_NEXT, 3 * i + 1);
    desc(3 * i + 1, h + offs[1], lens[1], F_NEXT | F_WRITE, 3 * i + 2);
    desc(3 * i + 2, h + offs[2], lens[2], F_WRITE, 0);
  }
  if (packed) words[AVAIL / 2 + 1] = 1; // driver event area: DISABLE
  else words[(AVAIL + 4 + 2 * QUEUE_SIZE) / 2] = 0x8000; // used_event far ahead: no interrupt wanted
  let bdevDesc: DeviceDesc['bdevs'][number] = { name: 'Null0', module: 'null', blockSize: 512, numBlocks: 1 << 20, params: null, stats: new SharedArrayBuffer(64 * 8), qos: new SharedArrayBuffer(8 * 8) };
  let mallocFd = -1;
  if (mallocMiB > 0) {
    setMallocHugepages(!noHuge);
    const storage = memfdStorage('micro', mallocMiB << 20);
    if ('fd' in storage) mallocFd = storage.fd;
    bdevDesc = { ...bdevDesc, name: 'Malloc0', module: 'malloc', numBlocks: (mallocMiB << 20) / 512, params: storage };
  }
  // Random 4 KiB-aligned sectors (xorshift32) for --malloc: a new one at each submission.
  const sectors4k = (mallocMiB << 20) / 4096;
  let rnd = 0x9e3779b9;
  const features = (1n << 32n) | (1n << 30n) | (1n << 29n) | (1n << 28n) | (packed ? 1n << 34n : 0n);
  const device: DeviceDesc = {
    id: 1,
    name: 'micro',
    features,
    model: scsi ? { kind: 'scsi', targets: [{ target: 0, bdev: 0, identifier: 'micro' }] } : { kind: 'blk', readonly: false },
    bdevs: [bdevDesc],
    regions: [],
    queues: [
      {
        index: scsi ? 2 : 0,
        size: QUEUE_SIZE,
        descAddr: DESC,
        availAddr: AVAIL,
        usedAddr: USED,
        pos: { availIdx: 0, availWrap: packed, usedIdx: 0, usedWrap: packed },
        kickFd: -1,
        callFd: -1,
      },
    ],
    stats: new SharedArrayBuffer(16 * 8),
  };
  const INFLIGHT_FD = -2;
  const region = new ArrayBuffer((packed ? packedInflightRegionBytes : inflightRegionBytes)(1, QUEUE_SIZE));
  if (inflight) device.inflight = { fd: INFLIGHT_FD, mmapOffset: 0, sizeBytes: region.byteLength, queueSize: QUEUE_SIZE, numQueues: 1 };
  const layer = new WorkerBdevLayer();
  const mapMemory = (regions: readonly { fd: number }[]): GuestMemory =>
    regions[0]?.fd === INFLIGHT_FD ? GuestMemory.fromBuffers([{ guestPhysAddr: 0, buffer: region }]) : mem;
  const dev = (scsi ? createScsiDevice : createBlkDevice)(device, { signal: () => undefined, mapMemory, bdevs: layer });

  // Heads the driver may offer next, oldest first: a ring of qd (at most qd are ever outside the device).
  const backlog = new Int32Array(qd);
  for (let i = 0; i < qd; i++) backlog[i] = 3 * i;
  let backHead = 0;
  let backCount = qd;
  const giveBack = (head: number): void => {
    let at = backHead + backCount++;
    if (at >= qd) at -= qd;
    backlog[at] = head;
  };
  let availIdx = 0;
  let usedSeen = 0;
  let done = 0;
  let polls = 0;
  // Packed driver: next slot to fill and the used slot expected next, with their wrap counters.
  let pAvail = 0;
  let pAvailWrap = true;
  let pUsed = 0;
  let pUsedWrap = true;
  // One request's three descriptors (offs, lens above): written without allocating per request.
  const packedDesc = (addr: number, len: number, id: number, dir: number): number => {
    const d = DESC + 16 * pAvail;
    v.setUint32(d, addr, true);
    v.setUint32(d + 4, 0, true);
    v.setUint32(d + 8, len, true);
    v.setUint16(d + 12, id, true);
    const f = dir | (pAvailWrap ? 1 << 7 : 1 << 15);
    if (++pAvail === QUEUE_SIZE) {
      pAvail = 0;
      pAvailWrap = !pAvailWrap;
    }
    return f;
  };
  const packedAdd = (head: number): void => {
    const i = head / 3;
    const h = DATA + i * 8192;
    const first = pAvail;
    const headFlags = packedDesc(h + offs[0], lens[0], i, F_NEXT);
    let at = pAvail;
    words[(DESC + 16 * at + 14) / 2] = packedDesc(h + offs[1], lens[1], i, F_NEXT | F_WRITE);
    at = pAvail;
    words[(DESC + 16 * at + 14) / 2] = packedDesc(h + offs[2], lens[2], i, F_WRITE);
    // The head's flags last (§2.8.21).
    words[(DESC + 16 * first + 14) / 2] = headFlags;
  };
  // The driver's side per layout: take what the device used back into the backlog; offer a chain (split publishes its avail index once per turn, below).
  const harvestPacked = (): void => {
    for (;;) {
      const f = words[(DESC + 16 * pUsed + 14) / 2];
      if (((f & (1 << 7)) !== 0) !== pUsedWrap || ((f & (1 << 15)) !== 0) !== pUsedWrap) break;
      giveBack(3 * v.getUint16(DESC + 16 * pUsed + 12, true));
      pUsed += 3;
      if (pUsed >= QUEUE_SIZE) {
        pUsed -= QUEUE_SIZE;
        pUsedWrap = !pUsedWrap;
      }
      done++;
    }
  };
  const harvestSplit = (): void => {
    const used = words[USED / 2 + 1];
    while (usedSeen !== used) {
      giveBack(v.getUint32(USED + 4 + 8 * (usedSeen & (QUEUE_SIZE - 1)), true));
      usedSeen = (usedSeen + 1) & 0xffff;
      done++;
    }
  };
  const splitAdd = (head: number): void => {
    if (sectors4k > 0) {
      rnd ^= rnd << 13;
      rnd ^= rnd >>> 17;
      rnd ^= rnd << 5;
      v.setUint32(DATA + (head / 3) * 8192 + 8, ((rnd >>> 0) % sectors4k) * 8, true);
    }
    words[(AVAIL + 4) / 2 + (availIdx & (QUEUE_SIZE - 1))] = head;
    availIdx = (availIdx + 1) & 0xffff;
  };
  const harvest = packed ? harvestPacked : harvestSplit;
  const add = packed ? packedAdd : splitAdd;
  const run = (n: number): void => {
    const target = done + n;
    while (done < target) {
      const now = performance.now();
      layer.poll(now);
      dev.poll(now);
      polls++;
      harvest();
      for (let k = 0; k < perIter && backCount > 0; k++) {
        add(backlog[backHead]);
        if (++backHead === qd) backHead = 0;
        backCount--;
      }
      if (!packed) words[AVAIL / 2 + 1] = availIdx;
    }
  };
  run(Math.ceil(requests / 4)); // warm up: let V8 optimise the loop
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const polls0 = polls;
  run(requests);
  const ns = Number(process.hrtime.bigint() - t0);
  const cpu = process.cpuUsage(cpu0);
  const stats = new Float64Array(device.stats);
  if (mallocFd >= 0) native.close(mallocFd);
  return {
    nsPerReq: +(ns / requests).toFixed(1),
    cpuNsPerReq: +(((cpu.user + cpu.system) * 1e3) / requests).toFixed(1),
    reqPerPoll: +(requests / (polls - polls0)).toFixed(2),
    mIops: +((requests / ns) * 1e3).toFixed(2),
    readOps: stats[DeviceStat.ReadOps],
    errorOps: stats[DeviceStat.ErrorOps],
  };
}

function main(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      requests: { type: 'string', default: '4000000' },
      qd: { type: 'string', default: '32' },
      'per-iter': { type: 'string', default: '2' },
      json: { type: 'boolean', default: false },
      inflight: { type: 'boolean', default: false },
      packed: { type: 'boolean', default: false },
      scsi: { type: 'boolean', default: false },
      malloc: { type: 'string', default: '0' },
      'no-huge': { type: 'boolean', default: false },
    },
  });
  const requests = Number(values.requests);
  const qd = Number(values.qd);
  const perIter = Number(values['per-iter']);
  if (!Number.isSafeInteger(requests) || requests < 1) throw new Error('--requests must be a positive integer');
  if (!Number.isSafeInteger(qd) || qd < 1 || qd > 42) throw new Error('--qd must be 1..42 (3 descriptors each in a queue of 128)');
  if (!Number.isSafeInteger(perIter) || perIter < 1) throw new Error('--per-iter must be a positive integer');
  const mallocMiB = Number(values.malloc);
  if (!Number.isSafeInteger(mallocMiB) || mallocMiB < 0 || mallocMiB > 4096) throw new Error('--malloc must be 0..4096 MiB');
  const r = runMicro(requests, qd, perIter, values.inflight, values.packed, values.scsi, mallocMiB, values['no-huge']);
  process.stdout.write(values.json ? JSON.stringify(r) + '\n' : `${r.nsPerReq} ns/request (CPU ${r.cpuNsPerReq} ns), ${r.reqPerPoll} requests/poll, ${r.mIops} M requests/s\n`);
  return 0;
}

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`micro: ${(err as Error).message}\n`);
    process.exitCode = 2;
  }
}
