/**
 * The reactor's bdev layer: the generic registry and the module descriptors
 * (modules/bdev/<name>/reactor.ts), driven through the RPC methods the
 * modules define (RpcServer.invoke: schema, handler, error mapping). Bug 6.1
 * (a block size that is not a power of two was accepted), bug 6.2
 * (supported_io_types of a null bdev), what a module describes for the
 * engine, save_config of every module, and bdev events (resize: workers
 * first, then the controller's front-end). Runs on the tap main thread.
 */
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../bindings';
import { BDEV_MODULES } from '../../reactor/bdev/modules';
import { BdevRegistry, type Bdev, type BdevUser } from '../../reactor/bdev/registry';
import type { BdevInfo } from '../../reactor/info';
import { RpcServer } from '../../reactor/rpc/server';
import { bdevMethods } from '../../reactor/rpc/methods/bdev';
import type { MethodContext } from '../../reactor/rpc/methods/context';

const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-bdev-registry-'));
t.teardown(() => fs.rmSync(tmpDir, { recursive: true, force: true }));

function backingFile(name: string, sizeBytes: number): string {
  const f = path.join(tmpDir, name);
  fs.writeFileSync(f, Buffer.alloc(0));
  fs.truncateSync(f, sizeBytes);
  return f;
}

function setup(events: unknown[] = []): { server: RpcServer; bdevs: BdevRegistry } {
  const bdevs = new BdevRegistry(BDEV_MODULES, {
    engine: { bdevResize: async (name, numBlocks) => void events.push(['engine.bdevResize', name, numBlocks]) },
  });
  const server = new RpcServer();
  const ctx = { services: { bdevs }, methodNames: () => [] } as unknown as MethodContext;
  for (const m of bdevMethods(ctx)) server.register(m);
  t.teardown(() => bdevs.closeAll());
  return { server, bdevs };
}

const CREATE: Record<string, (blockSize: number) => Record<string, unknown>> = {
  malloc: (bs) => ({ name: 'm', num_blocks: 16, block_size: bs }),
  null: (bs) => ({ name: 'n', num_blocks: 16, block_size: bs }),
  // The file does not exist: a refusal of the block size must come before any open (else -2).
  uring: (bs) => ({ name: 'u', filename: path.join(tmpDir, 'absent'), block_size: bs }),
  aio: (bs) => ({ name: 'a', filename: path.join(tmpDir, 'absent'), block_size: bs }),
  // No such cluster: again, the block size is refused before anything is opened.
  rbd: (bs) => ({ name: 'r', pool_name: 'rbd', rbd_name: 'absent', block_size: bs, cluster_name: 'absent' }),
};

t.test('bug 6.1: every module refuses a block size that is not a power of two in 512..65536 (-22)', async (t) => {
  const { server, bdevs } = setup();
  t.same(Object.keys(CREATE), BDEV_MODULES.map((m) => m.name), 'every listed module is covered');
  for (const m of BDEV_MODULES) {
    for (const bs of [1536, 3072, 100, 256, 131072]) {
      await t.rejects(
        server.invoke(`bdev_${m.name}_create`, CREATE[m.name](bs)),
        { code: -22, message: `block_size ${bs} must be a power of 2 between 512 and 65536` },
        `${m.name} block_size ${bs}`,
      );
    }
  }
  for (const method of ['bdev_malloc_create', 'bdev_null_create']) {
    await t.rejects(
      server.invoke(method, { name: 'z', num_blocks: 0, block_size: 512 }),
      { code: -22, message: 'num_blocks 0 must be a positive integer' },
      `${method}: no blocks`,
    );
  }
  t.same(bdevs.list(), [], 'nothing was created');
  t.equal(await server.invoke('bdev_malloc_create', CREATE.malloc(65536)), 'm', 'malloc 65536 accepted');
  t.equal(await server.invoke('bdev_null_create', CREATE.null(512)), 'n', 'null 512 accepted');
  await t.rejects(server.invoke('bdev_aio_create', CREATE.aio(4096)), { code: -2 }, 'a valid size reaches the open (ENOENT)');
});

