/**
 * What the poll loop needs from a device it runs (virtio-blk now, others
 * later). Thread: the engine worker that runs the device.
 */
import type { StopResult } from './control';

export interface DeviceEnv {
  /** Interrupt the guest: write 1 to a call eventfd. */
  signal(callFd: number): void;
}

export interface EngineDevice {
  readonly id: number;
  readonly name: string;
  /** Requests taken from the rings and not yet completed (including retries). */
  readonly inflight: number;
  /** True until beginStop() or fail(): the device takes new requests. */
  readonly running: boolean;
  /**
   * One poll: take up to a batch of requests per queue (while running), reap
   * bdev completions, publish used rings, signal once per queue. Returns how
   * much work was done (0 = idle). `nowMs` is the worker's performance.now()
   * at the end of its previous loop iteration (QoS timeslices, interrupt
   * coalescing and submission timestamps use it instead of reading the
   * clock per request).
   */
  poll(nowMs: number): number;
  /** The bdev now has numBlocks blocks (it was resized); throws if this device's bdev cannot change size. */
  resize(numBlocks: number): void;
  /** Stop taking requests; in-flight ones still complete through poll(). */
  beginStop(): void;
  /** With inflight === 0: publish and signal what is left, release the bdev channel, unmap guest memory. */
  finishStop(): StopResult;
  /** An exception escaped poll(): stop taking requests (completions are still reaped). */
  fail(err: unknown): void;
  /**
   * Ask the driver for kicks (true) or suppress them (false). Enabling
   * re-checks the rings afterwards and returns true if requests are waiting.
   */
  setNotification(enabled: boolean): boolean;
  /** Kick eventfds to sleep on (only queues that have one). */
  kickFds(): readonly number[];
}
