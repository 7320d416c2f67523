/**
 * Methods of SPDK's vhost subsystem (lib/vhost/vhost_rpc.c): each device
 * type's create method (reactor/vhost/types.ts: vhost_create_blk_controller),
 * then vhost_get_controllers and vhost_delete_controller, which work on a
 * controller of any type. Thread: main (reactor).
 */

import { DEVICE_TYPES } from '../../vhost/types';
import { defineMethod, paramsSchema, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

interface CtrlrParams {
  ctrlr: string;
}

interface GetControllersParams {
  name?: string;
}

export function vhostMethods(ctx: MethodContext): RpcMethod[] {
  const { services } = ctx;
  return [
    ...DEVICE_TYPES.flatMap((d) => d.methods(services.vhost, services.bdevs)),

    defineMethod<GetControllersParams>('vhost_get_controllers', paramsSchema({}, { name: s.string() }), (p) => services.vhost.infos(p.name)),

    defineMethod<CtrlrParams>('vhost_delete_controller', paramsSchema({ ctrlr: s.string() }), async (p) => {
      await services.vhost.delete(p.ctrlr);
      return true;
    }),
  ];
}
