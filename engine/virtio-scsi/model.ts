/**
 * The virtio-scsi device model (virtio 1.2 §5.6) on the virtio device core
 * (engine/virtio/device.ts), the transport in front of the SCSI target
 * (engine/scsi, which knows no virtio):
 *
 * - queue 0, control: task management (LOGICAL UNIT RESET and I_T NEXUS
 *   RESET reset the LU once its outstanding commands have completed; every
 *   other TMF is answered VIRTIO_SCSI_S_ABORTED, as SPDK's vhost-scsi does;
 *   an unknown subtype FUNCTION_REJECTED) and asynchronous notification
 *   query/subscribe (answered OK with no event supported: event_actual 0);
 * - queue 1, events: hot-plug (TRANSPORT_RESET with RESCAN / REMOVED, when
 *   HOTPLUG was negotiated) and capacity changes (PARAM_CHANGE 2Ah/09h, when
 *   CHANGE was negotiated). Its buffers are taken only when an event is
 *   waiting (VirtioModel.budget), so they are never in flight and a stop
 *   never waits for them; events that find no buffer wait (up to
 *   MAX_PENDING_EVENTS, then EVENTS_MISSED is set on the next one);
 * - queues 2.., requests: struct virtio_scsi_req_cmd (§5.6.6.1, cdb_size 32,
 *   sense_size 96, no T10 PI) is parsed, then executed by the target:
 *   LUN addressing lun[0] = 1, lun[1] = target (0-7), lun[2..3] a
 *   single-level LUN (peripheral or flat), lun[4..7] zero. A missing target
 *   gets VIRTIO_SCSI_S_BAD_TARGET; a missing or unsupported LUN on a present
 *   target reaches the target, which answers as SPC-4 says (INQUIRY:
 *   peripheral qualifier 3; others CHECK CONDITION / LOGICAL UNIT NOT
 *   SUPPORTED).
 *
 * Bad input: a chain without room for the response (108 writable bytes;
 * TMF 1, AN 5, event 16) goes back with used length 0 (it cannot carry an
 * answer); a short request header, data buffers in both directions (INOUT
 * not offered) or an unusable data buffer get VIRTIO_SCSI_S_FAILURE; data
 * buffers of the wrong direction or shorter than the transfer are the
 * target's to judge (CHECK CONDITION, residual; an overrun is
 * VIRTIO_SCSI_S_OVERRUN).
 *
 * Targets change while the device runs (ModelOp scsiAddTarget /
 * scsiRemoveTarget): a removed target answers BAD_TARGET at once; the
 * commands it had outstanding complete normally (an acknowledged write is
 * never lost) and its bdev is closed after the last one.
 *
 * Thread: the engine worker that runs the device.
 */
import type { BdevLayer } from '../bdev/layer';
import { type BdevDesc, type DeviceDesc, type ModelOp, DeviceStat, type ScsiModelDesc } from '../control';
import type { DeviceEnv, EngineDevice } from '../device';
import { ScsiLun } from '../scsi/lun';
import { Op, ScsiDataDir, ScsiResidual, ScsiStatus, TmfFunction, TmfResponse } from '../scsi/spec';
import { ScsiTask } from '../scsi/task';
import { ScsiTarget } from '../scsi/target';
import { ChainError, chainErrorName } from '../virtio/chain';
import { VirtioDevice, type VirtioModel, type VirtioQueueState, VirtioTask } from '../virtio/device';
import {
  SCSI_AN_REQ_SIZE,
  SCSI_AN_RESP_SIZE,
  SCSI_CONTROL_QUEUE,
  SCSI_EVENT_QUEUE,
  SCSI_EVENT_SIZE,
  SCSI_EVENTS_MISSED,
  SCSI_MAX_TARGETS,
  SCSI_SENSE_SIZE,
  SCSI_TMF_REQ_SIZE,
  SCSI_TMF_RESP_SIZE,
  ScsiCmdOffset,
  ScsiCtrlType,
  ScsiEvent,
  ScsiFeature,
  ScsiResetReason,
  ScsiResponse,
  ScsiTmfSubtype,
} from '../virtio/spec';

/**
 * Data segments one command may use: QEMU's vhost-user-scsi offers
 * seg_max = queue size - 2 (126 for its default 128); the header and the
 * response take one descriptor each, and a buffer crossing a guest region
 * boundary becomes two segments.
 */
