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
