/**
 * A vhost-user controller: one socket, one cpumask, one device model (blk
 * now). The generic part is here — the listener on the socket, placement on
 * the least loaded core of the mask when the front-end starts the device,
 * the engine worker's start/stop and per-queue/memory operations, per-device
 * statistics, interrupt coalescing, vhost_get_controllers' entry — and the
 * model (model.ts) gives features, config space, the engine payload and its
 * bdevs. It is the VhostBackend of the session on its socket.
 * Thread: main (reactor).
 */
import { CoalescingSlot, DeviceStat, type DeviceDesc, type QueueDesc, type QueueStopResult, type RegionDesc, type StopResult } from '../../engine/control';
import { VirtioFeature } from '../../engine/virtio/spec';
import type { ConfigCall } from '../bdev/module';
import type { Bdev, BdevRegistry, BdevUser } from '../bdev/registry';
import type { EnginePool } from '../engine-pool';
import { ErrorCode, VhostdError } from '../errors';
import type { ControllerInfo } from '../info';
import type { Logger } from '../log';
import { formatCpumask, type Placement } from '../placement';
import type { BackendChannel, DeviceRunState, VhostBackend } from '../vhost-user/backend';
import { VhostUserListener } from '../vhost-user/listener';
import { ProtocolFeature } from '../vhost-user/messages';
import type { DeviceModel } from './model';

const PROTOCOL_FEATURES =
  (1n << BigInt(ProtocolFeature.Mq)) |
  (1n << BigInt(ProtocolFeature.ReplyAck)) |
  (1n << BigInt(ProtocolFeature.BackendReq)) |
  (1n << BigInt(ProtocolFeature.Config)) |
  (1n << BigInt(ProtocolFeature.ConfigureMemSlots)) |
  (1n << BigInt(ProtocolFeature.Status));

/** DeviceDesc.id: unique per started device instance in this process. */
let nextDeviceId = 1;

/** SPDK's defaults (lib/vhost/vhost_internal.h): coalescing off, threshold 60000 IOPS. */
export const COALESCING_DEFAULT_DELAY_BASE_US = 0;
export const COALESCING_DEFAULT_IOPS_THRESHOLD = 60000;
/** SPDK_VHOST_STATS_CHECK_INTERVAL_MS: the threshold is applied per interval, so it must be >= 1000/10. */
const STATS_CHECK_INTERVAL_MS = 10;
/** SPDK refuses a base delay of UINT32_MAX ticks or more; vhostd's tick is 1 ns. */
const MAX_DELAY_BASE_US = Math.floor((2 ** 32 - 1) / 1000);

/** What a controller needs of the engine: the worker of a core. */
export type ControllerEngine = Pick<EnginePool, 'worker'>;

export interface ControllerOptions {
  name: string;
  socketPath: string;
  /** File mode of the socket. */
  socketMode: number;
  cores: number[];
  model: DeviceModel;
  bdevs: BdevRegistry;
  engine: ControllerEngine;
  placement: Placement;
}

export class Controller implements VhostBackend, BdevUser {
  readonly name: string;
  readonly socketPath: string;
  readonly cores: number[];
  readonly model: DeviceModel;
  readonly features: bigint;
  readonly protocolFeatures = PROTOCOL_FEATURES;
  readonly maxQueues: number;
  /** Per-device counters, kept across restarts of the device. */
  readonly stats = new SharedArrayBuffer(DeviceStat.Count * 8);
  private readonly statsView = new Float64Array(this.stats);
  /** Interrupt coalescing settings, shared with the engine (CoalescingSlot). */
  private readonly coalescing = new SharedArrayBuffer(CoalescingSlot.Count * 8);
  private readonly coalescingView = new Float64Array(this.coalescing);
  /** The session of the connected front-end (for config change notifications). */
  private session: BackendChannel | null = null;
  private listener: VhostUserListener | null = null;
  /** The model's log component ('vhost_blk'). */
  private readonly log: Logger;

  connected = false;
  /** The core the running device is placed on, or -1 when stopped. */
  core = -1;
  private deviceId = 0;
  /** Indices of the queues running now. */
  private readonly running = new Set<number>();
  /** vhost_get_controllers' max_queues: the most queues run at once since the front-end connected. */
  private maxQueuesStarted = 0;

