/**
 * The framework and log JSON-RPC methods against the real vhostd process over
 * its socket: each method's success and failure, RPC states with
 * --wait-for-rpc (STARTUP until framework_start_init, as SPDK), the -c
 * config replayed at framework_start_init, log levels and flags reaching the
 * reactor's and the engine workers' stderr lines, spdk_kill_instance, and
 * vhostd-rpc's syntax for them (client-side save_config/load_config included);
 * the bdev modules' block size check and I/O types through the real process.
 * Thread: test main thread.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VhostUserFrontend } from '../lib/frontend';
import { repoRoot } from '../lib/repo';
import { RpcError, rpcCall } from '../lib/rpc';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(180_000);

/** The error a call fails with, as {code, message}; fails the test if the call succeeds. */
async function rpcError(h: VhostdHandle, method: string, params?: unknown): Promise<{ code: number; message: string }> {
  try {
    const r = await h.rpc(method, params);
    throw new Error(`${method} succeeded (${JSON.stringify(r)}) where an error was expected`);
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    return { code: err.code, message: err.message.replace(/^\S+: /, '').replace(/ \(code -?\d+\)$/, '') };
  }
}

/** Run vhostd-rpc; resolves with exit code and output. */
function cli(args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [path.join(repoRoot(), 'bin', 'vhostd-rpc.js'), ...args], (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.end(stdin ?? '');
  });
}

const STARTUP_METHODS = [
  'spdk_get_version',
  'rpc_get_methods',
  'framework_start_init',
  'framework_wait_init',
  'log_set_flag',
  'log_clear_flag',
  'log_get_flags',
  'log_set_level',
  'log_get_level',
  'log_set_print_level',
  'log_get_print_level',
  // SPDK_RPC_STARTUP | SPDK_RPC_RUNTIME in SPDK too.
  'framework_set_scheduler',
  'framework_get_scheduler',
  // The option methods a saved SPDK config sets before init (SPDK_RPC_STARTUP; bdev_nvme_set_options also at runtime).
  'iobuf_set_options',
  'sock_impl_set_options',
  'sock_set_default_impl',
  'accel_set_options',
  'bdev_set_options',
  'bdev_nvme_set_options',
  'bdev_iscsi_set_options',
];

