/**
 * The target's state as the control plane sees it: what the JSON-RPC methods
 * call. Implemented by app.ts (bdev and controller registries, placement,
 * engine pool). Thread: main (reactor).
 *
 * Result shapes follow SPDK's JSON-RPC (doc/jsonrpc.md) so that rpc.py and
 * scripts written for SPDK read them unchanged.
 */

import type { IoStatCounters } from './bdev/iostat';

/** JSON-RPC error codes, SPDK's: JSON-RPC's own and negative errno values. */
export const RpcCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** SPDK_JSONRPC_ERROR_INVALID_STATE: the method is not callable in the current RPC state. */
  InvalidState: -1,
  /** -ENOENT */
  NoEntry: -2,
  /** -EBUSY */
  Busy: -16,
  /** -EEXIST */
  Exists: -17,
  /** -ENODEV */
  NoDevice: -19,
  /** -EINVAL */
  Invalid: -22,
  /** -ENOMEM */
  NoMemory: -12,
  /** -ENOSPC */
  NoSpace: -28,
} as const;

/** An error a method reports to its JSON-RPC caller as {code, message}. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

/** One entry of bdev_get_bdevs' result (SPDK shape, the fields vhostd can fill). */
export interface BdevInfo {
  name: string;
  aliases: string[];
  product_name: string;
  block_size: number;
  num_blocks: number;
  uuid: string;
  assigned_rate_limits: {
    rw_ios_per_sec: number;
    rw_mbytes_per_sec: number;
    r_mbytes_per_sec: number;
    w_mbytes_per_sec: number;
  };
  claimed: boolean;
  zoned: boolean;
  supported_io_types: Record<string, boolean>;
  driver_specific: Record<string, unknown>;
}

/** One entry of vhost_get_controllers' result (SPDK shape). */
export interface ControllerInfo {
  ctrlr: string;
  cpumask: string;
  delay_base_us: number;
  iops_threshold: number;
  socket: string;
  sessions: {
    vid: number;
    id: number;
    name: string;
    started: boolean;
    max_queues: number;
    inflight_task_cnt: number;
  }[];
  backend_specific: {
    block?: { readonly: boolean; bdev: string; transport: string };
  };
}

/** framework_get_reactors' result (SPDK shape). */
export interface ReactorsInfo {
  tick_rate: number;
  pid: number;
  reactors: {
    lcore: number;
    /** NUMA node of the core (sysfs); left out when the kernel does not say. */
    numa_id?: number;
    /** Kernel thread id of the engine worker polling this core; left out until it has started. */
    tid?: number;
    busy: number;
    idle: number;
    in_interrupt: boolean;
    /** The core's irq / system / user time since vhostd started, in USER_HZ ticks (/proc/stat, as SPDK). */
    irq?: number;
    sys?: number;
    usr?: number;
    lw_threads: { name: string; id: number; cpumask: string; elapsed: number }[];
  }[];
}

/** One call of a saved configuration (SPDK's JSON config format). */
export interface ConfigCallInfo {
  method: string;
  params?: Record<string, unknown>;
}

/** framework_get_subsystems' entries (SPDK shape), in initialization order. */
export interface SubsystemInfo {
  subsystem: string;
  depends_on: string[];
}

export interface Target {
  /** e.g. "vhostd v0.1.0" */
  readonly version: string;
  /** Every method the RPC server serves (for rpc_get_methods). Filled by the RPC layer. */

