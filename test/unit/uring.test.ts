/**
 * io_uring: the native ring (bindings/src/uring.cc) and the uring bdev
 * (engine/bdev/file.ts + uring.ts) against real files on /dev/shm (tmpfs)
 * and /var/tmp (disk, O_DIRECT), ENOSPC on a tiny tmpfs, and the reactor's
 * io_uring probe.
 */
import t from 'tap';
import { native } from '../../bindings';
import { UringBdev } from '../../engine/bdev/uring';
import { checkUringAvailable } from '../../reactor/bdev/file';
import { bdevCases, enospcCase, fdCount, mapCount, nativeRingCases, unalignedCase } from '../lib/file-bdev-cases';

const fds = fdCount();
const maps = mapCount();

t.test('io_uring is usable here, and the probe says so', async (t) => {
  t.doesNotThrow(() => checkUringAvailable(), 'checkUringAvailable');
  const ring = new native.IoUring(8, 4);
  t.ok(ring.entries >= 8, `entries ${ring.entries}`);
  t.comment(`fixed files: ${ring.fixedFiles}, setup flags 0x${ring.setupFlags.toString(16)}`);
  ring.close();
  ring.close();
  t.throws(() => ring.reap(new Float64Array(2), 1), { code: 'EBADF' }, 'a closed ring refuses calls');
  t.throws(() => new native.IoUring(0, 4), TypeError, 'entries must be positive');
});

for (const dir of ['/dev/shm', '/var/tmp']) {
  nativeRingCases(t, 'uring', dir);
  bdevCases(t, 'uring', dir);
  unalignedCase(t, 'uring', dir);
}
enospcCase(t, 'uring');

t.test('UringBdev from a BdevDesc', async (t) => {
  t.throws(() => new UringBdev({ name: 'u', kind: 'uring', blockSize: 512, numBlocks: 8 }), /no file description/);
});

t.test('no fd or mapping left behind', async (t) => {
  t.equal(fdCount(), fds, 'fd count back to the start');
  t.equal(mapCount(), maps, 'mapping count back to the start');
});