export const SCSI_SEG_MAX = 128;
export const SCSI_MAX_SEGMENTS = SCSI_SEG_MAX + 4;

/** Events kept for want of event buffers; past this EVENTS_MISSED is reported. */
export const MAX_PENDING_EVENTS = 64;

/** PARAM_CHANGE reason for a capacity change: ASC 2Ah in bits 0-7, ASCQ 09h in bits 8-15 (§5.6.6.3.3). */
const REASON_CAPACITY_CHANGED = 0x2a | (0x09 << 8);

const bit = (n: number): bigint => 1n << BigInt(n);

/** lun[2..3] as a big-endian 16-bit value: peripheral (00b, bus 0) or flat (01b) addressing, else -1. */
function singleLevelLun(v: number): number {
  const method = v >> 14;
  if (method === 0) return v <= 0xff ? v : -1;
  if (method === 1) return v & 0x3fff;
  return -1;
}

/** What a completed command counts as in DeviceStat, by opcode (one load instead of a compare chain per command). */
const enum StatKind {
  None = 0,
  Read = 1,
  Write = 2,
  Unmap = 3,
  Flush = 4,
}
const STAT_KIND = new Uint8Array(256);
for (const op of [Op.Read6, Op.Read10, Op.Read12, Op.Read16]) STAT_KIND[op] = StatKind.Read;
for (const op of [Op.Write6, Op.Write10, Op.Write12, Op.Write16]) STAT_KIND[op] = StatKind.Write;
for (const op of [Op.Unmap, Op.WriteSame10, Op.WriteSame16]) STAT_KIND[op] = StatKind.Unmap;
for (const op of [Op.SynchronizeCache10, Op.SynchronizeCache16]) STAT_KIND[op] = StatKind.Flush;

const enum Kind {
  Cmd = 0,
  Ctrl = 1,
  Event = 2,
}

/** The SCSI target's view of a request slot: its completion is the transport's. */
class VscsiCommand extends ScsiTask {
  constructor(
    capacity: number,
    private readonly slot: VscsiTask,
    private readonly model: VscsiModel,
  ) {
    super(capacity);
  }

  override done(): void {
    this.model.commandDone(this.slot);
  }
}

/** One request slot of a queue: its chain, and for request queues the SCSI task it reuses. */
export class VscsiTask extends VirtioTask {
  readonly kind: Kind;
  readonly cmd: VscsiCommand | null;
  /** What the command counts as (StatKind of its opcode), noted while the CDB is at hand. */
  statKind = 0;
  /**
   * Where commandDone() may write the response's fixed fields in place, noted while the chain is
   * at hand (startCommand): the byte offset, as an int32 (never a double: DataView offsets derived
   * from it stay integer arithmetic), in region `respRegion`, of the response's first descriptor
   * when it holds at least the fixed fields; else -1 (the response is written by the slow path).
   */
  respAt = -1;
  respRegion = 0;
  /** The DataView of region respRegion (kept across commands: usually the same view, so a compare, not a store). */
  respView: DataView | null = null;
  constructor(queue: VirtioQueueState, model: VscsiModel) {
    super(queue, SCSI_MAX_SEGMENTS);
    const index = queue.q.index;
    this.kind = index === SCSI_CONTROL_QUEUE ? Kind.Ctrl : index === SCSI_EVENT_QUEUE ? Kind.Event : Kind.Cmd;
    this.cmd = this.kind === Kind.Cmd ? new VscsiCommand(SCSI_MAX_SEGMENTS, this, model) : null;
  }
}

/** A LU that also tells the transport of a resize (PARAM_CHANGE). */
class VscsiLun extends ScsiLun {
  constructor(
    readonly target: number,
    private readonly model: VscsiModel,
    layer: BdevLayer,
    desc: BdevDesc,
    identifier: string,
    nowMs: number,
  ) {
    super(0, layer, desc, { identifier }, nowMs);
  }

  override bdevResized(numBlocks: number): void {
    super.bdevResized(numBlocks);
    this.model.capacityChanged(this.target);
  }
}

interface Slot {
  target: ScsiTarget;
  lun: VscsiLun;
}

interface PendingEvent {
  event: number;
  target: number;
  reason: number;
}