t.test('framework methods on a running target', async (t) => {
  const h = await startVhostd({ cpumask: '0x3' });
  t.teardown(() => h.stop());

  const all = (await h.rpc('rpc_get_methods')) as string[];
  for (const m of [
    'framework_get_subsystems',
    'framework_get_config',
    'framework_start_init',
    'framework_wait_init',
    'spdk_kill_instance',
    'log_set_flag',
    'log_get_print_level',
  ]) {
    t.ok(all.includes(m), `rpc_get_methods lists ${m}`);
  }
  const current = (await h.rpc('rpc_get_methods', { current: true })) as string[];
  // As SPDK: framework_start_init and the option methods that only a starting target takes (SPDK_RPC_STARTUP).
  const startupOnly = ['framework_start_init', 'iobuf_set_options', 'sock_impl_set_options', 'sock_set_default_impl', 'accel_set_options', 'bdev_set_options', 'bdev_iscsi_set_options'];
  t.same(current, all.filter((m) => !startupOnly.includes(m)), 'current (RUNTIME): everything but the STARTUP-only methods');
  t.equal((await rpcError(h, 'rpc_get_methods', { current: 1 })).code, -32602);

  t.match(await h.rpc('spdk_get_version'), { version: /^vhostd v\d+\.\d+/, fields: { major: Number } });
  t.same(await rpcError(h, 'spdk_get_version', { x: 1 }), { code: -32602, message: 'params.x: unknown parameter' });

  // framework_get_reactors: one entry per core of -m, with what the kernel tells.
  const r = (await h.rpc('framework_get_reactors')) as {
    pid: number;
    reactors: { lcore: number; tid?: number; numa_id?: number; irq?: number; sys?: number; usr?: number; busy: number }[];
  };
  t.equal(r.pid, h.daemon.child.pid);
  t.same(r.reactors.map((x) => x.lcore), [0, 1]);
  for (const x of r.reactors) {
    t.ok(typeof x.tid === 'number' && x.tid > 0 && x.tid !== r.pid, `core ${x.lcore}: tid ${x.tid} is a thread of its own`);
    t.ok(fs.existsSync(`/proc/${r.pid}/task/${x.tid}`), `core ${x.lcore}: tid is a thread of vhostd`);
    for (const k of ['irq', 'sys', 'usr'] as const) t.ok(Number.isSafeInteger(x[k]) && (x[k] as number) >= 0, `core ${x.lcore}: ${k} ticks`);
    if (fs.existsSync(`/sys/devices/system/cpu/cpu${x.lcore}/node0`)) t.equal(x.numa_id, 0, 'numa_id from sysfs');
  }
  t.equal((await rpcError(h, 'framework_get_reactors', { x: 1 })).code, -32602);

  // Subsystems and their config.
  t.same(await h.rpc('framework_get_subsystems'), [
    { subsystem: 'bdev', depends_on: [] },
    { subsystem: 'vhost_blk', depends_on: ['bdev'] },
    { subsystem: 'scsi', depends_on: ['bdev'] },
    { subsystem: 'vhost_scsi', depends_on: ['scsi'] },
    { subsystem: 'nvmf', depends_on: ['bdev'] },
  ]);
  t.equal((await rpcError(h, 'framework_get_subsystems', { name: 'bdev' })).code, -32602);
  t.same(await h.rpc('framework_get_config', { name: 'bdev' }), [], 'empty bdev config');
  await h.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 512, uuid: '6f2a0ae2-3c1b-4b5e-9d1e-0123456789ab' });
  await h.rpc('vhost_create_blk_controller', { ctrlr: 'c0', dev_name: 'M0', cpumask: '0x2', readonly: true });
  const bdevCfg = (await h.rpc('framework_get_config', { name: 'bdev', with_batches: false })) as { method: string; params: Record<string, unknown> }[];
  t.match(bdevCfg[0], {
    method: 'bdev_malloc_create',
    params: { name: 'M0', num_blocks: 2048, block_size: 512, uuid: '6f2a0ae2-3c1b-4b5e-9d1e-0123456789ab' },
  });
  t.match(await h.rpc('framework_get_config', { name: 'vhost_blk' }), [
    { method: 'vhost_create_blk_controller', params: { ctrlr: 'c0', dev_name: 'M0', cpumask: '0x2', readonly: true } },
  ]);
  t.same(await rpcError(h, 'framework_get_config', { name: 'iscsi' }), { code: -32602, message: "Subsystem 'iscsi' not found" });
  t.same(await rpcError(h, 'framework_get_config', {}), { code: -32602, message: 'params.name: is required' });

  // Init state.
  t.equal(await h.rpc('framework_wait_init'), true, 'framework_wait_init: already initialized');
  const again = await rpcError(h, 'framework_start_init');
  t.equal(again.code, -1, 'framework_start_init after init: SPDK_JSONRPC_ERROR_INVALID_STATE');
  t.match(again.message, /may only be called before framework is initialized/);

  // spdk_kill_instance failure paths (the success path is in the next tests).
  t.equal((await rpcError(h, 'spdk_kill_instance', { sig_name: 'SIGFOO' })).code, -32602);
  t.equal((await rpcError(h, 'spdk_kill_instance', { sig_name: 'SIGUSR1' })).code, -32602, 'SIGUSR1 (the Node.js inspector) refused');
  t.equal((await rpcError(h, 'spdk_kill_instance', {})).code, -32602);
  t.ok(h.daemon.running, 'still running');
});

