/**
 * The rbd bdev module against a real Ceph cluster that the test starts
 * (scripts/ceph-cluster.sh: mon + mgr + one BlueStore OSD): SPDK's RPC
 * methods, an in-repo vhost-user front-end's I/O through librbd (write,
 * read back, flush, discard and write zeroes seen by `rbd du` and reads),
 * resize seen in the device's config space and by `rbd info`, the image
 * handed from one vhostd to the next (exclusive lock), errors from librbd
 * (a missing image, an OSD that is gone with an op timeout) as RPC errors
 * and IOERR, never a crash, and I/O that resumes when the OSD returns.
 * Thread: test main thread.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus, decodeBlkConfig } from '../lib/frontend-wire';
import { startCephCluster, type CephCluster } from '../lib/ceph';
import { spawnSync } from 'node:child_process';
import { repoRoot } from '../lib/repo';
import { RpcError } from '../lib/rpc';
import { runRpcPy, spdkRpcDir } from '../lib/spdk-rpc';
import { deleteControllerOnceFree, startVhostd, type VhostdHandle } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(600_000);

let ceph: CephCluster;
let vhostd: VhostdHandle;
const MIB = 1024 * 1024;

t.before(async () => {
  ceph = await startCephCluster([
    { name: 'img-a', sizeMiB: 64 },
    { name: 'img-b', sizeMiB: 32 },
    { name: 'img-c', sizeMiB: 32 },
  ]);
  t.comment(`ceph cluster started in ${ceph.startMs} ms`);
  vhostd = await startVhostd({ cpumask: '0x1', startTimeoutMs: 30_000 });
});

t.teardown(async () => {
  await vhostd?.stop();
  await ceph?.stop();
});

async function rpcError(p: Promise<unknown>): Promise<RpcError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof RpcError) return err;
    throw err;
  }
  throw new Error('the call succeeded');
}

async function attach(v: VhostdHandle, ctrlr: string, bdev: string): Promise<VhostUserFrontend> {
  await v.rpc('vhost_create_blk_controller', { ctrlr, dev_name: bdev });
  const fe = await VhostUserFrontend.connect(v.socketOf(ctrlr), 5000, { waitAccepted: true });
  await fe.negotiate();
  await fe.setupQueue(0, 128, { timeoutMs: 120_000 });
  return fe;
}

async function detach(v: VhostdHandle, ctrlr: string, fe: VhostUserFrontend): Promise<void> {
  await fe.close();
  await deleteControllerOnceFree(v.rpc, ctrlr, 10_000);
}

/** Bytes `rbd du` counts as used by an image (objects written, minus what was discarded). */
async function usedBytes(image: string): Promise<number> {
  const out = JSON.parse(await ceph.rbd('du', '--format', 'json', `${ceph.pool}/${image}`)) as { images: { used_size: number }[] };
  return out.images[0].used_size;
}

t.test('cluster registration: register, info, a second name refused, unknown cluster', async (t) => {
  t.equal(await vhostd.rpc('bdev_rbd_register_cluster', { name: 'c1', config_file: ceph.conf, key_file: ceph.keyring, user_id: 'admin' }), 'c1');
  t.same(await vhostd.rpc('bdev_rbd_get_clusters_info', { name: 'c1' }), {
    cluster_name: 'c1',
    user_id: 'admin',
    config_file: ceph.conf,
    key_file: ceph.keyring,
  });
  t.equal(((await vhostd.rpc('bdev_rbd_get_clusters_info')) as unknown[]).length, 1);
  t.equal((await rpcError(vhostd.rpc('bdev_rbd_register_cluster', { name: 'c1', config_file: ceph.conf }))).code, -17, 'EEXIST');
  t.equal((await rpcError(vhostd.rpc('bdev_rbd_get_clusters_info', { name: 'nope' }))).code, -2, 'ENOENT');
  const bad = await rpcError(vhostd.rpc('bdev_rbd_register_cluster', { name: 'c2', config_file: '/nonexistent/ceph.conf' }));
  t.equal(bad.code, -2, 'a config file that does not exist: ENOENT');
  t.match(bad.message, /rados_conf_read_file/);
});

