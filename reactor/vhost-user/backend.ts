/**
 * What a vhost-user session needs from the device behind it. The session
 * (session.ts) speaks the protocol and owns the connection's fds; the backend
 * is the controller's glue to the engine: it places the device on a core and
 * starts/stops it there. Thread: main (reactor).
 */
import type { QueueDesc, RegionDesc, StopResult } from '../../engine/control';

export interface DeviceRunState {
  /** Negotiated virtio features (SET_FEATURES). */
  features: bigint;
  regions: RegionDesc[];
  /** The queues that are ready (addresses, kick fd or polling, enabled). */
  queues: QueueDesc[];
}

export interface VhostBackend {
  /** Controller name, for logs. */
  readonly name: string;
  /** Virtio feature bits offered to the front-end, bit 30 (protocol features) included. */
  readonly features: bigint;
  /** vhost-user protocol feature bits offered. */
  readonly protocolFeatures: bigint;
  /** GET_QUEUE_NUM's answer: the most queues this device serves. */
  readonly maxQueues: number;
  /**
   * The device's config space as seen from offset 0, at least `size` bytes
   * long (zero past the device's own struct). Built afresh on each call.
   */
  readConfig(size: number): Uint8Array;
  /**
   * Run the device with this state. Called only while stopped. Rejects when
   * the engine refuses (the session then closes the connection).
   */
  start(state: DeviceRunState): Promise<void>;
  /**
   * Stop the running device: no new requests are taken, every request in
   * flight completes and is pushed to its used ring, the worker unmaps guest
   * memory. Resolves with each queue's next avail index. Called only while
   * running.
   */
  stop(): Promise<StopResult>;
  /** The connection came (true) or went (false); for vhost_get_controllers / delete refusal. */
  connectionChanged(connected: boolean): void;
  /**
   * Optional: the session serving this backend (called when it is created)
   * and null when it closes, so that the backend can tell the front-end of
   * a config space change (a resized bdev).
   */
  attachSession?(session: BackendChannel | null): void;
}

/** What a backend may ask of its session on the back-end → front-end channel. */
export interface BackendChannel {
  /** Send VHOST_USER_BACKEND_CONFIG_CHANGE_MSG; false when the front-end gave no channel for it. Never waits. */
  notifyConfigChange(): boolean;
}