t.test('bug 6.2: supported_io_types come from the module', async (t) => {
  const { server } = setup();
  await server.invoke('bdev_null_create', { name: 'n', num_blocks: 8, block_size: 512 });
  await server.invoke('bdev_malloc_create', { name: 'm', num_blocks: 8, block_size: 512 });
  const file = backingFile('f', 1 << 20);
  await server.invoke('bdev_aio_create', { name: 'a', filename: file, block_size: 4096 });
  await server.invoke('bdev_aio_create', { name: 'af', filename: file, block_size: 4096, fallocate: true });
  await server.invoke('bdev_aio_create', { name: 'ar', filename: file, block_size: 4096, readonly: true, fallocate: true });
  const io = async (name: string): Promise<Record<string, boolean>> =>
    ((await server.invoke('bdev_get_bdevs', { name })) as BdevInfo[])[0].supported_io_types;
  const pick = (x: Record<string, boolean>): unknown => ({ read: x.read, write: x.write, unmap: x.unmap, write_zeroes: x.write_zeroes, flush: x.flush });
  t.same(pick(await io('n')), { read: true, write: true, unmap: false, write_zeroes: true, flush: false }, 'null: no unmap, no flush');
  t.same(pick(await io('m')), { read: true, write: true, unmap: true, write_zeroes: true, flush: true }, 'malloc: everything');
  t.same(pick(await io('a')), { read: true, write: true, unmap: false, write_zeroes: false, flush: true }, 'aio without fallocate');
  t.same(pick(await io('af')), { read: true, write: true, unmap: true, write_zeroes: true, flush: true }, 'aio with fallocate');
  t.same(pick(await io('ar')), { read: true, write: false, unmap: false, write_zeroes: false, flush: true }, 'aio readonly');
  const info = ((await server.invoke('bdev_get_bdevs', { name: 'af' })) as BdevInfo[])[0];
  t.equal(info.product_name, 'AIO disk');
  t.same(info.driver_specific, { aio: { filename: file, block_size_override: true, readonly: false, fallocate: true } });
  t.equal(((await server.invoke('bdev_get_bdevs', { name: 'n' })) as BdevInfo[])[0].product_name, 'Null disk');
});

t.test('describe(): the BdevDesc each module gives the engine', async (t) => {
  const { server, bdevs } = setup();
  await server.invoke('bdev_malloc_create', { name: 'm', num_blocks: 8, block_size: 4096 });
  await server.invoke('bdev_null_create', { name: 'n', num_blocks: 8, block_size: 512 });
  const file = backingFile('d', 1 << 20);
  await server.invoke('bdev_aio_create', { name: 'a', filename: file, readonly: true });
  const m = bdevs.describe(bdevs.require('m'), 1);
  t.same(
    { name: m.name, module: m.module, blockSize: m.blockSize, numBlocks: m.numBlocks },
    { name: 'm', module: 'malloc', blockSize: 4096, numBlocks: 8 },
  );
  // issue #15 (soak): a memfd the workers map, closed at delete — not a SharedArrayBuffer freed only by GC.
  const mp = m.params as { fd: number; sizeBytes: number };
  t.ok(Number.isInteger(mp.fd) && mp.fd >= 0, 'malloc: its storage is a memfd');
  t.equal(mp.sizeBytes, 4096 * 8);
  t.equal(native.fstat(mp.fd).sizeBytes, 4096 * 8, 'of the bdev size');
  // Allocated (and zeroed) at create, as SPDK's malloc takes its memory: no page is allocated inside an I/O.
  t.equal(fs.fstatSync(mp.fd).blocks * 512, 4096 * 8, 'every page of the memfd allocated at create');
  t.ok(m.stats instanceof SharedArrayBuffer && m.qos instanceof SharedArrayBuffer, 'iostat channel and QoS words');
  t.same(bdevs.describe(bdevs.require('n'), 1).params, {}, 'null: nothing');
  const a = bdevs.describe(bdevs.require('a'), 0).params as Record<string, unknown>;
  t.same(Object.keys(a).sort(), ['blockDevice', 'bufferedFd', 'direct', 'fd', 'filename', 'readonly', 'unmap'], 'aio: a FileBdevDesc');
  t.match(a, { filename: file, readonly: true, unmap: false, blockDevice: false });
  t.ok((a.fd as number) >= 0);
  // Delete closes the file's fds.
  const fd = a.fd as number;
  t.equal(await server.invoke('bdev_aio_delete', { name: 'a' }), true);
  t.throws(() => fs.fstatSync(fd), { code: 'EBADF' }, 'the fd is closed at delete');
});

