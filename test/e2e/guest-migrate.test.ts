/**
 * End-to-end: live migration of a guest under fio verify (issue #10 part 3).
 * A source QEMU 7.2 and a destination QEMU (`-incoming unix:...`), both with
 * shared memfd RAM and a vhost-user-blk-pci device, run on two vhostd
 * controllers over one file: first two controllers of one vhostd (one uring
 * bdev shared by both, as SPDK allows), then two vhostd processes on one
 * shared file. The guest runs fio random writes with crc32c verification
 * and a verify backlog (reads of written blocks into guest RAM all along,
 * so pages the device writes during the migration must reach the
 * destination through the dirty log); `migrate` is sent from the source's
 * HMP monitor mid-fio. fio must finish on the destination, then a full
 * verify pass there: 0 verify errors, no I/O error in the guest kernel.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { checkOutcome, migrate, type MigrationTally } from '../lib/guest-migration';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(2_400_000);

const DISK_BYTES = 128 << 20;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-e2e-migrate-'));
const diskFile = `/dev/shm/vhostd-e2e-migrate-${process.pid}.img`;

t.teardown(() => {
  fs.rmSync(diskFile, { force: true });
  fs.rmSync(dir, { recursive: true, force: true });
});

const migrations: MigrationTally = { done: 0, verifyErrors: 0 };

/** The shared disk, empty (all zero) for a new run. */
function freshDisk(): void {
  fs.writeFileSync(diskFile, '');
  fs.truncateSync(diskFile, DISK_BYTES);
}

t.test('two controllers of one vhostd on one uring bdev', async (t) => {
  freshDisk();
  const vhostd: VhostdHandle = await startVhostd();
  t.teardown(() => vhostd.stop());
  await vhostd.rpc('bdev_uring_create', { name: 'Uring0', filename: diskFile });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'src.0', dev_name: 'Uring0' });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'dst.0', dev_name: 'Uring0' });
  const o = await migrate(t, dir, vhostd.socketOf('src.0'), vhostd.socketOf('dst.0'), 'one vhostd');
  checkOutcome(t, o, 'one vhostd', migrations);
  t.match(vhostd.daemon.log, /dirty logging on/, 'the source device logged into the dirty log');
});

t.test('two vhostd processes on one shared file', async (t) => {
  freshDisk();
  const a = await startVhostd();
  t.teardown(() => a.stop());
  const b = await startVhostd();
  t.teardown(() => b.stop());
  await a.rpc('bdev_uring_create', { name: 'Uring0', filename: diskFile });
  await b.rpc('bdev_uring_create', { name: 'Uring0', filename: diskFile });
  await a.rpc('vhost_create_blk_controller', { ctrlr: 'vm.0', dev_name: 'Uring0' });
  await b.rpc('vhost_create_blk_controller', { ctrlr: 'vm.0', dev_name: 'Uring0' });
  const o = await migrate(t, dir, a.socketOf('vm.0'), b.socketOf('vm.0'), 'two vhostd');
  checkOutcome(t, o, 'two vhostd', migrations);
  t.match(a.daemon.log, /dirty logging on/, 'the source vhostd logged into the dirty log');
});

t.teardown(() => {
  console.log(`# migrations: ${migrations.done}, runs with verify errors: ${migrations.verifyErrors}`);
});
