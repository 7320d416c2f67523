/**
 * framework_set_scheduler / framework_get_scheduler (SPDK's lib/event
 * scheduler, issue #12 item 3). `static` (the default) leaves every device
 * where placement put it. `dynamic` looks, every `period` µs, at each
 * engine worker's busy time over the period (the workers' busy/idle
 * counters) and at each device's activity (interrupts signalled, requests
 * in flight), and moves devices between the cores of their masks with
 * Controller.move(), which loses and reorders no I/O:
 *
 * - an idle device (no completion and nothing in flight during the period)
 *   on a core other than the first of its mask goes to that first core:
 *   idle devices gather, so the other cores have nothing to do (in adaptive
 *   or interrupt mode they then sleep; SPDK moves idle threads to its main
 *   core the same way);
 * - on a core busier than `core_busy` % with more than one active device,
 *   the least active of them goes to the least busy core of its mask that
 *   is below `core_limit` % (the busy core keeps its heaviest device, the
 *   light one leaves); `load_limit` % is the busy share below which a core
 *   counts as idle and is the preferred target.
 *
 * At most one move per device per period. Devices with spread queues are
 * not moved (their queues already sit on fixed cores). Thread: main.
 */
import { ErrorCode, VhostdError } from './errors';
import { logger } from './log';

const log = logger('app');

export interface SchedulerInfo {
  scheduler_name: 'static' | 'dynamic';
  /** µs */
  scheduler_period: number;
  load_limit?: number;
  core_limit?: number;
  core_busy?: number;
}

export interface SchedulerParams {
  name: string;
  period?: number;
  load_limit?: number;
  core_limit?: number;
  core_busy?: number;
  mappings?: string;
}

/** A device as the scheduler sees it (Controller implements it). */
export interface SchedDevice {
  readonly name: string;
  /** The core it runs on, -1 when stopped. */
  readonly core: number;
  readonly cores: readonly number[];
  readonly spreadQueues: boolean;
  activity(): { callSignals: number; inflight: number };
  move(toCore: number): Promise<boolean>;
}

/** What the scheduler reads and moves (App gives it). */
export interface SchedulerEnv {
  cores: readonly number[];
  /** Busy and idle ns of a core's worker so far. */
  ticks(core: number): { busyNs: number; idleNs: number };
  devices(): SchedDevice[];
}

export const DEFAULT_PERIOD_US = 1_000_000;
export const DEFAULT_LOAD_LIMIT = 20;
export const DEFAULT_CORE_LIMIT = 80;
export const DEFAULT_CORE_BUSY = 95;

/** One decision: move `device` to `to`. */
export interface Move {
  device: SchedDevice;
  to: number;
  why: 'idle' | 'busy';
}

/**
 * The dynamic policy as a pure function (for tests): per-core busy % over
 * the period and per-device activity deltas in, moves out.
 */
export function planMoves(
  busyPct: ReadonlyMap<number, number>,
  devices: { device: SchedDevice; active: boolean; weight: number }[],
  limits: { loadLimit: number; coreLimit: number; coreBusy: number },
): Move[] {
  const moves: Move[] = [];
  const moved = new Set<SchedDevice>();
  for (const d of devices) {
    const dev = d.device;
    if (dev.core < 0 || dev.spreadQueues || dev.cores.length < 2) continue;
    const home = dev.cores[0];
    if (!d.active && dev.core !== home) {
      moves.push({ device: dev, to: home, why: 'idle' });
      moved.add(dev);
    }
  }
  const load = new Map(busyPct);
  for (const [core, pct] of busyPct) {
    if (pct <= limits.coreBusy) continue;
    const here = devices.filter((d) => d.device.core === core && d.active && !moved.has(d.device));
    if (here.length < 2) continue;
    here.sort((a, b) => a.weight - b.weight);
    for (const d of here.slice(0, here.length - 1)) {
      const dev = d.device;
      if (dev.spreadQueues || dev.cores.length < 2) continue;
      let best = -1;
      let bestPct = Infinity;
      for (const c of dev.cores) {
        const p = load.get(c);
        if (c === core || p === undefined || p >= limits.coreLimit) continue;
        // Below load_limit a core counts as idle: any such core beats a busier one.
        const rank = p < limits.loadLimit ? p - 1000 : p;
        if (rank < bestPct) {
          best = c;
          bestPct = rank;
        }
      }
      if (best < 0) continue;
      moves.push({ device: dev, to: best, why: 'busy' });
      moved.add(dev);
      // The target's load grows by the device's share; one move per busy core per period.
      load.set(best, (load.get(best) ?? 0) + pct / here.length);
      break;
    }
  }
  return moves;
}

