/**
 * The vhostd application: owns the engine pool, placement and the subsystem
 * services — the bdev registry (bdev), the controllers (vhost_blk), the
 * subsystem registry — that the RPC methods reach, and the framework's
 * statistics (framework_get_reactors, thread_get_stats). Lifecycle:
 * start() → serve → stop(). Thread: main (reactor).
 */
import * as fs from 'node:fs';
import { BDEV_MODULES } from './bdev/modules';
import { BdevRegistry } from './bdev/registry';
import type { PollMode } from '../engine/control';
import { EnginePool } from './engine-pool';
import { Scheduler } from './scheduler';
import type { IoChannelsInfo, PollersInfo, ReactorsInfo, ThreadStatsInfo } from './info';
import { logger } from './log';
import { formatCpumask, Placement } from './placement';
import { numaNodeOf, readCpuTimes, type CpuTimes } from './cpu-stat';
import type { Services, SystemService } from './rpc/methods/context';
import { subsystemRegistry, type SubsystemRegistry } from './subsystems';
import { VERSION } from './version';
import { VhostService } from './vhost/service';
import type { ControllerEvent } from './vhost/controller';
import { NvmfService } from './nvmf/service';

const log = logger('app');

/** Ticks of every statistic vhostd reports are nanoseconds. */
const TICK_RATE = 1_000_000_000;

export interface AppOptions {
  cores: number[];
  socketDir: string;
  rpcSocket: string;
  pollMode: PollMode;
  idleSleepUs: number;
  /** File mode of the vhost-user sockets. */
  socketMode: number;
  /** Group of the controller (vhost-user, vfio-user) sockets: --socket-group. */
  socketGid?: number;
  /** Front-end connects/disconnects and device failures of the vhost controllers (the embedding API's events). */
  onControllerEvent?: (event: ControllerEvent) => void;
}

export class App implements Services, SystemService {
  readonly version = `vhostd v${VERSION}`;
  readonly placement: Placement;
  readonly engine: EnginePool;
  readonly bdevs: BdevRegistry;
  readonly vhost: VhostService;
  readonly nvmf: NvmfService;
  readonly subsystems: SubsystemRegistry;
  readonly system: SystemService = this;
  readonly scheduler: Scheduler;
  private readonly startedAtNs = process.hrtime.bigint();
  /** Per-CPU times when the app started: framework_get_reactors reports the difference, as SPDK. */
  private readonly initialCpuTimes: Map<number, CpuTimes> = readCpuTimes();

  constructor(readonly options: AppOptions) {
    this.placement = new Placement(options.cores);
    this.engine = new EnginePool({ cores: options.cores, pollMode: options.pollMode, idleSleepUs: options.idleSleepUs });
    this.bdevs = new BdevRegistry(BDEV_MODULES, { engine: this.engine, threadIdOf: (core) => this.engineThreadId(core) });
    this.vhost = new VhostService({
      socketDir: options.socketDir,
      socketMode: options.socketMode,
      socketGid: options.socketGid,
      cores: options.cores,
      bdevs: this.bdevs,
      engine: this.engine,
      placement: this.placement,
      onControllerEvent: options.onControllerEvent,
    });
    this.scheduler = new Scheduler({
      cores: options.cores,
      ticks: (core) => this.engine.worker(core).ticks(),
      devices: () => this.vhost.list(),
    });
    this.nvmf = new NvmfService({
      socketDir: options.socketDir,
      socketMode: options.socketMode,
      socketGid: options.socketGid,
      cores: options.cores,
      bdevs: this.bdevs,
      engine: this.engine,
      placement: this.placement,
    });
    this.subsystems = subsystemRegistry({
      bdev: () => this.bdevs.writeConfig(),
      vhost_blk: () => this.vhost.writeConfig('vhost_blk'),
      // SPDK's scsi subsystem keeps no state of its own (its devices are the vhost_scsi controllers' targets).
      scsi: () => [],
      vhost_scsi: () => this.vhost.writeConfig('vhost_scsi'),
      nvmf: () => this.nvmf.writeConfig(),
    });
  }

  start(): void {
    fs.mkdirSync(this.options.socketDir, { recursive: true });
    this.engine.start();
    log.info('engine started', { cpumask: formatCpumask(this.options.cores), pollMode: this.options.pollMode });
  }

  /** Stop serving: close every controller (its device drains), then the workers, then the bdevs' files. */
  async stop(): Promise<void> {
    this.scheduler.close();
    await this.vhost.closeAll();
    await this.nvmf.closeAll();
    await this.engine.close();
    this.bdevs.closeAll();
    await this.bdevs.settle();
  }

