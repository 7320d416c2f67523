/**
 * A vhost-user-blk controller: one socket, one bdev, one cpumask. It is the
 * VhostBackend of the session on its socket: it offers the virtio-blk
 * features and config space, places the device on a core of its mask when the
 * front-end starts it, and drives that core's engine worker.
 * Thread: main (reactor).
 */
import { CoalescingSlot, DeviceStat, type StopResult } from '../../engine/control';
import { BlkFeature, VirtioFeature } from '../../engine/virtio/spec';
import { blkConfigSpace, blkFeatures } from '../../engine/blk/config';
import { BdevRegistry, type Bdev } from '../bdev/registry';
import { EngineError, type EnginePool } from '../engine-pool';
import { logger } from '../log';
import { formatCpumask, type Placement } from '../placement';
import type { ControllerInfo } from '../target';
import type { BackendChannel, DeviceRunState, VhostBackend } from '../vhost-user/backend';
import { ProtocolFeature } from '../vhost-user/messages';

const log = logger('vhost_blk');

/** Queues offered to the front-end (GET_QUEUE_NUM, config num_queues). SPDK's vhost-blk default is 8 or more; QEMU asks for num-queues. */
export const BLK_MAX_QUEUES = 16;

const PROTOCOL_FEATURES =
  (1n << BigInt(ProtocolFeature.Mq)) |
  (1n << BigInt(ProtocolFeature.ReplyAck)) |
  (1n << BigInt(ProtocolFeature.BackendReq)) |
  (1n << BigInt(ProtocolFeature.Config)) |
  (1n << BigInt(ProtocolFeature.ConfigureMemSlots)) |
  (1n << BigInt(ProtocolFeature.Status));

let nextDeviceId = 1;

/** SPDK's defaults (lib/vhost/vhost_internal.h): coalescing off, threshold 60000 IOPS. */
export const COALESCING_DEFAULT_DELAY_BASE_US = 0;
export const COALESCING_DEFAULT_IOPS_THRESHOLD = 60000;
/** SPDK_VHOST_STATS_CHECK_INTERVAL_MS: the threshold is applied per interval, so it must be >= 1000/10. */
const STATS_CHECK_INTERVAL_MS = 10;
/** SPDK refuses a base delay of UINT32_MAX ticks or more; vhostd's tick is 1 ns. */
const MAX_DELAY_BASE_US = Math.floor((2 ** 32 - 1) / 1000);

export interface BlkControllerOptions {
  name: string;
  socketPath: string;
  bdev: Bdev;
  cores: number[];
  readonly: boolean;
  engine: EnginePool;
  placement: Placement;
}

export class BlkController implements VhostBackend {
  readonly name: string;
  readonly socketPath: string;
  readonly bdev: Bdev;
  readonly cores: number[];
  readonly readonly: boolean;
  readonly features: bigint;
  readonly protocolFeatures = PROTOCOL_FEATURES;
  readonly maxQueues = BLK_MAX_QUEUES;
  /** Per-device counters, kept across restarts of the device. */
  readonly stats = new SharedArrayBuffer(DeviceStat.Count * 8);
  private readonly statsView = new Float64Array(this.stats);
  /** Interrupt coalescing settings, shared with the engine (CoalescingSlot). */
  private readonly coalescing = new SharedArrayBuffer(CoalescingSlot.Count * 8);
  private readonly coalescingView = new Float64Array(this.coalescing);
  /** The session of the connected front-end (for config change notifications). */
  private session: BackendChannel | null = null;
  /** The bdev size the running device was started or last resized with. */
  private deviceNumBlocks = 0;

  connected = false;
  /** The core the running device is placed on, or -1 when stopped. */
  core = -1;
  private deviceId = 0;
  private maxQueuesStarted = 0;