t.test('log methods: levels and flags reach reactor and engine lines', async (t) => {
  const h = await startVhostd({ cpumask: '0x2' });
  t.teardown(() => h.stop());

  t.equal(await h.rpc('log_get_print_level'), 'INFO', 'default print level');
  t.equal(await h.rpc('log_get_level'), 'NOTICE', "SPDK's default log level");
  const flags = (await h.rpc('log_get_flags')) as Record<string, boolean>;
  for (const f of ['app', 'bdev', 'engine', 'rpc', 'vhost', 'vhost_blk', 'vhost_scsi']) t.equal(flags[f], false, `flag ${f} known, off`);

  t.equal(await h.rpc('log_set_level', { level: 'error' }), true, 'level names are case-insensitive');
  t.equal(await h.rpc('log_get_level'), 'ERROR');
  t.same(await rpcError(h, 'log_set_level', { level: 'LOUD' }), {
    code: -32602,
    message: 'params.level: must be one of ERROR, WARNING, NOTICE, INFO, DEBUG',
  });
  t.equal((await rpcError(h, 'log_set_level', {})).code, -32602);
  t.equal((await rpcError(h, 'log_set_print_level', { level: 3 })).code, -32602);
  t.equal((await rpcError(h, 'log_get_level', { level: 'INFO' })).code, -32602);
  t.equal((await rpcError(h, 'log_set_flag', { flag: 'nvme' })).code, -32602, 'unknown flag');
  t.equal((await rpcError(h, 'log_clear_flag', { flag: 'nvme' })).code, -32602, 'unknown flag');
  t.equal((await rpcError(h, 'log_get_flags', { x: 1 })).code, -32602);

  // A debug line needs its flag and print level DEBUG.
  await h.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 512 });
  await h.rpc('vhost_create_blk_controller', { ctrlr: 'c0', dev_name: 'M0' });
  const touch = async (): Promise<void> => {
    const fe = await VhostUserFrontend.connect(h.socketOf('c0'), 5000, { waitAccepted: true });
    await fe.negotiate();
    fe.close();
    await waitFor(async () => ((await h.rpc('vhost_get_controllers', { name: 'c0' })) as { sessions: unknown[] }[])[0].sessions.length === 0, 10_000, 'disconnect');
  };
  const debugLine = /debug \[vhost\] request ctrlr=c0 req=GET_FEATURES/;
  await h.rpc('log_set_flag', { flag: 'vhost' });
  let mark = h.daemon.log.length;
  await touch();
  t.notMatch(h.daemon.log.slice(mark), debugLine, 'flag without print level DEBUG: no debug line');
  t.equal(await h.rpc('log_set_print_level', { level: 'DEBUG' }), true);
  t.equal(await h.rpc('log_get_print_level'), 'DEBUG');
  mark = h.daemon.log.length;
  await touch();
  t.match(h.daemon.log.slice(mark), debugLine, 'flag + DEBUG: the session logs each request');
  t.equal(await h.rpc('log_clear_flag', { flag: 'vhost' }), true);
  t.same(((await h.rpc('log_get_flags')) as Record<string, boolean>).vhost, false);
  mark = h.daemon.log.length;
  await touch();
  t.notMatch(h.daemon.log.slice(mark), debugLine, 'flag cleared: no debug line');
  t.equal(await h.rpc('log_set_flag', { flag: 'all' }), true, '"all"');
  t.ok(Object.values((await h.rpc('log_get_flags')) as Record<string, boolean>).every((v) => v), 'all flags set');
  t.equal(await h.rpc('log_clear_flag', { flag: 'all' }), true);
  t.ok(Object.values((await h.rpc('log_get_flags')) as Record<string, boolean>).every((v) => !v), 'all flags cleared');

  // The engine workers follow the print level: at WARNING their info lines stop.
  t.equal(await h.rpc('log_set_print_level', { level: 'WARNING' }), true);
  mark = h.daemon.log.length;
  await touch();
  await h.stop();
  const tail = h.daemon.log.slice(mark);
  t.notMatch(tail, / info \[/, 'no info line from the reactor at WARNING');
  t.notMatch(tail, / info \[engine:1\]/, 'no info line from the engine worker at WARNING');
  t.notMatch(tail, / notice \[/, 'no notice line at WARNING');
});

