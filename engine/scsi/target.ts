/**
 * A SCSI target device: up to maxLuns logical units (ScsiLun) behind one
 * target port, as SPDK's lib/scsi/dev.c. It answers what belongs to the
 * target rather than a LU: REPORT LUNS, commands to a LUN that does not
 * exist (INQUIRY: peripheral qualifier 3 / type 1Fh; anything else: CHECK
 * CONDITION, ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED, as SPC-4 and
 * SPDK's spdk_scsi_task_process_null_lun), and task management.
 *
 * Task management as SPDK's lib/scsi does it: LOGICAL UNIT RESET and
 * I_T NEXUS RESET complete once the LU's outstanding commands have completed;
 * ABORT TASK, ABORT TASK SET, CLEAR TASK SET, CLEAR ACA and the QUERY
 * functions are rejected (SPDK's LU answers them FUNCTION REJECTED / not
 * supported; its vhost-scsi transport answers every TMF but LUN reset with
 * VIRTIO_SCSI_S_ABORTED without asking the LU).
 *
 * Thread: the engine worker that owns the device.
 */
import { reportLuns, type ScsiLun, UnitAttention } from './lun';
import { Asc, Op, ScsiDataDir, ScsiStatus, SenseKey, TmfFunction, TmfResponse } from './spec';
import type { ScsiTask } from './task';
import { be16 } from './wire';

export class ScsiTarget {
  private readonly luns: (ScsiLun | null)[];
  private readonly ids: number[] = [];
  private readonly resp: Uint8Array;

  constructor(readonly maxLuns = 8) {
    if (!Number.isInteger(maxLuns) || maxLuns < 1 || maxLuns > 16384) throw new RangeError(`scsi target: maxLuns must be 1-16384, got ${maxLuns}`);
    this.luns = new Array<ScsiLun | null>(maxLuns).fill(null);
    this.resp = new Uint8Array(8 + 8 * maxLuns);
  }

  /** The LU numbered `id`, or null. */
  lun(id: number): ScsiLun | null {
    return id >= 0 && id < this.maxLuns ? this.luns[id] : null;
  }

  /** LUN numbers present, ascending. */
  get lunIds(): readonly number[] {
    return this.ids;
  }

  /** Add a LU (its id must be free and below maxLuns); the other LUs raise REPORTED LUNS DATA HAS CHANGED. */
  addLun(lun: ScsiLun): void {
    if (lun.id >= this.maxLuns) throw new RangeError(`scsi target: LUN ${lun.id} is beyond the target's ${this.maxLuns} LUNs`);
    if (this.luns[lun.id] !== null) throw new RangeError(`scsi target: LUN ${lun.id} exists`);
    this.luns[lun.id] = lun;
    this.ids.push(lun.id);
    this.ids.sort((a, b) => a - b);
    this.lunsChanged(lun);
  }

  /**
   * Take a LU out (the caller closes it once its outstanding commands have
   * completed); the remaining LUs raise REPORTED LUNS DATA HAS CHANGED.
   */
  removeLun(id: number): ScsiLun | null {
    const lun = this.lun(id);
    if (lun === null) return null;
    this.luns[id] = null;
    this.ids.splice(this.ids.indexOf(id), 1);
    this.lunsChanged(null);
    return lun;
  }

  private lunsChanged(except: ScsiLun | null): void {
    for (const id of this.ids) {
      const l = this.luns[id] as ScsiLun;
      if (l !== except) l.raiseUnitAttention(UnitAttention.LunsChanged);
    }
  }

  /**
   * Execute `task` for LUN `lunId`, submitted at `nowMs` (default: the
   * task's nowMs as the transport set it). task.done() is called exactly
   * once, possibly before this returns.
   */
  execute(task: ScsiTask, lunId: number, nowMs?: number): void {
    // The time travels in the task (see ScsiTask.begin); a transport on the hot path sets task.nowMs and omits it here.
    if (nowMs !== undefined) task.nowMs = nowMs;
    const lun = lunId >= 0 && lunId < this.maxLuns ? this.luns[lunId] : null;
    if (lun !== null) {
      if (task.cdb[0] === Op.ReportLuns && task.cdbLength >= 12) {
        // The inventory is the target's (REPORT LUNS is exempt from unit attentions and reservations).
        this.reportLuns(task);
        return;
      }
      lun.execute(task);
      return;
    }
    task.begin(null);
    const cdb = task.cdb;
    if (task.cdbLength < 6) {
      task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
    } else if (cdb[0] === Op.ReportLuns && task.cdbLength >= 12) {
      this.reportLuns(task);
      return;
    } else if (cdb[0] === Op.Inquiry && (cdb[1] & 0x01) === 0 && (task.bufferBytes === 0 || task.dir === ScsiDataDir.FromDevice)) {
      // SPC-4 §6.6.2: no LU here: peripheral qualifier 011b, device type 1Fh.
      const d = this.resp;
      d.fill(0, 0, 36);
      d[0] = (0x03 << 5) | 0x1f;
      d[4] = 36 - 5;
      task.dataIn(d, 36, be16(cdb, 3));
    } else {
      task.checkCondition(SenseKey.IllegalRequest, Asc.LogicalUnitNotSupported);
    }
    task.finish();
  }

  /** REPORT LUNS; it clears REPORTED LUNS DATA HAS CHANGED for the nexus (SPC-4 §6.33). */
  private reportLuns(task: ScsiTask): void {
    task.begin(null);
    reportLuns(task, this.ids, this.resp);
    if (task.status === ScsiStatus.Good) {
      for (const id of this.ids) (this.luns[id] as ScsiLun).clearUnitAttention(UnitAttention.LunsChanged, task.nexus);
    }
    task.finish();
  }

  /**
   * Task management for LUN `lunId` from `nexus`: `done` gets the service
   * response once (possibly before this returns). LOGICAL UNIT RESET and
   * I_T NEXUS RESET wait for the outstanding commands; the others are
   * rejected, as SPDK does.
   */
  taskManagement(fn: TmfFunction, lunId: number, nexus: number, done: (response: TmfResponse) => void): void {
    const lun = this.lun(lunId);
    switch (fn) {
      case TmfFunction.LogicalUnitReset:
        if (lun === null) return done(TmfResponse.IncorrectLun);
        lun.lunReset(() => done(TmfResponse.FunctionComplete));
        return;
      case TmfFunction.ItNexusReset: {
        // The nexus spans every LU of the target.
        let left = this.ids.length + 1;
        const one = (): void => {
          if (--left === 0) done(TmfResponse.FunctionComplete);
        };
        for (const id of [...this.ids]) (this.luns[id] as ScsiLun).nexusReset(nexus, one);
        one();
        return;
      }
      default:
        if (lun === null) return done(TmfResponse.IncorrectLun);
        return done(TmfResponse.FunctionRejected);
    }
  }
}
