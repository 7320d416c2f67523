/**
 * Reservations of one logical unit: SPC-4 persistent reservations
 * (PERSISTENT RESERVE IN/OUT) and SPC-2 RESERVE/RELEASE, with the behaviour
 * of SPDK's lib/scsi/scsi_pr.c: LU scope only; SPEC_I_PT, ALL_TG_PT and
 * APTPL refused; PREEMPT AND ABORT and REGISTER AND MOVE refused; the access
 * check per command type follows scsi_pr_check(), the SPC-2 exceptions for
 * persistent registrations follow scsi2_check_reservation_conflict().
 * Where SPDK departs from SPC-4 the standard is followed (see the notes at
 * release(), clear() and spc2Release()).
 *
 * Registrations are kept per I_T nexus (the transport's number). Nothing is
 * persisted (APTPL is refused), so a restart drops them, as in SPDK.
 *
 * Thread: the worker that owns the logical unit.
 */
import { ScsiTask } from './task';
import { Asc, Op, PrInAction, PrOutAction, PrType, ScsiStatus, SenseKey } from './spec';

/** Most registrants one logical unit keeps (more: INSUFFICIENT REGISTRATION RESOURCES). */
export const MAX_REGISTRANTS = 64;

export interface Registrant {
  nexus: number;
  key: bigint;
}

function allRegistrantsType(t: number): boolean {
  return t === PrType.WriteExclusiveAllRegistrants || t === PrType.ExclusiveAccessAllRegistrants;
}

function validType(t: number): boolean {
  return t === 1 || t === 3 || (t >= 5 && t <= 8);
}

function readBe64(b: Uint8Array, off: number): bigint {
  let v = 0n;
  for (let i = 0; i < 8; i++) v = (v << 8n) | BigInt(b[off + i]);
  return v;
}