t.test('bdev_rbd_create on a registered cluster: geometry, driver_specific, save_config, errors', async (t) => {
  t.equal(
    await vhostd.rpc('bdev_rbd_create', { name: 'rbd0', pool_name: ceph.pool, rbd_name: 'img-a', block_size: 512, cluster_name: 'c1' }),
    'rbd0',
  );
  const [info] = (await vhostd.rpc('bdev_get_bdevs', { name: 'rbd0' })) as Record<string, unknown>[];
  t.equal(info.product_name, 'Ceph Rbd Disk');
  t.equal(info.block_size, 512);
  t.equal(info.num_blocks, (64 * MIB) / 512);
  t.same(info.driver_specific, {
    rbd: { pool_name: ceph.pool, rbd_name: 'img-a', user_id: 'admin', config_file: ceph.conf, key_file: ceph.keyring },
  });
  t.match(info.supported_io_types, { read: true, write: true, flush: true, unmap: true, write_zeroes: true });

  const cfg = (await vhostd.rpc('framework_get_config', { name: 'bdev' })) as { method: string; params: Record<string, unknown> }[];
  const methods = cfg.map((c) => c.method);
  t.ok(methods.indexOf('bdev_rbd_register_cluster') >= 0 && methods.indexOf('bdev_rbd_register_cluster') < methods.indexOf('bdev_rbd_create'), 'the cluster is registered before its bdevs');
  t.match(cfg.find((c) => c.method === 'bdev_rbd_create')?.params, {
    name: 'rbd0',
    pool_name: ceph.pool,
    rbd_name: 'img-a',
    block_size: 512,
    cluster_name: 'c1',
    uuid: info.uuid,
  });

  const missing = await rpcError(vhostd.rpc('bdev_rbd_create', { name: 'x', pool_name: ceph.pool, rbd_name: 'no-such-image', block_size: 512, cluster_name: 'c1' }));
  t.equal(missing.code, -2, 'a missing image is ENOENT');
  t.match(missing.message, /rbd_open/);
  const noCluster = await rpcError(vhostd.rpc('bdev_rbd_create', { name: 'x', pool_name: ceph.pool, rbd_name: 'img-a', block_size: 512, cluster_name: 'nope' }));
  t.equal(noCluster.code, -22);
  t.equal((await rpcError(vhostd.rpc('bdev_rbd_create', { name: 'rbd0', pool_name: ceph.pool, rbd_name: 'img-b', block_size: 512, cluster_name: 'c1' }))).code, -17, 'name taken');
  t.equal((await rpcError(vhostd.rpc('bdev_rbd_create', { name: 'x', pool_name: ceph.pool, rbd_name: 'img-b', block_size: 1000, cluster_name: 'c1' }))).code, -22, 'bad block size');
  t.equal((await rpcError(vhostd.rpc('bdev_rbd_unregister_cluster', { name: 'c1' }))).code, -16, 'a cluster in use is EBUSY');
  t.equal(((await vhostd.rpc('bdev_get_bdevs')) as unknown[]).length, 1, 'failed creates left nothing');
});

