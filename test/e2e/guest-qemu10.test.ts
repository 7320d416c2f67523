/**
 * Interop matrix, QEMU 10.2 row: the real vhostd (`node bin/vhostd.js -m 0x2
 * -L vhost`) serves a Linux guest under upstream QEMU 10.2
 * (../shared/peers/qemu-10.2, TCG) through QEMU 10.2's own vhost-user-blk-pci
 * and vhost-user-scsi-pci front-ends (QEMU 7.2's are covered by guest-blk and
 * guest-scsi), one blk disk with a split ring over 2 queues and one with
 * packed=on. The guest runs fio with crc32c verification on all three disks.
 * vhostd's debug log names every vhost-user request it handled: the test
 * checks that QEMU 10.2's start sequence went through the STATUS protocol
 * feature (SET_STATUS) and the in-flight region (blk and scsi), then boots Debian's
 * QEMU 7.2 once on the same vhostd and reports which requests each QEMU sent
 * that the other did not (the README's interop table records it).
 */
import t from 'tap';
import { bootGuest, qemuVfioUser } from '../lib/guest';
import { assertCompleted, tail } from '../lib/guest-checks';
import { fioVerify, probeDisk } from '../lib/guest-scripts';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(900_000);

const BLK_BLOCKS = 262144; // 128 MiB of 512 B
const SCSI_BLOCKS = 131072; // 64 MiB of 512 B
const PACKED_BLOCKS = 98304; // 48 MiB of 512 B

/** Request names from vhostd's `request` debug lines, per controller, in order. */
function requestsOf(log: string, ctrlr: string): string[] {
  const out: string[] = [];
  for (const line of log.split('\n')) {
    if (!line.includes(ctrlr)) continue;
    const m = /\brequest\b.*\breq[=:]"?([A-Z_]+)/.exec(line);
    if (m) out.push(m[1]);
  }
  return out;
}

