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
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { bootGuest, type GuestRun } from '../lib/guest';
import { assertCompleted, tail } from '../lib/guest-checks';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(2_400_000);

const DISK_BYTES = 128 << 20;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-e2e-migrate-'));
const diskFile = `/dev/shm/vhostd-e2e-migrate-${process.pid}.img`;

t.teardown(() => {
  fs.rmSync(diskFile, { force: true });
  fs.rmSync(dir, { recursive: true, force: true });
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** One HMP command on QEMU's monitor socket; resolves with its output (up to the next prompt). */
async function hmp(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(socket);
    let out = '';
    let sent = false;
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`HMP ${command}: no prompt, got ${JSON.stringify(out)}`));
    }, 30_000);
    c.on('data', (d) => {
      out += d.toString('utf8');
      if (!sent && out.includes('(qemu)')) {
        sent = true;
        out = '';
        c.write(`${command}\n`);
      } else if (sent && out.includes('(qemu)')) {
        clearTimeout(timer);
        c.end();
        resolve(out.replace(/\r/g, ''));
      }
    });
    c.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const SCRIPT = `
wait_for /dev/vda 150 || { echo "no /dev/vda"; exit 10; }
echo "@@MARK fio_start"
check fio_write fio --name=w --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randwrite --bs=4k --size=24M --numjobs=2 --offset_increment=48M \\
  --verify=crc32c --verify_backlog=64 --verify_fatal=1 --do_verify=1 \\
  --cpus_allowed=0-1 --cpus_allowed_policy=split --group_reporting
echo "@@MARK write_done"
check fio_verify fio --name=w --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randwrite --bs=4k --size=24M --numjobs=2 --offset_increment=48M \\
  --verify=crc32c --verify_fatal=1 --verify_only --cpus_allowed=0-1 --cpus_allowed_policy=split --group_reporting
value ioerr $(dmesg | grep -ci 'i/o error')
`;

interface MigrationOutcome {
  source: GuestRun;
  dest: GuestRun;
  status: string;
}

/** Boot the destination (waiting), the source, migrate mid-fio over a unix socket, quit the source. */
async function migrate(t: tap.Test, srcSocket: string, dstSocket: string, tag: string): Promise<MigrationOutcome> {
  const file = tag.replace(/[^a-z0-9]+/gi, '-');
  const migSocket = path.join(dir, `${file}.mig`);
  const srcMon = path.join(dir, `${file}.src.mon`);
  const dstMon = path.join(dir, `${file}.dst.mon`);
  const common = { memMiB: 512, smp: 2, timeoutMs: 1_200_000, script: SCRIPT };
  const dest = bootGuest({
    ...common,
    sockets: [{ path: dstSocket, kind: 'blk', numQueues: 2 }],
    extraArgs: ['-monitor', `unix:${dstMon},server=on,wait=off`, '-incoming', `unix:${migSocket}`],
  });
  await waitFor(async () => fs.existsSync(dstMon) && fs.existsSync(migSocket), 60_000, 'destination QEMU listening', 100);

  let console_ = '';
  let started!: () => void;
  const fioStarted = new Promise<void>((r) => (started = r));
  const source = bootGuest({
    ...common,
    sockets: [{ path: srcSocket, kind: 'blk', numQueues: 2 }],
    extraArgs: ['-monitor', `unix:${srcMon},server=on,wait=off`],
    onOutput: (text) => {
      console_ += text;
      if (console_.includes('@@MARK fio_start')) started();
    },
  });
  let srcDone = false;
  void source.finally(() => (srcDone = true));
  // Whatever happens, no QEMU is left behind waiting for its timeout.
  const quitAll = async (): Promise<void> => {
    for (const mon of [srcMon, dstMon]) await hmp(mon, 'quit').catch(() => '');
  };
  try {
    await Promise.race([fioStarted, source]);
    // Let fio get going: the migration then runs while it writes and verifies.
    await sleep(3000);
    if (srcDone) throw new Error(`${tag}: the source QEMU ended before the migration:\n${(await source).output.slice(-4000)}`);
  } catch (err) {
    await quitAll();
    throw err;
  }
  t.notOk(console_.includes('@@MARK write_done'), `${tag}: fio still writing when the migration starts`);
  try {
    await runMigration(srcMon, migSocket, tag, t);
  } catch (err) {
    await quitAll();
    throw err;
  }
  await hmp(srcMon, 'quit').catch(() => '');
  const src = await source;
  const dst = await dest;
  return { source: src, dest: dst, status: 'completed' };
}

