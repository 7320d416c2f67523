/**
 * Malloc bdevs in huge pages (issue #12: SPDK's malloc memory is hugepage
 * memory; 4 KiB pages cost a TLB miss in nearly every random read of a large
 * bdev and ~45 ms of page faults per 512 MiB in each worker at session
 * start): bdev_malloc_create takes a hugetlb memfd when the size is a
 * multiple of the huge page size and the pool holds it, else 4 KiB pages;
 * setMallocHugepages(false) (vhostd --no-huge) always 4 KiB pages. Either
 * way the storage starts zeroed and the engine half reads and writes it.
 * Other processes share the huge page pool, so which backing a bdev got is
 * read from the fd (st_blksize: the page size), never predicted from the
 * pool's free count. Runs on the tap main thread.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import { native } from '../../bindings';
import { BdevIo, BdevIoStatus, BdevIoType } from '../../engine/bdev/bdev';
import { BDEV_MODULES } from '../../reactor/bdev/modules';
import { BdevRegistry } from '../../reactor/bdev/registry';
import { RpcServer } from '../../reactor/rpc/server';
import { bdevMethods } from '../../reactor/rpc/methods/bdev';
import type { MethodContext } from '../../reactor/rpc/methods/context';
import { mallocEngine } from '../../modules/bdev/malloc/engine';
import { setMallocHugepages } from '../../modules/bdev/malloc/reactor';
import { parseCli } from '../../reactor/cli-args';

class TestIo extends BdevIo {
  completions: BdevIoStatus[] = [];
  override done(): void {
    this.completions.push(this.status);
  }
}

const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
const hugePageBytes = Number(/^Hugepagesize:\s+(\d+) kB$/m.exec(meminfo)?.[1] ?? 0) * 1024;
const hugePagesTotal = Number(/^HugePages_Total:\s+(\d+)$/m.exec(meminfo)?.[1] ?? 0);

function setup(): { server: RpcServer; bdevs: BdevRegistry } {
  const bdevs = new BdevRegistry(BDEV_MODULES, { engine: { bdevResize: async () => undefined } });
  const server = new RpcServer();
  const ctx = { services: { bdevs }, methodNames: () => [] } as unknown as MethodContext;
  for (const m of bdevMethods(ctx)) server.register(m);
  t.teardown(() => bdevs.closeAll());
  return { server, bdevs };
}

/** Create a malloc bdev; its memfd and the page size backing it (st_blksize). */
async function create(server: RpcServer, bdevs: BdevRegistry, name: string, sizeBytes: number): Promise<{ fd: number; pageBytes: number }> {
  await server.invoke('bdev_malloc_create', { name, num_blocks: sizeBytes / 4096, block_size: 4096 });
  const p = bdevs.describe(bdevs.require(name), 1).params as { fd: number; sizeBytes: number };
  return { fd: p.fd, pageBytes: fs.fstatSync(p.fd).blksize };
}

/** Through the engine half: the storage reads as zeros, and a write at the last block reads back. */
function roundTrip(t: Test, fd: number, sizeBytes: number): void {
  const numBlocks = sizeBytes / 4096;
  const bdev = mallocEngine.open({ name: 'H', module: 'malloc', blockSize: 4096, numBlocks, params: { fd, sizeBytes } }, undefined);
  const ch = bdev.createChannel();
  const io = (type: BdevIoType, block: number, buf: Uint8Array): BdevIoStatus => {
    const x = new TestIo(1);
    x.prepare(type, block, 1);
    x.addIov(buf, 0, 4096);
    ch.submit(x);
    ch.poll();
    return x.completions[0];
  };
  const got = new Uint8Array(4096).fill(0xff);
  t.equal(io(BdevIoType.Read, numBlocks - 1, got), BdevIoStatus.Success);
  t.ok(got.every((b) => b === 0), 'a fresh bdev reads as zeros');
  const src = new Uint8Array(4096).fill(0xa5);
  t.equal(io(BdevIoType.Write, numBlocks - 1, src), BdevIoStatus.Success);
  got.fill(0);
  t.equal(io(BdevIoType.Read, numBlocks - 1, got), BdevIoStatus.Success);
  t.same(got, src, 'the write reads back');
  ch.destroy();
  bdev.destroy();
}

t.test('a bdev of whole huge pages: hugetlb when the pool holds it, else 4 KiB pages; zeroed either way', async (t) => {
  const { server, bdevs } = setup();
  const size = hugePageBytes > 0 ? 2 * hugePageBytes : 4 << 20;
  const { fd, pageBytes } = await create(server, bdevs, 'h', size);
  t.ok(pageBytes === 4096 || (hugePageBytes > 0 && pageBytes === hugePageBytes), `backed by ${pageBytes}-byte pages`);
  if (hugePagesTotal === 0) t.equal(pageBytes, 4096, 'no huge page pool: 4 KiB pages');
  if (pageBytes === 4096) t.equal(fs.fstatSync(fd).blocks * 512, size, 'every 4 KiB page allocated at create');
  t.equal(native.fstat(fd).sizeBytes, size, 'of the bdev size');
  roundTrip(t, fd, size);
  await server.invoke('bdev_malloc_delete', { name: 'h' });
  t.throws(() => fs.fstatSync(fd), 'the memfd is closed by the delete');
});

t.test('a size that is not a multiple of the huge page size, and --no-huge: 4 KiB pages', async (t) => {
  const { server, bdevs } = setup();
  const odd = await create(server, bdevs, 'odd', 4096 * 5);
  t.equal(odd.pageBytes, 4096, 'a 20 KiB bdev');
  roundTrip(t, odd.fd, 4096 * 5);
  setMallocHugepages(false);
  t.teardown(() => setMallocHugepages(true));
  const size = hugePageBytes > 0 ? hugePageBytes : 2 << 20;
  const off = await create(server, bdevs, 'off', size);
  t.equal(off.pageBytes, 4096, 'huge pages turned off');
  t.equal(fs.fstatSync(off.fd).blocks * 512, size, 'every page allocated at create');
  roundTrip(t, off.fd, size);
});

t.test('--no-huge parses (SPDK spells it so); off by default', async (t) => {
  const parse = (argv: string[]) => parseCli(argv, []);
  t.match(parse(['-m', '0x1']), { noHuge: false });
  t.match(parse(['-m', '0x1', '--no-huge']), { noHuge: true });
});
