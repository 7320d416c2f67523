/**
 * End-to-end: an RBD image in a real single-node Ceph cluster (started by
 * the test, scripts/ceph-cluster.sh), served by the real vhostd through
 * librbd to a Linux guest under QEMU (TCG):
 * - boot 1: fio randrw with crc32c verification over 2 queues, discard
 *   (blkdiscard) seen by `rbd du`, a pattern written at the start of the
 *   disk; while the guest runs, bdev_rbd_resize grows the image and the
 *   guest sees the new size without a reboot;
 * - vhostd is stopped and a new one started from the config the first
 *   reported (framework_get_config → `-c`: bdev_rbd_register_cluster, then
 *   bdev_rbd_create); boot 2 reads the pattern back (sha256), at the new size.
 * Thread: test main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { startCephCluster, type CephCluster } from '../lib/ceph';
import { bootGuest } from '../lib/guest';
import { assertCompleted, assertFioOverQueues, tail } from '../lib/guest-checks';
import { fioVerify, readPattern, writePattern } from '../lib/guest-scripts';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(1_800_000);

const IMAGE_MIB = 256;
const GROWN_MIB = 320;
const PATTERN_MIB = 8;

let ceph: CephCluster;

t.before(async () => {
  ceph = await startCephCluster([{ name: 'guest-disk', sizeMiB: IMAGE_MIB }]);
  t.comment(`ceph cluster started in ${ceph.startMs} ms`);
});

t.teardown(async () => {
  await ceph?.stop();
});

async function usedBytes(): Promise<number> {
  const out = JSON.parse(await ceph.rbd('du', '--format', 'json', `${ceph.pool}/guest-disk`)) as { images: { used_size: number }[] };
  return out.images[0].used_size;
}

async function writeConfig(vhostd: VhostdHandle, file: string): Promise<void> {
  const subsystems = [];
  for (const subsystem of ['bdev', 'vhost_blk']) {
    subsystems.push({ subsystem, config: await vhostd.rpc('framework_get_config', { name: subsystem }) });
  }
  fs.writeFileSync(file, JSON.stringify({ subsystems }, null, 2));
}

t.test('an RBD image serves a Linux guest: fio verify over 2 queues, discard, resize, data across a vhostd restart', async (t) => {
  const configFile = path.join(os.tmpdir(), `vhostd-e2e-rbd-${process.pid}.json`);
  t.teardown(() => fs.rmSync(configFile, { force: true }));

  const first = await startVhostd({ cpumask: '0x2' });
  let firstStopped = false;
  t.teardown(async () => {
    if (!firstStopped) await first.stop();
  });
  t.equal(await first.rpc('bdev_rbd_register_cluster', { name: 'ceph', config_file: ceph.conf }), 'ceph');
  t.equal(
    await first.rpc('bdev_rbd_create', { name: 'Ceph0', pool_name: ceph.pool, rbd_name: 'guest-disk', block_size: 512, cluster_name: 'ceph' }),
    'Ceph0',
  );
  t.equal(await first.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.rbd', dev_name: 'Ceph0', cpumask: '0x2' }), true);

  let resized: Promise<unknown> | null = null;
  let seen = '';
  const run1 = await bootGuest({
    sockets: [{ path: first.socketOf('vhost.rbd'), kind: 'blk', numQueues: 2 }],
    smp: 2,
    timeoutMs: 900_000,
    script: `
wait_for /dev/vda 150 || { echo "no /dev/vda: $(ls /sys/block)"; exit 10; }
value size_before $(cat /sys/block/vda/size)
value hwq $(ls /sys/block/vda/mq | wc -l)
value discard_max $(cat /sys/block/vda/queue/discard_max_bytes)
${fioVerify({ jobs: 2, sizeMiB: 32, runtimeS: 20 })}
check discard blkdiscard -o 33554432 -l 33554432 /dev/vda
value discarded 1
i=0
while [ "$(cat /sys/block/vda/size)" = ${(IMAGE_MIB * 1048576) / 512} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
value size_after $(cat /sys/block/vda/size)
${writePattern(PATTERN_MIB)}
`,
    onOutput: (text) => {
      seen += text;
      if (resized === null && /@@VALUE discarded 1/.test(seen)) {
        resized = (async () => {
          // `rbd du` once the guest's discard is done (fio wrote 0..64 MiB, the discard dropped 32..64 MiB).
          const used = await usedBytes();
          t.comment(`rbd du after fio and discard: ${used} bytes`);
          return first.rpc('bdev_rbd_resize', { name: 'Ceph0', new_size: GROWN_MIB });
        })();
      }
    },
  });
  assertCompleted(t, run1, 'boot 1');
  t.equal(run1.values.get('hwq'), '2', 'the disk has 2 hw queues');
  assertFioOverQueues(t, run1, 2);
  t.equal(run1.results.get('discard'), 0, 'blkdiscard succeeded', { output: tail(run1) });
  t.ok(Number(run1.values.get('discard_max')) > 0, 'the guest sees discard support');
  t.ok(resized !== null, 'the resize was sent while the guest ran');
  t.equal(await resized, true, 'bdev_rbd_resize returns true');
  t.equal(run1.values.get('size_before'), String((IMAGE_MIB * 1048576) / 512));
  t.equal(run1.values.get('size_after'), String((GROWN_MIB * 1048576) / 512), 'the guest sees the new size without a reboot', { output: tail(run1) });
  t.equal(run1.results.get('write'), 0, 'pattern written');
  const written = run1.values.get('written');
  t.ok(written !== undefined && written.length === 64, 'pattern checksum reported');
  const info = JSON.parse(await ceph.rbd('info', '--format', 'json', `${ceph.pool}/guest-disk`)) as { size: number };
  t.equal(info.size, GROWN_MIB * 1048576, 'rbd info sees the new size');
  const used = await usedBytes();
  t.ok(used <= 32 * 1048576, `rbd du: ${used} bytes used (fio wrote 64 MiB, the guest discarded 32 of them; the pattern lies in the first 32)`);

  // --- restart from the saved config -----------------------------------------
  await writeConfig(first, configFile);
  const saved = JSON.parse(fs.readFileSync(configFile, 'utf8')) as { subsystems: { subsystem: string; config: { method: string }[] }[] };
  const methods = saved.subsystems[0].config.map((c) => c.method);
  t.ok(methods.includes('bdev_rbd_register_cluster') && methods.includes('bdev_rbd_create'), 'the config recreates the cluster and the bdev');
  const exit = await first.stop();
  firstStopped = true;
  t.equal(exit.code, 0, 'first vhostd exits 0');

  const second = await startVhostd({ cpumask: '0x2', extraArgs: ['-c', configFile] });
  t.teardown(() => second.stop());
  const [b] = (await second.rpc('bdev_get_bdevs', { name: 'Ceph0' })) as { num_blocks: number; product_name: string }[];
  t.equal(b.product_name, 'Ceph Rbd Disk');
  t.equal(b.num_blocks, (GROWN_MIB * 1048576) / 512, 'the second vhostd opens the grown image');
  const run2 = await bootGuest({
    sockets: [{ path: second.socketOf('vhost.rbd'), kind: 'blk', numQueues: 2 }],
    smp: 2,
    timeoutMs: 600_000,
    script: `
wait_for /dev/vda 150 || exit 10
value size $(cat /sys/block/vda/size)
${readPattern(PATTERN_MIB)}
`,
  });
  assertCompleted(t, run2, 'boot 2');
  t.equal(run2.values.get('size'), String((GROWN_MIB * 1048576) / 512), 'boot 2 sees the grown disk');
  t.equal(run2.values.get('read'), written, 'the pattern written in boot 1 is read back after the restart', { output: tail(run2) });
});
