/**
 * The vhostd application: owns the engine pool, the bdev and controller
 * registries, the vhost-user listeners and the RPC server, and implements the
 * Target the RPC methods call. Lifecycle: start() → serve → stop().
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkUringAvailable, openBackingFile } from './bdev/file';
import { BdevRegistry, type BdevKind } from './bdev/registry';
import { EnginePool } from './engine-pool';
import { logger } from './log';
import { formatCpumask, parseCpumask, Placement } from './placement';
import { numaNodeOf, readCpuTimes, type CpuTimes } from './cpu-stat';
import {
  RpcCode,
  RpcError,
  type BdevInfo,
  type ConfigCallInfo,
  type ControllerInfo,
  type IostatInfo,
  type PerChannelIostatInfo,
  type QosLimitsInfo,
  type ReactorsInfo,
  type SubsystemInfo,
  type Target,
  type ThreadStatsInfo,
} from './target';
import { VERSION } from './version';
import { BlkController } from './vhost/blk-controller';
import { VhostUserListener } from './vhost-user/listener';

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

interface ControllerEntry {
  controller: BlkController;
  listener: VhostUserListener;
}

const CTRLR_NAME_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

export class App implements Target {
  readonly version = `vhostd v${VERSION}`;
  readonly bdevs = new BdevRegistry();
  readonly placement: Placement;
  readonly engine: EnginePool;
  private readonly controllers = new Map<string, ControllerEntry>();
  private readonly startedAtNs = process.hrtime.bigint();
  /** Per-CPU times when the app started: framework_get_reactors reports the difference, as SPDK. */
  private readonly initialCpuTimes: Map<number, CpuTimes> = readCpuTimes();

  constructor(readonly options: AppOptions) {
    this.placement = new Placement(options.cores);
    this.engine = new EnginePool({ cores: options.cores, pollMode: options.pollMode, idleSleepUs: options.idleSleepUs });
  }

  start(): void {
    fs.mkdirSync(this.options.socketDir, { recursive: true });
    this.engine.start();
    log.info('engine started', { cpumask: formatCpumask(this.options.cores), pollMode: this.options.pollMode });
  }

  /** Stop serving: close every controller (its device drains), then the workers. */
  async stop(): Promise<void> {
    for (const name of [...this.controllers.keys()]) {
      const entry = this.controllers.get(name);
      if (!entry) continue;
      this.controllers.delete(name);
      try {
        await entry.listener.close();
      } catch (err) {
        log.error('closing controller failed', { ctrlr: name, error: (err as Error).message });
      }
      entry.controller.bdev.claimedBy = null;
    }
    await this.engine.close();
    this.bdevs.closeAll();
  }

  // --- bdev ---------------------------------------------------------------

  createMallocBdev(p: { name?: string; numBlocks: number; blockSize: number; uuid?: string }): string {
    const name = p.name ?? this.bdevs.nextMallocName();
    return this.bdevs.create('malloc', { ...p, name }).name;
  }

  createNullBdev(p: { name: string; numBlocks: number; blockSize: number; uuid?: string }): string {
    return this.bdevs.create('null', p).name;
  }

  createUringBdev(p: { name: string; filename: string; blockSize?: number; uuid?: string }): string {
    this.checkNewBdevName(p.name);
    checkUringAvailable();
    const f = openBackingFile(p.name, p.filename, { blockSize: p.blockSize, readonly: false });
    return this.bdevs.create('uring', {
      name: p.name,
      numBlocks: f.numBlocks,
      blockSize: f.blockSize,
      uuid: p.uuid,
      file: { ...f, unmap: true, fallocate: false, requestedBlockSize: p.blockSize ?? 0 },
    }).name;
  }

  createAioBdev(p: { name: string; filename: string; blockSize?: number; readonly?: boolean; fallocate?: boolean; uuid?: string }): string {
    this.checkNewBdevName(p.name);
    const readonly = p.readonly ?? false;
    const fallocate = p.fallocate ?? false;
    const f = openBackingFile(p.name, p.filename, { blockSize: p.blockSize, readonly });
    return this.bdevs.create('aio', {
      name: p.name,
      numBlocks: f.numBlocks,
      blockSize: f.blockSize,
      uuid: p.uuid,
      file: { ...f, unmap: fallocate, fallocate, requestedBlockSize: p.blockSize ?? 0 },
    }).name;
  }

  /** Refuse a taken or empty name before opening any file. */
  private checkNewBdevName(name: string): void {
    if (name === '') throw new RpcError(RpcCode.Invalid, 'bdev name must not be empty');
    if (this.bdevs.get(name)) throw new RpcError(RpcCode.Exists, `bdev ${name} already exists`);
  }

  async deleteBdev(kind: BdevKind, name: string): Promise<void> {
    this.bdevs.delete(kind, name);
  }

  getBdevs(name?: string): BdevInfo[] {
    if (name !== undefined) return [BdevRegistry.info(this.bdevs.require(name))];
    return this.bdevs.list().map((b) => BdevRegistry.info(b));
  }

  // --- vhost --------------------------------------------------------------

  async createBlkController(p: { ctrlr: string; devName: string; cpumask?: string; readonly?: boolean }): Promise<void> {
    if (!CTRLR_NAME_RE.test(p.ctrlr)) {
      throw new RpcError(RpcCode.Invalid, `controller name "${p.ctrlr}" must be 1-64 characters of A-Z a-z 0-9 _ . : -`);
    }
    if (this.controllers.has(p.ctrlr)) throw new RpcError(RpcCode.Exists, `controller ${p.ctrlr} already exists`);
    const bdev = this.bdevs.require(p.devName);
    if (bdev.claimedBy !== null) {
      throw new RpcError(RpcCode.Busy, `bdev ${bdev.name} is already used by controller ${bdev.claimedBy}`);
    }
    const cores = p.cpumask === undefined ? [...this.options.cores] : parseCpumask(p.cpumask);
    this.placement.checkInside(cores, p.cpumask ?? '');
    const socketPath = path.join(this.options.socketDir, p.ctrlr);
    const controller = new BlkController({
      name: p.ctrlr,
      socketPath,
      bdev,
      cores,
      readonly: p.readonly ?? false,
      engine: this.engine,
      placement: this.placement,
    });
    const listener = new VhostUserListener(socketPath, this.options.socketMode, controller);
    try {
      listener.listen();
    } catch (err) {
      throw new RpcError(RpcCode.Invalid, `cannot listen on ${socketPath}: ${(err as Error).message}`);
    }
    bdev.claimedBy = p.ctrlr;
    this.controllers.set(p.ctrlr, { controller, listener });
    log.info('controller created', { ctrlr: p.ctrlr, bdev: bdev.name, cpumask: formatCpumask(cores), socket: socketPath });
  }

  async deleteController(ctrlr: string): Promise<void> {
    const entry = this.controllers.get(ctrlr);
    if (!entry) throw new RpcError(RpcCode.NoDevice, `no controller named ${ctrlr}`);
    if (entry.controller.connected) {
      throw new RpcError(RpcCode.Busy, `controller ${ctrlr} has a front-end connected; detach it first`);
    }
    this.controllers.delete(ctrlr);
    await entry.listener.close();
    entry.controller.bdev.claimedBy = null;
    log.info('controller deleted', { ctrlr });
  }

  getControllers(name?: string): ControllerInfo[] {
    if (name !== undefined) {
      const entry = this.controllers.get(name);
      if (!entry) throw new RpcError(RpcCode.NoDevice, `no controller named ${name}`);
      return [entry.controller.info()];
    }
    return [...this.controllers.values()].map((e) => e.controller.info());
  }

  /** The RPC calls that recreate the current state, per subsystem (save_config). */
  configCalls(): { bdev: { method: string; params: Record<string, unknown> }[]; vhost_blk: { method: string; params: Record<string, unknown> }[] } {
    const bdevs = this.bdevs.list();
    // As SPDK writes them: every bdev, then the QoS limits (bdev_qos_config_json).
    const bdev = [
      ...bdevs.map((b) => BdevRegistry.configCall(b)),
      ...bdevs.flatMap((b) => b.qos.writeConfig(b.name) ?? []),
    ];
    const vhost_blk = [...this.controllers.values()].flatMap((e) => {
      const coalescing = e.controller.writeCoalescingConfig();
      return coalescing ? [e.controller.writeConfig(), coalescing] : [e.controller.writeConfig()];
    });
    return { bdev, vhost_blk };
  }

  /** SPDK's subsystems that vhostd has, in initialization order (framework_get_subsystems). */
  subsystems(): SubsystemInfo[] {
    return [
      { subsystem: 'bdev', depends_on: [] },
      { subsystem: 'vhost_blk', depends_on: ['bdev'] },
    ];
  }

  /** The calls that recreate one subsystem's state: each bdev and controller writes its own (framework_get_config). */
  subsystemConfig(name: string): ConfigCallInfo[] {
    const calls = this.configCalls();
    if (name === 'bdev') return calls.bdev.flat();
    if (name === 'vhost_blk') return calls.vhost_blk.flat();
    throw new RpcError(RpcCode.InvalidParams, `Subsystem '${name}' not found`);
  }

  // --- statistics, QoS, coalescing, resize --------------------------------

  /** The thread id thread_get_stats and per-channel iostat give the engine worker of `core` (1 is the app thread). */
  private engineThreadId(core: number): number {
    return this.options.cores.indexOf(core) + 2;
  }

  getIostat(p: { names?: string[]; perChannel: boolean }): IostatInfo | PerChannelIostatInfo {
    const ticks = Number(process.hrtime.bigint());
    const bdevs = p.names === undefined ? this.bdevs.list() : p.names.map((n) => this.bdevs.require(n));
    if (p.perChannel) {
      if (bdevs.length !== 1) throw new RpcError(RpcCode.Invalid, 'per_channel needs exactly one bdev name');
      const b = bdevs[0];
      return {
        tick_rate: TICK_RATE,
        ticks,
        name: b.name,
        channels: b.iostat.cores().map((core) => ({ thread_id: this.engineThreadId(core), ...b.iostat.ofCore(core) })),
      };
    }
    return { tick_rate: TICK_RATE, ticks, bdevs: bdevs.map((b) => ({ name: b.name, ...b.iostat.total() })) };
  }

  setQosLimit(name: string, limits: QosLimitsInfo): void {
    this.bdevs.require(name).qos.set(name, limits);
  }

  async resizeNullBdev(name: string, newSizeMiB: number): Promise<void> {
    const b = this.bdevs.require(name);
    // SPDK: a bdev of another module is -EINVAL, a missing one -ENODEV.
    if (b.kind !== 'null') throw new RpcError(RpcCode.Invalid, `bdev ${name} is a ${b.kind} bdev, not a null bdev`);
    const mib = 1024 * 1024;
    // SPDK compares whole MiB and refuses to shrink (bdev_null_resize).
    const currentMiB = Math.floor((b.blockSize * b.numBlocks) / mib);
    if (newSizeMiB < currentMiB) {
      throw new RpcError(RpcCode.Invalid, `new size ${newSizeMiB} MiB is smaller than the current ${currentMiB} MiB: a null bdev can only grow`);
    }
    const numBlocks = Math.floor((newSizeMiB * mib) / b.blockSize);
    if (!Number.isSafeInteger(numBlocks) || numBlocks < 1) throw new RpcError(RpcCode.Invalid, `new size ${newSizeMiB} MiB is out of range`);
    const old = b.numBlocks;
    b.numBlocks = numBlocks;
    log.info('bdev resized', { name, numBlocks, oldNumBlocks: old });
    const entry = b.claimedBy !== null ? this.controllers.get(b.claimedBy) : undefined;
    if (entry) await entry.controller.bdevResized();
  }

  setCoalescing(ctrlr: string, delayBaseUs: number, iopsThreshold: number): void {
    const entry = this.controllers.get(ctrlr);
    if (!entry) throw new RpcError(RpcCode.NoDevice, `no controller named ${ctrlr}`);
    const error = entry.controller.setCoalescing(delayBaseUs, iopsThreshold);
    if (error !== null) throw new RpcError(RpcCode.Invalid, error);
  }

  getThreadStats(): ThreadStatsInfo {
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

  getReactors(): ReactorsInfo {
    const cpuTimes = readCpuTimes();
    const elapsedNs = Number(process.hrtime.bigint() - this.startedAtNs);
    return {
      tick_rate: 1_000_000_000,
      pid: process.pid,
      reactors: this.options.cores.map((core) => {
        const worker = this.engine.worker(core);
        const { busyNs, idleNs } = worker.ticks();
        const placed = [...this.controllers.values()].filter((e) => e.controller.core === core);
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
            name: `vhost.${e.controller.name}`,
            id: i + 1,
            cpumask: formatCpumask([core]),
            elapsed: elapsedNs,
          })),
        };
      }),
    };
  }
}