t.test('front-end I/O through librbd: write, read back, flush, discard and write zeroes, resize', async (t) => {
  const fe = await attach(vhostd, 'ctl.rbd', 'rbd0');
  const data = randomBytes(1 * MIB);
  for (let i = 0; i < 4; i++) {
    const r = await fe.write(0, i * 512, data.subarray(i * (MIB / 4), (i + 1) * (MIB / 4)));
    t.equal(r.status, BlkStatus.OK, `write ${i}`);
  }
  const back = await fe.read(0, 0, MIB);
  t.equal(back.status, BlkStatus.OK);
  t.ok(Buffer.from(back.data).equals(data), 'what was written is read back');
  t.equal((await fe.flush(0)).status, BlkStatus.OK, 'flush');

  // Many multi-segment requests in flight at once (librbd keeps a read's iovec array until it completes).
  const chunks = Array.from({ length: 16 }, (_, i) => data.subarray(i * 65536, (i + 1) * 65536));
  const reads = await Promise.all(chunks.map((_, i) => fe.read(0, i * 128, 65536, { segments: 16 })));
  t.ok(
    reads.every((r, i) => r.status === BlkStatus.OK && Buffer.from(r.data).equals(chunks[i])),
    '16 concurrent 16-segment reads each return their own data',
  );
  const fresh = randomBytes(MIB);
  const writes = await Promise.all(chunks.map((_, i) => fe.write(0, 4096 + i * 128, fresh.subarray(i * 65536, (i + 1) * 65536), { segments: 16 })));
  t.ok(writes.every((w) => w.status === BlkStatus.OK), '16 concurrent 16-segment writes');
  t.ok(Buffer.from((await fe.read(0, 4096, MIB)).data).equals(fresh), 'and they land where they should');

  // The same bytes through another librbd client (the rbd CLI; reading needs no lock).
  const file = path.join(os.tmpdir(), `vhostd-rbd-export-${process.pid}`);
  try {
    await ceph.rbd('export', `${ceph.pool}/img-a`, file);
    t.ok(fs.readFileSync(file).subarray(0, MIB).equals(data), 'rbd export sees the data vhostd wrote');
  } finally {
    fs.rmSync(file, { force: true });
  }

  // Write a whole 4 MiB object, then discard it: rbd du sees it go.
  const obj = randomBytes(4 * MIB);
  t.equal((await fe.write(0, (16 * MIB) / 512, obj)).status, BlkStatus.OK);
  const usedBefore = await usedBytes('img-a');
  t.equal((await fe.discard(0, [{ sector: (16 * MIB) / 512, numSectors: (4 * MIB) / 512 }])).status, BlkStatus.OK, 'discard');
  const usedAfter = await usedBytes('img-a');
  t.ok(usedAfter <= usedBefore - 4 * MIB, `rbd du: ${usedBefore} → ${usedAfter} bytes after discarding a 4 MiB object`);
  const gone = await fe.read(0, (16 * MIB) / 512, 64 * 1024);
  t.ok(Buffer.from(gone.data).equals(Buffer.alloc(64 * 1024)), 'a discarded range reads as zeroes');

  t.equal((await fe.writeZeroes(0, [{ sector: 8, numSectors: 8 }])).status, BlkStatus.OK, 'write zeroes');
  const z = await fe.read(0, 0, 16 * 512);
  t.ok(Buffer.from(z.data).subarray(0, 4096).equals(data.subarray(0, 4096)), 'before the zeroed range: untouched');
  t.ok(Buffer.from(z.data).subarray(4096).equals(Buffer.alloc(4096)), 'the zeroed range reads as zeroes');

  // Out of range: IOERR from the device, vhostd unharmed.
  const beyond = await fe.read(0, (64 * MIB) / 512, 4096);
  t.equal(beyond.status, BlkStatus.IOERR, 'a read past the end is IOERR');

  // Resize: rbd sees the new size, the device reports it, I/O reaches the new end.
  t.equal((await rpcError(vhostd.rpc('bdev_rbd_resize', { name: 'rbd0', new_size: 32 }))).code, -22, 'shrinking is refused');
  t.equal(await vhostd.rpc('bdev_rbd_resize', { name: 'rbd0', new_size: 96 }), true);
  const rinfo = JSON.parse(await ceph.rbd('info', '--format', 'json', `${ceph.pool}/img-a`)) as { size: number };
  t.equal(rinfo.size, 96 * MIB, 'rbd info sees the new size');
  await waitFor(async () => decodeBlkConfig(await fe.getConfig(60)).capacity === BigInt((96 * MIB) / 512), 10_000, 'capacity grows');
  const tail = randomBytes(4096);
  t.equal((await fe.write(0, (96 * MIB) / 512 - 8, tail)).status, BlkStatus.OK, 'write at the new end');
  t.ok(Buffer.from((await fe.read(0, (96 * MIB) / 512 - 8, 4096)).data).equals(tail));

  await detach(vhostd, 'ctl.rbd', fe);
});