async function runMigration(srcMon: string, migSocket: string, tag: string, t: tap.Test): Promise<void> {
  await hmp(srcMon, 'migrate_set_parameter max-bandwidth 2G');
  await hmp(srcMon, 'migrate_set_parameter downtime-limit 2000');
  await hmp(srcMon, `migrate -d unix:${migSocket}`);
  let status = '';
  await waitFor(
    async () => {
      const info = await hmp(srcMon, 'info migrate');
      status = /Migration status: (\S+)/.exec(info)?.[1] ?? '';
      if (status === 'failed' || status === 'cancelled') throw new Error(`${tag}: migration ${status}:\n${info}`);
      return status === 'completed';
    },
    900_000,
    'migration completed',
    1000,
  );
  const srcInfo = await hmp(srcMon, 'info migrate');
  t.comment(`${tag}: ${srcInfo.split('\n').filter((l) => /status|total time|downtime|transferred ram|dirty sync count/i.test(l)).join('; ')}`);
}

const migrations = { done: 0, verifyErrors: 0 };

/** The shared disk, empty (all zero) for a new run. */
function freshDisk(): void {
  fs.writeFileSync(diskFile, '');
  fs.truncateSync(diskFile, DISK_BYTES);
}

/** Check a run's outcome and count it in the summary line. */
function checkOutcome(t: tap.Test, o: MigrationOutcome, tag: string): void {
  if (o.status === 'completed') migrations.done++;
  if (o.dest.results.get('fio_verify') !== 0 || o.dest.results.get('fio_write') !== 0) migrations.verifyErrors++;
  t.equal(o.status, 'completed', `${tag}: migration completed`);
  t.notOk(o.source.output.includes('@@MARK write_done'), `${tag}: the write phase did not end on the source`);
  t.ok(o.dest.output.includes('@@MARK write_done'), `${tag}: the write phase ended on the destination`);
  assertCompleted(t, o.dest, `${tag} destination guest`);
  t.equal(o.dest.results.get('fio_write'), 0, `${tag}: fio write with verify backlog: 0 errors`, { output: tail(o.dest) });
  t.equal(o.dest.results.get('fio_verify'), 0, `${tag}: fio crc32c verify on the destination: 0 errors`, { output: tail(o.dest) });
  t.equal(o.dest.values.get('ioerr'), '0', `${tag}: the guest kernel logged no I/O error`);
  t.notMatch(o.dest.output, /I\/O error|blk_update_request|Buffer I\/O error|verify:/, `${tag}: no I/O or verify error on the console`);
}

t.test('two controllers of one vhostd on one uring bdev', async (t) => {
  freshDisk();
  const vhostd: VhostdHandle = await startVhostd();
  t.teardown(() => vhostd.stop());
  await vhostd.rpc('bdev_uring_create', { name: 'Uring0', filename: diskFile });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'src.0', dev_name: 'Uring0' });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'dst.0', dev_name: 'Uring0' });
  const o = await migrate(t, vhostd.socketOf('src.0'), vhostd.socketOf('dst.0'), 'one vhostd');
  checkOutcome(t, o, 'one vhostd');
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
  const o = await migrate(t, a.socketOf('vm.0'), b.socketOf('vm.0'), 'two vhostd');
  checkOutcome(t, o, 'two vhostd');
  t.match(a.daemon.log, /dirty logging on/, 'the source vhostd logged into the dirty log');
});

t.teardown(() => {
  console.log(`# migrations: ${migrations.done}, runs with verify errors: ${migrations.verifyErrors}`);
});
