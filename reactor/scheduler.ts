/**
 * The thread scheduler's setting (SPDK's framework_set_scheduler /
 * framework_get_scheduler, lib/event/scheduler_static.c). vhostd's
 * placement is SPDK's `static` scheduler: a device stays on the core it was
 * placed on when its front-end started it (reactor/placement.ts), nothing
 * moves it. The period is kept and reported as SPDK does; with `static` it
 * changes nothing. Other schedulers are refused until one is implemented.
 * Thread: main (reactor).
 */
import { ErrorCode, VhostdError } from './errors';
import { logger } from './log';

const log = logger('app');

/** SPDK's default scheduler period: 1 s. */
export const DEFAULT_SCHEDULER_PERIOD_US = 1_000_000;

export interface SchedulerInfo {
  scheduler_name: string;
  scheduler_period: number;
}

export class SchedulerSetting {
  private name = 'static';
  private periodUs = DEFAULT_SCHEDULER_PERIOD_US;

  /** framework_set_scheduler: `static` only (others: ERR_INTERNAL, -32603 as SPDK for a scheduler it cannot set). */
  set(name: string, periodUs?: number): void {
    if (name !== 'static') {
      // SPDK: spdk_scheduler_set fails (-ENOENT for a name it lacks) → -32603.
      throw new VhostdError(ErrorCode.Internal, `scheduler ${name}: vhostd has the static scheduler only (devices stay on the core they were placed on)`);
    }
    if (periodUs !== undefined && periodUs !== 0) this.periodUs = periodUs;
    this.name = name;
    log.info('scheduler set', { scheduler: name, periodUs: this.periodUs, effect: 'none: placement is static' });
  }

  info(): SchedulerInfo {
    return { scheduler_name: this.name, scheduler_period: this.periodUs };
  }
}
