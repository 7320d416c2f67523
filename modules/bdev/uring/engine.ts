/**
 * bdev_uring, engine half: a file or block device served through the
 * worker's io_uring (raw syscalls in bindings/src/uring.cc; the file is a
 * registered fixed file), readv/writev straight into guest memory, FLUSH as
 * fsync(DATASYNC), DISCARD/WRITE ZEROES as fallocate on files and
 * BLKDISCARD/BLKZEROOUT on block devices. All the queueing, batching and
 * result handling is engine/bdev/file.ts; BdevDesc.params is a FileBdevDesc.
 *
 * Thread: the engine worker that runs the device.
 */
import { native } from '../../../bindings';
import type { BdevModuleEngine } from '../../../engine/bdev/module';
import { FileBdev, fileConfigOf, FileRingState, type RingFactory } from '../../../engine/bdev/file';

export const makeUring: RingFactory = (entries, maxIov) => new native.IoUring(entries, maxIov);

export const uringEngine: BdevModuleEngine = {
  name: 'uring',
  createState: () => new FileRingState('uring', makeUring),
  open: (desc, state) => new FileBdev(fileConfigOf(desc), state as FileRingState),
};
