/**
 * SPDK's own, unchanged scripts/rpc.py (the peer at ../shared/peers/spdk-rpc,
 * or $SPDK_RPC_DIR) drives the real vhostd process: every JSON-RPC method
 * vhostd serves, with rpc.py's own syntax, checking rpc.py's exit status, what
 * it prints, and the effect on the target; errors come back as rpc.py prints
 * them, with SPDK's codes. Also rpc.py's client-side save_config/load_config
 * (into a second vhostd started with --wait-for-rpc) and spdk_kill_instance.
 * A missing peer directory fails the test (it is required on every machine).
 * Thread: test main thread.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../lib/repo';
import { runRpcPy, spdkRpcDir, type RpcPyResult } from '../lib/spdk-rpc';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(600_000);

/** What vhostd serves (README.md's JSON-RPC table). */
const METHODS = [
  'spdk_get_version',
  'rpc_get_methods',
  'framework_get_reactors',
  'framework_get_subsystems',
  'framework_get_config',
  'framework_start_init',
  'framework_wait_init',
  'spdk_kill_instance',
  'log_set_flag',
  'log_clear_flag',
  'log_get_flags',
  'log_set_level',
  'log_get_level',
  'log_set_print_level',
  'log_get_print_level',
  'bdev_malloc_create',
  'bdev_malloc_delete',
  'bdev_rbd_register_cluster',
  'bdev_rbd_unregister_cluster',
  'bdev_rbd_get_clusters_info',
  'bdev_rbd_create',
  'bdev_rbd_delete',
  'bdev_rbd_resize',
  'bdev_null_create',
  'bdev_null_delete',
  'bdev_null_resize',
  'bdev_uring_create',
  'bdev_uring_delete',
  'bdev_aio_create',
  'bdev_aio_delete',
  'bdev_get_bdevs',
  'bdev_get_iostat',
  'bdev_set_qos_limit',
  'vhost_create_blk_controller',
  'vhost_create_scsi_controller',
  'vhost_start_scsi_controller',
  'vhost_scsi_controller_add_target',
  'vhost_scsi_controller_remove_target',
  'vhost_get_controllers',
  'vhost_delete_controller',
  'vhost_controller_set_coalescing',
  'thread_get_stats',
  'thread_get_pollers',
  'thread_get_io_channels',
  'framework_get_scheduler',
  'framework_set_scheduler',
  'bdev_reset_iostat',
  'bdev_enable_histogram',
  'bdev_get_histogram',
  'iobuf_set_options',
  'sock_impl_set_options',
  'sock_set_default_impl',
  'accel_set_options',
  'bdev_set_options',
  'bdev_nvme_set_options',
  'bdev_nvme_set_hotplug',
  'bdev_iscsi_set_options',
  'vmd_enable',
  'bdev_wait_for_examine',
  'nvmf_create_transport',
  'nvmf_get_transports',
  'nvmf_create_subsystem',
  'nvmf_delete_subsystem',
  'nvmf_get_subsystems',
  'nvmf_subsystem_add_ns',
  'nvmf_subsystem_remove_ns',
  'nvmf_subsystem_add_listener',
  'nvmf_subsystem_remove_listener',
  'vhost_create_nvme_controller',
  'vhost_nvme_controller_add_ns',
];

/** rpc_get_methods as vhostd answered it (first test). */
let served: string[] = [];
/** rpc.py commands run, by name. */
const called = new Set<string>();

/** A JSON-RPC error as rpc.py prints it on stdout: "request: … Got JSON-RPC error response\nresponse:\n{…}". */
interface PrintedError {
  code: number;
  message: string;
}

class RpcPy {
  constructor(
    readonly t: Test,
    readonly dir: string,
    readonly h: VhostdHandle,
  ) {}

  run(...args: string[]): Promise<RpcPyResult> {
    called.add(args[0]);
    return runRpcPy(this.dir, ['-s', this.h.rpcSocket, ...args]);
  }

  /** Runs a command that must succeed; returns its stdout. */
  async ok(...args: string[]): Promise<string> {
    const r = await this.run(...args);
    this.t.same({ code: r.code, stderr: r.stderr }, { code: 0, stderr: '' }, `rpc.py ${args.join(' ')}: exit 0${r.code === 0 ? '' : `\n${r.stdout}${r.stderr}`}`);
    return r.stdout;
  }

