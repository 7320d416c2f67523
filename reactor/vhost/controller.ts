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
import { CoalescingSlot, DeviceStat, type BdevDesc, type DeviceDesc, type InflightDesc, type LogDesc, type ModelOp, type QueueDesc, type QueueStopResult, type RegionDesc, type StopResult } from '../../engine/control';
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
import { ProtocolFeature, VHOST_F_LOG_ALL } from '../vhost-user/messages';
import type { DeviceModel, ModelHost } from './model';

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
  /** Group of the socket file (--socket-group); the process's group when absent. */
  socketGid?: number;
  cores: number[];
  model: DeviceModel;
  bdevs: BdevRegistry;
  engine: ControllerEngine;
  placement: Placement;
  /**
   * vhostd-specific (`spread_queues`): spread the device's queues over the
   * cores of the mask, queue i on the (i mod N)-th core, one engine device
   * ("shard") per core that has queues, instead of all queues on one core
   * (SPDK's way, the default).
   */
  spreadQueues?: boolean;
  /** Told of front-end connects and disconnects and of device failures (the embedding API's events). */
  onEvent?: (event: ControllerEvent) => void;
}

/** What a controller reports to ControllerOptions.onEvent. */
export type ControllerEvent =
  | { type: 'connect'; ctrlr: string }
  | { type: 'disconnect'; ctrlr: string }
  | { type: 'deviceFailed'; ctrlr: string; core: number; reason: string };

/** One engine device of a running controller: the queues it has on one core. */
interface Shard {
  core: number;
  deviceId: number;
  stats: SharedArrayBuffer;
}

/** What every engine device of a running controller is started with (its queues aside). */
interface RunState {
  features: bigint;
  regions: RegionDesc[];
  /** The shared in-flight region (INFLIGHT_SHMFD), when the front-end gave one. */
  inflight?: InflightDesc;
  /** The dirty log, while the front-end migrates the guest (LOG_ALL + SET_LOG_BASE). */
  log?: LogDesc;
}

export class Controller implements VhostBackend, BdevUser, ModelHost {
  readonly name: string;
  readonly socketPath: string;
  readonly cores: number[];
  readonly model: DeviceModel;
  readonly features: bigint;
  readonly protocolFeatures: bigint;
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
  /** The core the running device is placed on (with spread queues: its first shard's), or -1 when stopped. */
  core = -1;
  /** The engine devices of the running device, by core (one unless queues are spread). */
  private readonly shards = new Map<number, Shard>();
  /** Spread queues: per-core statistics words of the shards, kept across restarts (the first core uses `stats`). */
  private readonly shardStats = new Map<number, SharedArrayBuffer>();
  /** What a shard started later needs: the negotiated features and the current memory table. */
  private runState: RunState | null = null;
  /** Indices of the queues running now. */
  private readonly running = new Set<number>();
  /** The running queues as last described (call fd kept current): what a move restarts elsewhere. */
  private readonly queueDescs = new Map<number, QueueDesc>();
  /** Device operations (front-end and scheduler) run one at a time, in order. */
  private opChain: Promise<unknown> = Promise.resolve();
  /** Moves between cores by the scheduler (vhost_get_controllers does not show it; tests and logs do). */
  moves = 0;
  /** vhost_get_controllers' max_queues: the most queues run at once since the front-end connected. */
  private maxQueuesStarted = 0;

  constructor(private readonly opts: ControllerOptions) {
    this.name = opts.name;
    this.socketPath = opts.socketPath;
    this.cores = opts.cores;
    this.model = opts.model;
    this.log = opts.model.log;
    this.maxQueues = opts.model.maxQueues;
    // VHOST_F_LOG_ALL with protocol feature LOG_SHMFD: every virtio model logs its writes for live migration.
    this.features = opts.model.features | (1n << BigInt(VirtioFeature.VhostUserProtocolFeatures)) | VHOST_F_LOG_ALL;
    const inflightBit = opts.model.inflightShmfd === true ? 1n << BigInt(ProtocolFeature.InflightShmfd) : 0n;
    // A model whose front-end builds the config space itself (virtio-scsi) does not offer CONFIG, as SPDK's vhost-scsi.
    const configBit = opts.model.configSpaceOffered === false ? 1n << BigInt(ProtocolFeature.Config) : 0n;
    this.protocolFeatures = (PROTOCOL_FEATURES | inflightBit | (1n << BigInt(ProtocolFeature.LogShmfd))) & ~configBit;
    this.coalescingView[CoalescingSlot.DelayBaseUs] = COALESCING_DEFAULT_DELAY_BASE_US;
    this.coalescingView[CoalescingSlot.IopsThreshold] = COALESCING_DEFAULT_IOPS_THRESHOLD;
  }

