/**
 * The config SPDK's vhost app (v23.05) writes with save_config loads into
 * vhostd unchanged (-c): every subsystem SPDK writes — iobuf, sock, vmd,
 * accel, bdev (with bdev_set_options, bdev_iscsi_set_options,
 * bdev_nvme_set_options, bdev_nvme_set_hotplug, bdev_wait_for_examine),
 * scsi, scheduler, vhost_scsi, vhost_blk, nbd. What has a meaning here is
 * applied (bdevs, controller, coalescing, scheduler); each option method
 * that changes nothing here is logged once, naming it. The fixture
 * (test/fixtures/spdk-v23.05-vhost-save_config.json) is written by hand in
 * v23.05's save_config format (subsystem order, methods and params as its
 * write_config_json functions emit them): SPDK could not be built on this
 * machine in the time given.
 * Thread: test main thread.
 */
import t from 'tap';
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
    { name: 'Malloc0', num_blocks: 131072, block_size: 512, uuid: '0b0e8a2c-5d3e-4f61-9a7b-2c4d6e8f0a1b', claimed: true },
    { name: 'Null0', num_blocks: 16384, block_size: 4096, uuid: '5f4e3d2c-1b0a-4987-8695-a4b3c2d1e0f9' },
  ]);
  t.match(await h.rpc('vhost_get_controllers'), [{ ctrlr: 'vhost.0', cpumask: '0x1', delay_base_us: 0, iops_threshold: 60000, backend_specific: { block: { readonly: false, bdev: 'Malloc0' } } }]);
  t.same(await h.rpc('framework_get_scheduler'), { scheduler_name: 'static', scheduler_period: 1_000_000 });

  const log = h.daemon.log;
  for (const m of ['iobuf_set_options', 'sock_impl_set_options', 'accel_set_options', 'bdev_set_options', 'bdev_iscsi_set_options', 'bdev_nvme_set_options', 'bdev_nvme_set_hotplug']) {
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
