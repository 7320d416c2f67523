/**
 * End-to-end (issue #13 item 4, last part): a guest migrated between two
 * vhostd processes that serve one RBD image of a real single-node Ceph
 * cluster (started by the test, scripts/ceph-cluster.sh), with fio verify
 * running across the migration (test/lib/guest-migration.ts: fio random
 * writes with crc32c verify and a verify backlog, `migrate` mid-fio, a full
 * verify pass on the destination).
 *
 * Image open semantics: both processes have the image open at once (the
 * destination's bdev is made before the migration, as a destination host
 * would); librbd's exclusive lock is cooperative, so the source holds it
 * while it writes and hands it over when the destination's first write
 * asks for it (both bdevs count writes). The cluster is registered with
 * rbd_cache=false on both sides: a completed write must be in the cluster,
 * not in the source process's cache, when the destination reads it (QEMU's
 * own rbd driver flushes at migration; a vhost-user device stop does not
 * flush, so a writeback cache in the source would hide writes from the
 * destination's reads, which take no lock). Both vhostd run in adaptive poll
 * mode, so the workers sleep on librbd's completion eventfd while I/O is in
 * flight (issue #13 item 1) under a real guest.
 *
 * Downtime: the migration runs with QEMU's default downtime-limit (300 ms);
 * what the downtime is made of is in the comment at migrate() below. A run
 * whose destination guest kernel crashed (QEMU 7.2 TCG) migrates again, up to
 * ATTEMPTS runs (migrateAgainOnCrash); a verify or I/O error still fails.
 * Thread: test main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { startCephCluster, type CephCluster } from '../lib/ceph';
import { checkOutcome, migrate, migrateAgainOnCrash, type MigrationTally } from '../lib/guest-migration';
import { deleteControllerOnceFree, startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(2_400_000);

const IMAGE = 'vm-disk';
const IMAGE_MIB = 128;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-e2e-migrate-rbd-'));
const tally: MigrationTally = { done: 0, verifyErrors: 0 };
let runs = 0;
let crashes = 0;
/** Migrations in all, at most, while the destination guest's kernel crashes (migrateAgainOnCrash). */
const ATTEMPTS = 3;
let ceph: CephCluster;
const t0 = Date.now();

t.before(async () => {
  ceph = await startCephCluster([{ name: IMAGE, sizeMiB: IMAGE_MIB }]);
  t.comment(`ceph cluster started in ${ceph.startMs} ms`);
});

t.teardown(async () => {
  await ceph?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(
    `# migrations: ${runs}, destination kernel crashes: ${crashes}, runs with verify errors: ${tally.verifyErrors}; test file took ${Math.round((Date.now() - t0) / 1000)} s`,
  );
});

/** Resident memory (KiB) of the cluster's daemons, from their pid files. */
function cephRssKiB(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of fs.readdirSync(ceph.dir).filter((n) => n.endsWith('.pid'))) {
    const pid = fs.readFileSync(path.join(ceph.dir, f), 'utf8').trim();
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) out[f.replace(/\.pid$/, '')] = Number(m[1]);
    } catch {
      /* the daemon is gone: not counted */
    }
  }
  return out;
}

async function serveImage(v: VhostdHandle): Promise<void> {
  t.equal(await v.rpc('bdev_rbd_register_cluster', { name: 'ceph', config_file: ceph.conf, config_param: { rbd_cache: 'false' } }), 'ceph');
  t.equal(await v.rpc('bdev_rbd_create', { name: 'Ceph0', pool_name: ceph.pool, rbd_name: IMAGE, block_size: 512, cluster_name: 'ceph' }), 'Ceph0');
  t.equal(await v.rpc('vhost_create_blk_controller', { ctrlr: 'vm.0', dev_name: 'Ceph0' }), true);
}

async function writeOps(v: VhostdHandle): Promise<number> {
  const s = (await v.rpc('bdev_get_iostat', { name: 'Ceph0' })) as { bdevs: { num_write_ops: number }[] };
  return s.bdevs[0].num_write_ops;
}