  /**
   * Claim the model's bdevs and (unless `listen` is false: SPDK's delayed
   * start, see listen()) listen on the socket. Throws ERR_BUSY (a bdev in
   * use) or ERR_INVALID (cannot listen).
   */
  open(listen = true): void {
    const claimed: Bdev[] = [];
    try {
      for (const b of this.model.bdevs) {
        this.opts.bdevs.claim(b, this, this.model.sharesBdevs === true);
        claimed.push(b);
      }
      if (listen) this.listen();
    } catch (err) {
      for (const b of claimed) this.opts.bdevs.release(b, this);
      throw err;
    }
  }

  /** True once the socket listens (a controller created with a delay waits for its start method). */
  get listening(): boolean {
    return this.listener !== null;
  }

  /** Listen on the socket (nothing when it already does). Throws ERR_INVALID. */
  listen(): void {
    if (this.listener !== null) return;
    const listener = new VhostUserListener(this.socketPath, { mode: this.opts.socketMode, gid: this.opts.socketGid }, this);
    try {
      listener.listen();
    } catch (err) {
      throw new VhostdError(ErrorCode.Invalid, `cannot listen on ${this.socketPath}: ${(err as Error).message}`, { cause: err });
    }
    this.listener = listener;
  }

  // --- ModelHost (models whose bdevs change while the controller lives) -------

  claimBdev(bdev: Bdev): void {
    this.opts.bdevs.claim(bdev, this);
  }

  releaseBdev(bdev: Bdev): void {
    this.opts.bdevs.release(bdev, this);
  }

  /**
   * The model changed. A running device is told (modelOp, on each of its
   * cores); a device being started is told once it runs (its description was
   * made before the change); a stopped device is not (its next start
   * describes the model as it is then).
   */
  modelChanged(ctl: (describe: (b: Bdev) => BdevDesc) => ModelOp): Promise<void> {
    // Serialized with the device's other operations: a start in progress finishes first.
    return this.serialize(async () => {
      for (const shard of [...this.shards.values()]) {
        try {
          await this.opts.engine.worker(shard.core).modelOp(shard.deviceId, ctl((b) => this.opts.bdevs.describe(b, shard.core)));
        } catch (err) {
          // The device stopped meanwhile: its next start describes the model as it is.
          if ((err as { code?: unknown }).code === 'ERR_NO_DEVICE') continue;
          throw err;
        }
      }
    });
  }

  /** A bdev of the device is being deleted: the model takes it out (virtio-scsi), or ERR_BUSY. */
  async hotRemoveBdev(bdev: Bdev): Promise<void> {
    if (this.model.hotRemove === undefined) {
      throw new VhostdError(ErrorCode.Busy, `bdev ${bdev.name} is used by controller ${this.name}; delete the controller first`);
    }
    await this.model.hotRemove(bdev, this);
  }

