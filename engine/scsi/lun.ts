/**
 * A SCSI logical unit over one bdev (SBC-3 direct-access block device), after
 * SPDK's lib/scsi (lun.c, scsi_bdev.c, scsi_pr.c): a function from a task
 * (CDB, I_T nexus, data buffers) and the bdev to status, sense data and
 * residual. It knows nothing of virtio; a transport (virtio-scsi) gives it
 * ScsiTasks and reads the results in their done().
 *
 * - Commands that need no media I/O complete inside execute(); media
 *   commands go through the worker's bdev layer and complete from its
 *   poll(). READ/WRITE (6/10/12/16) allocate nothing: the task's own BdevIo
 *   points straight at the task's buffers.
 * - Unit attention conditions are kept per I_T nexus (power on for a nexus's
 *   first command, capacity change on bdev resize, reset, mode change, LUN
 *   inventory change), reported one at a time, highest priority first.
 * - Reservations: see pr.ts.
 * - lunReset() / nexusReset() wait until every command of the LU has
 *   completed (bdev I/O cannot be recalled), then reset state and call back.
 *
 * Thread: the engine worker that owns the device; the bdev handle is that
 * worker's.
 */
import { BdevIoStatus, BdevIoType } from '../bdev/bdev';
import type { BdevHandle, BdevLayer, BdevUser } from '../bdev/layer';
import type { BdevDesc } from '../control';
import { PR_OUT_PARAM_BYTES, Reservations } from './pr';
import { Asc, cdbLengthOf, Op, SAI_READ_CAPACITY_16, ScsiDataDir, ScsiResidual, ScsiStatus, SenseKey } from './spec';
import { SCRATCH_BYTES, type ScsiTask, type TaskOwner } from './task';
import { be16, be24, be32, be64, fnv1a64, putAscii, putBe16, putBe32, putBe64, putLun } from './wire';

export interface ScsiLunOptions {
  /**
   * What identifies the LU across restarts (the bdev's UUID, or its name):
   * VPD page 80 (serial) and the designators of page 83 derive from it.
   * Default: the bdev's name.
   */
  identifier?: string;
  /** INQUIRY T10 vendor (8 bytes). */
  vendor?: string;
  /** INQUIRY product (16 bytes). */
  product?: string;
  /** INQUIRY product revision (4 bytes). */
  revision?: string;
  /** Refuse every command that changes the medium (DATA PROTECT / WRITE PROTECTED). */
  readonly?: boolean;
  /** A nexus's first command gets POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (default true). */
  powerOnUnitAttention?: boolean;
  /** Largest READ/WRITE in bytes (Block Limits MAXIMUM TRANSFER LENGTH); default 4 MiB. */
  maxTransferBytes?: number;
}

/** Unit attention conditions, lowest bit = highest priority. */
export const enum UnitAttention {
  PowerOn = 1 << 0,
  LunReset = 1 << 1,
  NexusLoss = 1 << 2,
  ModeChanged = 1 << 3,
  CapacityChanged = 1 << 4,
  LunsChanged = 1 << 5,
}
/** The 29h family: reporting one clears them all. */
const UA_RESET_FAMILY = UnitAttention.PowerOn | UnitAttention.LunReset | UnitAttention.NexusLoss;

function uaAsc(bit: number): number {
  switch (bit) {
    case UnitAttention.PowerOn:
      return Asc.PowerOnResetOccurred;
    case UnitAttention.LunReset:
      return Asc.BusDeviceResetOccurred;
    case UnitAttention.NexusLoss:
      return Asc.ItNexusLossOccurred;
    case UnitAttention.ModeChanged:
      return Asc.ModeParametersChanged;
    case UnitAttention.CapacityChanged:
      return Asc.CapacityDataHasChanged;
    default:
      return Asc.ReportedLunsDataHasChanged;
  }
}

/** Steps of a media command in flight (ScsiTask.phase). */
const enum Phase {
  Read = 1,
  Write = 2,
  /** Write done → flush (FUA, or write cache disabled). */
  WriteThenFlush = 3,
  Flush = 4,
  UnmapList = 5,
  /** One bdev Unmap or WriteZeroes for a whole WRITE SAME. */
  WriteSameOne = 6,
  WriteSameChunks = 7,
  VerifyChunks = 8,
  CompareRead = 9,
  CompareWrite = 10,
  /** READ/WRITE of the fast path (buffers exactly the transfer, results not yet cleared: set at completion). */
  FastRead = 11,
  FastWrite = 12,
}

const DEFAULT_MAX_TRANSFER_BYTES = 4 * 1024 * 1024;
/** Largest UNMAP descriptor / WRITE SAME in bytes (keeps a malloc bdev's fill or a file's fallocate bounded). */
const MAX_UNMAP_BYTES = 256 * 1024 * 1024;
/** Most block descriptors in one UNMAP parameter list. */
export const MAX_UNMAP_DESCRIPTORS = 256;
/** Largest COMPARE AND WRITE in bytes (it reads into the task's scratch buffer). */
const MAX_COMPARE_BYTES = 64 * 1024;
/** Largest MODE SELECT parameter list accepted. */
const MAX_MODE_SELECT_BYTES = 512;
const RESPONSE_BYTES = 4096;

/** A mode page's bytes for MODE SENSE (page control: 0 current, 1 changeable, 2 default). */
const MODE_CACHING = 0x08;
const MODE_CONTROL = 0x0a;
const MODE_INFO_EXCEPTIONS = 0x1c;
const MODE_ALL = 0x3f;