  /** Runs a command that must succeed and print nothing. */
  async quiet(...args: string[]): Promise<void> {
    this.t.equal(await this.ok(...args), '', `rpc.py ${args[0]} prints nothing`);
  }

  /** Runs a command that must succeed and print JSON; returns it parsed. */
  async json<T = unknown>(...args: string[]): Promise<T> {
    const out = await this.ok(...args);
    try {
      return JSON.parse(out) as T;
    } catch {
      this.t.fail(`rpc.py ${args.join(' ')}: stdout is not JSON: ${JSON.stringify(out)}`);
      return undefined as T;
    }
  }

  /** Runs a command that must fail with the JSON-RPC error `code`; returns the printed error. */
  async fails(code: number, ...args: string[]): Promise<PrintedError> {
    const r = await this.run(...args);
    const what = `rpc.py ${args.join(' ')}`;
    this.t.equal(r.code, 1, `${what}: exit 1`);
    const m = /Got JSON-RPC error response\nresponse:\n(\{[\s\S]*\})\s*$/.exec(r.stdout);
    if (!m) {
      this.t.fail(`${what}: no JSON-RPC error printed: ${JSON.stringify(r.stdout)} ${JSON.stringify(r.stderr)}`);
      return { code: NaN, message: '' };
    }
    const err = JSON.parse(m[1]) as PrintedError;
    this.t.equal(err.code, code, `${what}: error ${code} (${err.message})`);
    this.t.match(r.stdout, new RegExp(`^request:\\n[\\s\\S]*"method": "${args[0]}"`), `${what}: the request is printed`);
    return err;
  }
}

interface Bdev {
  name: string;
  product_name: string;
  block_size: number;
  num_blocks: number;
  uuid: string;
  claimed: boolean;
  assigned_rate_limits: Record<string, number>;
  supported_io_types: Record<string, boolean>;
}

interface Controller {
  ctrlr: string;
  cpumask: string;
  socket: string;
  delay_base_us: number;
  iops_threshold: number;
  backend_specific: { block: { readonly: boolean; bdev: string } };
}

const UUID = '6f2a0ae2-3c1b-4b5e-9d1e-0123456789ab';

