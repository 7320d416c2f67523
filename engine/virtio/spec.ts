/**
 * Every virtio constant vhostd uses, in one place, with the spec section it
 * comes from (virtio 1.2). Constants only: the reactor imports this module
 * as it imports control.ts (feature negotiation, config space), and nothing
 * here runs.
 */

/** virtio feature bits (virtio 1.2 §6, §5.2.3). */
export const enum VirtioFeature {
  RingIndirectDesc = 28,
  RingEventIdx = 29,
  VhostUserProtocolFeatures = 30,
  Version1 = 32,
  AccessPlatform = 33,
  RingPacked = 34,
}

/** virtio-blk feature bits (virtio 1.2 §5.2.3). */
export const enum BlkFeature {
  SizeMax = 1,
  SegMax = 2,
  Geometry = 4,
  Ro = 5,
  BlkSize = 6,
  Flush = 9,
  Topology = 10,
  ConfigWce = 11,
  Mq = 12,
  Discard = 13,
  WriteZeroes = 14,
}

/** Largest split queue size (§2.7: Queue Size is at most 32768). */
export const MAX_QUEUE_SIZE = 32768;

/** Size of one split-ring descriptor (§2.7.5): le64 addr, le32 len, le16 flags, le16 next. */
export const DESC_SIZE = 16;

/** Descriptor flags (§2.7.5). */
export const enum DescFlag {
  Next = 1,
  Write = 2,
  Indirect = 4,
}

/** VRING_AVAIL_F_NO_INTERRUPT (§2.7.7): the driver asks for no used-buffer notifications. */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
/** VRING_USED_F_NO_NOTIFY (§2.7.10): the device asks for no available-buffer notifications. */
export const VRING_USED_F_NO_NOTIFY = 1;

/** virtio-blk request types (§5.2.6). */
export const enum BlkType {
  In = 0,
  Out = 1,
  Flush = 4,
  GetId = 8,
  GetLifetime = 10,
  Discard = 11,
  WriteZeroes = 13,
}

/** virtio-blk status byte values (§5.2.6). */
export const enum BlkStatus {
  Ok = 0,
  IoErr = 1,
  Unsupp = 2,
}

/** virtio-blk request header: le32 type, le32 ioprio, le64 sector (§5.2.6). */
export const BLK_HEADER_SIZE = 16;
/** virtio-blk sectors are always 512 bytes (§5.2.6). */
export const BLK_SECTOR_SIZE = 512;
/** Bytes of the GET_ID answer (§5.2.6: VIRTIO_BLK_ID_BYTES). */
export const BLK_ID_BYTES = 20;
/** Bytes of a discard / write-zeroes segment: le64 sector, le32 num_sectors, le32 flags (§5.2.6). */
export const BLK_DWZ_SEGMENT_SIZE = 16;
/** VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP (§5.2.6). */
export const BLK_DWZ_FLAG_UNMAP = 1;

/**
 * The limits vhostd's virtio-blk device offers in its config space
 * (virtio 1.2 §5.2.4) and its request parser enforces: the reactor writes
 * them, the engine checks against them, so both read them here.
 *  - SizeMax: the largest data segment (SPDK offers 128 KiB; 0 would clamp a
 *    Linux guest to 4 KiB segments).
 *  - SegMax: data segments per request; a Linux driver adds a header and a
 *    status descriptor, so seg_max + 2 must fit a queue of 128 (QEMU's
 *    default queue-size for vhost-user-blk; §2.7.5.3.1).
 *  - Discard / write zeroes: one segment per request (as SPDK), at most
 *    32768 sectors (16 MiB) so a malloc zero-fill stays short on the poll loop.
 */
export const enum BlkLimit {
  SizeMax = 131072,
  SegMax = 126,
  MaxDiscardSectors = 32768,
  MaxDiscardSeg = 1,
  MaxWriteZeroesSectors = 32768,
  MaxWriteZeroesSeg = 1,
}

/** Byte offsets of struct virtio_blk_config's fields (virtio 1.2 §5.2.4), little-endian. */
export const enum BlkConfigOffset {
  Capacity = 0,
  SizeMax = 8,
  SegMax = 12,
  Geometry = 16,
  BlkSize = 20,
  PhysicalBlockExp = 24,
  AlignmentOffset = 25,
  MinIoSize = 26,
  OptIoSize = 28,
  Wce = 32,
  NumQueues = 34,
  MaxDiscardSectors = 36,
  MaxDiscardSeg = 40,
  DiscardSectorAlignment = 44,
  MaxWriteZeroesSectors = 48,
  MaxWriteZeroesSeg = 52,
  WriteZeroesMayUnmap = 56,
  /** Up to write_zeroes_may_unmap plus 3 unused bytes. */
  Size = 60,
}

