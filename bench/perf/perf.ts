/**
 * vhostd-perf, the native vhost-user-blk load generator, as a TypeScript API.
 *
 * The generator is a vhost-user front-end written in C++ (bench/native/, addon
 * target `vhostd_perf` in binding.gyp): it connects to a vhost-user-blk socket
 * (vhostd's or qemu-storage-daemon's), shares a memfd with the back-end, lays
 * split virtqueues out in it and drives fio-like jobs from a dedicated native
 * thread pinned to a core. `runPerf()` only validates options and waits: the
 * I/O loop never runs on a JS thread, and the event loop is never blocked.
 *
 * Any JS thread may call it; each call owns its own native thread.
 */
import fs from 'node:fs';
import path from 'node:path';

/** fio's `rw`. */
export type RwPattern = 'randread' | 'randwrite' | 'read' | 'write' | 'randrw';

/**
 * Data verification (CRC-32C of each block):
 * - `off`: a timed job;
 * - `write-read`: write every block of the range once (random order for
 *   rand* patterns), then read every block back and check it (fio
 *   verify=crc32c);
 * - `write`: the write pass only (pattern from `verifySeed`);
 * - `read`: the read pass only, checked against the pattern `verifySeed`
 *   writes, so it checks what an earlier `write` run left.
 * With rw=randrw any mode but `off` runs a timed mixed job whose reads are
 * checked against the CRCs of the blocks it wrote during the run.
 */
export type VerifyMode = 'off' | 'write-read' | 'write' | 'read';

/** How the generator learns about completions. */
export type CompletionMode = 'poll' | 'interrupt';

export interface PerfOptions {
  /** vhost-user-blk socket to connect to. */
  socketPath: string;
  /** Access pattern; default randread. */
  rw?: RwPattern;
  /** Percent of reads for randrw; default 50. */
  rwmixread?: number;
  /** I/O size; default 4096; a multiple of 512. */
  blockSizeBytes?: number;
  /** Requests in flight per queue; default 32. */
  iodepth?: number;
  /** Virtqueues, all driven from the one generator thread; default 1. */
  queues?: number;
  /** Virtqueue size; default the smallest power of two >= 3 x iodepth (min 16). */
  queueSize?: number;
  /** Measured time; default 10 s. Ignored by verify passes, which run to completion. */
  runtimeSec?: number;
  /** Warm-up before measuring; default 0. */
  rampSec?: number;
  /** Start of the range, in bytes; default 0. */
  offsetBytes?: number;
  /** Length of the range; default from offsetBytes to the end of the device. */
  sizeBytes?: number;
  /** Default off. */
  verify?: VerifyMode;
  /** Seed of the verify data pattern; default 1. */
  verifySeed?: number;
  /** Seed of offsets and the read/write mix; default 1. */
  seed?: number;
  /** Default poll (VRING_AVAIL_F_NO_INTERRUPT set, used ring polled). */
  completion?: CompletionMode;
  /** Negotiate VIRTIO_F_EVENT_IDX when offered; default false. */
  eventIdx?: boolean;
  /** Negotiate INFLIGHT_SHMFD when offered (GET/SET_INFLIGHT_FD as QEMU does): measures the cost of in-flight tracking. */
  inflight?: boolean;
  /** Packed virtqueues (VIRTIO_F_RING_PACKED; the run fails when the back-end does not offer it); blk only; default false. */
  packed?: boolean;
  /**
   * Each request one ring descriptor pointing at a table of its three
   * (VIRTIO_F_RING_INDIRECT_DESC; the run fails when the back-end does not
   * offer it), as a Linux guest's virtio_ring builds every request of more
   * than one buffer; blk only; default false.
   */
  indirect?: boolean;
  /**
   * Split ring, blk: each request's descriptors taken from a free list (the
   * most recently freed first) and written per request, as Linux's
   * virtio_ring does; default false (each slot keeps its own descriptors,
   * written once).
   */
  descFreeList?: boolean;
  /** Front-end memory in 2 MiB hugepages (MFD_HUGETLB memfd; needs free hugepages): SPDK's vhost maps only such memory. */
  hugepages?: boolean;
  /**
   * The socket is a vhost-user-scsi controller: READ 16 / WRITE 16 to LUN 0
   * of scsiTarget on request queues 2..; capacity from READ CAPACITY 16.
   * Default false (vhost-user-blk).
   */
  scsi?: boolean;
  /** Target of the LUN in scsi mode (0-255); default 0. */
  scsiTarget?: number;
  /** Core the generator thread is pinned to; -1 for none; default 0. */
  cpu?: number;
  /** Limit for each back-end reply and for the final drain; default 10000. */
  timeoutMs?: number;
}

