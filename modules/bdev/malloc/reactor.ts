/**
 * The malloc bdev module, reactor half: a RAM disk whose blocks live in a
 * memfd every engine worker maps (SPDK's module/bdev/malloc); the reactor
 * owns the fd and closes it when the bdev is deleted, so the memory is given
 * back then (a SharedArrayBuffer's would only go at a garbage collection in
 * every thread that saw it: issue #15, soak). Bdevs over 4 GiB keep a
 * SharedArrayBuffer (MAX_MEMFD_BYTES).
 * RPC: bdev_malloc_create, bdev_malloc_delete. Thread: main (reactor).
 */
import fs from 'node:fs';
import { ErrorCode, VhostdError } from '../../../reactor/errors';
import { checkPhysicalBlockSize, metadataSchema, physicalBlockSchema, refuseMetadata, type BdevModule, type MetadataParams } from '../../../reactor/bdev/module';
import { defineMethod, paramsSchema, s } from '../../../reactor/rpc/schema';
import { native } from '../../../bindings';
import { FileOp } from '../../../bindings/native';
import { logger } from '../../../reactor/log';
import { MALLOC_IO_TYPES, MAX_MEMFD_BYTES, type MallocParams } from './common';

/** The largest malloc bdev a SharedArrayBuffer can hold here. */
const MAX_MALLOC_BYTES = 2 ** 53 - 1;

interface CreateParams extends MetadataParams {
  name?: string;
  num_blocks: number;
  block_size: number;
  uuid?: string;
  md_interleave?: boolean;
  physical_block_size?: number;
  /** SPDK splits I/O at this boundary inside its bdev layer; vhostd never splits, so any value gives the same results. */
  optimal_io_boundary?: number;
}

export const mallocModule: BdevModule<MallocParams> = {
  name: 'malloc',
  productName: 'Malloc disk',

  methods(bdevs) {
    return [
      defineMethod<CreateParams>(
        'bdev_malloc_create',
        paramsSchema(
          { num_blocks: s.u64(), block_size: s.u32() },
          { name: s.string(), uuid: s.uuid(), md_interleave: s.boolean(), ...metadataSchema, ...physicalBlockSchema, optimal_io_boundary: s.u32() },
        ),
        (p) => {
          refuseMetadata(p);
          checkPhysicalBlockSize(p);
          const name = p.name ?? bdevs.nextName('Malloc');
          const bdev = bdevs.create(mallocModule, { name, uuid: p.uuid, blockSize: p.block_size }, () => {
            const sizeBytes = p.num_blocks * p.block_size;
            if (!Number.isSafeInteger(sizeBytes) || sizeBytes > MAX_MALLOC_BYTES) {
              throw new VhostdError(ErrorCode.Invalid, `bdev of ${p.num_blocks} blocks of ${p.block_size} bytes cannot be held in memory`);
            }
            // 0 blocks: the registry refuses the geometry once this returns.
            let state: MallocParams;
            try {
              state = sizeBytes > 0 && sizeBytes <= MAX_MEMFD_BYTES ? memfdStorage(name, sizeBytes) : { storage: new SharedArrayBuffer(sizeBytes) };
            } catch (err) {
              throw new VhostdError(ErrorCode.NoMemory, `cannot allocate ${sizeBytes} bytes for ${name}: ${(err as Error).message}`);
            }
            return { blockSize: p.block_size, numBlocks: p.num_blocks, state };
          });
          return bdev.name;
        },
      ),
      defineMethod<{ name: string }>('bdev_malloc_delete', paramsSchema({ name: s.string() }), async (p) => {
        await bdevs.remove(mallocModule, p.name);
        return true;
      }),
    ];
  },

  ioTypes: () => MALLOC_IO_TYPES,
  driverSpecific: () => ({}),
  writeConfig: (b) => ({
    method: 'bdev_malloc_create',
    params: { name: b.name, num_blocks: b.numBlocks, block_size: b.blockSize, uuid: b.uuid },
  }),
  describe: (b): MallocParams => b.state,
  release: (state) => {
    if ('fd' in state) native.close(state.fd);
  },
};

