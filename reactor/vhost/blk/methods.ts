/**
 * The virtio-blk device type's JSON-RPC method: vhost_create_blk_controller
 * (SPDK's lib/vhost/vhost_rpc.c), which makes a generic controller with the
 * blk model. Parameter names are SPDK's. Thread: main (reactor).
 */
import type { BdevRegistry } from '../../bdev/registry';
import { ErrorCode, VhostdError } from '../../errors';
import { defineMethod, paramsSchema, s, type RpcMethod } from '../../rpc/schema';
import type { VhostService } from '../service';
import { BlkModel, VHOST_USER_BLK_TRANSPORT } from './model';

interface CreateBlkParams {
  ctrlr: string;
  dev_name: string;
  cpumask?: string;
  readonly?: boolean;
  packed_ring?: boolean;
  /** Older SPDK releases' option; only meaningful with packed rings. */
  packed_ring_recovery?: boolean;
  transport?: string;
  /** vhostd-specific: spread the queues over the cores of the cpumask (default: all on one core, as SPDK). */
  spread_queues?: boolean;
}

export function blkMethods(vhost: VhostService, bdevs: BdevRegistry): RpcMethod[] {
  return [
    defineMethod<CreateBlkParams>(
      'vhost_create_blk_controller',
      paramsSchema(
        { ctrlr: s.fileName(), dev_name: s.string() },
        {
          cpumask: s.string(),
          readonly: s.boolean(),
          packed_ring: s.boolean(),
          packed_ring_recovery: s.boolean(),
          transport: s.string(),
          spread_queues: s.boolean(),
        },
      ),
      async (p) => {
        if (p.transport !== undefined && p.transport !== VHOST_USER_BLK_TRANSPORT) {
          throw new VhostdError(
            ErrorCode.Invalid,
            `params.transport: unknown transport ${JSON.stringify(p.transport)} (only ${VHOST_USER_BLK_TRANSPORT})`,
          );
        }
        await vhost.create(p.ctrlr, p.cpumask, () => new BlkModel(bdevs.require(p.dev_name), p.readonly ?? false, p.packed_ring ?? false), {
          spreadQueues: p.spread_queues === true,
        });
        return true;
      },
    ),
  ];
}
