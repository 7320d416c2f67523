/**
 * The virtio-scsi device model, reactor half: eight targets (0-7), each LUN 0
 * over one bdev, that come and go while the controller lives
 * (vhost_scsi_controller_add_target / remove_target, and the deletion of a
 * bdev a target uses, which hot-removes the target as SPDK does); the
 * features offered (HOTPLUG, CHANGE; no T10 PI, no INOUT); the config space
 * (QEMU's vhost-user-scsi-pci builds its own and never asks); the engine
 * payload; backend_specific.scsi and the save_config calls in SPDK's shapes.
 * Thread: main (reactor).
 */
import type { ScsiModelDesc } from '../../../engine/control';
import { SCSI_CDB_SIZE, SCSI_EVENT_SIZE, SCSI_MAX_TARGETS, SCSI_SENSE_SIZE, ScsiFeature, VirtioFeature } from '../../../engine/virtio/spec';
import type { ConfigCall } from '../../bdev/module';
import type { Bdev } from '../../bdev/registry';
import { ErrorCode, VhostdError } from '../../errors';
import { logger, type Logger } from '../../log';
import type { DeviceModel, ModelHost } from '../model';

const log = logger('vhost_scsi');

/** Request queues offered beyond the control and event queues. */
export const SCSI_MAX_REQUEST_QUEUES = 32;

const bit = (n: number): bigint => 1n << BigInt(n);

export const SCSI_FEATURES =
  bit(ScsiFeature.Hotplug) | bit(ScsiFeature.Change) | bit(VirtioFeature.RingIndirectDesc) | bit(VirtioFeature.RingEventIdx) | bit(VirtioFeature.Version1);

/** struct virtio_scsi_config (virtio 1.2 §5.6.4): 36 bytes, little-endian. */
const SCSI_CONFIG_SIZE = 36;
/** Data segments per command the engine takes (engine/virtio-scsi: SCSI_SEG_MAX), and the largest transfer in 512-byte sectors (4 MiB, the LU's limit). */
const SEG_MAX = 126;
const MAX_SECTORS = 8192;

/**
 * SCSI device ids, process-wide as SPDK's spdk_scsi_dev table: each target
 * takes the lowest free one (backend_specific.scsi[].id).
 */
const usedIds = new Set<number>();
function takeId(): number {
  let id = 0;
  while (usedIds.has(id)) id++;
  usedIds.add(id);
  return id;
}

interface TargetState {
  bdev: Bdev;
  id: number;
  /** Being removed: still holds its number and its bdev until the device let go. */
  removing: boolean;
  /** Settles when the removal has (set with `removing`). */
  removal: Promise<void> | null;
}

export class ScsiModel implements DeviceModel {
  readonly kind = 'scsi' as const;
  readonly subsystem = 'vhost_scsi';
  readonly log: Logger = log;
  readonly features = SCSI_FEATURES;
  readonly maxQueues = 2 + SCSI_MAX_REQUEST_QUEUES;
  readonly configChangeOnResize = false;
  /** QEMU's vhost-user-scsi builds its config space itself and warns when CONFIG is offered (SPDK's vhost-scsi does not offer it). */
  readonly configSpaceOffered = false;
  /**
   * QEMU's vhost-user-scsi keeps an in-flight region and reconnects since 8.2
   * (`-chardev socket,...,reconnect-ms=N`): a restart loses nothing. QEMU 7.2's
   * takes the region too but cannot reconnect vhost-user-scsi.
   */
  readonly inflightShmfd = true;
  private readonly targets: (TargetState | null)[] = new Array<TargetState | null>(SCSI_MAX_TARGETS).fill(null);

  /** Every bdev a target uses (those being removed too: the device still holds them), by target number. */
  get bdevs(): readonly Bdev[] {
    const out: Bdev[] = [];
    for (const t of this.targets) if (t !== null) out.push(t.bdev);
    return out;
  }

  /** The target numbers present (not being removed). */
  get targetNumbers(): number[] {
    const out: number[] = [];
    this.targets.forEach((t, i) => {
      if (t !== null && !t.removing) out.push(i);
    });
    return out;
  }

  configSpace(): Uint8Array {
    const buf = new Uint8Array(SCSI_CONFIG_SIZE);
    const v = new DataView(buf.buffer);
    v.setUint32(0, SCSI_MAX_REQUEST_QUEUES, true); // num_queues
    v.setUint32(4, SEG_MAX, true); // seg_max
    v.setUint32(8, MAX_SECTORS, true); // max_sectors
    v.setUint32(12, 128, true); // cmd_per_lun
    v.setUint32(16, SCSI_EVENT_SIZE, true); // event_info_size
    v.setUint32(20, SCSI_SENSE_SIZE, true); // sense_size
    v.setUint32(24, SCSI_CDB_SIZE, true); // cdb_size
    v.setUint16(28, 0, true); // max_channel
    v.setUint16(30, SCSI_MAX_TARGETS - 1, true); // max_target
    v.setUint32(32, 0, true); // max_lun: LUN 0 only
    return buf;
  }

