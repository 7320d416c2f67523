/**
 * End-to-end: the real vhostd serving virtio-scsi to a Linux guest under
 * QEMU 7.2 (vhost-user-scsi-pci, num_queues=2, TCG). One controller with two
 * targets: a malloc bdev (target 0) and a uring bdev over a file
 * with 4 KiB blocks (target 1), found in the guest by SCSI address. Three boots:
 *
 *  1. sizes and block sizes, fio randrw with crc32c verification over both
 *     request queues on both disks, blkdiscard (UNMAP), the sg3-utils
 *     commands, an unknown opcode through sg_raw (ILLEGAL REQUEST),
 *     hot-add of a third target while the guest runs (it sees /dev/sdc with
 *     no rescan command), a resize of its bdev (PARAM_CHANGE: the guest sees
 *     the new size), its hot-removal (the disk goes away); then a pattern is
 *     written to both disks.
 *  2. guest reboot on the same vhostd: both patterns read back.
 *  3. vhostd restarted from its saved config (-c): the file-backed disk's
 *     pattern reads back and its VPD 83h designator is unchanged.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { bootGuest, type GuestRun } from '../lib/guest';
import { assertCompleted, tail } from '../lib/guest-checks';
import { readPattern, writePattern } from '../lib/guest-scripts';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(1_500_000);

const MALLOC_BLOCKS = 131072; // 64 MiB of 512-byte blocks
const FILE_BYTES = 64 << 20;
const FILE_BLOCK = 4096;

/** Completions per virtio-scsi request vector (Linux names every request queue "request"), in vector order. */
const REQUEST_IRQS = `
awk '/virtio[0-9]+-request/ { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break; k++; print "@@VALUE irq_req" k " " n }' /proc/interrupts
`;

function fio(dev: string, tag: string): string {
  return `
check fio_${tag} fio --name=verify --filename=/dev/${dev} --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randrw --bs=4k --size=16M --numjobs=2 --offset_increment=16M \\
  --verify=crc32c --verify_fatal=1 --runtime=8 \\
  --cpus_allowed=0-1 --cpus_allowed_policy=split --group_reporting
`;
}

/** Waits (up to 60 s) for a shell condition. */
function waitUntil(cond: string): string {
  return `__n=600; while ! ( ${cond} ) && [ $__n -gt 0 ]; do sleep 0.1; __n=$((__n - 1)); done`;
}

/**
 * Finds the disks by SCSI address, not by name (Linux names them in the order
 * their probes finish): $A is target 0 (malloc), $B target 1 (file).
 */
const PROBE = `
tgt() { for p in /sys/bus/scsi/devices/*:0:$1:0/block/*; do [ -e "$p" ] && basename "$p" && return 0; done; return 1; }
${waitUntil('tgt 0 >/dev/null && tgt 1 >/dev/null')}
A=$(tgt 0) || { echo "no target 0; /sys/block: $(ls /sys/block)"; exit 10; }
B=$(tgt 1) || { echo "no target 1; /sys/block: $(ls /sys/block)"; exit 11; }
wait_for /dev/$A 300 || exit 12
wait_for /dev/$B 300 || exit 13
value names $A $B
value t0_size $(cat /sys/block/$A/size)
value t0_lbs $(cat /sys/block/$A/queue/logical_block_size)
value t0_hwq $(ls /sys/block/$A/mq | wc -l)
value t0_discard $(cat /sys/block/$A/queue/discard_max_bytes)
value t1_size $(cat /sys/block/$B/size)
value t1_lbs $(cat /sys/block/$B/queue/logical_block_size)
value vpd83b $(sg_vpd -r -p 0x83 /dev/$B | od -An -tx1 | tr -d ' \\n')
`;

const SG_TOOLS = `
check sg_inq sg_inq /dev/$A
value inq_vendor $(sg_inq /dev/$A | sed -n 's/^ *Vendor identification: *//p')
check sg_vpd83 sg_vpd -p 0x83 /dev/$A
check sg_vpd_b0 sg_vpd -p 0xb0 /dev/$A
check sg_vpd_b2 sg_vpd -p 0xb2 /dev/$A
value lbpu $(sg_vpd -p 0xb2 /dev/$A | sed -n 's/^ *Unmap command supported (LBPU): *//p')
check sg_readcap sg_readcap -l /dev/$B
value readcap_lbl $(sg_readcap -l /dev/$B | sed -n 's/.*Logical block length=\\([0-9]*\\).*/\\1/p')
check sg_luns sg_luns /dev/$A
check sg_turs sg_turs /dev/$A
check sg_sync sg_sync /dev/$A
check sg_unmap sg_unmap --lba=2048 --num=16 /dev/$A
check sg_write_same sg_write_same --lba=4096 --num=16 /dev/$A
check sg_write_same_unmap sg_write_same --unmap --lba=8192 --num=16 /dev/$A
check sg_modes sg_modes /dev/$A
check pr_register sg_persist --out --register --param-sark=0xabc /dev/$A
value pr_keys $(sg_persist --in --read-keys /dev/$A | grep -c 0xabc)
check pr_reserve sg_persist --out --reserve --param-rk=0xabc --prout-type=1 /dev/$A
value pr_holder $(sg_persist --in --read-reservation /dev/$A | grep -c 'Key=0xabc')
check pr_release sg_persist --out --release --param-rk=0xabc --prout-type=1 /dev/$A
check pr_unregister sg_persist --out --register --param-rk=0xabc --param-sark=0 /dev/$A
sg_raw -v /dev/$A c7 00 00 00 00 00 > /tmp/raw.txt 2>&1
value raw_rc $?
value raw_illegal $(grep -ci 'illegal request' /tmp/raw.txt)
`;