export class ScsiLun implements BdevUser, TaskOwner {
  readonly handle: BdevHandle;
  readonly identifier: string;
  readonly readonly: boolean;
  /** Commands executing (between execute() and their done()). */
  outstanding = 0;
  readonly reservations = new Reservations();
  /** Write cache enabled (the caching mode page's WCE): when false, writes are followed by a flush. */
  wce: boolean;
  private readonly defaultWce: boolean;
  private readonly vendor: string;
  private readonly product: string;
  private readonly revision: string;
  private readonly powerOnUa: boolean;
  private readonly maxTransferBlocks: number;
  private readonly canFlush: boolean;
  private readonly canUnmap: boolean;
  private readonly canWriteZeroes: boolean;
  /** Pending unit attentions per I_T nexus (bit set of UnitAttention). */
  private readonly ua = new Map<number, number>();
  private readonly resp = new Uint8Array(RESPONSE_BYTES);
  private readonly param = new Uint8Array(MAX_MODE_SELECT_BYTES);
  private readonly naa: [number, number];
  /** Reset completions waiting for outstanding commands. */
  private waiters: (() => void)[] = [];
  private closed = false;
  private removed = false;
  /**
   * The nexus known to have no unit attention pending (its entry exists and
   * is 0), or -1: the fast path (fastReadWrite) runs only for it. Set when
   * takeUnitAttention finds nothing; reset whenever a unit attention is
   * raised or the LU is removed.
   */
  private fastNexus = -1;
  /** The bdev's size and block size for the fast path (no getter chain through the handle per command); bdevResized keeps the size. */
  private fastNumBlocks: number;
  private readonly fastBlockSize: number;

  constructor(
    readonly id: number,
    layer: BdevLayer,
    desc: BdevDesc,
    options: ScsiLunOptions = {},
    nowMs = 0,
  ) {
    if (!Number.isInteger(id) || id < 0 || id > 16383) throw new RangeError(`scsi lun: id must be an integer 0-16383, got ${id}`);
    const maxTransferBytes = options.maxTransferBytes ?? DEFAULT_MAX_TRANSFER_BYTES;
    if (!Number.isInteger(maxTransferBytes) || maxTransferBytes < desc.blockSize) {
      throw new RangeError(`scsi lun: options.maxTransferBytes must be an integer of at least one block, got ${maxTransferBytes}`);
    }
    this.handle = layer.open(desc, this, nowMs);
    this.identifier = options.identifier ?? desc.name;
    this.readonly = options.readonly ?? false;
    this.vendor = options.vendor ?? 'VHOSTD';
    this.product = options.product ?? 'Virtual Disk';
    this.revision = options.revision ?? '0001';
    this.powerOnUa = options.powerOnUnitAttention ?? true;
    this.maxTransferBlocks = Math.floor(maxTransferBytes / desc.blockSize);
    this.canFlush = this.handle.ioTypeSupported(BdevIoType.Flush);
    this.canUnmap = this.handle.ioTypeSupported(BdevIoType.Unmap);
    this.canWriteZeroes = this.handle.ioTypeSupported(BdevIoType.WriteZeroes);
    this.defaultWce = this.canFlush;
    this.wce = this.defaultWce;
    this.naa = fnv1a64(this.identifier);
    this.fastNumBlocks = this.handle.numBlocks;
    this.fastBlockSize = this.handle.blockSize;
  }

  get blockSize(): number {
    return this.handle.blockSize;
  }

  get numBlocks(): number {
    return this.handle.numBlocks;
  }

  /** Give the bdev back (only when no command is outstanding). */
  close(): void {
    if (this.closed) return;
    this.handle.close();
    this.closed = true;
  }

  /**
   * Hot-remove: from now on new commands end with ABORTED COMMAND (as SPDK's
   * removed LU does); I/O already at the bdev completes normally (an
   * acknowledged write is never lost), I/O held by QoS goes at once; when
   * the last command has completed the bdev is closed and `done` called.
   */
  remove(done: () => void): void {
    this.removed = true;
    this.fastNexus = -1;
    this.handle.drain();
    this.whenIdle(() => {
      this.close();
      done();
    });
  }

  // ---------------------------------------------------------------- events

  /** bdev layer: the bdev was resized: CAPACITY DATA HAS CHANGED for every nexus. */
  bdevResized(numBlocks: number): void {
    this.fastNumBlocks = numBlocks;
    this.raiseUnitAttention(UnitAttention.CapacityChanged);
  }

  /** Set a unit attention for one nexus, or every nexus that has talked to this LU (`nexus` undefined). */
  raiseUnitAttention(bit: UnitAttention, nexus?: number, except?: number): void {
    this.fastNexus = -1;
    if (nexus !== undefined) {
      this.ua.set(nexus, (this.ua.get(nexus) ?? (this.powerOnUa ? UnitAttention.PowerOn : 0)) | bit);
      return;
    }
    for (const [n, bits] of this.ua) if (n !== except) this.ua.set(n, bits | bit);
  }

  /** Clear one unit attention of a nexus (REPORT LUNS clears LunsChanged). */
  clearUnitAttention(bit: UnitAttention, nexus: number): void {
    const bits = this.ua.get(nexus);
    if (bits !== undefined) this.ua.set(nexus, bits & ~bit);
  }

  /** Pending unit attentions of a nexus (for tests and statistics). */
  pendingUnitAttention(nexus: number): number {
    return this.ua.get(nexus) ?? (this.powerOnUa ? UnitAttention.PowerOn : 0);
  }

  /**
   * LOGICAL UNIT RESET: once every outstanding command has completed, drop an
   * SPC-2 reservation, restore default mode parameters, raise a reset unit
   * attention for every nexus, then call `done`.
   */
  lunReset(done: () => void): void {
    this.whenIdle(() => {
      this.reservations.lunReset();
      this.wce = this.defaultWce;
      this.raiseUnitAttention(UnitAttention.LunReset);
      done();
    });
  }

  /** I_T NEXUS RESET for `nexus`: once idle, drop its SPC-2 reservation, raise I_T NEXUS LOSS for it, call `done`. */
  nexusReset(nexus: number, done: () => void): void {
    this.whenIdle(() => {
      this.reservations.nexusReset(nexus);
      this.ua.set(nexus, this.pendingUnitAttention(nexus) | UnitAttention.NexusLoss);
      this.fastNexus = -1;
      done();
    });
  }

  private whenIdle(fn: () => void): void {
    if (this.outstanding === 0) fn();
    else this.waiters.push(fn);
  }

  // ------------------------------------------------------------- execution

  /**
   * Execute `task`, submitted at `nowMs` (default: the task's nowMs as the
   * transport set it). task.done() is called exactly once, from inside this
   * call (no media I/O) or from the bdev layer's poll().
   */
  execute(task: ScsiTask, nowMs?: number): void {
    if (nowMs !== undefined) task.nowMs = nowMs;
    if (task.nexus === this.fastNexus && this.fastReadWrite(task)) return;
    this.outstanding++;
    task.begin(this);
    if (this.dispatch(task)) return;
    this.complete(task);
  }