  /** The thread id thread_get_stats and per-channel iostat give the engine worker of `core` (1 is the app thread). */
  private engineThreadId(core: number): number {
    return this.options.cores.indexOf(core) + 2;
  }

  threadStats(): ThreadStatsInfo {
    // The app thread is this event loop: its active and idle time as Node measures them.
    const elu = performance.eventLoopUtilization();
    const app = {
      name: 'app_thread',
      id: 1,
      cpumask: formatCpumask(this.options.cores),
      busy: Math.round(elu.active * 1e6),
      idle: Math.round(elu.idle * 1e6),
      active_pollers_count: 0,
      timed_pollers_count: 0,
      paused_pollers_count: 0,
    };
    const engines = this.options.cores.map((core) => {
      const w = this.engine.worker(core);
      const { busyNs, idleNs } = w.ticks();
      return {
        name: `engine_${core}`,
        id: this.engineThreadId(core),
        cpumask: formatCpumask([core]),
        busy: Math.round(busyNs),
        idle: Math.round(idleNs),
        // Each device on the worker is one poller of its loop.
        active_pollers_count: w.deviceCount(),
        timed_pollers_count: 0,
        paused_pollers_count: 0,
      };
    });
    return { tick_rate: TICK_RATE, threads: [app, ...engines] };
  }

  /**
   * thread_get_pollers. The app thread (this event loop) has no pollers:
   * Node's loop wakes on events. Each engine thread has one active poller,
   * its poll loop (engine/poller.ts), which polls every device placed there
   * each iteration: run_count counts iterations, busy_count those that did
   * work.
   */
  pollers(): PollersInfo {
    const app = { name: 'app_thread', id: 1, active_pollers: [], timed_pollers: [], paused_pollers: [] };
    const engines = this.options.cores.map((core) => {
      const { run, busy } = this.engine.worker(core).iterations();
      const devices = this.vhost.list().filter((c) => c.core === core).map((c) => c.name);
      return {
        name: `engine_${core}`,
        id: this.engineThreadId(core),
        active_pollers: [{ name: devices.length > 0 ? `engine_poll(${devices.join(',')})` : 'engine_poll', id: 1, state: 'running' as const, run_count: run, busy_count: busy }],
        timed_pollers: [],
        paused_pollers: [],
      };
    });
    return { tick_rate: TICK_RATE, threads: [app, ...engines] };
  }

  /** thread_get_io_channels: an engine thread holds one channel per bdev its devices use; ref counts those devices. */
  ioChannels(): IoChannelsInfo {
    const engines = this.options.cores.map((core) => {
      const refs = new Map<string, number>();
      for (const c of this.vhost.list()) {
        if (c.core !== core) continue;
        for (const b of c.model.bdevs) refs.set(b.name, (refs.get(b.name) ?? 0) + 1);
      }
      return { name: `engine_${core}`, io_channels: [...refs].map(([name, ref]) => ({ name, ref })) };
    });
    return { tick_rate: TICK_RATE, threads: [{ name: 'app_thread', io_channels: [] }, ...engines] };
  }

  // --- framework ----------------------------------------------------------

  reactors(): ReactorsInfo {
    const cpuTimes = readCpuTimes();
    const elapsedNs = Number(process.hrtime.bigint() - this.startedAtNs);
    return {
      tick_rate: 1_000_000_000,
      pid: process.pid,
      reactors: this.options.cores.map((core) => {
        const worker = this.engine.worker(core);
        const { busyNs, idleNs } = worker.ticks();
        const placed = [...this.vhost.list().filter((c) => c.runningCores().includes(core)), ...this.nvmf.list().filter((c) => c.core === core)];
        const tid = worker.tid();
        const now = cpuTimes.get(core);
        const then = this.initialCpuTimes.get(core);
        const delta = (k: keyof CpuTimes): number | undefined => (now && then ? Math.max(0, now[k] - then[k]) : undefined);
        return {
          lcore: core,
          numa_id: numaNodeOf(core),
          tid: tid > 0 ? tid : undefined,
          busy: Math.round(busyNs),
          idle: Math.round(idleNs),
          in_interrupt: worker.interruptState().inInterrupt,
          irq: delta('irq'),
          sys: delta('sys'),
          usr: delta('usr'),
          lw_threads: placed.map((e, i) => ({
            name: `vhost.${e.name}`,
            id: i + 1,
            cpumask: formatCpumask([core]),
            elapsed: elapsedNs,
          })),
        };
      }),
    };
  }
}
