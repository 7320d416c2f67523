/**
 * End-to-end: the real vhostd (`node bin/vhostd.js -m 0x2`) serving
 * virtio-blk to a Linux guest under QEMU (TCG). Bdevs and controllers are
 * created over JSON-RPC; guests check size, multi-queue, fio with crc32c
 * verification over 2 queues, discard, flush, a read-only controller, and
 * that data written in one boot reads back in the next.
 */
import fs from 'node:fs';
import t from 'tap';
import { bootGuest } from '../lib/guest';
import { assertCompleted, assertFioOverQueues, assertGeometry, tail } from '../lib/guest-checks';
import { fioVerify, probeDisk, readPattern, trimAndFlush, tryWrite, writePattern } from '../lib/guest-scripts';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(900_000);

const BLOCK_SIZE = 512;
const RW_BLOCKS = 524288; // 256 MiB
const RO_BLOCKS = 131072; // 64 MiB

t.test('vhostd serves virtio-blk to a Linux guest', async (t) => {
  const vhostd: VhostdHandle = await startVhostd({ cpumask: '0x2' });
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await vhostd.stop();
  });
  t.comment(`vhostd in ${vhostd.dir}`);

  t.equal(
    await vhostd.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: RW_BLOCKS, block_size: BLOCK_SIZE }),
    'Malloc0',
    'bdev_malloc_create returns the bdev name',
  );
  t.equal(
    await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'Malloc0', cpumask: '0x2' }),
    true,
    'vhost_create_blk_controller returns true',
  );
  const rwSocket = vhostd.socketOf('vhost.0');
  t.ok(fs.existsSync(rwSocket), 'controller socket exists in the -S directory');

  let written: string | undefined;
  await t.test('2 queues, smp 2: geometry, fio verify, discard, flush, write a pattern', async (t) => {
    const run = await bootGuest({
      sockets: [{ path: rwSocket, kind: 'blk', numQueues: 2 }],
      script: probeDisk() + fioVerify({ jobs: 2, sizeMiB: 32, runtimeS: 20 }) + trimAndFlush() + writePattern(4),
      memMiB: 512,
      smp: 2,
      timeoutMs: 300_000,
    });
    assertCompleted(t, run, 'first boot');
    assertGeometry(t, run, { sectors: (RW_BLOCKS * BLOCK_SIZE) / 512, ro: 0, hwq: 2 });
    assertFioOverQueues(t, run, 2);
    t.equal(run.results.get('discard'), 0, 'blkdiscard succeeded', { output: tail(run) });
    t.equal(run.values.get('cache'), 'write back', 'FLUSH offered: the guest sends flushes on fsync');
    t.equal(run.results.get('flush'), 0, 'fio writes with fsync verified', { output: tail(run) });
    t.equal(run.results.get('write'), 0, 'pattern written with conv=fsync');
    written = run.values.get('written');
    t.match(written, /^[0-9a-f]{64}$/, 'pattern hash reported');
    t.ok(vhostd.daemon.running, 'vhostd still running after the guest powered off');
  });

  await t.test('second boot on the same vhostd reads the pattern back', async (t) => {
    const run = await bootGuest({
      sockets: [{ path: rwSocket, kind: 'blk', numQueues: 2 }],
      script: probeDisk() + readPattern(4),
      memMiB: 512,
      smp: 1,
      timeoutMs: 180_000,
    });
    assertCompleted(t, run, 'second boot');
    // Linux's virtio-blk uses at most one queue per CPU: 2 offered, 1 CPU → 1.
    assertGeometry(t, run, { sectors: (RW_BLOCKS * BLOCK_SIZE) / 512, ro: 0, hwq: 1 });
    t.ok(written !== undefined, 'the first boot reported a pattern');
    t.equal(run.values.get('read'), written, 'data written in the first boot reads back in the second');
  });

  await t.test('read-only controller', async (t) => {
    t.equal(
      await vhostd.rpc('bdev_malloc_create', { name: 'Malloc1', num_blocks: RO_BLOCKS, block_size: BLOCK_SIZE }),
      'Malloc1',
      'second malloc bdev created',
    );
    t.equal(
      await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.ro', dev_name: 'Malloc1', readonly: true }),
      true,
      'read-only controller created',
    );
    const run = await bootGuest({
      sockets: [{ path: vhostd.socketOf('vhost.ro'), kind: 'blk', numQueues: 1 }],
      script: probeDisk() + tryWrite(),
      memMiB: 512,
      smp: 1,
      timeoutMs: 180_000,
    });
    assertCompleted(t, run, 'read-only boot');
    assertGeometry(t, run, { sectors: (RO_BLOCKS * BLOCK_SIZE) / 512, ro: 1, hwq: 1 });
    t.not(run.results.get('rowrite'), undefined, 'a write was attempted');
    t.not(run.results.get('rowrite'), 0, 'the write failed');
    t.equal(run.results.get('roread'), 0, 'reads work');
  });

  await t.test('controllers delete once the guests are gone', async (t) => {
    for (const ctrlr of ['vhost.0', 'vhost.ro']) {
      t.equal(await vhostd.rpc('vhost_delete_controller', { ctrlr }), true, `vhost_delete_controller ${ctrlr}`);
      t.notOk(fs.existsSync(vhostd.socketOf(ctrlr)), `${ctrlr} socket removed`);
    }
  });

  const exit = await vhostd.stop();
  stopped = true;
  t.same(
    { code: exit.code, signal: exit.signal, killed: exit.killed },
    { code: 0, signal: null, killed: false },
    'vhostd stops gracefully on SIGTERM',
    { log: vhostd.daemon.log.slice(-4000) },
  );
});
