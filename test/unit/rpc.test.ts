/**
 * Tests of the JSON-RPC control plane (reactor/rpc): the stream framing, the
 * server over a real Unix socket with a fake Target (every method's success
 * and failure, protocol errors, batches, notifications, ordering, many
 * clients), RpcClient, the vhostd-rpc command line (argv → params, and the
 * CLI run as a child process), and SPDK's own scripts/rpc.py run against the
 * server. Runs on the tap main thread.
 *
 * SPDK's rpc.py is the unchanged peer at ../shared/peers/spdk-rpc beside the
 * repository ($SPDK_RPC_DIR overrides it); when it is missing that test fails.
 */
import t, { type Test } from 'tap';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BdevInfo, ControllerInfo, IoChannelsInfo, PollersInfo, ReactorsInfo, ThreadStatsInfo } from '../../reactor/info';
import { RpcCode, RpcError } from '../../reactor/rpc/errors';
import type { Services } from '../../reactor/rpc/methods/context';
import { BDEV_MODULES } from '../../reactor/bdev/modules';
import type { BdevModule } from '../../reactor/bdev/module';
import { BdevRegistry, type Bdev, type CreateRequest, type Opened } from '../../reactor/bdev/registry';
import { Placement } from '../../reactor/placement';
import { subsystemRegistry } from '../../reactor/subsystems';
import type { Controller } from '../../reactor/vhost/controller';
import type { DeviceModel } from '../../reactor/vhost/model';
import { VhostService } from '../../reactor/vhost/service';
import { NvmfService } from '../../reactor/nvmf/service';
import { JsonStreamSplitter } from '../../reactor/rpc/framing';
import { RpcServer } from '../../reactor/rpc/server';
import { RpcClient } from '../../reactor/rpc/client';
import { METHOD_NAMES, registerMethods } from '../../reactor/rpc/methods';
import { versionInfo } from '../../reactor/rpc/methods/app';
import { COMMANDS, formatDryRun, formatResult, parseCommandLine, pyDumps, UsageError } from '../../reactor/rpc/commands';
import { runRpcPy, spdkRpcDir } from '../lib/spdk-rpc';

const REPO = path.resolve(__dirname, '../../..');
const CLI = path.join(REPO, 'bin/vhostd-rpc.js');

// ---------------------------------------------------------------------------
// The target: the real subsystem services (bdev registry with every bdev
// module, vhost controllers listening on sockets in a temporary directory),
// without engine workers (no front-end connects here), recording the calls
// that reach them.

type Call = { fn: string; args: unknown[] };

class RecordingBdevs extends BdevRegistry {
  constructor(private readonly calls: Call[]) {
    super(BDEV_MODULES);
  }

  override create<S>(module: BdevModule<S>, req: CreateRequest, open: () => Opened<S>): Bdev<S> {
    const b = super.create(module, req, open);
    this.calls.push({ fn: 'create', args: [module.name, { name: b.name, numBlocks: b.numBlocks, blockSize: b.blockSize, uuid: req.uuid }] });
    return b;
  }

  override delete(module: BdevModule, name: string): void {
    super.delete(module, name);
    this.calls.push({ fn: 'delete', args: [module.name, name] });
  }

  override infos(name?: string): BdevInfo[] {
    this.calls.push({ fn: 'infos', args: [name] });
    return super.infos(name);
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }
}

class RecordingVhost extends VhostService {
  constructor(
    private readonly calls: Call[],
    socketDir: string,
    bdevs: BdevRegistry,
  ) {
    super({
      socketDir,
      socketMode: 0o600,
      cores: [0, 1],
      bdevs,
      engine: { worker: () => { throw new Error('no engine in the RPC tests'); } },
      placement: new Placement([0, 1]),
    });
  }

  override async create(name: string, cpumask: string | undefined, makeModel: () => DeviceModel): Promise<Controller> {
    const c = await super.create(name, cpumask, makeModel);
    this.calls.push({ fn: 'createController', args: [{ ctrlr: name, cpumask, model: c.model.backendSpecific() }] });
    return c;
  }

  override async delete(name: string): Promise<void> {
    await super.delete(name);
    this.calls.push({ fn: 'deleteController', args: [name] });
  }

  names(): string[] {
    return this.list().map((c) => c.name);
  }
}

let targetSeq = 0;

class TestTarget implements Services {
  readonly version = 'vhostd v0.1.0';
  /** Every call that reached a service, with its arguments. */
  readonly calls: Call[] = [];
  readonly bdevs = new RecordingBdevs(this.calls);
  readonly vhost: RecordingVhost;
  readonly nvmf: NvmfService;
  readonly subsystems = subsystemRegistry({
    bdev: () => this.bdevs.writeConfig(),
    vhost_blk: () => this.vhost.writeConfig('vhost_blk'),
    scsi: () => [],
    vhost_scsi: () => this.vhost.writeConfig('vhost_scsi'),
    nvmf: () => this.nvmf.writeConfig(),
  });
  readonly system = {
    reactors: (): ReactorsInfo => ({
      tick_rate: 1000000000,
      pid: process.pid,
      reactors: [{ lcore: 0, busy: 10, idle: 20, in_interrupt: false, lw_threads: [{ name: 'app_thread', id: 1, cpumask: '1', elapsed: 30 }] }],
    }),
    threadStats: (): ThreadStatsInfo => ({ tick_rate: 1e9, threads: [] }),
    pollers: (): PollersInfo => ({ tick_rate: 1e9, threads: [] }),
    ioChannels: (): IoChannelsInfo => ({ tick_rate: 1e9, threads: [] }),
  };

  constructor() {
    const socketDir = path.join(tmpDir, `target${targetSeq++}`);
    fs.mkdirSync(socketDir);
    this.vhost = new RecordingVhost(this.calls, socketDir, this.bdevs);
    this.nvmf = new NvmfService({
      socketDir,
      socketMode: 0o600,
      cores: [0, 1],
      bdevs: this.bdevs,
      engine: { worker: () => { throw new Error('no engine in the RPC tests'); } },
      placement: new Placement([0, 1]),
    });
  }
}

// ---------------------------------------------------------------------------
// Helpers

let sockSeq = 0;
const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-rpc-test-'));
t.teardown(() => fs.rmSync(tmpDir, { recursive: true, force: true }));

function sockPath(): string {
  return path.join(tmpDir, `rpc${sockSeq++}.sock`);
}

async function startServer(t: Test, target = new TestTarget(), options = {}): Promise<{ server: RpcServer; target: TestTarget; path: string }> {
  const server = new RpcServer(options);
  registerMethods(server, target);
  t.teardown(() => target.vhost.closeAll());
  const p = sockPath();
  await server.listen(p);
  t.teardown(() => server.close());
  return { server, target, path: p };
}