export class VscsiModel implements VirtioModel<VscsiTask> {
  readonly maxSegments = SCSI_MAX_SEGMENTS;
  private readonly core: VirtioDevice<VscsiTask>;
  private readonly layer: BdevLayer;
  private readonly stats: Float64Array;
  private readonly slots: (Slot | null)[] = new Array<Slot | null>(SCSI_MAX_TARGETS).fill(null);
  /** slots[t].target, flat: the per-command lookup (kept with slots). */
  private readonly targetsByNum: (ScsiTarget | null)[] = new Array<ScsiTarget | null>(SCSI_MAX_TARGETS).fill(null);
  /** slots[t].lun, flat: the READ/WRITE fast path's lookup (kept with slots). */
  private readonly lunsByNum: (VscsiLun | null)[] = new Array<VscsiLun | null>(SCSI_MAX_TARGETS).fill(null);
  /** LUs being hot-removed (closed when their last command completes). */
  private readonly removing = new Set<VscsiLun>();
  private readonly hotplug: boolean;
  private readonly change: boolean;
  private readonly events: PendingEvent[] = [];
  private eventsMissed = false;
  /** Scratch for request headers and responses (a command's header is copied out before it runs). */
  private readonly hdr = new Uint8Array(ScsiCmdOffset.ReqSize);
  private readonly hdrView = new DataView(this.hdr.buffer);
  private readonly resp = new Uint8Array(ScsiCmdOffset.RespSize);
  private readonly respView = new DataView(this.resp.buffer);
  private closed = false;

