/**
 * End-to-end: packed virtqueues (issue #10 part 4). A controller created with
 * packed_ring serves a Linux guest under QEMU 7.2 (`vhost-user-blk-pci,
 * packed=on`, 2 queues): fio random read/write with crc32c verification on
 * a uring file bdev, over both queues, and the guest's virtio features show
 * RING_PACKED (bit 34) negotiated.
 */
import fs from 'node:fs';
import t from 'tap';
import { bootGuest } from '../lib/guest';
import { assertCompleted, tail } from '../lib/guest-checks';
import { startVhostd } from '../lib/vhostd';

t.setTimeout(900_000);

const diskFile = `/dev/shm/vhostd-e2e-packed-${process.pid}.img`;
t.teardown(() => fs.rmSync(diskFile, { force: true }));

t.test('packed ring: fio crc32c verify over 2 queues', async (t) => {
  fs.writeFileSync(diskFile, '');
  fs.truncateSync(diskFile, 128 << 20);
  const v = await startVhostd({ cpumask: '0x2' });
  t.teardown(() => v.stop());
  await v.rpc('bdev_uring_create', { name: 'Uring0', filename: diskFile });
  t.equal(await v.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.p', dev_name: 'Uring0', packed_ring: true }), true);
  const run = await bootGuest({
    sockets: [{ path: v.socketOf('vhost.p'), kind: 'blk', numQueues: 2, packed: true }],
    script: `
wait_for /dev/vda 150 || { echo "no /dev/vda"; exit 10; }
value features $(cat /sys/block/vda/device/features)
value hwq $(ls /sys/block/vda/mq | wc -l)
check fio fio --name=p --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randrw --bs=4k --size=24M --numjobs=2 --offset_increment=32M \\
  --verify=crc32c --verify_fatal=1 --cpus_allowed=0-1 --cpus_allowed_policy=split --group_reporting
value ioerr $(dmesg | grep -ci 'i/o error')
`,
    memMiB: 512,
    smp: 2,
    timeoutMs: 600_000,
  });
  assertCompleted(t, run, 'guest');
  const features = run.values.get('features') ?? '';
  t.equal(features[34], '1', `RING_PACKED negotiated (features ${features})`);
  t.equal(run.values.get('hwq'), '2', '2 queues');
  t.equal(run.results.get('fio'), 0, 'fio randrw crc32c verify over both queues', { output: tail(run) });
  t.equal(run.values.get('ioerr'), '0', 'no I/O error in the guest');
  t.match(v.daemon.log, /device started/, 'the device ran');
});
