/**
 * End-to-end: file bdevs (bdev_uring on a /dev/shm file, bdev_aio on a
 * /var/tmp file) served by the real vhostd to a Linux guest under QEMU (TCG):
 * - fio randrw with crc32c verification over 2 queues on each disk;
 * - ENOSPC: a third disk, a file on a full 1 MiB tmpfs: the guest's write
 *   fails with an I/O error, vhostd stays up and the other disks keep working;
 * - vhostd is stopped and started again from the config it reported
 *   (framework_get_config → `-c`), and a new boot reads the same checksums;
 * - the front-end is killed with fio in flight on both disks: vhostd survives
 *   and its fd count and guest-memory / ring mappings return to what they were.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { bootGuest } from '../lib/guest';
import { assertCompleted, tail } from '../lib/guest-checks';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(1_800_000);

const DISK_BYTES = 256 << 20;
const SUM_MIB = 72;

const uringFile = `/dev/shm/vhostd-e2e-uring-${process.pid}.img`;
const aioFile = `/var/tmp/vhostd-e2e-aio-${process.pid}.img`;
const tinyMount = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-e2e-full-'));
const tinyFile = path.join(tinyMount, 'disk.img');

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Mappings of guest memory and of io_uring / AIO rings in process `pid`. */
function ioMaps(pid: number): { guest: number; rings: number } {
  const lines = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n');
  return {
    guest: lines.filter((l) => l.includes('memfd:')).length,
    rings: lines.filter((l) => /io_uring|\[aio\]/.test(l)).length,
  };
}

/** The pid of the QEMU whose command line names `socketPath` (the one this test started). */
function qemuPidFor(socketPath: string): number | undefined {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmd.startsWith('qemu-system') || cmd.includes('/qemu-system')) {
        if (cmd.includes(`path=${socketPath}`)) return Number(entry);
      }
    } catch {
      // process gone
    }
  }
  return undefined;
}

function fioJob(name: string, dev: string, runtimeS: number): string {
  return `fio --name=${name} --filename=/dev/${dev} --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randrw --bs=4k --size=32M --numjobs=2 --offset_increment=32M \\
  --verify=crc32c --verify_fatal=1 --runtime=${runtimeS} \\
  --cpus_allowed=0-1 --cpus_allowed_policy=split --group_reporting`;
}

const WAIT_DISKS = `
for d in vda vdb; do wait_for /dev/$d 150 || { echo "no /dev/$d: $(ls /sys/block)"; exit 10; }; done
`;

function checksums(): string {
  return `
value sum_vda $(dd if=/dev/vda bs=1048576 count=${SUM_MIB} 2>/dev/null | sha256sum | cut -d' ' -f1)
value sum_vdb $(dd if=/dev/vdb bs=1048576 count=${SUM_MIB} 2>/dev/null | sha256sum | cut -d' ' -f1)
`;
}

async function writeConfig(vhostd: VhostdHandle, file: string): Promise<void> {
  const subsystems = [];
  for (const subsystem of ['bdev', 'vhost_blk']) {
    subsystems.push({ subsystem, config: await vhostd.rpc('framework_get_config', { name: subsystem }) });
  }
  fs.writeFileSync(file, JSON.stringify({ subsystems }, null, 2));
}

t.before(() => {
  for (const f of [uringFile, aioFile]) {
    fs.writeFileSync(f, '');
    fs.truncateSync(f, DISK_BYTES);
  }
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'none', tinyMount]);
  fs.writeFileSync(tinyFile, '');
  fs.truncateSync(tinyFile, 16 << 20);
});

t.teardown(() => {
  for (const f of [uringFile, aioFile]) fs.rmSync(f, { force: true });
  try {
    execFileSync('umount', [tinyMount]);
  } catch {
    // not mounted
  }
  fs.rmSync(tinyMount, { recursive: true, force: true });
});

