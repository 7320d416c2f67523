/**
 * The aio bdev module, reactor half: a regular file or block device served
 * through one Linux AIO context per engine worker (SPDK's module/bdev/aio).
 * The reactor opens the file and owns the fds. `fallocate` enables DISCARD
 * and WRITE ZEROES. RPC: bdev_aio_create, bdev_aio_delete.
 * Thread: main (reactor).
 */
import { closeBackingFile, openFileBdev, type FileBdevState } from '../../../reactor/bdev/file';
import type { BdevModule } from '../../../reactor/bdev/module';
import { ErrorCode, VhostdError } from '../../../reactor/errors';
import { defineMethod, paramsSchema, s } from '../../../reactor/rpc/schema';
import { fileIoTypes } from '../file-io-types';

interface CreateParams {
  name: string;
  filename: string;
  block_size?: number;
  readonly?: boolean;
  fallocate?: boolean;
  uuid?: string;
  /** RWF_NOWAIT for block devices; SPDK's rpc.py always sends `false`. */
  nowait?: boolean;
}

export const aioModule: BdevModule<FileBdevState> = {
  name: 'aio',
  productName: 'AIO disk',

  methods(bdevs) {
    return [
      defineMethod<CreateParams>(
        'bdev_aio_create',
        paramsSchema(
          { name: s.string(), filename: s.string() },
          { block_size: s.u32(), readonly: s.boolean(), fallocate: s.boolean(), uuid: s.uuid(), nowait: s.boolean() },
        ),
        (p) => {
          if (p.nowait === true) throw new VhostdError(ErrorCode.Invalid, 'params.nowait: RWF_NOWAIT is not supported');
          const blockSize = p.block_size || undefined;
          return bdevs.create(aioModule, { name: p.name, uuid: p.uuid, blockSize }, () =>
            openFileBdev(p.name, p.filename, { blockSize: blockSize ?? 0, readonly: p.readonly ?? false, unmap: p.fallocate ?? false }),
          ).name;
        },
      ),
      defineMethod<{ name: string }>('bdev_aio_delete', paramsSchema({ name: s.string() }), async (p) => {
        await bdevs.remove(aioModule, p.name);
        return true;
      }),
    ];
  },

  logFields: (b) => ({ engine: 'linux-aio', filename: b.state.desc.filename }),
  ioTypes: (b) => fileIoTypes(b.state.desc),
  // SPDK's bdev_aio_dump_info_json; its fallocate option is what makes unmap work here.
  driverSpecific: (b) => ({
    aio: {
      filename: b.state.desc.filename,
      block_size_override: b.state.requestedBlockSize !== 0,
      readonly: b.state.desc.readonly,
      fallocate: b.state.desc.unmap,
    },
  }),
  writeConfig: (b) => ({
    method: 'bdev_aio_create',
    params: {
      name: b.name,
      filename: b.state.desc.filename,
      ...(b.state.requestedBlockSize ? { block_size: b.state.requestedBlockSize } : {}),
      readonly: b.state.desc.readonly,
      fallocate: b.state.desc.unmap,
      uuid: b.uuid,
    },
  }),
  describe: (b) => b.state.desc,
  release: (state) => closeBackingFile(state.desc),
};