  /** Close the socket and its connection (the device drains and stops), then let go of the bdevs. */
  async close(): Promise<void> {
    const listener = this.listener;
    this.listener = null;
    try {
      if (listener) await listener.close();
    } finally {
      for (const b of this.model.bdevs) this.opts.bdevs.release(b, this);
      this.model.release?.();
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

  /** The connection (reactor/vhost-user/connection.ts) logs the connect and the disconnect, with the fd and the reason: once each. */
  connectionChanged(connected: boolean): void {
    this.connected = connected;
    if (!connected) this.maxQueuesStarted = 0;
    this.tell(connected ? { type: 'connect', ctrlr: this.name } : { type: 'disconnect', ctrlr: this.name });
  }

  /** ControllerOptions.onEvent, never letting the listener's exception into the connection's path. */
  private tell(event: ControllerEvent): void {
    try {
      this.opts.onEvent?.(event);
    } catch (err) {
      this.log.error('controller event listener failed', { ctrlr: this.name, event: event.type, error: (err as Error)?.message ?? String(err) });
    }
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

  /** Queues spread over the cores of the mask (the controller's `spread_queues`). */
  get spreadQueues(): boolean {
    return this.opts.spreadQueues === true && this.cores.length > 1;
  }

  /** The cores the running device has queues (engine devices) on, ascending; empty when stopped. */
  runningCores(): number[] {
    return [...this.shards.keys()].sort((a, b) => a - b);
  }

  /** With spread queues: the core of queue `index` (the (index mod N)-th core of the mask). */
  private spreadCoreOf(index: number): number {
    return this.cores[index % this.cores.length];
  }

  private statsFor(core: number, first: boolean): SharedArrayBuffer {
    if (first || !this.spreadQueues) return this.stats;
    let sab = this.shardStats.get(core);
    if (sab === undefined) {
      sab = new SharedArrayBuffer(DeviceStat.Count * 8);
      this.shardStats.set(core, sab);
    }
    return sab;
  }

  /** Start one engine device on `core` (already counted by placement) with `queues`. */
  private async startShard(core: number, rs: RunState, queues: QueueDesc[]): Promise<Shard> {
    const id = nextDeviceId++;
    const stats = this.statsFor(core, this.shards.size === 0);
    const device: DeviceDesc = {
      id,
      name: this.name,
      features: rs.features,
      model: this.model.payload(),
      bdevs: this.model.bdevs.map((b) => this.opts.bdevs.describe(b, core)),
      regions: rs.regions,
      queues,
      stats,
      coalescing: this.coalescing,
      ...(rs.inflight ? { inflight: rs.inflight } : {}),
      ...(rs.log ? { log: rs.log } : {}),
    };
    const worker = this.opts.engine.worker(core);
    // A device that fails in the engine (a call fd that can no longer be written) ends its connection.
    worker.watchDevice?.(id, (reason) => {
      this.log.warn('device failed', { ctrlr: this.name, core, reason });
      this.tell({ type: 'deviceFailed', ctrlr: this.name, core, reason });
      this.session?.deviceFailed(reason);
    });
    try {
      await worker.start(device);
    } catch (err) {
      worker.unwatchDevice?.(id);
      throw err;
    }
    const shard = { core, deviceId: id, stats };
    this.shards.set(core, shard);
    return shard;
  }

  start(state: DeviceRunState): Promise<void> {
    return this.serialize(() => this.startNow(state));
  }

  private async startNow(state: DeviceRunState): Promise<void> {
    if (this.core >= 0) throw new VhostdError(ErrorCode.Internal, `controller ${this.name}: start while running`);
    const rs: RunState = {
      features: state.features,
      regions: state.regions,
      ...(state.inflight ? { inflight: state.inflight } : {}),
      ...(state.log ? { log: state.log } : {}),
    };
    this.runState = rs;
    if (!this.spreadQueues) {
      const core = this.opts.placement.acquire(this.cores);
      try {
        await this.startShard(core, rs, state.queues);
      } catch (err) {
        this.opts.placement.release(core);
        this.shards.clear();
        throw err;
      }
    } else {
      // One engine device per core that has queues (the first core always: the device has a home).
      const byCore = new Map<number, QueueDesc[]>([[this.cores[0], []]]);
      for (const q of state.queues) {
        const c = this.spreadCoreOf(q.index);
        byCore.set(c, [...(byCore.get(c) ?? []), q]);
      }
      try {
        for (const [core, queues] of byCore) {
          this.opts.placement.acquireOn(core);
          try {
            await this.startShard(core, rs, queues);
          } catch (err) {
            this.opts.placement.release(core);
            throw err;
          }
        }
      } catch (err) {
        await this.stopShards();
        throw err;
      }
    }
    this.core = this.runningCores()[0];
    this.running.clear();
    this.queueDescs.clear();
    for (const q of state.queues) {
      this.running.add(q.index);
      this.queueDescs.set(q.index, q);
    }
    this.maxQueuesStarted = this.running.size;
    this.log.info('device started', {
      ctrlr: this.name,
      core: this.runningCores().join(','),
      queues: state.queues.map((q) => q.index).join(','),
      eventIdx: (state.features >> BigInt(VirtioFeature.RingEventIdx)) & 1n ? 1 : 0,
    });
  }

  /** Run `op` after every device operation before it has finished (whatever their outcome). */
  private serialize<T>(op: () => Promise<T>): Promise<T> {
    const next = this.opChain.then(op, op);
    this.opChain = next.catch(() => undefined);
    return next;
  }

  /** Stop every shard (in parallel), release their cores; the queue positions of all of them. */
  private async stopShards(): Promise<StopResult> {
    const shards = [...this.shards.values()];
    this.shards.clear();
    const results = await Promise.allSettled(shards.map((s) => this.opts.engine.worker(s.core).stop(s.deviceId)));
    for (const s of shards) {
      this.opts.engine.worker(s.core).unwatchDevice?.(s.deviceId);
      this.opts.placement.release(s.core);
    }
    const queues: QueueStopResult[] = [];
    let failure: unknown = null;
    for (const r of results) {
      if (r.status === 'fulfilled') queues.push(...r.value.queues);
      else failure ??= r.reason;
    }
    if (failure !== null) throw failure;
    queues.sort((a, b) => a.index - b.index);
    return { queues };
  }

  stop(): Promise<StopResult> {
    return this.serialize(() => this.stopNow());
  }

  private async stopNow(): Promise<StopResult> {
    if (this.core < 0) return { queues: [] };
    const cores = this.runningCores().join(',');
    try {
      const result = await this.stopShards();
      this.log.info('device stopped', { ctrlr: this.name, core: cores });
      return result;
    } finally {
      this.core = -1;
      this.running.clear();
      this.queueDescs.clear();
      this.runState = null;
    }
  }

  /** The shard that runs (or, with spread queues, will run) queue `index`. */
  private shardOf(index: number, op: string): Shard | null {
    this.requireRunning(op);
    if (!this.spreadQueues) return this.shards.get(this.core) as Shard;
    return this.shards.get(this.spreadCoreOf(index)) ?? null;
  }

  startQueue(queue: QueueDesc): Promise<void> {
    return this.serialize(() => this.startQueueNow(queue));
  }

  private async startQueueNow(queue: QueueDesc): Promise<void> {
    const shard = this.shardOf(queue.index, 'startQueue');
    if (shard !== null) {
      await this.opts.engine.worker(shard.core).queueStart(shard.deviceId, queue);
    } else {
      // The first queue of this core: its engine device starts with it.
      const core = this.spreadCoreOf(queue.index);
      const rs = this.runState as RunState;
      this.opts.placement.acquireOn(core);
      try {
        await this.startShard(core, rs, [queue]);
      } catch (err) {
        this.opts.placement.release(core);
        throw err;
      }
    }
    this.running.add(queue.index);
    this.queueDescs.set(queue.index, queue);
    if (this.running.size > this.maxQueuesStarted) this.maxQueuesStarted = this.running.size;
    this.log.debug('queue started', { ctrlr: this.name, queue: queue.index, core: shard?.core ?? this.spreadCoreOf(queue.index) });
  }

  stopQueue(index: number): Promise<QueueStopResult> {
    return this.serialize(() => this.stopQueueNow(index));
  }

  private async stopQueueNow(index: number): Promise<QueueStopResult> {
    const shard = this.shardOf(index, 'stopQueue');
    if (shard === null) throw new VhostdError(ErrorCode.Internal, `controller ${this.name}: queue ${index} does not run`);
    const result = await this.opts.engine.worker(shard.core).queueStop(shard.deviceId, index);
    this.running.delete(index);
    this.queueDescs.delete(index);
    this.log.debug('queue stopped', { ctrlr: this.name, queue: index });
    return result;
  }

  setCallFd(index: number, callFd: number): Promise<void> {
    return this.serialize(() => this.setCallFdNow(index, callFd));
  }

  private async setCallFdNow(index: number, callFd: number): Promise<void> {
    const shard = this.shardOf(index, 'setCallFd');
    if (shard === null) throw new VhostdError(ErrorCode.Internal, `controller ${this.name}: queue ${index} does not run`);
    await this.opts.engine.worker(shard.core).setCallFd(shard.deviceId, index, callFd);
    const q = this.queueDescs.get(index);
    if (q !== undefined) this.queueDescs.set(index, { ...q, callFd });
  }

  /**
   * The scheduler's move: the running device (queues not spread) goes to
   * `toCore` of its mask. Its worker stops it — every request taken from the
   * rings completes and is published, and the reply says where each ring
   * ended — then the worker of `toCore` starts it with the same queues at
   * those positions, the same fds and memory: no request is lost, none runs
   * twice, and none overtakes another (the new worker takes the rings from
   * where the old one stopped, in ring order). Runs between the front-end's
   * operations, never during one. If the new core refuses, the device goes
   * back to its old core. Returns whether it moved.
   */
  move(toCore: number): Promise<boolean> {
    return this.serialize(async () => {
      const from = this.core;
      if (from < 0 || from === toCore || this.spreadQueues || !this.cores.includes(toCore)) return false;
      const shard = this.shards.get(from) as Shard;
      const rs = this.runState as RunState;
      const stopped = await this.opts.engine.worker(from).stop(shard.deviceId);
      this.shards.delete(from);
      this.opts.placement.release(from);
      const ended = new Map(stopped.queues.map((q) => [q.index, q.pos]));
      const queues = [...this.queueDescs.values()].map((q) => ({ ...q, pos: ended.get(q.index) ?? q.pos }));
      for (const core of [toCore, from]) {
        this.opts.placement.acquireOn(core);
        try {
          await this.startShard(core, rs, queues);
          this.core = core;
          for (const q of queues) this.queueDescs.set(q.index, q);
          if (core === toCore) {
            this.moves++;
            this.log.info('device moved', { ctrlr: this.name, from, to: toCore, queues: queues.map((q) => q.index).join(',') });
            return true;
          }
          return false;
        } catch (err) {
          this.opts.placement.release(core);
          this.log.error('device start after a move failed', { ctrlr: this.name, core, err: String((err as Error)?.message ?? err) });
        }
      }
      // Neither core took it back: the device is down; the front-end sees its queues stop answering.
      this.core = -1;
      this.running.clear();
      this.queueDescs.clear();
      return false;
    });
  }

  /** Calls signalled so far plus requests in flight: how much the device does (the scheduler compares deltas). */
  activity(): { callSignals: number; inflight: number } {
    return { callSignals: this.statsView[DeviceStat.CallSignals], inflight: this.inflightTasks() };
  }

  updateMemory(regions: RegionDesc[]): Promise<void> {
    return this.serialize(() => this.updateMemoryNow(regions));
  }

  private async updateMemoryNow(regions: RegionDesc[]): Promise<void> {
    this.requireRunning('updateMemory');
    const shards = [...this.shards.values()];
    // Every shard drains and remaps; all of them must answer before the old regions' fds may close.
    const results = await Promise.allSettled(shards.map((s) => this.opts.engine.worker(s.core).memUpdate(s.deviceId, regions)));
    const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed !== undefined) throw failed.reason;
    if (this.runState !== null) this.runState.regions = regions;
    this.log.info('memory updated', { ctrlr: this.name, regions: regions.length });
  }

  private requireRunning(op: string): number {
    if (this.core < 0) throw new VhostdError(ErrorCode.Internal, `controller ${this.name}: ${op} while the device is stopped`);
    return this.core;
  }

  /**
   * The device's counters (DeviceStat slots) summed over every shard it has
   * had — they survive restarts and moves — with InflightTasks over the
   * running shards only (as inflightTasks()). Read by the metrics endpoint.
   */
  counters(): Float64Array {
    const out = Float64Array.from(this.statsView);
    for (const sab of this.shardStats.values()) {
      const v = new Float64Array(sab);
      for (let i = 0; i < out.length; i++) if (i !== DeviceStat.InflightTasks) out[i] += v[i];
    }
    out[DeviceStat.InflightTasks] = this.inflightTasks();
    return out;
  }

  /** Requests in flight over every shard. */
  private inflightTasks(): number {
    let n = this.statsView[DeviceStat.InflightTasks];
    for (const [core, sab] of this.shardStats) if (this.shards.has(core) && this.shards.get(core)?.stats === sab) n += new Float64Array(sab)[DeviceStat.InflightTasks];
    return n;
  }

  // --- BdevUser ---------------------------------------------------------------

  /**
   * A bdev of the device changed size: the workers already check against the
   * new size (the registry told them first); the front-end is told that the
   * config space changed, and re-reads the capacity with GET_CONFIG.
   */
  bdevResized(bdev: Bdev): void {
    const notified = this.model.configChangeOnResize === false ? false : (this.session?.notifyConfigChange() ?? false);
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
              inflight_task_cnt: this.inflightTasks(),
            },
          ]
        : [],
      backend_specific: this.model.backendSpecific(),
    };
  }

  /** The calls that recreate this controller (save_config): the model's create, then its coalescing when set — as SPDK's vhost_user_config_json. */
  writeConfigCalls(): ConfigCall[] {
    const cpumask = formatCpumask(this.cores);
    const calls = this.model.configCalls !== undefined ? this.model.configCalls(this.name, cpumask) : [this.model.createCall(this.name, cpumask)];
    if (this.opts.spreadQueues === true) calls[0].params = { ...(calls[0].params as Record<string, unknown>), spread_queues: true };
    if (this.delayBaseUs !== 0) {
      calls.push({
        method: 'vhost_controller_set_coalescing',
        params: { ctrlr: this.name, delay_base_us: this.delayBaseUs, iops_threshold: this.iopsThreshold },
      });
    }
    return calls;
  }
}
