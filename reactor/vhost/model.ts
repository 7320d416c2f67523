/**
 * A device model: what makes a controller a virtio-blk (or, next, a
 * virtio-scsi) device, beside the generic controller (controller.ts) that
 * does what every device needs (socket, placement, the engine worker,
 * statistics, coalescing). One model object per controller.
 * Thread: main (reactor).
 */
import type { BdevDesc, ModelDesc, ModelOp } from '../../engine/control';
import type { Bdev } from '../bdev/registry';
import type { ConfigCall } from '../bdev/module';
import type { Logger } from '../log';

export interface DeviceModel {
  /** ModelDesc.kind: the engine's device factory for it. */
  readonly kind: ModelDesc['kind'];
  /** The SPDK subsystem whose save_config lists controllers of this model ('vhost_blk'). */
  readonly subsystem: string;
  /** The log component (flag) of controllers of this model ('vhost_blk'). */
  readonly log: Logger;
  /** Virtio feature bits offered (bit 30, VHOST_USER_F_PROTOCOL_FEATURES, is the controller's to add). */
  readonly features: bigint;
  /**
   * Offer vhost-user INFLIGHT_SHMFD: the front-end keeps an in-flight region
   * for the device, so a restarted vhostd resubmits what was in flight
   * (blk: yes; a model whose front-end cannot reconnect may leave it out).
   */
  readonly inflightShmfd?: boolean;
  /**
   * The device may share its bdevs with other controllers that share them
   * (SPDK's vhost-blk opens bdevs without claiming them): two controllers on
   * one bdev, e.g. both ends of a live migration inside one vhostd. Absent:
   * the controller uses its bdevs alone.
   */
  readonly sharesBdevs?: boolean;
  /** The most queues the device serves (GET_QUEUE_NUM). */
  readonly maxQueues: number;
  /** Every bdev the device uses, in the order of DeviceDesc.bdevs (blk: one). */
  readonly bdevs: readonly Bdev[];
  /** The device's config space from offset 0, built afresh (it follows the bdevs' sizes). */
  configSpace(): Uint8Array;
  /** The front-end wrote the config space (SET_CONFIG): apply what is writable; false when refused. */
  writeConfigSpace(offset: number, data: Uint8Array): boolean;
  /** The model's part of the DeviceDesc the worker gets. */
  payload(): ModelDesc;
  /** vhost_get_controllers' backend_specific. */
  backendSpecific(): Record<string, unknown>;
  /** The RPC call that recreates the controller (save_config); the controller gives its name and cpumask. */
  createCall(ctrlr: string, cpumask: string): ConfigCall;
  /** Optional: every call that recreates the controller, when one create call is not enough (virtio-scsi: create, add targets, start). */
  configCalls?(ctrlr: string, cpumask: string): ConfigCall[];
  /**
   * Optional: take `bdev` out of the device because the bdev is being
   * deleted (virtio-scsi hot-removes the target). Absent: a used bdev
   * cannot be deleted (ERR_BUSY).
   */
  hotRemove?(bdev: Bdev, ctrl: ModelHost): Promise<void>;
  /** False when the front-end builds the config space itself (virtio-scsi): VHOST_USER_PROTOCOL_F_CONFIG is not offered. */
  readonly configSpaceOffered?: boolean;
  /** Optional: the controller is deleted (after its bdevs were released). */
  release?(): void;
  /** False when a bdev resize must not be announced with a config-space change (virtio-scsi: QEMU builds its config space itself; the event queue carries it). */
  readonly configChangeOnResize?: boolean;
}

/** What a model that changes while the controller lives (virtio-scsi targets) asks of its controller. */
export interface ModelHost {
  readonly name: string;
  /** Claim `bdev` for this controller (ERR_BUSY when another controller uses it). */
  claimBdev(bdev: Bdev): void;
  releaseBdev(bdev: Bdev): void;
  /**
   * The model changed: tell the running device (a stopped one describes the
   * model afresh when it starts). `ctl` gets a function that describes a
   * bdev for the device's worker.
   */
  modelChanged(ctl: (describe: (b: Bdev) => BdevDesc) => ModelOp): Promise<void>;
}
