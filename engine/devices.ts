/**
 * The device types a worker can run: one factory per DeviceDesc.model.kind.
 * The poll loop looks devices up here and imports no device model itself.
 * Adding a device type: a member of ModelDesc in control.ts, a model beside
 * engine/blk/, and one line in this table (the mapped type makes a missing
 * line a compile error).
 *
 * Thread: any engine worker (the table is constant).
 */
import { createBlkDevice } from './blk/model';
import type { ModelDesc } from './control';
import type { DeviceFactory } from './device';
import { createNvmeDevice } from './nvme/device';
import { createScsiDevice } from './virtio-scsi/model';

export const deviceFactories: { readonly [K in ModelDesc['kind']]: DeviceFactory } = {
  blk: createBlkDevice,
  scsi: createScsiDevice,
  nvme: createNvmeDevice,
};

/** The factory for `kind`, or undefined for a kind this build does not know. */
export function deviceFactory(kind: string): DeviceFactory | undefined {
  return Object.prototype.hasOwnProperty.call(deviceFactories, kind) ? deviceFactories[kind as ModelDesc['kind']] : undefined;
}