t.test('save_config: each module writes the call that recreates its bdev', async (t) => {
  const { server, bdevs } = setup();
  const uuid = '6f2a0ae2-3c1b-4b5e-9d1e-0123456789ab';
  await server.invoke('bdev_malloc_create', { name: 'm', num_blocks: 8, block_size: 512, uuid });
  await server.invoke('bdev_null_create', { name: 'n', num_blocks: 4, block_size: 4096 });
  const file = backingFile('s', 1 << 20);
  await server.invoke('bdev_aio_create', { name: 'a', filename: file, fallocate: true });
  const calls = bdevs.writeConfig();
  t.same(calls[0], { method: 'bdev_malloc_create', params: { name: 'm', num_blocks: 8, block_size: 512, uuid } });
  t.same(calls[1], { method: 'bdev_null_create', params: { name: 'n', num_blocks: 4, block_size: 4096, uuid: bdevs.require('n').uuid } });
  t.same(calls[2], { method: 'bdev_aio_create', params: { name: 'a', filename: file, readonly: false, fallocate: true, uuid: bdevs.require('a').uuid } });
  // Replaying them in a fresh registry gives the same calls back.
  const fresh = setup();
  for (const c of calls) await fresh.server.invoke(c.method, c.params);
  t.same(fresh.bdevs.writeConfig(), calls, 'round trip');
});

t.test('bdev events: a resize goes to every worker first, then to the controller using the bdev', async (t) => {
  const events: unknown[] = [];
  const { server, bdevs } = setup(events);
  await server.invoke('bdev_null_create', { name: 'n', num_blocks: 2048, block_size: 512 });
  await server.invoke('bdev_malloc_create', { name: 'm', num_blocks: 8, block_size: 512 });
  const user: BdevUser = { name: 'vhost.0', bdevResized: (b: Bdev) => void events.push(['user.bdevResized', b.name, b.numBlocks]) };
  bdevs.claim(bdevs.require('n'), user);
  t.equal(await server.invoke('bdev_null_resize', { name: 'n', new_size: 4 }), true);
  t.same(events, [
    ['engine.bdevResize', 'n', 8192],
    ['user.bdevResized', 'n', 8192],
  ]);
  events.length = 0;
  t.equal(await server.invoke('bdev_null_resize', { name: 'n', new_size: 4 }), true, 'same size');
  t.same(events, [], 'same size: nothing to tell');
  await t.rejects(server.invoke('bdev_null_resize', { name: 'n', new_size: 1 }), { code: -22 }, 'shrinking');
  await t.rejects(server.invoke('bdev_null_resize', { name: 'm', new_size: 16 }), { code: -22 }, 'not a null bdev');
  await t.rejects(server.invoke('bdev_null_resize', { name: 'x', new_size: 16 }), { code: -19 }, 'no bdev');
  t.same(events, [], 'refusals tell nobody');
  await t.rejects(server.invoke('bdev_null_delete', { name: 'n' }), { code: -16, message: /vhost\.0/ }, 'claimed: busy');
  bdevs.release(bdevs.require('n'), user);
  t.equal(await server.invoke('bdev_null_delete', { name: 'n' }), true, 'released: deletable');
});

t.test('issue #15 soak: a deleted malloc bdev gives its memory back at once (its memfd is closed), not at a later GC', async (t) => {
  const { server, bdevs } = setup();
  await server.invoke('bdev_malloc_create', { name: 'gone', num_blocks: 256, block_size: 4096 });
  const { fd } = bdevs.describe(bdevs.require('gone'), 0).params as { fd: number };
  const link = fs.readlinkSync(`/proc/self/fd/${fd}`);
  t.match(link, /^\/memfd:vhostd-malloc-gone/, 'the storage is a memfd named after the bdev');
  await server.invoke('bdev_malloc_delete', { name: 'gone' });
  let now: string | null = null;
  try {
    now = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    now = null;
  }
  t.not(now, link, 'the memfd is closed by the delete');
});
