/**
 * The ring layer alone (issue #10's ring goals): one virtqueue of 128
 * (engine/virtio/split.ts or packed.ts), with or without its in-flight
 * region (inflight.ts / inflight-packed.ts), driven in one loop by an
 * in-process driver, with no device model and no bdev: per poll pass the
 * "device" pushes what it took in the previous pass, publishes once, then
 * takes (available, pop, walk) up to 32 new chains; the driver harvests the
 * used entries and offers them again (3-descriptor 4 KiB read chains, as
 * bench/micro.ts; with --indirect each request is one ring descriptor
 * pointing at a table of those three, as a Linux guest builds it). What
 * differs between the variants is ring and in-flight work only, so the
 * figures count it; bench/micro.ts has the whole engine.
 *
 *   node dist/bench/ring-micro.js [--requests N] [--qd N] [--per-iter K] [--rounds R] [--indirect] [--json]
 *
 * Runs the four variants (split, split+inflight, packed, packed+inflight)
 * alternating for R rounds and prints per variant the lowest and median of:
 * `devNs` (wall ns per request inside the device's calls, timed per pass
 * with performance.now, whose cost is the same in every variant) and
 * `cpuNs` (process CPU time per request, device and driver together).
 */
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import type { QueueDesc } from '../engine/control';
import { GuestMemory } from '../engine/memory';
import { DescChain } from '../engine/virtio/chain';
import { InflightRegion, inflightRegionBytes } from '../engine/virtio/inflight';
import { PackedInflightRegion, packedInflightRegionBytes } from '../engine/virtio/inflight-packed';
import { PackedQueue } from '../engine/virtio/packed';
import type { Virtqueue } from '../engine/virtio/queue';
import { SplitQueue } from '../engine/virtio/split';
import { AVAIL, DATA, DESC, F_NEXT, F_WRITE, QUEUE_SIZE, USED } from './micro';

const BATCH = 32;
const F_INDIRECT = 4;

export interface RingVariant {
  packed: boolean;
  inflight: boolean;
  /** Each request one ring descriptor pointing at its table of three (VIRTIO_F_RING_INDIRECT_DESC). */
  indirect?: boolean;
}

/** Request i's indirect table (three descriptors, 64 bytes apart), past the data buffers. */
const TABLES = 0x80000;

export interface RingMicroResult {
  devNsPerReq: number;
  cpuNsPerReq: number;
  reqPerPass: number;
}

