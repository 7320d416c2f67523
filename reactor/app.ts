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
import { EnginePool } from './engine-pool';
import type { ReactorsInfo, ThreadStatsInfo } from './info';
import { logger } from './log';
import { formatCpumask, Placement } from './placement';
import { numaNodeOf, readCpuTimes, type CpuTimes } from './cpu-stat';
import type { Services, SystemService } from './rpc/methods/context';
import { subsystemRegistry, type SubsystemRegistry } from './subsystems';
import { VERSION } from './version';
import { VhostService } from './vhost/service';
import { NvmfService } from './nvmf/service';

const log = logger('app');

/** Ticks of every statistic vhostd reports are nanoseconds. */
const TICK_RATE = 1_000_000_000;

export interface AppOptions {
  cores: number[];
  socketDir: string;
  rpcSocket: string;
  pollMode: 'poll' | 'adaptive';
  idleSleepUs: number;
  /** File mode of the vhost-user sockets. */
  socketMode: number;
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
      cores: options.cores,
      bdevs: this.bdevs,
      engine: this.engine,
      placement: this.placement,
    });
    this.nvmf = new NvmfService({
      socketDir: options.socketDir,
      socketMode: options.socketMode,
      cores: options.cores,
      bdevs: this.bdevs,
      engine: this.engine,
      placement: this.placement,
    });
    this.subsystems = subsystemRegistry({
      bdev: () => this.bdevs.writeConfig(),
      vhost_blk: () => this.vhost.writeConfig('vhost_blk'),
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
    await this.vhost.closeAll();
    await this.nvmf.closeAll();
    await this.engine.close();
    this.bdevs.closeAll();
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
        const placed = [...this.vhost.list(), ...this.nvmf.list()].filter((c) => c.core === core);
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
          in_interrupt: false,
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