/** A raw connection: write bytes, read replies one by one as parsed JSON values. */
class RawConn {
  private readonly splitter = new JsonStreamSplitter(64 * 1024 * 1024);
  private readonly replies: unknown[] = [];
  private waiter: (() => void) | null = null;
  readonly closed: Promise<void>;
  isClosed = false;
  /** Every byte received, for checks on the exact wire format. */
  raw = '';

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.raw += chunk.toString('utf8');
      const { values, error } = this.splitter.push(chunk);
      if (error) throw error;
      for (const v of values) this.replies.push(JSON.parse(v.toString('utf8')));
      this.wake();
    });
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        this.wake();
        resolve();
      }),
    );
    socket.on('error', () => undefined);
  }

  static connect(p: string): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = net.connect(p);
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new RawConn(s));
      });
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    if (w) w();
  }

  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (err) => (err ? reject(err) : resolve())));
  }

  /** The next reply; rejects if the connection closes first. */
  async next(): Promise<Record<string, unknown>> {
    for (;;) {
      const r = this.replies.shift();
      if (r !== undefined) return r as Record<string, unknown>;
      if (this.isClosed) throw new Error('connection closed without a reply');
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  async call(method: string, params?: unknown, id: unknown = 1): Promise<Record<string, unknown>> {
    const req: Record<string, unknown> = { jsonrpc: '2.0', method, id };
    if (params !== undefined) req.params = params;
    await this.write(JSON.stringify(req));
    return this.next();
  }

  end(): void {
    this.socket.end();
  }
}

/** Call through RpcClient; resolves to { result } or { code, message }. */
async function callVia(client: RpcClient, method: string, params?: Record<string, unknown>): Promise<{ result?: unknown; code?: number; message?: string }> {
  try {
    return { result: await client.call(method, params) };
  } catch (err) {
    if (err instanceof RpcError) return { code: err.code, message: err.message };
    throw err;
  }
}

// ---------------------------------------------------------------------------
// Framing (sans-IO)

t.test('JsonStreamSplitter frames concatenated values', async (t) => {
  const sp = new JsonStreamSplitter(1024);
  const text = ' {"a":"}{\\"[","b":[1,{"c":2}]}\n[{"x":1}]{"é":"\\\\"}';
  const r = sp.push(Buffer.from(text));
  t.equal(r.error, null);
  t.same(
    r.values.map((v) => JSON.parse(v.toString('utf8'))),
    [{ a: '}{"[', b: [1, { c: 2 }] }, [{ x: 1 }], { é: '\\' }],
  );

  // The same bytes one at a time (splitting the 2-byte 'é' too).
  const sp2 = new JsonStreamSplitter(1024);
  const got: unknown[] = [];
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i++) {
    const { values, error } = sp2.push(bytes.subarray(i, i + 1));
    t.equal(error, null);
    for (const v of values) got.push(JSON.parse(v.toString('utf8')));
  }
  t.same(got, [{ a: '}{"[', b: [1, { c: 2 }] }, [{ x: 1 }], { é: '\\' }]);
  t.notOk(sp2.inValue);
});

t.test('JsonStreamSplitter errors', async (t) => {
  const sp = new JsonStreamSplitter(1024);
  const r = sp.push(Buffer.from('{"ok":1} hello'));
  t.equal(r.values.length, 1, 'the value before the garbage is still returned');
  t.equal(r.error?.reason, 'not-a-json-container');
  const again = sp.push(Buffer.from('{}'));
  t.equal(again.values.length, 0, 'dead after an error');
  t.equal(again.error?.reason, 'not-a-json-container');

  const big = new JsonStreamSplitter(16);
  t.equal(big.push(Buffer.from('{"a":"0123')).error, null);
  t.equal(big.push(Buffer.from('456789"}')).error?.reason, 'too-large', 'limit counts bytes across chunks');
  const exact = new JsonStreamSplitter(16);
  const r16 = exact.push(Buffer.from('{"a":"012345678"}'.slice(0, 16)));
  t.equal(r16.error, null, '16 bytes pending is allowed');
  t.throws(() => new JsonStreamSplitter(1));
});

// ---------------------------------------------------------------------------
// Server lifecycle

