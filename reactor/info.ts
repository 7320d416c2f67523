/**
 * What the control plane reports: the result shapes of the RPC methods that
 * the subsystem services (bdev, vhost, framework) build. Thread: main (reactor).
 *
 * Result shapes follow SPDK's JSON-RPC (doc/jsonrpc.md) so that rpc.py and
 * scripts written for SPDK read them unchanged.
 */

import type { IoStatCounters } from './bdev/iostat';

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
  } & Record<string, unknown>;
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

/** One poller (thread_get_pollers, SPDK shape). */
export interface PollerInfo {
  name: string;
  id: number;
  state: 'running' | 'waiting' | 'paused';
  run_count: number;
  busy_count: number;
  period_ticks?: number;
}

/** thread_get_pollers' result (SPDK shape). */
export interface PollersInfo {
  tick_rate: number;
  threads: { name: string; id: number; active_pollers: PollerInfo[]; timed_pollers: PollerInfo[]; paused_pollers: PollerInfo[] }[];
}

/** thread_get_io_channels' result (SPDK shape). */
export interface IoChannelsInfo {
  tick_rate: number;
  threads: { name: string; io_channels: { name: string; ref: number }[] }[];
}
