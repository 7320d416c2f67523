/**
 * File bdevs in an engine worker — what bdev_uring and bdev_aio share: a
 * backing file (or block device) the reactor opened, served through a
 * kernel I/O ring (io_uring or Linux AIO, bindings/native.d.ts FileRing) with
 * iovecs pointing straight into guest memory (zero copy).
 *
 * One ring per worker and engine kind (FileEngine), shared by every channel
 * of that kind on the worker; it is made by the first channel and closed
 * with the last, so a worker with no file devices holds no ring.
 *
 * Flow: submit() only queues the I/O on its channel. The channel's poll(),
 * which the device calls once per poll iteration, moves queued I/Os into the
 * ring's staging arrays while the channel has fewer than CHANNEL_DEPTH in
 * flight and the ring has a free tag, hands the whole batch to the kernel in
 * one call, reaps every completion into a Float64Array and delivers this
 * channel's finished I/Os. A full ring or channel never fails an I/O: it
 * waits in the channel's queue until a completion frees a slot.
 *
 * Results: a short read or write is resubmitted for the remainder; a read
 * that gets 0 bytes (end of file) fails. Any -errno (EIO, ENOSPC, ...) fails
 * that I/O only. EINVAL on an O_DIRECT read/write (buffers the store cannot
 * take directly) is retried once on the buffered fd of the same file;
 * EOPNOTSUPP for FALLOC_FL_ZERO_RANGE (tmpfs) switches the channel to
 * punch-hole + allocate.
 *
 * No allocation per I/O: tags, staging rows, per-tag iov areas and the
 * completion array are typed arrays sized at ring creation; guest buffers are
 * registered with the ring once per mapping (identity of the Uint8Array the
 * device passes), and released when the last channel using them goes.
 *
 * Thread: the engine worker that runs the devices; module state is per worker.
 */
import { constants as osConstants } from 'node:os';
import { FileOp, type FileRing } from '../../bindings/native';
import type { BdevDesc, FileBdevDesc } from '../control';
import { fileIoTypes } from '../../modules/bdev/file-io-types';
import type { IoTypeSet } from '../../modules/bdev/io-types';
import type { ModuleWorkerState } from './module';
import { Fifo } from '../fifo';
import { logger } from '../log';
import { type Bdev, type BdevChannel, type BdevIo, BdevIoStatus, BdevIoType, CompletionQueue, ioIsValid, ioTypeIn } from './bdev';

/** Ring submission queue depth (and tags) per worker and engine kind. */
export const RING_ENTRIES = 256;
/** Most I/Os one channel has in the kernel at once; more wait in the channel. */
export const CHANNEL_DEPTH = 128;
/** Most data segments per I/O (virtio-blk offers seg_max 126). */
export const MAX_IOV_PER_IO = 128;

const REQ_WORDS = 6;
const IOV_WORDS = 3;
const BUFFER_SLOTS = 64;
const FILE_SLOTS = 64;

const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
const FALLOC_FL_ZERO_RANGE = 0x10;
const EINVAL = osConstants.errno.EINVAL;
const EOPNOTSUPP = osConstants.errno.EOPNOTSUPP;
/** Errors logged per channel before it goes quiet (then one line per 1024). */
const ERROR_LOG_LIMIT = 8;