  /** bdev_malloc_create: returns the bdev's name (generated "MallocN" when none is given). -17 if the name exists. */
  createMallocBdev(p: { name?: string; numBlocks: number; blockSize: number; uuid?: string }): string;
  /** bdev_null_create: returns the name. */
  createNullBdev(p: { name: string; numBlocks: number; blockSize: number; uuid?: string }): string;
  /**
   * bdev_uring_create: opens `filename` (O_DIRECT when possible) and serves it
   * through io_uring; returns the name. -17 name exists, -errno when the file
   * cannot be opened, -22 for a block size the store cannot honour, -1/-38
   * when io_uring is disabled here.
   */
  createUringBdev(p: { name: string; filename: string; blockSize?: number; uuid?: string }): string;
  /** bdev_aio_create: as createUringBdev, through Linux AIO; `fallocate` enables unmap/write zeroes. */
  createAioBdev(p: { name: string; filename: string; blockSize?: number; readonly?: boolean; fallocate?: boolean; uuid?: string }): string;
  /** bdev_{malloc,null,uring,aio}_delete: -19 if there is no such bdev of that kind, -16 while a controller uses it. */
  deleteBdev(kind: 'malloc' | 'null' | 'uring' | 'aio', name: string): Promise<void>;
  /** bdev_get_bdevs: all, or the one named (-19 if absent). */
  getBdevs(name?: string): BdevInfo[];

  /** vhost_create_blk_controller: creates the socket <socketDir>/<ctrlr>. -17 if it exists, -19 no bdev, -22 bad cpumask. */
  createBlkController(p: { ctrlr: string; devName: string; cpumask?: string; readonly?: boolean }): Promise<void>;
  /** vhost_delete_controller: -19 if absent, -16 while a front-end is connected. */
  deleteController(ctrlr: string): Promise<void>;
  /** vhost_get_controllers: all, or the one named (-19 if absent). */
  getControllers(name?: string): ControllerInfo[];

  /** framework_get_reactors */
  getReactors(): ReactorsInfo;

  /**
   * framework_get_subsystems and framework_get_config: the subsystems, and
   * the calls that recreate one subsystem's current state (each bdev and
   * controller writes its own). subsystemConfig throws -32602 "Subsystem 'x'
   * not found" for an unknown name.
   */
  subsystems(): SubsystemInfo[];
  subsystemConfig(name: string): ConfigCallInfo[];

  // Statistics, QoS, coalescing, resize.

  /** bdev_get_iostat: all bdevs or the named ones (-19 if one is absent); perChannel needs exactly one name. */
  getIostat(p: { names?: string[]; perChannel: boolean }): IostatInfo | PerChannelIostatInfo;
  /** bdev_set_qos_limit: -19 no bdev; limits not given stay as they are; 0 = unlimited. */
  setQosLimit(name: string, limits: QosLimitsInfo): void;
  /** bdev_null_resize: -19 no null bdev, -22 smaller than now (SPDK refuses to shrink). */
  resizeNullBdev(name: string, newSizeMiB: number): Promise<void>;
  /** vhost_controller_set_coalescing: -19 no controller, -22 bad values. */
  setCoalescing(ctrlr: string, delayBaseUs: number, iopsThreshold: number): void;
  /** thread_get_stats */
  getThreadStats(): ThreadStatsInfo;
}

/** bdev_set_qos_limit's limits (undefined: unchanged). */
export interface QosLimitsInfo {
  rw_ios_per_sec?: number;
  rw_mbytes_per_sec?: number;
  r_mbytes_per_sec?: number;
  w_mbytes_per_sec?: number;
}

/** bdev_get_iostat's result (SPDK shape); ticks are nanoseconds (tick_rate 1e9). */
export interface IostatInfo {
  tick_rate: number;
  ticks: number;
  bdevs: ({ name: string } & IoStatCounters)[];
}

/** bdev_get_iostat with per_channel: one entry per engine worker that served the bdev. */
export interface PerChannelIostatInfo {
  tick_rate: number;
  ticks: number;
  name: string;
  channels: ({ thread_id: number } & IoStatCounters)[];
}

/** thread_get_stats' result (SPDK shape). */
export interface ThreadStatsInfo {
  tick_rate: number;
  threads: {
    name: string;
    id: number;
    cpumask: string;
    busy: number;
    idle: number;
    active_pollers_count: number;
    timed_pollers_count: number;
    paused_pollers_count: number;
  }[];
}
