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
}

/** Float64 slots of WorkerInit.stats. Ticks are nanoseconds. */
export const enum WorkerStat {
  BusyNs = 0,
  IdleNs = 1,
  Devices = 2,
  Iterations = 3,
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

/** The backing block device, as the worker needs it. */
export interface BdevDesc {
  name: string;
  /** 'malloc' keeps its blocks in `storage`; 'null' has none (as SPDK's null bdev: reads leave the buffers untouched, writes are dropped). */
  kind: 'malloc' | 'null';
  blockSize: number;
  numBlocks: number;
  /** malloc only: blockSize * numBlocks bytes, shared by every worker. */
  storage?: SharedArrayBuffer;
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
