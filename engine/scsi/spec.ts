/**
 * SCSI constants the target uses (SAM-5, SPC-4/5, SBC-3/4): status codes,
 * sense keys, additional sense codes, operation codes, task management
 * functions. Names follow the standards. Pure data; no virtio here.
 */

/** SAM-5 status codes. */
export const enum ScsiStatus {
  Good = 0x00,
  CheckCondition = 0x02,
  ConditionMet = 0x04,
  Busy = 0x08,
  ReservationConflict = 0x18,
  TaskSetFull = 0x28,
  AcaActive = 0x30,
  TaskAborted = 0x40,
}

/** SPC-4 sense keys. */
export const enum SenseKey {
  NoSense = 0x0,
  RecoveredError = 0x1,
  NotReady = 0x2,
  MediumError = 0x3,
  HardwareError = 0x4,
  IllegalRequest = 0x5,
  UnitAttention = 0x6,
  DataProtect = 0x7,
  AbortedCommand = 0xb,
  Miscompare = 0xe,
}

/**
 * Additional sense code and qualifier as one number, ASC << 8 | ASCQ
 * (SPC-4 table "ASC and ASCQ assignments").
 */
export const enum Asc {
  NoAdditionalSense = 0x0000,
  WriteError = 0x0c00,
  UnrecoveredReadError = 0x1100,
  ParameterListLengthError = 0x1a00,
  MiscompareDuringVerify = 0x1d00,
  InvalidCommandOperationCode = 0x2000,
  LbaOutOfRange = 0x2100,
  InvalidFieldInCdb = 0x2400,
  LogicalUnitNotSupported = 0x2500,
  InvalidFieldInParameterList = 0x2600,
  InvalidReleaseOfPersistentReservation = 0x2604,
  WriteProtected = 0x2700,
  PowerOnResetOccurred = 0x2900,
  BusDeviceResetOccurred = 0x2903,
  ItNexusLossOccurred = 0x2907,
  ModeParametersChanged = 0x2a01,
  ReservationsPreempted = 0x2a03,
  ReservationsReleased = 0x2a04,
  RegistrationsPreempted = 0x2a05,
  CapacityDataHasChanged = 0x2a09,
  SavingParametersNotSupported = 0x3900,
  ReportedLunsDataHasChanged = 0x3f0e,
  InsufficientRegistrationResources = 0x5504,
}

/** Operation codes the target knows (SPC-4, SBC-3). */
export const enum Op {
  TestUnitReady = 0x00,
  RequestSense = 0x03,
  Read6 = 0x08,
  Write6 = 0x0a,
  Inquiry = 0x12,
  ModeSelect6 = 0x15,
  Reserve6 = 0x16,
  Release6 = 0x17,
  ModeSense6 = 0x1a,
  StartStopUnit = 0x1b,
  ReadCapacity10 = 0x25,
  Read10 = 0x28,
  Write10 = 0x2a,
  Verify10 = 0x2f,
  SynchronizeCache10 = 0x35,
  WriteSame10 = 0x41,
  Unmap = 0x42,
  ModeSelect10 = 0x55,
  Reserve10 = 0x56,
  Release10 = 0x57,
  ModeSense10 = 0x5a,
  PersistentReserveIn = 0x5e,
  PersistentReserveOut = 0x5f,
  Read16 = 0x88,
  CompareAndWrite = 0x89,
  Write16 = 0x8a,
  Verify16 = 0x8f,
  SynchronizeCache16 = 0x91,
  WriteSame16 = 0x93,
  ServiceActionIn16 = 0x9e,
  ReportLuns = 0xa0,
  Read12 = 0xa8,
  Write12 = 0xaa,
}

/** SERVICE ACTION IN (16) service actions. */
export const SAI_READ_CAPACITY_16 = 0x10;

/** Which way data moves, from the device's point of view. */
export const enum ScsiDataDir {
  None = 0,
  /** Data-out: the initiator's buffers are read (WRITE, parameter lists). */
  ToDevice = 1,
  /** Data-in: the initiator's buffers are written (READ, INQUIRY). */
  FromDevice = 2,
}

/** How the data buffers compared with what the command moved (SAM-5 residuals). */
export const enum ScsiResidual {
  None = 0,
  /** The buffers were longer than the transfer: `residual` bytes of them were not used. */
  Underflow = 1,
  /** The command called for `residual` bytes more than the buffers hold (virtio-scsi: VIRTIO_SCSI_S_OVERRUN). */
  Overflow = 2,
}

/** Task management functions (SAM-5 §7). */
export const enum TmfFunction {
  AbortTask = 0,
  AbortTaskSet = 1,
  ClearAca = 2,
  ClearTaskSet = 3,
  LogicalUnitReset = 4,
  ItNexusReset = 5,
  QueryTask = 6,
  QueryTaskSet = 7,
  QueryAsyncEvent = 8,
}

/** Task management service responses (SAM-5 §7.1). */
export const enum TmfResponse {
  FunctionComplete = 0,
  FunctionSucceeded = 1,
  FunctionRejected = 2,
  IncorrectLun = 3,
}

/** Persistent reservation types (SPC-4 table "Persistent reservation type codes"). */
export const enum PrType {
  WriteExclusive = 1,
  ExclusiveAccess = 3,
  WriteExclusiveRegistrantsOnly = 5,
  ExclusiveAccessRegistrantsOnly = 6,
  WriteExclusiveAllRegistrants = 7,
  ExclusiveAccessAllRegistrants = 8,
}

/** PERSISTENT RESERVE OUT service actions. */
export const enum PrOutAction {
  Register = 0,
  Reserve = 1,
  Release = 2,
  Clear = 3,
  Preempt = 4,
  PreemptAndAbort = 5,
  RegisterAndIgnoreExistingKey = 6,
  RegisterAndMove = 7,
}

/** PERSISTENT RESERVE IN service actions. */
export const enum PrInAction {
  ReadKeys = 0,
  ReadReservation = 1,
  ReportCapabilities = 2,
  ReadFullStatus = 3,
}

/** Fixed-format sense data length this target produces (SPC-4 §4.5.3: additional length 10). */
export const SENSE_FIXED_BYTES = 18;
/** Size of the sense buffer a task owns (virtio-scsi carries up to 96; fixed format needs 18). */
export const SENSE_BUFFER_BYTES = 32;

/**
 * CDB length by operation code group (SPC-4 §4.2.5.1): 6, 10, 10, reserved,
 * 16, 12, vendor, vendor. Groups 3, 6 and 7 give 0 (unknown length).
 */
export function cdbLengthOf(opcode: number): number {
  switch (opcode >> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;
  }
}