const HOTPLUG = `
echo "@@STEP hotadd"
${waitUntil('tgt 2 >/dev/null && [ -e /dev/$(tgt 2) ]')}
check hotadd tgt 2
C=$(tgt 2)
value sdc_size $(cat /sys/block/$C/size)
echo "@@STEP resize"
${waitUntil('[ "$(cat /sys/block/$C/size 2>/dev/null)" = 8192 ]')}
value sdc_size2 $(cat /sys/block/$C/size)
echo "@@STEP hotremove"
${waitUntil('! tgt 2 >/dev/null && [ ! -e /dev/$C ]')}
check hotremove test ! -e /dev/$C
`;

function steps(vhostd: VhostdHandle, t: Test): { onOutput: (s: string) => void; done: () => Promise<void> } {
  let seen = '';
  const actions: Promise<void>[] = [];
  const fired = new Set<string>();
  const act: Record<string, () => Promise<unknown>> = {
    hotadd: () => vhostd.rpc('vhost_scsi_controller_add_target', { ctrlr: 'vhost.0', scsi_target_num: 2, bdev_name: 'Null0' }),
    resize: () => vhostd.rpc('bdev_null_resize', { name: 'Null0', new_size: 4 }),
    hotremove: () => vhostd.rpc('vhost_scsi_controller_remove_target', { ctrlr: 'vhost.0', scsi_target_num: 2 }),
  };
  return {
    onOutput: (text) => {
      seen += text;
      for (const m of seen.matchAll(/@@STEP (\w+)/g)) {
        const step = m[1];
        if (fired.has(step) || act[step] === undefined) continue;
        fired.add(step);
        actions.push(
          act[step]().then(
            () => undefined,
            (err: unknown) => {
              t.fail(`${step}: ${(err as Error).message}`);
            },
          ),
        );
      }
    },
    done: async () => {
      await Promise.all(actions);
      t.same([...fired].sort(), ['hotadd', 'hotremove', 'resize'], 'every hot-plug step ran');
    },
  };
}