t.test('QEMU 10.2 vhost-user-blk-pci and vhost-user-scsi-pci against vhostd', async (t) => {
  const qemu = qemuVfioUser();
  const vhostd: VhostdHandle = await startVhostd({ cpumask: '0x2', extraArgs: ['-L', 'vhost'] });
  t.teardown(async () => {
    await vhostd.stop();
  });
  t.equal(await vhostd.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: BLK_BLOCKS, block_size: 512 }), 'Malloc0');
  t.equal(await vhostd.rpc('bdev_malloc_create', { name: 'Malloc1', num_blocks: SCSI_BLOCKS, block_size: 512 }), 'Malloc1');
  t.equal(await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'blk10', dev_name: 'Malloc0', cpumask: '0x2' }), true);
  t.equal(await vhostd.rpc('bdev_malloc_create', { name: 'MallocP', num_blocks: PACKED_BLOCKS, block_size: 512 }), 'MallocP');
  t.equal(await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'pck10', dev_name: 'MallocP', cpumask: '0x2', packed_ring: true }), true);
  t.equal(await vhostd.rpc('vhost_create_scsi_controller', { ctrlr: 'scsi10', cpumask: '0x2' }), true);
  t.equal(await vhostd.rpc('vhost_scsi_controller_add_target', { ctrlr: 'scsi10', scsi_target_num: 0, bdev_name: 'Malloc1' }), 0);

  // vda: the split-ring blk disk (first PCI device), vdb: the packed-ring one; the SCSI LUN is the only sd disk.
  const script =
    probeDisk('vda') +
    fioVerify({ dev: 'vda', jobs: 2, sizeMiB: 16, runtimeS: 10 }) +
    `wait_for /dev/sda 150 || { echo "no /dev/sda; /sys/block: $(ls /sys/block)"; exit 11; }
value sda_size $(cat /sys/block/sda/size)
wait_for /dev/vdb 150 || { echo "no /dev/vdb; /sys/block: $(ls /sys/block)"; exit 12; }
value vdb_size $(cat /sys/block/vdb/size)
check fio_vdb fio --name=verify-vdb --filename=/dev/vdb --direct=1 --ioengine=libaio --iodepth=8 \\
  --rw=randrw --bs=4k --size=16M --verify=crc32c --verify_fatal=1 --runtime=10
check fio_sda fio --name=verify-sda --filename=/dev/sda --direct=1 --ioengine=libaio --iodepth=8 \\
  --rw=randrw --bs=4k --size=16M --verify=crc32c --verify_fatal=1 --runtime=10
`;
  const run = await bootGuest({
    qemu,
    sockets: [
      { path: vhostd.socketOf('blk10'), kind: 'blk', numQueues: 2 },
      { path: vhostd.socketOf('pck10'), kind: 'blk', numQueues: 1, packed: true },
      { path: vhostd.socketOf('scsi10'), kind: 'scsi', numQueues: 1 },
    ],
    script,
    memMiB: 512,
    smp: 2,
    timeoutMs: 400_000,
  });
  assertCompleted(t, run, 'QEMU 10.2 boot');
  t.equal(run.values.get('size'), String(BLK_BLOCKS), 'the guest sees the blk disk at its size', { output: tail(run) });
  t.equal(run.values.get('hwq'), '2', 'two request queues on vhost-user-blk-pci');
  t.equal(run.results.get('fio'), 0, 'fio verify on the blk disk', { output: tail(run) });
  t.equal(run.values.get('vdb_size'), String(PACKED_BLOCKS), 'the guest sees the packed-ring disk at its size');
  t.equal(run.results.get('fio_vdb'), 0, 'fio verify on the packed-ring disk (packed=on)', { output: tail(run) });
  t.equal(run.values.get('sda_size'), String(SCSI_BLOCKS), 'the guest sees the SCSI LUN at its size');
  t.equal(run.results.get('fio_sda'), 0, 'fio verify on the SCSI disk', { output: tail(run) });
  t.ok(vhostd.daemon.running, 'vhostd still running after QEMU 10.2 exited');

  const seen10 = new Map<string, string[]>();
  for (const ctrlr of ['blk10', 'scsi10']) {
    const reqs = requestsOf(vhostd.daemon.log, ctrlr);
    seen10.set(ctrlr, reqs);
    t.comment(`${ctrlr}: QEMU 10.2 sent ${reqs.length} requests: ${reqs.join(' ')}`);
    t.ok(reqs.includes('SET_PROTOCOL_FEATURES'), `${ctrlr}: protocol features negotiated`);
    t.ok(reqs.includes('SET_STATUS'), `${ctrlr}: QEMU 10.2 drives the device status (STATUS protocol feature)`);
  }
  const blk = seen10.get('blk10') ?? [];
  t.ok(blk.includes('GET_INFLIGHT_FD') && blk.includes('SET_INFLIGHT_FD'), 'blk10: in-flight region set up');
  const scsiReqs = seen10.get('scsi10') ?? [];
  t.ok(scsiReqs.includes('GET_INFLIGHT_FD') && scsiReqs.includes('SET_INFLIGHT_FD'), 'scsi10: in-flight region set up (vhost-user-scsi keeps one since QEMU 8.2)');
  const refused = vhostd.daemon.log.split('\n').filter((l) => /unknown request|not supported|protocol error/i.test(l));
  t.same(refused, [], 'no request refused by vhostd');

  // The same controllers' kinds under Debian's QEMU 7.2, booted once (probe only), to name what 10.2 adds.
  await t.test('QEMU 7.2 on the same vhostd: the requests it sends, beside 10.2', async (t) => {
    t.equal(await vhostd.rpc('bdev_malloc_create', { name: 'Malloc2', num_blocks: BLK_BLOCKS, block_size: 512 }), 'Malloc2');
    t.equal(await vhostd.rpc('bdev_malloc_create', { name: 'Malloc3', num_blocks: SCSI_BLOCKS, block_size: 512 }), 'Malloc3');
    t.equal(await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'blk72', dev_name: 'Malloc2', cpumask: '0x2' }), true);
    t.equal(await vhostd.rpc('vhost_create_scsi_controller', { ctrlr: 'scsi72', cpumask: '0x2' }), true);
    t.equal(await vhostd.rpc('vhost_scsi_controller_add_target', { ctrlr: 'scsi72', scsi_target_num: 0, bdev_name: 'Malloc3' }), 0);
    const run = await bootGuest({
      sockets: [
        { path: vhostd.socketOf('blk72'), kind: 'blk', numQueues: 2 },
        { path: vhostd.socketOf('scsi72'), kind: 'scsi', numQueues: 1 },
      ],
      script: probeDisk('vda') + 'wait_for /dev/sda 150 || exit 11\nvalue sda_size $(cat /sys/block/sda/size)\n',
      memMiB: 512,
      smp: 2,
      timeoutMs: 300_000,
    });
    assertCompleted(t, run, 'QEMU 7.2 boot');
    t.equal(run.values.get('size'), String(BLK_BLOCKS), 'QEMU 7.2: the blk disk');
    t.equal(run.values.get('sda_size'), String(SCSI_BLOCKS), 'QEMU 7.2: the SCSI LUN');
    for (const [c72, c10] of [
      ['blk72', 'blk10'],
      ['scsi72', 'scsi10'],
    ]) {
      const reqs = requestsOf(vhostd.daemon.log, c72);
      t.ok(reqs.length > 0, `${c72}: requests logged`);
      t.comment(`${c72}: QEMU 7.2 sent ${reqs.length} requests: ${reqs.join(' ')}`);
      // 7.2 takes the region too, but cannot reconnect vhost-user-scsi (README: "Upgrade without downtime").
      if (c72 === 'scsi72') t.ok(reqs.includes('GET_INFLIGHT_FD'), 'scsi72: QEMU 7.2 asks for the in-flight region too');
      const only10 = [...new Set(seen10.get(c10))].filter((r) => !reqs.includes(r));
      const only72 = [...new Set(reqs)].filter((r) => !(seen10.get(c10) ?? []).includes(r));
      t.comment(`${c10} vs ${c72}: only QEMU 10.2 sent [${only10.join(' ')}]; only QEMU 7.2 sent [${only72.join(' ')}]`);
    }
  });
});