  /**
   * The fast path of READ 10/16 and WRITE 10/16 that go to the bdev: for a
   * nexus with no unit attention pending (fastNexus), an LU not removed nor
   * reserved, a CDB with no protection field, a range on the medium within
   * the transfer limit, and buffers in the command's direction that are
   * exactly the transfer. Then the outcome is the one dispatch() would
   * reach, with none of its generic steps (begin()'s copy of the buffers,
   * CDB length table, unit attention map, reservation rules, the opcode
   * switch): the bdev I/O goes out with the scatter list addIov() built in
   * it, and its completion (ioDone, Phase.FastRead/FastWrite) goes straight
   * to task.done(). Returns false, having changed nothing, for anything
   * else: execute() then runs the generic path, which gives any error its
   * sense data.
   */
  private fastReadWrite(task: ScsiTask): boolean {
    const cdb = task.cdb;
    const op = cdb[0];
    let lba: number;
    let blocks: number;
    let write: boolean;
    const v = task.cdbView;
    if (op === Op.Read16 || op === Op.Write16) {
      if (task.cdbLength < 16) return false;
      lba = v.getUint32(2) * 0x1_0000_0000 + v.getUint32(6);
      blocks = v.getUint32(10);
      write = op === Op.Write16;
    } else if (op === Op.Read10 || op === Op.Write10) {
      if (task.cdbLength < 10) return false;
      lba = v.getUint32(2);
      blocks = v.getUint16(7);
      write = op === Op.Write10;
    } else {
      return false;
    }
    return this.fastStart(task, write, cdb[1], lba, blocks);
  }

  /**
   * The transport's direct entry to the fast path: a READ 10/16 (`write`
   * false) or WRITE 10/16 (`write` true) that the transport decoded itself
   * (`flags` CDB byte 1, `lba`, `blocks` the transfer length), so that a
   * transport resolving its target and LUN once per request skips
   * ScsiTarget.execute() and execute() and their CDB copy. The same
   * conditions and outcome as fastReadWrite(): true when the command was
   * taken (task.done() follows from the bdev layer's poll(); task.cdb was
   * not read and may hold an older command), false, having changed
   * nothing, when it must go the generic way: the transport then sets the
   * CDB and calls ScsiTarget.execute(). The task is set up as for
   * execute() (reset(), nexus, dir, addIov(), nowMs).
   */
  readWriteFast(task: ScsiTask, write: boolean, flags: number, lba: number, blocks: number): boolean {
    return task.nexus === this.fastNexus && this.fastStart(task, write, flags, lba, blocks);
  }

  /** fastReadWrite() once the CDB is decoded (the checks of its comment; outstanding counted when taken). */
  private fastStart(task: ScsiTask, write: boolean, flags: number, lba: number, blocks: number): boolean {
    if ((flags & 0xe0) !== 0 || this.reservations.holder !== null) return false;
    // A write that must reach the medium before it completes (FUA, or the write cache off) takes the generic path's write-then-flush.
    if (write && (this.readonly || (this.canFlush && ((flags & 0x08) !== 0 || !this.wce)))) return false;
    const n = this.fastNumBlocks;
    if (blocks === 0 || blocks > this.maxTransferBlocks || lba > n || blocks > n - lba) return false;
    const want = blocks * this.fastBlockSize;
    const bytes = task.iovBytes;
    if (task.dir !== (write ? ScsiDataDir.ToDevice : ScsiDataDir.FromDevice) || bytes !== want) return false;
    task.owner = this;
    task.bufferBytes = bytes;
    task.wantBytes = want;
    const io = task.io;
    // The scatter list addIov() built in the I/O is the transfer: keep it (prepare() empties it).
    const count = task.iovCount;
    if (!write) {
      io.prepare(BdevIoType.Read, lba, blocks);
      task.phase = Phase.FastRead;
    } else {
      // (task.fua, which only the generic write-then-flush reads, is left alone.)
      io.prepare(BdevIoType.Write, lba, blocks);
      task.phase = Phase.FastWrite;
    }
    io.iovCount = count;
    this.outstanding++;
    this.handle.submit(io, task.nowMs);
    return true;
  }

  /** Finish a task: residual, done(), and any reset waiting for the LU to go idle. */
  private complete(task: ScsiTask): void {
    this.outstanding--;
    task.finish();
    if (this.outstanding === 0 && this.waiters.length > 0) this.wakeWaiters();
  }