export interface PerfLatencyNs {
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export interface PerfVerifyReport {
  mode: Exclude<VerifyMode, 'off'>;
  seed: number;
  blocksWritten: number;
  blocksChecked: number;
  mismatches: number;
  firstMismatches: { block: number; offsetBytes: number; expectedCrc: number; actualCrc: number }[];
}

/** The generator's JSON report. Statistics cover the measured window (after ramp). */
export interface PerfReport {
  socket: string;
  device: {
    capacityBytes: number;
    blockSize: number;
    maxQueues: number;
    readOnly: boolean;
    featuresOffered: string;
    featuresAcked: string;
    protocolFeaturesOffered: string;
    protocolFeaturesAcked: string;
    eventIdx: boolean;
    /** INFLIGHT_SHMFD negotiated and the region set. */
    inflight: boolean;
    /** VIRTIO_F_RING_PACKED negotiated. */
    packed: boolean;
    /** VIRTIO_F_RING_INDIRECT_DESC negotiated (--indirect). */
    indirect: boolean;
  };
  job: {
    rw: RwPattern;
    rwmixread: number;
    blockSizeBytes: number;
    iodepth: number;
    queues: number;
    queueSize: number;
    runtimeSec: number;
    rampSec: number;
    offsetBytes: number;
    sizeBytes: number;
    completion: CompletionMode;
    cpu: number;
    seed: number;
  };
  ios: number;
  reads: number;
  writes: number;
  /** Requests completed with a virtio-blk status other than OK (whole run). */
  errors: number;
  elapsedSec: number;
  iops: number;
  bytes: number;
  bandwidthBytesPerSec: number;
  /** 10^6 bytes per second. */
  mbPerSec: number;
  mibPerSec: number;
  latencyNs: PerfLatencyNs;
  /**
   * The generator thread's own CPU time (getrusage RUSAGE_THREAD) over the
   * window, and how its loop time splits: `busyFraction` is the share of loop
   * time spent in iterations that completed at least one request (the rest
   * was polling an empty used ring, or sleeping in interrupt mode), so a value
   * well below 1 shows the generator waited for the target; `busyNsPerIo` is
   * busy loop time per completed request. Loop gaps over 200 µs in poll mode
   * (the thread was descheduled: another process shares its core) count as
   * `stallSec`/`stalls` instead of busy or idle; `involuntaryContextSwitches`
   * is getrusage's ru_nivcsw for the thread over the window.
   */
  cpu: {
    userSec: number;
    sysSec: number;
    wallSec: number;
    utilization: number;
    busyFraction: number;
    busyNsPerIo: number;
    stallSec: number;
    stalls: number;
    involuntaryContextSwitches: number;
  };
  kicks: number;
  kicksPerIo: number;
  callWakeups: number;
  /** NVMe mode only (bench/perf/nvme.ts), else null. */
  nvme: PerfNvmeReport | null;
  verify: PerfVerifyReport | null;
}

/**
 * What an NVMe-mode run used: the namespace, how doorbells were written
 * (`mmap`: stores into the doorbell page vhostd offers as BAR0's sparse-mmap
 * area; `region-write`: one REGION_WRITE message per doorbell), how many of
 * each were written in the window (SQ tail doorbells are also `kicks`), the
 * first failed command's (SCT << 8) | SC, and what the controller offered.
 */
export interface PerfNvmeReport {
  nsid: number;
  lbaSize: number;
  doorbells: 'mmap' | 'region-write';
  sqDoorbells: number;
  cqDoorbells: number;
  firstErrorStatus: number;
  /** BAR0's region info carried a mappable doorbell area. */
  doorbellPageOffered?: boolean;
  /** I/O queue pairs the controller granted (Set Features Number of Queues). */
  queuesGranted?: number;
  /** Largest transfer in bytes (Identify MDTS; 0: no limit). */
  maxTransferBytes?: number;
  /** The controller's VS register, e.g. "1.4.0". */
  version?: string;
}

interface PerfAddon {
  run(options: Record<string, unknown>): Promise<string>;
  crc32c(data: Uint8Array): number;
}

export class PerfError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'PerfError';
  }
}