  constructor(core: VirtioDevice<VscsiTask>, desc: DeviceDesc, model: ScsiModelDesc, env: DeviceEnv) {
    this.core = core;
    this.layer = env.bdevs;
    this.stats = core.stats;
    this.hotplug = (desc.features & bit(ScsiFeature.Hotplug)) !== 0n;
    this.change = (desc.features & bit(ScsiFeature.Change)) !== 0n;
    try {
      for (const t of model.targets) {
        const bdev = desc.bdevs[t.bdev];
        if (bdev === undefined) throw new RangeError(`scsi device ${desc.name}: target ${t.target} names bdev #${t.bdev}, which is not in the description`);
        this.addTarget(t.target, bdev, t.identifier);
      }
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** Targets present (tests). */
  get targets(): number[] {
    const out: number[] = [];
    for (let i = 0; i < SCSI_MAX_TARGETS; i++) if (this.slots[i] !== null) out.push(i);
    return out;
  }

  /** Events waiting for an event-queue buffer (tests). */
  get pendingEvents(): number {
    return this.events.length;
  }

  newTask(queue: VirtioQueueState): VscsiTask {
    return new VscsiTask(queue, this);
  }

  budget(qs: VirtioQueueState): number {
    if (qs.q.index !== SCSI_EVENT_QUEUE) return Number.MAX_SAFE_INTEGER;
    return this.events.length;
  }

  drain(): void {
    for (const s of this.slots) if (s !== null) s.lun.handle.drain();
    for (const l of this.removing) l.handle.drain();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (let i = 0; i < SCSI_MAX_TARGETS; i++) {
      const s = this.slots[i];
      if (s !== null) s.lun.close();
      this.slots[i] = null;
      this.targetsByNum[i] = null;
      this.lunsByNum[i] = null;
    }
    for (const l of this.removing) l.close();
    this.removing.clear();
  }

  // ------------------------------------------------------------ hot-plug

  /** Target removals whose LUN still has commands outstanding (modelOpReady waits for them). */
  private readonly removalsPending = new Set<number>();

  beginModelOp(op: ModelOp): void {
    switch (op.kind) {
      case 'scsiAddTarget':
        this.addTarget(op.target, op.bdev, op.identifier);
        if (this.hotplug) this.raiseEvent(ScsiEvent.TransportReset, op.target, ScsiResetReason.Rescan);
        return;
      case 'scsiRemoveTarget': {
        const t = op.target;
        const s = Number.isInteger(t) && t >= 0 && t < SCSI_MAX_TARGETS ? this.slots[t] : null;
        if (s === null || s === undefined) throw new RangeError(`scsi device ${this.core.name}: no target ${t}`);
        // From now on the target answers BAD_TARGET; what it has outstanding completes first.
        this.slots[t] = null;
        this.targetsByNum[t] = null;
        this.lunsByNum[t] = null;
        this.removing.add(s.lun);
        this.removalsPending.add(t);
        if (this.hotplug) this.raiseEvent(ScsiEvent.TransportReset, t, ScsiResetReason.Removed);
        s.lun.remove(() => {
          this.removing.delete(s.lun);
          this.removalsPending.delete(t);
        });
        return;
      }
      default:
        throw new Error(`scsi device ${this.core.name}: unknown model change ${(op as { kind?: unknown }).kind}`);
    }
  }

  modelOpReady(op: ModelOp): boolean {
    return op.kind !== 'scsiRemoveTarget' || !this.removalsPending.has(op.target);
  }

  private addTarget(target: number, bdev: BdevDesc, identifier: string): void {
    if (!Number.isInteger(target) || target < 0 || target >= SCSI_MAX_TARGETS) {
      throw new RangeError(`scsi device ${this.core.name}: target must be 0-${SCSI_MAX_TARGETS - 1}, got ${target}`);
    }
    if (this.slots[target] !== null) throw new RangeError(`scsi device ${this.core.name}: target ${target} exists`);
    const lun = new VscsiLun(target, this, this.layer, bdev, identifier, this.core.nowMs);
    const t = new ScsiTarget(1);
    t.addLun(lun);
    this.slots[target] = { target: t, lun };
    this.targetsByNum[target] = t;
    this.lunsByNum[target] = lun;
  }

  /** A LU's bdev changed size: PARAM_CHANGE (CAPACITY DATA HAS CHANGED) when negotiated. */
  capacityChanged(target: number): void {
    if (this.change && this.slots[target]?.lun !== undefined) this.raiseEvent(ScsiEvent.ParamChange, target, REASON_CAPACITY_CHANGED);
  }

  private raiseEvent(event: number, target: number, reason: number): void {
    if (this.events.length >= MAX_PENDING_EVENTS) {
      this.eventsMissed = true;
      return;
    }
    this.events.push({ event, target, reason });
  }

  // ------------------------------------------------------------ requests

  start(task: VscsiTask, walkErr: ChainError): void {
    const core = this.core;
    if (walkErr !== ChainError.Ok) {
      // The chain's buffers cannot be trusted: nothing is written back.
      core.drop(task, chainErrorName(walkErr));
      return;
    }
    switch (task.kind) {
      case Kind.Cmd:
        this.startCommand(task);
        return;
      case Kind.Ctrl:
        this.startControl(task);
        return;
      default:
        this.startEvent(task);
    }
  }

  private startCommand(task: VscsiTask): void {
    const core = this.core;
    const chain = task.chain;
    if (chain.writableBytes < ScsiCmdOffset.RespSize) {
      core.drop(task, `virtio-scsi command without room for its response (${chain.writableBytes} writable bytes, needs ${ScsiCmdOffset.RespSize})`);
      return;
    }
    if (chain.readableBytes < ScsiCmdOffset.ReqSize) {
      core.guestError(task.queue, `short virtio-scsi command header (${chain.readableBytes} bytes, needs ${ScsiCmdOffset.ReqSize})`, chain.head);
      this.respond(task, ScsiResponse.Failure);
      return;
    }
    const mem = core.mem;
    const bytes = mem.bytes;
    // The header is read in place when its first descriptor holds it (Linux: always) at an offset
    // below 2^31 - 51, else copied out. The offset is made an int32 once here (chain offsets are doubles:
    // each DataView read at a double offset would convert and check it again).
    let src: Uint8Array;
    let srcView: DataView;
    let base = chain.offset[0] | 0;
    if (chain.len[0] >= ScsiCmdOffset.ReqSize && base === chain.offset[0] && base <= 0x7fffffff - ScsiCmdOffset.ReqSize) {
      const region = chain.region[0];
      src = bytes[region];
      srcView = mem.views[region];
    } else {
      this.gather(task, this.hdr, ScsiCmdOffset.ReqSize);
      src = this.hdr;
      srcView = this.hdrView;
      base = 0;
    }
    // The LUN field, read once: lun[0..3] (1, target, single-level LUN) and lun[4..7] (zero).
    const lunHi = srcView.getUint32(base + ScsiCmdOffset.Lun);
    const t = (lunHi >>> 16) & 0xff;
    const target = lunHi >>> 24 === 1 && t < SCSI_MAX_TARGETS ? this.targetsByNum[t] : null;
    if (target === null) {
      this.respond(task, ScsiResponse.BadTarget);
      return;
    }
    const outBytes = chain.readableBytes - ScsiCmdOffset.ReqSize;
    const inBytes = chain.writableBytes - ScsiCmdOffset.RespSize;
    if (outBytes > 0 && inBytes > 0) {
      core.guestError(task.queue, 'virtio-scsi command with data buffers in both directions (INOUT not offered)', chain.head);
      this.respond(task, ScsiResponse.Failure);
      return;
    }
    // The response's first descriptor, for commandDone's in-place write (see VscsiTask.respAt).
    const rseg = chain.readable;
    const respOff = chain.offset[rseg];
    const respAt = respOff | 0;
    task.respAt = chain.len[rseg] >= ScsiCmdOffset.RespSense && respAt === respOff && respAt <= 0x7fffffff - ScsiCmdOffset.RespSense ? respAt : -1;
    const respRegion = chain.region[rseg];
    task.respRegion = respRegion;
    const respView = mem.views[respRegion];
    if (task.respView !== respView) task.respView = respView;
    const lun = srcView.getUint32(base + ScsiCmdOffset.Lun + 4) !== 0 ? -1 : singleLevelLun(lunHi & 0xffff);
    const cmd = task.cmd as VscsiCommand;
    cmd.reset();
    cmd.nexus = 0;
    if (outBytes > 0) {
      cmd.dir = ScsiDataDir.ToDevice;
      this.addData(task, cmd, 0, chain.readable, ScsiCmdOffset.ReqSize, bytes);
    } else if (inBytes > 0) {
      cmd.dir = ScsiDataDir.FromDevice;
      this.addData(task, cmd, chain.readable, chain.count, ScsiCmdOffset.RespSize, bytes);
    }
    // The time goes in the task, not as an argument (which would box it per command).
    cmd.nowMs = core.nowMs;
    // Every CDB but the variable-length one (7Fh) fits 16 bytes (SPC-4 §4.2.5.1): read once, as
    // four big-endian words (a guest may change its memory under us: no byte is read twice).
    const cdbAt = base + ScsiCmdOffset.Cdb;
    const w0 = srcView.getUint32(cdbAt);
    const op = w0 >>> 24;
    task.statKind = STAT_KIND[op];
    if (op === 0x7f) {
      cmd.setCdb(src, cdbAt, 32);
      cmd.cdbView.setUint32(0, w0); // the opcode word as read above
      target.execute(cmd, lun);
      return;
    }
    const w1 = srcView.getUint32(cdbAt + 4);
    const w2 = srcView.getUint32(cdbAt + 8);
    const w3 = srcView.getUint32(cdbAt + 12);
    // READ/WRITE 10/16 to the target's LU (LUN 0: one per target here), decoded from the words and
    // handed to the LU's fast path: no ScsiTarget/ScsiLun.execute() and no CDB copy when it takes it.
    const lu = lun === 0 ? this.lunsByNum[t] : null;
    if (lu !== null) {
      if (op === Op.Read16 || op === Op.Write16) {
        // Bytes 2-9 the LBA, 10-13 the transfer length.
        const lbaHi = (((w0 & 0xffff) << 16) | (w1 >>> 16)) >>> 0;
        const lbaLo = (((w1 & 0xffff) << 16) | (w2 >>> 16)) >>> 0;
        const blocks = (((w2 & 0xffff) << 16) | (w3 >>> 16)) >>> 0;
        if (lu.readWriteFast(cmd, op === Op.Write16, (w0 >>> 16) & 0xff, lbaHi * 0x1_0000_0000 + lbaLo, blocks)) return;
      } else if (op === Op.Read10 || op === Op.Write10) {
        // Bytes 2-5 the LBA, 7-8 the transfer length.
        const lba = (((w0 & 0xffff) << 16) | (w1 >>> 16)) >>> 0;
        const blocks = ((w1 & 0xff) << 8) | (w2 >>> 24);
        if (lu.readWriteFast(cmd, op === Op.Write10, (w0 >>> 16) & 0xff, lba, blocks)) return;
      }
    }
    cmd.setCdbWords(w0, w1, w2, w3);
    target.execute(cmd, lun);
  }

  /** Add segments [from, to) of the chain as the command's data buffers, skipping their first `skip` bytes. */
  private addData(task: VscsiTask, cmd: VscsiCommand, from: number, to: number, skip: number, bytes: Uint8Array[]): void {
    const chain = task.chain;
    for (let seg = from; seg < to; seg++) {
      let len = chain.len[seg];
      let off = chain.offset[seg];
      if (skip >= len) {
        skip -= len;
        continue;
      }
      off += skip;
      len -= skip;
      skip = 0;
      cmd.addIov(bytes[chain.region[seg]], off, len);
    }
  }

  /**
   * The target a virtio-scsi LUN field at `off` names (lun[0] = 1, lun[1] =
   * target), or null (BAD_TARGET). The field is read as big-endian words.
   */
  private targetOf(v: DataView, off: number): ScsiTarget | null {
    const hi = v.getUint32(off);
    const t = (hi >>> 16) & 0xff;
    return hi >>> 24 === 1 && t < SCSI_MAX_TARGETS ? this.targetsByNum[t] : null;
  }

  /**
   * The LUN of lun[2..7]: a single-level LUN in peripheral (00b, bus 0) or
   * flat (01b) addressing with the remaining bytes zero, else -1 (no such LU).
   */
  private lunOf(v: DataView, off: number): number {
    return v.getUint32(off + 4) !== 0 ? -1 : singleLevelLun(v.getUint16(off + 2));
  }

  /** The SCSI target finished a command: write the response and complete. */
  commandDone(task: VscsiTask): void {
    const cmd = task.cmd as VscsiCommand;
    const o = task.respAt;
    if (cmd.status === ScsiStatus.Good && cmd.senseLength === 0 && cmd.residualKind !== ScsiResidual.Overflow && o >= 0) {
      // The usual outcome (GOOD, no sense data, buffers at least the transfer), its response's
      // first descriptor holding the fixed fields (Linux's always does): written in place as
      // three little-endian words: sense_len 0, residual, and status_qualifier 0 | status GOOD | response OK, all zero.
      const transferred = cmd.transferred;
      const residual = cmd.bufferBytes - transferred;
      const v = task.respView as DataView;
      v.setUint32(o + ScsiCmdOffset.RespSenseLen, 0, true);
      v.setUint32(o + ScsiCmdOffset.RespResidual, residual > 0 ? residual >>> 0 : 0, true);
      v.setUint32(o + ScsiCmdOffset.RespStatusQualifier, 0, true);
      this.countGood(task.statKind, transferred, cmd.wantBytes);
      this.core.complete(task, ScsiCmdOffset.RespSize + (cmd.dir === ScsiDataDir.FromDevice ? transferred : 0));
      return;
    }
    this.commandDoneSlow(task, cmd);
  }

  /** Count a command that ended GOOD in the device's statistics, by the kind its opcode maps to. */
  private countGood(kind: StatKind, readBytes: number, writeBytes: number): void {
    const s = this.stats;
    switch (kind) {
      case StatKind.Read:
        s[DeviceStat.ReadOps]++;
        s[DeviceStat.ReadBytes] += readBytes;
        break;
      case StatKind.Write:
        s[DeviceStat.WriteOps]++;
        s[DeviceStat.WriteBytes] += writeBytes;
        break;
      case StatKind.Unmap:
        s[DeviceStat.UnmapOps]++;
        break;
      case StatKind.Flush:
        s[DeviceStat.FlushOps]++;
        break;
      default:
        break;
    }
  }

  /** commandDone for an error status, sense data, an overrun, or a response split across descriptors. */
  private commandDoneSlow(task: VscsiTask, cmd: VscsiCommand): void {
    const overrun = cmd.residualKind === ScsiResidual.Overflow;
    const dataIn = cmd.dir === ScsiDataDir.FromDevice ? cmd.transferred : 0;
    let residual = 0;
    if (overrun) residual = cmd.residual;
    else if (cmd.bufferBytes > cmd.transferred) residual = cmd.bufferBytes - cmd.transferred;
    if (cmd.status !== ScsiStatus.Good || overrun) this.stats[DeviceStat.ErrorOps]++;
    else this.countGood(task.statKind, cmd.transferred, cmd.wantBytes);
    const senseLen = cmd.senseLength > SCSI_SENSE_SIZE ? SCSI_SENSE_SIZE : cmd.senseLength;
    const chain = task.chain;
    const seg = chain.readable;
    if (chain.len[seg] >= ScsiCmdOffset.RespSense + senseLen) {
      // In place (the response's first descriptor holds it: Linux's always does): the fixed fields and the sense data.
      // sense_len, residual, status_qualifier 0 | status << 16 | response << 24: three little-endian words.
      const region = chain.region[seg];
      const o = chain.offset[seg];
      const v = this.core.mem.views[region];
      v.setUint32(o + ScsiCmdOffset.RespSenseLen, senseLen, true);
      v.setUint32(o + ScsiCmdOffset.RespResidual, residual >>> 0, true);
      v.setUint32(o + ScsiCmdOffset.RespStatusQualifier, ((cmd.status << 16) | ((overrun ? ScsiResponse.Overrun : ScsiResponse.Ok) << 24)) >>> 0, true);
      if (senseLen > 0) {
        const b = this.core.mem.bytes[region];
        const sense = cmd.sense;
        for (let i = 0; i < senseLen; i++) b[o + ScsiCmdOffset.RespSense + i] = sense[i];
      }
    } else {
      const r = this.resp;
      const v = this.respView;
      v.setUint32(ScsiCmdOffset.RespSenseLen, senseLen, true);
      v.setUint32(ScsiCmdOffset.RespResidual, residual >>> 0, true);
      v.setUint16(ScsiCmdOffset.RespStatusQualifier, 0, true);
      r[ScsiCmdOffset.RespStatus] = cmd.status;
      r[ScsiCmdOffset.RespResponse] = overrun ? ScsiResponse.Overrun : ScsiResponse.Ok;
      r.fill(0, ScsiCmdOffset.RespSense);
      for (let i = 0; i < senseLen; i++) r[ScsiCmdOffset.RespSense + i] = cmd.sense[i];
      this.scatter(task, r, ScsiCmdOffset.RespSense + senseLen);
    }
    this.core.complete(task, ScsiCmdOffset.RespSize + dataIn);
  }

  /** Answer a command with a transport response and no SCSI status. */
  private respond(task: VscsiTask, response: ScsiResponse): void {
    const r = this.resp;
    r.fill(0);
    r[ScsiCmdOffset.RespResponse] = response;
    this.stats[DeviceStat.ErrorOps]++;
    this.scatter(task, r, ScsiCmdOffset.RespSize);
    this.core.complete(task, ScsiCmdOffset.RespSize);
  }

  // ------------------------------------------------------------ control queue

  private startControl(task: VscsiTask): void {
    const chain = task.chain;
    const hdr = this.hdr;
    if (chain.readableBytes < 4) {
      this.core.drop(task, `virtio-scsi control request of ${chain.readableBytes} bytes`);
      return;
    }
    this.gather(task, hdr, Math.min(chain.readableBytes, SCSI_TMF_REQ_SIZE));
    const type = this.hdrView.getUint32(0, true);
    switch (type) {
      case ScsiCtrlType.Tmf:
        if (chain.readableBytes < SCSI_TMF_REQ_SIZE || chain.writableBytes < SCSI_TMF_RESP_SIZE) {
          this.core.drop(task, `virtio-scsi TMF of ${chain.readableBytes}+${chain.writableBytes} bytes`);
          return;
        }
        this.taskManagement(task, this.hdrView.getUint32(4, true));
        return;
      case ScsiCtrlType.AnQuery:
      case ScsiCtrlType.AnSubscribe: {
        if (chain.readableBytes < SCSI_AN_REQ_SIZE || chain.writableBytes < SCSI_AN_RESP_SIZE) {
          this.core.drop(task, `virtio-scsi AN request of ${chain.readableBytes}+${chain.writableBytes} bytes`);
          return;
        }
        // No asynchronous notification is supported: event_actual 0, response OK.
        const r = this.resp;
        r.fill(0, 0, SCSI_AN_RESP_SIZE);
        r[4] = this.targetOf(this.hdrView, 4) === null ? ScsiResponse.BadTarget : ScsiResponse.Ok;
        this.scatter(task, r, SCSI_AN_RESP_SIZE);
        this.core.complete(task, SCSI_AN_RESP_SIZE);
        return;
      }
      default:
        this.core.drop(task, `unknown virtio-scsi control request type ${type}`);
    }
  }

  private taskManagement(task: VscsiTask, subtype: number): void {
    const hdrView = this.hdrView;
    const target = this.targetOf(hdrView, 8);
    if (target === null) {
      this.tmfDone(task, ScsiResponse.BadTarget);
      return;
    }
    let fn: TmfFunction;
    switch (subtype) {
      case ScsiTmfSubtype.LogicalUnitReset:
        fn = TmfFunction.LogicalUnitReset;
        break;
      case ScsiTmfSubtype.ItNexusReset:
        fn = TmfFunction.ItNexusReset;
        break;
      case ScsiTmfSubtype.AbortTask:
      case ScsiTmfSubtype.AbortTaskSet:
      case ScsiTmfSubtype.ClearAca:
      case ScsiTmfSubtype.ClearTaskSet:
      case ScsiTmfSubtype.QueryTask:
      case ScsiTmfSubtype.QueryTaskSet:
        // SPDK's vhost-scsi answers every TMF but the resets so.
        this.tmfDone(task, ScsiResponse.Aborted);
        return;
      default:
        this.core.guestError(task.queue, `unknown virtio-scsi TMF subtype ${subtype}`, task.chain.head);
        this.tmfDone(task, ScsiResponse.FunctionRejected);
        return;
    }
    target.taskManagement(fn, this.lunOf(hdrView, 8), 0, (resp) => {
      this.tmfDone(task, resp === TmfResponse.FunctionComplete || resp === TmfResponse.FunctionSucceeded ? ScsiResponse.FunctionComplete : resp === TmfResponse.IncorrectLun ? ScsiResponse.IncorrectLun : ScsiResponse.FunctionRejected);
    });
  }

  private tmfDone(task: VscsiTask, response: number): void {
    const r = this.resp;
    r[0] = response;
    this.scatter(task, r, SCSI_TMF_RESP_SIZE);
    this.core.complete(task, SCSI_TMF_RESP_SIZE);
  }

  // ------------------------------------------------------------ event queue

  private startEvent(task: VscsiTask): void {
    const chain = task.chain;
    if (chain.writableBytes < SCSI_EVENT_SIZE) {
      // The event stays queued for the next buffer.
      this.core.drop(task, `virtio-scsi event buffer of ${chain.writableBytes} writable bytes (needs ${SCSI_EVENT_SIZE})`);
      return;
    }
    const ev = this.events.shift();
    const r = this.resp;
    const v = this.respView;
    r.fill(0, 0, SCSI_EVENT_SIZE);
    if (ev === undefined) {
      // Only reached when the budget was stale: an empty event.
      v.setUint32(0, this.eventsMissed ? SCSI_EVENTS_MISSED : ScsiEvent.NoEvent, true);
    } else {
      v.setUint32(0, (ev.event | (this.eventsMissed ? SCSI_EVENTS_MISSED : 0)) >>> 0, true);
      r[4] = 1;
      r[5] = ev.target;
      v.setUint32(12, ev.reason, true);
    }
    this.eventsMissed = false;
    this.scatter(task, r, SCSI_EVENT_SIZE);
    this.core.complete(task, SCSI_EVENT_SIZE);
  }

  // ------------------------------------------------------------ buffers

  /** Copy the first `len` device-readable bytes of the chain into `dst` (the caller checked there are that many). */
  private gather(task: VscsiTask, dst: Uint8Array, len: number): void {
    const chain = task.chain;
    const bytes = this.core.mem.bytes;
    let done = 0;
    for (let seg = 0; seg < chain.readable && done < len; seg++) {
      const src = bytes[chain.region[seg]];
      const off = chain.offset[seg];
      const n = Math.min(chain.len[seg], len - done);
      for (let i = 0; i < n; i++) dst[done + i] = src[off + i];
      done += n;
    }
  }

  /** Copy `len` bytes of `src` into the chain's first device-writable bytes (the caller checked there are that many). */
  private scatter(task: VscsiTask, src: Uint8Array, len: number): void {
    const chain = task.chain;
    const bytes = this.core.mem.bytes;
    let done = 0;
    for (let seg = chain.readable; seg < chain.count && done < len; seg++) {
      const dst = bytes[chain.region[seg]];
      const off = chain.offset[seg];
      const n = Math.min(chain.len[seg], len - done);
      for (let i = 0; i < n; i++) dst[off + i] = src[done + i];
      done += n;
    }
  }
}

/** The device factory for model kind 'scsi' (registered in engine/devices.ts). */
export function createScsiDevice(desc: DeviceDesc, env: DeviceEnv): EngineDevice {
  const model = desc.model;
  if (model.kind !== 'scsi') throw new RangeError(`device ${desc.name} is not a scsi device`);
  return new VirtioDevice<VscsiTask>(desc, env, (core) => new VscsiModel(core, desc, model, env));
}
