/**
 * The uring bdev module, reactor half: a regular file or block device served
 * through one io_uring per engine worker (SPDK's module/bdev/uring). The
 * reactor opens the file (O_DIRECT when the file system allows it) and owns
 * the fds. RPC: bdev_uring_create, bdev_uring_delete. Thread: main (reactor).
 */
import { closeBackingFile, checkUringAvailable, openFileBdev, type FileBdevState } from '../../../reactor/bdev/file';
import type { BdevModule } from '../../../reactor/bdev/module';
import { defineMethod, paramsSchema, s } from '../../../reactor/rpc/schema';
import { fileIoTypes } from '../file-io-types';

interface CreateParams {
  name: string;
  filename: string;
  block_size?: number;
  uuid?: string;
}

export const uringModule: BdevModule<FileBdevState> = {
  name: 'uring',
  productName: 'URING bdev',

  methods(bdevs) {
    return [
      defineMethod<CreateParams>(
        'bdev_uring_create',
        paramsSchema({ name: s.string(), filename: s.string() }, { block_size: s.u32(), uuid: s.uuid() }),
        (p) => {
          // block_size 0 (or absent): the file's own.
          const blockSize = p.block_size || undefined;
          return bdevs.create(uringModule, { name: p.name, uuid: p.uuid, blockSize }, () => {
            checkUringAvailable();
            return openFileBdev(p.name, p.filename, { blockSize: blockSize ?? 0, readonly: false, unmap: true });
          }).name;
        },
      ),
      defineMethod<{ name: string }>('bdev_uring_delete', paramsSchema({ name: s.string() }), async (p) => {
        await bdevs.remove(uringModule, p.name);
        return true;
      }),
    ];
  },

  logFields: (b) => ({ engine: 'io_uring', filename: b.state.desc.filename }),
  ioTypes: (b) => fileIoTypes(b.state.desc),
  driverSpecific: (b) => ({ uring: { filename: b.state.desc.filename } }),
  writeConfig: (b) => ({
    method: 'bdev_uring_create',
    params: {
      name: b.name,
      filename: b.state.desc.filename,
      ...(b.state.requestedBlockSize ? { block_size: b.state.requestedBlockSize } : {}),
      uuid: b.uuid,
    },
  }),
  describe: (b) => b.state.desc,
  release: (state) => closeBackingFile(state.desc),
};
