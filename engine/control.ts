/**
 * The control protocol between the reactor (main thread) and the engine
 * workers. This module holds types and constants only: it is the one engine
 * module the reactor imports ("reactor → messages only → engine").
 *
 * Ownership: every fd named in a message stays owned by the reactor. A worker
 * may use an fd (mmap a region, write a call eventfd, read a kick eventfd)
 * only between the `start` that names it and the reply to the `stop` that
 * retires it; the reactor closes it only after that reply.
 */

/** What a worker is given once, as its never-ending piscina task. */
export interface WorkerInit {
  /** The CPU the worker pins itself to. */
  core: number;
  /** Control requests in, replies out. */
  port: import('node:worker_threads').MessagePort;
  /** The reactor writes 1 here after posting a request, to wake a sleeping worker. */
  wakeFd: number;
  /** Per-worker statistics words, see WorkerStat. */
  stats: SharedArrayBuffer;
  /** Poll mode: 'poll' never sleeps; 'adaptive' sleeps on its kick fds after idleSleepUs of idleness. */
  pollMode: 'poll' | 'adaptive';
  /** How long a worker in adaptive mode stays idle before it sleeps. */
  idleSleepUs: number;
  /** Log settings the reactor keeps current (Int32, see EngineLogWord); absent: print level info, no debug. */
  logControl?: SharedArrayBuffer;
}

/** Int32 slots of WorkerInit.logControl, read with Atomics.load at each log call. */
export const enum EngineLogWord {
  /** Most verbose level printed: 0 error, 1 warn, 2 notice, 3 info, 4 debug (SPDK's print level). */
  PrintLevel = 0,
  /** 1 when the "engine" log flag is set (debug lines wanted). */
  Debug = 1,
  Count = 2,
}

/** Float64 slots of WorkerInit.stats. Ticks are nanoseconds. */
export const enum WorkerStat {
  BusyNs = 0,
  IdleNs = 1,
  Devices = 2,
  Iterations = 3,
  /** The worker thread's kernel thread id (gettid), written once at start. */
  Tid = 4,
  Count = 8,
}

/** One guest memory region as the front-end described it (all values < 2^53). */
export interface RegionDesc {
  fd: number;
  guestPhysAddr: number;
  sizeBytes: number;
  /** The front-end's virtual address of the region (vring addresses are in this space). */
  userAddr: number;
  /** Where the region starts inside fd. */
  mmapOffset: number;
}

/** One virtqueue ready to run. Ring addresses are front-end virtual addresses. */
export interface QueueDesc {
  index: number;
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** Next avail index to process (SET_VRING_BASE or the last stop). */
  lastAvailIdx: number;
  /** Kick eventfd, or -1 (then the worker can only poll). */
  kickFd: number;
  /** Call eventfd, or -1 (then the guest is not interrupted). */
  callFd: number;
}

/**
 * The backing file of a 'uring' or 'aio' bdev. The reactor opened the fds and
 * owns them; a worker uses them between the `start` and the reply to the
 * `stop` of a device on the bdev (the bdev cannot be deleted while a
 * controller uses it), and its ring lets go of them before that reply.
 */
export interface FileBdevDesc {
  filename: string;
  /** The file, O_DIRECT when `direct`; read-only when `readonly`. */
  fd: number;
  /** A second, buffered fd of the same file for requests O_DIRECT refuses (EINVAL); -1 when `direct` is false. */
  bufferedFd: number;
  /** fd was opened with O_DIRECT (false: the file system refused it, e.g. tmpfs before Linux 6.6). */
  direct: boolean;
  /** A block device (DISCARD → BLKDISCARD, WRITE ZEROES → BLKZEROOUT) rather than a regular file (fallocate). */
  blockDevice: boolean;
  readonly: boolean;
  /** DISCARD and WRITE ZEROES supported (uring: always; aio: its `fallocate` option). */
  unmap: boolean;
}

/** The backing block device, as the worker needs it. */
export interface BdevDesc {
  name: string;
  /**
   * 'malloc' keeps its blocks in `storage`; 'null' has none (as SPDK's null
   * bdev: reads leave the buffers untouched, writes are dropped); 'uring' and
   * 'aio' serve `file` through the worker's io_uring / Linux AIO ring.
   */
  kind: 'malloc' | 'null' | 'uring' | 'aio';
  blockSize: number;
  numBlocks: number;
  /** malloc only: blockSize * numBlocks bytes, shared by every worker. */
  storage?: SharedArrayBuffer;
  /** uring and aio only. */
  file?: FileBdevDesc;
  /**
   * I/O statistics of this bdev on the worker it is sent to (Float64 slots,
   * see BdevStat): one buffer per (bdev, worker), written only by that
   * worker, summed by the reactor for bdev_get_iostat.
   */
  stats?: SharedArrayBuffer;
  /**
   * QoS limits (Float64 slots, see QosSlot; 0 = unlimited), written by the
   * reactor (bdev_set_qos_limit), read by the worker at each 1 ms timeslice.
   */
  qos?: SharedArrayBuffer;
}

