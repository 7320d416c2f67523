/**
 * What a subsystem's RPC methods get to work with: the subsystem services
 * they control, the framework, and the list of every method served (for
 * rpc_get_methods). Each file in this directory exports
 * `(ctx: MethodContext) => RpcMethod[]` for one SPDK subsystem; a bdev
 * module's methods come from its descriptor (reactor/bdev/modules.ts).
 * Services throw VhostdError; the server maps it to SPDK's codes.
 * Thread: main (reactor).
 */

import type { BdevRegistry } from '../../bdev/registry';
import type { FrameworkControl } from '../../framework';
import type { IoChannelsInfo, PollersInfo, ReactorsInfo, ThreadStatsInfo } from '../../info';
import type { SubsystemRegistry } from '../../subsystems';
import type { VhostService } from '../../vhost/service';
import type { NvmfService } from '../../nvmf/service';

/** The framework's statistics (framework_get_reactors, thread_get_stats). */
export interface SystemService {
  reactors(): ReactorsInfo;
  threadStats(): ThreadStatsInfo;
  /** thread_get_pollers: each engine thread's poll loop, with its run and busy iteration counts. */
  pollers(): PollersInfo;
  /** thread_get_io_channels: each engine thread's bdev channels, ref = the devices there using the bdev. */
  ioChannels(): IoChannelsInfo;
}

/** The services of the running target (App implements it). */
export interface Services {
  /** e.g. "vhostd v0.1.0" */
  readonly version: string;
  /** The bdev subsystem: bdevs of every module, QoS, statistics, events. */
  readonly bdevs: BdevRegistry;
  /** The vhost subsystems: controllers. */
  readonly vhost: VhostService;
  /** The nvmf subsystem: NVMe controllers over vfio-user. */
  readonly nvmf: NvmfService;
  /** framework_get_subsystems / framework_get_config. */
  readonly subsystems: SubsystemRegistry;
  readonly system: SystemService;
  /** framework_set_scheduler / framework_get_scheduler (reactor/scheduler.ts). */
  readonly scheduler?: Pick<import('../../scheduler').Scheduler, 'set' | 'get'>;
}

export interface MethodContext {
  readonly services: Services;
  /** The application framework: init state, signals (framework_*, spdk_kill_instance). */
  readonly framework: FrameworkControl;
  /** Names of every method the server serves, in registration order; `current`: only those callable now. */
  methodNames(current?: boolean): string[];
}