t.test('--wait-for-rpc: STARTUP state until framework_start_init, then the -c config', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-wait-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cfg = path.join(dir, 'cfg.json');
  fs.writeFileSync(
    cfg,
    JSON.stringify({
      subsystems: [
        { subsystem: 'vhost_blk', config: [{ method: 'vhost_create_blk_controller', params: { ctrlr: 'w0', dev_name: 'M0' } }] },
        { subsystem: 'bdev', config: [{ method: 'bdev_malloc_create', params: { name: 'M0', num_blocks: 1024, block_size: 512 } }] },
      ],
    }),
  );
  const h = await startVhostd({ extraArgs: ['--wait-for-rpc', '-c', cfg] });
  t.teardown(() => h.stop());

  t.same(((await h.rpc('rpc_get_methods', { current: true })) as string[]).sort(), [...STARTUP_METHODS].sort(), 'STARTUP methods only');
  const refused = await rpcError(h, 'bdev_malloc_create', { name: 'X', num_blocks: 8, block_size: 512 });
  t.same(refused, { code: -1, message: 'Method may only be called after framework is initialized using framework_start_init RPC.' });
  t.equal((await rpcError(h, 'framework_get_reactors')).code, -1);
  t.equal((await rpcError(h, 'spdk_kill_instance', { sig_name: 'SIGTERM' })).code, -1, 'RUNTIME-only, as SPDK');
  t.equal(await h.rpc('log_set_print_level', { level: 'NOTICE' }), true, 'log methods work in STARTUP');
  t.notOk(fs.existsSync(h.socketOf('w0')), 'the config is not loaded yet');

  let waited = false;
  const wait = rpcCall(h.rpcSocket, 'framework_wait_init').then((v) => {
    waited = true;
    return v;
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.notOk(waited, 'framework_wait_init waits in STARTUP');
  t.equal((await rpcError(h, 'framework_start_init', { x: 1 })).code, -32602);
  t.equal(await h.rpc('framework_start_init'), true);
  t.equal(await wait, true, 'framework_wait_init answers after init');
  t.ok(fs.existsSync(h.socketOf('w0')), 'the -c config was replayed (bdev first, as SPDK orders subsystems)');
  t.equal(((await h.rpc('framework_get_reactors')) as { reactors: unknown[] }).reactors.length, 1, 'engine running');
  t.equal((await rpcError(h, 'framework_start_init')).code, -1, 'a second framework_start_init is refused');
  const current = (await h.rpc('rpc_get_methods', { current: true })) as string[];
  t.ok(current.includes('bdev_malloc_create') && !current.includes('framework_start_init'), 'RUNTIME methods now');

  // rpc.py load_config on a waiting target: what vhostd-rpc does (in file order, as rpc.py: bdev first here).
  const ordered = path.join(dir, 'ordered.json');
  fs.writeFileSync(ordered, JSON.stringify({ subsystems: (JSON.parse(fs.readFileSync(cfg, 'utf8')) as { subsystems: unknown[] }).subsystems.reverse() }));
  const h2 = await startVhostd({ extraArgs: ['--wait-for-rpc'] });
  t.teardown(() => h2.stop());
  const r = await cli(['-s', h2.rpcSocket, 'load_config', '-j', ordered]);
  t.equal(r.code, 0, `load_config: ${r.stderr}`);
  t.ok(fs.existsSync(h2.socketOf('w0')), 'load_config called framework_start_init and the config');
  t.same((await h2.rpc('framework_get_config', { name: 'vhost_blk' })) as unknown[], await h.rpc('framework_get_config', { name: 'vhost_blk' }));
});

t.test('--wait-for-rpc with a failing config: framework_start_init fails and the target exits', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-wait-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cfg = path.join(dir, 'bad.json');
  fs.writeFileSync(cfg, JSON.stringify({ subsystems: [{ subsystem: 'vhost_blk', config: [{ method: 'vhost_create_blk_controller', params: { ctrlr: 'w0', dev_name: 'nothing' } }] }] }));
  const h = await startVhostd({ extraArgs: ['--wait-for-rpc', '-c', cfg] });
  t.teardown(() => h.stop());
  const e = await rpcError(h, 'framework_start_init');
  t.equal(e.code, -32603);
  t.match(e.message, /framework_initialization failed: .*nothing/);
  const exit = await h.daemon.wait();
  t.equal(exit.code, 1, 'exit status 1');
  t.notOk(fs.existsSync(h.rpcSocket), 'RPC socket removed');
});

