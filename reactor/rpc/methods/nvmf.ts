/**
 * Methods of SPDK's nvmf subsystem (VFIOUSER transport) and the seed-era
 * vhost-nvme methods: see reactor/nvmf/methods.ts. Thread: main (reactor).
 */
import { nvmfMethods as methods } from '../../nvmf/methods';
import type { RpcMethod } from '../schema';
import type { MethodContext } from './context';

export function nvmfMethods(ctx: MethodContext): RpcMethod[] {
  return methods(ctx.services.nvmf, ctx.services.bdevs);
}