  constructor(private readonly opts: BlkControllerOptions) {
    this.name = opts.name;
    this.socketPath = opts.socketPath;
    this.bdev = opts.bdev;
    this.cores = opts.cores;
    this.readonly = opts.readonly;
    this.features = blkFeatures(opts.readonly) | (1n << BigInt(VirtioFeature.VhostUserProtocolFeatures));
    this.coalescingView[CoalescingSlot.DelayBaseUs] = COALESCING_DEFAULT_DELAY_BASE_US;
    this.coalescingView[CoalescingSlot.IopsThreshold] = COALESCING_DEFAULT_IOPS_THRESHOLD;
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
   * (within 10 ms). Returns an error message, or null when applied.
   */
  setCoalescing(delayBaseUs: number, iopsThreshold: number): string | null {
    if (delayBaseUs > MAX_DELAY_BASE_US) return `delay_base_us ${delayBaseUs} is too big (at most ${MAX_DELAY_BASE_US})`;
    if (Math.floor((iopsThreshold * STATS_CHECK_INTERVAL_MS) / 1000) === 0) {
      return `iops_threshold ${iopsThreshold} is too low (at least ${1000 / STATS_CHECK_INTERVAL_MS})`;
    }
    this.coalescingView[CoalescingSlot.IopsThreshold] = iopsThreshold;
    this.coalescingView[CoalescingSlot.DelayBaseUs] = delayBaseUs;
    log.info('coalescing set', { ctrlr: this.name, delayBaseUs, iopsThreshold });
    return null;
  }

  attachSession(session: BackendChannel | null): void {
    this.session = session;
  }

  /**
   * The bdev changed size (bdev_null_resize): the running device learns the
   * new block count first, then the front-end is told that the config space
   * changed (it reads the new capacity with GET_CONFIG). Resolves with
   * whether a notification was sent.
   */
  async bdevResized(): Promise<boolean> {
    const numBlocks = this.bdev.numBlocks;
    if (this.core >= 0 && this.deviceNumBlocks !== numBlocks) {
      try {
        await this.opts.engine.worker(this.core).resize(this.deviceId, numBlocks);
        this.deviceNumBlocks = numBlocks;
      } catch (err) {
        // Stopped meanwhile: its next start takes the new size from the registry.
        if (!(err instanceof EngineError && err.code === 'ERR_NO_DEVICE')) throw err;
      }
    }
    const sent = this.session?.notifyConfigChange() ?? false;
    log.info('bdev resized', { ctrlr: this.name, bdev: this.bdev.name, numBlocks, notified: sent });
    return sent;
  }

  get started(): boolean {
    return this.core >= 0;
  }

  readConfig(size: number): Uint8Array {
    const space = blkConfigSpace(this.bdev, BLK_MAX_QUEUES, this.readonly);
    const out = new Uint8Array(Math.max(size, space.length));
    out.set(space);
    return out;
  }

  async start(state: DeviceRunState): Promise<void> {
    const core = this.opts.placement.acquire(this.cores);
    const id = nextDeviceId++;
    const bdev = { ...BdevRegistry.describe(this.bdev), stats: this.bdev.iostat.channel(core) };
    try {
      await this.opts.engine.worker(core).start({
        kind: 'blk',
        id,
        name: this.name,
        features: state.features,
        readonly: this.readonly,
        bdev,
        regions: state.regions,
        queues: state.queues,
        stats: this.stats,
        coalescing: this.coalescing,
      });
    } catch (err) {
      this.opts.placement.release(core);
      throw err;
    }
    this.core = core;
    this.deviceId = id;
    this.deviceNumBlocks = bdev.numBlocks;
    this.maxQueuesStarted = state.queues.length;
    // A resize that landed while the device was starting.
    if (this.bdev.numBlocks !== bdev.numBlocks) {
      try {
        await this.opts.engine.worker(core).resize(id, this.bdev.numBlocks);
        this.deviceNumBlocks = this.bdev.numBlocks;
      } catch (err) {
        log.error('resize after start failed', { ctrlr: this.name, error: (err as Error).message });
      }
    }
    log.info('device started', {
      ctrlr: this.name,
      core,
      queues: state.queues.map((q) => q.index).join(','),
      eventIdx: (state.features >> BigInt(VirtioFeature.RingEventIdx)) & 1n ? 1 : 0,
      ro: (state.features >> BigInt(BlkFeature.Ro)) & 1n ? 1 : 0,
    });
  }

  async stop(): Promise<StopResult> {
    const core = this.core;
    if (core < 0) return { queues: [] };
    try {
      const result = await this.opts.engine.worker(core).stop(this.deviceId);
      log.info('device stopped', { ctrlr: this.name, core });
      return result;
    } finally {
      this.opts.placement.release(core);
      this.core = -1;
    }
  }

  connectionChanged(connected: boolean): void {
    this.connected = connected;
    if (!connected) this.maxQueuesStarted = 0;
    log.info(connected ? 'front-end connected' : 'front-end disconnected', { ctrlr: this.name });
  }

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
      backend_specific: { block: { readonly: this.readonly, bdev: this.bdev.name, transport: 'vhost_user_blk' } },
    };
  }

  /** The call that restores its coalescing (save_config), or null while off — as SPDK's vhost_user_config_json. */
  writeCoalescingConfig(): { method: string; params: Record<string, unknown> } | null {
    if (this.delayBaseUs === 0) return null;
    return {
      method: 'vhost_controller_set_coalescing',
      params: { ctrlr: this.name, delay_base_us: this.delayBaseUs, iops_threshold: this.iopsThreshold },
    };
  }

  /** The RPC call that recreates this controller (save_config). */
  writeConfig(): { method: string; params: Record<string, unknown> } {
    return {
      method: 'vhost_create_blk_controller',
      params: { ctrlr: this.name, dev_name: this.bdev.name, cpumask: formatCpumask(this.cores), readonly: this.readonly },
    };
  }
}