t.test('a second vhostd takes the image over once the first lets go (exclusive lock), data intact', async (t) => {
  const marker = randomBytes(8192);
  const fe = await attach(vhostd, 'ctl.hand', 'rbd0');
  t.equal((await fe.write(0, 2048, marker)).status, BlkStatus.OK);
  await detach(vhostd, 'ctl.hand', fe);
  t.equal(await vhostd.rpc('bdev_rbd_delete', { name: 'rbd0' }), true);
  t.equal((await rpcError(vhostd.rpc('bdev_rbd_delete', { name: 'rbd0' }))).code, -19, 'deleted once');

  const second = await startVhostd({ cpumask: '0x1', startTimeoutMs: 30_000 });
  try {
    // Its own connection from user_id + config (no cluster registered, no config file).
    t.equal(
      await second.rpc('bdev_rbd_create', {
        name: 'rbd1',
        pool_name: ceph.pool,
        rbd_name: 'img-a',
        block_size: 4096,
        user_id: 'admin',
        config: { mon_host: ceph.monHost, key: ceph.key },
      }),
      'rbd1',
    );
    const [info] = (await second.rpc('bdev_get_bdevs', { name: 'rbd1' })) as Record<string, unknown>[];
    t.same(info.driver_specific, { rbd: { pool_name: ceph.pool, rbd_name: 'img-a', user_id: 'admin', config: { mon_host: ceph.monHost, key: ceph.key } } });
    t.equal(info.num_blocks, (96 * MIB) / 4096);
    const fe2 = await attach(second, 'ctl.two', 'rbd1');
    const r = await fe2.read(0, 2048, 8192);
    t.equal(r.status, BlkStatus.OK);
    t.ok(Buffer.from(r.data).equals(marker), 'the second process reads what the first wrote');
    t.equal((await fe2.write(0, 0, randomBytes(4096))).status, BlkStatus.OK, 'and may write (it holds the lock now)');
    await detach(second, 'ctl.two', fe2);
  } finally {
    const exit = await second.stop();
    t.equal(exit.code, 0, 'the second vhostd exits cleanly with an open rbd bdev');
  }
  const status = JSON.parse(await ceph.rbd('status', '--format', 'json', `${ceph.pool}/img-a`)) as { watchers: unknown[] };
  t.same(status.watchers, [], 'no watcher left on the image after both let go');
});

t.test('an OSD that goes away: I/O pauses and resumes, or fails with IOERR under an op timeout; never a crash', async (t) => {
  t.equal(
    await vhostd.rpc('bdev_rbd_register_cluster', { name: 'c-timeout', config_file: ceph.conf, config_param: { rados_osd_op_timeout: '3' } }),
    'c-timeout',
  );
  // Both open (and take their exclusive locks) while the OSD is up.
  t.equal(await vhostd.rpc('bdev_rbd_create', { name: 'rbd-wait', pool_name: ceph.pool, rbd_name: 'img-b', block_size: 512, cluster_name: 'c1' }), 'rbd-wait');
  t.equal(await vhostd.rpc('bdev_rbd_create', { name: 'rbd-to', pool_name: ceph.pool, rbd_name: 'img-c', block_size: 512, cluster_name: 'c-timeout' }), 'rbd-to');
  const fe = await attach(vhostd, 'ctl.wait', 'rbd-wait');
  const fe2 = await attach(vhostd, 'ctl.to', 'rbd-to');
  const before = randomBytes(4096);
  t.equal((await fe.write(0, 0, before)).status, BlkStatus.OK);
  t.equal((await fe2.write(0, 0, before)).status, BlkStatus.OK);

  await ceph.osdStop();
  let settled = false;
  const data = randomBytes(4096);
  const pendingWrite = fe.write(0, 8, data).then((r) => {
    settled = true;
    return r;
  });
  // With rados_osd_op_timeout, librbd gives up and the guest gets IOERR.
  t.equal((await fe2.write(0, 16, randomBytes(4096))).status, BlkStatus.IOERR, 'with rados_osd_op_timeout a write fails with IOERR');
  t.equal((await fe2.read(0, 0, 4096)).status, BlkStatus.IOERR, 'and so does a read');
  // vhostd keeps answering while librbd waits for the OSD.
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    t.ok(Array.isArray(await vhostd.rpc('bdev_get_bdevs')), `RPC answers while the OSD is down (${i + 1})`);
  }
  t.equal(settled, false, 'without an op timeout the write waits for the OSD');
  const iostat = (await vhostd.rpc('bdev_get_iostat', { name: 'rbd-to' })) as { bdevs: { name: string; io_error?: { failed?: number } }[] };
  t.equal(iostat.bdevs[0]?.name, 'rbd-to', 'iostat answers');
  t.ok((iostat.bdevs[0]?.io_error?.failed ?? 0) >= 2, `the failed I/Os are counted (io_error.failed ${iostat.bdevs[0]?.io_error?.failed})`);
  t.match(vhostd.daemon.log, /I\/O failed .*bdev=rbd-to.*engine=rbd.*error=ETIMEDOUT/, 'the failure is logged with its errno');

  await ceph.osdStart();
  const w = await pendingWrite;
  t.equal(w.status, BlkStatus.OK, 'the paused write completes once the OSD is back');
  t.ok(Buffer.from((await fe.read(0, 8, 4096)).data).equals(data), 'and its data is there');
  // The timed-out client finds the restarted OSD on its next map update.
  await waitFor(async () => (await fe2.read(0, 0, 4096)).status === BlkStatus.OK, 120_000, 'reads on the timeout cluster work again', 1000);
  t.ok(Buffer.from((await fe2.read(0, 0, 4096)).data).equals(before), 'the data written before the outage is intact');
  await detach(vhostd, 'ctl.wait', fe);
  await detach(vhostd, 'ctl.to', fe2);
  t.equal(await vhostd.rpc('bdev_rbd_delete', { name: 'rbd-wait' }), true);
  t.equal(await vhostd.rpc('bdev_rbd_delete', { name: 'rbd-to' }), true);
  t.ok(vhostd.daemon.running, 'vhostd is still running');
});

