/**
 * The virtio-blk device model, reactor half: the features and config space
 * it offers (virtio 1.2 §5.2), SET_CONFIG, the engine payload, how
 * vhost_get_controllers and save_config describe it. One bdev.
 * Thread: main (reactor).
 */
import type { BlkModelDesc } from '../../../engine/control';
import { BlkConfigOffset, BlkFeature, BlkLimit, VirtioFeature } from '../../../engine/virtio/spec';
import type { ConfigCall } from '../../bdev/module';
import type { Bdev } from '../../bdev/registry';
import { logger, type Logger } from '../../log';
import type { DeviceModel } from '../model';

/** The vhost_blk log flag: the lines of every blk controller (as SPDK's vhost_blk flag). */
const log = logger('vhost_blk');

/** Queues offered to the front-end (GET_QUEUE_NUM, config num_queues). SPDK's vhost-blk default is 8 or more; QEMU asks for num-queues. */
export const BLK_MAX_QUEUES = 16;

/** The only virtio-blk transport vhostd has (SPDK's default, VIRTIO_BLK_DEFAULT_TRANSPORT). */
export const VHOST_USER_BLK_TRANSPORT = 'vhost_user_blk';

const bit = (n: number): bigint => 1n << BigInt(n);

/**
 * Features offered for a virtio-blk device (bit 30 is the controller's to
 * add). A readonly device offers RO and neither DISCARD nor WRITE_ZEROES.
 * CONFIG_WCE is not offered: the cache mode is fixed (writeback, FLUSH offered).
 */
export function blkFeatures(readonly: boolean): bigint {
  let f =
    bit(BlkFeature.SizeMax) |
    bit(BlkFeature.SegMax) |
    bit(BlkFeature.BlkSize) |
    bit(BlkFeature.Flush) |
    bit(BlkFeature.Topology) |
    bit(BlkFeature.Mq) |
    bit(VirtioFeature.RingIndirectDesc) |
    bit(VirtioFeature.RingEventIdx) |
    bit(VirtioFeature.Version1);
  f |= readonly ? bit(BlkFeature.Ro) : bit(BlkFeature.Discard) | bit(BlkFeature.WriteZeroes);
  return f;
}

/**
 * The device's config space, struct virtio_blk_config (§5.2.4, little-endian),
 * up to write_zeroes_may_unmap plus 3 unused bytes. Capacity is in 512-byte
 * sectors; geometry is 0 (GEOMETRY not offered); one logical block per
 * physical block; min_io_size one block; writeback (wce 1).
 */
export function blkConfigSpace(bdev: { blockSize: number; numBlocks: number }, numQueues: number, readonly: boolean): Uint8Array {
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
  const buf = new Uint8Array(BlkConfigOffset.Size);
  const v = new DataView(buf.buffer);
  const sectorsPerBlock = blockSize / 512;
  v.setBigUint64(BlkConfigOffset.Capacity, BigInt(numBlocks) * BigInt(sectorsPerBlock), true);
  v.setUint32(BlkConfigOffset.SizeMax, BlkLimit.SizeMax, true);
  v.setUint32(BlkConfigOffset.SegMax, BlkLimit.SegMax, true);
  v.setUint32(BlkConfigOffset.BlkSize, blockSize, true);
  v.setUint8(BlkConfigOffset.PhysicalBlockExp, 0);
  v.setUint8(BlkConfigOffset.AlignmentOffset, 0);
  v.setUint16(BlkConfigOffset.MinIoSize, 1, true);
  v.setUint32(BlkConfigOffset.OptIoSize, 0, true);
  v.setUint8(BlkConfigOffset.Wce, 1);
  v.setUint16(BlkConfigOffset.NumQueues, numQueues, true);
  if (!readonly) {
    v.setUint32(BlkConfigOffset.MaxDiscardSectors, BlkLimit.MaxDiscardSectors, true);
    v.setUint32(BlkConfigOffset.MaxDiscardSeg, BlkLimit.MaxDiscardSeg, true);
    v.setUint32(BlkConfigOffset.DiscardSectorAlignment, sectorsPerBlock, true);
    v.setUint32(BlkConfigOffset.MaxWriteZeroesSectors, BlkLimit.MaxWriteZeroesSectors, true);
    v.setUint32(BlkConfigOffset.MaxWriteZeroesSeg, BlkLimit.MaxWriteZeroesSeg, true);
    v.setUint8(BlkConfigOffset.WriteZeroesMayUnmap, 0);
  }
  return buf;
}

export class BlkModel implements DeviceModel {
  readonly kind = 'blk' as const;
  readonly subsystem = 'vhost_blk';
  /** QEMU's vhost-user-blk keeps an in-flight region and reconnects (reconnect=1): a restart loses nothing. */
  readonly inflightShmfd = true;
  readonly sharesBdevs = true;
  readonly log: Logger = log;
  readonly features: bigint;
  readonly maxQueues = BLK_MAX_QUEUES;
  readonly bdevs: readonly Bdev[];

  constructor(
    readonly bdev: Bdev,
    readonly readonly: boolean,
    /** Offer VIRTIO_F_RING_PACKED (SPDK's packed_ring). */
    readonly packedRing = false,
  ) {
    this.features = blkFeatures(readonly) | (packedRing ? bit(VirtioFeature.RingPacked) : 0n);
    this.bdevs = [bdev];
  }

  configSpace(): Uint8Array {
    return blkConfigSpace(this.bdev, BLK_MAX_QUEUES, this.readonly);
  }

  /**
   * SET_CONFIG. Only writeback (wce) is writable in virtio-blk, and only with
   * CONFIG_WCE, which is not offered: the cache mode stays writeback. So a
   * write that keeps wce at 1 is accepted, one that would turn it to
   * writethrough is refused, and bytes of read-only fields are ignored
   * (§5.2.4: the driver does not write them).
   */
  writeConfigSpace(offset: number, data: Uint8Array): boolean {
    const wce = BlkConfigOffset.Wce - offset;
    if (wce >= 0 && wce < data.length && data[wce] !== 1) return false;
    return true;
  }

  payload(): BlkModelDesc {
    return { kind: 'blk', readonly: this.readonly };
  }

  backendSpecific(): Record<string, unknown> {
    return { block: { readonly: this.readonly, bdev: this.bdev.name, transport: VHOST_USER_BLK_TRANSPORT } };
  }

  createCall(ctrlr: string, cpumask: string): ConfigCall {
    return {
      method: 'vhost_create_blk_controller',
      params: { ctrlr, dev_name: this.bdev.name, cpumask, readonly: this.readonly, ...(this.packedRing ? { packed_ring: true } : {}) },
    };
  }
}