export function runRingMicro(v: RingVariant, requests: number, qd: number, perIter: number): RingMicroResult {
  const buf = new ArrayBuffer(4 << 20);
  const dv = new DataView(buf);
  const words = new Uint16Array(buf);
  const mem = GuestMemory.fromBuffers([{ guestPhysAddr: 0, buffer: buf }]);
  const lens = [16, 4096, 1];
  const offs = [0, 4096, 32];
  const dirs = [F_NEXT, F_NEXT | F_WRITE, F_WRITE];
  const indirect = v.indirect === true;
  // Request i's three descriptors, written once: split, at 3i of the descriptor table or (indirect) in a
  // table of its own that descriptor 3i points at (flags @12, next @14); packed, only in its own table
  // (flags @14, only WRITE counts there): its ring descriptors are written per request (offer).
  if (!v.packed || indirect) {
    for (let i = 0; i < qd; i++) {
      const table = indirect ? TABLES + 64 * i : DESC + 48 * i;
      const first = indirect ? 0 : 3 * i;
      for (let k = 0; k < 3; k++) {
        const d = table + 16 * k;
        dv.setUint32(d, DATA + i * 8192 + offs[k], true);
        dv.setUint32(d + 8, lens[k], true);
        if (v.packed) dv.setUint16(d + 14, dirs[k] & F_WRITE, true);
        else {
          dv.setUint16(d + 12, dirs[k], true);
          dv.setUint16(d + 14, first + k + 1, true);
        }
      }
      if (indirect && !v.packed) {
        dv.setUint32(DESC + 48 * i, table, true);
        dv.setUint32(DESC + 48 * i + 8, 48, true);
        dv.setUint16(DESC + 48 * i + 12, F_INDIRECT, true);
      }
    }
  }
  if (!v.packed) {
    words[(AVAIL + 4 + 2 * QUEUE_SIZE) / 2] = 0x8000; // used_event far ahead: no interrupt wanted
  } else {
    words[AVAIL / 2 + 1] = 1; // driver event area: DISABLE
  }
  const features = (1n << 32n) | (1n << 29n) | (1n << 28n) | (v.packed ? 1n << 34n : 0n);
  const qdesc: QueueDesc = {
    index: 0,
    size: QUEUE_SIZE,
    descAddr: DESC,
    availAddr: AVAIL,
    usedAddr: USED,
    pos: { availIdx: 0, availWrap: v.packed, usedIdx: 0, usedWrap: v.packed },
    kickFd: -1,
    callFd: -1,
  };
  let q: Virtqueue;
  if (v.packed) {
    const pq = new PackedQueue(mem, qdesc, features);
    if (v.inflight) pq.inflight = new PackedInflightRegion(new DataView(new ArrayBuffer(packedInflightRegionBytes(1, QUEUE_SIZE))), 1, QUEUE_SIZE);
    q = pq;
  } else {
    q = new SplitQueue(mem, qdesc, features);
    if (v.inflight) q.tracker = new InflightRegion(new DataView(new ArrayBuffer(inflightRegionBytes(1, QUEUE_SIZE))), 1, QUEUE_SIZE).queue(0);
  }
  q.resumeInflight?.();
  q.setNotification(false);

  const chain = new DescChain(8);
  const taken = new Int32Array(QUEUE_SIZE);
  let ntaken = 0;
  // Driver state: requests (by index 0..qd-1) waiting to be offered, split avail idx, packed positions.
  const backlog = new Int32Array(qd);
  let nback = 0;
  for (let i = 0; i < qd; i++) backlog[nback++] = i;
  let availIdx = 0;
  let usedSeen = 0;
  let pAvail = 0;
  let pAvailWrap = true;
  let pUsed = 0;
  let pUsedWrap = true;
  let done = 0;
  let passes = 0;
  // Accumulated in a typed array: a double in a closure variable would be boxed on every store.
  const devMs = new Float64Array(1);
  const ring32 = new Uint32Array(buf);
  // Ring slots a request takes.
  const slots = indirect ? 1 : 3;

  const offer = (i: number): void => {
    if (!v.packed) {
      words[(AVAIL + 4) / 2 + (availIdx & (QUEUE_SIZE - 1))] = 3 * i;
      availIdx = (availIdx + 1) & 0xffff;
      return;
    }
    if (indirect) {
      const w = (DESC + 16 * pAvail) / 4;
      ring32[w] = TABLES + 64 * i;
      ring32[w + 1] = 0;
      ring32[w + 2] = 48;
      ring32[w + 3] = i | ((F_INDIRECT | (pAvailWrap ? 1 << 7 : 1 << 15)) << 16);
      if (++pAvail === QUEUE_SIZE) {
        pAvail = 0;
        pAvailWrap = !pAvailWrap;
      }
      return;
    }
    const first = pAvail;
    let headFlags = 0;
    for (let k = 0; k < 3; k++) {
      const w = (DESC + 16 * pAvail) / 4;
      ring32[w] = DATA + i * 8192 + offs[k];
      ring32[w + 1] = 0;
      ring32[w + 2] = lens[k];
      const f = dirs[k] | (pAvailWrap ? 1 << 7 : 1 << 15);
      if (k === 0) {
        headFlags = f;
        words[2 * w + 6] = i;
      } else ring32[w + 3] = i | (f << 16);
      if (++pAvail === QUEUE_SIZE) {
        pAvail = 0;
        pAvailWrap = !pAvailWrap;
      }
    }
    words[(DESC + 16 * first + 14) / 2] = headFlags; // the head's flags last (§2.8.21)
  };
  const harvest = (): void => {
    if (!v.packed) {
      const used = words[USED / 2 + 1];
      while (usedSeen !== used) {
        backlog[nback++] = dv.getUint32(USED + 4 + 8 * (usedSeen & (QUEUE_SIZE - 1)), true) / 3;
        usedSeen = (usedSeen + 1) & 0xffff;
        done++;
      }
      return;
    }
    for (;;) {
      const f = words[(DESC + 16 * pUsed + 14) / 2];
      if (((f & (1 << 7)) !== 0) !== pUsedWrap || ((f & (1 << 15)) !== 0) !== pUsedWrap) break;
      backlog[nback++] = words[(DESC + 16 * pUsed + 12) / 2];
      pUsed += slots;
      if (pUsed >= QUEUE_SIZE) {
        pUsed -= QUEUE_SIZE;
        pUsedWrap = !pUsedWrap;
      }
      done++;
    }
  };
  const run = (n: number): void => {
    const target = done + n;
    while (done < target) {
      const t0 = performance.now();
      for (let k = 0; k < ntaken; k++) q.push(taken[k], 4097);
      ntaken = 0;
      q.publish();
      let avail = q.available();
      if (avail > BATCH) avail = BATCH;
      for (let k = 0; k < avail; k++) {
        const h = q.pop();
        if (h < 0) throw new Error(`ring broken: ${q.broken}`);
        if (q.walk(h, chain) !== 0 || chain.count !== 3) throw new Error(`chain ${h} walked wrong`);
        taken[ntaken++] = h;
      }
      devMs[0] += performance.now() - t0;
      passes++;
      harvest();
      let k = 0;
      for (; k < perIter && k < nback; k++) offer(backlog[k]);
      if (k > 0) {
        backlog.copyWithin(0, k, nback);
        nback -= k;
      }
      if (!v.packed) words[AVAIL / 2 + 1] = availIdx;
    }
  };
  run(Math.ceil(requests / 4)); // warm up
  const cpu0 = process.cpuUsage();
  const dev0 = devMs[0];
  const passes0 = passes;
  run(requests);
  const cpu = process.cpuUsage(cpu0);
  return {
    devNsPerReq: +(((devMs[0] - dev0) * 1e6) / requests).toFixed(1),
    cpuNsPerReq: +(((cpu.user + cpu.system) * 1e3) / requests).toFixed(1),
    reqPerPass: +(requests / (passes - passes0)).toFixed(2),
  };
}

