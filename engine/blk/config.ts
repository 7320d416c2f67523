/**
 * What a virtio-blk device offers the driver: its feature bits and its
 * configuration space (virtio 1.2 §5.2.3, §5.2.4). The reactor imports this
 * module (with control.ts, the only engine modules it may import), so it
 * imports nothing else: no addon, no worker code. The request parser
 * (parse.ts) enforces the same limits.
 *
 * Thread: any.
 */
import { BLK_SECTOR_SIZE, BlkFeature, VirtioFeature } from '../virtio/spec';

/** Bytes of struct virtio_blk_config up to write_zeroes_may_unmap + 3 unused bytes. */
export const BLK_CONFIG_SIZE = 60;

/**
 * size_max: the largest single data segment the driver may use. SPDK offers
 * 128 KiB; 0 would clamp a Linux guest to 4 KiB segments.
 */
export const BLK_SIZE_MAX = 128 * 1024;

/**
 * seg_max: data segments per request. A Linux driver adds one descriptor
 * for the header and one for the status, so a request takes seg_max + 2
 * descriptors, which must fit a queue of 128 (QEMU's default queue-size for
 * vhost-user-blk; §2.7.5.3.1: a chain is never longer than the queue size).
 * Drivers with smaller queues limit themselves to their queue size.
 */
export const BLK_SEG_MAX = 126;

/**
 * Discard limits: one segment per request (as SPDK), at most 32768 sectors
 * (16 MiB) per segment so a malloc zero-fill stays short on the poll loop.
 */
export const BLK_MAX_DISCARD_SEG = 1;
export const BLK_MAX_DISCARD_SECTORS = 32768;
/** Write-zeroes limits, same reasoning. */
export const BLK_MAX_WRITE_ZEROES_SEG = 1;
export const BLK_MAX_WRITE_ZEROES_SECTORS = 32768;

/** A feature bit as a mask (the bit numbers live in engine/virtio/spec.ts). */
const bit = (n: number): bigint => 1n << BigInt(n);
const F_SIZE_MAX = bit(BlkFeature.SizeMax);
const F_SEG_MAX = bit(BlkFeature.SegMax);
const F_RO = bit(BlkFeature.Ro);
const F_BLK_SIZE = bit(BlkFeature.BlkSize);
const F_FLUSH = bit(BlkFeature.Flush);
const F_TOPOLOGY = bit(BlkFeature.Topology);
const F_MQ = bit(BlkFeature.Mq);
const F_DISCARD = bit(BlkFeature.Discard);
const F_WRITE_ZEROES = bit(BlkFeature.WriteZeroes);
const F_RING_INDIRECT_DESC = bit(VirtioFeature.RingIndirectDesc);
const F_RING_EVENT_IDX = bit(VirtioFeature.RingEventIdx);
const F_VERSION_1 = bit(VirtioFeature.Version1);

/**
 * Features offered for a virtio-blk device. Bit 30
 * (VHOST_USER_F_PROTOCOL_FEATURES) is the reactor's to add. A readonly
 * device offers RO and neither DISCARD nor WRITE_ZEROES. CONFIG_WCE is not
 * offered: the cache mode is fixed (writeback, FLUSH offered).
 */
export function blkFeatures(readonly: boolean): bigint {
  let f =
    F_SIZE_MAX |
    F_SEG_MAX |
    F_BLK_SIZE |
    F_FLUSH |
    F_TOPOLOGY |
    F_MQ |
    F_RING_INDIRECT_DESC |
    F_RING_EVENT_IDX |
    F_VERSION_1;
  f |= readonly ? F_RO : F_DISCARD | F_WRITE_ZEROES;
  return f;
}

/**
 * The device's config space (little-endian, §5.2.4):
 *   0 capacity u64 (512-byte sectors)  8 size_max u32  12 seg_max u32
 *  16 geometry {u16 cylinders, u8 heads, u8 sectors} (0: GEOMETRY not offered)
 *  20 blk_size u32  24 physical_block_exp u8  25 alignment_offset u8
 *  26 min_io_size u16 (blocks)  28 opt_io_size u32 (blocks)
 *  32 wce u8  33 unused  34 num_queues u16
 *  36 max_discard_sectors u32  40 max_discard_seg u32  44 discard_sector_alignment u32
 *  48 max_write_zeroes_sectors u32  52 max_write_zeroes_seg u32
 *  56 write_zeroes_may_unmap u8  57..59 unused
 */
export function blkConfigSpace(
  bdev: { blockSize: number; numBlocks: number },
  numQueues: number,
  readonly: boolean,
): Uint8Array {
  const { blockSize, numBlocks } = bdev;
  if (!Number.isInteger(blockSize) || blockSize < 512 || blockSize > 0x80000000 || (blockSize & (blockSize - 1)) !== 0) {
    throw new RangeError(`blockSize must be a power of 2 >= 512, got ${blockSize}`);
  }
  if (!Number.isSafeInteger(numBlocks) || numBlocks < 0) {
    throw new RangeError(`numBlocks must be a non-negative safe integer, got ${numBlocks}`);
  }
  if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 0xffff) {
    throw new RangeError(`numQueues must be in [1, 65535], got ${numQueues}`);
  }
  const buf = new Uint8Array(BLK_CONFIG_SIZE);
  const v = new DataView(buf.buffer);
  const sectorsPerBlock = blockSize / BLK_SECTOR_SIZE;
  v.setBigUint64(0, BigInt(numBlocks) * BigInt(sectorsPerBlock), true);
  v.setUint32(8, BLK_SIZE_MAX, true);
  v.setUint32(12, BLK_SEG_MAX, true);
  v.setUint32(20, blockSize, true);
  v.setUint8(24, 0); // one logical block per physical block
  v.setUint8(25, 0);
  v.setUint16(26, 1, true); // min_io_size: one block
  v.setUint32(28, 0, true); // opt_io_size: no preference
  v.setUint8(32, 1); // writeback: the driver sends FLUSH
  v.setUint16(34, numQueues, true);
  if (!readonly) {
    v.setUint32(36, BLK_MAX_DISCARD_SECTORS, true);
    v.setUint32(40, BLK_MAX_DISCARD_SEG, true);
    v.setUint32(44, sectorsPerBlock, true);
    v.setUint32(48, BLK_MAX_WRITE_ZEROES_SECTORS, true);
    v.setUint32(52, BLK_MAX_WRITE_ZEROES_SEG, true);
    v.setUint8(56, 0); // write_zeroes_may_unmap: the driver does not set the unmap flag
  }
  return buf;
}