  constructor(private readonly opts: ControllerOptions) {
    this.name = opts.name;
    this.socketPath = opts.socketPath;
    this.cores = opts.cores;
    this.model = opts.model;
    this.log = opts.model.log;
    this.maxQueues = opts.model.maxQueues;
    this.features = opts.model.features | (1n << BigInt(VirtioFeature.VhostUserProtocolFeatures));
    this.coalescingView[CoalescingSlot.DelayBaseUs] = COALESCING_DEFAULT_DELAY_BASE_US;
    this.coalescingView[CoalescingSlot.IopsThreshold] = COALESCING_DEFAULT_IOPS_THRESHOLD;
  }

  /** Claim the model's bdevs and listen on the socket. Throws ERR_BUSY (a bdev in use) or ERR_INVALID (cannot listen). */
  open(): void {
    const claimed: Bdev[] = [];
    try {
      for (const b of this.model.bdevs) {
        this.opts.bdevs.claim(b, this);
        claimed.push(b);
      }
      const listener = new VhostUserListener(this.socketPath, this.opts.socketMode, this);
      try {
        listener.listen();
      } catch (err) {
        throw new VhostdError(ErrorCode.Invalid, `cannot listen on ${this.socketPath}: ${(err as Error).message}`, { cause: err });
      }
      this.listener = listener;
    } catch (err) {
      for (const b of claimed) this.opts.bdevs.release(b, this);
      throw err;
    }
  }

  /** Close the socket and its connection (the device drains and stops), then let go of the bdevs. */
  async close(): Promise<void> {
    const listener = this.listener;
    this.listener = null;
    try {
      if (listener) await listener.close();
    } finally {
      for (const b of this.model.bdevs) this.opts.bdevs.release(b, this);
    }
  }

  get delayBaseUs(): number {
    return this.coalescingView[CoalescingSlot.DelayBaseUs];
  }

  get iopsThreshold(): number {
    return this.coalescingView[CoalescingSlot.IopsThreshold];
  }

  /**
   * vhost_controller_set_coalescing, with SPDK's checks
   * (vhost_user_dev_set_coalescing): the threshold must give at least one
   * request per 10 ms check interval (>= 100), the base delay must fit 32
   * bits of ticks. The running device picks the values up at its next check
   * (within 10 ms). Throws ERR_INVALID.
   */
  setCoalescing(delayBaseUs: number, iopsThreshold: number): void {
    if (delayBaseUs > MAX_DELAY_BASE_US) {
      throw new VhostdError(ErrorCode.Invalid, `delay_base_us ${delayBaseUs} is too big (at most ${MAX_DELAY_BASE_US})`);
    }
    if (Math.floor((iopsThreshold * STATS_CHECK_INTERVAL_MS) / 1000) === 0) {
      throw new VhostdError(ErrorCode.Invalid, `iops_threshold ${iopsThreshold} is too low (at least ${1000 / STATS_CHECK_INTERVAL_MS})`);
    }
    this.coalescingView[CoalescingSlot.IopsThreshold] = iopsThreshold;
    this.coalescingView[CoalescingSlot.DelayBaseUs] = delayBaseUs;
    this.log.info('coalescing set', { ctrlr: this.name, delayBaseUs, iopsThreshold });
  }

  // --- VhostBackend ---------------------------------------------------------

  attachSession(session: BackendChannel | null): void {
    this.session = session;
  }

  connectionChanged(connected: boolean): void {
    this.connected = connected;
    if (!connected) this.maxQueuesStarted = 0;
    this.log.info(connected ? 'front-end connected' : 'front-end disconnected', { ctrlr: this.name });
  }

  readConfig(size: number): Uint8Array {
    const space = this.model.configSpace();
    const out = new Uint8Array(Math.max(size, space.length));
    out.set(space);
    return out;
  }

  writeConfig(offset: number, data: Uint8Array): boolean {
    const ok = this.model.writeConfigSpace(offset, data);
    if (!ok) this.log.notice('config space write refused', { ctrlr: this.name, offset, size: data.length });
    return ok;
  }

  get started(): boolean {
    return this.core >= 0;
  }

