/**
 * What the poll loop needs from a device it runs, whatever its kind, and
 * what it gives a device. The poller makes devices through the factories of
 * engine/devices.ts (keyed by DeviceDesc.model.kind) and drives every
 * control op through this interface; operations that must wait for in-flight
 * I/O (stop, queueStop, memUpdate) are split into a begin and a finish the
 * poller calls once the relevant in-flight count is 0.
 *
 * Thread: the engine worker that runs the device.
 */
import type { BdevLayer } from './bdev/layer';
import type { DeviceDesc, QueueDesc, QueueStopResult, RegionDesc, StopResult, ModelOp } from './control';
import type { GuestMemory } from './memory';

/** What a worker gives each device it makes. */
export interface DeviceEnv {
  /** Interrupt the guest: write 1 to a call eventfd. */
  signal(callFd: number): void;
  /** Map a guest memory table (the device owns the result and unmaps it). Throws on failure. */
  mapMemory(regions: readonly RegionDesc[]): GuestMemory;
  /** The worker's bdev layer (one per worker, shared by its devices). */
  readonly bdevs: BdevLayer;
}

/** Makes the device a `start` request describes; throws (having released what it took) on a bad description. */
export type DeviceFactory = (desc: DeviceDesc, env: DeviceEnv) => EngineDevice;

export interface EngineDevice {
  readonly id: number;
  readonly name: string;
  /** Requests taken from the rings and not yet completed. */
  readonly inflight: number;
  /** True until beginStop() or fail(): the device takes new requests. */
  readonly running: boolean;
  /**
   * One poll: publish what completed since the last poll, take up to a batch
   * of requests per queue (while running), signal once per queue. Returns
   * how much work was done (0 = idle). `nowMs` is the worker's
   * performance.now() at the end of its previous loop iteration (coalescing
   * and submission stamps use it instead of reading the clock per request).
   * Bdev completions arrive in between, from the worker's BdevLayer.poll().
   */
  poll(nowMs: number): number;
  /**
   * Publish and signal what completed since poll() (the poller's
   * BdevLayer.reap() in the same iteration) without taking requests. A kind
   * without it publishes those at its next poll().
   */
  publish?(nowMs: number): void;
  /** Stop taking requests; in-flight ones still complete. */
  beginStop(): void;
  /** With inflight === 0: publish and signal what is left, release the bdevs, unmap guest memory. */
  finishStop(): StopResult;
  /** Start one more queue (throws QueueSetupError on a bad queue, or if it already runs). */
  queueStart(queue: QueueDesc): void;
  /** Stop taking requests from one queue (throws if it does not run). */
  beginQueueStop(index: number): void;
  /** Requests of one queue in flight. */
  queueInflight(index: number): number;
  /** With queueInflight(index) === 0: publish, signal, forget the queue; where it ended. */
  finishQueueStop(index: number): QueueStopResult;
  /** Use this call eventfd (-1: none) for a running queue from now on (throws if it does not run). */
  setCallFd(index: number, callFd: number): void;
  /** memUpdate, first half: stop taking requests (in-flight ones complete). */
  beginMemUpdate(): void;
  /**
   * memUpdate, second half, with inflight === 0: publish, map `regions`,
   * move every ring onto the new mapping, unmap the old one, take requests
   * again at the same ring positions. On failure the device keeps (and runs
   * on) its old memory and the error is thrown.
   */
  finishMemUpdate(regions: readonly RegionDesc[]): void;
  /** An exception escaped poll(): stop taking requests (completions are still delivered). */
  fail(err: unknown): void;
  /**
   * Ask the driver for kicks (true) or suppress them (false). Enabling
   * re-checks the rings afterwards and returns true if requests are waiting.
   */
  setNotification(enabled: boolean): boolean;
  /** Kick eventfds to sleep on (only queues that have one). */
  kickFds(): readonly number[];
  /**
   * A model's own request (control op `modelOp`), for device kinds that have
   * any: begin it (throws when the device refuses it); the poller calls
   * modelOpReady until it returns true, then finishModelOp, then replies.
   */
  beginModelOp?(op: ModelOp): void;
  modelOpReady?(op: ModelOp): boolean;
  finishModelOp?(op: ModelOp): void;
}
