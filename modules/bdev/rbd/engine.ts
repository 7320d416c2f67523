/**
 * bdev_rbd, engine half: an RBD image served through the worker's RbdRing
 * (bindings/src/rbd.cc): rbd_aio_readv/writev with iovecs straight into
 * guest memory, FLUSH as rbd_aio_flush, DISCARD as rbd_aio_discard, WRITE
 * ZEROES as rbd_aio_write_zeroes; librbd's callbacks hand completions back
 * through a lock-free stack the ring's reap() empties. Queueing, batching,
 * buffer registration and result handling are engine/bdev/file.ts's (an
 * image handle sits where a file bdev's fd would); a librbd error (EIO,
 * ENOSPC, EBLOCKLISTED, a timeout) fails that I/O, is logged and counted.
 *
 * Thread: the engine worker that runs the device.
 */
import { native } from '../../../bindings';
import type { BdevModuleEngine } from '../../../engine/bdev/module';
import { FileBdev, fileConfigOf, FileRingState, type RingFactory } from '../../../engine/bdev/file';

export const makeRbdRing: RingFactory = (entries, maxIov) => {
  const Ring = native.RbdRing;
  if (Ring === undefined) throw new RangeError('this vhostd was built without librbd');
  return new Ring(entries, maxIov);
};

export const rbdEngine: BdevModuleEngine = {
  name: 'rbd',
  // librbd's threads (messenger, finisher) complete each request: a poll-mode worker yields its core to them.
  completesOnHelperThreads: true,
  createState: () => new FileRingState('rbd', makeRbdRing),
  open: (desc, state) => new FileBdev(fileConfigOf(desc), state as FileRingState),
};
