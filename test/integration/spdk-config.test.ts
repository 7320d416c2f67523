/**
 * The config SPDK's vhost app (v23.05) writes with save_config loads into
 * vhostd unchanged (-c): every subsystem SPDK writes — iobuf, sock, vmd,
 * accel, bdev (with bdev_set_options, bdev_nvme_set_options,
 * bdev_nvme_set_hotplug, bdev_wait_for_examine), nbd, scsi (null), scheduler,
 * vhost_scsi, vhost_blk. What has a meaning here is applied (bdevs with their
 * uuids, blk controllers with coalescing and readonly, the scsi controller and
 * its target, the scheduler); each option method that changes nothing here is
 * logged once, naming it. The fixture
 * (test/fixtures/spdk-v23.05-vhost-save_config.json) is the real output of
 * SPDK v23.05's vhost app (built by ../shared/peers/build-spdk.sh), made with
 * its scripts/rpc.py:
 *   build/bin/vhost -m 0x1 -S DIR -s 512 -u -r SOCK --disable-cpumask-locks
 *   bdev_malloc_create -b Malloc0 64 512; bdev_malloc_create -b Malloc1 16 4096;
 *   bdev_null_create Null0 64 4096; vhost_create_blk_controller vhost.0 Malloc0;
 *   vhost_controller_set_coalescing vhost.0 20 50000;
 *   vhost_create_blk_controller -r vhost.2 Malloc1; vhost_create_scsi_controller vhost.1;
 *   vhost_scsi_controller_add_target vhost.1 0 Null0; save_config
 * It differs from what the hand-written fixture it replaces assumed: cpumask
 * "1" (hex without 0x), iobuf's config empty, scsi's config null, no
 * bdev_iscsi_set_options (that module is not built without libiscsi).
 * Thread: test main thread.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../lib/repo';
import { startVhostd } from '../lib/vhostd';

t.setTimeout(120_000);

const FIXTURE = path.join(repoRoot(), 'test', 'fixtures', 'spdk-v23.05-vhost-save_config.json');

type Obj = Record<string, unknown>;

t.test("SPDK v23.05 vhost app's save_config loads with -c", async (t) => {
  const h = await startVhostd({ cpumask: '0x1', extraArgs: ['-c', FIXTURE] });
  t.teardown(() => h.stop());
  await h.rpc('framework_wait_init');

  const bdevs = (await h.rpc('bdev_get_bdevs')) as Obj[];
  t.match(bdevs, [
    { name: 'Malloc0', num_blocks: 131072, block_size: 512, uuid: 'e917a827-ec09-4a8e-a6a4-1e2f55a73262', claimed: true },
    { name: 'Malloc1', num_blocks: 4096, block_size: 4096, uuid: '76c64f4f-01c3-4cb6-bb01-a36f7a69fa57', claimed: true },
    { name: 'Null0', num_blocks: 16384, block_size: 4096, uuid: 'a0bf7467-2a4f-46cf-95c1-d31ce9dcb9ca', claimed: true },
  ]);
  const ctrls = (await h.rpc('vhost_get_controllers')) as Obj[];
  const byName = new Map(ctrls.map((c) => [c.ctrlr as string, c]));
  t.same([...byName.keys()].sort(), ['vhost.0', 'vhost.1', 'vhost.2'], 'the three controllers');
  t.match(byName.get('vhost.0'), { cpumask: '0x1', delay_base_us: 20, iops_threshold: 50000, backend_specific: { block: { readonly: false, bdev: 'Malloc0' } } }, 'cpumask "1" read as hex, coalescing applied');
  t.match(byName.get('vhost.2'), { cpumask: '0x1', backend_specific: { block: { readonly: true, bdev: 'Malloc1' } } }, 'readonly blk');
  t.match(byName.get('vhost.1'), { cpumask: '0x1', backend_specific: { scsi: [{ scsi_dev_num: 0, luns: [{ id: 0, bdev_name: 'Null0' }] }] } }, 'scsi target 0 on Null0');
  t.same(await h.rpc('framework_get_scheduler'), { scheduler_name: 'static', scheduler_period: 1_000_000 });

  const log = h.daemon.log;
  for (const m of ['sock_impl_set_options', 'accel_set_options', 'bdev_set_options', 'bdev_nvme_set_options', 'bdev_nvme_set_hotplug']) {
    const lines = log.split('\n').filter((l) => l.includes(`${m}: accepted, changes nothing here`));
    t.equal(lines.length, 1, `${m}: logged once (${lines[0] ?? 'no line'})`);
  }
  t.notMatch(log, /config call failed|initialization failed/, 'no call failed');

  // At run time through RPC, as SPDK: STARTUP-only options are refused (-1), the others accepted and not logged again.
  await t.rejects(h.rpc('bdev_set_options', { bdev_io_pool_size: 1024 }), { code: -1 });
  t.equal(await h.rpc('bdev_nvme_set_options', { timeout_us: 1000, some_future_option: 1 }), true, "a newer SPDK's option is accepted too");
  t.equal(await h.rpc('bdev_wait_for_examine'), true);
  await new Promise((r) => setTimeout(r, 200));
  t.equal(h.daemon.log.split('\n').filter((l) => l.includes('bdev_nvme_set_options: accepted')).length, 1, 'still one line');
  await t.rejects(h.rpc('bdev_nvme_set_options', { timeout_us: 'soon' }), { code: -32602 });
});

t.test('the same config with what other SPDK builds and settings add (iobuf_set_options, bdev_iscsi_set_options)', async (t) => {
  // A v23.05 built with libiscsi writes bdev_iscsi_set_options after bdev_set_options; iobuf_set_options
  // appears once the iobuf options were set. Their params as v23.05's write_config_json functions emit them.
  const cfg = JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as { subsystems: { subsystem: string; config: Obj[] | null }[] };
  const sub = (name: string): { config: Obj[] | null } => cfg.subsystems.find((x) => x.subsystem === name)!;
  sub('iobuf').config = [{ method: 'iobuf_set_options', params: { small_pool_count: 8192, large_pool_count: 1024, small_bufsize: 8192, large_bufsize: 135168 } }];
  sub('bdev').config!.splice(1, 0, { method: 'bdev_iscsi_set_options', params: { timeout_sec: 30 } });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-spdkcfg-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, JSON.stringify(cfg));
  const h = await startVhostd({ cpumask: '0x1', extraArgs: ['-c', file] });
  t.teardown(() => h.stop());
  await h.rpc('framework_wait_init');
  for (const m of ['iobuf_set_options', 'bdev_iscsi_set_options']) {
    t.equal(h.daemon.log.split('\n').filter((l) => l.includes(`${m}: accepted, changes nothing here`)).length, 1, `${m}: logged once`);
  }
  t.equal(((await h.rpc('vhost_get_controllers')) as Obj[]).length, 3, 'and the controllers are there');
});

t.test('--wait-for-rpc: the options before framework_start_init, then the config', async (t) => {
  const h = await startVhostd({ cpumask: '0x1', extraArgs: ['--wait-for-rpc'] });
  t.teardown(() => h.stop());
  t.equal(await h.rpc('iobuf_set_options', { small_pool_count: 4096 }), true);
  t.equal(await h.rpc('bdev_set_options', { bdev_auto_examine: false }), true);
  t.equal(await h.rpc('framework_set_scheduler', { name: 'static', period: 10000 }), true);
  t.equal(await h.rpc('framework_start_init'), true);
  t.same(await h.rpc('framework_get_scheduler'), { scheduler_name: 'static', scheduler_period: 10000 });
  await t.rejects(h.rpc('iobuf_set_options', {}), { code: -1 }, 'STARTUP only, as SPDK');
});

t.test('a physical_block_size other than the block size is refused', async (t) => {
  const h = await startVhostd({ cpumask: '0x1' });
  t.teardown(() => h.stop());
  await t.rejects(h.rpc('bdev_malloc_create', { name: 'M', num_blocks: 64, block_size: 512, physical_block_size: 4096 }), { code: -22 });
  t.equal(await h.rpc('bdev_malloc_create', { name: 'M', num_blocks: 64, block_size: 512, physical_block_size: 512, optimal_io_boundary: 8 }), 'M');
});
