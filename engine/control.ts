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
  /**
   * Requests posted to `port` so far (Int32 word 0): the reactor adds 1 with
   * Atomics.add after each postMessage, and the loop calls
   * receiveMessageOnPort only when the count moved. Absent (tests that post
   * to the port directly): the loop looks at the port every CONTROL_EVERY
   * iterations.
   */
  mail?: SharedArrayBuffer;
  /**
   * Poll mode: 'poll' never sleeps; 'adaptive' busy-polls and sleeps in
   * poll(2) on its kick, bdev completion and wake eventfds after idleSleepUs
   * of idleness, or at once while its only work is bdev I/O in flight that
   * will signal a completion eventfd (see wantsSleep in poller.ts); 'interrupt' (SPDK's --interrupt-mode) sleeps as soon as an
   * iteration finds nothing to do.
   */
  pollMode: PollMode;
  /** How long a worker in adaptive mode stays idle before it sleeps (interrupt mode: not used, 0). */
  idleSleepUs: number;
  /** Log settings the reactor keeps current (Int32, see EngineLogWord); absent: print level info, no debug. */
  logControl?: SharedArrayBuffer;
}

export type PollMode = 'poll' | 'adaptive' | 'interrupt';

/** Int32 slots of WorkerInit.logControl, read with Atomics.load at each log call. */
export const enum EngineLogWord {
  /** Most verbose level printed: 0 error, 1 warn, 2 notice, 3 info, 4 debug (SPDK's print level). */
  PrintLevel = 0,
  /** 1 when the "engine" log flag is set (debug lines wanted). */
  Debug = 1,
  /** 1: JSON lines (--log-format json), 0: text. */
  Json = 2,
  /** 1: post each line to the reactor as an EngineLogEvent (an embedder's log sink is set), 0: write it to fd 2. */
  Forward = 3,
  Count = 4,
}