t.test('spdk_kill_instance SIGTERM / SIGINT / by number: graceful exit 0, sockets removed', async (t) => {
  for (const sig of ['SIGTERM', 'SIGINT', '15']) {
    const h = await startVhostd();
    t.teardown(() => h.stop());
    await h.rpc('bdev_null_create', { name: 'N0', num_blocks: 1024, block_size: 512 });
    await h.rpc('vhost_create_blk_controller', { ctrlr: 'k0', dev_name: 'N0' });
    t.ok(fs.existsSync(h.socketOf('k0')));
    t.equal(await h.rpc('spdk_kill_instance', { sig_name: sig }), true, `${sig}: true is replied before the signal`);
    const exit = await h.daemon.wait();
    t.same(exit, { code: 0, signal: null }, `${sig}: exit 0`);
    t.notOk(fs.existsSync(h.rpcSocket), `${sig}: RPC socket removed`);
    t.notOk(fs.existsSync(h.socketOf('k0')), `${sig}: controller socket removed`);
  }
  const h = await startVhostd();
  t.teardown(() => h.stop());
  t.equal(await h.rpc('spdk_kill_instance', { sig_name: 'SIGKILL' }), true);
  t.same(await h.daemon.wait(), { code: null, signal: 'SIGKILL' }, 'SIGKILL kills');
});

