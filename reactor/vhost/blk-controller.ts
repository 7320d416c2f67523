/**
 * A vhost-user-blk controller: one socket, one bdev, one cpumask. It is the
 * VhostBackend of the session on its socket: it offers the virtio-blk
 * features and config space, places the device on a core of its mask when the
 * front-end starts it, and drives that core's engine worker.
 * Thread: main (reactor).
 */
import { BlkFeature, DeviceStat, VirtioFeature, type StopResult } from '../../engine/control';
import { blkConfigSpace, blkFeatures } from '../../engine/blk/config';
import { BdevRegistry, type Bdev } from '../bdev/registry';
import type { EnginePool } from '../engine-pool';
import { logger } from '../log';
import { formatCpumask, type Placement } from '../placement';
import type { ControllerInfo } from '../target';
import type { DeviceRunState, VhostBackend } from '../vhost-user/backend';
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
    try {
      await this.opts.engine.worker(core).start({
        kind: 'blk',
        id,
        name: this.name,
        features: state.features,
        readonly: this.readonly,
        bdev: BdevRegistry.describe(this.bdev),
        regions: state.regions,
        queues: state.queues,
        stats: this.stats,
      });
    } catch (err) {
      this.opts.placement.release(core);
      throw err;
    }
    this.core = core;
    this.deviceId = id;
    this.maxQueuesStarted = state.queues.length;
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
      delay_base_us: 0,
      iops_threshold: 0,
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

  /** The RPC call that recreates this controller (save_config). */
  writeConfig(): { method: string; params: Record<string, unknown> } {
    return {
      method: 'vhost_create_blk_controller',
      params: { ctrlr: this.name, dev_name: this.bdev.name, cpumask: formatCpumask(this.cores), readonly: this.readonly },
    };
  }
}
