/**
 * Methods of SPDK's vhost subsystem that vhostd implements so far:
 * vhost_create_blk_controller, vhost_get_controllers, vhost_delete_controller
 * (lib/vhost/vhost_rpc.c, lib/vhost/vhost_blk.c). Thread: main (reactor).
 */

import { ErrorCode, VhostdError } from '../../errors';
import { BlkModel, VHOST_USER_BLK_TRANSPORT } from '../../vhost/blk/model';
import { defineMethod, paramsSchema, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

export { VHOST_USER_BLK_TRANSPORT };

interface CreateBlkParams {
  ctrlr: string;
  dev_name: string;
  cpumask?: string;
  readonly?: boolean;
  packed_ring?: boolean;
  /** Older SPDK releases' option; only meaningful with packed rings. */
  packed_ring_recovery?: boolean;
  transport?: string;
}

interface CtrlrParams {
  ctrlr: string;
}

interface GetControllersParams {
  name?: string;
}

export function vhostMethods(ctx: MethodContext): RpcMethod[] {
  const { services } = ctx;
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
        },
      ),
      async (p) => {
        if (p.packed_ring === true) {
          throw new VhostdError(ErrorCode.Invalid, 'params.packed_ring: packed virtqueues are not supported yet');
        }
        if (p.transport !== undefined && p.transport !== VHOST_USER_BLK_TRANSPORT) {
          throw new VhostdError(ErrorCode.Invalid, `params.transport: unknown transport ${JSON.stringify(p.transport)} (only ${VHOST_USER_BLK_TRANSPORT})`);
        }
        await services.vhost.create(p.ctrlr, p.cpumask, () => new BlkModel(services.bdevs.require(p.dev_name), p.readonly ?? false));
        return true;
      },
    ),

    defineMethod<GetControllersParams>('vhost_get_controllers', paramsSchema({}, { name: s.string() }), (p) =>
      services.vhost.infos(p.name),
    ),

    defineMethod<CtrlrParams>('vhost_delete_controller', paramsSchema({ ctrlr: s.string() }), async (p) => {
      await services.vhost.delete(p.ctrlr);
      return true;
    }),
  ];
}
