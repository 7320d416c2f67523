/**
 * bdev_uring in an engine worker: a file or block device served through the
 * worker's io_uring (raw syscalls in bindings/src/uring.cc; the file is a
 * registered fixed file), readv/writev straight into guest memory, FLUSH as
 * fsync(DATASYNC), DISCARD/WRITE ZEROES as fallocate on files and
 * BLKDISCARD/BLKZEROOUT on block devices. All the queueing, batching and
 * result handling is engine/bdev/file.ts.
 *
 * Thread: the engine worker that runs the device.
 */
import { native } from '../../bindings';
import type { BdevDesc } from '../control';
import { FileBdev, fileConfigOf, type RingFactory } from './file';

const makeUring: RingFactory = (entries, maxIov) => new native.IoUring(entries, maxIov);

export class UringBdev extends FileBdev {
  constructor(desc: BdevDesc, factory: RingFactory = makeUring) {
    super('uring', fileConfigOf(desc), factory);
  }
}
