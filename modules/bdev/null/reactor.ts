/**
 * The null bdev module, reactor half: reads return zeroes, writes are
 * dropped (SPDK's module/bdev/null). RPC: bdev_null_create,
 * bdev_null_delete, bdev_null_resize. Thread: main (reactor).
 */
import { ErrorCode, VhostdError } from '../../../reactor/errors';
import { checkPhysicalBlockSize, metadataSchema, physicalBlockSchema, refuseMetadata, type BdevModule, type MetadataParams } from '../../../reactor/bdev/module';
import { defineMethod, paramsSchema, s } from '../../../reactor/rpc/schema';
import { NULL_IO_TYPES } from './common';

interface CreateParams extends MetadataParams {
  name: string;
  num_blocks: number;
  block_size: number;
  uuid?: string;
  physical_block_size?: number;
}

interface ResizeParams {
  name: string;
  /** MiB */
  new_size: number;
}

const MIB = 1024 * 1024;

export const nullModule: BdevModule<null> = {
  name: 'null',
  productName: 'Null disk',

  methods(bdevs) {
    return [
      defineMethod<CreateParams>(
        'bdev_null_create',
        paramsSchema({ name: s.string(), num_blocks: s.u64(), block_size: s.u32() }, { uuid: s.uuid(), ...metadataSchema, ...physicalBlockSchema }),
        (p) => {
          checkPhysicalBlockSize(p);
          refuseMetadata(p);
          return bdevs.create(nullModule, { name: p.name, uuid: p.uuid, blockSize: p.block_size }, () => ({
            blockSize: p.block_size,
            numBlocks: p.num_blocks,
            state: null,
          })).name;
        },
      ),
      defineMethod<{ name: string }>('bdev_null_delete', paramsSchema({ name: s.string() }), async (p) => {
        await bdevs.remove(nullModule, p.name);
        return true;
      }),
      // SPDK (bdev_null_resize): a missing bdev is -ENODEV, one of another
      // module -EINVAL; sizes compare in whole MiB and a null bdev only grows.
      defineMethod<ResizeParams>('bdev_null_resize', paramsSchema({ name: s.string(), new_size: s.u64() }), async (p) => {
        const b = bdevs.require(p.name);
        if (b.module !== nullModule) throw new VhostdError(ErrorCode.Invalid, `bdev ${p.name} is a ${b.module.name} bdev, not a null bdev`);
        const currentMiB = Math.floor((b.blockSize * b.numBlocks) / MIB);
        if (p.new_size < currentMiB) {
          throw new VhostdError(
            ErrorCode.Invalid,
            `new size ${p.new_size} MiB is smaller than the current ${currentMiB} MiB: a null bdev can only grow`,
          );
        }
        const numBlocks = Math.floor((p.new_size * MIB) / b.blockSize);
        if (!Number.isSafeInteger(numBlocks) || numBlocks < 1) throw new VhostdError(ErrorCode.Invalid, `new size ${p.new_size} MiB is out of range`);
        await bdevs.resize(b, numBlocks);
        return true;
      }),
    ];
  },

  ioTypes: () => NULL_IO_TYPES,
  driverSpecific: () => ({}),
  writeConfig: (b) => ({
    method: 'bdev_null_create',
    params: { name: b.name, num_blocks: b.numBlocks, block_size: b.blockSize, uuid: b.uuid },
  }),
  describe: () => ({}),
};