const ERRNO_NAMES = new Map<number, string>(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

/** errno → its name ('ENOSPC'), for logs. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

/** 'rbd': the same engine over librbd (modules/bdev/rbd), whose "file" slots hold image handles. */
export type FileEngineKind = 'uring' | 'aio' | 'rbd';

const ENGINE_LABEL: Record<FileEngineKind, string> = { uring: 'io_uring', aio: 'linux-aio', rbd: 'librbd' };

/** How a ring is made (the addon's IoUring/LinuxAio; tests may inject). */
export type RingFactory = (entries: number, maxIovPerIo: number) => FileRing;

/** The worker's ring of one kind, its tags, staging arrays and buffer/file slots. */
class FileEngine {
  readonly depth: number;
  private readonly reqs: Float64Array;
  private readonly iovs: Float64Array;
  private readonly out: Float64Array;
  private staged = 0;

  // Per tag.
  private readonly tagIo: (BdevIo | null)[];
  private readonly tagChan: (FileChannel | null)[];
  /** Bytes already done (short reads/writes). */
  private readonly tagDone: Float64Array;
  private readonly tagOp: Int32Array;
  private readonly tagSlot: Int32Array;
  private readonly freeTags: Int32Array;
  private nfree: number;

  private readonly bufViews: (Uint8Array | null)[] = new Array<Uint8Array | null>(BUFFER_SLOTS).fill(null);
  private lastBuf = 0;
  private readonly fileUsed = new Uint8Array(FILE_SLOTS);
  private channels = 0;

  constructor(
    readonly kind: FileEngineKind,
    readonly ring: FileRing,
  ) {
    this.depth = Math.min(RING_ENTRIES, ring.entries);
    this.reqs = new Float64Array(this.depth * REQ_WORDS);
    this.iovs = new Float64Array(this.depth * MAX_IOV_PER_IO * IOV_WORDS);
    this.out = new Float64Array(this.depth * 2);
    this.tagIo = new Array<BdevIo | null>(this.depth).fill(null);
    this.tagChan = new Array<FileChannel | null>(this.depth).fill(null);
    this.tagDone = new Float64Array(this.depth);
    this.tagOp = new Int32Array(this.depth);
    this.tagSlot = new Int32Array(this.depth);
    this.freeTags = new Int32Array(this.depth);
    for (let i = 0; i < this.depth; i++) this.freeTags[i] = this.depth - 1 - i;
    this.nfree = this.depth;
  }

  get freeTagCount(): number {
    return this.nfree;
  }

  /** Requests staged and not yet taken by the kernel (a full ring): only a poll submits them. */
  get stagedCount(): number {
    return this.staged;
  }

  get channelCount(): number {
    return this.channels;
  }

  attach(): void {
    this.channels++;
  }

  /** A channel is gone; true when it was the last (the caller closes the ring). */
  detach(): boolean {
    this.channels--;
    return this.channels === 0;
  }

  allocFileSlot(fd: number): number {
    for (let s = 0; s < FILE_SLOTS; s++) {
      if (this.fileUsed[s] === 0) {
        this.ring.setFile(s, fd);
        this.fileUsed[s] = 1;
        return s;
      }
    }
    throw new RangeError(`${this.kind} ring: all ${FILE_SLOTS} file slots are in use`);
  }

  freeFileSlot(slot: number): void {
    if (slot < 0 || this.fileUsed[slot] === 0) return;
    this.ring.setFile(slot, -1);
    this.fileUsed[slot] = 0;
  }

  /** The buffer slot of `view`, registering it the first time; -1 when all slots are taken. */
  bufferSlot(view: Uint8Array): number {
    const last = this.lastBuf;
    if (this.bufViews[last] === view) return last;
    let free = -1;
    for (let s = 0; s < BUFFER_SLOTS; s++) {
      const v = this.bufViews[s];
      if (v === view) {
        this.lastBuf = s;
        return s;
      }
      if (v === null && free < 0) free = s;
    }
    if (free < 0) return -1;
    this.ring.setBuffer(free, view);
    this.bufViews[free] = view;
    this.lastBuf = free;
    return free;
  }

  /** The guest memory behind `views` is going away (no I/O uses it any more): unregister it. */
  forgetBuffers(views: readonly Uint8Array[]): void {
    for (let s = 0; s < BUFFER_SLOTS; s++) {
      const v = this.bufViews[s];
      if (v !== null && views.includes(v)) {
        this.ring.setBuffer(s, null);
        this.bufViews[s] = null;
      }
    }
  }

  /** Buffers registered with the ring (for tests and leak checks). */
  get bufferCount(): number {
    let n = 0;
    for (let s = 0; s < BUFFER_SLOTS; s++) if (this.bufViews[s] !== null) n++;
    return n;
  }

  /**
   * Give `io` a tag and stage it. Returns false (and stages nothing) when
   * its buffers cannot be registered or it has too many segments: the caller
   * fails it.
   */
  start(ch: FileChannel, io: BdevIo): boolean {
    const tag = this.freeTags[--this.nfree];
    this.tagIo[tag] = io;
    this.tagChan[tag] = ch;
    this.tagDone[tag] = 0;
    this.tagSlot[tag] = ch.directSlot;
    this.tagOp[tag] = ch.opFor(io);
    if (!this.stage(tag)) {
      this.release(tag);
      return false;
    }
    return true;
  }

  /** Write tag's request (from tagDone bytes on) into the next staging row. */
  private stage(tag: number): boolean {
    const io = this.tagIo[tag] as BdevIo;
    const ch = this.tagChan[tag] as FileChannel;
    const op = this.tagOp[tag];
    const row = this.staged * REQ_WORDS;
    const reqs = this.reqs;
    const bs = ch.bdev.blockSize;
    let offset = io.offsetBlocks * bs;
    let a = 0;
    let b = 0;
    if (op === FileOp.Readv || op === FileOp.Writev) {
      const done = this.tagDone[tag];
      offset += done;
      const base = tag * MAX_IOV_PER_IO;
      let skip = done;
      let n = 0;
      for (let i = 0; i < io.iovCount; i++) {
        let len = io.iovLen[i];
        let off = io.iovOff[i];
        if (skip >= len) {
          skip -= len;
          continue;
        }
        off += skip;
        len -= skip;
        skip = 0;
        if (n >= MAX_IOV_PER_IO) return false;
        const slot = this.bufferSlot(io.iovBuf[i]);
        if (slot < 0) return false;
        const v = (base + n) * IOV_WORDS;
        this.iovs[v] = slot;
        this.iovs[v + 1] = off;
        this.iovs[v + 2] = len;
        n++;
      }
      if (n === 0) return false;
      a = base;
      b = n;
    } else if (op === FileOp.Datasync) {
      offset = 0;
    } else {
      a = io.numBlocks * bs;
      if (op === FileOp.Fallocate) b = io.type === BdevIoType.Unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE;
    }
    reqs[row] = op;
    reqs[row + 1] = this.tagSlot[tag];
    reqs[row + 2] = offset;
    reqs[row + 3] = a;
    reqs[row + 4] = b;
    reqs[row + 5] = tag;
    this.staged++;
    return true;
  }

  private release(tag: number): void {
    this.tagIo[tag] = null;
    this.tagChan[tag] = null;
    this.freeTags[this.nfree++] = tag;
  }

  /** Submit what is staged (one kernel call), then reap and dispatch every completion. Returns completions seen. */
  flush(): number {
    if (this.staged > 0) {
      const n = this.staged;
      const taken = this.ring.submit(this.reqs, n, this.iovs);
      if (taken < n) this.reqs.copyWithin(0, taken * REQ_WORDS, n * REQ_WORDS);
      this.staged = n - taken;
    }
    // Every completion (kernel or made in the addon) belongs to a tag still
    // held, so with no tag out there is nothing to reap: skip the native
    // call (most busy-poll iterations; inline I/O completes within the call
    // pair that submitted it).
    if (this.nfree === this.depth) return 0;
    let total = 0;
    const out = this.out;
    const max = out.length / 2;
    for (;;) {
      const got = this.ring.reap(out, max);
      for (let i = 0; i < got; i++) this.dispatch(out[2 * i], out[2 * i + 1]);
      total += got;
      if (got < max) break;
    }
    return total;
  }

  private dispatch(tag: number, res: number): void {
    const io = this.tagIo[tag];
    const ch = this.tagChan[tag];
    if (io === null || ch === null) {
      logger.error('file ring returned an unknown tag', { kind: this.kind, tag, res });
      return;
    }
    const op = this.tagOp[tag];
    if (res < 0) {
      const errno = -res;
      if (errno === EINVAL && (op === FileOp.Readv || op === FileOp.Writev) && ch.bufferedSlot >= 0 && this.tagSlot[tag] !== ch.bufferedSlot) {
        // O_DIRECT refused these buffers (alignment): once more through the page cache.
        ch.noteBuffered();
        this.tagSlot[tag] = ch.bufferedSlot;
        this.restage(tag);
        return;
      }
      if (errno === EOPNOTSUPP && op === FileOp.Fallocate && io.type === BdevIoType.WriteZeroes) {
        ch.noteNoZeroRange();
        this.tagOp[tag] = FileOp.PunchAlloc;
        this.restage(tag);
        return;
      }
      ch.noteError(io, errno);
      this.finish(tag, BdevIoStatus.Failed);
      return;
    }
    if (op === FileOp.Readv || op === FileOp.Writev) {
      const total = io.numBlocks * ch.bdev.blockSize;
      const done = this.tagDone[tag] + res;
      if (done < total) {
        if (res === 0) {
          // End of file (the file shrank under us): never report success.
          ch.noteShort(io, done, total);
          this.finish(tag, BdevIoStatus.Failed);
          return;
        }
        this.tagDone[tag] = done;
        this.restage(tag);
        return;
      }
    }
    this.finish(tag, BdevIoStatus.Success);
  }

  private restage(tag: number): void {
    if (!this.stage(tag)) this.finish(tag, BdevIoStatus.Failed);
  }

  private finish(tag: number, status: BdevIoStatus): void {
    const io = this.tagIo[tag] as BdevIo;
    const ch = this.tagChan[tag] as FileChannel;
    this.release(tag);
    ch.finished(io, status);
  }
}

/**
 * A file module's state in one worker (ModuleWorkerState): its ring, made by
 * the first channel and closed with the last, so a worker with no file
 * devices holds no ring. The worker's bdev layer owns one per module.
 */
export class FileRingState implements ModuleWorkerState {
  private engine: FileEngine | null = null;
  /** enableCompletionFds() was called: each ring gets its completion eventfd when it is made. */
  private wantCompletionFd = false;
  /** The current ring's completion eventfd (-1: none). Owned by the ring. */
  private completionFd = -1;

  constructor(
    readonly kind: FileEngineKind,
    private readonly factory: RingFactory,
  ) {}

  /** Is the ring open (for tests and leak checks)? */
  get ringOpen(): boolean {
    return this.engine !== null;
  }

  /** Buffers registered with the ring (for tests and leak checks). */
  get bufferCount(): number {
    return this.engine?.bufferCount ?? 0;
  }

  acquire(): FileEngine {
    let e = this.engine;
    if (e === null) {
      const ring = this.factory(RING_ENTRIES, MAX_IOV_PER_IO);
      if (this.wantCompletionFd && ring.completionFd !== undefined) {
        try {
          this.completionFd = ring.completionFd();
        } catch (err) {
          ring.close();
          throw err;
        }
      }
      e = new FileEngine(this.kind, ring);
      this.engine = e;
      logger.info('file ring created', { engine: ENGINE_LABEL[this.kind], entries: e.depth });
    }
    e.attach();
    return e;
  }

  release(e: FileEngine): void {
    if (!e.detach() || this.engine !== e) return;
    this.engine = null;
    this.completionFd = -1;
    e.ring.close();
  }

  enableCompletionFds(): void {
    this.wantCompletionFd = true;
    const e = this.engine;
    // A ring made before: its eventfd from now on (AIO: iocbs already in the kernel signal nothing; the sleep timeout bounds that once).
    if (e !== null && this.completionFd < 0 && e.ring.completionFd !== undefined) this.completionFd = e.ring.completionFd();
  }

  completionFds(out: number[]): void {
    if (this.completionFd >= 0) out.push(this.completionFd);
  }

  setCompletionNotify(on: boolean): void {
    if (this.completionFd >= 0) this.engine?.ring.setCompletionNotify?.(on);
  }

  /** May the worker sleep with this ring's I/Os in the kernel? Not with requests the kernel has not taken yet, nor without a completion eventfd. */
  sleepReady(): boolean {
    const e = this.engine;
    return e === null || (e.stagedCount === 0 && this.completionFd >= 0);
  }

  forgetBuffers(views: readonly Uint8Array[]): void {
    this.engine?.forgetBuffers(views);
  }

  close(): void {
    // Every channel released the ring before the module's last bdev closed.
    if (this.engine !== null) throw new Error(`${this.kind} ring still used by ${this.engine.channelCount} channels at close`);
  }
}

/** What a file bdev needs from its BdevDesc: its geometry and its backing file (FileBdevDesc). */
export interface FileBdevConfig extends FileBdevDesc {
  name: string;
  blockSize: number;
  numBlocks: number;
}

/** The worker side of a BdevDesc of module 'uring' or 'aio' (params: FileBdevDesc). */
export function fileConfigOf(desc: BdevDesc): FileBdevConfig {
  const f = desc.params as FileBdevDesc | undefined;
  if (f === undefined || f === null || typeof f !== 'object') throw new RangeError(`${desc.module} bdev ${desc.name} has no file description`);
  if (!Number.isInteger(f.fd) || f.fd < 0) throw new RangeError(`${desc.module} bdev ${desc.name}: bad fd ${f.fd}`);
  return { ...f, name: desc.name, blockSize: desc.blockSize, numBlocks: desc.numBlocks };
}

export class FileBdev implements Bdev {
  readonly name: string;
  readonly blockSize: number;
  /** Changes with resize() (bdev_rbd_resize; file bdevs have no resize method). */
  numBlocks: number;
  /** The inline-I/O notice was logged (once per bdev, not per channel). */
  inlineNoted = false;

  private readonly ioTypes: IoTypeSet;

  constructor(
    readonly config: FileBdevConfig,
    private readonly state: FileRingState,
  ) {
    const kind = state.kind;
    const { name, blockSize, numBlocks } = config;
    if (!Number.isInteger(blockSize) || blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) {
      throw new RangeError(`${kind} bdev ${name}: blockSize must be a power of 2 >= 512, got ${blockSize}`);
    }
    if (!Number.isSafeInteger(numBlocks) || numBlocks < 1 || !Number.isSafeInteger(numBlocks * blockSize)) {
      throw new RangeError(`${kind} bdev ${name}: numBlocks must be a positive integer, got ${numBlocks}`);
    }
    this.name = name;
    this.blockSize = blockSize;
    this.numBlocks = numBlocks;
    this.ioTypes = fileIoTypes(config);
  }

  get kind(): FileEngineKind {
    return this.state.kind;
  }

  ioTypeSupported(type: BdevIoType): boolean {
    return ioTypeIn(this.ioTypes, type);
  }

  createChannel(): BdevChannel {
    return new FileChannel(this, this.state);
  }

  /** The store grew (the reactor resized it first): I/O is checked against the new size from now on. */
  resize(numBlocks: number): void {
    if (!Number.isSafeInteger(numBlocks) || numBlocks < 1 || !Number.isSafeInteger(numBlocks * this.blockSize)) {
      throw new RangeError(`${this.kind} bdev ${this.name}: numBlocks must be a positive integer, got ${numBlocks}`);
    }
    this.numBlocks = numBlocks;
  }

  destroy(): void {
    // The fds belong to the reactor; channels released the ring slots.
  }
}

class FileChannel implements BdevChannel {
  readonly directSlot: number;
  readonly bufferedSlot: number;
  private readonly engine: FileEngine;
  private readonly done = new CompletionQueue();
  private readonly waiting = new Fifo<BdevIo>();
  private inflight = 0;
  private zeroRange = true;
  private bufferedNoted = false;
  private errors = 0;
  private destroyed = false;

  constructor(
    readonly bdev: FileBdev,
    private readonly state: FileRingState,
  ) {
    const c = bdev.config;
    const engine = state.acquire();
    this.engine = engine;
    let direct = -1;
    let buffered = -1;
    try {
      direct = engine.allocFileSlot(c.fd);
      if (c.direct && c.bufferedFd >= 0) buffered = engine.allocFileSlot(c.bufferedFd);
    } catch (err) {
      engine.freeFileSlot(direct);
      state.release(engine);
      throw err;
    }
    this.directSlot = direct;
    this.bufferedSlot = buffered;
    if (!bdev.inlineNoted && engine.ring.fileInline?.(direct) === true) {
      bdev.inlineNoted = true;
      logger.notice('file on a memory file system without non-blocking reads: I/O runs inline in the engine thread (io_uring would hand each request to an io-wq worker)', {
        bdev: bdev.name,
      });
    }
  }

  get outstanding(): number {
    return this.waiting.length + this.inflight + this.done.length;
  }

  /**
   * Nothing to deliver and every I/O either in the kernel (which signals the
   * ring's completion eventfd) or waiting in the channel for a slot that only
   * such a completion frees.
   */
  sleepReady(): boolean {
    if (this.done.length > 0 || !this.state.sleepReady()) return false;
    return this.waiting.length === 0 || this.inflight >= CHANNEL_DEPTH || this.engine.freeTagCount === 0;
  }

  submit(io: BdevIo): void {
    const bdev = this.bdev;
    if (this.destroyed || !bdev.ioTypeSupported(io.type) || !ioIsValid(bdev, io)) {
      this.done.complete(io, BdevIoStatus.Failed);
      return;
    }
    if ((io.type === BdevIoType.Read || io.type === BdevIoType.Write) && io.numBlocks === 0) {
      this.done.complete(io, BdevIoStatus.Success);
      return;
    }
    this.waiting.push(io);
  }

  poll(): number {
    const engine = this.engine;
    while (this.waiting.length > 0 && this.inflight < CHANNEL_DEPTH && engine.freeTagCount > 0) {
      const io = this.waiting.shift();
      this.inflight++;
      if (!engine.start(this, io)) {
        this.inflight--;
        this.noteRefused(io);
        this.done.complete(io, BdevIoStatus.Failed);
      }
    }
    engine.flush();
    return this.done.reap();
  }

  destroy(): void {
    if (this.destroyed) return;
    if (this.outstanding !== 0) throw new Error(`${this.bdev.kind} bdev ${this.bdev.name}: channel destroyed with ${this.outstanding} I/Os outstanding`);
    this.destroyed = true;
    const engine = this.engine;
    engine.freeFileSlot(this.directSlot);
    engine.freeFileSlot(this.bufferedSlot);
    this.state.release(engine);
  }

  /** The ring operation for a (validated) I/O. */
  opFor(io: BdevIo): number {
    switch (io.type) {
      case BdevIoType.Read:
        return FileOp.Readv;
      case BdevIoType.Write:
        return FileOp.Writev;
      case BdevIoType.Flush:
        return FileOp.Datasync;
      case BdevIoType.Unmap:
        return this.bdev.config.blockDevice ? FileOp.BlkDiscard : FileOp.Fallocate;
      default:
        if (this.bdev.config.blockDevice) return FileOp.BlkZeroout;
        return this.zeroRange ? FileOp.Fallocate : FileOp.PunchAlloc;
    }
  }

  /** Called by the engine when an I/O of this channel is final. */
  finished(io: BdevIo, status: BdevIoStatus): void {
    this.inflight--;
    this.done.complete(io, status);
  }

  noteBuffered(): void {
    if (this.bufferedNoted) return;
    this.bufferedNoted = true;
    logger.notice('O_DIRECT refused a request (buffer alignment); such requests go through the page cache', {
      bdev: this.bdev.name,
    });
  }

  noteNoZeroRange(): void {
    if (!this.zeroRange) return;
    this.zeroRange = false;
    logger.notice('FALLOC_FL_ZERO_RANGE not supported here; write zeroes = punch hole + allocate', { bdev: this.bdev.name });
  }

  noteError(io: BdevIo, errno: number): void {
    this.logError('I/O failed', { error: errnoName(errno), type: io.type, offsetBlocks: io.offsetBlocks, numBlocks: io.numBlocks });
  }

  noteShort(io: BdevIo, doneBytes: number, totalBytes: number): void {
    this.logError('I/O reached end of file', { type: io.type, offsetBlocks: io.offsetBlocks, doneBytes, totalBytes });
  }

  private noteRefused(io: BdevIo): void {
    this.logError('I/O refused (too many segments or guest buffers)', { type: io.type, segments: io.iovCount });
  }

  private logError(msg: string, fields: Record<string, unknown>): void {
    const n = ++this.errors;
    if (n <= ERROR_LOG_LIMIT || n % 1024 === 0) logger.warn(msg, { bdev: this.bdev.name, engine: this.bdev.kind, count: n, ...fields });
  }
}