  /** The LU went idle: run the resets waiting for it. */
  private wakeWaiters(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const fn of waiters) fn();
  }

  /** Run the command; true when it went to the bdev (completion comes later). */
  private dispatch(task: ScsiTask): boolean {
    const cdb = task.cdb;
    const opcode = cdb[0];
    const need = cdbLengthOf(opcode);
    if (this.removed) {
      task.checkCondition(SenseKey.AbortedCommand, Asc.NoAdditionalSense);
      return false;
    }
    if (task.cdbLength < 1 || task.cdbLength < need) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    if (opcode !== Op.Inquiry && opcode !== Op.ReportLuns && opcode !== Op.RequestSense) {
      const asc = this.takeUnitAttention(task.nexus);
      if (asc >= 0) {
        task.checkCondition(SenseKey.UnitAttention, asc);
        return false;
      }
    } else if (!this.ua.has(task.nexus)) {
      this.ua.set(task.nexus, this.powerOnUa ? UnitAttention.PowerOn : 0);
    }
    if (!this.reservations.check(task)) return false;
    switch (opcode) {
      case Op.TestUnitReady:
      case Op.StartStopUnit:
        return false;
      case Op.Inquiry:
        this.inquiry(task);
        return false;
      case Op.RequestSense:
        this.requestSense(task);
        return false;
      case Op.ReportLuns:
        reportLuns(task, [this.id], this.resp);
        return false;
      case Op.ReadCapacity10:
        this.readCapacity10(task);
        return false;
      case Op.ServiceActionIn16:
        if ((cdb[1] & 0x1f) !== SAI_READ_CAPACITY_16) {
          task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
          return false;
        }
        this.readCapacity16(task);
        return false;
      case Op.ModeSense6:
      case Op.ModeSense10:
        this.modeSense(task, opcode === Op.ModeSense10);
        return false;
      case Op.ModeSelect6:
      case Op.ModeSelect10:
        this.modeSelect(task, opcode === Op.ModeSelect10);
        return false;
      case Op.PersistentReserveIn:
        this.prIn(task);
        return false;
      case Op.PersistentReserveOut:
        this.prOut(task);
        return false;
      case Op.Reserve6:
      case Op.Reserve10:
        this.reservations.spc2Reserve(task);
        return false;
      case Op.Release6:
      case Op.Release10:
        this.reservations.spc2Release(task);
        return false;
      case Op.Read6:
        return this.readWrite(task, be24(cdb, 1) & 0x1fffff, cdb[4] === 0 ? 256 : cdb[4], false, false);
      case Op.Write6:
        return this.readWrite(task, be24(cdb, 1) & 0x1fffff, cdb[4] === 0 ? 256 : cdb[4], true, false);
      case Op.Read10:
      case Op.Write10:
        if (!this.noProtect(task)) return false;
        return this.readWrite(task, be32(cdb, 2), be16(cdb, 7), opcode === Op.Write10, (cdb[1] & 0x08) !== 0);
      case Op.Read12:
      case Op.Write12:
        if (!this.noProtect(task)) return false;
        return this.readWrite(task, be32(cdb, 2), be32(cdb, 6), opcode === Op.Write12, (cdb[1] & 0x08) !== 0);
      case Op.Read16:
      case Op.Write16:
        if (!this.noProtect(task)) return false;
        return this.readWrite(task, be64(cdb, 2), be32(cdb, 10), opcode === Op.Write16, (cdb[1] & 0x08) !== 0);
      case Op.Verify10:
        return this.verify(task, be32(cdb, 2), be16(cdb, 7));
      case Op.Verify16:
        return this.verify(task, be64(cdb, 2), be32(cdb, 10));
      case Op.SynchronizeCache10:
        return this.synchronizeCache(task, be32(cdb, 2), be16(cdb, 7));
      case Op.SynchronizeCache16:
        return this.synchronizeCache(task, be64(cdb, 2), be32(cdb, 10));
      case Op.WriteSame10:
        return this.writeSame(task, be32(cdb, 2), be16(cdb, 7), false);
      case Op.WriteSame16:
        return this.writeSame(task, be64(cdb, 2), be32(cdb, 10), (cdb[1] & 0x01) !== 0);
      case Op.Unmap:
        return this.unmap(task);
      case Op.CompareAndWrite:
        return this.compareAndWrite(task);
      default:
        task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidCommandOperationCode);
        return false;
    }
  }

  /** The highest-priority pending unit attention of `nexus` as an ASC, cleared; -1 if none. */
  private takeUnitAttention(nexus: number): number {
    let bits = this.ua.get(nexus);
    if (bits === undefined) bits = this.powerOnUa ? UnitAttention.PowerOn : 0;
    if (bits === 0) {
      if (!this.ua.has(nexus)) this.ua.set(nexus, 0);
      this.fastNexus = nexus;
      return -1;
    }
    const bit = bits & -bits;
    const clear = (bit & UA_RESET_FAMILY) !== 0 ? UA_RESET_FAMILY : bit;
    this.ua.set(nexus, bits & ~clear);
    return uaAsc(bit);
  }

  /** The data buffers either are absent or go the way the command moves data; else INVALID FIELD IN CDB. */
  private dirOk(task: ScsiTask, dir: ScsiDataDir): boolean {
    if (task.bufferBytes === 0 || task.dir === dir) return true;
    task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
    return false;
  }

  /** RDPROTECT/WRPROTECT must be 0: no protection information is offered. */
  private noProtect(task: ScsiTask): boolean {
    if ((task.cdb[1] & 0xe0) === 0) return true;
    task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
    return false;
  }

  private writeProtected(task: ScsiTask): boolean {
    if (!this.readonly) return false;
    task.checkCondition(SenseKey.DataProtect, Asc.WriteProtected);
    return true;
  }

  /** The range [lba, lba+blocks) lies on the medium; else LBA OUT OF RANGE. */
  private rangeOk(task: ScsiTask, lba: number, blocks: number): boolean {
    const n = this.handle.numBlocks;
    if (lba <= n && blocks <= n - lba) return true;
    task.checkCondition(SenseKey.IllegalRequest, Asc.LbaOutOfRange);
    return false;
  }

  private submit(task: ScsiTask, phase: Phase): true {
    task.phase = phase;
    this.handle.submit(task.io, task.nowMs);
    return true;
  }

  // ------------------------------------------------------------ media path

  private readWrite(task: ScsiTask, lba: number, blocks: number, write: boolean, fua: boolean): boolean {
    if (write && this.writeProtected(task)) return false;
    if (!this.rangeOk(task, lba, blocks)) return false;
    if (blocks > this.maxTransferBlocks) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    const bs = this.handle.blockSize;
    const want = blocks * bs;
    task.wantBytes = want;
    if (blocks === 0) return false;
    if (!this.dirOk(task, write ? ScsiDataDir.ToDevice : ScsiDataDir.FromDevice)) return false;
    if (task.bufferBytes < want || !task.mapData(write ? BdevIoType.Write : BdevIoType.Read, lba, blocks, 0, want)) {
      // The buffers cannot hold the transfer (residual: overflow).
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    if (!write) return this.submit(task, Phase.Read);
    task.fua = fua || !this.wce;
    return this.submit(task, task.fua && this.canFlush ? Phase.WriteThenFlush : Phase.Write);
  }

  private synchronizeCache(task: ScsiTask, lba: number, blocks: number): boolean {
    if (!this.rangeOk(task, lba, blocks)) return false;
    if (!this.canFlush) return false;
    task.io.prepare(BdevIoType.Flush, lba, blocks === 0 ? this.handle.numBlocks - lba : blocks);
    return this.submit(task, Phase.Flush);
  }

  /** VERIFY 10/16: BYTCHK 0 checks the range; 1 compares the data-out blocks; 3 compares one block with each. */
  private verify(task: ScsiTask, lba: number, blocks: number): boolean {
    const cdb = task.cdb;
    if ((cdb[1] & 0xe0) !== 0) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    const bytchk = (cdb[1] >> 1) & 0x03;
    if (bytchk === 2) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    if (!this.rangeOk(task, lba, blocks)) return false;
    if (bytchk === 0 || blocks === 0) return false;
    const bs = this.handle.blockSize;
    if (bs > SCRATCH_BYTES) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    const want = bytchk === 1 ? blocks * bs : bs;
    task.wantBytes = want;
    if (!this.dirOk(task, ScsiDataDir.ToDevice)) return false;
    if (task.bufferBytes < want) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    task.lba = lba;
    task.blocks = blocks;
    task.cursor = 0;
    task.steps = bytchk;
    return this.verifyNext(task);
  }

  private verifyNext(task: ScsiTask): true {
    const bs = this.handle.blockSize;
    const n = Math.min(task.blocks - task.cursor, Math.floor(SCRATCH_BYTES / bs));
    const io = task.io;
    io.prepare(BdevIoType.Read, task.lba + task.cursor, n);
    io.addIov(task.scratchBuffer(), 0, n * bs);
    return this.submit(task, Phase.VerifyChunks);
  }

  /** The chunk just read matches the data-out buffer? Sets MISCOMPARE and returns false if not. */
  private verifyChunk(task: ScsiTask): boolean {
    const bs = this.handle.blockSize;
    const n = task.io.numBlocks;
    const scratch = task.scratch as Uint8Array;
    if (task.steps === 1) {
      const at = task.compare(task.cursor * bs, scratch, 0, n * bs);
      if (at >= 0) {
        task.checkCondition(SenseKey.Miscompare, Asc.MiscompareDuringVerify, task.cursor * bs + at);
        return false;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const at = task.compare(0, scratch, i * bs, bs);
        if (at >= 0) {
          task.checkCondition(SenseKey.Miscompare, Asc.MiscompareDuringVerify, at);
          return false;
        }
      }
    }
    task.cursor += n;
    return true;
  }

  /** WRITE SAME 10/16 (UNMAP bit: unmap when the block is zeros and the bdev can; NDOB: zeros without data-out). */
  private writeSame(task: ScsiTask, lba: number, blocks: number, ndob: boolean): boolean {
    const cdb = task.cdb;
    if (this.writeProtected(task)) return false;
    // WRPROTECT, ANCHOR: not supported; PBDATA/LBDATA (obsolete): not supported.
    if ((cdb[1] & 0xf6) !== 0) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    if (!this.rangeOk(task, lba, blocks)) return false;
    const bs = this.handle.blockSize;
    // WSNZ is set in the Block Limits page: 0 blocks ("to the end of the medium") is refused.
    if (blocks === 0 || blocks * bs > MAX_UNMAP_BYTES || bs > SCRATCH_BYTES) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    const unmapBit = (cdb[1] & 0x08) !== 0;
    const scratch = task.scratchBuffer();
    let zero = true;
    if (ndob) {
      scratch.fill(0, 0, bs);
    } else {
      task.wantBytes = bs;
      if (!this.dirOk(task, ScsiDataDir.ToDevice)) return false;
      if (task.bufferBytes < bs) {
        task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
        return false;
      }
      task.gather(0, scratch, 0, bs);
      for (let i = 0; i < bs; i++) {
        if (scratch[i] !== 0) {
          zero = false;
          break;
        }
      }
    }
    if (zero && unmapBit && this.canUnmap) {
      task.io.prepare(BdevIoType.Unmap, lba, blocks);
      return this.submit(task, Phase.WriteSameOne);
    }
    if (zero && this.canWriteZeroes) {
      task.io.prepare(BdevIoType.WriteZeroes, lba, blocks);
      return this.submit(task, Phase.WriteSameOne);
    }
    // Fill the scratch buffer with copies of the block and write it chunk by chunk.
    const per = Math.min(blocks, Math.floor(SCRATCH_BYTES / bs));
    for (let i = 1; i < per; i++) scratch.copyWithin(i * bs, 0, bs);
    task.lba = lba;
    task.blocks = blocks;
    task.cursor = 0;
    return this.writeSameNext(task);
  }

  private writeSameNext(task: ScsiTask): true {
    const bs = this.handle.blockSize;
    const n = Math.min(task.blocks - task.cursor, Math.floor(SCRATCH_BYTES / bs));
    const io = task.io;
    io.prepare(BdevIoType.Write, task.lba + task.cursor, n);
    io.addIov(task.scratch as Uint8Array, 0, n * bs);
    task.cursor += n;
    return this.submit(task, Phase.WriteSameChunks);
  }

  /** UNMAP: the block descriptor list, one bdev Unmap per descriptor in order. */
  private unmap(task: ScsiTask): boolean {
    const cdb = task.cdb;
    if (!this.canUnmap) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidCommandOperationCode);
      return false;
    }
    if (this.writeProtected(task)) return false;
    if ((cdb[1] & 0x01) !== 0) {
      // ANCHOR: anchored LBAs are not supported.
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    const len = be16(cdb, 7);
    task.wantBytes = len;
    if (len === 0) return false;
    if (len < 8) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
      return false;
    }
    if (!this.dirOk(task, ScsiDataDir.ToDevice)) return false;
    if (task.bufferBytes < len) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    const p = task.scratchBuffer();
    const take = Math.min(len, 8 + MAX_UNMAP_DESCRIPTORS * 16 + 16);
    task.gather(0, p, 0, take);
    const descBytes = Math.min(be16(p, 2), len - 8);
    const count = Math.floor(descBytes / 16);
    if (count > MAX_UNMAP_DESCRIPTORS) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
      return false;
    }
    const maxBlocks = Math.floor(MAX_UNMAP_BYTES / this.handle.blockSize);
    for (let i = 0; i < count; i++) {
      const off = 8 + i * 16;
      const blocks = be32(p, off + 8);
      if (blocks > maxBlocks) {
        task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
        return false;
      }
      if (!this.rangeOk(task, be64(p, off), blocks)) return false;
    }
    task.transferred = len;
    task.steps = count;
    task.cursor = 0;
    return this.unmapNext(task);
  }

  /** Submit the next non-empty descriptor; false when none is left. */
  private unmapNext(task: ScsiTask): boolean {
    const p = task.scratch as Uint8Array;
    while (task.cursor < task.steps) {
      const off = 8 + task.cursor * 16;
      task.cursor++;
      const blocks = be32(p, off + 8);
      if (blocks === 0) continue;
      task.io.prepare(BdevIoType.Unmap, be64(p, off), blocks);
      return this.submit(task, Phase.UnmapList);
    }
    return false;
  }

  /** COMPARE AND WRITE: read n blocks, compare with the first n of the data-out buffer, then write the second n. */
  private compareAndWrite(task: ScsiTask): boolean {
    const cdb = task.cdb;
    if (this.writeProtected(task)) return false;
    if ((cdb[1] & 0xe0) !== 0) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    const lba = be64(cdb, 2);
    const blocks = cdb[13];
    if (!this.rangeOk(task, lba, blocks)) return false;
    const bs = this.handle.blockSize;
    const want = 2 * blocks * bs;
    task.wantBytes = want;
    if (blocks === 0) return false;
    if (blocks * bs > MAX_COMPARE_BYTES) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    if (!this.dirOk(task, ScsiDataDir.ToDevice)) return false;
    if (task.bufferBytes < want) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return false;
    }
    task.lba = lba;
    task.blocks = blocks;
    const io = task.io;
    io.prepare(BdevIoType.Read, lba, blocks);
    io.addIov(task.scratchBuffer(), 0, blocks * bs);
    return this.submit(task, Phase.CompareRead);
  }

  /** The bdev layer delivered the task's I/O: the next step, or the end. */
  ioDone(task: ScsiTask): void {
    const ok = task.io.status === BdevIoStatus.Success;
    const phase = task.phase as Phase;
    if (phase === Phase.FastRead || phase === Phase.FastWrite) {
      // The fast path's completion: buffers were exactly the transfer (no residual); straight to the transport.
      if (ok) {
        task.status = ScsiStatus.Good;
        task.senseLength = 0;
        task.transferred = task.wantBytes;
      } else {
        task.transferred = 0;
        task.checkCondition(SenseKey.MediumError, phase === Phase.FastRead ? Asc.UnrecoveredReadError : Asc.WriteError);
      }
      task.residual = 0;
      task.residualKind = ScsiResidual.None;
      task.owner = null;
      this.outstanding--;
      task.done();
      if (this.outstanding === 0 && this.waiters.length > 0) this.wakeWaiters();
      return;
    }
    switch (phase) {
      case Phase.Read:
        if (ok) task.transferred = task.wantBytes;
        else task.checkCondition(SenseKey.MediumError, Asc.UnrecoveredReadError);
        break;
      case Phase.Write:
        if (ok) task.transferred = task.wantBytes;
        else task.checkCondition(SenseKey.MediumError, Asc.WriteError);
        break;
      case Phase.WriteThenFlush: {
        if (!ok) {
          task.checkCondition(SenseKey.MediumError, Asc.WriteError);
          break;
        }
        task.transferred = task.wantBytes;
        const io = task.io;
        io.prepare(BdevIoType.Flush, io.offsetBlocks, io.numBlocks);
        this.submit(task, Phase.Flush);
        return;
      }
      case Phase.Flush:
      case Phase.WriteSameOne:
        if (!ok) task.checkCondition(SenseKey.MediumError, Asc.WriteError);
        else if (task.wantBytes > 0) task.transferred = task.wantBytes;
        break;
      case Phase.UnmapList:
        if (!ok) {
          task.checkCondition(SenseKey.MediumError, Asc.WriteError);
          break;
        }
        if (this.unmapNext(task)) return;
        break;
      case Phase.WriteSameChunks:
        if (!ok) {
          task.checkCondition(SenseKey.MediumError, Asc.WriteError);
          break;
        }
        if (task.cursor < task.blocks) {
          this.writeSameNext(task);
          return;
        }
        task.transferred = task.wantBytes;
        break;
      case Phase.VerifyChunks:
        if (!ok) {
          task.checkCondition(SenseKey.MediumError, Asc.UnrecoveredReadError);
          break;
        }
        if (!this.verifyChunk(task)) break;
        if (task.cursor < task.blocks) {
          this.verifyNext(task);
          return;
        }
        task.transferred = task.wantBytes;
        break;
      case Phase.CompareRead: {
        if (!ok) {
          task.checkCondition(SenseKey.MediumError, Asc.UnrecoveredReadError);
          break;
        }
        const len = task.blocks * this.handle.blockSize;
        const at = task.compare(0, task.scratch as Uint8Array, 0, len);
        if (at >= 0) {
          task.checkCondition(SenseKey.Miscompare, Asc.MiscompareDuringVerify, at);
          break;
        }
        if (!task.mapData(BdevIoType.Write, task.lba, task.blocks, len, len)) {
          task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
          break;
        }
        this.submit(task, Phase.CompareWrite);
        return;
      }
      case Phase.CompareWrite:
        if (ok) task.transferred = task.wantBytes;
        else task.checkCondition(SenseKey.MediumError, Asc.WriteError);
        break;
    }
    this.complete(task);
  }

  // ---------------------------------------------------- non-media commands

  private inquiry(task: ScsiTask): void {
    const cdb = task.cdb;
    const evpd = (cdb[1] & 0x01) !== 0;
    const page = cdb[2];
    const alloc = be16(cdb, 3);
    if ((cdb[1] & 0xfe) !== 0 || (!evpd && page !== 0)) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return;
    }
    if (!this.dirOk(task, ScsiDataDir.FromDevice)) return;
    const d = this.resp;
    let len: number;
    if (!evpd) {
      d.fill(0, 0, 36);
      d[0] = 0x00; // connected, direct-access block device
      d[2] = 0x06; // SPC-4
      d[3] = 0x12; // HISUP, response data format 2
      d[4] = 36 - 5;
      d[7] = 0x02; // CMDQUE
      putAscii(d, 8, 8, this.vendor);
      putAscii(d, 16, 16, this.product);
      putAscii(d, 32, 4, this.revision);
      len = 36;
    } else {
      len = this.vpd(page, d);
      if (len < 0) {
        task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
        return;
      }
    }
    task.dataIn(d, len, alloc);
  }

  /** A VPD page into `d`; its length, or -1 for a page not offered. */
  private vpd(page: number, d: Uint8Array): number {
    d.fill(0, 0, 64);
    d[0] = 0x00;
    d[1] = page;
    const bs = this.handle.blockSize;
    switch (page) {
      case 0x00: {
        const pages = [0x00, 0x80, 0x83, 0xb0, 0xb1];
        if (this.canUnmap) pages.push(0xb2);
        for (let i = 0; i < pages.length; i++) d[4 + i] = pages[i];
        putBe16(d, 2, pages.length);
        return 4 + pages.length;
      }
      case 0x80: {
        const n = Math.min(this.identifier.length, 252);
        putAscii(d, 4, n, this.identifier);
        putBe16(d, 2, n);
        return 4 + n;
      }
      case 0x83: {
        let p = 4;
        // NAA designator, locally assigned (NAA 3h), from a hash of the identifier: stable across restarts.
        d[p] = 0x01; // code set binary
        d[p + 1] = 0x03; // association LU, type NAA
        d[p + 2] = 0;
        d[p + 3] = 8;
        putBe32(d, p + 4, ((0x3 << 28) | (this.naa[0] & 0x0fffffff)) >>> 0);
        putBe32(d, p + 8, this.naa[1]);
        p += 12;
        // T10 vendor ID designator: vendor, then the identifier.
        const idLen = Math.min(this.identifier.length, 200);
        d[p] = 0x02; // code set ASCII
        d[p + 1] = 0x01; // association LU, type T10 vendor ID
        d[p + 2] = 0;
        d[p + 3] = 8 + idLen;
        putAscii(d, p + 4, 8, this.vendor);
        putAscii(d, p + 12, idLen, this.identifier);
        p += 4 + 8 + idLen;
        putBe16(d, 2, p - 4);
        return p;
      }
      case 0xb0: {
        putBe16(d, 2, 0x3c);
        d[4] = 0x01; // WSNZ: WRITE SAME with 0 blocks is refused
        d[5] = Math.min(255, Math.floor(MAX_COMPARE_BYTES / bs)); // MAXIMUM COMPARE AND WRITE LENGTH
        const granularity = bs < 4096 ? 4096 / bs : 1;
        putBe16(d, 6, granularity); // OPTIMAL TRANSFER LENGTH GRANULARITY
        putBe32(d, 8, this.maxTransferBlocks); // MAXIMUM TRANSFER LENGTH
        putBe32(d, 12, this.maxTransferBlocks); // OPTIMAL TRANSFER LENGTH
        if (this.canUnmap) {
          putBe32(d, 20, Math.floor(MAX_UNMAP_BYTES / bs)); // MAXIMUM UNMAP LBA COUNT
          putBe32(d, 24, MAX_UNMAP_DESCRIPTORS); // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
          putBe32(d, 28, granularity); // OPTIMAL UNMAP GRANULARITY
        }
        putBe64(d, 36, Math.floor(MAX_UNMAP_BYTES / bs)); // MAXIMUM WRITE SAME LENGTH
        return 64;
      }
      case 0xb1:
        putBe16(d, 2, 0x3c);
        putBe16(d, 4, 1); // MEDIUM ROTATION RATE: non-rotating medium
        return 64;
      case 0xb2:
        if (!this.canUnmap) return -1;
        putBe16(d, 2, 4);
        d[5] = 0x80 | 0x40 | 0x20; // LBPU, LBPWS, LBPWS10
        d[6] = 0x02; // provisioning type: thin
        return 8;
      default:
        return -1;
    }
  }

  private requestSense(task: ScsiTask): void {
    const cdb = task.cdb;
    if ((cdb[1] & 0x01) !== 0) {
      // DESC: descriptor-format sense data is not offered.
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return;
    }
    if (!this.dirOk(task, ScsiDataDir.FromDevice)) return;
    const asc = this.takeUnitAttention(task.nexus);
    const d = this.resp;
    if (asc >= 0) {
      writeSenseData(d, SenseKey.UnitAttention, asc);
    } else {
      writeSenseData(d, SenseKey.NoSense, Asc.NoAdditionalSense);
    }
    task.dataIn(d, 18, cdb[4]);
  }

  private readCapacity10(task: ScsiTask): void {
    if (!this.dirOk(task, ScsiDataDir.FromDevice)) return;
    const d = this.resp;
    const last = this.handle.numBlocks - 1;
    putBe32(d, 0, last > 0xffffffff ? 0xffffffff : last);
    putBe32(d, 4, this.handle.blockSize);
    task.dataIn(d, 8, 8);
  }

  private readCapacity16(task: ScsiTask): void {
    if (!this.dirOk(task, ScsiDataDir.FromDevice)) return;
    const d = this.resp;
    d.fill(0, 0, 32);
    putBe64(d, 0, this.handle.numBlocks - 1);
    putBe32(d, 8, this.handle.blockSize);
    if (this.canUnmap) d[14] = 0x80; // LBPME
    task.dataIn(d, 32, be32(task.cdb, 10));
  }

  /** A mode page (page control pc) at d[off]; its length. */
  private modePage(page: number, pc: number, d: Uint8Array, off: number): number {
    switch (page) {
      case MODE_CACHING: {
        d.fill(0, off, off + 20);
        d[off] = MODE_CACHING;
        d[off + 1] = 0x12;
        const wce = pc === 1 ? true : pc === 2 ? this.defaultWce : this.wce;
        if (wce) d[off + 2] = 0x04;
        return 20;
      }
      case MODE_CONTROL:
        d.fill(0, off, off + 12);
        d[off] = MODE_CONTROL;
        d[off + 1] = 0x0a;
        if (pc !== 1) d[off + 3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
        return 12;
      case MODE_INFO_EXCEPTIONS:
        d.fill(0, off, off + 12);
        d[off] = MODE_INFO_EXCEPTIONS;
        d[off + 1] = 0x0a;
        if (pc !== 1) d[off + 2] = 0x08; // DEXCPT: informational exceptions off; MRIE 0
        return 12;
      default:
        return 0;
    }
  }

  private modeSense(task: ScsiTask, ten: boolean): void {
    const cdb = task.cdb;
    const dbd = (cdb[1] & 0x08) !== 0;
    const llbaa = ten && (cdb[1] & 0x10) !== 0;
    const pc = cdb[2] >> 6;
    const page = cdb[2] & 0x3f;
    const subpage = cdb[3];
    const alloc = ten ? be16(cdb, 7) : cdb[4];
    if (pc === 3) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.SavingParametersNotSupported);
      return;
    }
    if (subpage !== 0 && !(page === MODE_ALL && subpage === 0xff)) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return;
    }
    if (page !== MODE_ALL && page !== MODE_CACHING && page !== MODE_CONTROL && page !== MODE_INFO_EXCEPTIONS) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return;
    }
    if (!this.dirOk(task, ScsiDataDir.FromDevice)) return;
    const d = this.resp;
    const hdr = ten ? 8 : 4;
    const bdLen = dbd ? 0 : llbaa ? 16 : 8;
    d.fill(0, 0, hdr + bdLen);
    let p = hdr;
    const n = this.handle.numBlocks;
    const bs = this.handle.blockSize;
    if (bdLen === 8) {
      putBe32(d, p, n > 0xffffffff ? 0xffffffff : n);
      putBe32(d, p + 4, bs & 0xffffff);
    } else if (bdLen === 16) {
      putBe64(d, p, n);
      putBe32(d, p + 12, bs);
    }
    p += bdLen;
    if (page === MODE_ALL) {
      p += this.modePage(MODE_CACHING, pc, d, p);
      p += this.modePage(MODE_CONTROL, pc, d, p);
      p += this.modePage(MODE_INFO_EXCEPTIONS, pc, d, p);
    } else {
      p += this.modePage(page, pc, d, p);
    }
    const devSpecific = (this.readonly ? 0x80 : 0) | 0x10; // WP, DPOFUA
    if (ten) {
      putBe16(d, 0, p - 2);
      d[3] = devSpecific;
      d[4] = llbaa ? 0x01 : 0;
      putBe16(d, 6, bdLen);
    } else {
      d[0] = p - 1;
      d[2] = devSpecific;
      d[3] = bdLen;
    }
    task.dataIn(d, p, alloc);
  }

  private modeSelect(task: ScsiTask, ten: boolean): void {
    const cdb = task.cdb;
    const len = ten ? be16(cdb, 7) : cdb[4];
    // PF must be set (SPC-4 page format); SP: saving is not supported.
    if ((cdb[1] & 0x01) !== 0 || (len > 0 && (cdb[1] & 0x10) === 0)) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return;
    }
    task.wantBytes = len;
    if (len === 0) return;
    const hdr = ten ? 8 : 4;
    if (len < hdr || len > MAX_MODE_SELECT_BYTES) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
      return;
    }
    if (!this.dirOk(task, ScsiDataDir.ToDevice)) return;
    if (task.bufferBytes < len) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return;
    }
    const p = this.param;
    task.gather(0, p, 0, len);
    task.transferred = len;
    const bdLen = ten ? be16(p, 6) : p[3];
    const long = ten && (p[4] & 0x01) !== 0;
    let pos = hdr;
    if (bdLen !== 0) {
      if (bdLen !== (long ? 16 : 8) || hdr + bdLen > len) {
        task.checkCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
        return;
      }
      const blockLen = long ? be32(p, pos + 12) : be24(p, pos + 5);
      if (blockLen !== 0 && blockLen !== this.handle.blockSize) {
        task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
        return;
      }
      pos += bdLen;
    }
    let wce = this.wce;
    const cur = this.resp;
    while (pos < len) {
      if (len - pos < 2) {
        task.checkCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
        return;
      }
      const code = p[pos] & 0x3f;
      const plen = p[pos + 1];
      if ((p[pos] & 0x40) !== 0) {
        // SPF: no subpages are offered.
        task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
        return;
      }
      if (pos + 2 + plen > len) {
        task.checkCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
        return;
      }
      const size = this.modePage(code, 0, cur, 0);
      if (size === 0 || plen !== size - 2) {
        task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
        return;
      }
      // Only WCE (caching page byte 2 bit 2) may change; every other field must be what MODE SENSE reports.
      const changeable = code === MODE_CACHING ? 0x04 : 0;
      for (let i = 2; i < size; i++) {
        const mask = i === 2 ? ~changeable & 0xff : 0xff;
        if ((p[pos + i] & mask) !== (cur[i] & mask)) {
          task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
          return;
        }
      }
      if (code === MODE_CACHING) wce = (p[pos + 2] & 0x04) !== 0;
      pos += size;
    }
    if (wce !== this.wce) {
      this.wce = wce;
      this.raiseUnitAttention(UnitAttention.ModeChanged, undefined, task.nexus);
    }
  }

  private prIn(task: ScsiTask): void {
    if (!this.dirOk(task, ScsiDataDir.FromDevice)) return;
    const alloc = be16(task.cdb, 7);
    const len = this.reservations.in(task, this.resp);
    if (len > 0) task.dataIn(this.resp, len, alloc);
  }

  private prOut(task: ScsiTask): void {
    const cdb = task.cdb;
    const len = be32(cdb, 5);
    task.wantBytes = len;
    if (len !== PR_OUT_PARAM_BYTES) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
      return;
    }
    if (!this.dirOk(task, ScsiDataDir.ToDevice)) return;
    if (task.bufferBytes < len) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
      return;
    }
    task.gather(0, this.param, 0, len);
    task.transferred = len;
    this.reservations.out(task, this.param);
  }
}