t.test("every JSON-RPC method through SPDK's unchanged rpc.py", async (t) => {
  const dir = spdkRpcDir(); // missing: throws, and the test fails with the reason
  const h = await startVhostd({ cpumask: '0x3' });
  t.teardown(() => h.stop());
  const img = path.join('/var/tmp', `vhostd-spdk-rpc-${process.pid}.img`);
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 8 << 20);
  t.teardown(() => fs.rmSync(img, { force: true }));
  const py = new RpcPy(t, dir, h);

  // --- app and framework state
  const version = JSON.parse(fs.readFileSync(path.join(repoRoot(), 'package.json'), 'utf8')) as { version: string };
  const [major, minor, patch] = version.version.split('.').map(Number);
  t.same(await py.json('spdk_get_version'), { version: `vhostd v${version.version}`, fields: { major, minor, patch, suffix: '' } });

  served = await py.json<string[]>('rpc_get_methods');
  t.same([...served].sort(), [...METHODS].sort(), 'rpc_get_methods: the methods README.md lists');
  const startupOnly = ['framework_start_init', 'iobuf_set_options', 'sock_impl_set_options', 'sock_set_default_impl', 'accel_set_options', 'bdev_set_options', 'bdev_iscsi_set_options'];
  t.same(await py.json('rpc_get_methods', '--current'), served.filter((m) => !startupOnly.includes(m)), 'rpc_get_methods -c: all but the STARTUP-only methods');

  await py.quiet('framework_wait_init');
  t.match(await py.fails(-1, 'framework_start_init'), { message: /may only be called before framework is initialized/ });

  // --- bdevs
  t.equal(await py.ok('bdev_malloc_create', '-b', 'M0', '-u', UUID, '8', '512'), 'M0\n', 'bdev_malloc_create prints the name');
  t.match(await py.json('bdev_get_bdevs', '-b', 'M0'), [{ name: 'M0', product_name: 'Malloc disk', block_size: 512, num_blocks: 16384, uuid: UUID, claimed: false }]);
  t.match(await py.fails(-17, 'bdev_malloc_create', '-b', 'M0', '8', '512'), { message: /M0/ });
  t.equal(await py.ok('bdev_malloc_create', '-b', 'M1', '1.5', '4096'), 'M1\n', 'fractional MB (rpc.py: float)');
  t.match(await py.json('bdev_get_bdevs', '-b', 'M1', '-t', '100'), [{ name: 'M1', block_size: 4096, num_blocks: 384 }], 'bdev_get_bdevs -t');
  const unnamed = (await py.ok('bdev_malloc_create', '1', '512')).trim();
  t.ok(unnamed.length > 0, `bdev_malloc_create without -b prints the name it chose (${unnamed})`);
  await py.quiet('bdev_malloc_delete', unnamed);

  t.equal(await py.ok('bdev_null_create', 'N0', '16', '4096'), 'N0\n');
  t.match(await py.json('bdev_get_bdevs', '-b', 'N0'), [{ name: 'N0', block_size: 4096, num_blocks: 4096 }]);
  await py.fails(-17, 'bdev_null_create', 'N0', '16', '4096');
  t.equal(await py.ok('bdev_null_resize', 'N0', '32'), 'true\n', 'bdev_null_resize prints true (as SPDK)');
  t.match(await py.json('bdev_get_bdevs', '-b', 'N0'), [{ num_blocks: 8192 }], 'resized');
  await py.fails(-22, 'bdev_null_resize', 'N0', '16');
  await py.fails(-19, 'bdev_null_resize', 'NOPE', '64');

  t.equal(await py.ok('bdev_uring_create', img, 'U0', '512'), 'U0\n');
  t.match(await py.json('bdev_get_bdevs', '-b', 'U0'), [{ name: 'U0', block_size: 512, num_blocks: 16384 }]);
  await py.fails(-17, 'bdev_uring_create', img, 'U0', '512');
  t.equal(await py.ok('bdev_aio_create', '-r', img, 'A0', '4096'), 'A0\n');
  t.match(await py.json('bdev_get_bdevs', '-b', 'A0'), [{ name: 'A0', block_size: 4096, num_blocks: 2048 }]);
  await py.fails(-17, 'bdev_aio_create', img, 'A0');
  await py.fails(-22, 'bdev_aio_create', '--no-wait', img, 'A8'); // RWF_NOWAIT: not supported
  const missing = await py.run('bdev_aio_create', path.join('/var/tmp', `vhostd-spdk-rpc-absent-${process.pid}`), 'A9');
  t.equal(missing.code, 1, 'bdev_aio_create on a missing file fails');
  t.match(missing.stdout, /Got JSON-RPC error response\nresponse:\n\{\n {2}"code": -\d+/, 'with a JSON-RPC error');

  t.same((await py.json<Bdev[]>('bdev_get_bdevs')).map((b) => b.name).sort(), ['A0', 'M0', 'M1', 'N0', 'U0'], 'bdev_get_bdevs: all');
  await py.fails(-19, 'bdev_get_bdevs', '-b', 'NOPE');

  // --- statistics and QoS
  const iostat = await py.json<{ tick_rate: number; bdevs: { name: string }[] }>('bdev_get_iostat');
  t.same(iostat.bdevs.map((b) => b.name).sort(), ['A0', 'M0', 'M1', 'N0', 'U0'], 'bdev_get_iostat: all');
  t.match(await py.json('bdev_get_iostat', '--names', 'M0,N0'), { tick_rate: Number, bdevs: [{ name: 'M0', num_read_ops: 0 }, { name: 'N0' }] });
  t.match(await py.json('bdev_get_iostat', '-c', '--names', 'M0'), { name: 'M0', channels: Array });
  await py.fails(-19, 'bdev_get_iostat', '--names', 'NOPE');
  // (with I/O: test/integration/spdk-tools.test.ts)
  await py.quiet('bdev_reset_iostat', '-b', 'M0', '-m', 'maxmin');
  await py.quiet('bdev_enable_histogram', '--histogram', 'M0');
  t.match(await py.json('bdev_get_histogram', 'M0'), { histogram: String, granularity: 7, min_range: 0, max_range: 57, tsc_rate: 1e9 });
  await py.quiet('bdev_enable_histogram', '--no-histogram', 'M0');

  await py.quiet('bdev_set_qos_limit', '--rw-ios-per-sec', '2000', '--rw-mbytes-per-sec', '100', 'M0');
  t.match(await py.json('bdev_get_bdevs', '-b', 'M0'), [
    { assigned_rate_limits: { rw_ios_per_sec: 2000, rw_mbytes_per_sec: 100, r_mbytes_per_sec: 0, w_mbytes_per_sec: 0 } },
  ]);
  await py.fails(-22, 'bdev_set_qos_limit', 'M0');
  await py.fails(-19, 'bdev_set_qos_limit', '--w-mbytes-per-sec', '1', 'NOPE');

  // --- vhost controllers
  await py.quiet('vhost_create_blk_controller', '--cpumask', '0x2', '-r', 'vc0', 'M0');
  t.ok(fs.existsSync(h.socketOf('vc0')), 'vc0: socket created');
  t.match(await py.json('vhost_get_controllers', '-n', 'vc0'), [
    { ctrlr: 'vc0', cpumask: '0x2', socket: h.socketOf('vc0'), backend_specific: { block: { readonly: true, bdev: 'M0' } } },
  ]);
  await py.quiet('vhost_create_blk_controller', 'vc1', 'N0');
  t.same((await py.json<Controller[]>('vhost_get_controllers')).map((c) => [c.ctrlr, c.cpumask, c.backend_specific.block.readonly]), [
    ['vc0', '0x2', true],
    ['vc1', '0x3', false],
  ]);
  t.match(await py.json('bdev_get_bdevs', '-b', 'M0'), [{ claimed: true }], 'M0 claimed by vc0');
  await py.fails(-17, 'vhost_create_blk_controller', 'vc0', 'M1');
  await py.fails(-19, 'vhost_create_blk_controller', 'vc2', 'NOPE');
  await py.fails(-16, 'bdev_malloc_delete', 'M0');
  await py.fails(-19, 'vhost_get_controllers', '-n', 'NOPE');

  await py.quiet('vhost_controller_set_coalescing', 'vc0', '50', '60000');
  t.match(await py.json('vhost_get_controllers', '-n', 'vc0'), [{ delay_base_us: 50, iops_threshold: 60000 }]);
  await py.fails(-19, 'vhost_controller_set_coalescing', 'NOPE', '50', '60000');

  // --- threads, reactors, subsystems, config
  const threads = await py.json<{ tick_rate: number; threads: { name: string; busy: number; idle: number }[] }>('thread_get_stats');
  t.same(threads.threads.map((x) => x.name), ['app_thread', 'engine_0', 'engine_1'], 'thread_get_stats: app thread and one engine thread per core');
  t.same((await py.json<{ threads: { name: string }[] }>('thread_get_pollers')).threads.map((x) => x.name), ['app_thread', 'engine_0', 'engine_1']);
  t.same((await py.json<{ threads: { name: string }[] }>('thread_get_io_channels')).threads.map((x) => x.name), ['app_thread', 'engine_0', 'engine_1']);
  t.same(await py.json('framework_get_scheduler'), { scheduler_name: 'static', scheduler_period: 1_000_000 });
  await py.quiet('framework_set_scheduler', 'static');
  // SPDK's option methods (save_config writes them): accepted, changing nothing; STARTUP-only ones refused now, as SPDK.
  for (const args of [['iobuf_set_options', '--small-pool-count', '4096'], ['sock_impl_set_options', '-i', 'posix', '-r', '4096'], ['sock_set_default_impl', '-i', 'posix'], ['accel_set_options', '--task-count', '1024'], ['bdev_set_options', '-p', '1024'], ['bdev_iscsi_set_options', '-t', '30']]) {
    await py.fails(-1, ...args);
  }
  await py.quiet('bdev_nvme_set_options', '-t', '0', '-k', '10000');
  await py.quiet('bdev_nvme_set_hotplug', '--no-hotplug', '-r', '100000');
  t.equal(await py.ok('vmd_enable'), 'true\n', 'vmd_enable prints true (rpc.py print_dict)');
  await py.quiet('bdev_wait_for_examine');
  const reactors = await py.json<{ pid: number; reactors: { lcore: number }[] }>('framework_get_reactors');
  t.equal(reactors.pid, h.daemon.child.pid, 'framework_get_reactors: our vhostd');
  t.same(reactors.reactors.map((x) => x.lcore), [0, 1]);
  t.same(await py.json('framework_get_subsystems'), [
    { subsystem: 'bdev', depends_on: [] },
    { subsystem: 'vhost_blk', depends_on: ['bdev'] },
    { subsystem: 'scsi', depends_on: ['bdev'] },
    { subsystem: 'vhost_scsi', depends_on: ['scsi'] },
    { subsystem: 'nvmf', depends_on: ['bdev'] },
  ]);
  const bdevCfg = await py.json<{ method: string; params: Record<string, unknown> }[]>('framework_get_config', 'bdev');
  t.match(bdevCfg.find((c) => c.params.name === 'M0' && c.method === 'bdev_malloc_create'), { params: { num_blocks: 16384, block_size: 512, uuid: UUID } });
  t.match(bdevCfg.find((c) => c.method === 'bdev_set_qos_limit'), { params: { name: 'M0', rw_ios_per_sec: 2000, rw_mbytes_per_sec: 100 } });
  t.match(bdevCfg.find((c) => c.method === 'bdev_aio_create'), { params: { name: 'A0', filename: img, block_size: 4096, readonly: true } });
  t.match(bdevCfg.find((c) => c.method === 'bdev_uring_create'), { params: { name: 'U0', filename: img, block_size: 512 } });
  const vhostCfg = await py.json<{ method: string; params: Record<string, unknown> }[]>('framework_get_config', 'vhost_blk');
  t.match(vhostCfg.filter((c) => c.method === 'vhost_create_blk_controller'), [
    { params: { ctrlr: 'vc0', dev_name: 'M0', cpumask: '0x2', readonly: true } },
    { params: { ctrlr: 'vc1', dev_name: 'N0', cpumask: '0x3', readonly: false } },
  ]);
  t.match(vhostCfg.filter((c) => c.method === 'vhost_controller_set_coalescing'), [{ params: { ctrlr: 'vc0', delay_base_us: 50, iops_threshold: 60000 } }]);
  await py.fails(-32602, 'framework_get_config', 'iscsi');

  // --- save_config (client side) → load_config into a second vhostd → the same save_config
  const saved = await py.ok('save_config');
  const savedCfg = JSON.parse(saved) as { subsystems: { subsystem: string; config: unknown[] }[] };
  t.same(
    savedCfg,
    {
      subsystems: [
        { subsystem: 'bdev', config: bdevCfg },
        { subsystem: 'vhost_blk', config: vhostCfg },
        { subsystem: 'scsi', config: [] },
        { subsystem: 'vhost_scsi', config: [] },
        { subsystem: 'nvmf', config: [] },
      ],
    },
    'save_config: framework_get_config of each subsystem',
  );
  t.same(JSON.parse(await py.ok('save_config', '-s', 'bdev', '-i', '-1')), { subsystems: [savedCfg.subsystems[0]] }, 'save_config -s bdev -i -1');
  await checkLoadConfig(t, dir, saved);

  // --- log methods
  const flags = await py.json<Record<string, boolean>>('log_get_flags');
  t.same(Object.keys(flags).sort(), ['app', 'bdev', 'engine', 'nvmf', 'rpc', 'vhost', 'vhost_blk', 'vhost_scsi']);
  await py.quiet('log_set_flag', 'bdev');
  t.match(await py.json('log_get_flags'), { bdev: true, vhost: false });
  await py.quiet('log_clear_flag', 'bdev');
  t.match(await py.json('log_get_flags'), { bdev: false });
  await py.quiet('log_set_flag', 'all');
  t.ok(Object.values(await py.json<Record<string, boolean>>('log_get_flags')).every((v) => v), 'log_set_flag all');
  await py.quiet('log_clear_flag', 'all');
  t.ok(Object.values(await py.json<Record<string, boolean>>('log_get_flags')).every((v) => !v), 'log_clear_flag all');
  await py.fails(-32602, 'log_set_flag', 'nvme');
  t.equal(await py.ok('log_get_level'), '"NOTICE"\n');
  await py.quiet('log_set_level', 'ERROR');
  t.equal(await py.ok('log_get_level'), '"ERROR"\n');
  t.equal(await py.ok('log_get_print_level'), '"INFO"\n');
  await py.quiet('log_set_print_level', 'WARNING');
  t.equal(await py.ok('log_get_print_level'), '"WARNING"\n');
  await py.quiet('log_set_print_level', 'INFO');

  // --- deletion
  await py.quiet('vhost_delete_controller', 'vc0');
  t.notOk(fs.existsSync(h.socketOf('vc0')), 'vc0: socket removed');
  await py.fails(-19, 'vhost_get_controllers', '-n', 'vc0');
  await py.fails(-19, 'vhost_delete_controller', 'vc0');
  await py.quiet('vhost_delete_controller', 'vc1');
  t.same(await py.json('vhost_get_controllers'), []);
  for (const [cmd, name] of [
    ['bdev_malloc_delete', 'M0'],
    ['bdev_malloc_delete', 'M1'],
    ['bdev_null_delete', 'N0'],
    ['bdev_uring_delete', 'U0'],
    ['bdev_aio_delete', 'A0'],
  ]) {
    await py.quiet(cmd, name);
    await py.fails(-19, cmd, name);
  }
  t.same(await py.json('bdev_get_bdevs'), [], 'no bdevs left');

  // --- spdk_kill_instance
  await py.fails(-32602, 'spdk_kill_instance', 'SIGUSR1'); // rpc.py offers it; vhostd refuses (Node.js's inspector signal)
  t.ok(h.daemon.running, 'still running');
  await py.quiet('spdk_kill_instance', 'SIGTERM');
  t.same(await h.daemon.wait(), { code: 0, signal: null }, 'spdk_kill_instance SIGTERM: vhostd exits 0');
  t.notOk(fs.existsSync(h.rpcSocket), 'RPC socket removed');
});