/**
 * A memfd of `sizeBytes` with every page allocated and zeroed now, as SPDK's
 * malloc bdev takes (and zeroes) all of its memory at creation. A sparse
 * memfd allocated a zeroed page at the first touch of each 4 KiB inside
 * an I/O: a page fault of 2–4 µs in nearly every request of a fresh bdev
 * (minflt ≈ I/Os in a 3 s random-write run on 512 MiB), and a SIGBUS
 * instead of an error when memory ran out; now a shortage is this call's
 * error (bdev_malloc_create fails).
 *
 * Huge pages first (hugeMemfd), as SPDK's malloc memory comes from DPDK's
 * hugepage heap; when the pool cannot hold the bdev, 4 KiB pages written
 * with pwrite rather than fallocate: fallocated shmem pages are not
 * "uptodate", which stops the kernel's fault-around when a worker maps them
 * (engine.ts populatePageTables: one fault per 64 KiB instead of per 4 KiB).
 */
const ZEROS = new Uint8Array(1 << 20);
export function memfdStorage(name: string, sizeBytes: number): MallocParams {
  const huge = mallocHugepages ? hugeMemfd(name, sizeBytes) : -1;
  if (huge >= 0) return { fd: huge, sizeBytes };
  const fd = native.memfdCreate(`vhostd-malloc-${name}`, 0);
  try {
    native.ftruncate(fd, sizeBytes);
    for (let off = 0; off < sizeBytes; off += ZEROS.length) fs.writeSync(fd, ZEROS, 0, Math.min(ZEROS.length, sizeBytes - off), off);
  } catch (err) {
    native.close(fd);
    throw err;
  }
  return { fd, sizeBytes };
}

const log = logger('bdev');

/** MFD_HUGETLB (memfd_create(2)): the memfd's pages come from the default huge page pool. */
const MFD_HUGETLB = 4;

/** Take malloc memory from huge pages when the pool has room (default, as SPDK); setMallocHugepages(false) turns it off. */
let mallocHugepages = true;

/** Whether bdev_malloc_create tries huge pages first (vhostd's --no-huge turns it off, as SPDK's does). */
export function setMallocHugepages(on: boolean): void {
  mallocHugepages = on;
}

/** The default huge page size (/proc/meminfo Hugepagesize), 0 when there is none; read once. */
let hugePageBytes = -1;
function defaultHugePageBytes(): number {
  if (hugePageBytes < 0) {
    hugePageBytes = 0;
    try {
      const m = /^Hugepagesize:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
      if (m !== null) hugePageBytes = Number(m[1]) * 1024;
    } catch {
      // No /proc: no huge pages.
    }
  }
  return hugePageBytes;
}

/**
 * A hugetlb memfd of `sizeBytes`, every huge page allocated (fallocate;
 * hugetlbfs zeroes a page when it hands it out), or -1 when the size is not
 * a multiple of the huge page size or the pool cannot hold it (ENOSPC) —
 * nothing is kept then. Why: a 4 KiB random read from a 512 MiB bdev
 * missed the TLB nearly every time (131,072 pages of 4 KiB against 256 of 2
 * MiB), ~200 ns of a ~800 ns copy measured here, and mapping it in each
 * worker took ~45 ms of page faults per 512 MiB at every session start
 * (256 faults with huge pages).
 */
function hugeMemfd(name: string, sizeBytes: number): number {
  const page = defaultHugePageBytes();
  if (page === 0 || sizeBytes % page !== 0) return -1;
  let fd: number;
  try {
    fd = native.memfdCreate(`vhostd-malloc-${name}`, MFD_HUGETLB);
  } catch {
    return -1; // no hugetlbfs in this kernel
  }
  let why: string;
  try {
    native.ftruncate(fd, sizeBytes);
    const r = native.fileSyncOp(fd, FileOp.Fallocate, 0, sizeBytes, 0);
    if (r === 0) return fd;
    why = `fallocate: errno ${-r}`;
  } catch (err) {
    why = err instanceof Error ? err.message : String(err);
  }
  native.close(fd);
  log.info('malloc bdev in 4 KiB pages: the huge page pool cannot hold it', { name, sizeBytes, why });
  return -1;
}