t.test('listen: socket mode, stale socket, live socket, non-socket, close', async (t) => {
  const p = sockPath();
  // A stale socket file: a process bound it and exited without unlinking it.
  execFileSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.exit(0))`]);
  t.ok(fs.lstatSync(p).isSocket(), 'a stale socket file exists');

  const server = new RpcServer();
  registerMethods(server, new TestTarget());
  await server.listen(p);
  t.equal(fs.statSync(p).mode & 0o777, 0o600, 'socket is 0600');
  const c = await RpcClient.connect(p);
  t.same(await c.call('bdev_get_bdevs'), []);
  c.close();

  const other = new RpcServer();
  await t.rejects(other.listen(p), { code: 'EADDRINUSE' }, 'a live server is not replaced');

  await server.close();
  t.notOk(fs.existsSync(p), 'close removes the socket file');

  // close() while listen() is still binding (a SIGTERM at start-up): nothing is left at the path.
  const early = new RpcServer();
  const binding = early.listen(p);
  await early.close();
  const outcome = await binding.then(() => 'listening', (err: Error) => err.message);
  const left = fs.readdirSync(path.dirname(p)).filter((f) => f.startsWith(path.basename(p)));
  await early.close(); // a server that did finish binding (the old code) is closed here, not left running
  t.match(outcome, /closed while it was starting/, 'listen gives up once closed');
  t.same(left, [], 'no socket file left by a server closed while binding, nor its temporary name');

  fs.writeFileSync(p, 'not a socket');
  await t.rejects(new RpcServer().listen(p), { code: 'EEXIST' }, 'a regular file is not removed');
  t.equal(fs.readFileSync(p, 'utf8'), 'not a socket');
  fs.unlinkSync(p);

  const moded = new RpcServer({ socketMode: 0o660 });
  await moded.listen(p);
  t.equal(fs.statSync(p).mode & 0o777, 0o660, 'socketMode option');
  await moded.close();
  t.throws(() => new RpcServer({ socketMode: 0o10000 }));
});

// ---------------------------------------------------------------------------
// Methods

t.test('spdk_get_version, rpc_get_methods, framework_get_reactors', async (t) => {
  const { path: p } = await startServer(t);
  const c = await RpcClient.connect(p);
  t.teardown(() => c.close());
  t.same(await c.call('spdk_get_version'), { version: 'vhostd v0.1.0', fields: { major: 0, minor: 1, patch: 0, suffix: '' } });
  t.same(await c.call('spdk_get_version', {}), { version: 'vhostd v0.1.0', fields: { major: 0, minor: 1, patch: 0, suffix: '' } });
  t.same(await callVia(c, 'spdk_get_version', { verbose: true }), { code: -32602, message: 'params.verbose: unknown parameter' });
  t.same(versionInfo('SPDK v24.01.1-pre').fields, { major: 24, minor: 1, patch: 1, suffix: '-pre' });
  t.throws(() => versionInfo('no version here'), { code: RpcCode.InternalError });

  const methods = await c.call('rpc_get_methods', { current: false, include_aliases: false });
  t.same(methods, [...METHOD_NAMES]);
  t.same(
    [...METHOD_NAMES].sort(),
    [
      'accel_set_options',
      'bdev_aio_create',
      'bdev_aio_delete',
      'bdev_enable_histogram',
      'bdev_get_bdevs',
      'bdev_get_histogram',
      'bdev_get_iostat',
      'bdev_iscsi_set_options',
      'bdev_malloc_create',
      'bdev_malloc_delete',
      'bdev_null_create',
      'bdev_null_delete',
      'bdev_null_resize',
      'bdev_nvme_set_hotplug',
      'bdev_nvme_set_options',
      'bdev_rbd_create',
      'bdev_rbd_delete',
      'bdev_rbd_get_clusters_info',
      'bdev_rbd_register_cluster',
      'bdev_rbd_resize',
      'bdev_rbd_unregister_cluster',
      'bdev_reset_iostat',
      'bdev_set_options',
      'bdev_set_qos_limit',
      'bdev_uring_create',
      'bdev_uring_delete',
      'bdev_wait_for_examine',
      'framework_get_config',
      'framework_get_reactors',
      'framework_get_scheduler',
      'framework_get_subsystems',
      'framework_set_scheduler',
      'framework_start_init',
      'framework_wait_init',
      'iobuf_set_options',
      'log_clear_flag',
      'log_get_flags',
      'log_get_level',
      'log_get_print_level',
      'log_set_flag',
      'log_set_level',
      'log_set_print_level',
      'nvmf_create_subsystem',
      'nvmf_create_transport',
      'nvmf_delete_subsystem',
      'nvmf_get_subsystems',
      'nvmf_get_transports',
      'nvmf_subsystem_add_listener',
      'nvmf_subsystem_add_ns',
      'nvmf_subsystem_remove_listener',
      'nvmf_subsystem_remove_ns',
      'rpc_get_methods',
      'sock_impl_set_options',
      'sock_set_default_impl',
      'spdk_get_version',
      'spdk_kill_instance',
      'thread_get_io_channels',
      'thread_get_pollers',
      'thread_get_stats',
      'vhost_controller_set_coalescing',
      'vhost_create_blk_controller',
      'vhost_create_nvme_controller',
      'vhost_create_scsi_controller',
      'vhost_delete_controller',
      'vhost_get_controllers',
      'vhost_nvme_controller_add_ns',
      'vhost_scsi_controller_add_target',
      'vhost_scsi_controller_remove_target',
      'vhost_start_scsi_controller',
      'vmd_enable',
    ],
  );
  t.same(Object.keys(COMMANDS).sort(), [...METHOD_NAMES].sort(), 'vhostd-rpc knows every method');
  t.same(await callVia(c, 'rpc_get_methods', { current: 'yes' }), { code: -32602, message: 'params.current: must be boolean' });

  const reactors = (await c.call('framework_get_reactors')) as ReactorsInfo;
  t.equal(reactors.pid, process.pid);
  t.equal(reactors.reactors[0].lw_threads[0].name, 'app_thread');
  t.equal((await callVia(c, 'framework_get_reactors', { x: 1 })).code, -32602);
});


t.test('bdev methods', async (t) => {
  const { path: p, target } = await startServer(t);
  const c = await RpcClient.connect(p);
  t.teardown(() => c.close());

  // No name: the target generates one.
  t.equal(await c.call('bdev_malloc_create', { num_blocks: 8, block_size: 4096 }), 'Malloc0');
  // Exactly what rpc.py sends for `bdev_malloc_create -b Malloc1 256 512`.
  t.equal(
    await c.call('bdev_malloc_create', { num_blocks: 524288, block_size: 512, name: 'Malloc1', md_interleave: false, dif_is_head_of_md: false }),
    'Malloc1',
  );
  t.same(target.calls.at(-1), { fn: 'create', args: ['malloc', { name: 'Malloc1', numBlocks: 524288, blockSize: 512, uuid: undefined }] });
  const uuid = '6f2a0ae2-3c1b-4b5e-9d1e-0123456789ab';
  t.equal(await c.call('bdev_malloc_create', { name: 'M2', num_blocks: 1, block_size: 512, uuid, md_size: 0, dif_type: 0 }), 'M2');
  t.equal(target.bdevs.get('M2')?.uuid, uuid);

  t.same(await callVia(c, 'bdev_malloc_create', { name: 'Malloc1', num_blocks: 1, block_size: 512 }), { code: -17, message: 'bdev Malloc1 already exists' });
  t.same(await callVia(c, 'bdev_malloc_create', { name: 'x', num_blocks: 1, block_size: 100 }), {
    code: -22,
    message: 'block_size 100 must be a power of 2 between 512 and 65536',
  });
  t.same(await callVia(c, 'bdev_malloc_create', { name: 'x', block_size: 512 }), { code: -32602, message: 'params.num_blocks: is required' });
  t.same(await callVia(c, 'bdev_malloc_create', { name: 'x', num_blocks: '8', block_size: 512 }), {
    code: -32602,
    message: 'params.num_blocks: must be integer',
  });
  t.same(await callVia(c, 'bdev_malloc_create', { name: 'x', num_blocks: 1.5, block_size: 512 }), {
    code: -32602,
    message: 'params.num_blocks: must be integer',
  });
  t.same(await callVia(c, 'bdev_malloc_create', { name: 'x', num_blocks: -1, block_size: 512 }), {
    code: -32602,
    message: 'params.num_blocks: must be >= 0',
  });
  t.same(await callVia(c, 'bdev_malloc_create', { name: 'x', num_blocks: 1, block_size: 2 ** 32 }), {
    code: -32602,
    message: 'params.block_size: must be <= 4294967295',
  });
  t.same(await callVia(c, 'bdev_malloc_create', { name: 'x', num_blocks: 1, block_size: 512, numa_id: 0 }), {
    code: -32602,
    message: 'params.numa_id: unknown parameter',
  });
  t.same(await callVia(c, 'bdev_malloc_create', { name: 7, num_blocks: 1, block_size: 512, uuid: 'nope' }), {
    code: -32602,
    message: 'params.name: must be string; params.uuid: must be a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)',
  });
  t.same(await callVia(c, 'bdev_malloc_create'), { code: -32602, message: 'params.num_blocks: is required; params.block_size: is required' });
  t.same(await callVia(c, 'bdev_malloc_create', { name: 'x', num_blocks: 1, block_size: 512, md_size: 8 }), {
    code: -22,
    message: 'params.md_size: metadata is not supported (only 0)',
  });
  t.same(await callVia(c, 'bdev_malloc_create', { name: 'x', num_blocks: 1, block_size: 512, dif_type: 1 }), {
    code: -22,
    message: 'params.dif_type: protection information is not supported (only 0)',
  });
  t.notOk(target.bdevs.has('x'), 'refused creates created nothing');

  // What rpc.py sends for `bdev_null_create Null0 64 512`.
  t.equal(await c.call('bdev_null_create', { num_blocks: 131072, block_size: 512, name: 'Null0', dif_is_head_of_md: false }), 'Null0');
  t.same(target.calls.at(-1), { fn: 'create', args: ['null', { name: 'Null0', numBlocks: 131072, blockSize: 512, uuid: undefined }] });
  t.same(await callVia(c, 'bdev_null_create', { num_blocks: 1, block_size: 512 }), { code: -32602, message: 'params.name: is required' });
  t.same(await callVia(c, 'bdev_null_create', { name: 'Null0', num_blocks: 1, block_size: 512 }), { code: -17, message: 'bdev Null0 already exists' });
  t.same(await callVia(c, 'bdev_null_create', { name: 'N', num_blocks: 1, block_size: 512, md_size: 16 }), {
    code: -22,
    message: 'params.md_size: metadata is not supported (only 0)',
  });

  const all = (await c.call('bdev_get_bdevs')) as BdevInfo[];
  t.same(all.map((b) => b.name), ['Malloc0', 'Malloc1', 'M2', 'Null0']);
  const one = (await c.call('bdev_get_bdevs', { name: 'Null0' })) as BdevInfo[];
  t.same(one.map((b) => [b.name, b.num_blocks, b.block_size]), [['Null0', 131072, 512]]);
  t.same(await callVia(c, 'bdev_get_bdevs', { name: 'nope' }), { code: -19, message: 'no bdev named nope' });
  t.same(await callVia(c, 'bdev_get_bdevs', { name: 'nope', timeout: 1 }), { code: -19, message: 'no bdev named nope' }, 'timeout expires');
  t.same(await callVia(c, 'bdev_get_bdevs', { timeout: -1 }), { code: -32602, message: 'params.timeout: must be >= 0' });
  t.same(await callVia(c, 'bdev_get_bdevs', { names: ['a'] }), { code: -32602, message: 'params.names: unknown parameter' });

  // bdev_get_bdevs waits for a bdev that appears during its timeout.
  const c2 = await RpcClient.connect(p);
  t.teardown(() => c2.close());
  const waiting = c.call('bdev_get_bdevs', { name: 'Late', timeout: 60000 });
  t.equal(await c2.call('bdev_null_create', { name: 'Late', num_blocks: 2, block_size: 512 }), 'Late');
  t.same(((await waiting) as BdevInfo[]).map((b) => b.name), ['Late']);

  t.equal(await c.call('bdev_malloc_delete', { name: 'Malloc0' }), true);
  t.same(target.calls.at(-1), { fn: 'delete', args: ['malloc', 'Malloc0'] });
  t.same(await callVia(c, 'bdev_malloc_delete', { name: 'Malloc0' }), { code: -19, message: 'no malloc bdev named Malloc0' });
  t.same(await callVia(c, 'bdev_malloc_delete', { name: 'Null0' }), { code: -19, message: 'no malloc bdev named Null0' }, 'wrong kind');
  t.same(await callVia(c, 'bdev_malloc_delete', {}), { code: -32602, message: 'params.name: is required' });
  t.equal(await c.call('bdev_null_delete', { name: 'Null0' }), true);
  t.same(target.calls.at(-1), { fn: 'delete', args: ['null', 'Null0'] });
  t.same(await callVia(c, 'bdev_null_delete', { name: 'Null0' }), { code: -19, message: 'no null bdev named Null0' });
  t.same(await callVia(c, 'bdev_null_delete', { name: 'Null0', force: true }), { code: -32602, message: 'params.force: unknown parameter' });
});

t.test('vhost methods', async (t) => {
  const { path: p, target } = await startServer(t);
  const c = await RpcClient.connect(p);
  t.teardown(() => c.close());
  for (const name of ['Malloc0', 'Malloc1', 'Malloc2', 'Free']) await c.call('bdev_malloc_create', { name, num_blocks: 16, block_size: 512 });

  // What rpc.py sends for `vhost_create_blk_controller --cpumask 0x2 -r vhost.0 Malloc0`.
  t.equal(
    await c.call('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'Malloc0', cpumask: '0x2', readonly: true, packed_ring: false }),
    true,
  );
  t.same(target.calls.at(-1), { fn: 'createController', args: [{ ctrlr: 'vhost.0', cpumask: '0x2', model: { block: { readonly: true, bdev: 'Malloc0', transport: 'vhost_user_blk' } } }] });
  // save_config's form (SPDK writes the transport and a mask without 0x).
  t.equal(
    await c.call('vhost_create_blk_controller', { ctrlr: 'vhost.1', dev_name: 'Malloc1', cpumask: '1', readonly: false, transport: 'vhost_user_blk' }),
    true,
  );
  t.equal(await c.call('vhost_create_blk_controller', { ctrlr: 'vhost.2', dev_name: 'Malloc2', packed_ring: false, packed_ring_recovery: false }), true);

  t.same(await callVia(c, 'vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'Free' }), { code: -17, message: 'controller vhost.0 already exists' });
  // Two blk controllers on one bdev, as SPDK allows (both ends of a live migration in one vhostd).
  t.same(await callVia(c, 'vhost_create_blk_controller', { ctrlr: 'v3', dev_name: 'Malloc0' }), { result: true });
  t.same(await callVia(c, 'vhost_delete_controller', { ctrlr: 'v3' }), { result: true });
  t.same(await callVia(c, 'vhost_create_blk_controller', { ctrlr: 'v3', dev_name: 'nope' }), { code: -19, message: 'no bdev named nope' });
  t.same(await callVia(c, 'vhost_create_blk_controller', { ctrlr: 'v3', dev_name: 'Free', cpumask: 'zz' }), {
    code: -22,
    message: 'invalid cpumask "zz": expected a hex mask like 0x3 or a list like [0,2-3]',
  });
  t.same(await callVia(c, 'vhost_create_blk_controller', { ctrlr: 'v3', dev_name: 'Free', cpumask: '0x4' }), {
    code: -22,
    message: "cpumask 0x4 is not a subset of the app's cpumask 0x3 (core 2 outside)",
  });
  // Packed virtqueues are offered on request (issue #10), and the request is in the controller's config call.
  t.equal(await c.call('vhost_create_blk_controller', { ctrlr: 'vp', dev_name: 'Free', cpumask: '0x2', packed_ring: true }), true);
  const vhostCfg = (await c.call('framework_get_config', { name: 'vhost_blk' })) as { method: string; params: { ctrlr?: string; packed_ring?: boolean } }[];
  t.equal(vhostCfg.find((x) => x.params.ctrlr === 'vp')?.params.packed_ring, true, 'save_config keeps packed_ring');
  t.equal(await c.call('vhost_delete_controller', { ctrlr: 'vp' }), true);
  t.same(await callVia(c, 'vhost_create_blk_controller', { ctrlr: 'v3', dev_name: 'Malloc0', transport: 'vfio_user_blk' }), {
    code: -22,
    message: 'params.transport: unknown transport "vfio_user_blk" (only vhost_user_blk)',
  });
  t.same(await callVia(c, 'vhost_create_blk_controller', { dev_name: 'Malloc0' }), { code: -32602, message: 'params.ctrlr: is required' });
  t.same(await callVia(c, 'vhost_create_blk_controller', { ctrlr: 'v3', dev_name: 'Malloc0', readonly: 1 }), {
    code: -32602,
    message: 'params.readonly: must be boolean',
  });
  t.same(await callVia(c, 'vhost_create_blk_controller', { ctrlr: 'v3', dev_name: 'Malloc0', delay: true }), {
    code: -32602,
    message: 'params.delay: unknown parameter',
  });
  for (const bad of ['../evil', '', '.', '..', 'a/b']) {
    const r = await callVia(c, 'vhost_create_blk_controller', { ctrlr: bad, dev_name: 'Malloc0' });
    t.same(r, { code: -32602, message: 'params.ctrlr: must be a non-empty name without "/" (not "." or "..")' }, `ctrlr ${JSON.stringify(bad)}`);
  }
  t.same(target.vhost.names(), ['vhost.0', 'vhost.1', 'vhost.2']);

  const list = (await c.call('vhost_get_controllers')) as ControllerInfo[];
  t.same(list.map((x) => x.ctrlr), ['vhost.0', 'vhost.1', 'vhost.2']);
  const one = (await c.call('vhost_get_controllers', { name: 'vhost.0' })) as ControllerInfo[];
  t.same(one[0].backend_specific, { block: { readonly: true, bdev: 'Malloc0', transport: 'vhost_user_blk' } });
  t.same(await callVia(c, 'vhost_get_controllers', { name: 'nope' }), { code: -19, message: 'no controller named nope' });
  t.same(await callVia(c, 'vhost_get_controllers', { name: 5 }), { code: -32602, message: 'params.name: must be string' });

  t.same(
    await callVia(c, 'bdev_malloc_delete', { name: 'Malloc0' }),
    { code: -16, message: 'bdev Malloc0 is used by controller vhost.0; delete the controller first' },
    'bdev in use',
  );
  target.vhost.require('vhost.0').connectionChanged(true);
  t.same(await callVia(c, 'vhost_delete_controller', { ctrlr: 'vhost.0' }), {
    code: -16,
    message: 'controller vhost.0 has a front-end connected; detach it first',
  });
  target.vhost.require('vhost.0').connectionChanged(false);
  t.equal(await c.call('vhost_delete_controller', { ctrlr: 'vhost.0' }), true);
  t.same(target.calls.at(-1), { fn: 'deleteController', args: ['vhost.0'] });
  t.same(await callVia(c, 'vhost_delete_controller', { ctrlr: 'vhost.0' }), { code: -19, message: 'no controller named vhost.0' });
  t.equal(await c.call('bdev_malloc_delete', { name: 'Malloc0' }), true, 'its bdev is free again');
  t.same(await callVia(c, 'vhost_delete_controller', { name: 'vhost.1' }), {
    code: -32602,
    message: 'params.ctrlr: is required; params.name: unknown parameter',
  });
});

// ---------------------------------------------------------------------------
// Protocol

t.test('envelope errors, unknown method, result shape on the wire', async (t) => {
  const { path: p } = await startServer(t);
  const c = await RawConn.connect(p);
  t.teardown(() => c.end());

  await c.write('{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":7}');
  t.same(await c.next(), { jsonrpc: '2.0', id: 7, result: [] });
  t.equal(c.raw, '{"jsonrpc":"2.0","id":7,"result":[]}\n', "SPDK's member order and trailing newline");

  t.same(await c.call('no_such_method', undefined, 'abc'), { jsonrpc: '2.0', id: 'abc', error: { code: -32601, message: 'Method not found' } });
  t.same(await c.call('bdev_get_bdevs', ['x'], 3), { jsonrpc: '2.0', id: 3, error: { code: -32602, message: 'params: must be object' } });
  t.same(await c.call('bdev_get_bdevs', null, null), { jsonrpc: '2.0', id: null, result: [] }, 'params null = none; id null answered');
  t.same(await c.call('bdev_get_bdevs', 5, 4), { jsonrpc: '2.0', id: 4, error: { code: -32600, message: 'Invalid request' } });

  const invalid = [
    '{"jsonrpc":"2.0","method":5,"id":1}',
    '{"jsonrpc":"1.0","method":"bdev_get_bdevs","id":1}',
    '{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":1,"extra":true}',
    '{"jsonrpc":"2.0","id":1}',
    '{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":{"a":1}}',
    '[]',
  ];
  for (const req of invalid) {
    await c.write(req);
    const r = await c.next();
    t.same(r.error, { code: -32600, message: 'Invalid request' }, req);
  }
  // jsonrpc is optional, as in SPDK.
  t.same(await (async () => (await c.write('{"method":"bdev_get_bdevs","id":9}'), c.next()))(), { jsonrpc: '2.0', id: 9, result: [] });
  t.notOk(c.isClosed, 'request errors keep the connection open');
});

t.test('batches', async (t) => {
  const { path: p, target } = await startServer(t);
  const c = await RawConn.connect(p);
  t.teardown(() => c.end());
  await c.write(
    JSON.stringify([
      { jsonrpc: '2.0', method: 'bdev_malloc_create', params: { name: 'B0', num_blocks: 1, block_size: 512 }, id: 1 },
      { jsonrpc: '2.0', method: 'bdev_null_create', params: { name: 'N0', num_blocks: 1, block_size: 512 } },
      { jsonrpc: '2.0', method: 'bdev_malloc_create', params: { name: 'B0', num_blocks: 1, block_size: 512 }, id: 2 },
      42,
      { jsonrpc: '2.0', method: 'bdev_get_bdevs', id: 3 },
    ]),
  );
  const r = (await c.next()) as unknown as Record<string, unknown>[];
  t.ok(Array.isArray(r));
  t.same(r[0], { jsonrpc: '2.0', id: 1, result: 'B0' });
  t.same(r[1], { jsonrpc: '2.0', id: 2, error: { code: -17, message: 'bdev B0 already exists' } });
  t.same(r[2], { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid request' } });
  t.same((r[3].result as BdevInfo[]).map((b) => b.name), ['B0', 'N0'], 'batch runs in order, notifications included');
  t.equal(r.length, 4);
  t.ok(target.bdevs.has('N0'));

  // A batch of notifications only: no reply at all; the next reply is for the next request.
  await c.write(JSON.stringify([{ jsonrpc: '2.0', method: 'bdev_null_delete', params: { name: 'N0' } }]));
  t.same(await c.call('bdev_get_bdevs', { name: 'B0' }, 10).then((x) => x.id), 10);
  t.notOk(target.bdevs.has('N0'));
});

t.test('notifications get no reply', async (t) => {
  const { path: p, target } = await startServer(t);
  const c = await RawConn.connect(p);
  t.teardown(() => c.end());
  await c.write('{"jsonrpc":"2.0","method":"bdev_null_create","params":{"name":"N1","num_blocks":4,"block_size":512}}');
  await c.write('{"jsonrpc":"2.0","method":"no_such_method"}');
  await c.write('{"jsonrpc":"2.0","method":"bdev_null_create","params":{"bad":1}}');
  const r = await c.call('bdev_get_bdevs', undefined, 'after');
  t.equal(r.id, 'after', 'the first reply is for the request after the notifications');
  t.same((r.result as BdevInfo[]).map((b) => b.name), ['N1'], 'the notification ran');
  t.ok(target.bdevs.has('N1'));
});

t.test('streamed framing: two requests in one write, one request split across writes', async (t) => {
  const { path: p } = await startServer(t);
  const c = await RawConn.connect(p);
  t.teardown(() => c.end());
  await c.write(
    '{"jsonrpc":"2.0","method":"bdev_malloc_create","params":{"name":"A{\\"}","num_blocks":1,"block_size":512},"id":1}' +
      '\n  {"jsonrpc":"2.0","method":"bdev_get_bdevs","id":2}',
  );
  t.same(await c.next(), { jsonrpc: '2.0', id: 1, result: 'A{"}' });
  const second = await c.next();
  t.equal(second.id, 2);
  t.same((second.result as BdevInfo[]).map((b) => b.name), ['A{"}']);

  // rpc.py's indented form, written a few bytes at a time, with a 2-byte UTF-8 character split.
  const req = Buffer.from(JSON.stringify({ jsonrpc: '2.0', method: 'bdev_null_create', params: { name: 'Nü[]', num_blocks: 2, block_size: 512 }, id: 3 }, null, 2));
  for (let i = 0; i < req.length; i += 3) await c.write(req.subarray(i, i + 3));
  t.same(await c.next(), { jsonrpc: '2.0', id: 3, result: 'Nü[]' });
});

t.test('garbage and oversize requests: -32700 and close, other clients unaffected', async (t) => {
  const { path: p } = await startServer(t);
  const good = await RpcClient.connect(p);
  t.teardown(() => good.close());
  t.same(await good.call('bdev_get_bdevs'), []);

  const bad = await RawConn.connect(p);
  await bad.write('{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":1}hello world');
  t.same(await bad.next(), { jsonrpc: '2.0', id: 1, result: [] }, 'the request before the garbage is answered');
  t.same(await bad.next(), { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } });
  await bad.closed;
  t.ok(bad.isClosed, 'connection closed after the parse error');

  const bad2 = await RawConn.connect(p);
  await bad2.write('{"jsonrpc":"2.0","method":,"id":1}');
  t.same((await bad2.next()).error, { code: -32700, message: 'Parse error' }, 'balanced braces but not JSON');
  await bad2.closed;

  const big = await RawConn.connect(p);
  const filler = 'x'.repeat(1024 * 1024);
  await big.write(`{"jsonrpc":"2.0","method":"bdev_get_bdevs","params":{"name":"${filler}"},"id":1}`).catch(() => undefined);
  t.same((await big.next()).error, { code: -32700, message: 'Parse error' }, 'request over 1 MiB');
  await big.closed;

  t.same(await good.call('bdev_null_create', { name: 'still', num_blocks: 1, block_size: 512 }), 'still', 'the other client keeps working');
  const fresh = await RpcClient.connect(p);
  t.same(((await fresh.call('bdev_get_bdevs')) as BdevInfo[]).map((b) => b.name), ['still'], 'new clients are served');
  fresh.close();
});

t.test('replies in request order with async handlers, many clients at once', async (t) => {
  const { path: p } = await startServer(t);
  const c = await RawConn.connect(p);
  t.teardown(() => c.end());
  await c.call('bdev_malloc_create', { name: 'M', num_blocks: 1, block_size: 512 }, 0);
  // Pipelined: an async create, a sync get that must see it, an async delete, a sync get.
  const reqs = [
    { jsonrpc: '2.0', method: 'vhost_create_blk_controller', params: { ctrlr: 'c0', dev_name: 'M' }, id: 1 },
    { jsonrpc: '2.0', method: 'vhost_get_controllers', id: 2 },
    { jsonrpc: '2.0', method: 'vhost_delete_controller', params: { ctrlr: 'c0' }, id: 3 },
    { jsonrpc: '2.0', method: 'vhost_get_controllers', id: 4 },
  ];
  await c.write(reqs.map((r) => JSON.stringify(r)).join(''));
  const replies = [await c.next(), await c.next(), await c.next(), await c.next()];
  t.same(replies.map((r) => r.id), [1, 2, 3, 4]);
  t.equal(replies[0].result, true);
  t.same((replies[1].result as ControllerInfo[]).map((x) => x.ctrlr), ['c0']);
  t.equal(replies[2].result, true);
  t.same(replies[3].result, []);

  // 20 clients, each creating its own bdev and reading it back, concurrently.
  const clients = await Promise.all(Array.from({ length: 20 }, () => RpcClient.connect(p)));
  const results = await Promise.all(
    clients.map(async (cl, i) => {
      const name = await cl.call('bdev_null_create', { name: `n${i}`, num_blocks: i + 1, block_size: 512 });
      const info = (await cl.call('bdev_get_bdevs', { name: `n${i}` })) as BdevInfo[];
      cl.close();
      return [name, info[0].num_blocks];
    }),
  );
  t.same(results, Array.from({ length: 20 }, (_, i) => [`n${i}`, i + 1]));
});

t.test('in-process invoke (config replay path)', async (t) => {
  const { server, target } = await startServer(t);
  t.equal(await server.invoke('bdev_malloc_create', { name: 'Cfg', num_blocks: 1, block_size: 512 }), 'Cfg');
  t.ok(target.bdevs.has('Cfg'));
  await t.rejects(server.invoke('nope'), { code: -32601 });
  await t.rejects(server.invoke('bdev_malloc_create', { name: 'Cfg' }), { code: -32602, message: 'params.num_blocks: is required; params.block_size: is required' });
  t.throws(() => registerMethods(server, target), /already registered/);
});

// ---------------------------------------------------------------------------
// Client

t.test('RpcClient: pipelined calls, errors, timeout, server going away', async (t) => {
  const { path: p } = await startServer(t);
  const c = await RpcClient.connect(p);
  const [a, b, v] = await Promise.all([
    c.call('bdev_null_create', { name: 'p0', num_blocks: 1, block_size: 512 }),
    c.call('bdev_null_create', { name: 'p0', num_blocks: 1, block_size: 512 }).catch((e: unknown) => e),
    c.call('spdk_get_version'),
  ]);
  t.equal(a, 'p0');
  t.ok(b instanceof RpcError);
  t.equal((b as RpcError).code, -17);
  t.equal((v as { version: string }).version, 'vhostd v0.1.0');
  c.close();
  await t.rejects(c.call('spdk_get_version'), /client closed/);
  await t.rejects(RpcClient.connect(path.join(tmpDir, 'absent.sock')), { code: 'ENOENT' });

  // A server that never answers: the call times out; one that hangs up: calls reject.
  const silentPath = sockPath();
  const sockets: net.Socket[] = [];
  const silent = net.createServer((s) => sockets.push(s));
  await new Promise<void>((resolve) => silent.listen(silentPath, resolve));
  t.teardown(() => new Promise<void>((resolve) => silent.close(() => resolve())));
  const sc = await RpcClient.connect(silentPath);
  await t.rejects(sc.call('spdk_get_version', undefined, { timeoutMs: 20 }), { code: 'ERR_RPC_TIMEOUT' });
  const pending = sc.call('spdk_get_version');
  for (const s of sockets) s.destroy();
  await t.rejects(pending, /ECONNRESET|connection closed/);
});

// ---------------------------------------------------------------------------
// vhostd-rpc command line

t.test('vhostd-rpc argv → params', async (t) => {
  const call = (argv: string[]): Record<string, unknown> => {
    const cmd = parseCommandLine(argv);
    if (cmd.kind !== 'call') throw new Error('expected a call');
    return cmd as unknown as Record<string, unknown>;
  };
  t.same(call(['bdev_malloc_create', '-b', 'Malloc0', '256', '512']), {
    kind: 'call',
    socket: '/var/tmp/vhostd.sock',
    timeoutMs: 60000,
    connRetries: 0,
    verbose: 'ERROR',
    dryRun: false,
    method: 'bdev_malloc_create',
    params: { num_blocks: 524288, name: 'Malloc0', block_size: 512 },
    output: 'string',
  });
  t.same(call(['bdev_malloc_create', '0.5', '4096', '--uuid', '6f2a0ae2-3c1b-4b5e-9d1e-0123456789ab']).params, {
    num_blocks: 128,
    block_size: 4096,
    uuid: '6f2a0ae2-3c1b-4b5e-9d1e-0123456789ab',
  });
  t.same(call(['bdev_null_create', 'Null0', '64', '512']).params, { num_blocks: 131072, name: 'Null0', block_size: 512 });
  t.same(call(['-s', '/tmp/x.sock', '-t', '2.5', 'vhost_create_blk_controller', '--cpumask', '0x2', '-r', 'vhost.0', 'Malloc0']), {
    kind: 'call',
    socket: '/tmp/x.sock',
    timeoutMs: 2500,
    connRetries: 0,
    verbose: 'ERROR',
    dryRun: false,
    method: 'vhost_create_blk_controller',
    params: { ctrlr: 'vhost.0', dev_name: 'Malloc0', cpumask: '0x2', readonly: true, packed_ring: false },
    output: 'none',
  });
  t.same(call(['vhost_create_blk_controller', 'v', 'M', '--packed_ring', '--packed-ring-recovery']).params, {
    ctrlr: 'v',
    dev_name: 'M',
    readonly: false,
    packed_ring: true,
    packed_ring_recovery: true,
  });
  t.same(call(['vhost_create_blk_controller', 'v', 'M', '-p', '--transport', 'vhost_user_blk']).params, {
    ctrlr: 'v',
    dev_name: 'M',
    transport: 'vhost_user_blk',
    readonly: false,
    packed_ring: true,
  });
  t.same(call(['vhost_get_controllers']).params, undefined, 'no params: none sent (like rpc.py)');
  t.same(call(['vhost_get_controllers', '-n', 'vhost.0']).params, { name: 'vhost.0' });
  t.same(call(['bdev_get_bdevs', '-b', 'Malloc0', '-t', '100']).params, { name: 'Malloc0', timeout: 100 });
  t.same(call(['bdev_get_bdevs', '--timeout-ms=5']).params, { timeout: 5 });
  t.same(call(['vhost_delete_controller', 'vhost.0']).params, { ctrlr: 'vhost.0' });
  t.same(call(['vhost_create_scsi_controller', '--cpumask', '0x2', 'vhost.0']).params, { ctrlr: 'vhost.0', cpumask: '0x2', delay: false });
  t.same(call(['vhost_create_scsi_controller', '--delay', 'vhost.0']).params, { ctrlr: 'vhost.0', delay: true });
  t.same(call(['vhost_start_scsi_controller', 'vhost.0']).params, { ctrlr: 'vhost.0' });
  t.same(call(['vhost_scsi_controller_add_target', 'vhost.0', '-1', 'Disk1']).params, { ctrlr: 'vhost.0', scsi_target_num: -1, bdev_name: 'Disk1' }, '-1 is a value (argparse)');
  t.same(call(['vhost_scsi_controller_add_target', 'vhost.0', '3', 'M']).params, { ctrlr: 'vhost.0', scsi_target_num: 3, bdev_name: 'M' });
  t.same(call(['vhost_scsi_controller_remove_target', 'vhost.0', '3']).params, { ctrlr: 'vhost.0', scsi_target_num: 3 });
  t.throws(() => call(['vhost_scsi_controller_add_target', 'vhost.0', '-x', 'M']), /Unknown option '-x'/, 'other dash arguments are still options');
  t.same(call(['bdev_malloc_delete', 'Malloc0']).params, { name: 'Malloc0' });
  t.same(call(['bdev_null_delete', 'Null0']).params, { name: 'Null0' });
  t.same(call(['rpc_get_methods']).params, { current: false, include_aliases: false });
  t.same(call(['rpc_get_methods', '-c', '--include-aliases']).params, { current: true, include_aliases: true });
  t.same(call(['spdk_get_version']).params, undefined);
  t.same(call(['framework_get_reactors']).output, 'json');

  const usage = (argv: string[], re: RegExp): void => {
    try {
      parseCommandLine(argv);
      t.fail(`${argv.join(' ')}: no usage error`);
    } catch (err) {
      t.ok(err instanceof UsageError, `${argv.join(' ')}: UsageError`);
      t.match((err as Error).message, re, argv.join(' '));
    }
  };
  usage([], /METHOD is required/);
  usage(['nope'], /unknown method 'nope'/);
  usage(['bdev_malloc_create', '256'], /required: block_size/);
  usage(['bdev_malloc_create', '256', '512', 'extra'], /unrecognized arguments: extra/);
  usage(['bdev_malloc_create', 'big', '512'], /invalid float value: 'big'/);
  usage(['bdev_null_create', 'N', '1.5', '512'], /invalid int value: '1.5'/);
  usage(['bdev_malloc_create', '1', '0'], /block_size must be > 0/);
  usage(['bdev_get_bdevs', '-x'], /Unknown option '-x'/);
  usage(['bdev_get_bdevs', '-t', 'soon'], /invalid int value/);
  usage(['-t', '0', 'spdk_get_version'], /invalid timeout/);
  usage(['--bogus', 'spdk_get_version'], /Unknown option '--bogus'/);

  const help = parseCommandLine(['--help']);
  t.equal(help.kind, 'help');
  t.match(help.kind === 'help' ? help.text : '', /vhost_create_blk_controller\s+Add a new vhost block controller/);
  const mhelp = parseCommandLine(['-s', '/x', 'vhost_create_blk_controller', '--help']);
  t.match(mhelp.kind === 'help' ? mhelp.text : '', /usage: vhostd-rpc \[-s SOCK\] \[-t TIMEOUT\] vhost_create_blk_controller \[--cpumask CPUMASK\].* ctrlr dev_name/);
  t.match(mhelp.kind === 'help' ? mhelp.text : '', /-p, --packed-ring, --packed_ring/);

  t.equal(formatResult('Malloc0', 'string'), 'Malloc0');
  t.equal(formatResult(true, 'string'), 'true');
  t.equal(formatResult([{ a: 1 }], 'json'), '[\n  {\n    "a": 1\n  }\n]');
  t.equal(formatResult(true, 'none'), null);
});

t.test('vhostd-rpc global flags: -r/--conn-retries, -v/--verbose, --dry-run (rpc.py\'s)', async (t) => {
  const g = (argv: string[]): Record<string, unknown> => {
    const cmd = parseCommandLine(argv);
    if (cmd.kind !== 'call') throw new Error('expected a call');
    return { connRetries: cmd.connRetries, verbose: cmd.verbose, dryRun: cmd.dryRun, timeoutMs: cmd.timeoutMs };
  };
  t.same(g(['spdk_get_version']), { connRetries: 0, verbose: 'ERROR', dryRun: false, timeoutMs: 60000 });
  t.same(g(['-r', '5', 'spdk_get_version']).connRetries, 5);
  t.same(g(['--conn-retries', '7', 'spdk_get_version']).connRetries, 7);
  t.same(g(['--conn-retries=-3', 'spdk_get_version']).connRetries, 0, 'negative: no retry (range(N) is empty)');
  t.same(g(['-v', 'spdk_get_version']).verbose, 'INFO');
  t.same(g(['-vv', 'spdk_get_version']).verbose, 'INFO', '-vv is INFO, as rpc.py (store_const)');
  t.same(g(['--verbose', 'DEBUG', 'spdk_get_version']).verbose, 'DEBUG');
  t.same(g(['--verbose=ERROR', 'spdk_get_version']).verbose, 'ERROR');
  t.same(g(['--verbose', 'DEBUG', '-v', 'spdk_get_version']).verbose, 'INFO', 'the last one wins (one argparse dest)');
  t.same(g(['-v', '--verbose', 'DEBUG', 'spdk_get_version']).verbose, 'DEBUG');
  t.same(g(['--dry-run', 'spdk_get_version']).dryRun, true);
  t.same(g(['-t', '0.25', '-r', '2', '-v', '--dry-run', 'bdev_get_bdevs', '-t', '9']), { connRetries: 2, verbose: 'INFO', dryRun: true, timeoutMs: 250 }, 'method flags after METHOD stay the method\'s');
  const usage = (argv: string[], re: RegExp): void => {
    t.throws(() => parseCommandLine(argv), re, argv.join(' '));
  };
  usage(['-r', 'x', 'spdk_get_version'], /argument -r: invalid int value: 'x'/);
  usage(['-r', '1.5', 'spdk_get_version'], /argument -r: invalid int value/);
  usage(['--verbose', 'LOUD', 'spdk_get_version'], /invalid choice: 'LOUD'/);
  usage(['--verbose', 'info', 'spdk_get_version'], /invalid choice: 'info'/);
  usage(['--dry-run', 'save_config'], /--dry-run: save_config is a client-side command/);

  t.equal(formatDryRun('bdev_malloc_create', { num_blocks: 8, block_size: 512 }), 'Request:\n{\n  "method": "bdev_malloc_create",\n  "params": {\n    "num_blocks": 8,\n    "block_size": 512\n  }\n}');
  t.equal(formatDryRun('spdk_get_version', undefined), 'Request:\n{\n  "method": "spdk_get_version",\n  "params": {}\n}');
  t.equal(pyDumps({ jsonrpc: '2.0', id: 1, params: { a: [1, 'x'], b: null, c: true } }), '{"jsonrpc": "2.0", "id": 1, "params": {"a": [1, "x"], "b": null, "c": true}}');
  const help = parseCommandLine(['-h']);
  t.match(help.kind === 'help' ? help.text : '', /-r, --conn-retries N[\s\S]*--verbose \{DEBUG,INFO,ERROR\}[\s\S]*--dry-run/);
});

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

t.test('vhostd-rpc as a child process', async (t) => {
  const { path: p, target } = await startServer(t);
  let r = await runCli(['-s', p, 'bdev_malloc_create', '-b', 'Malloc0', '1', '512']);
  t.same(r, { code: 0, stdout: 'Malloc0\n', stderr: '' });
  t.same(target.calls.at(-1), { fn: 'create', args: ['malloc', { name: 'Malloc0', numBlocks: 2048, blockSize: 512, uuid: undefined }] });
  r = await runCli(['-s', p, 'vhost_create_blk_controller', '--cpumask', '0x2', '-r', 'vhost.0', 'Malloc0']);
  t.same(r, { code: 0, stdout: '', stderr: '' });
  r = await runCli(['-s', p, 'vhost_get_controllers', '-n', 'vhost.0']);
  t.equal(r.code, 0);
  t.same(JSON.parse(r.stdout), target.vhost.infos('vhost.0'));
  t.match(r.stdout, /^\[\n {2}\{\n {4}"ctrlr": "vhost.0",/, 'indented by 2');
  r = await runCli(['-s', p, 'bdev_malloc_delete', 'nope']);
  t.equal(r.code, 1);
  t.equal(r.stdout, '');
  t.match(r.stderr, /"code": -19/);
  t.match(r.stderr, /"message": "no malloc bdev named nope"/);
  t.match(r.stderr, /"method": "bdev_malloc_delete"/);
  r = await runCli(['-s', path.join(tmpDir, 'absent.sock'), 'spdk_get_version']);
  t.equal(r.code, 1);
  t.match(r.stderr, /Error while connecting to/);
  r = await runCli(['bdev_malloc_create', '1']);
  t.equal(r.code, 2);
  t.match(r.stderr, /usage: vhostd-rpc .*bdev_malloc_create/);
  r = await runCli(['--help']);
  t.equal(r.code, 0);
  t.match(r.stdout, /methods:/);
});

// ---------------------------------------------------------------------------
// SPDK's scripts/rpc.py against the server

t.test("SPDK's scripts/rpc.py works against the server", async (t) => {
  const dir = spdkRpcDir(); // missing: throws, and the test fails
  const { path: p, target } = await startServer(t);
  const rpc = (...args: string[]): ReturnType<typeof runRpcPy> => runRpcPy(dir, ['-s', p, ...args]);

  let r = await rpc('bdev_malloc_create', '-b', 'Malloc0', '256', '512');
  t.same([r.code, r.stdout, r.stderr], [0, 'Malloc0\n', ''], 'bdev_malloc_create');
  t.same(target.calls.at(-1), { fn: 'create', args: ['malloc', { name: 'Malloc0', numBlocks: 524288, blockSize: 512, uuid: undefined }] });
  r = await rpc('bdev_null_create', 'Null0', '64', '512');
  t.same([r.code, r.stdout], [0, 'Null0\n'], 'bdev_null_create');
  r = await rpc('vhost_create_blk_controller', '--cpumask', '0x2', '-r', 'vhost.0', 'Malloc0');
  t.same([r.code, r.stdout, r.stderr], [0, '', ''], 'vhost_create_blk_controller');
  t.same(target.calls.at(-1), { fn: 'createController', args: [{ ctrlr: 'vhost.0', cpumask: '0x2', model: { block: { readonly: true, bdev: 'Malloc0', transport: 'vhost_user_blk' } } }] });
  r = await rpc('vhost_create_blk_controller', '--transport', 'vhost_user_blk', 'vhost.1', 'Null0');
  t.equal(r.code, 0, 'with --transport');

  r = await rpc('vhost_get_controllers', '-n', 'vhost.0');
  t.equal(r.code, 0);
  t.same(JSON.parse(r.stdout), target.vhost.infos('vhost.0'));
  r = await rpc('vhost_get_controllers');
  t.same((JSON.parse(r.stdout) as ControllerInfo[]).map((c) => c.ctrlr), ['vhost.0', 'vhost.1']);
  r = await rpc('bdev_get_bdevs', '-b', 'Malloc0', '-t', '10');
  t.same((JSON.parse(r.stdout) as BdevInfo[]).map((b) => [b.name, b.num_blocks]), [['Malloc0', 524288]]);
  r = await rpc('bdev_get_bdevs');
  t.same((JSON.parse(r.stdout) as BdevInfo[]).map((b) => b.name), ['Malloc0', 'Null0']);
  r = await rpc('spdk_get_version');
  t.same(JSON.parse(r.stdout), { version: 'vhostd v0.1.0', fields: { major: 0, minor: 1, patch: 0, suffix: '' } });
  r = await rpc('rpc_get_methods');
  t.same(JSON.parse(r.stdout), [...METHOD_NAMES]);
  r = await rpc('framework_get_reactors');
  t.equal((JSON.parse(r.stdout) as ReactorsInfo).pid, process.pid);

  // A second blk controller on Malloc0 (shared, as SPDK): rpc.py's -p reaches the target as packed_ring.
  r = await rpc('vhost_create_blk_controller', '-p', 'vhost.2', 'Malloc0');
  t.equal(r.code, 0, "rpc.py's -p creates a second controller on the bdev");
  r = await rpc('framework_get_config', 'vhost_blk');
  t.equal((JSON.parse(r.stdout) as { params: { ctrlr?: string; packed_ring?: boolean } }[]).find((x) => x.params.ctrlr === 'vhost.2')?.params.packed_ring, true);
  r = await rpc('bdev_get_bdevs', '-b', 'Malloc0');
  t.equal((JSON.parse(r.stdout) as { claimed: boolean }[])[0].claimed, true, 'claimed while controllers use it');
  r = await rpc('vhost_delete_controller', 'vhost.2');
  t.equal(r.code, 0);
  r = await rpc('bdev_malloc_delete', 'Malloc0');
  t.equal(r.code, 1, 'busy bdev');
  t.match(r.stdout, /"code": -16/);
  r = await rpc('vhost_delete_controller', 'vhost.0');
  t.same([r.code, r.stdout], [0, ''], 'vhost_delete_controller');
  r = await rpc('vhost_delete_controller', 'vhost.1');
  t.equal(r.code, 0);
  r = await rpc('bdev_malloc_delete', 'Malloc0');
  t.same([r.code, r.stdout], [0, ''], 'bdev_malloc_delete');
  r = await rpc('bdev_null_delete', 'Null0');
  t.equal(r.code, 0, 'bdev_null_delete');
  r = await rpc('bdev_malloc_delete', 'Malloc0');
  t.equal(r.code, 1);
  t.match(r.stdout, /"code": -19/);
  t.match(r.stdout, /"message": "no malloc bdev named Malloc0"/);
  t.same([...target.bdevs.list().map((b) => b.name), ...target.vhost.names()], []);

  // Script mode: several calls on one connection (rpc.py reads them from stdin).
  const callsBefore = target.calls.length;
  r = await runRpcPy(dir, ['-s', p], 'bdev_malloc_create -b S0 1 512\nbdev_null_create S1 1 4096\nbdev_get_bdevs -b S1\n');
  t.equal(r.code, 0, `script mode: ${r.stderr}`);
  t.match(r.stdout, /^S0\nS1\n\[/);
  t.same(
    target.calls.slice(callsBefore).map((c) => c.fn),
    ['create', 'create', 'infos'],
  );

  // Batch mode: one JSON-RPC batch with all the calls.
  r = await runRpcPy(dir, ['-s', p, '-b'], 'bdev_null_create B0 1 512\nbdev_null_create B1 1 512\n');
  t.equal(r.code, 0, `batch mode: ${r.stderr}`);
  t.same(target.bdevs.list().map((b) => b.name).filter((n) => n.startsWith('B')), ['B0', 'B1']);
  r = await runRpcPy(dir, ['-s', p, '-b'], 'bdev_null_create B0 1 512\n');
  t.equal(r.code, 1, 'batch with an error');
  t.match(r.stderr, /"code": -17/);

  // The same command lines through vhostd-rpc reach the target with the same arguments.
  const lines = [
    ['bdev_malloc_create', '-b', 'X0', '3', '4096', '-u', '6f2a0ae2-3c1b-4b5e-9d1e-0123456789ab'],
    ['bdev_null_create', 'X1', '2', '512'],
    ['vhost_create_blk_controller', '--cpumask', '0x1', 'vx', 'X0'],
    ['vhost_delete_controller', 'vx'],
    ['bdev_null_delete', 'X1'],
    ['bdev_malloc_delete', 'X0'],
  ];
  const viaRpcPy: unknown[] = [];
  const viaCli: unknown[] = [];
  for (const line of lines) {
    const before = target.calls.length;
    const a = await rpc(...line);
    t.equal(a.code, 0, `rpc.py ${line.join(' ')}`);
    viaRpcPy.push(target.calls.slice(before));
  }
  for (const line of lines) {
    const before = target.calls.length;
    const b = await runCli(['-s', p, ...line]);
    t.equal(b.code, 0, `vhostd-rpc ${line.join(' ')}`);
    viaCli.push(target.calls.slice(before));
  }
  t.same(viaCli, viaRpcPy, 'vhostd-rpc and rpc.py make identical target calls');
});
