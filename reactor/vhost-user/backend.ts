/**
 * What a vhost-user session needs from the device behind it. The session
 * (session.ts) speaks the protocol and owns the connection's fds; the backend
 * is the controller: a generic part (placement, the engine worker, statistics,
 * coalescing) and a device model (blk now; scsi next) that offers features,
 * config space and the engine payload. Thread: main (reactor).
 *
 * The device's life as the session drives it, incrementally where the spec
 * allows it (each call is made only in the state it names, one at a time):
 *   stopped --start(memory, features, ready queues)--> running
 *   running: startQueue (a queue became ready), stopQueue (GET_VRING_BASE,
 *            a queue that is no longer ready), setCallFd (SET_VRING_CALL),
 *            updateMemory (SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG)
 *   running --stop()--> stopped (features changed, reset, the connection closed)
 * A running device may have no queue running.
 */
import type { InflightDesc, LogDesc, QueueDesc, QueueStopResult, RegionDesc, StopResult } from '../../engine/control';

export interface DeviceRunState {
  /** Negotiated virtio features (SET_FEATURES). */
  features: bigint;
  regions: RegionDesc[];
  /** The queues that are ready (addresses, kick fd or polling, enabled); may be empty. */
  queues: QueueDesc[];
  /** The in-flight region (INFLIGHT_SHMFD negotiated and SET_INFLIGHT_FD given). */
  inflight?: InflightDesc;
  /** The dirty log (VHOST_F_LOG_ALL negotiated and SET_LOG_BASE given): live migration is under way. */
  log?: LogDesc;
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
   * The front-end wrote the config space (SET_CONFIG). The model applies what
   * is writable (virtio-blk: wce) and ignores the rest; returns false when
   * the write is refused (the session answers REPLY_ACK with failure).
   */
  writeConfig(offset: number, data: Uint8Array): boolean;
  /** Run the device with this state. Called only while stopped. Rejects when the engine refuses. */
  start(state: DeviceRunState): Promise<void>;
  /**
   * Stop the running device: no new requests are taken, every request in
   * flight completes and is pushed to its used ring, the worker unmaps guest
   * memory. Resolves with where each running queue ended.
   */
  stop(): Promise<StopResult>;
  /** Start one more queue of the running device. */
  startQueue(queue: QueueDesc): Promise<void>;
  /** Stop one running queue after its in-flight I/O completed; resolves with where it ended. */
  stopQueue(index: number): Promise<QueueStopResult>;
  /** The running queue signals this call fd (or none: -1) from the resolution on. */
  setCallFd(index: number, callFd: number): Promise<void>;
  /** Quiesce, remap and resume the running device with a new memory table; no request is lost. */
  updateMemory(regions: RegionDesc[]): Promise<void>;
  /** The connection came (true) or went (false); for vhost_get_controllers / delete refusal. */
  connectionChanged(connected: boolean): void;
  /**
   * The session serving this backend (called when it is created) and null
   * when it closes, so that the backend can tell the front-end of a config
   * space change (a resized bdev).
   */
  attachSession(session: BackendChannel | null): void;
}

/** What a backend may ask of its session on the back-end → front-end channel. */
export interface BackendChannel {
  /** Send VHOST_USER_BACKEND_CONFIG_CHANGE_MSG; false when the front-end gave no channel for it. Never waits. */
  notifyConfigChange(): boolean;
  /** The running device failed in the engine (e.g. its call fd cannot be written): close the connection with `reason`. */
  deviceFailed(reason: string): void;
}