  /** Only sense_size (20) and cdb_size (24) are writable (§5.6.4); vhostd keeps the defaults, so only they are accepted. */
  writeConfigSpace(offset: number, data: Uint8Array): boolean {
    const cur = this.configSpace();
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      if (at >= 20 && at < 28 && cur[at] !== data[i]) return false;
    }
    return true;
  }

  payload(): ScsiModelDesc {
    const targets: ScsiModelDesc['targets'] = [];
    let index = 0;
    this.targets.forEach((t, target) => {
      if (t === null) return;
      // A target being removed is not started again (the device it was leaving is gone).
      if (!t.removing) targets.push({ target, bdev: index, identifier: t.bdev.uuid });
      index++;
    });
    return { kind: 'scsi', targets };
  }

  backendSpecific(): Record<string, unknown> {
    const scsi: unknown[] = [];
    this.targets.forEach((t, i) => {
      if (t === null || t.removing) return;
      scsi.push({ scsi_dev_num: i, id: t.id, target_name: `Target ${i}`, luns: [{ id: 0, bdev_name: t.bdev.name }] });
    });
    return { scsi };
  }

  createCall(ctrlr: string, cpumask: string): ConfigCall {
    return { method: 'vhost_create_scsi_controller', params: { ctrlr, cpumask, delay: true } };
  }

  /** SPDK's vhost_scsi_write_config_json: create with delay, one add_target per target, start. */
  configCalls(ctrlr: string, cpumask: string): ConfigCall[] {
    const calls = [this.createCall(ctrlr, cpumask)];
    for (const i of this.targetNumbers) {
      calls.push({ method: 'vhost_scsi_controller_add_target', params: { ctrlr, scsi_target_num: i, bdev_name: (this.targets[i] as TargetState).bdev.name } });
    }
    calls.push({ method: 'vhost_start_scsi_controller', params: { ctrlr } });
    return calls;
  }

  /**
   * vhost_scsi_controller_add_target: LUN 0 of target `num` (-1: the first
   * free) over `bdev`; a running device gets it at once (the guest is told
   * with a RESCAN event). Returns the target number.
   */
  async addTarget(host: ModelHost, num: number, bdev: Bdev): Promise<number> {
    if (num < 0) {
      num = this.targets.findIndex((t) => t === null);
      if (num < 0) throw new VhostdError(ErrorCode.InvalidParams, `${host.name}: all SCSI target slots are already in use`);
    } else if (num >= SCSI_MAX_TARGETS) {
      throw new VhostdError(ErrorCode.InvalidParams, `${host.name}: SCSI target number is too big (got ${num}, max ${SCSI_MAX_TARGETS - 1})`);
    }
    if (this.targets[num] !== null) throw new VhostdError(ErrorCode.InvalidParams, `${host.name}: SCSI target ${num} already occupied`);
    if (this.targets.some((t) => t !== null && t.bdev === bdev)) {
      throw new VhostdError(ErrorCode.Busy, `bdev ${bdev.name} is already used by target ${this.targets.findIndex((t) => t?.bdev === bdev)} of ${host.name}`);
    }
    host.claimBdev(bdev);
    const state: TargetState = { bdev, id: takeId(), removing: false, removal: null };
    this.targets[num] = state;
    const target = num;
    try {
      await host.modelChanged((describe) => ({ kind: 'scsiAddTarget', target, bdev: describe(bdev), identifier: bdev.uuid }));
    } catch (err) {
      if (this.targets[target] === state) this.targets[target] = null;
      usedIds.delete(state.id);
      if (!this.bdevs.includes(bdev)) host.releaseBdev(bdev);
      throw err;
    }
    log.info('SCSI target added', { ctrlr: host.name, target, bdev: bdev.name });
    return target;
  }

  /**
   * vhost_scsi_controller_remove_target: a running device answers
   * BAD_TARGET for it at once, tells the guest (REMOVED), lets its
   * outstanding commands complete and closes the bdev; then the bdev is
   * released. ERR_INVALID_PARAMS for a bad or absent target, or one being removed.
   */
  async removeTarget(host: ModelHost, num: number): Promise<void> {
    if (!Number.isInteger(num) || num < 0 || num >= SCSI_MAX_TARGETS) {
      throw new VhostdError(ErrorCode.InvalidParams, `${host.name}: invalid SCSI target number ${num}`);
    }
    const state = this.targets[num];
    if (state === null || state.removing) throw new VhostdError(ErrorCode.InvalidParams, `${host.name}: SCSI target ${num} is not present`);
    state.removing = true;
    state.removal = (async () => {
      try {
        await host.modelChanged(() => ({ kind: 'scsiRemoveTarget', target: num }));
      } finally {
        this.targets[num] = null;
        usedIds.delete(state.id);
        host.releaseBdev(state.bdev);
      }
    })();
    await state.removal;
    log.info('SCSI target removed', { ctrlr: host.name, target: num, bdev: state.bdev.name });
  }

  /** The bdev is being deleted: hot-remove the target that uses it (SPDK's vhost_scsi_lun_hotremove). */
  async hotRemove(bdev: Bdev, host: ModelHost): Promise<void> {
    const num = this.targets.findIndex((t) => t !== null && t.bdev === bdev);
    if (num < 0) return;
    const state = this.targets[num] as TargetState;
    if (state.removal !== null) {
      // Already on its way out: wait until it is gone.
      await state.removal.catch(() => undefined);
      return;
    }
    await this.removeTarget(host, num);
  }

  /** The controller is deleted: give back the SCSI device ids. */
  release(): void {
    for (const t of this.targets) if (t !== null) usedIds.delete(t.id);
  }
}
