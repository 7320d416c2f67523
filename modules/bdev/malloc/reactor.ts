/**
 * The malloc bdev module, reactor half: a RAM disk whose blocks live in a
 * SharedArrayBuffer every engine worker reaches (SPDK's module/bdev/malloc).
 * RPC: bdev_malloc_create, bdev_malloc_delete. Thread: main (reactor).
 */
import { ErrorCode, VhostdError } from '../../../reactor/errors';
import { checkPhysicalBlockSize, metadataSchema, physicalBlockSchema, refuseMetadata, type BdevModule, type MetadataParams } from '../../../reactor/bdev/module';
import { defineMethod, paramsSchema, s } from '../../../reactor/rpc/schema';
import { MALLOC_IO_TYPES, type MallocParams } from './common';

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
            let storage: SharedArrayBuffer;
            try {
              storage = new SharedArrayBuffer(sizeBytes);
            } catch (err) {
              throw new VhostdError(ErrorCode.NoMemory, `cannot allocate ${sizeBytes} bytes for ${name}: ${(err as Error).message}`);
            }
            return { blockSize: p.block_size, numBlocks: p.num_blocks, state: { storage } };
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
  describe: (b): MallocParams => ({ storage: b.state.storage }),
};
