/**
 * The vhostd application: owns the engine pool, the bdev and controller
 * registries, the vhost-user listeners and the RPC server, and implements the
 * Target the RPC methods call. Lifecycle: start() → serve → stop().
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BdevRegistry, type BdevKind } from './bdev/registry';
import { EnginePool } from './engine-pool';
import { logger } from './log';
import { formatCpumask, parseCpumask, Placement } from './placement';
import { RpcCode, RpcError, type BdevInfo, type ControllerInfo, type ReactorsInfo, type Target } from './target';
import { VERSION } from './version';
import { BlkController } from './vhost/blk-controller';
import { VhostUserListener } from './vhost-user/listener';

const log = logger('app');


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
  }

  // --- bdev ---------------------------------------------------------------

  createMallocBdev(p: { name?: string; numBlocks: number; blockSize: number; uuid?: string }): string {
    const name = p.name ?? this.bdevs.nextMallocName();
    return this.bdevs.create('malloc', { ...p, name }).name;
  }

  createNullBdev(p: { name: string; numBlocks: number; blockSize: number; uuid?: string }): string {
    return this.bdevs.create('null', p).name;
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
    const bdev = this.bdevs.list().map((b) => ({
      method: b.kind === 'malloc' ? 'bdev_malloc_create' : 'bdev_null_create',
      params: { name: b.name, num_blocks: b.numBlocks, block_size: b.blockSize, uuid: b.uuid },
    }));
    const vhost_blk = [...this.controllers.values()].map((e) => e.controller.writeConfig());
    return { bdev, vhost_blk };
  }

  // --- framework ----------------------------------------------------------

  getReactors(): ReactorsInfo {
    const elapsedNs = Number(process.hrtime.bigint() - this.startedAtNs);
    return {
      tick_rate: 1_000_000_000,
      pid: process.pid,
      reactors: this.options.cores.map((core) => {
        const { busyNs, idleNs } = this.engine.worker(core).ticks();
        const placed = [...this.controllers.values()].filter((e) => e.controller.core === core);
        return {
          lcore: core,
          busy: Math.round(busyNs),
          idle: Math.round(idleNs),
          in_interrupt: false,
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
