/**
 * Methods of SPDK's bdev subsystem that vhostd implements: bdev_malloc_create,
 * bdev_malloc_delete, bdev_null_create, bdev_null_delete, bdev_uring_create,
 * bdev_uring_delete, bdev_aio_create, bdev_aio_delete, bdev_get_bdevs
 * (module/bdev/malloc, module/bdev/null, module/bdev/uring, module/bdev/aio,
 * lib/bdev/bdev_rpc.c). Parameter names and results are SPDK's.
 * Thread: main (reactor).
 */

import { RpcCode, RpcError, type BdevInfo, type Target } from '../../target';
import { defineMethod, paramsSchema, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

/**
 * Metadata parameters SPDK's create methods take. rpc.py always sends
 * `dif_is_head_of_md: false` (and `md_interleave: false` for malloc) because
 * they are store_true flags; vhostd bdevs have no metadata, so md_size and
 * dif_type are accepted only as 0, and the two flags, meaningless without
 * metadata (as in SPDK), are accepted and have no effect.
 */
interface MetadataParams {
  md_size?: number;
  dif_type?: number;
  dif_is_head_of_md?: boolean;
}

function refuseMetadata(p: MetadataParams): void {
  if (p.md_size !== undefined && p.md_size !== 0) {
    throw new RpcError(RpcCode.Invalid, 'params.md_size: metadata is not supported (only 0)');
  }
  if (p.dif_type !== undefined && p.dif_type !== 0) {
    throw new RpcError(RpcCode.Invalid, 'params.dif_type: protection information is not supported (only 0)');
  }
}

interface MallocCreateParams extends MetadataParams {
  name?: string;
  num_blocks: number;
  block_size: number;
  uuid?: string;
  md_interleave?: boolean;
}

interface NullCreateParams extends MetadataParams {
  name: string;
  num_blocks: number;
  block_size: number;
  uuid?: string;
}

interface UringCreateParams {
  name: string;
  filename: string;
  block_size?: number;
  uuid?: string;
}

interface AioCreateParams {
  name: string;
  filename: string;
  block_size?: number;
  readonly?: boolean;
  fallocate?: boolean;
  uuid?: string;
  /** RWF_NOWAIT for block devices; rpc.py sends `false` always. */
  nowait?: boolean;
}

interface NameParams {
  name: string;
}

interface GetBdevsParams {
  name?: string;
  /** ms to wait for the named bdev to appear */
  timeout?: number;
}

const metadataSchema = { md_size: s.u32(), dif_type: s.i32(), dif_is_head_of_md: s.boolean() };

/** How often bdev_get_bdevs looks again for a bdev it waits for. */
const BDEV_WAIT_POLL_MS = 10;

/**
 * bdev_get_bdevs with a name and a timeout: SPDK waits up to `timeout` ms for
 * the bdev to be registered (spdk_bdev_open_async) and then fails with -19.
 */
async function getBdevsWaiting(target: Target, name: string, timeoutMs: number): Promise<BdevInfo[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return target.getBdevs(name);
    } catch (err) {
      const remaining = deadline - Date.now();
      if (!(err instanceof RpcError) || err.code !== RpcCode.NoDevice || remaining <= 0) throw err;
      await new Promise((resolve) => setTimeout(resolve, Math.min(BDEV_WAIT_POLL_MS, remaining)));
    }
  }
}

export function bdevMethods(ctx: MethodContext): RpcMethod[] {
  const { target } = ctx;
  return [
    defineMethod<MallocCreateParams>(
      'bdev_malloc_create',
      paramsSchema(
        { num_blocks: s.u64(), block_size: s.u32() },
        { name: s.string(), uuid: s.uuid(), md_interleave: s.boolean(), ...metadataSchema },
      ),
      (p) => {
        refuseMetadata(p);
        return target.createMallocBdev({ name: p.name, numBlocks: p.num_blocks, blockSize: p.block_size, uuid: p.uuid });
      },
    ),

    defineMethod<NameParams>('bdev_malloc_delete', paramsSchema({ name: s.string() }), async (p) => {
      await target.deleteBdev('malloc', p.name);
      return true;
    }),

    defineMethod<NullCreateParams>(
      'bdev_null_create',
      paramsSchema({ name: s.string(), num_blocks: s.u64(), block_size: s.u32() }, { uuid: s.uuid(), ...metadataSchema }),
      (p) => {
        refuseMetadata(p);
        return target.createNullBdev({ name: p.name, numBlocks: p.num_blocks, blockSize: p.block_size, uuid: p.uuid });
      },
    ),

    defineMethod<NameParams>('bdev_null_delete', paramsSchema({ name: s.string() }), async (p) => {
      await target.deleteBdev('null', p.name);
      return true;
    }),

    defineMethod<UringCreateParams>(
      'bdev_uring_create',
      paramsSchema({ name: s.string(), filename: s.string() }, { block_size: s.u32(), uuid: s.uuid() }),
      (p) => {
        return target.createUringBdev({ name: p.name, filename: p.filename, blockSize: p.block_size || undefined, uuid: p.uuid });
      },
    ),

    defineMethod<NameParams>('bdev_uring_delete', paramsSchema({ name: s.string() }), async (p) => {
      await target.deleteBdev('uring', p.name);
      return true;
    }),

    defineMethod<AioCreateParams>(
      'bdev_aio_create',
      paramsSchema(
        { name: s.string(), filename: s.string() },
        { block_size: s.u32(), readonly: s.boolean(), fallocate: s.boolean(), uuid: s.uuid(), nowait: s.boolean() },
      ),
      (p) => {
        if (p.nowait === true) throw new RpcError(RpcCode.Invalid, 'params.nowait: RWF_NOWAIT is not supported');
        return target.createAioBdev({
          name: p.name,
          filename: p.filename,
          blockSize: p.block_size || undefined,
          readonly: p.readonly,
          fallocate: p.fallocate,
          uuid: p.uuid,
        });
      },
    ),

    defineMethod<NameParams>('bdev_aio_delete', paramsSchema({ name: s.string() }), async (p) => {
      await target.deleteBdev('aio', p.name);
      return true;
    }),

    defineMethod<GetBdevsParams>('bdev_get_bdevs', paramsSchema({}, { name: s.string(), timeout: s.u64() }), (p) => {
      // As in SPDK, the timeout only applies when a name is given.
      if (p.name !== undefined && p.timeout !== undefined && p.timeout > 0) {
        return getBdevsWaiting(target, p.name, p.timeout);
      }
      return target.getBdevs(p.name);
    }),
  ];
}
