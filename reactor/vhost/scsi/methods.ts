/**
 * The virtio-scsi device type's JSON-RPC methods, with SPDK's names,
 * parameters and results (lib/vhost/vhost_rpc.c): vhost_create_scsi_controller
 * (delay: the socket listens only after vhost_start_scsi_controller),
 * vhost_start_scsi_controller, vhost_scsi_controller_add_target (returns the
 * target number; -1 picks the first free) and
 * vhost_scsi_controller_remove_target. Thread: main (reactor).
 */
import type { BdevRegistry } from '../../bdev/registry';
import { ErrorCode, VhostdError } from '../../errors';
import { defineMethod, paramsSchema, s, type RpcMethod } from '../../rpc/schema';
import type { Controller } from '../controller';
import type { VhostService } from '../service';
import { ScsiModel } from './model';

interface CreateScsiParams {
  ctrlr: string;
  cpumask?: string;
  delay?: boolean;
}

interface AddTargetParams {
  ctrlr: string;
  scsi_target_num: number;
  bdev_name: string;
}

interface RemoveTargetParams {
  ctrlr: string;
  scsi_target_num: number;
}

/** The scsi model of controller `name`: ERR_NO_CONTROLLER, or ERR_INVALID_PARAMS when it is not a SCSI controller. */
function scsiController(vhost: VhostService, name: string): { ctrl: Controller; model: ScsiModel } {
  const ctrl = vhost.require(name);
  if (!(ctrl.model instanceof ScsiModel)) throw new VhostdError(ErrorCode.InvalidParams, `controller ${name} is not a SCSI controller`);
  return { ctrl, model: ctrl.model };
}

export function scsiMethods(vhost: VhostService, bdevs: BdevRegistry): RpcMethod[] {
  return [
    defineMethod<CreateScsiParams>(
      'vhost_create_scsi_controller',
      paramsSchema({ ctrlr: s.fileName() }, { cpumask: s.string(), delay: s.boolean() }),
      async (p) => {
        await vhost.create(p.ctrlr, p.cpumask, () => new ScsiModel(), { delay: p.delay ?? false });
        return true;
      },
    ),
    defineMethod<{ ctrlr: string }>('vhost_start_scsi_controller', paramsSchema({ ctrlr: s.string() }), (p) => {
      scsiController(vhost, p.ctrlr).ctrl.listen();
      return true;
    }),
    defineMethod<AddTargetParams>(
      'vhost_scsi_controller_add_target',
      paramsSchema({ ctrlr: s.string(), scsi_target_num: s.i32(), bdev_name: s.string() }),
      async (p) => {
        const { ctrl, model } = scsiController(vhost, p.ctrlr);
        return await model.addTarget(ctrl, p.scsi_target_num, bdevs.require(p.bdev_name));
      },
    ),
    defineMethod<RemoveTargetParams>(
      'vhost_scsi_controller_remove_target',
      paramsSchema({ ctrlr: s.string(), scsi_target_num: s.u32() }),
      async (p) => {
        const { ctrl, model } = scsiController(vhost, p.ctrlr);
        await model.removeTarget(ctrl, p.scsi_target_num);
        return true;
      },
    ),
  ];
}