const VARIANTS: readonly (RingVariant & { name: string })[] = [
  { name: 'split', packed: false, inflight: false },
  { name: 'split+inflight', packed: false, inflight: true },
  { name: 'packed', packed: true, inflight: false },
  { name: 'packed+inflight', packed: true, inflight: true },
];

function main(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      requests: { type: 'string', default: '1000000' },
      qd: { type: 'string', default: '32' },
      'per-iter': { type: 'string', default: '8' },
      rounds: { type: 'string', default: '3' },
      indirect: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  const indirect = values.indirect === true;
  const requests = Number(values.requests);
  const qd = Number(values.qd);
  const perIter = Number(values['per-iter']);
  const rounds = Number(values.rounds);
  if (!Number.isSafeInteger(requests) || requests < 1) throw new Error('--requests must be a positive integer');
  if (!Number.isSafeInteger(qd) || qd < 1 || qd > 42) throw new Error('--qd must be 1..42 (3 descriptors each in a queue of 128)');
  if (!Number.isSafeInteger(perIter) || perIter < 1) throw new Error('--per-iter must be a positive integer');
  if (!Number.isSafeInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');
  const runs = new Map<string, RingMicroResult[]>(VARIANTS.map((v) => [v.name, []]));
  for (let r = 0; r < rounds; r++) {
    for (const v of VARIANTS) runs.get(v.name)?.push(runRingMicro({ ...v, indirect }, requests, qd, perIter));
  }
  const med = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  };
  const out = VARIANTS.map((v) => {
    const rs = runs.get(v.name) ?? [];
    const dev = rs.map((x) => x.devNsPerReq);
    const cpu = rs.map((x) => x.cpuNsPerReq);
    return { variant: v.name, devNsMin: Math.min(...dev), devNsMedian: med(dev), cpuNsMin: Math.min(...cpu), cpuNsMedian: med(cpu), reqPerPass: rs[0].reqPerPass };
  });
  if (values.json) {
    console.log(JSON.stringify(out));
    return 0;
  }
  console.log('| variant | device ns/req min | median | CPU ns/req min | median | req/pass |');
  console.log('|---|---|---|---|---|---|');
  for (const o of out) console.log(`| ${o.variant} | ${o.devNsMin} | ${o.devNsMedian} | ${o.cpuNsMin} | ${o.cpuNsMedian} | ${o.reqPerPass} |`);
  return 0;
}

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exitCode = 2;
  }
}
