/**
 * bdev_aio in an engine worker: a file or block device served through the
 * worker's Linux native AIO context (io_submit / io_getevents with a zero
 * timeout, bindings/src/aio.cc), for hosts where io_uring is disabled:
 * IOCB_CMD_PREADV/PWRITEV straight into guest memory, FLUSH as
 * IOCB_CMD_FDSYNC; DISCARD/WRITE ZEROES (only with `fallocate`, as SPDK's
 * bdev_aio) run synchronously in the addon. Queueing, batching and results:
 * engine/bdev/file.ts.
 *
 * Thread: the engine worker that runs the device.
 */
import { native } from '../../bindings';
import type { BdevDesc } from '../control';
import { FileBdev, fileConfigOf, type RingFactory } from './file';

const makeAio: RingFactory = (entries, maxIov) => new native.LinuxAio(entries, maxIov);

export class AioBdev extends FileBdev {
  constructor(desc: BdevDesc, factory: RingFactory = makeAio) {
    super('aio', fileConfigOf(desc), factory);
  }
}
