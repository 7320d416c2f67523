/**
 * A device model: what makes a controller a virtio-blk (or, next, a
 * virtio-scsi) device, beside the generic controller (controller.ts) that
 * does what every device needs (socket, placement, the engine worker,
 * statistics, coalescing). One model object per controller.
 * Thread: main (reactor).
 */
import type { ModelDesc } from '../../engine/control';
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
}
