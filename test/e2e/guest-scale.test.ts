/**
 * End-to-end for issue #12: a Linux guest under QEMU (TCG) against vhostd in
 * interrupt mode (`-m 0x3 --interrupt-mode`: workers sleep in poll(2) on
 * kicks, io_uring completion eventfds and their wake eventfd), with its
 * disk's two queues spread over the two cores (`spread_queues`), and a
 * second disk on a file bdev served by io_uring (the worker sleeps with I/O
 * in the kernel). fio with crc32c verification over both queues of the
 * first disk, and on the second; framework_get_reactors shows the first
 * device on both cores and in_interrupt.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { bootGuest } from '../lib/guest';
import { assertCompleted, assertGeometry, tail } from '../lib/guest-checks';
import { fioVerify, probeDisk } from '../lib/guest-scripts';
import { startVhostd } from '../lib/vhostd';

t.setTimeout(900_000);

const BLOCKS = 262144; // 128 MiB of 512-byte blocks

t.test('interrupt mode, queues spread over two cores, io_uring file bdev: fio verify in a guest', async (t) => {
  const vhostd = await startVhostd({ cpumask: '0x3', extraArgs: ['--interrupt-mode'] });
  t.teardown(() => vhostd.stop());
  const file = path.join('/var/tmp', `vhostd-scale-e2e-${process.pid}.img`);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, BLOCKS * 512);
  t.teardown(() => fs.rmSync(file, { force: true }));

  await vhostd.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: BLOCKS, block_size: 512 });
  await vhostd.rpc('bdev_uring_create', { name: 'Uring0', filename: file, block_size: 512 });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'spread.0', dev_name: 'Malloc0', spread_queues: true });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'file.0', dev_name: 'Uring0', cpumask: '0x2' });

  let reactorsDuringRun: unknown = null;
  const probe = setInterval(() => {
    vhostd
      .rpc('framework_get_reactors')
      .then((r) => {
        const rs = (r as { reactors: { lcore: number; in_interrupt: boolean; lw_threads: { name: string }[] }[] }).reactors;
        if (rs.filter((x) => x.lw_threads.some((l) => l.name === 'vhost.spread.0')).length === 2) reactorsDuringRun = rs;
      })
      .catch(() => undefined);
  }, 2000);
  t.teardown(() => clearInterval(probe));

  const run = await bootGuest({
    sockets: [
      { path: vhostd.socketOf('spread.0'), kind: 'blk', numQueues: 2 },
      { path: vhostd.socketOf('file.0'), kind: 'blk', numQueues: 1 },
    ],
    script:
      probeDisk('vda') +
      `
check fio_file fio --name=vfile --filename=/dev/vdb --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randrw --bs=4k --size=32M --verify=crc32c --verify_fatal=1 --runtime=10
` +
      fioVerify({ dev: 'vda', jobs: 2, sizeMiB: 32, runtimeS: 15 }),
    memMiB: 512,
    smp: 2,
    timeoutMs: 600_000,
  });
  clearInterval(probe);
  assertCompleted(t, run, 'guest run');
  assertGeometry(t, run, { sectors: BLOCKS, ro: 0, hwq: 2 });
  t.equal(run.results.get('fio'), 0, 'fio randrw with crc32c verification over both queues of the spread disk', { output: tail(run) });
  t.equal(run.results.get('fio_file'), 0, 'fio randrw with crc32c verification on the io_uring file disk', { output: tail(run) });
  // Every request queue of both disks (queueInterrupts() merges devices by queue index, so read them all here).
  const irqs = [...run.values].filter(([k]) => /^irq_virtio\d+-req\.\d+$/.test(k)).map(([, v]) => Number(v));
  t.equal(irqs.length, 3, 'three request queues (2 + 1)');
  t.ok(irqs.every((n) => n > 0), `every request queue completed I/O (${irqs.join(', ')})`);
  t.ok(reactorsDuringRun !== null, 'while the guest ran, spread.0 was on both cores', { output: tail(run) });
  const rs = reactorsDuringRun as { in_interrupt: boolean }[] | null;
  t.ok(rs?.every((r) => r.in_interrupt), 'both workers in interrupt mode');
  t.ok(vhostd.daemon.running, 'vhostd still running');
});
