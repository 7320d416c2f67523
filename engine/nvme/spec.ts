/**
 * NVMe constants (NVM Express Base Specification 2.0, NVM Command Set 1.0;
 * section numbers in comments) used by the controller, the PCI function and
 * tests. Constants only: the reactor may import this file, as
 * engine/virtio/spec.ts.
 */

/** Controller registers in BAR0 (§3.1.3). */
export const enum Reg {
  Cap = 0x00,
  Vs = 0x08,
  Intms = 0x0c,
  Intmc = 0x10,
  Cc = 0x14,
  Csts = 0x1c,
  Nssr = 0x20,
  Aqa = 0x24,
  Asq = 0x28,
  Acq = 0x30,
}

/** BAR0 layout of vhostd's controller: registers, the doorbell page (mmappable by the VMM), MSI-X table and PBA. */
export const enum Bar0 {
  DoorbellOffset = 0x1000,
  DoorbellBytes = 0x1000,
  MsixTableOffset = 0x2000,
  MsixPbaOffset = 0x3000,
  Size = 0x4000,
}

/** Controller Configuration bits (§3.1.3.5). */
export const enum CcBit {
  En = 1 << 0,
}
export const CC_SHN_SHIFT = 14;
export const CC_MPS_SHIFT = 7;
export const CC_CSS_SHIFT = 4;
export const CC_IOSQES_SHIFT = 16;
export const CC_IOCQES_SHIFT = 20;

/** Controller Status bits (§3.1.3.6). */
export const enum Csts {
  Rdy = 1 << 0,
  Cfs = 1 << 1,
  ShstMask = 3 << 2,
  ShstProcessing = 1 << 2,
  ShstComplete = 2 << 2,
}

/** VS 1.4.0. */
export const NVME_VERSION = 0x00010400;

export const enum AdminOpcode {
  DeleteIoSq = 0x00,
  CreateIoSq = 0x01,
  GetLogPage = 0x02,
  DeleteIoCq = 0x04,
  CreateIoCq = 0x05,
  Identify = 0x06,
  Abort = 0x08,
  SetFeatures = 0x09,
  GetFeatures = 0x0a,
  AsyncEventRequest = 0x0c,
  KeepAlive = 0x18,
  DoorbellBufferConfig = 0x7c,
}

export const enum NvmOpcode {
  Flush = 0x00,
  Write = 0x01,
  Read = 0x02,
  Compare = 0x05,
  WriteZeroes = 0x08,
  DatasetManagement = 0x09,
}

/** Status code types (§4.6.1.2). */
export const enum Sct {
  Generic = 0,
  CommandSpecific = 1,
  MediaError = 2,
}

/**
 * Status as one number: (SCT << 8) | SC, the 11 bits that sit at DW3 bits
 * 27:17 of a completion entry (§4.6.1).
 */
export const enum Status {
  Success = 0x000,
  InvalidOpcode = 0x001,
  InvalidField = 0x002,
  CommandIdConflict = 0x003,
  DataTransferError = 0x004,
  InternalError = 0x006,
  AbortRequested = 0x007,
  AbortedSqDeletion = 0x008,
  InvalidNamespace = 0x00b,
  CommandSequenceError = 0x00c,
  InvalidSglSegmentDescriptor = 0x00d,
  InvalidSglCount = 0x00e,
  DataSglLengthInvalid = 0x00f,
  SglDescriptorTypeInvalid = 0x011,
  InvalidPrpOffset = 0x013,
  LbaOutOfRange = 0x080,
  NamespaceNotReady = 0x082,
  // Command specific (SCT 1)
  CompletionQueueInvalid = 0x100,
  InvalidQueueIdentifier = 0x101,
  InvalidQueueSize = 0x102,
  AbortCommandLimitExceeded = 0x103,
  AsyncEventLimitExceeded = 0x105,
  InvalidFirmwareSlot = 0x106,
  InvalidInterruptVector = 0x108,
  InvalidLogPage = 0x109,
  FeatureNotSaveable = 0x10d,
  InvalidQueueDeletion = 0x10c,
  // Media (SCT 2)
  WriteFault = 0x280,
  UnrecoveredReadError = 0x281,
  CompareFailure = 0x285,
}

/** Do Not Retry: DW3 bit 31, set with every error vhostd reports (a retry would fail the same way). */
export const STATUS_DNR = 0x4000;

export const enum Feature {
  Arbitration = 0x01,
  PowerManagement = 0x02,
  TemperatureThreshold = 0x04,
  ErrorRecovery = 0x05,
  VolatileWriteCache = 0x06,
  NumberOfQueues = 0x07,
  InterruptCoalescing = 0x08,
  InterruptVectorConfig = 0x09,
  WriteAtomicity = 0x0a,
  AsyncEventConfig = 0x0b,
  KeepAliveTimer = 0x0f,
}

export const enum LogPage {
  Error = 0x01,
  Smart = 0x02,
  FirmwareSlot = 0x03,
  ChangedNamespaces = 0x04,
}

export const enum Cns {
  Namespace = 0x00,
  Controller = 0x01,
  ActiveNamespaces = 0x02,
  NamespaceDescriptors = 0x03,
}

/** Async event: type notice (2), info 0 namespace attribute changed, log page 4 (§5.2). */
export const AEN_NS_ATTR_CHANGED = 0x2 | (0x00 << 8) | (LogPage.ChangedNamespaces << 16);
/** Async Event Configuration bit for namespace attribute notices. */
export const AEC_NS_ATTR = 1 << 8;

export const SQE_BYTES = 64;
export const CQE_BYTES = 16;
export const PAGE_BYTES = 4096;
/** Maximum data transfer: 2^MDTS pages of 4 KiB (512 KiB). */
export const MDTS = 7;
/** CAP.MQES + 1: the largest queue. */
export const MAX_QUEUE_ENTRIES = 1024;
/** Outstanding Async Event Requests allowed (AERL + 1). */
export const AER_LIMIT = 4;
/** Highest queue id (I/O queues are 1..MAX_IO_QUEUES); the doorbell page holds 512 doorbells = 256 queue pairs. */
export const MAX_IO_QUEUES = 255;
