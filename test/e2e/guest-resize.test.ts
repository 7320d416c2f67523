/**
 * End-to-end resize: a Linux guest is attached to a null bdev; while it runs,
 * bdev_null_resize grows the bdev and the guest sees the new capacity
 * (vhostd sends VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, QEMU re-reads the
 * config space and raises the config interrupt, virtio_blk updates the
 * disk size). The guest script reports its size, then waits for it to change.
 */
import t from 'tap';
import { bootGuest } from '../lib/guest';
import { assertCompleted, tail } from '../lib/guest-checks';
import { startVhostd } from '../lib/vhostd';

t.setTimeout(300_000);

t.test('a guest sees a null bdev grow while it runs', async (t) => {
  const vhostd = await startVhostd({ cpumask: '0x2' });
  t.teardown(() => vhostd.stop());
  await vhostd.rpc('bdev_null_create', { name: 'Null0', num_blocks: 131072, block_size: 512 }); // 64 MiB
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.rs', dev_name: 'Null0' });

  let resized: Promise<unknown> | null = null;
  let seen = '';
  const script = [
    'wait_for /sys/block/vda/size',
    'value before $(cat /sys/block/vda/size)',
    'i=0',
    'while [ "$(cat /sys/block/vda/size)" = 131072 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done',
    'value after $(cat /sys/block/vda/size)',
    '',
  ].join('\n');
  const run = await bootGuest({
    sockets: [{ path: vhostd.socketOf('vhost.rs'), kind: 'blk', numQueues: 1 }],
    script,
    memMiB: 512,
    smp: 1,
    timeoutMs: 180_000,
    onOutput: (text) => {
      seen += text;
      // Resize once the guest has reported the old size and is waiting for the new one.
      if (resized === null && /@@VALUE before 131072/.test(seen)) {
        resized = vhostd.rpc('bdev_null_resize', { name: 'Null0', new_size: 128 });
      }
    },
  });
  assertCompleted(t, run, 'resize boot');
  t.ok(resized !== null, 'the guest reported its size before the resize');
  t.equal(await resized, true, 'bdev_null_resize returns true');
  t.equal(run.values.get('before'), '131072', 'the guest first sees 64 MiB');
  t.equal(run.values.get('after'), '262144', 'and then 128 MiB, without a reboot', { output: tail(run) });
  const bdevs = (await vhostd.rpc('bdev_get_bdevs', { name: 'Null0' })) as { num_blocks: number }[];
  t.equal(bdevs[0].num_blocks, 262144, 'bdev_get_bdevs reports the new size');
});