/** Float64 slots of BdevDesc.stats. Latencies are nanoseconds; Min* start at +Infinity. */
export const enum BdevStat {
  BytesRead = 0,
  ReadOps = 1,
  BytesWritten = 2,
  WriteOps = 3,
  BytesUnmapped = 4,
  UnmapOps = 5,
  ReadLatencyNs = 6,
  MaxReadLatencyNs = 7,
  MinReadLatencyNs = 8,
  WriteLatencyNs = 9,
  MaxWriteLatencyNs = 10,
  MinWriteLatencyNs = 11,
  UnmapLatencyNs = 12,
  MaxUnmapLatencyNs = 13,
  MinUnmapLatencyNs = 14,
  /** I/Os the bdev completed with an error. */
  FailedOps = 15,
  Count = 16,
}

/** Float64 slots of BdevDesc.qos: per-second limits, 0 = unlimited (SPDK's four rate limit types). */
export const enum QosSlot {
  RwIosPerSec = 0,
  RwBytesPerSec = 1,
  RBytesPerSec = 2,
  WBytesPerSec = 3,
  Count = 4,
}

/** Float64 slots of BlkDeviceDesc.coalescing (vhost_controller_set_coalescing). */
export const enum CoalescingSlot {
  /** Base interrupt delay; 0 = coalescing off (every batch signals at once). */
  DelayBaseUs = 0,
  /** Per-queue completions per second above which interrupts are delayed. */
  IopsThreshold = 1,
  Count = 2,
}

export interface BlkDeviceDesc {
  kind: 'blk';
  /** Unique per started device instance in this process. */
  id: number;
  /** Controller name, for logs. */
  name: string;
  /** Negotiated virtio feature bits. */
  features: bigint;
  readonly: boolean;
  bdev: BdevDesc;
  regions: RegionDesc[];
  /** Only the queues that are ready; others are left alone. */
  queues: QueueDesc[];
  /** Per-device counters (Float64): see DeviceStat. */
  stats: SharedArrayBuffer;
  /** Interrupt coalescing settings (Float64, see CoalescingSlot), written by the reactor, read by the worker every 10 ms; absent = off. */
  coalescing?: SharedArrayBuffer;
}

export type DeviceDesc = BlkDeviceDesc;

/** Float64 slots of BlkDeviceDesc.stats. */
export const enum DeviceStat {
  ReadOps = 0,
  ReadBytes = 1,
  WriteOps = 2,
  WriteBytes = 3,
  UnmapOps = 4,
  UnmapBytes = 5,
  FlushOps = 6,
  ErrorOps = 7,
  InflightTasks = 8,
  CallSignals = 9,
  Count = 16,
}

export type ControlRequest =
  | { op: 'start'; id: number; device: DeviceDesc }
  /** Stop polling, finish every I/O in flight, push its used entries, signal, unmap the guest memory. */
  | { op: 'stop'; id: number; deviceId: number }
  /**
   * The device's bdev grew or shrank to numBlocks (bdev_null_resize): requests
   * are checked against the new size from the reply on.
   */
  | { op: 'resize'; id: number; deviceId: number; numBlocks: number }
  /** Leave the loop and let the piscina task end (devices must already be stopped). */
  | { op: 'exit'; id: number };

export interface StopResult {
  /** Per stopped queue: the next avail index to process (GET_VRING_BASE's answer). */
  queues: { index: number; lastAvailIdx: number }[];
}

export type ControlReply =
  | { id: number; ok: true; result?: StopResult }
  | { id: number; ok: false; error: string; code?: string };

/** virtio feature bits (virtio 1.2 §6, §5.2.3). */
export const enum VirtioFeature {
  RingIndirectDesc = 28,
  RingEventIdx = 29,
  VhostUserProtocolFeatures = 30,
  Version1 = 32,
  AccessPlatform = 33,
  RingPacked = 34,
}

/** virtio-blk feature bits (virtio 1.2 §5.2.3). */
export const enum BlkFeature {
  SizeMax = 1,
  SegMax = 2,
  Geometry = 4,
  Ro = 5,
  BlkSize = 6,
  Flush = 9,
  Topology = 10,
  ConfigWce = 11,
  Mq = 12,
  Discard = 13,
  WriteZeroes = 14,
}
