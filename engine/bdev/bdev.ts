/**
 * The bdev module interface, after SPDK's spdk_bdev_fn_table: a bdev can
 * say which I/O types it supports, make a per-thread channel, and a channel
 * takes I/Os with submit(), which never throws: every I/O completes with a
 * status. Completions are delivered only from the channel's poll(), which the
 * owning worker's poll loop calls, so device code is written for
 * asynchronous completion even when a module (malloc, null) finishes the work
 * inside submit(). BdevIo objects are owned and reused by the submitter (one
 * per request slot); modules never keep them after completing them.
 *
 * This layer knows nothing of virtio. Thread: a Bdev object is made by the
 * worker that uses it; a channel belongs to that worker only.
 */

import type { IoTypeSet } from '../../modules/bdev/io-types';
import { Fifo } from '../fifo';

export const enum BdevIoType {
  Read = 0,
  Write = 1,
  Flush = 2,
  Unmap = 3,
  WriteZeroes = 4,
}

export const enum BdevIoStatus {
  Pending = -1,
  Success = 0,
  Failed = 1,
  /** Out of resources: resubmit after some other I/O of the channel completes. */
  NoMem = 2,
}

/** Who sees an I/O's completion before its submitter: the bdev layer's handle that submitted it. */
export interface IoRoute {
  ioDone(io: BdevIo): void;
}

/**
 * One block I/O. Data I/Os (read, write) carry a scatter list of byte ranges
 * in `iovBuf[i]` at `iovOff[i]`, `iovLen[i]` bytes, whose total must be
 * numBlocks * blockSize. The submitter subclasses it and learns of the
 * completion in done(); modules call onComplete(), which goes through the
 * bdev layer first (NOMEM retry, statistics) when the I/O came from it.
 */
export abstract class BdevIo {
  /** Set by the bdev layer while the I/O is its (submit to final completion). */
  route: IoRoute | null = null;
  /** When the I/O was submitted (the worker's clock, ms), for latency statistics. */
  startMs = 0;
  type: BdevIoType = BdevIoType.Read;
  offsetBlocks = 0;
  numBlocks = 0;
  status: BdevIoStatus = BdevIoStatus.Pending;
  iovCount = 0;
  readonly iovBuf: Uint8Array[];
  readonly iovOff: Float64Array;
  readonly iovLen: Uint32Array;

  constructor(readonly iovCapacity: number) {
    const empty = new Uint8Array(0);
    this.iovBuf = new Array<Uint8Array>(iovCapacity).fill(empty);
    this.iovOff = new Float64Array(iovCapacity);
    this.iovLen = new Uint32Array(iovCapacity);
  }

  /** Start a new I/O in this object. */
  prepare(type: BdevIoType, offsetBlocks: number, numBlocks: number): void {
    this.type = type;
    this.offsetBlocks = offsetBlocks;
    this.numBlocks = numBlocks;
    this.iovCount = 0;
    this.status = BdevIoStatus.Pending;
  }

  /** Append one data range; false when iovCapacity is exhausted. */
  addIov(buf: Uint8Array, offset: number, len: number): boolean {
    const n = this.iovCount;
    if (n >= this.iovCapacity) return false;
    this.iovBuf[n] = buf;
    this.iovOff[n] = offset;
    this.iovLen[n] = len;
    this.iovCount = n + 1;
    return true;
  }

  /** Modules call this from their channel's poll() once `status` is final. */
  onComplete(): void {
    const route = this.route;
    if (route !== null) route.ioDone(this);
    else this.done();
  }

  /** The submitter's completion: `status` is final (never NoMem when submitted through the bdev layer). */
  abstract done(): void;
}

export interface BdevChannel {
  /** Start `io`. Never throws; the outcome arrives through a later poll(). */
  submit(io: BdevIo): void;
  /** Deliver finished I/Os (io.onComplete()); returns how many. */
  poll(): number;
  /** I/Os submitted and not yet delivered by poll(). */
  readonly outstanding: number;
  /**
   * May the worker sleep with this channel's outstanding I/Os? True when
   * each of them will signal a completion eventfd of its module (it is in the
   * kernel) or waits only for such a completion; false when a poll() has
   * something to deliver or submit now. A channel without it may sleep only
   * when nothing is outstanding.
   */
  sleepReady?(): boolean;
  /** Release the channel (only when outstanding is 0). */
  destroy(): void;
}

/**
 * A module's bdev object in one worker (one per bdev name per worker, made by
 * the module's engine half, owned by the bdev layer).
 */
export interface Bdev {
  readonly name: string;
  readonly blockSize: number;
  readonly numBlocks: number;
  ioTypeSupported(type: BdevIoType): boolean;
  createChannel(): BdevChannel;
  destroy(): void;
  /** Modules whose size can change (null: bdev_null_resize) take the new block count here. */
  resize?(numBlocks: number): void;
}

/** Is `type` in the module's set of supported I/O types (modules/bdev/<name>/common.ts)? */
export function ioTypeIn(set: IoTypeSet, type: BdevIoType): boolean {
  switch (type) {
    case BdevIoType.Read:
      return set.read;
    case BdevIoType.Write:
      return set.write;
    case BdevIoType.Flush:
      return set.flush;
    case BdevIoType.Unmap:
      return set.unmap;
    case BdevIoType.WriteZeroes:
      return set.write_zeroes;
    default:
      return false;
  }
}

/**
 * FIFO of finished I/Os for channels whose work is done inside submit():
 * submit() calls complete(), poll() calls reap(). Grows by doubling, never
 * shrinks, so steady state does not allocate.
 */
export class CompletionQueue {
  private readonly fifo = new Fifo<BdevIo>();

  get length(): number {
    return this.fifo.length;
  }

  complete(io: BdevIo, status: BdevIoStatus): void {
    io.status = status;
    this.fifo.push(io);
  }

  /** Deliver the I/Os queued when reap() started (not those a callback adds). */
  reap(): number {
    const n = this.fifo.length;
    for (let i = 0; i < n; i++) this.fifo.shift().onComplete();
    return n;
  }
}

/**
 * The checks every module makes before touching data: the block range lies
 * inside the bdev (overflow-safe) and, for data I/Os, the scatter list adds
 * up to exactly numBlocks * blockSize with every range inside its buffer.
 */
export function ioIsValid(bdev: Bdev, io: BdevIo): boolean {
  const { offsetBlocks, numBlocks } = io;
  if (!Number.isSafeInteger(offsetBlocks) || !Number.isSafeInteger(numBlocks)) return false;
  if (offsetBlocks < 0 || numBlocks < 0 || numBlocks > bdev.numBlocks || offsetBlocks > bdev.numBlocks - numBlocks) {
    return false;
  }
  if (io.type === BdevIoType.Read || io.type === BdevIoType.Write) {
    let total = 0;
    for (let i = 0; i < io.iovCount; i++) {
      const off = io.iovOff[i];
      const len = io.iovLen[i];
      if (off < 0 || off > io.iovBuf[i].length - len) return false;
      total += len;
    }
    if (total !== numBlocks * bdev.blockSize) return false;
  }
  return true;
}