/** The directory holding binding.gyp (from dist/bench/perf/ it is three levels up). */
function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    if (fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    dir = path.dirname(dir);
  }
  throw new PerfError(`vhostd-perf: cannot find the package root (binding.gyp) above ${__dirname}`, 'ERR_PERF_ADDON');
}

/**
 * Where the addon is: $VHOSTD_PERF_ADDON when set, else a local build
 * (bench/native/build/Release/vhostd_perf.node), else the prebuild
 * node-gyp-build picks from bench/native/prebuilds/. bench/native has its own
 * binding.gyp, so node-gyp-build never confuses it with vhostd_native.
 */
export function perfAddonPath(): string {
  const override = process.env.VHOSTD_PERF_ADDON;
  if (override !== undefined && override !== '') return path.resolve(override);
  const dir = path.join(packageRoot(), 'bench', 'native');
  const local = path.join(dir, 'build', 'Release', 'vhostd_perf.node');
  if (fs.existsSync(local)) return local;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('node-gyp-build') as { resolve(dir: string): string }).resolve(dir);
  } catch {
    return local;
  }
}

let addon: PerfAddon | undefined;

/** Loads the native generator once; throws a PerfError naming the fix when it is not built. */
export function loadPerfAddon(): PerfAddon {
  if (addon !== undefined) return addon;
  const file = perfAddonPath();
  if (!fs.existsSync(file)) {
    throw new PerfError(
      `vhostd-perf: the native load generator is not built (${file} is missing); ` +
        'build it with `npx node-gyp rebuild -C bench/native`',
      'ERR_PERF_ADDON',
    );
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const loaded = require(file) as Partial<PerfAddon> | undefined;
  if (loaded === undefined || typeof loaded.run !== 'function' || typeof loaded.crc32c !== 'function') {
    throw new PerfError(`vhostd-perf: ${file} is not the vhostd_perf addon`, 'ERR_PERF_ADDON');
  }
  addon = loaded as PerfAddon;
  return addon;
}

/** CRC-32C as the generator computes it (exposed for tests). */
export function crc32c(data: Uint8Array): number {
  return loadPerfAddon().crc32c(data);
}

const RW: readonly RwPattern[] = ['randread', 'randwrite', 'read', 'write', 'randrw'];
const VERIFY: readonly VerifyMode[] = ['off', 'write-read', 'write', 'read'];

function checkInt(name: string, value: number | undefined, min: number, max: number): void {
  if (value === undefined) return;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new PerfError(`options.${name} must be an integer in [${min}, ${max}], got ${String(value)}`, 'ERR_PERF_OPTIONS');
  }
}

