/**
 * One bdev's QoS rate limits as bdev_set_qos_limit sets them (SPDK
 * lib/bdev/bdev.c spdk_bdev_set_qos_rate_limits): rw_ios_per_sec, and
 * rw/r/w_mbytes_per_sec; 0 = unlimited; a limit not given keeps its value.
 * Like SPDK, an IOPS limit that is not a multiple of 1000 (or a byte limit
 * not a multiple of 1 MiB, which MB/s always are) is rounded up, with a log
 * line, not refused. The limits are kept in a SharedArrayBuffer (QosSlot, in
 * I/Os and bytes per second) that the engine worker serving the bdev reads
 * once per 1 ms timeslice: that is where they are enforced
 * (engine/bdev/qos.ts).
 *
 * Thread: main (reactor) writes; the worker only reads.
 */
import { QosSlot } from '../../engine/control';
import { logger } from '../log';

const log = logger('bdev');

/** SPDK_BDEV_QOS_MIN_IOS_PER_SEC */
export const QOS_MIN_IOS_PER_SEC = 1000;
const MIB = 1024 * 1024;

/** bdev_set_qos_limit's parameters (undefined: leave that limit as it is). */
export interface QosLimitParams {
  rw_ios_per_sec?: number;
  rw_mbytes_per_sec?: number;
  r_mbytes_per_sec?: number;
  w_mbytes_per_sec?: number;
}

/** bdev_get_bdevs' assigned_rate_limits. */
export interface AssignedRateLimits {
  rw_ios_per_sec: number;
  rw_mbytes_per_sec: number;
  r_mbytes_per_sec: number;
  w_mbytes_per_sec: number;
}

export class BdevQosLimits {
  /** QosSlot.Count Float64 per-second limits, shared with the engine. */
  readonly buffer = new SharedArrayBuffer(QosSlot.Count * 8);
  private readonly view = new Float64Array(this.buffer);

  /** Apply the given limits (SPDK rounding); the engine picks them up within a timeslice. */
  set(bdevName: string, p: QosLimitParams): void {
    const ios = p.rw_ios_per_sec;
    if (ios !== undefined) {
      let v = ios;
      if (v % QOS_MIN_IOS_PER_SEC !== 0) {
        v += QOS_MIN_IOS_PER_SEC - (v % QOS_MIN_IOS_PER_SEC);
        log.warn('rw_ios_per_sec is not a multiple of 1000: rounded up', { bdev: bdevName, requested: ios, limit: v });
      }
      this.view[QosSlot.RwIosPerSec] = v;
    }
    if (p.rw_mbytes_per_sec !== undefined) this.view[QosSlot.RwBytesPerSec] = p.rw_mbytes_per_sec * MIB;
    if (p.r_mbytes_per_sec !== undefined) this.view[QosSlot.RBytesPerSec] = p.r_mbytes_per_sec * MIB;
    if (p.w_mbytes_per_sec !== undefined) this.view[QosSlot.WBytesPerSec] = p.w_mbytes_per_sec * MIB;
    log.info('QoS limits set', { bdev: bdevName, ...this.assigned() });
  }

  assigned(): AssignedRateLimits {
    const v = this.view;
    return {
      rw_ios_per_sec: v[QosSlot.RwIosPerSec],
      rw_mbytes_per_sec: v[QosSlot.RwBytesPerSec] / MIB,
      r_mbytes_per_sec: v[QosSlot.RBytesPerSec] / MIB,
      w_mbytes_per_sec: v[QosSlot.WBytesPerSec] / MIB,
    };
  }

  /** The call that restores these limits (save_config), or null when none is set — as SPDK's bdev_qos_config_json. */
  writeConfig(bdevName: string): { method: string; params: Record<string, unknown> } | null {
    const a = this.assigned();
    const params: Record<string, unknown> = { name: bdevName };
    let any = false;
    for (const [k, v] of Object.entries(a)) {
      if (v > 0) {
        params[k] = v;
        any = true;
      }
    }
    return any ? { method: 'bdev_set_qos_limit', params } : null;
  }
}
