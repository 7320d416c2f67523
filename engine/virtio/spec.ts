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