/** Float64 slots of WorkerInit.stats. Ticks are nanoseconds. */
export const enum WorkerStat {
  BusyNs = 0,
  IdleNs = 1,
  Devices = 2,
  Iterations = 3,
  /** The worker thread's kernel thread id (gettid), written once at start. */
  Tid = 4,
  /**
   * 1 while the worker is in interrupt mode (framework_get_reactors'
   * in_interrupt): always in 'interrupt' mode; in 'adaptive' mode from its
   * first sleep after an idle stretch until an iteration finds work again.
   */
  InInterrupt = 5,
  /** Times the worker went to sleep in poll(2). */
  Sleeps = 6,
  /** Loop iterations that did work (thread_get_pollers' busy_count), updated with Iterations. */
  BusyIterations = 7,
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

/**
 * Where a ring resumes (and where a stopped ring ended). For a split ring
 * only availIdx counts (a free-running u16: the next avail ring entry to
 * take; usedIdx is read from the ring itself). A packed ring (virtio 1.2
 * §2.8) also needs the wrap counters: availIdx/availWrap are the next
 * descriptor to take and the driver's wrap counter expected there,
 * usedIdx/usedWrap the next descriptor to write back and the device's wrap
 * counter (vhost-user's GET_VRING_BASE for packed rings: bits 0-14 avail
 * index, bit 15 avail wrap, bits 16-30 used index, bit 31 used wrap).
 */
export interface RingPos {
  availIdx: number;
  availWrap: boolean;
  usedIdx: number;
  usedWrap: boolean;
}

/** One virtqueue ready to run. Ring addresses are front-end virtual addresses. */
export interface QueueDesc {
  index: number;
  size: number;
  /** Descriptor table / ring. */
  descAddr: number;
  /** Split: available ring. Packed: driver event suppression area. */
  availAddr: number;
  /** Split: used ring. Packed: device event suppression area. */
  usedAddr: number;
  /** Where to resume (SET_VRING_BASE, or where the queue last stopped). */
  pos: RingPos;
  /** Kick eventfd, or -1 (then the worker can only poll). */
  kickFd: number;
  /** Call eventfd, or -1 (then the guest is not interrupted). */
  callFd: number;
  /**
   * Dirty logging of the ring (vhost-user SET_VRING_ADDR with VHOST_VRING_F_LOG):
   * the guest-physical address of the used ring (packed: the device event
   * area) as log_guest_addr gave it. Absent: the ring's writes are not logged.
   */
  logUsedAddr?: number;
}

/**
 * The dirty log of a live migration (vhost-user LOG_SHMFD, SET_LOG_BASE):
 * one bit per 4 KiB page of guest-physical memory, bit (gpa/4096) mod 8 of
 * byte gpa/4096/8, set with an atomic OR for every page the device writes
 * while VHOST_F_LOG_ALL is negotiated. Owned by the reactor like every fd.
 */
export interface LogDesc {
  fd: number;
  mmapOffset: number;
  sizeBytes: number;
}

/**
 * A shared in-flight region (vhost-user INFLIGHT_SHMFD, QEMU's layout): the
 * device records every request between pop and used-publish there, so that
 * a restarted back-end can resubmit them. Owned by the reactor like every
 * other fd.
 */
export interface InflightDesc {
  fd: number;
  mmapOffset: number;
  sizeBytes: number;
  /** Descriptors per queue the region was laid out for. */
  queueSize: number;
  /** Queues the region was laid out for (SET_INFLIGHT_FD's num_queues); absent: 1. */
  numQueues?: number;
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

/**
 * A bdev as a worker needs it to open its per-worker handle. The worker's
 * bdev layer keeps one handle and one channel per bdev name however many of
 * its devices use it (refcounted), and routes bdev events (resize, removal)
 * by name to every device that holds the bdev.
 */
export interface BdevDesc {
  name: string;
  /** The bdev module that serves it ('malloc', 'null', 'uring', 'aio', ...): the key of the engine's module table. */
  module: string;
  blockSize: number;
  numBlocks: number;
  /**
   * What the module's engine half needs to open it, written by the module's
   * reactor half (structured-clonable): malloc's SharedArrayBuffer, a file
   * bdev's FileBdevDesc, nothing for null.
   */
  params: unknown;
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

/** Float64 slots of DeviceDesc.coalescing (vhost_controller_set_coalescing). */
export const enum CoalescingSlot {
  /** Base interrupt delay; 0 = coalescing off (every batch signals at once). */
  DelayBaseUs = 0,
  /** Per-queue completions per second above which interrupts are delayed. */
  IopsThreshold = 1,
  Count = 2,
}

/** What a virtio-blk device needs beyond the generic description. */
export interface BlkModelDesc {
  kind: 'blk';
  readonly: boolean;
}

/** One target of a virtio-scsi device: LUN 0 over one bdev. */
export interface ScsiTargetDesc {
  /** Target number, 0-7 (the virtio-scsi LUN field's second byte). */
  target: number;
  /** Index of its bdev in DeviceDesc.bdevs. */
  bdev: number;
  /** What identifies the LU across restarts (the bdev's UUID): VPD 80/83. */
  identifier: string;
}

/** What a virtio-scsi device needs beyond the generic description. */
export interface ScsiModelDesc {
  kind: 'scsi';
  /** The targets present when the device starts. */
  targets: ScsiTargetDesc[];
}

/**
 * What an NVMe controller served over vfio-user needs beyond the generic
 * description (DeviceDesc.bdevs are its namespaces, `nsids` in the same
 * order; DeviceDesc.regions are the client's DMA windows, userAddr equal to
 * guestPhysAddr, possibly none yet; DeviceDesc.queues is empty: the guest
 * creates its queues through the admin queue).
 */
export interface NvmeModelDesc {
  kind: 'nvme';
  /** BAR0's shared memory file (engine/nvme/spec.ts Bar0.Size bytes), owned by the reactor: the worker maps it to poll CC and the doorbells and to publish CSTS. */
  barFd: number;
  /** Up to 20 ASCII characters. */
  serial: string;
  /** Up to 40 ASCII characters. */
  modelNumber: string;
  firmware: string;
  subnqn: string;
  /** I/O queue pairs offered. */
  maxIoQueues: number;
  /** MSI-X vectors of the PCI function. */
  vectors: number;
  /** Highest namespace id (Identify NN). */
  maxNamespaces: number;
  /** Namespace id of each DeviceDesc.bdevs entry. */
  nsids: number[];
  /** 16-byte NGUID / UUID of each namespace (same order). */
  nguids: Uint8Array[];
  uuids: Uint8Array[];
  /** Interrupt eventfds at start: one per MSI-X vector (-1: none) and INTx (-1: none). */
  msixFds: number[];
  intxFd: number;
}

/** The device model's own part of a DeviceDesc; adding a device type adds a member. */
export type ModelDesc = BlkModelDesc | ScsiModelDesc | NvmeModelDesc;

/**
 * A change only one device model understands, applied to a running device in
 * order with its other ops (control op `modelOp`: the poller calls the
 * device's beginModelOp, waits for modelOpReady, then finishModelOp and
 * replies; a device without model ops refuses it). The device may make it
 * wait for its in-flight I/O.
 */
export type ModelOp =
  /** virtio-scsi: open `bdev` as LUN 0 of target `target` and tell the guest (TRANSPORT_RESET / RESCAN). */
  | { kind: 'scsiAddTarget'; target: number; bdev: BdevDesc; identifier: string }
  /** virtio-scsi: take target `target` out: new commands fail, outstanding ones complete, the bdev is closed, the guest told (REMOVED). */
  | { kind: 'scsiRemoveTarget'; target: number }
  /** NVMe: interrupts go to these eventfds from the reply on (the old ones are unused then). */
  | { kind: 'nvmeIrqs'; msixFds: number[]; intxFd: number }
  /** NVMe: a namespace appears (hot add); the guest gets a namespace-attribute-changed event. */
  | { kind: 'nvmeNsAdd'; nsid: number; bdev: BdevDesc; nguid: Uint8Array; uuid: Uint8Array }
  /** NVMe: a namespace goes away once its I/O completed (hot remove); the guest gets the event. */
  | { kind: 'nvmeNsRemove'; nsid: number }
  /** NVMe: a device reset (vfio-user DEVICE_RESET): queues deleted once I/O completed, registers back to reset values. */
  | { kind: 'nvmeReset' };

/**
 * A device to run on a worker: generic parts (memory, queues, statistics,
 * coalescing, bdevs) plus its model's own. The worker makes it with the
 * device factory registered for model.kind.
 */
export interface DeviceDesc {
  /** Unique per started device instance in this process. */
  id: number;
  /** Controller name, for logs. */
  name: string;
  /** Negotiated virtio feature bits. */
  features: bigint;
  model: ModelDesc;
  /** Every bdev the device uses (blk: one; a SCSI target: one per LUN; NVMe: one per namespace). */
  bdevs: BdevDesc[];
  regions: RegionDesc[];
  /** The queues that are ready now; more may follow with queueStart. May be empty. */
  queues: QueueDesc[];
  /** Per-device counters (Float64): see DeviceStat. */
  stats: SharedArrayBuffer;
  /** Interrupt coalescing settings (Float64, see CoalescingSlot), written by the reactor, read by the worker every 10 ms; absent = off. */
  coalescing?: SharedArrayBuffer;
  /** The shared in-flight region, when the front-end negotiated INFLIGHT_SHMFD. */
  inflight?: InflightDesc;
  /** The dirty log, when VHOST_F_LOG_ALL is negotiated and SET_LOG_BASE gave one (live migration). */
  log?: LogDesc;
}

/** Float64 slots of DeviceDesc.stats. */
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
  /** Map the memory, open the bdevs, start the given queues (possibly none yet). */
  | { op: 'start'; id: number; device: DeviceDesc }
  /** Stop every queue: finish the I/O in flight, push its used entries, signal, unmap the guest memory, release the bdevs. */
  | { op: 'stop'; id: number; deviceId: number }
  /** Start one more queue of a running device (a queue that became ready). */
  | { op: 'queueStart'; id: number; deviceId: number; queue: QueueDesc }
  /** Stop one queue (GET_VRING_BASE): its in-flight I/O completes first; the reply carries its position. */
  | { op: 'queueStop'; id: number; deviceId: number; index: number }
  /** Use this call eventfd for a running queue from now on (-1: none); the old one is unused once the reply is sent. */
  | { op: 'setCallFd'; id: number; deviceId: number; index: number; callFd: number }
  /**
   * Replace the guest memory table of a running device: it stops taking
   * requests, lets the ones in flight complete, unmaps the old regions, maps
   * the new ones, rebuilds its rings' views and resumes where it was.
   */
  | { op: 'memUpdate'; id: number; deviceId: number; regions: RegionDesc[] }
  /** A device-model request (ModelOp); replies once the device has applied it. */
  | { op: 'modelOp'; id: number; deviceId: number; modelOp: ModelOp }
  /** A bdev changed size: every device on this worker that uses it checks requests against numBlocks from the reply on. */
  | { op: 'bdevResize'; id: number; name: string; numBlocks: number }
  /** Leave the loop and let the piscina task end (devices must already be stopped). */
  | { op: 'exit'; id: number };

/** Where a stopped queue ended. */
export interface QueueStopResult {
  index: number;
  pos: RingPos;
}

export interface StopResult {
  /** Per stopped queue: where it ended (GET_VRING_BASE's answer). */
  queues: QueueStopResult[];
}

/** A worker's log line, posted on its port while EngineLogWord.Forward is 1 (already filtered by level and flag). */
export interface EngineLogEvent {
  event: 'log';
  level: 'error' | 'warn' | 'notice' | 'info' | 'debug';
  component: string;
  message: string;
  /** Structured-cloneable: errors as their message. */
  fields: Record<string, unknown>;
}

/**
 * What a worker tells the reactor unasked (no request id): a device failed
 * in its poll — e.g. its call fd can no longer be written — and takes no more
 * requests; the reactor closes that device's connection with `reason`.
 */
export interface DeviceFailedEvent {
  event: 'deviceFailed';
  deviceId: number;
  reason: string;
}

export type ControlReply =
  | { id: number; ok: true; result?: StopResult | QueueStopResult }
  | { id: number; ok: false; error: string; code?: string };
