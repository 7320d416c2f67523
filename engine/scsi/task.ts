/**
 * One SCSI command in flight: what the transport gives (CDB, I_T nexus, data
 * direction, the data buffers as a scatter list) and what the target gives
 * back (status, fixed-format sense data, bytes transferred, residual). A
 * transport keeps one ScsiTask per request slot and reuses it: nothing here
 * allocates per command on the READ/WRITE path (the scratch buffer for
 * WRITE SAME, VERIFY, COMPARE AND WRITE and UNMAP is made the first time a
 * slot needs it, then kept).
 *
 * Thread: the engine worker that owns the transport's queue.
 */
import { BdevIo, BdevIoType } from '../bdev/bdev';
import { copyBytes } from '../bytes';
import { ScsiDataDir, ScsiResidual, ScsiStatus, SENSE_BUFFER_BYTES, SENSE_FIXED_BYTES, type SenseKey } from './spec';

/** Bytes of a task's scratch buffer (WRITE SAME pattern, VERIFY/COMPARE reads, UNMAP descriptors). */
export const SCRATCH_BYTES = 64 * 1024;

/** What the LUN executing a task is told when the task's bdev I/O completes. */
export interface TaskOwner {
  ioDone(task: ScsiTask): void;
}

/** The bdev I/O a task uses (one at a time; reused for every step of a multi-I/O command). */
export class ScsiBdevIo extends BdevIo {
  constructor(
    capacity: number,
    private readonly task: ScsiTask,
  ) {
    super(capacity);
  }

  override done(): void {
    const owner = this.task.owner;
    if (owner !== null) owner.ioDone(this.task);
  }
}

/**
 * A SCSI task. The transport subclasses it (done() is its completion), and
 * for each command: reset(), copy the CDB into `cdb` and set `cdbLength`,
 * set `nexus` and `dir`, addIov() each data buffer, then hand it to
 * ScsiTarget.execute() (or ScsiLun.execute()). done() is called exactly
 * once per command, possibly before execute() returns (commands that need
 * no bdev I/O complete synchronously).
 */
export abstract class ScsiTask {
  /** The CDB; only the first cdbLength bytes are meaningful. */
  readonly cdb = new Uint8Array(32);
  /** The CDB's bytes as a DataView (big-endian fields in one read each). */
  readonly cdbView = new DataView(this.cdb.buffer);
  cdbLength = 0;
  /** Which I_T nexus sent the command (the transport's number for initiator port + target port). */
  nexus = 0;
  dir: ScsiDataDir = ScsiDataDir.None;
  /** Data buffers added for this command (addIov). */
  iovCount = 0;
  /** Their total bytes, kept by addIov. */
  iovBytes = 0;
  /**
   * The task's own copy of the data buffers, for the generic path: begin()
   * copies them here from the bdev I/O's scatter list, where addIov() puts
   * them (see addIov). Valid from begin() to completion.
   */
  readonly iovBuf: Uint8Array[];
  readonly iovOff: Float64Array;
  readonly iovLen: Uint32Array;

  // ---- results (valid in done()) ----
  status: ScsiStatus = ScsiStatus.Good;
  /** Fixed-format sense data (senseLength bytes, 0 when none). */
  readonly sense = new Uint8Array(SENSE_BUFFER_BYTES);
  senseLength = 0;
  /** Bytes moved to or from the buffers. */
  transferred = 0;
  /** Bytes of difference between the buffers and what the command called for (see residualKind). */
  residual = 0;
  residualKind: ScsiResidual = ScsiResidual.None;

  // ---- the LUN's working state (not for transports) ----
  /** The LUN executing the task, between execute() and completion. */
  owner: TaskOwner | null = null;
  readonly io: ScsiBdevIo;
  scratch: Uint8Array | null = null;
  /** Total bytes of the buffers (computed at execute). */
  bufferBytes = 0;
  /** Bytes the CDB called for (transfer length or allocation length clipped to the data available). */
  wantBytes = 0;
  phase = 0;
  lba = 0;
  blocks = 0;
  /** Progress of a multi-step command (bytes or descriptors done). */
  cursor = 0;
  /** Steps of a multi-step command (descriptor count...). */
  steps = 0;
  fua = false;
  /** When the command was handed to the target (the worker's clock, ms): the bdev I/O's submission stamp. */
  nowMs = 0;

  constructor(readonly iovCapacity: number) {
    const empty = new Uint8Array(0);
    this.iovBuf = new Array<Uint8Array>(iovCapacity).fill(empty);
    this.iovOff = new Float64Array(iovCapacity);
    this.iovLen = new Uint32Array(iovCapacity);
    this.io = new ScsiBdevIo(iovCapacity, this);
  }