/** Fixed-format sense data as REQUEST SENSE returns it (18 bytes at d[0]). */
function writeSenseData(d: Uint8Array, key: SenseKey, asc: number): void {
  d.fill(0, 0, 18);
  d[0] = 0x70;
  d[2] = key;
  d[7] = 10;
  d[12] = asc >> 8;
  d[13] = asc & 0xff;
}

/** REPORT LUNS (SPC-4 §6.33) for the LUN numbers `ids`, built in `d`. */
export function reportLuns(task: ScsiTask, ids: readonly number[], d: Uint8Array): void {
  const cdb = task.cdb;
  const select = cdb[2];
  const alloc = be32(cdb, 6);
  if ((select !== 0 && select !== 1 && select !== 2) || alloc < 16) {
    task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
    return;
  }
  if (task.bufferBytes > 0 && task.dir !== ScsiDataDir.FromDevice) {
    task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
    return;
  }
  d.fill(0, 0, 8);
  let p = 8;
  // SELECT REPORT 1 asks for well-known LUNs only: there are none.
  if (select !== 1) {
    for (const id of ids) {
      if (p + 8 > d.length) break;
      putLun(d, p, id);
      p += 8;
    }
  }
  putBe32(d, 0, p - 8);
  task.dataIn(d, p, alloc);
}