/** Validates options with named messages; returns what the addon receives. */
export function checkPerfOptions(o: PerfOptions): Record<string, unknown> {
  if (typeof o.socketPath !== 'string' || o.socketPath === '') {
    throw new PerfError('options.socketPath must be a non-empty string', 'ERR_PERF_OPTIONS');
  }
  if (o.rw !== undefined && !RW.includes(o.rw)) {
    throw new PerfError(`options.rw must be one of ${RW.join(', ')}`, 'ERR_PERF_OPTIONS');
  }
  if (o.verify !== undefined && !VERIFY.includes(o.verify)) {
    throw new PerfError(`options.verify must be one of ${VERIFY.join(', ')}`, 'ERR_PERF_OPTIONS');
  }
  if (o.completion !== undefined && o.completion !== 'poll' && o.completion !== 'interrupt') {
    throw new PerfError('options.completion must be poll or interrupt', 'ERR_PERF_OPTIONS');
  }
  checkInt('rwmixread', o.rwmixread, 0, 100);
  checkInt('blockSizeBytes', o.blockSizeBytes, 512, 64 << 20);
  if (o.blockSizeBytes !== undefined && o.blockSizeBytes % 512 !== 0) {
    throw new PerfError('options.blockSizeBytes must be a multiple of 512', 'ERR_PERF_OPTIONS');
  }
  checkInt('iodepth', o.iodepth, 1, 4096);
  checkInt('queues', o.queues, 1, 64);
  checkInt('queueSize', o.queueSize, 0, 32768);
  checkInt('offsetBytes', o.offsetBytes, 0, Number.MAX_SAFE_INTEGER);
  checkInt('sizeBytes', o.sizeBytes, 0, Number.MAX_SAFE_INTEGER);
  checkInt('verifySeed', o.verifySeed, 0, Number.MAX_SAFE_INTEGER);
  checkInt('seed', o.seed, 0, Number.MAX_SAFE_INTEGER);
  checkInt('cpu', o.cpu, -1, 1023);
  checkInt('timeoutMs', o.timeoutMs, 1, 3_600_000);
  for (const [name, v] of [['runtimeSec', o.runtimeSec], ['rampSec', o.rampSec]] as const) {
    if (v !== undefined && (!Number.isFinite(v) || v < 0 || v > 1e6)) {
      throw new PerfError(`options.${name} must be a number of seconds in [0, 1e6]`, 'ERR_PERF_OPTIONS');
    }
  }
  if (o.runtimeSec !== undefined && o.runtimeSec <= 0) {
    throw new PerfError('options.runtimeSec must be > 0', 'ERR_PERF_OPTIONS');
  }
  if (o.eventIdx !== undefined && typeof o.eventIdx !== 'boolean') {
    throw new PerfError('options.eventIdx must be a boolean', 'ERR_PERF_OPTIONS');
  }
  if (o.hugepages !== undefined && typeof o.hugepages !== 'boolean') {
    throw new PerfError('options.hugepages must be a boolean', 'ERR_PERF_OPTIONS');
  }
  if (o.inflight !== undefined && typeof o.inflight !== 'boolean') {
    throw new PerfError('options.inflight must be a boolean', 'ERR_PERF_OPTIONS');
  }
  if (o.packed !== undefined && typeof o.packed !== 'boolean') {
    throw new PerfError('options.packed must be a boolean', 'ERR_PERF_OPTIONS');
  }
  if (o.indirect !== undefined && typeof o.indirect !== 'boolean') {
    throw new PerfError('options.indirect must be a boolean', 'ERR_PERF_OPTIONS');
  }
  if (o.descFreeList !== undefined && typeof o.descFreeList !== 'boolean') {
    throw new PerfError('options.descFreeList must be a boolean', 'ERR_PERF_OPTIONS');
  }
  if (o.descFreeList === true && (o.packed === true || o.scsi === true)) {
    throw new PerfError('options.descFreeList: a descriptor free list is for virtio-blk jobs on split rings (not with packed or scsi)', 'ERR_PERF_OPTIONS');
  }
  if (o.scsi !== undefined && typeof o.scsi !== 'boolean') {
    throw new PerfError('options.scsi must be a boolean', 'ERR_PERF_OPTIONS');
  }
  checkInt('scsiTarget', o.scsiTarget, 0, 255);
  const native: Record<string, unknown> = { ...o };
  return native;
}

/** Runs one job on the generator's native thread and resolves with its report. */
export async function runPerf(options: PerfOptions): Promise<PerfReport> {
  const native = checkPerfOptions(options);
  const json = await loadPerfAddon().run(native);
  return JSON.parse(json) as PerfReport;
}

/** Parses fio-style sizes: 4096, 4k, 64K, 1m, 2g (binary multiples). */
export function parseSize(text: string): number {
  const m = /^(\d+)([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (m === null) throw new PerfError(`not a size: ${text}`, 'ERR_PERF_OPTIONS');
  const unit = m[2].toLowerCase();
  const shift = unit === '' ? 0 : unit === 'k' ? 10 : unit === 'm' ? 20 : unit === 'g' ? 30 : 40;
  const value = Number(m[1]) * 2 ** shift;
  if (!Number.isSafeInteger(value)) throw new PerfError(`size too large: ${text}`, 'ERR_PERF_OPTIONS');
  return value;
}

/** Parses durations: 10, 10s, 500ms, 2m (plain numbers are seconds). */
export function parseDurationSec(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (m === null) throw new PerfError(`not a duration: ${text}`, 'ERR_PERF_OPTIONS');
  const v = Number(m[1]);
  return m[2] === 'ms' ? v / 1000 : m[2] === 'm' ? v * 60 : v;
}
