/**
 * The engine half of a bdev module (its reactor half, in the same folder
 * modules/bdev/<name>/, makes the BdevDesc this half opens). The worker's
 * bdev layer finds a module by BdevDesc.module in engine/bdev/modules.ts.
 *
 * Thread: the engine worker; a module's per-worker state (a file module's
 * kernel ring) is made by the layer of that worker and passed to open().
 */
import type { BdevDesc } from '../control';
import type { Bdev } from './bdev';

/**
 * What a module keeps per worker and shares among its bdevs there (for file
 * bdevs: the io_uring or AIO context). Made at the first open on a worker,
 * closed when the last of the module's bdevs on it closes.
 */
export interface ModuleWorkerState {
  /**
   * Guest memory that I/Os pointed into is about to be unmapped (every such
   * I/O has completed): forget anything registered about these views.
   */
  forgetBuffers(views: readonly Uint8Array[]): void;
  close(): void;
  /**
   * Sleeping workers (adaptive and interrupt mode): from now on the state
   * keeps a completion eventfd for its kernel ring (made with the ring, so
   * every I/O in the kernel signals it). Modules whose I/O completes inside
   * submit() (malloc, null) need nothing.
   */
  enableCompletionFds?(): void;
  /** Append the completion eventfds to sleep on (only after enableCompletionFds). */
  completionFds?(out: number[]): void;
  /** Completion eventfds on (before sleeping) or off (busy polling). */
  setCompletionNotify?(on: boolean): void;
}

export interface BdevModuleEngine {
  /** BdevDesc.module, the module's folder name. */
  readonly name: string;
  /** Per-worker state, when the module has any. */
  createState?(): ModuleWorkerState;
  /**
   * Its I/O is completed by threads of this process that need CPU time to
   * do it (librbd's messenger and finisher threads), not by the kernel or a
   * device: a busy-polling worker with such I/O in flight and nothing else
   * to do yields its core to them (BdevLayer.helperInFlight, Poller).
   */
  readonly completesOnHelperThreads?: boolean;
  /** Make this worker's object for the bdev `desc` describes. Throws RangeError on a bad description. */
  open(desc: BdevDesc, state: ModuleWorkerState | undefined): Bdev;
}