  /**
   * Start a new command in this object: no buffers, no CDB. (The results
   * are the target's to set: it clears them when it starts the command,
   * or, on the READ/WRITE fast path, sets every one at completion.)
   */
  reset(): void {
    this.cdbLength = 0;
    this.iovCount = 0;
    this.iovBytes = 0;
    this.dir = ScsiDataDir.None;
  }

  /**
   * Set a 16-byte CDB from bytes [off, off+16) of `src` (every CDB but the
   * variable-length 7Fh: SPC-4 §4.2.5.1): the transports' per-command copy,
   * four 32-bit moves.
   */
  setCdb16(src: DataView, off: number): void {
    const v = this.cdbView;
    v.setUint32(0, src.getUint32(off));
    v.setUint32(4, src.getUint32(off + 4));
    v.setUint32(8, src.getUint32(off + 8));
    v.setUint32(12, src.getUint32(off + 12));
    this.cdbLength = 16;
  }

  /** Set a 16-byte CDB from four big-endian words (bytes 0-3, 4-7, 8-11, 12-15) a transport read once. */
  setCdbWords(w0: number, w1: number, w2: number, w3: number): void {
    const v = this.cdbView;
    v.setUint32(0, w0);
    v.setUint32(4, w1);
    v.setUint32(8, w2);
    v.setUint32(12, w3);
    this.cdbLength = 16;
  }

  /** Set the CDB from `src[off..off+len)` (at most 32 bytes kept). */
  setCdb(src: Uint8Array | readonly number[], off = 0, len = src.length - off): void {
    const n = Math.min(len, this.cdb.length);
    for (let i = 0; i < n; i++) this.cdb[i] = src[off + i];
    this.cdbLength = n;
  }

  /**
   * Append one data buffer; false when iovCapacity is exhausted. The
   * buffers go straight into the task's bdev I/O's scatter list (the same
   * capacity): a READ/WRITE whose buffers are exactly its transfer (the fast
   * path, ScsiLun.fastReadWrite) is submitted with them as they are, no
   * second copy. Every other command starts with begin(), which copies them
   * into the task's own iovBuf/iovOff/iovLen before the I/O is reused.
   */
  addIov(buf: Uint8Array, offset: number, len: number): boolean {
    const n = this.iovCount;
    if (n >= this.iovCapacity) return false;
    const io = this.io;
    // Usually the same buffer as last time (a transport's buffers are views of a few guest memory
    // regions): a compare instead of a pointer store and its write barrier.
    if (io.iovBuf[n] !== buf) io.iovBuf[n] = buf;
    io.iovOff[n] = offset;
    io.iovLen[n] = len;
    this.iovCount = n + 1;
    this.iovBytes += len;
    return true;
  }

  /** The transport's completion: results are final. */
  abstract done(): void;

  /**
   * Work out the residual from wantBytes and bufferBytes, then call done().
   * Called by the target once per command.
   */
  finish(): void {
    const want = this.wantBytes;
    const have = this.bufferBytes;
    if (have > want) {
      this.residualKind = ScsiResidual.Underflow;
      this.residual = have - want;
    } else if (have < want) {
      this.residualKind = ScsiResidual.Overflow;
      this.residual = want - have;
    } else {
      this.residualKind = ScsiResidual.None;
      this.residual = 0;
    }
    this.owner = null;
    this.done();
  }

  /**
   * Begin executing on the generic path: clear the results, take the
   * buffers (from the bdev I/O's scatter list, where addIov put them, into
   * the task's own iovBuf/iovOff/iovLen: the I/O may then be pointed
   * elsewhere). The submission time is `nowMs` (the field, set by
   * execute(); a double passed on as an argument would be boxed into a new
   * heap number per command).
   */
  begin(owner: TaskOwner | null): void {
    this.owner = owner;
    this.status = ScsiStatus.Good;
    this.senseLength = 0;
    this.transferred = 0;
    this.residual = 0;
    this.residualKind = ScsiResidual.None;
    this.wantBytes = 0;
    const io = this.io;
    const n = this.iovCount;
    for (let i = 0; i < n; i++) {
      this.iovBuf[i] = io.iovBuf[i];
      this.iovOff[i] = io.iovOff[i];
      this.iovLen[i] = io.iovLen[i];
    }
    this.bufferBytes = this.iovBytes;
  }

  /** Bytes of buffers usable for a data phase in direction `dir` (buffers of the other direction count as none). */
  usable(dir: ScsiDataDir): number {
    return this.dir === dir ? this.bufferBytes : 0;
  }