/** vhostd_core_sleeps_total of core `core` from the metrics socket (a plain read of one sample). */
function coreSleeps(socketPath: string, core: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        const m = new RegExp(`^vhostd_core_sleeps_total\\{core="${core}"\\} (\\d+)$`, 'm').exec(body);
        if (m === null) reject(new Error(`no vhostd_core_sleeps_total for core ${core} in:\n${body.slice(0, 2000)}`));
        else resolve(Number(m[1]));
      });
    });
    req.setTimeout(30_000, () => req.destroy(new Error('metrics scrape timed out')));
    req.on('error', reject);
  });
}

t.test('adaptive poll mode sleeps on the completion eventfd while librbd holds the I/O, and loses none', async (t) => {
  // --idle-sleep-us at its maximum (60 s): during the I/O below the worker is never idle that long, so every
  // sleep counted is one taken with an RBD request in flight (issue #13 item 1). Before that change it spun.
  await ceph.createImage('img-adaptive', 16);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-rbd-adaptive-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const metrics = path.join(dir, 'metrics.sock');
  const v = await startVhostd({ cpumask: '0x1', startTimeoutMs: 30_000, extraArgs: ['--poll-mode', 'adaptive', '--idle-sleep-us', '60000000', '--metrics', metrics] });
  t.teardown(() => v.stop());
  await waitFor(() => fs.existsSync(metrics), 20_000, 'metrics socket');
  t.equal(await v.rpc('bdev_rbd_register_cluster', { name: 'ca', config_file: ceph.conf }), 'ca');
  t.equal(await v.rpc('bdev_rbd_create', { name: 'rbd-ad', pool_name: ceph.pool, rbd_name: 'img-adaptive', block_size: 512, cluster_name: 'ca' }), 'rbd-ad');
  const fe = await attach(v, 'ctl.ad', 'rbd-ad');
  const before = await coreSleeps(metrics, 0);
  const N = 24;
  const blocks = Array.from({ length: N }, () => randomBytes(4096));
  let bad = 0;
  // One request at a time (QD1): each waits in librbd while nothing else is to do.
  for (let i = 0; i < N; i++) if ((await fe.write(0, i * 8, blocks[i])).status !== BlkStatus.OK) bad++;
  for (let i = 0; i < N; i++) {
    const r = await fe.read(0, i * 8, 4096);
    if (r.status !== BlkStatus.OK || !Buffer.from(r.data).equals(blocks[i])) bad++;
  }
  // And 16 at once.
  const many = await Promise.all(blocks.slice(0, 16).map((_, i) => fe.read(0, i * 8, 4096)));
  bad += many.filter((r, i) => r.status !== BlkStatus.OK || !Buffer.from(r.data).equals(blocks[i])).length;
  const after = await coreSleeps(metrics, 0);
  t.equal(bad, 0, `${2 * N + 16} requests completed with the right data`);
  t.ok(after - before >= N, `the worker slept with I/O in flight (${after - before} sleeps for ${2 * N} QD1 requests)`);
  await detach(v, 'ctl.ad', fe);
  t.equal(await v.rpc('bdev_rbd_delete', { name: 'rbd-ad' }), true);
  t.equal(await v.rpc('bdev_rbd_unregister_cluster', { name: 'ca' }), true);
});