t.test('a guest under fio verify migrates between two vhostd processes on one RBD image', async (t) => {
  const args = { extraArgs: ['--poll-mode', 'adaptive'], startTimeoutMs: 30_000 };
  const a = await startVhostd({ cpumask: '0x1', ...args });
  t.teardown(() => a.stop());
  const b = await startVhostd({ cpumask: '0x2', ...args });
  t.teardown(() => b.stop());
  await serveImage(a);
  await serveImage(b);
  const watchers = JSON.parse(await ceph.rbd('status', '--format', 'json', `${ceph.pool}/${IMAGE}`)) as { watchers: unknown[] };
  t.equal(watchers.watchers.length, 2, 'both processes have the image open before the migration');

  // Migrate once the source has written a good part of what fio writes (12,288 writes of 4 KiB), so
  // the image's exclusive lock is held by the source when the destination takes over.
  // QEMU's default downtime-limit, 300 ms (the helper's default is 2000). QEMU then iterates: 3-4
  // dirty syncs, total time 1.0-1.9 s, downtime 15-169 ms (25 migrations, 2026-11-30, 2-core machine
  // shared with other tests; 185-236 ms earlier at load 16-19). At 2000 ms QEMU stopped the guest
  // 180-270 ms into the first RAM pass (pending 459 MB below its bandwidth estimate x 2 s) and sent
  // the rest with the guest stopped: downtime 3.2-4.9 s, of which (QEMU -trace vhost_dev_stop,
  // migration_completion_vm_stop, savevm_section_*) the vhost-user stop, librbd writes in flight
  // drained, took 47-83 ms, the device state 5 ms, the final RAM pass the rest. At 300 ms the
  // destination guest's kernel sometimes crashes right after the switch-over (3 of the 25: a NULL
  // pointer dereference, an instruction fetch from a bad address in the idle task, a corrupted
  // kernel stack in try_to_wake_up; earlier, list corruption in the timer interrupt), each after a
  // migration with a 4th dirty sync and under 1 MB of RAM sent in the downtime (3 of the 6 such, none
  // of the 19 others): memory only the guest CPU writes, the QEMU 7.2 TCG fault that
  // guest-migrate-dirtylog shows with qemu-storage-daemon too. Such a run proves nothing about
  // vhostd: migrateAgainOnCrash shows it and migrates again (new guests, the same vhostd processes
  // and image), up to ATTEMPTS runs; the last run is judged in full.
  const tag = 'rbd two vhostd';
  let before = [0, 0];
  const { last: o, crashes: crashed } = await migrateAgainOnCrash(t, tag, { attempts: ATTEMPTS }, async () => {
    runs++;
    // Each run counts its own writes: an earlier run's are in both counters already.
    before = [await writeOps(a), await writeOps(b)];
    const busy = async (): Promise<boolean> => (await writeOps(a)) - before[0] >= 500;
    return migrate(t, dir, a.socketOf('vm.0'), b.socketOf('vm.0'), tag, busy, { downtimeLimitMs: 300 });
  });
  crashes += crashed;
  checkOutcome(t, o, tag, tally);
  t.match(a.daemon.log, /dirty logging on/, 'the source vhostd logged into the dirty log');
  const [wa, wb] = [(await writeOps(a)) - before[0], (await writeOps(b)) - before[1]];
  t.ok(wa > 0, `the source wrote to the image (${wa} writes)`);
  t.ok(wb > 0, `the destination wrote to the image after the switch-over (${wb} writes): the exclusive lock moved to it`);
  const rss = cephRssKiB();
  t.comment(`ceph daemons' RSS after the migration (KiB): ${JSON.stringify(rss)}, total ${Math.round(Object.values(rss).reduce((x, y) => x + y, 0) / 1024)} MiB`);
  t.comment(`rbd du: ${(await ceph.rbd('du', `${ceph.pool}/${IMAGE}`)).trim().split('\n').pop()}`);

  // The source lets go; the destination alone keeps the image.
  await deleteControllerOnceFree(a.rpc, 'vm.0', 30_000);
  t.equal(await a.rpc('bdev_rbd_delete', { name: 'Ceph0' }), true);
  const after = JSON.parse(await ceph.rbd('status', '--format', 'json', `${ceph.pool}/${IMAGE}`)) as { watchers: unknown[] };
  t.equal(after.watchers.length, 1, 'one watcher left: the destination');
  const exitA = await a.stop();
  t.equal(exitA.code, 0, 'the source vhostd exits cleanly');
});