  /**
   * A data-in answer: `avail` bytes of `src` from its start, of which the
   * CDB allows `allocLen`: copies what the buffers hold.
   */
  dataIn(src: Uint8Array, avail: number, allocLen: number): void {
    const want = Math.min(avail, allocLen);
    this.wantBytes = want;
    const room = this.usable(ScsiDataDir.FromDevice);
    this.transferred = this.scatter(src, 0, Math.min(want, room));
  }

  /** CHECK CONDITION with fixed-format sense data (SPC-4 §4.5.3). */
  checkCondition(key: SenseKey, asc: number, information = -1): void {
    this.status = ScsiStatus.CheckCondition;
    writeFixedSense(this.sense, key, asc, information);
    this.senseLength = SENSE_FIXED_BYTES;
  }

  /** A status without sense data (RESERVATION CONFLICT, BUSY). */
  setStatus(status: ScsiStatus): void {
    this.status = status;
    this.senseLength = 0;
  }

  /** Copy `len` bytes of `src` at `srcOff` into the buffers from their start; returns bytes copied (clipped to the buffers). */
  scatter(src: Uint8Array, srcOff: number, len: number): number {
    let left = len;
    let pos = srcOff;
    for (let i = 0; i < this.iovCount && left > 0; i++) {
      const n = Math.min(left, this.iovLen[i]);
      copyBytes(src, pos, this.iovBuf[i], this.iovOff[i], n);
      pos += n;
      left -= n;
    }
    return len - left;
  }

  /** Copy `len` bytes of the buffers, from byte `from` of their concatenation, into `dst` at `dstOff`; returns bytes copied. */
  gather(from: number, dst: Uint8Array, dstOff: number, len: number): number {
    let skip = from;
    let left = len;
    let pos = dstOff;
    for (let i = 0; i < this.iovCount && left > 0; i++) {
      const l = this.iovLen[i];
      if (skip >= l) {
        skip -= l;
        continue;
      }
      const n = Math.min(left, l - skip);
      copyBytes(this.iovBuf[i], this.iovOff[i] + skip, dst, pos, n);
      skip = 0;
      pos += n;
      left -= n;
    }
    return len - left;
  }

  /**
   * Compare `len` bytes of the buffers from byte `from` with `other` at
   * `otherOff`: the index (0-based, within this range) of the first
   * difference, or -1 when equal.
   */
  compare(from: number, other: Uint8Array, otherOff: number, len: number): number {
    let skip = from;
    let done = 0;
    for (let i = 0; i < this.iovCount && done < len; i++) {
      const l = this.iovLen[i];
      if (skip >= l) {
        skip -= l;
        continue;
      }
      const buf = this.iovBuf[i];
      const base = this.iovOff[i] + skip;
      const n = Math.min(len - done, l - skip);
      for (let k = 0; k < n; k++) {
        if (buf[base + k] !== other[otherOff + done + k]) return done + k;
      }
      skip = 0;
      done += n;
    }
    return -1;
  }

  /** Point the task's bdev I/O at `len` bytes of the buffers from byte `from`; false if they do not cover it. */
  mapData(type: BdevIoType, offsetBlocks: number, numBlocks: number, from: number, len: number): boolean {
    const io = this.io;
    io.prepare(type, offsetBlocks, numBlocks);
    let skip = from;
    let left = len;
    for (let i = 0; i < this.iovCount && left > 0; i++) {
      const l = this.iovLen[i];
      if (skip >= l) {
        skip -= l;
        continue;
      }
      const n = Math.min(left, l - skip);
      if (!io.addIov(this.iovBuf[i], this.iovOff[i] + skip, n)) return false;
      skip = 0;
      left -= n;
    }
    return left === 0;
  }

  /** The scratch buffer, made on first use. */
  scratchBuffer(): Uint8Array {
    let s = this.scratch;
    if (s === null) {
      s = new Uint8Array(SCRATCH_BYTES);
      this.scratch = s;
    }
    return s;
  }
}

/** Fixed-format sense data: current error, key, ASC/ASCQ, INFORMATION when `information` >= 0. */
export function writeFixedSense(sense: Uint8Array, key: SenseKey, asc: number, information = -1): void {
  sense.fill(0, 0, SENSE_FIXED_BYTES);
  sense[0] = information >= 0 ? 0xf0 : 0x70; // VALID bit with INFORMATION; response code 70h (current, fixed)
  sense[2] = key & 0x0f;
  if (information >= 0) {
    sense[3] = (information >>> 24) & 0xff;
    sense[4] = (information >>> 16) & 0xff;
    sense[5] = (information >>> 8) & 0xff;
    sense[6] = information & 0xff;
  }
  sense[7] = SENSE_FIXED_BYTES - 8; // additional sense length
  sense[12] = (asc >> 8) & 0xff;
  sense[13] = asc & 0xff;
}