t.test('vhostd serves virtio-scsi to a Linux guest', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-scsi-e2e-'));
  const img = path.join(tmp, 'disk1.img');
  fs.writeFileSync(img, Buffer.alloc(0));
  fs.truncateSync(img, FILE_BYTES);
  let vhostd: VhostdHandle = await startVhostd({ cpumask: '0x2' });
  t.teardown(async () => {
    await vhostd.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  await vhostd.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: MALLOC_BLOCKS, block_size: 512 });
  await vhostd.rpc('bdev_uring_create', { name: 'Disk1', filename: img, block_size: FILE_BLOCK });
  await vhostd.rpc('bdev_null_create', { name: 'Null0', num_blocks: 2048, block_size: 512 });
  await vhostd.rpc('vhost_create_scsi_controller', { ctrlr: 'vhost.0', cpumask: '0x2' });
  t.equal(await vhostd.rpc('vhost_scsi_controller_add_target', { ctrlr: 'vhost.0', scsi_target_num: 0, bdev_name: 'Malloc0' }), 0);
  t.equal(await vhostd.rpc('vhost_scsi_controller_add_target', { ctrlr: 'vhost.0', scsi_target_num: -1, bdev_name: 'Disk1' }), 1);

  let written: string | undefined;
  let writtenB: string | undefined;
  let vpd83: string | undefined;
  await t.test('boot 1: disks, fio over 2 queues, UNMAP, sg3-utils, hot-add, resize, hot-remove', async (t) => {
    const s = steps(vhostd, t);
    const run: GuestRun = await bootGuest({
      sockets: [{ path: vhostd.socketOf('vhost.0'), kind: 'scsi', numQueues: 2 }],
      script:
        PROBE +
        fio('$A', 'a') +
        fio('$B', 'b') +
        REQUEST_IRQS +
        'check discard blkdiscard -o 1048576 -l 4194304 /dev/$A\n' +
        SG_TOOLS +
        HOTPLUG +
        writePattern(4, '$A') +
        writePattern(4, '$B').replace(/value written/, 'value writtenb').replace(/check write /, 'check writeb '),
      memMiB: 512,
      smp: 2,
      timeoutMs: 600_000,
      onOutput: s.onOutput,
    });
    await s.done();
    assertCompleted(t, run, 'boot 1');
    const v = run.values;
    const r = run.results;
    t.equal(v.get('t0_size'), String(MALLOC_BLOCKS), 'target 0: 64 MiB');
    t.equal(v.get('t0_lbs'), '512', 'target 0: 512-byte blocks');
    t.equal(v.get('t1_size'), String(FILE_BYTES / 512), 'target 1: 64 MiB');
    t.equal(v.get('t1_lbs'), String(FILE_BLOCK), 'target 1: 4 KiB blocks');
    t.equal(v.get('t0_hwq'), '2', 'two request queues');
    t.not(v.get('t0_discard'), '0', 'target 0: discard enabled (LBPME, UNMAP)');
    t.equal(r.get('fio_a'), 0, 'fio verify on target 0', { output: tail(run) });
    t.equal(r.get('fio_b'), 0, 'fio verify on target 1', { output: tail(run) });
    const irqs = [1, 2].map((k) => Number(v.get(`irq_req${k}`) ?? '0'));
    t.ok(irqs.every((n) => n > 0), `both request queues completed I/O (${irqs.join(', ')})`);
    t.equal(r.get('discard'), 0, 'blkdiscard (UNMAP)');
    for (const name of ['sg_inq', 'sg_vpd83', 'sg_vpd_b0', 'sg_vpd_b2', 'sg_readcap', 'sg_luns', 'sg_turs', 'sg_sync', 'sg_unmap', 'sg_write_same', 'sg_write_same_unmap', 'sg_modes', 'pr_register', 'pr_reserve', 'pr_release', 'pr_unregister']) {
      t.equal(r.get(name), 0, `${name} succeeded`, { output: tail(run, 200) });
    }
    t.equal(v.get('inq_vendor'), 'VHOSTD', 'INQUIRY vendor');
    t.equal(v.get('lbpu'), '1', 'VPD B2h: LBPU');
    t.equal(v.get('readcap_lbl'), String(FILE_BLOCK), 'READ CAPACITY 16: block length');
    t.equal(v.get('pr_keys'), '1', 'PERSISTENT RESERVE IN: the registered key');
    t.equal(v.get('pr_holder'), '1', 'PERSISTENT RESERVE IN: the reservation holder');
    t.not(v.get('raw_rc'), '0', 'sg_raw of an unknown opcode fails');
    t.not(v.get('raw_illegal'), '0', 'with ILLEGAL REQUEST sense');
    t.equal(r.get('hotadd'), 0, 'hot-added target 2 seen as a disk without a rescan', { output: tail(run) });
    t.equal(v.get('sdc_size'), '2048', 'target 2: 1 MiB');
    t.equal(v.get('sdc_size2'), '8192', 'resize (PARAM_CHANGE) seen: 4 MiB');
    t.equal(r.get('hotremove'), 0, 'hot-removed target gone');
    t.equal(r.get('write'), 0);
    t.equal(r.get('writeb'), 0);
    written = v.get('written');
    writtenB = v.get('writtenb');
    vpd83 = v.get('vpd83b');
    t.match(written, /^[0-9a-f]{64}$/);
    t.match(vpd83, /^[0-9a-f]{16,}$/, 'VPD 83h of target 1 read');
    t.ok(vhostd.daemon.running, 'vhostd still runs');
  });

  await t.test('boot 2: data persists across a guest reboot', async (t) => {
    const run = await bootGuest({
      sockets: [{ path: vhostd.socketOf('vhost.0'), kind: 'scsi', numQueues: 2 }],
      script: PROBE + readPattern(4, '$A') + readPattern(4, '$B').replace(/value read/, 'value readb'),
      memMiB: 512,
      smp: 1,
      timeoutMs: 300_000,
    });
    assertCompleted(t, run, 'boot 2');
    t.equal(run.values.get('read'), written, 'target 0 (malloc) pattern read back');
    t.equal(run.values.get('readb'), writtenB, 'target 1 (file) pattern read back');
  });

  await t.test('boot 3: vhostd restarted from its saved config', async (t) => {
    const cfg = path.join(tmp, 'config.json');
    fs.writeFileSync(cfg, JSON.stringify({ subsystems: await Promise.all(['bdev', 'vhost_blk', 'scsi', 'vhost_scsi'].map(async (name) => ({ subsystem: name, config: await vhostd.rpc('framework_get_config', { name }) }))) }));
    const exit = await vhostd.stop();
    t.equal(exit.code, 0, 'vhostd stopped gracefully');
    vhostd = await startVhostd({ cpumask: '0x2', extraArgs: ['-c', cfg] });
    const run = await bootGuest({
      sockets: [{ path: vhostd.socketOf('vhost.0'), kind: 'scsi', numQueues: 2 }],
      script: PROBE + readPattern(4, '$B').replace(/value read/, 'value readb'),
      memMiB: 512,
      smp: 1,
      timeoutMs: 300_000,
    });
    assertCompleted(t, run, 'boot 3');
    t.equal(run.values.get('t0_size'), String(MALLOC_BLOCKS), 'target 0 back (a new malloc bdev)');
    t.equal(run.values.get('readb'), writtenB, 'target 1 (file) pattern survives the vhostd restart');
    t.equal(run.values.get('vpd83b'), vpd83, 'VPD 83h designator stable across the restart');
  });
});