  async start(state: DeviceRunState): Promise<void> {
    if (this.core >= 0) throw new VhostdError(ErrorCode.Internal, `controller ${this.name}: start while running`);
    const core = this.opts.placement.acquire(this.cores);
    const id = nextDeviceId++;
    const device: DeviceDesc = {
      id,
      name: this.name,
      features: state.features,
      model: this.model.payload(),
      bdevs: this.model.bdevs.map((b) => this.opts.bdevs.describe(b, core)),
      regions: state.regions,
      queues: state.queues,
      stats: this.stats,
      coalescing: this.coalescing,
    };
    const worker = this.opts.engine.worker(core);
    // A device that fails in the engine (a call fd that can no longer be written) ends its connection.
    worker.watchDevice?.(id, (reason) => {
      this.log.warn('device failed', { ctrlr: this.name, core, reason });
      this.session?.deviceFailed(reason);
    });
    try {
      await worker.start(device);
    } catch (err) {
      worker.unwatchDevice?.(id);
      this.opts.placement.release(core);
      throw err;
    }
    this.core = core;
    this.deviceId = id;
    this.running.clear();
    for (const q of state.queues) this.running.add(q.index);
    this.maxQueuesStarted = this.running.size;
    this.log.info('device started', {
      ctrlr: this.name,
      core,
      queues: state.queues.map((q) => q.index).join(','),
      eventIdx: (state.features >> BigInt(VirtioFeature.RingEventIdx)) & 1n ? 1 : 0,
    });
  }

  async stop(): Promise<StopResult> {
    const core = this.core;
    if (core < 0) return { queues: [] };
    try {
      const result = await this.opts.engine.worker(core).stop(this.deviceId);
      this.log.info('device stopped', { ctrlr: this.name, core });
      return result;
    } finally {
      this.opts.engine.worker(core).unwatchDevice?.(this.deviceId);
      this.opts.placement.release(core);
      this.core = -1;
      this.running.clear();
    }
  }

  async startQueue(queue: QueueDesc): Promise<void> {
    const core = this.requireRunning('startQueue');
    await this.opts.engine.worker(core).queueStart(this.deviceId, queue);
    this.running.add(queue.index);
    if (this.running.size > this.maxQueuesStarted) this.maxQueuesStarted = this.running.size;
    this.log.debug('queue started', { ctrlr: this.name, queue: queue.index });
  }

  async stopQueue(index: number): Promise<QueueStopResult> {
    const core = this.requireRunning('stopQueue');
    const result = await this.opts.engine.worker(core).queueStop(this.deviceId, index);
    this.running.delete(index);
    this.log.debug('queue stopped', { ctrlr: this.name, queue: index });
    return result;
  }

  async setCallFd(index: number, callFd: number): Promise<void> {
    const core = this.requireRunning('setCallFd');
    await this.opts.engine.worker(core).setCallFd(this.deviceId, index, callFd);
  }

  async updateMemory(regions: RegionDesc[]): Promise<void> {
    const core = this.requireRunning('updateMemory');
    await this.opts.engine.worker(core).memUpdate(this.deviceId, regions);
    this.log.info('memory updated', { ctrlr: this.name, regions: regions.length });
  }

  private requireRunning(op: string): number {
    if (this.core < 0) throw new VhostdError(ErrorCode.Internal, `controller ${this.name}: ${op} while the device is stopped`);
    return this.core;
  }

  // --- BdevUser ---------------------------------------------------------------

  /**
   * A bdev of the device changed size: the workers already check against the
   * new size (the registry told them first); the front-end is told that the
   * config space changed, and re-reads the capacity with GET_CONFIG.
   */
  bdevResized(bdev: Bdev): void {
    const notified = this.session?.notifyConfigChange() ?? false;
    this.log.info('bdev resized', { ctrlr: this.name, bdev: bdev.name, numBlocks: bdev.numBlocks, notified });
  }

  // --- control plane ----------------------------------------------------------

  /** vhost_get_controllers' entry (SPDK shape). */
  info(): ControllerInfo {
    return {
      ctrlr: this.name,
      cpumask: formatCpumask(this.cores),
      delay_base_us: this.delayBaseUs,
      iops_threshold: this.iopsThreshold,
      socket: this.socketPath,
      sessions: this.connected
        ? [
            {
              vid: 0,
              id: 0,
              name: `${this.name}s0`,
              started: this.started,
              max_queues: this.maxQueuesStarted,
              inflight_task_cnt: this.statsView[DeviceStat.InflightTasks],
            },
          ]
        : [],
      backend_specific: this.model.backendSpecific(),
    };
  }

  /** The calls that recreate this controller (save_config): the model's create, then its coalescing when set — as SPDK's vhost_user_config_json. */
  writeConfigCalls(): ConfigCall[] {
    const calls = [this.model.createCall(this.name, formatCpumask(this.cores))];
    if (this.delayBaseUs !== 0) {
      calls.push({
        method: 'vhost_controller_set_coalescing',
        params: { ctrlr: this.name, delay_base_us: this.delayBaseUs, iops_threshold: this.iopsThreshold },
      });
    }
    return calls;
  }
}