function writeBe64(b: Uint8Array, off: number, v: bigint): void {
  for (let i = 7; i >= 0; i--) {
    b[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

function writeBe32(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

/** Where a command stands under the current reservation. */
export const enum AccessClass {
  /** Always allowed (INQUIRY, REPORT LUNS, REQUEST SENSE, TUR, READ CAPACITY, PR IN, RESERVE/RELEASE handled themselves). */
  Always = 0,
  /** Allowed for registrants (MODE SENSE/SELECT). */
  Registered = 1,
  /** Reads the medium. */
  Read = 2,
  /** Changes the medium (writes, UNMAP, SYNCHRONIZE CACHE, as SPDK counts it). */
  Write = 3,
  /** PERSISTENT RESERVE OUT: depends on the service action. */
  PrOut = 4,
  /** Anything else: conflicts with another nexus's reservation. */
  Other = 5,
}

export function accessClassOf(opcode: number): AccessClass {
  switch (opcode) {
    case Op.Inquiry:
    case Op.ReportLuns:
    case Op.RequestSense:
    case Op.TestUnitReady:
    case Op.StartStopUnit:
    case Op.ReadCapacity10:
    case Op.PersistentReserveIn:
    case Op.ServiceActionIn16:
    case Op.Reserve6:
    case Op.Reserve10:
    case Op.Release6:
    case Op.Release10:
      return AccessClass.Always;
    case Op.ModeSelect6:
    case Op.ModeSelect10:
    case Op.ModeSense6:
    case Op.ModeSense10:
      return AccessClass.Registered;
    case Op.Read6:
    case Op.Read10:
    case Op.Read12:
    case Op.Read16:
    case Op.Verify10:
    case Op.Verify16:
      return AccessClass.Read;
    case Op.Write6:
    case Op.Write10:
    case Op.Write12:
    case Op.Write16:
    case Op.WriteSame10:
    case Op.WriteSame16:
    case Op.CompareAndWrite:
    case Op.Unmap:
    case Op.SynchronizeCache10:
    case Op.SynchronizeCache16:
      return AccessClass.Write;
    case Op.PersistentReserveOut:
      return AccessClass.PrOut;
    default:
      return AccessClass.Other;
  }
}

/** PR OUT parameter list length (SPEC_I_PT=0): SPC-4 §6.16.3. */
export const PR_OUT_PARAM_BYTES = 24;

export class Reservations {
  readonly registrants: Registrant[] = [];
  generation = 0;
  /** The reservation holder (a registrant, or the SPC-2 holder), null when the LU is not reserved. */
  holder: Registrant | null = null;
  type = 0;
  /** Reservation key of the persistent reservation (0 for all-registrants types and SPC-2). */
  key = 0n;
  /** The reservation is an SPC-2 RESERVE. */
  spc2 = false;

  private find(nexus: number): Registrant | null {
    for (const r of this.registrants) if (r.nexus === nexus) return r;
    return null;
  }

  private isHolder(reg: Registrant | null): boolean {
    if (reg !== null && this.holder !== null && !this.spc2 && allRegistrantsType(this.type)) return true;
    return reg !== null && this.holder === reg;
  }

  /** Drop the reservation held through `reg` (all-registrants types pass to another registrant). */
  private releaseFrom(reg: Registrant): void {
    if (allRegistrantsType(this.type)) {
      for (const r of this.registrants) {
        if (r !== reg) {
          this.holder = r;
          return;
        }
      }
    }
    this.clearReservation();
  }

  private clearReservation(): void {
    this.holder = null;
    this.type = 0;
    this.key = 0n;
    this.spc2 = false;
  }

  private unregister(reg: Registrant): void {
    const i = this.registrants.indexOf(reg);
    if (i >= 0) this.registrants.splice(i, 1);
    if (this.isHolder(reg)) this.releaseFrom(reg);
    this.generation++;
  }

  private removeByKey(key: bigint, keep: Registrant | null = null): void {
    for (const r of [...this.registrants]) if (r.key === key && r !== keep) this.unregister(r);
  }

  /** An I_T nexus reset: an SPC-2 reservation it held is released (persistent state survives). */
  nexusReset(nexus: number): void {
    if (this.spc2 && this.holder !== null && this.holder.nexus === nexus) this.clearReservation();
  }

  /** A logical unit reset releases an SPC-2 reservation (SPC-2 §5.5.1); persistent ones survive. */
  lunReset(): void {
    if (this.spc2) this.clearReservation();
  }

  /**
   * May `task` run under the current reservation? Sets RESERVATION CONFLICT
   * and returns false when not (SPDK scsi_pr_check / scsi2_reserve_check).
   */
  check(task: ScsiTask): boolean {
    const holder = this.holder;
    if (holder === null) return true;
    const opcode = task.cdb[0];
    if (this.spc2) {
      if (opcode === Op.Inquiry || opcode === Op.Release6 || opcode === Op.Release10) return true;
      if (holder.nexus === task.nexus) return true;
      task.setStatus(ScsiStatus.ReservationConflict);
      return false;
    }
    const reg = this.find(task.nexus);
    if (this.isHolder(reg)) return true;
    let write = false;
    switch (accessClassOf(opcode)) {
      case AccessClass.Always:
        return true;
      case AccessClass.Registered:
        if (reg !== null) return true;
        break;
      case AccessClass.PrOut: {
        const action = task.cdb[1] & 0x1f;
        if (action === PrOutAction.Register || action === PrOutAction.RegisterAndIgnoreExistingKey) return true;
        if (reg !== null && (action === PrOutAction.Release || action === PrOutAction.Clear || action === PrOutAction.Preempt || action === PrOutAction.PreemptAndAbort)) return true;
        break;
      }
      case AccessClass.Read:
      case AccessClass.Write: {
        write = accessClassOf(opcode) === AccessClass.Write;
        switch (this.type) {
          case PrType.WriteExclusive:
            if (!write) return true;
            break;
          case PrType.WriteExclusiveRegistrantsOnly:
          case PrType.WriteExclusiveAllRegistrants:
            if (reg !== null || !write) return true;
            break;
          case PrType.ExclusiveAccessRegistrantsOnly:
          case PrType.ExclusiveAccessAllRegistrants:
            if (reg !== null) return true;
            break;
          default:
            break;
        }
        break;
      }
      default:
        break;
    }
    task.setStatus(ScsiStatus.ReservationConflict);
    return false;
  }

  /** PERSISTENT RESERVE OUT with its 24-byte parameter list in `param`. */
  out(task: ScsiTask, param: Uint8Array): void {
    const cdb = task.cdb;
    const action = cdb[1] & 0x1f;
    const scope = cdb[2] >> 4;
    const type = cdb[2] & 0x0f;
    const rkey = readBe64(param, 0);
    const saKey = readBe64(param, 8);
    const flags = param[20];
    // SPEC_I_PT (bit 3), ALL_TG_PT (bit 2), APTPL (bit 0): not supported (as SPDK).
    const unsupportedFlags = (flags & 0x0d) !== 0;
    switch (action) {
      case PrOutAction.Register:
      case PrOutAction.RegisterAndIgnoreExistingKey:
        if (unsupportedFlags) return task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
        return this.register(task, action, rkey, saKey);
      case PrOutAction.Reserve:
        if (scope !== 0 || !validType(type)) return task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
        if (unsupportedFlags) return task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
        return this.reserve(task, type, rkey);
      case PrOutAction.Release:
        if (scope !== 0 || !validType(type)) return task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
        return this.release(task, type, rkey);
      case PrOutAction.Clear:
        return this.clear(task, rkey);
      case PrOutAction.Preempt:
        if (scope !== 0 || !validType(type)) return task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
        return this.preempt(task, type, rkey, saKey);
      default:
        // PREEMPT AND ABORT, REGISTER AND MOVE and reserved codes: not supported (as SPDK).
        return task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
    }
  }

  private register(task: ScsiTask, action: number, rkey: bigint, saKey: bigint): void {
    const reg = this.find(task.nexus);
    if (reg === null) {
      if (rkey !== 0n && action === PrOutAction.Register) return task.setStatus(ScsiStatus.ReservationConflict);
      if (saKey === 0n) return;
      if (this.registrants.length >= MAX_REGISTRANTS) return task.checkCondition(SenseKey.IllegalRequest, Asc.InsufficientRegistrationResources);
      this.registrants.push({ nexus: task.nexus, key: saKey });
      this.generation++;
      return;
    }
    if (rkey !== reg.key && action === PrOutAction.Register) return task.setStatus(ScsiStatus.ReservationConflict);
    if (saKey === 0n) {
      this.unregister(reg);
    } else {
      if (this.holder === reg && !allRegistrantsType(this.type)) this.key = saKey;
      reg.key = saKey;
      this.generation++;
    }
  }

  private reserve(task: ScsiTask, type: number, rkey: bigint): void {
    const reg = this.find(task.nexus);
    if (reg === null || reg.key !== rkey) return task.setStatus(ScsiStatus.ReservationConflict);
    if (this.holder !== null) {
      // Same type by the holder: nothing changes; anything else conflicts (SPC-4 §5.12.3).
      if (this.spc2 || type !== this.type || !this.isHolder(reg)) return task.setStatus(ScsiStatus.ReservationConflict);
      return;
    }
    this.holder = reg;
    this.type = type;
    this.key = allRegistrantsType(type) ? 0n : rkey;
    this.spc2 = false;
  }

  /**
   * RELEASE. SPDK answers an unregistered nexus with NOT READY and a type or
   * key mismatch with INVALID FIELD IN CDB; SPC-4 §5.12.11.2 says
   * RESERVATION CONFLICT for an unregistered nexus or a wrong key, and
   * INVALID RELEASE OF PERSISTENT RESERVATION for a wrong type: done here.
   */
  private release(task: ScsiTask, type: number, rkey: bigint): void {
    const reg = this.find(task.nexus);
    if (reg === null || reg.key !== rkey) return task.setStatus(ScsiStatus.ReservationConflict);
    if (this.holder === null || this.spc2 || !this.isHolder(reg)) return;
    if (type !== this.type) return task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidReleaseOfPersistentReservation);
    this.clearReservation();
  }

  /** CLEAR: an unregistered nexus gets RESERVATION CONFLICT (SPC-4 §5.12.11.2; SPDK: NOT READY). */
  private clear(task: ScsiTask, rkey: bigint): void {
    const reg = this.find(task.nexus);
    if (reg === null || reg.key !== rkey) return task.setStatus(ScsiStatus.ReservationConflict);
    this.registrants.length = 0;
    if (!this.spc2) this.clearReservation();
    this.generation++;
  }

  private preempt(task: ScsiTask, type: number, rkey: bigint, saKey: bigint): void {
    const reg = this.find(task.nexus);
    if (reg === null || reg.key !== rkey) return task.setStatus(ScsiStatus.ReservationConflict);
    if (this.holder === null || this.spc2) {
      if (saKey === 0n) return task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
      this.removeByKey(saKey, reg);
      this.generation++;
      return;
    }
    if (allRegistrantsType(this.type)) {
      if (saKey !== 0n) {
        this.removeByKey(saKey, reg);
      } else {
        for (const r of [...this.registrants]) if (r !== reg) this.unregister(r);
        this.holder = reg;
        this.type = type;
        this.key = allRegistrantsType(type) ? 0n : rkey;
      }
      this.generation++;
      return;
    }
    if (saKey !== this.key) {
      if (saKey === 0n) return task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
      this.removeByKey(saKey, reg);
      this.generation++;
      return;
    }
    // Preempt the holder's reservation: drop every registration with its key (not our own) and take it.
    this.removeByKey(saKey, reg);
    this.holder = reg;
    this.type = type;
    this.key = allRegistrantsType(type) ? 0n : rkey;
    this.generation++;
  }

  /** PERSISTENT RESERVE IN into `data`; returns the length of the full answer (the caller clips it to the allocation length). */
  in(task: ScsiTask, data: Uint8Array): number {
    const action = task.cdb[1] & 0x1f;
    data.fill(0, 0, 8);
    writeBe32(data, 0, this.generation);
    switch (action) {
      case PrInAction.ReadKeys: {
        let n = 8;
        for (const r of this.registrants) {
          writeBe64(data, n, r.key);
          n += 8;
        }
        writeBe32(data, 4, n - 8);
        return n;
      }
      case PrInAction.ReadReservation: {
        if (this.holder === null || this.spc2) {
          writeBe32(data, 4, 0);
          return 8;
        }
        data.fill(0, 8, 24);
        writeBe32(data, 4, 16);
        writeBe64(data, 8, allRegistrantsType(this.type) ? 0n : this.key);
        data[21] = this.type & 0x0f; // scope 0 (LU)
        return 24;
      }
      case PrInAction.ReportCapabilities: {
        data.fill(0, 0, 8);
        data[1] = 8; // length
        data[2] = 0x10; // CRH: SPC-2 RESERVE/RELEASE handled as SPC-4 §5.12.3 says
        data[3] = 0x80; // TMV: the type mask is valid; ALLOW COMMANDS 0
        // Persistent reservation type mask: WR_EX_AR (bit 7), EX_AC_RO, WR_EX_RO, EX_AC, WR_EX (bit 1); EX_AC_AR (byte 5 bit 0).
        data[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
        data[5] = 0x01;
        return 8;
      }
      case PrInAction.ReadFullStatus: {
        // One 24-byte descriptor per registrant, no TransportID (the transport has none to give, as SPDK's vhost).
        let n = 8;
        for (const r of this.registrants) {
          data.fill(0, n, n + 24);
          writeBe64(data, n, r.key);
          const holds = this.holder !== null && !this.spc2 && this.isHolder(r);
          if (holds) {
            data[n + 12] = 0x01; // R_HOLDER
            data[n + 13] = this.type & 0x0f;
          }
          data[n + 19] = 1; // RELATIVE TARGET PORT IDENTIFIER 1
          n += 24;
        }
        writeBe32(data, 4, n - 8);
        return n;
      }
      default:
        task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
        return 0;
    }
  }

  /**
   * SPC-2 RESERVE / RELEASE with persistent registrations present (SPC-4
   * §5.12.3, as SPDK's scsi2_check_reservation_conflict): 1 = GOOD with no
   * effect, 0 = go on, -1 = RESERVATION CONFLICT (status set).
   */
  private spc2Conflict(task: ScsiTask): number {
    const reg = this.find(task.nexus);
    if (reg !== null) {
      if (!this.spc2 && this.isHolder(reg)) return 1;
      if (!this.spc2 && (this.type === PrType.WriteExclusiveRegistrantsOnly || this.type === PrType.ExclusiveAccessRegistrantsOnly)) return 1;
      task.setStatus(ScsiStatus.ReservationConflict);
      return -1;
    }
    if (this.registrants.length > 0) {
      task.setStatus(ScsiStatus.ReservationConflict);
      return -1;
    }
    return 0;
  }

  /** RESERVE(6)/(10). */
  spc2Reserve(task: ScsiTask): void {
    // LONGID / 3RDPTY (and the obsolete extent bit): not supported (as SPDK).
    if ((task.cdb[1] & 0x13) !== 0) return task.checkCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
    if (this.spc2Conflict(task) !== 0) return;
    if (this.holder !== null && (!this.spc2 || this.holder.nexus !== task.nexus)) return task.setStatus(ScsiStatus.ReservationConflict);
    this.holder = { nexus: task.nexus, key: 0n };
    this.spc2 = true;
    this.type = 0;
    this.key = 0n;
  }

  /**
   * RELEASE(6)/(10). SPC-2 §7.23: a release with no reservation, or from a
   * nexus that does not hold it, is GOOD with no effect (SPDK answers the
   * first with INVALID FIELD IN CDB and releases in the second).
   */
  spc2Release(task: ScsiTask): void {
    if (this.spc2Conflict(task) !== 0) return;
    if (this.spc2 && this.holder !== null && this.holder.nexus === task.nexus) this.clearReservation();
  }
}