t.test("SPDK's rpc.py drives the rbd methods unchanged; vhostd-rpc takes the same syntax", async (t) => {
  const dir = spdkRpcDir();
  const py = async (...args: string[]) => {
    const r = await runRpcPy(dir, ['-s', vhostd.rpcSocket, ...args]);
    t.equal(r.code, 0, `rpc.py ${args[0]} exits 0`, { stderr: r.stderr });
    return r.stdout.trim();
  };
  t.equal(await py('bdev_rbd_register_cluster', 'pyc', '--config-file', ceph.conf, '--config-param', 'rados_mon_op_timeout=30', '--core-mask', '0x1'), 'pyc', 'print_json prints a string bare');
  t.same(JSON.parse(await py('bdev_rbd_get_clusters_info', '-b', 'pyc')), {
    cluster_name: 'pyc',
    config_param: { rados_mon_op_timeout: '30' },
    config_file: ceph.conf,
    core_mask: '0x1',
  });
  t.equal(await py('bdev_rbd_create', '-b', 'PyRbd', '-c', 'pyc', ceph.pool, 'img-b', '4096'), 'PyRbd');
  t.equal(await py('bdev_rbd_resize', 'PyRbd', '40'), 'true');
  const [b] = JSON.parse(await py('bdev_get_bdevs', '-b', 'PyRbd')) as { num_blocks: number; driver_specific: unknown }[];
  t.equal(b.num_blocks, (40 * MIB) / 4096, 'resized through rpc.py');
  t.same(b.driver_specific, { rbd: { pool_name: ceph.pool, rbd_name: 'img-b', config_param: { rados_mon_op_timeout: '30' }, config_file: ceph.conf } });
  const saved = await py('save_config', '-s', 'bdev');
  t.match(saved, /bdev_rbd_register_cluster[\s\S]*bdev_rbd_create/, 'save_config: the cluster, then the bdev');
  t.equal(await py('bdev_rbd_delete', 'PyRbd'), '');
  t.equal(await py('bdev_rbd_unregister_cluster', 'pyc'), '');
  const vr = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'vhostd-rpc.js'), '-s', vhostd.rpcSocket, 'bdev_rbd_register_cluster', 'vrc', '--config-file', ceph.conf, '--config-param', 'rados_osd_op_timeout=0', '--config-param', 'rados_mon_op_timeout=20'], { encoding: 'utf8' });
  t.equal(vr.status, 0, 'vhostd-rpc bdev_rbd_register_cluster', { stderr: vr.stderr });
  t.match(await vhostd.rpc('bdev_rbd_get_clusters_info', { name: 'vrc' }), { config_param: { rados_osd_op_timeout: '0', rados_mon_op_timeout: '20' } });
});

t.test('unregister once unused; bdev_rbd_get_clusters_info with none left is ENOENT', async (t) => {
  t.equal(await vhostd.rpc('bdev_rbd_unregister_cluster', { name: 'c1' }), true);
  t.equal(await vhostd.rpc('bdev_rbd_unregister_cluster', { name: 'c-timeout' }), true);
  t.equal(await vhostd.rpc('bdev_rbd_unregister_cluster', { name: 'vrc' }), true);
  t.equal((await rpcError(vhostd.rpc('bdev_rbd_get_clusters_info'))).code, -2);
  t.equal((await rpcError(vhostd.rpc('bdev_rbd_unregister_cluster', { name: 'c1' }))).code, -2);
});
