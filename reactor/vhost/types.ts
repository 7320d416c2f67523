/**
 * The device types vhostd serves over vhost-user, one line each: the SPDK
 * subsystem whose save_config lists their controllers and the RPC methods
 * that create them. Adding a device type: a folder reactor/vhost/<kind>/
 * with its DeviceModel (model.ts) and create method (methods.ts), a line
 * here, its subsystem in reactor/subsystems.ts (SUBSYSTEMS) with its writer
 * in app.ts, and its ModelDesc member in engine/control.ts.
 */
import type { BdevRegistry } from '../bdev/registry';
import type { RpcMethod } from '../rpc/schema';
import { blkMethods } from './blk/methods';
import { scsiMethods } from './scsi/methods';
import type { VhostService } from './service';

export interface DeviceType {
  /** The SPDK subsystem of its controllers ('vhost_blk'): DeviceModel.subsystem. */
  readonly subsystem: string;
  methods(vhost: VhostService, bdevs: BdevRegistry): RpcMethod[];
}

export const DEVICE_TYPES: readonly DeviceType[] = [
  { subsystem: 'vhost_blk', methods: blkMethods },
  { subsystem: 'vhost_scsi', methods: scsiMethods },
];