/**
 * rpc.py load_config of `saved` into a second vhostd started with
 * --wait-for-rpc (rpc.py calls framework_start_init itself, as for SPDK),
 * then its save_config must print the same configuration.
 */
async function checkLoadConfig(t: Test, dir: string, saved: string): Promise<void> {
  const h2 = await startVhostd({ cpumask: '0x3', extraArgs: ['--wait-for-rpc'] });
  try {
    const py2 = new RpcPy(t, dir, h2);
    const startup = await py2.json<string[]>('rpc_get_methods', '-c');
    t.ok(startup.includes('framework_start_init') && !startup.includes('bdev_malloc_create'), '--wait-for-rpc: STARTUP methods only');
    await py2.fails(-1, 'bdev_get_bdevs');
    await py2.quiet('iobuf_set_options', '--small-pool-count', '4096', '--large-pool-count', '512');
    await py2.quiet('sock_impl_set_options', '-i', 'posix', '-r', '4096', '--no-zerocopy-send-server');
    t.equal(await py2.ok('sock_set_default_impl', '-i', 'posix'), 'true\n');
    await py2.quiet('accel_set_options', '--task-count', '1024');
    await py2.quiet('bdev_set_options', '-p', '1024', '--no-auto-examine');
    await py2.quiet('bdev_iscsi_set_options', '-t', '30');
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-spdk-rpc-')), 'config.json');
    fs.writeFileSync(file, saved);
    t.teardown(() => fs.rmSync(path.dirname(file), { recursive: true, force: true }));
    t.equal(await py2.ok('load_config', '-j', file), '', 'load_config -j FILE');
    await py2.quiet('framework_wait_init');
    t.ok(fs.existsSync(h2.socketOf('vc0')) && fs.existsSync(h2.socketOf('vc1')), 'controllers created by load_config');
    t.equal(await py2.ok('save_config'), saved, 'save_config of the loaded target: the same');
    // And from stdin, into a third state: the same target again fails on the first existing bdev.
    const again = await runRpcPy(dir, ['-s', h2.rpcSocket, 'load_config'], saved);
    t.equal(again.code, 1, 'load_config again (stdin): fails');
    t.match(again.stdout, /"code": -17/, 'with -17 (exists)');
  } finally {
    const exit = await h2.stop();
    t.same({ code: exit.code, killed: exit.killed }, { code: 0, killed: false }, 'second vhostd stops gracefully');
  }
}

