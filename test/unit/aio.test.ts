/**
 * Linux AIO: the native context (bindings/src/aio.cc) and the aio bdev
 * (engine/bdev/file.ts + aio.ts) against real files on /dev/shm (tmpfs)
 * and /var/tmp (disk, O_DIRECT), and ENOSPC on a tiny tmpfs.
 */
import t from 'tap';
import { native } from '../../bindings';
import { aioEngine } from '../../modules/bdev/aio/engine';
import { FileRingState } from '../../engine/bdev/file';
import { bdevCases, enospcCase, fdCount, mapCount, nativeRingCases, unalignedCase } from '../lib/file-bdev-cases';

const fds = fdCount();
const maps = mapCount();

t.test('a Linux AIO context', async (t) => {
  const ring = new native.LinuxAio(8, 4);
  t.equal(ring.entries, 8);
  ring.close();
  ring.close();
  t.throws(() => ring.reap(new Float64Array(2), 1), { code: 'EBADF' }, 'a closed context refuses calls');
});

for (const dir of ['/dev/shm', '/var/tmp']) {
  nativeRingCases(t, 'aio', dir);
  bdevCases(t, 'aio', dir);
  unalignedCase(t, 'aio', dir);
}
enospcCase(t, 'aio');

t.test('aio module opens a BdevDesc', async (t) => {
  const state = aioEngine.createState?.() as FileRingState;
  t.throws(() => aioEngine.open({ name: 'a', module: 'aio', blockSize: 512, numBlocks: 8, params: undefined }, state), /no file description/);
  t.notOk(state.ringOpen, 'no ring made for a bdev that did not open');
  state.close();
});

t.test('no fd or mapping left behind', async (t) => {
  t.equal(fdCount(), fds, 'fd count back to the start');
  t.equal(mapCount(), maps, 'mapping count back to the start');
});
