/**
 * bdev_aio, engine half: a file or block device served through the worker's
 * Linux native AIO context (io_submit / io_getevents with a zero timeout,
 * bindings/src/aio.cc), for hosts where io_uring is disabled:
 * IOCB_CMD_PREADV/PWRITEV straight into guest memory, FLUSH as
 * IOCB_CMD_FDSYNC; DISCARD/WRITE ZEROES (only with `fallocate`, as SPDK's
 * bdev_aio) run synchronously in the addon. Queueing, batching and results:
 * engine/bdev/file.ts; BdevDesc.params is a FileBdevDesc.
 *
 * Thread: the engine worker that runs the device.
 */
import { native } from '../../../bindings';
import type { BdevModuleEngine } from '../../../engine/bdev/module';
import { FileBdev, fileConfigOf, FileRingState, type RingFactory } from '../../../engine/bdev/file';

export const makeAio: RingFactory = (entries, maxIov) => new native.LinuxAio(entries, maxIov);

export const aioEngine: BdevModuleEngine = {
  name: 'aio',
  createState: () => new FileRingState('aio', makeAio),
  open: (desc, state) => new FileBdev(fileConfigOf(desc), state as FileRingState),
};
