/**
 * The bdev layer of one engine worker (after SPDK's lib/bdev/bdev.c): what
 * devices use instead of talking to bdev modules themselves.
 *
 * - One handle per bdev name per worker, refcounted: every device on this
 *   worker that uses the bdev gets the same underlying module object and the
 *   same channel (SPDK's io_channel), however many devices share it.
 * - submit() does what SPDK's bdev layer does around a module's submit:
 *   QoS (bdev_set_qos_limit's 1 ms budgets; over-budget I/Os wait in order),
 *   the NOMEM wait queue (an I/O the module refuses for want of resources is
 *   resubmitted after a later completion), iostat (per bdev and worker).
 *   It never throws: every I/O completes exactly once with a status through
 *   io.onComplete(), and only from poll().
 * - Events (resize now, hot-remove next) are addressed by bdev name and
 *   reach every user of the bdev on this worker.
 *
 * Thread: the engine worker that owns the layer; nothing here is shared.
 */
import type { BdevDesc } from '../control';
import type { BdevIo, BdevIoType } from './bdev';

/** What a device that opened a bdev is told. */
export interface BdevUser {
  /** The bdev now has numBlocks blocks (bdevResize); I/O is checked against the new size from now on. */
  bdevResized(numBlocks: number): void;
}

/** One user's view of an open bdev. */
export interface BdevHandle {
  readonly name: string;
  readonly blockSize: number;
  /** Current size (changes with bdevResize). */
  readonly numBlocks: number;
  ioTypeSupported(type: BdevIoType): boolean;
  /**
   * Start `io` (QoS, NOMEM retry and iostat included). `nowMs` is the
   * worker's clock (the submission stamp for latency statistics). Never
   * throws; io.onComplete() is called once, from BdevLayer.poll().
   */
  submit(io: BdevIo, nowMs: number): void;
  /** I/Os this user submitted that have not completed yet. */
  readonly outstanding: number;
  /**
   * A stopping user: its I/Os waiting for QoS budget go at full speed (a rate
   * limit must not hold up a stop).
   */
  drain(): void;
  /** Give the handle back (only when outstanding is 0); the last close releases the channel and the module object. */
  close(): void;
}

export interface BdevLayer {
  /** Open `desc` for `user` (the first open on this worker opens the module and its channel). Throws on a bad description. */
  open(desc: BdevDesc, user: BdevUser): BdevHandle;
  /**
   * Once per loop iteration: QoS timeslices, NOMEM resubmissions, module
   * completions (each io.onComplete()), statistics. Returns how much work
   * was done (0 = idle).
   */
  poll(nowMs: number): number;
  /** bdevResize: tell every user of `name` on this worker. Returns how many users were told. */
  resize(name: string, numBlocks: number): number;
  /** Bdevs open on this worker (for tests and statistics). */
  readonly openCount: number;
}