t.test('uring and aio file bdevs serve a Linux guest, survive a restart and a killed front-end', async (t) => {
  const configFile = path.join(os.tmpdir(), `vhostd-e2e-file-${process.pid}.json`);
  t.teardown(() => fs.rmSync(configFile, { force: true }));

  // --- first vhostd: create over RPC ----------------------------------------
  const first = await startVhostd({ cpumask: '0x2' });
  let firstStopped = false;
  t.teardown(async () => {
    if (!firstStopped) await first.stop();
  });
  t.equal(await first.rpc('bdev_uring_create', { name: 'Uring0', filename: uringFile }), 'Uring0', 'bdev_uring_create');
  t.equal(await first.rpc('bdev_aio_create', { name: 'Aio0', filename: aioFile, fallocate: true }), 'Aio0', 'bdev_aio_create');
  t.equal(await first.rpc('bdev_uring_create', { name: 'Full0', filename: tinyFile }), 'Full0', 'bdev_uring_create on the tiny tmpfs');
  const bdevs = (await first.rpc('bdev_get_bdevs')) as { name: string; product_name: string; num_blocks: number; driver_specific: Record<string, { filename?: string }> }[];
  const byName = new Map(bdevs.map((b) => [b.name, b]));
  t.equal(byName.get('Uring0')?.product_name, 'URING bdev');
  t.equal(byName.get('Aio0')?.product_name, 'AIO disk');
  t.equal(byName.get('Uring0')?.driver_specific.uring?.filename, uringFile, 'driver_specific.uring.filename');
  t.equal(byName.get('Aio0')?.driver_specific.aio?.filename, aioFile, 'driver_specific.aio.filename');
  t.equal(byName.get('Uring0')?.num_blocks, DISK_BYTES / 512, 'default block size 512 on a regular file');
  t.match(first.daemon.log, /bdev created name=Uring0 module=uring .*engine=io_uring/, 'the log says Uring0 uses io_uring');
  t.match(first.daemon.log, /bdev created name=Aio0 module=aio .*engine=linux-aio/, 'the log says Aio0 uses Linux AIO');
  for (const [ctrlr, dev] of [
    ['vhost.u', 'Uring0'],
    ['vhost.a', 'Aio0'],
    ['vhost.f', 'Full0'],
  ]) {
    t.equal(await first.rpc('vhost_create_blk_controller', { ctrlr, dev_name: dev, cpumask: '0x2' }), true, `controller ${ctrlr}`);
  }

  let sums: { vda?: string; vdb?: string } = {};
  await t.test('boot 1: fio verify on both disks over 2 queues, discard, ENOSPC on the third, checksums', async (t) => {
    const run = await bootGuest({
      sockets: [
        { path: first.socketOf('vhost.u'), kind: 'blk', numQueues: 2 },
        { path: first.socketOf('vhost.a'), kind: 'blk', numQueues: 2 },
        { path: first.socketOf('vhost.f'), kind: 'blk', numQueues: 1 },
      ],
      script:
        WAIT_DISKS +
        `wait_for /dev/vdc 150
value hwq_vda $(ls /sys/block/vda/mq | wc -l)
value hwq_vdb $(ls /sys/block/vdb/mq | wc -l)
value cache_vda $(cat /sys/block/vda/queue/write_cache)
check fio_uring ${fioJob('uring', 'vda', 15)}
check fio_aio ${fioJob('aio', 'vdb', 15)}
awk '/virtio[0-9]+-req\\.[0-9]+/ { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break; print "@@VALUE irq_" $NF " " n }' /proc/interrupts
check discard_uring blkdiscard -o 67108864 -l 4194304 /dev/vda
check discard_aio blkdiscard -o 67108864 -l 4194304 /dev/vdb
check flush_uring fio --name=flush --filename=/dev/vda --ioengine=psync --rw=write --bs=64k --offset=68M --size=4M --fsync=4 --verify=crc32c --verify_fatal=1
check flush_aio fio --name=flush --filename=/dev/vdb --ioengine=psync --rw=write --bs=64k --offset=68M --size=4M --fsync=4 --verify=crc32c --verify_fatal=1
check enospc fio --name=fill --filename=/dev/vdc --direct=1 --ioengine=psync --rw=write --bs=1M --size=8M
check after_enospc fio --name=after --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=8 --rw=randread --bs=4k --size=16M --runtime=3
` +
        checksums(),
      memMiB: 512,
      smp: 2,
      timeoutMs: 600_000,
    });
    assertCompleted(t, run, 'boot 1');
    t.equal(run.values.get('hwq_vda'), '2', 'uring disk has 2 queues');
    t.equal(run.values.get('hwq_vdb'), '2', 'aio disk has 2 queues');
    t.equal(run.results.get('fio_uring'), 0, 'fio randrw crc32c verify on the uring disk', { output: tail(run) });
    t.equal(run.results.get('fio_aio'), 0, 'fio randrw crc32c verify on the aio disk', { output: tail(run) });
    const irqs = [...run.values].filter(([k]) => k.startsWith('irq_')).map(([k, v]) => `${k}=${v}`);
    t.comment(`interrupts: ${irqs.join(' ')}`);
    t.ok([...run.values].filter(([k, v]) => /^irq_virtio[01]-req\.[01]$/.test(k) && Number(v) > 0).length === 4, 'both queues of both disks completed I/O');
    t.equal(run.results.get('discard_uring'), 0, 'discard on uring');
    t.equal(run.results.get('discard_aio'), 0, 'discard on aio (fallocate)');
    t.equal(run.results.get('flush_uring'), 0, 'writes with fsync verified on uring');
    t.equal(run.results.get('flush_aio'), 0, 'writes with fsync verified on aio');
    t.not(run.results.get('enospc'), undefined, 'the write to the full disk ran');
    t.not(run.results.get('enospc'), 0, 'the write to the full disk failed (ENOSPC → IOERR)');
    t.match(run.output, /fio: io_u error on file \/dev\/vdc: Input\/output error/, 'the guest saw an I/O error (EIO) on the full disk');
    t.equal(run.results.get('after_enospc'), 0, 'the other disk still works after ENOSPC');
    sums = { vda: run.values.get('sum_vda'), vdb: run.values.get('sum_vdb') };
    t.match(sums.vda, /^[0-9a-f]{64}$/, 'checksum of the uring disk');
    t.match(sums.vdb, /^[0-9a-f]{64}$/, 'checksum of the aio disk');
    t.ok(first.daemon.running, 'vhostd still running');
    t.match(first.daemon.log, /I\/O failed .*error=ENOSPC/, 'vhostd logged the ENOSPC');
  });

  await writeConfig(first, configFile);
  const saved = fs.readFileSync(configFile, 'utf8');
  t.match(saved, /"bdev_uring_create"/, 'config has bdev_uring_create');
  t.match(saved, /"bdev_aio_create"/, 'config has bdev_aio_create');
  // QEMU has exited; its connections end once each device has drained and stopped.
  await waitFor(async () => ((await first.rpc('vhost_get_controllers')) as { sessions: unknown[] }[]).every((c) => c.sessions.length === 0), 30_000, 'front-ends gone');
  for (const ctrlr of ['vhost.u', 'vhost.a', 'vhost.f']) await first.rpc('vhost_delete_controller', { ctrlr });
  const exit1 = await first.stop();
  firstStopped = true;
  t.same({ code: exit1.code, killed: exit1.killed }, { code: 0, killed: false }, 'first vhostd stops gracefully');

  // --- second vhostd: the same state from the config ---------------------------
  // The tiny disk would only fail again; leave it out of the second run.
  const cfg = JSON.parse(saved) as { subsystems: { subsystem: string; config: { method: string; params: Record<string, unknown> }[] }[] };
  for (const s of cfg.subsystems) {
    s.config = s.config.filter((c) => c.params.name !== 'Full0' && c.params.ctrlr !== 'vhost.f');
  }
  fs.writeFileSync(configFile, JSON.stringify(cfg));
  const second = await startVhostd({ cpumask: '0x2', extraArgs: ['-c', configFile] });
  let secondStopped = false;
  t.teardown(async () => {
    if (!secondStopped) await second.stop();
  });
  const names = ((await second.rpc('bdev_get_bdevs')) as { name: string }[]).map((b) => b.name).sort();
  t.same(names, ['Aio0', 'Uring0'], 'bdevs recreated from the config');
  const pid = second.daemon.child.pid as number;

  await t.test('boot 2 on the restarted vhostd reads the same data', async (t) => {
    const run = await bootGuest({
      sockets: [
        { path: second.socketOf('vhost.u'), kind: 'blk', numQueues: 2 },
        { path: second.socketOf('vhost.a'), kind: 'blk', numQueues: 2 },
      ],
      script: WAIT_DISKS + checksums(),
      memMiB: 512,
      smp: 1,
      timeoutMs: 300_000,
    });
    assertCompleted(t, run, 'boot 2');
    t.equal(run.values.get('sum_vda'), sums.vda, 'uring disk: same checksum after the restart');
    t.equal(run.values.get('sum_vdb'), sums.vdb, 'aio disk: same checksum after the restart');
  });

  await t.test('front-end killed with I/O in flight: no crash, no fd or mapping leak', async (t) => {
    // The previous guest's QEMU has exited; its connections end once each device has stopped and unmapped.
    await waitFor(async () => ((await second.rpc('vhost_get_controllers')) as { sessions: unknown[] }[]).every((c) => c.sessions.length === 0), 30_000, 'front-ends gone');
    // ... and the RPC server has closed its side of those calls' connections.
    let fdsBefore = fdCount(pid);
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const n = fdCount(pid);
      if (n === fdsBefore) break;
      fdsBefore = n;
    }
    const mapsBefore = ioMaps(pid);
    t.same(mapsBefore, { guest: 0, rings: 0 }, 'no guest memory or ring mapped while no guest is connected');
    const socketPath = second.socketOf('vhost.u');
    let killed = false;
    let seen = '';
    const run = await bootGuest({
      sockets: [
        { path: socketPath, kind: 'blk', numQueues: 2 },
        { path: second.socketOf('vhost.a'), kind: 'blk', numQueues: 2 },
      ],
      script:
        WAIT_DISKS +
        `fio --name=a --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=32 --rw=randrw --bs=16k --size=64M --runtime=600 --time_based >/dev/null 2>&1 &
fio --name=b --filename=/dev/vdb --direct=1 --ioengine=libaio --iodepth=32 --rw=randrw --bs=16k --size=64M --runtime=600 --time_based >/dev/null 2>&1 &
sleep 3
value running 1
sleep 600
`,
      memMiB: 512,
      smp: 2,
      timeoutMs: 300_000,
      onOutput: (text) => {
        // Markers may arrive split over several chunks.
        seen = (seen + text).slice(-256);
        if (killed || !seen.includes('@@VALUE running')) return;
        const ioMapsNow = ioMaps(pid);
        t.ok(ioMapsNow.guest > 0 && ioMapsNow.rings > 0, `guest memory and rings mapped while fio runs (${JSON.stringify(ioMapsNow)})`);
        const qemu = qemuPidFor(socketPath);
        if (qemu !== undefined) {
          killed = true;
          process.kill(qemu, 'SIGKILL');
        }
      },
    });
    t.ok(killed, 'QEMU was killed while fio ran', { output: tail(run) });
    t.equal(run.timedOut, false, 'killed before the timeout');
    await waitFor(async () => fdCount(pid) === fdsBefore && ioMaps(pid).guest === 0 && ioMaps(pid).rings === 0, 30_000, 'vhostd releasing the dead front-end', 100).catch(() => undefined);
    t.ok(second.daemon.running, 'vhostd is still running');
    t.equal(fdCount(pid), fdsBefore, 'fd count back to where it was');
    t.same(ioMaps(pid), { guest: 0, rings: 0 }, 'guest memory unmapped and rings closed');

    const run2 = await bootGuest({
      sockets: [{ path: socketPath, kind: 'blk', numQueues: 1 }],
      script: `wait_for /dev/vda 150 || exit 10
check again fio --name=again --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=8 --rw=randrw --bs=4k --size=8M --offset=128M --verify=crc32c --verify_fatal=1
`,
      memMiB: 512,
      smp: 1,
      timeoutMs: 300_000,
    });
    assertCompleted(t, run2, 'boot after the kill');
    t.equal(run2.results.get('again'), 0, 'the disk serves a new front-end after the kill');
  });

  await waitFor(async () => ((await second.rpc('vhost_get_controllers')) as { sessions: unknown[] }[]).every((c) => c.sessions.length === 0), 30_000, 'front-ends gone');
  for (const ctrlr of ['vhost.u', 'vhost.a']) t.equal(await second.rpc('vhost_delete_controller', { ctrlr }), true, `delete ${ctrlr}`);
  t.equal(await second.rpc('bdev_uring_delete', { name: 'Uring0' }), true, 'bdev_uring_delete');
  t.equal(await second.rpc('bdev_aio_delete', { name: 'Aio0' }), true, 'bdev_aio_delete');
  const exit2 = await second.stop();
  secondStopped = true;
  t.same({ code: exit2.code, killed: exit2.killed }, { code: 0, killed: false }, 'second vhostd stops gracefully', {
    log: second.daemon.log.slice(-4000),
  });
});