/** virtio-scsi feature bits (virtio 1.2 §5.6.3). */
export const enum ScsiFeature {
  Inout = 0,
  Hotplug = 1,
  Change = 2,
  T10Pi = 3,
}

/** virtio-scsi queues (§5.6.2): 0 control, 1 event, 2.. request queues. */
export const SCSI_CONTROL_QUEUE = 0;
export const SCSI_EVENT_QUEUE = 1;
export const SCSI_FIRST_REQUEST_QUEUE = 2;

/** Default cdb_size and sense_size of the config space (§5.6.4); QEMU's vhost-user-scsi refuses other values. */
export const SCSI_CDB_SIZE = 32;
export const SCSI_SENSE_SIZE = 96;

/**
 * struct virtio_scsi_req_cmd (§5.6.6.1) without T10_PI: the device-readable
 * header is lun[8], le64 id, u8 task_attr, u8 prio, u8 crn, u8 cdb[32];
 * the device-writable response is le32 sense_len, le32 residual,
 * le16 status_qualifier, u8 status, u8 response, u8 sense[96].
 */
export const enum ScsiCmdOffset {
  Lun = 0,
  Id = 8,
  TaskAttr = 16,
  Prio = 17,
  Crn = 18,
  Cdb = 19,
  ReqSize = 19 + SCSI_CDB_SIZE,
  RespSenseLen = 0,
  RespResidual = 4,
  RespStatusQualifier = 8,
  RespStatus = 10,
  RespResponse = 11,
  RespSense = 12,
  RespSize = 12 + SCSI_SENSE_SIZE,
}

/** virtio-scsi response codes (§5.6.6.1, §5.6.6.2). */
export const enum ScsiResponse {
  Ok = 0,
  Overrun = 1,
  Aborted = 2,
  BadTarget = 3,
  Reset = 4,
  Busy = 5,
  TransportFailure = 6,
  TargetFailure = 7,
  NexusFailure = 8,
  Failure = 9,
  FunctionSucceeded = 10,
  FunctionRejected = 11,
  IncorrectLun = 12,
  FunctionComplete = 0,
}

/** Control queue request types (§5.6.6.2). */
export const enum ScsiCtrlType {
  Tmf = 0,
  AnQuery = 1,
  AnSubscribe = 2,
}

/** VIRTIO_SCSI_T_TMF subtypes (§5.6.6.2.1). */
export const enum ScsiTmfSubtype {
  AbortTask = 0,
  AbortTaskSet = 1,
  ClearAca = 2,
  ClearTaskSet = 3,
  ItNexusReset = 4,
  LogicalUnitReset = 5,
  QueryTask = 6,
  QueryTaskSet = 7,
}

/** struct virtio_scsi_ctrl_tmf: readable le32 type, le32 subtype, u8 lun[8], le64 id; writable u8 response. */
export const SCSI_TMF_REQ_SIZE = 24;
export const SCSI_TMF_RESP_SIZE = 1;
/** struct virtio_scsi_ctrl_an: readable le32 type, u8 lun[8], le32 event_requested; writable le32 event_actual, u8 response. */
export const SCSI_AN_REQ_SIZE = 16;
export const SCSI_AN_RESP_SIZE = 5;

/** struct virtio_scsi_event (§5.6.6.3): le32 event, u8 lun[8], le32 reason. */
export const SCSI_EVENT_SIZE = 16;

/** Event types (§5.6.6.3). */
export const enum ScsiEvent {
  NoEvent = 0,
  TransportReset = 1,
  AsyncNotify = 2,
  ParamChange = 3,
}
/** Set in `event` when the device had to drop events for want of buffers (§5.6.6.3). */
export const SCSI_EVENTS_MISSED = 0x80000000;

/** VIRTIO_SCSI_T_TRANSPORT_RESET reasons (§5.6.6.3.1). */
export const enum ScsiResetReason {
  Hard = 0,
  Rescan = 1,
  Removed = 2,
}

/** Targets a vhostd virtio-scsi controller has (SPDK's SPDK_VHOST_SCSI_CTRLR_MAX_DEVS), each with LUN 0. */
export const SCSI_MAX_TARGETS = 8;