t.test('vhostd-rpc: the new methods with rpc.py syntax, save_config / load_config', async (t) => {
  const h = await startVhostd({ cpumask: '0x3' });
  t.teardown(() => h.stop());
  const rpc = (...args: string[]): ReturnType<typeof cli> => cli(['-s', h.rpcSocket, ...args]);

  let r = await rpc('log_set_print_level', 'NOTICE');
  t.same([r.code, r.stdout], [0, ''], 'log_set_print_level');
  r = await rpc('log_get_print_level');
  t.same([r.code, r.stdout], [0, '"NOTICE"\n'], 'log_get_print_level prints like rpc.py (print_dict)');
  r = await rpc('log_set_flag', 'bdev');
  t.equal(r.code, 0);
  r = await rpc('log_get_flags');
  t.equal((JSON.parse(r.stdout) as Record<string, boolean>).bdev, true);
  r = await rpc('log_clear_flag', 'bogus');
  t.equal(r.code, 1, 'error exit');
  t.match(r.stderr, /"code": -32602/);
  r = await rpc('log_set_level', 'WARNING');
  t.equal(r.code, 0);
  r = await rpc('log_get_level');
  t.equal(r.stdout, '"WARNING"\n');
  r = await rpc('framework_wait_init');
  t.same([r.code, r.stdout], [0, '']);
  r = await rpc('framework_get_subsystems');
  t.same(JSON.parse(r.stdout), await h.rpc('framework_get_subsystems'));
  r = await rpc('spdk_kill_instance', '--help');
  t.match(r.stdout, /usage: vhostd-rpc .* spdk_kill_instance sig_name/);
  r = await rpc('framework_get_config', '--help');
  t.match(r.stdout, /--with-batches/);
  r = await rpc('save_config', '--help');
  t.match(r.stdout, /-i, --indent INDENT/);

  await h.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 2048, block_size: 512 });
  await h.rpc('bdev_null_create', { name: 'N0', num_blocks: 4096, block_size: 4096 });
  await h.rpc('vhost_create_blk_controller', { ctrlr: 'c0', dev_name: 'M0', cpumask: '0x2' });
  r = await rpc('framework_get_config', 'bdev');
  t.same(JSON.parse(r.stdout), await h.rpc('framework_get_config', { name: 'bdev' }));
  r = await rpc('save_config');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^\{\n {2}"subsystems": \[\n/, 'indent 2 by default');
  const saved = JSON.parse(r.stdout) as { subsystems: { subsystem: string; config: unknown[] }[] };
  t.same(saved.subsystems.map((s) => s.subsystem), ['bdev', 'vhost_blk', 'scsi', 'vhost_scsi', 'nvmf']);
  t.same(saved.subsystems[0].config, await h.rpc('framework_get_config', { name: 'bdev' }));
  r = await rpc('save_config', '--indent=-1', '-s', 'bdev');
  t.equal(r.stdout.trim().split('\n').length, 1, 'compact');
  t.same((JSON.parse(r.stdout) as typeof saved).subsystems.map((s) => s.subsystem), ['bdev'], '-s bdev: only bdev');
  r = await rpc('save_config', '-s', 'vhost_blk');
  t.same((JSON.parse(r.stdout) as typeof saved).subsystems.map((s) => s.subsystem), ['bdev', 'vhost_blk'], '-s vhost_blk: with what it depends on');
  r = await rpc('save_config', '-s', 'iscsi');
  t.equal(r.code, 1);

  // load_config into a second target, from stdin.
  const h2 = await startVhostd({ cpumask: '0x3' });
  t.teardown(() => h2.stop());
  r = await cli(['-s', h2.rpcSocket, 'load_config'], JSON.stringify(saved));
  t.equal(r.code, 0, `load_config from stdin: ${r.stderr}`);
  for (const name of ['bdev', 'vhost_blk']) {
    t.same(await h2.rpc('framework_get_config', { name }), await h.rpc('framework_get_config', { name }), `${name} config identical`);
  }
  r = await cli(['-s', h2.rpcSocket, 'load_config'], JSON.stringify(saved));
  t.equal(r.code, 1, 'loading again fails (bdevs exist)');
  t.match(r.stderr, /"code": -17/);
  r = await cli(['-s', h2.rpcSocket, 'load_config'], JSON.stringify({ subsystems: [{ subsystem: 'bdev', config: [{ method: 'bdev_frobnicate' }] }] }));
  t.equal(r.code, 1, 'unknown method refused before anything is called');
  t.match(r.stderr, /unknown method "bdev_frobnicate"/);
  r = await cli(['-s', h2.rpcSocket, 'load_config'], '{not json');
  t.equal(r.code, 1, 'not JSON');
});

t.test('bdev modules: block sizes refused at create (bug 6.1), I/O types from the module (bug 6.2)', async (t) => {
  const h = await startVhostd();
  t.teardown(() => h.stop());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-bs-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, Buffer.alloc(1 << 20));
  const create: Record<string, (bs: number) => Record<string, unknown>> = {
    bdev_malloc_create: (bs) => ({ name: 'bs.m', num_blocks: 16, block_size: bs }),
    bdev_null_create: (bs) => ({ name: 'bs.n', num_blocks: 16, block_size: bs }),
    bdev_uring_create: (bs) => ({ name: 'bs.u', filename: file, block_size: bs }),
    bdev_aio_create: (bs) => ({ name: 'bs.a', filename: file, block_size: bs }),
  };
  for (const [method, params] of Object.entries(create)) {
    for (const bs of [1536, 2560, 256]) {
      t.same(
        await rpcError(h, method, params(bs)),
        { code: -22, message: `block_size ${bs} must be a power of 2 between 512 and 65536` },
        `${method} block_size ${bs}`,
      );
    }
  }
  t.same(await h.rpc('bdev_get_bdevs'), [], 'nothing was created');

  await h.rpc('bdev_null_create', create.bdev_null_create(4096));
  const [info] = (await h.rpc('bdev_get_bdevs', { name: 'bs.n' })) as { supported_io_types: Record<string, boolean> }[];
  t.match(info.supported_io_types, { read: true, write: true, unmap: false, flush: false, write_zeroes: true }, 'null: no unmap, no flush');
});
