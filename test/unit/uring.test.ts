/**
 * io_uring: the native ring (bindings/src/uring.cc) and the uring bdev
 * (engine/bdev/file.ts + uring.ts) against real files on /dev/shm (tmpfs)
 * and /var/tmp (disk, O_DIRECT), ENOSPC on a tiny tmpfs, and the reactor's
 * io_uring probe.
 */
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from '../../bindings';
import { uringEngine } from '../../modules/bdev/uring/engine';
import { FileRingState } from '../../engine/bdev/file';
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

t.test('which files are served inline (memory file systems without NOWAIT) and which through the ring', async (t) => {
  const open = (dir: string): number => {
    const file = fs.mkdtempSync(path.join(dir, 'inline-')) + '/f';
    t.teardown(() => fs.rmSync(path.dirname(file), { recursive: true, force: true }));
    fs.writeFileSync(file, Buffer.alloc(8192));
    const fd = fs.openSync(file, 'r+');
    t.teardown(() => fs.closeSync(fd));
    return fd;
  };
  const disk = new native.IoUring(8, 4);
  disk.setFile(0, open('/var/tmp'));
  t.equal(disk.fileInline(0), false, 'a disk file system goes through the ring');
  disk.setFile(0, -1);
  disk.close();
  const off = new native.IoUring(8, 4, false);
  off.setFile(0, open('/dev/shm'));
  t.equal(off.fileInline(0), false, 'inline serving can be turned off');
  off.setFile(0, -1);
  off.close();
  const shm = new native.IoUring(8, 4);
  shm.setFile(0, open('/dev/shm'));
  // True where tmpfs refuses RWF_NOWAIT (this kernel); either way bdevCases below check the data.
  t.comment(`/dev/shm served inline: ${shm.fileInline(0)}`);
  shm.setFile(0, -1);
  shm.close();
});

for (const dir of ['/dev/shm', '/var/tmp']) {
  nativeRingCases(t, 'uring', dir);
  bdevCases(t, 'uring', dir);
  unalignedCase(t, 'uring', dir);
}
enospcCase(t, 'uring');

t.test('uring module opens a BdevDesc', async (t) => {
  const state = uringEngine.createState?.() as FileRingState;
  t.throws(() => uringEngine.open({ name: 'u', module: 'uring', blockSize: 512, numBlocks: 8, params: undefined }, state), /no file description/);
  t.notOk(state.ringOpen, 'no ring made for a bdev that did not open');
  state.close();
});

t.test('no fd or mapping left behind', async (t) => {
  t.equal(fdCount(), fds, 'fd count back to the start');
  t.equal(mapCount(), maps, 'mapping count back to the start');
});