export class Scheduler {
  private name: 'static' | 'dynamic' = 'static';
  private periodUs = DEFAULT_PERIOD_US;
  private loadLimit = DEFAULT_LOAD_LIMIT;
  private coreLimit = DEFAULT_CORE_LIMIT;
  private coreBusy = DEFAULT_CORE_BUSY;
  private timer: NodeJS.Timeout | null = null;
  private lastTicks = new Map<number, { busyNs: number; idleNs: number }>();
  private lastActivity = new Map<string, number>();
  private running = false;
  /** Moves made so far (for tests and logs). */
  moveCount = 0;

  constructor(private readonly env: SchedulerEnv) {}

  /** framework_set_scheduler. Throws ERR_INVALID for an unknown name or a limit outside 0..100. */
  set(p: SchedulerParams): void {
    if (p.name !== 'static' && p.name !== 'dynamic') {
      throw new VhostdError(ErrorCode.Invalid, `scheduler ${JSON.stringify(p.name)} not found (static, dynamic)`);
    }
    if (p.mappings !== undefined && p.name !== 'static') throw new VhostdError(ErrorCode.Invalid, 'mappings apply to the static scheduler only');
    if (p.mappings !== undefined) throw new VhostdError(ErrorCode.Invalid, 'mappings: threads are not mapped by hand in vhostd (controllers have cpumasks)');
    for (const k of ['load_limit', 'core_limit', 'core_busy'] as const) {
      const v = p[k];
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 100)) throw new VhostdError(ErrorCode.Invalid, `${k} must be a percentage 0..100`);
    }
    if (p.period !== undefined && (!Number.isInteger(p.period) || p.period <= 0)) throw new VhostdError(ErrorCode.Invalid, 'period must be a positive number of microseconds');
    this.name = p.name;
    if (p.period !== undefined) this.periodUs = p.period;
    if (p.load_limit !== undefined) this.loadLimit = p.load_limit;
    if (p.core_limit !== undefined) this.coreLimit = p.core_limit;
    if (p.core_busy !== undefined) this.coreBusy = p.core_busy;
    this.restart();
    log.info('scheduler set', { name: this.name, periodUs: this.periodUs, loadLimit: this.loadLimit, coreLimit: this.coreLimit, coreBusy: this.coreBusy });
  }

  get(): SchedulerInfo {
    const info: SchedulerInfo = { scheduler_name: this.name, scheduler_period: this.periodUs };
    if (this.name === 'dynamic') {
      info.load_limit = this.loadLimit;
      info.core_limit = this.coreLimit;
      info.core_busy = this.coreBusy;
    }
    return info;
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private restart(): void {
    this.close();
    if (this.name !== 'dynamic') return;
    this.sample();
    this.timer = setInterval(() => void this.tick(), Math.max(1, Math.round(this.periodUs / 1000)));
    this.timer.unref();
  }

  /** Take the counters now; returns per-core busy % and per-device activity since the last sample. */
  private sample(): { busyPct: Map<number, number>; devices: { device: SchedDevice; active: boolean; weight: number }[] } {
    const busyPct = new Map<number, number>();
    for (const core of this.env.cores) {
      let t: { busyNs: number; idleNs: number };
      try {
        t = this.env.ticks(core);
      } catch {
        continue; // no engine yet (set under --wait-for-rpc, before framework_start_init)
      }
      const prev = this.lastTicks.get(core);
      this.lastTicks.set(core, t);
      if (prev === undefined) continue;
      const busy = t.busyNs - prev.busyNs;
      const total = busy + (t.idleNs - prev.idleNs);
      busyPct.set(core, total > 0 ? (100 * busy) / total : 0);
    }
    const devices = this.env.devices().map((device) => {
      const a = device.activity();
      const prev = this.lastActivity.get(device.name);
      this.lastActivity.set(device.name, a.callSignals);
      const weight = prev === undefined ? 0 : a.callSignals - prev;
      return { device, active: prev === undefined || weight > 0 || a.inflight > 0, weight };
    });
    return { busyPct, devices };
  }

  /** One period (public for tests). */
  async tick(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      const { busyPct, devices } = this.sample();
      const moves = planMoves(busyPct, devices, { loadLimit: this.loadLimit, coreLimit: this.coreLimit, coreBusy: this.coreBusy });
      let n = 0;
      for (const m of moves) {
        try {
          if (await m.device.move(m.to)) {
            n++;
            log.info('scheduler moved a device', { ctrlr: m.device.name, to: m.to, why: m.why });
          }
        } catch (err) {
          log.error('scheduler move failed', { ctrlr: m.device.name, to: m.to, err: String((err as Error)?.message ?? err) });
        }
      }
      this.moveCount += n;
      return n;
    } finally {
      this.running = false;
    }
  }
}
