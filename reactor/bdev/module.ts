/**
 * The reactor half of a bdev module ('malloc', 'null', 'uring', 'aio', ...):
 * everything the main thread knows of one kind of bdev — its RPC methods,
 * how bdev_get_bdevs describes it, the call that recreates it (save_config)
 * and the BdevDesc params its engine half needs. One descriptor per module,
 * in modules/bdev/<name>/reactor.ts, listed in reactor/bdev/modules.ts. The
 * generic registry (registry.ts) owns what every bdev has: name, uuid,
 * geometry checks, QoS, statistics, claims, events.
 * Thread: main (reactor).
 */
import type { IoTypeSet } from '../../modules/bdev/io-types';
import type { RpcMethod } from '../rpc/schema';
import { s } from '../rpc/schema';
import { ErrorCode, VhostdError } from '../errors';
import type { Bdev, BdevRegistry } from './registry';

/** One call of a saved configuration (SPDK's JSON config format). */
export interface ConfigCall {
  method: string;
  params: Record<string, unknown>;
}

export interface BdevModule<S = unknown> {
  /** The module's name: BdevDesc.module, the key of the engine's module table. */
  readonly name: string;
  /** bdev_get_bdevs' product_name (SPDK's). */
  readonly productName: string;
  /** The module's JSON-RPC methods (create, delete, ...), which reach bdevs through the registry. */
  methods(bdevs: BdevRegistry): RpcMethod[];
  /** The I/O types this bdev supports (bdev_get_bdevs' supported_io_types; the engine half answers from the same data). */
  ioTypes(bdev: Bdev<S>): IoTypeSet;
  /** bdev_get_bdevs' driver_specific (SPDK's dump_info_json of the module). */
  driverSpecific(bdev: Bdev<S>): Record<string, unknown>;
  /** The RPC call that recreates the bdev (save_config). */
  writeConfig(bdev: Bdev<S>): ConfigCall;
  /** BdevDesc.params: what the engine half needs to open the bdev on a worker (structured-clonable). */
  describe(bdev: Bdev<S>): unknown;
  /** Extra fields of the 'bdev created' log line (a file bdev names the kernel interface it goes through). */
  logFields?(bdev: Bdev<S>): Record<string, unknown>;
  /** Let go of what the module holds for a bdev (fds): at delete, at shutdown, or when creating it failed. */
  release?(state: S): void;
  /** Calls that set the module up before its bdevs are created (bdev_rbd_register_cluster), first in save_config's bdev subsystem. */
  writeModuleConfig?(): ConfigCall[];
  /** At shutdown, after closeAll: wait for releases still under way and close what the module shares. */
  settle?(): Promise<void>;
}

/**
 * Metadata parameters SPDK's malloc and null create methods take. rpc.py
 * always sends `dif_is_head_of_md: false` (and `md_interleave: false` for
 * malloc) because they are store_true flags; vhostd bdevs have no metadata,
 * so md_size and dif_type are accepted only as 0, and the two flags,
 * meaningless without metadata (as in SPDK), are accepted and have no effect.
 */
export interface MetadataParams {
  md_size?: number;
  dif_type?: number;
  dif_is_head_of_md?: boolean;
}

export const metadataSchema = { md_size: s.u32(), dif_type: s.i32(), dif_is_head_of_md: s.boolean() };

/**
 * physical_block_size, as SPDK's save_config writes it for malloc and null
 * bdevs (bdev->phys_blocklen, which defaults to the block size): 0 or the
 * block size is what vhostd's bdevs are; another value is refused (the
 * device would report a topology the bdev does not have).
 */
export const physicalBlockSchema = { physical_block_size: s.u32() };

export function checkPhysicalBlockSize(p: { physical_block_size?: number; block_size: number }): void {
  const pbs = p.physical_block_size;
  if (pbs !== undefined && pbs !== 0 && pbs !== p.block_size) {
    throw new VhostdError(ErrorCode.Invalid, `params.physical_block_size: ${pbs} is not supported (only 0 or block_size ${p.block_size})`);
  }
}

export function refuseMetadata(p: MetadataParams): void {
  if (p.md_size !== undefined && p.md_size !== 0) {
    throw new VhostdError(ErrorCode.Invalid, 'params.md_size: metadata is not supported (only 0)');
  }
  if (p.dif_type !== undefined && p.dif_type !== 0) {
    throw new VhostdError(ErrorCode.Invalid, 'params.dif_type: protection information is not supported (only 0)');
  }
}