t.test("virtio-scsi methods through rpc.py, and a save_config → -c round trip", async (t) => {
  const dir = spdkRpcDir();
  const h = await startVhostd({ cpumask: '0x3' });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-scsi-cfg-'));
  t.teardown(async () => {
    await h.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  const py = new RpcPy(t, dir, h);
  await py.ok('bdev_malloc_create', '-b', 'SM0', '-u', '5ca1ab1e-0000-4000-8000-000000000001', '8', '512');
  await py.ok('bdev_null_create', 'SN0', '16', '4096');
  await py.ok('bdev_null_create', 'SN1', '16', '512');
  await py.quiet('vhost_create_scsi_controller', '--cpumask', '0x2', '--delay', 'sc0');
  t.notOk(fs.existsSync(h.socketOf('sc0')), '--delay: no socket yet');
  t.equal((await py.ok('vhost_scsi_controller_add_target', 'sc0', '2', 'SM0')).trim(), '2', 'add_target prints the target number');
  t.equal((await py.ok('vhost_scsi_controller_add_target', 'sc0', '-1', 'SN0')).trim(), '0', '-1: the first free slot');
  t.equal((await py.ok('vhost_scsi_controller_add_target', 'sc0', '-1', 'SN1')).trim(), '1');
  await py.quiet('vhost_start_scsi_controller', 'sc0');
  t.ok(fs.existsSync(h.socketOf('sc0')), 'listening after vhost_start_scsi_controller');
  await py.quiet('vhost_scsi_controller_remove_target', 'sc0', '1');
  const ctrls = await py.json<{ ctrlr: string; backend_specific: unknown }[]>('vhost_get_controllers', '-n', 'sc0');
  t.same(ctrls[0].backend_specific, {
    scsi: [
      { scsi_dev_num: 0, id: 1, target_name: 'Target 0', luns: [{ id: 0, bdev_name: 'SN0' }] },
      { scsi_dev_num: 2, id: 0, target_name: 'Target 2', luns: [{ id: 0, bdev_name: 'SM0' }] },
    ],
  }, 'backend_specific.scsi in SPDK\'s shape');
  await py.fails(-32602, 'vhost_scsi_controller_add_target', 'sc0', '2', 'SN1');
  await py.fails(-32602, 'vhost_scsi_controller_add_target', 'sc0', '8', 'SN1');
  await py.fails(-32602, 'vhost_scsi_controller_remove_target', 'sc0', '5');
  await py.fails(-19, 'vhost_start_scsi_controller', 'nope');
  await py.quiet('vhost_controller_set_coalescing', 'sc0', '40', '70000');
  const cfg = await py.json<unknown[]>('framework_get_config', 'vhost_scsi');
  t.same(cfg, [
    { method: 'vhost_create_scsi_controller', params: { ctrlr: 'sc0', cpumask: '0x2', delay: true } },
    { method: 'vhost_scsi_controller_add_target', params: { ctrlr: 'sc0', scsi_target_num: 0, bdev_name: 'SN0' } },
    { method: 'vhost_scsi_controller_add_target', params: { ctrlr: 'sc0', scsi_target_num: 2, bdev_name: 'SM0' } },
    { method: 'vhost_start_scsi_controller', params: { ctrlr: 'sc0' } },
    { method: 'vhost_controller_set_coalescing', params: { ctrlr: 'sc0', delay_base_us: 40, iops_threshold: 70000 } },
  ], 'framework_get_config vhost_scsi: SPDK\'s calls');
  const saved = await py.ok('save_config');
  const file = path.join(tmp, 'config.json');
  fs.writeFileSync(file, saved);
  const h2 = await startVhostd({ cpumask: '0x3', extraArgs: ['-c', file] });
  try {
    const py2 = new RpcPy(t, dir, h2);
    t.ok(fs.existsSync(h2.socketOf('sc0')), '-c: the controller listens');
    t.same(await py2.json('framework_get_config', 'vhost_scsi'), cfg, '-c: the same vhost_scsi config');
    t.equal(await py2.ok('save_config'), saved, '-c: the same save_config');
    await py2.quiet('vhost_delete_controller', 'sc0');
  } finally {
    await h2.stop();
  }
  // Deleting a bdev a target uses removes the target.
  await py.ok('bdev_null_delete', 'SN0');
  t.same((await py.json<{ backend_specific: { scsi: { scsi_dev_num: number }[] } }[]>('vhost_get_controllers'))[0].backend_specific.scsi.map((x) => x.scsi_dev_num), [2]);
  await py.quiet('vhost_delete_controller', 'sc0');
});

t.test("nvmf (VFIOUSER) through SPDK's rpc.py; the seed-era vhost-nvme commands through an rpc.py plugin", async (t) => {
  const dir = spdkRpcDir();
  const h = await startVhostd({ cpumask: '0x3' });
  t.teardown(() => h.stop());
  const py = new RpcPy(t, dir, h);
  const nqn = 'nqn.2026-11.io.vhostd:py0';
  const traddr = path.join(h.dir, 'py0');
  await py.ok('bdev_malloc_create', '-b', 'M0', '8', '512');
  await py.ok('bdev_null_create', 'N0', '8', '4096');
  await py.ok('bdev_malloc_create', '-b', 'M1', '8', '512');
  await py.quiet('nvmf_create_transport', '-t', 'VFIOUSER');
  t.match(await py.json('nvmf_get_transports'), [{ trtype: 'VFIOUSER', max_io_qpairs_per_ctrlr: 128 }]);
  await py.fails(-22, 'nvmf_create_transport', '-t', 'TCP');
  await py.quiet('nvmf_create_subsystem', nqn, '-a', '-s', 'PY0001', '-d', 'rpc.py model', '-m', '4');
  await py.fails(-22, 'nvmf_create_subsystem', 'not-an-nqn');
  await py.quiet('nvmf_subsystem_add_ns', nqn, 'M0');
  await py.quiet('nvmf_subsystem_add_ns', nqn, '-n', '3', '-u', UUID, 'N0');
  await py.fails(-16, 'nvmf_subsystem_add_ns', nqn, 'M0');
  await py.quiet('nvmf_subsystem_add_listener', nqn, '-t', 'VFIOUSER', '-a', traddr, '-s', '0');
  t.ok(fs.existsSync(path.join(traddr, 'cntrl')), 'socket at traddr/cntrl');
  const subs = await py.json<{ nqn: string; serial_number: string; model_number: string; max_namespaces: number; namespaces: { nsid: number; bdev_name: string; uuid: string }[]; listen_addresses: { traddr: string }[] }[]>('nvmf_get_subsystems', nqn);
  t.match(subs, [
    {
      nqn,
      serial_number: 'PY0001',
      model_number: 'rpc.py model',
      max_namespaces: 4,
      namespaces: [{ nsid: 1, bdev_name: 'M0' }, { nsid: 3, bdev_name: 'N0', uuid: UUID }],
      listen_addresses: [{ trtype: 'VFIOUSER', traddr, trsvcid: '0' }],
    },
  ]);
  t.match(await py.json('nvmf_get_subsystems'), [{ nqn: 'nqn.2014-08.org.nvmexpress.discovery', subtype: 'Discovery' }, { nqn }], 'the discovery subsystem first, as SPDK');
  await py.quiet('nvmf_subsystem_remove_ns', nqn, '3');
  await py.quiet('nvmf_subsystem_remove_listener', nqn, '-t', 'VFIOUSER', '-a', traddr, '-s', '0');
  t.notOk(fs.existsSync(path.join(traddr, 'cntrl')), 'socket removed with the listener');
  const cfg = await py.json<{ method: string }[]>('framework_get_config', 'nvmf');
  t.same(cfg.map((c) => c.method), ['nvmf_create_transport', 'nvmf_create_subsystem', 'nvmf_subsystem_add_ns']);
  await py.quiet('nvmf_delete_subsystem', nqn);
  await py.fails(-19, 'nvmf_delete_subsystem', nqn);
  // Seed-era commands: rpc.py no longer has them; its plugin mechanism loads them (test/fixtures).
  const fixtures = path.join(repoRoot(), 'test', 'fixtures');
  const saved = process.env.PYTHONPATH;
  process.env.PYTHONPATH = saved ? `${fixtures}:${saved}` : fixtures;
  try {
    called.add('vhost_create_nvme_controller');
    called.add('vhost_nvme_controller_add_ns');
    await py.quiet('--plugin', 'vhost_nvme_rpc_plugin', 'vhost_create_nvme_controller', 'vn0', '2', '--cpumask', '0x2');
    await py.quiet('--plugin', 'vhost_nvme_rpc_plugin', 'vhost_nvme_controller_add_ns', 'vn0', 'M1');
  } finally {
    if (saved === undefined) delete process.env.PYTHONPATH;
    else process.env.PYTHONPATH = saved;
  }
  t.ok(fs.existsSync(path.join(h.socketOf('vn0'), 'cntrl')), 'the seed-era controller listens at <-S>/vn0/cntrl');
  t.match(await py.json('framework_get_config', 'nvmf'), [
    { method: 'nvmf_create_transport' },
    { method: 'vhost_create_nvme_controller', params: { ctrlr: 'vn0', io_queues: 2, cpumask: '0x2' } },
    { method: 'vhost_nvme_controller_add_ns', params: { ctrlr: 'vn0', bdev_name: 'M1' } },
  ]);
});

t.test('every method vhostd serves was driven through rpc.py', async (t) => {
  t.ok(served.length > 0, 'rpc_get_methods was answered');
  // The RBD methods need a Ceph cluster: test/integration/rbd.test.ts drives them through this same rpc.py against the one it starts.
  t.same(served.filter((m) => !called.has(m) && !m.startsWith('bdev_rbd_')), [], 'methods not driven');
});
