/**
 * The per-core poll loop (what SPDK calls a reactor): busy-polls every
 * device placed on this worker, takes control requests synchronously from
 * the reactor's MessagePort every few iterations, accounts busy and idle
 * time, and in adaptive mode sleeps in poll(2) on its kick eventfds and wake
 * eventfd once it has been idle for idleSleepUs.
 *
 * Thread: the engine worker it runs in. run() blocks that thread until an
 * `exit` request: the worker's event loop never turns, so everything here
 * is synchronous (receiveMessageOnPort, native calls, fs.writeSync logs).
 */
import { performance } from 'node:perf_hooks';
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { Native } from '../bindings/native';
import { BlkDevice } from './blk/device';
import { type ControlReply, type ControlRequest, type DeviceDesc, type StopResult, type WorkerInit, WorkerStat } from './control';
import type { DeviceEnv, EngineDevice } from './device';
import { logger } from './log';
import { GuestMemory } from './memory';

/** The addon calls the loop uses (injectable for tests). */
export type PollerSys = Pick<Native, 'mmap' | 'munmap' | 'eventfdWrite' | 'eventfdRead' | 'pollReadable'>;

/** Control messages are looked at every this many iterations (a power of 2). */
const CONTROL_EVERY = 32;
/**
 * Idle iterations read the clock only every this many: an iteration that
 * found no work costs a few tens of ns, a clock read as much again. The
 * bound this puts on the staleness of the clock a device gets: at most
 * IDLE_CLOCK_EVERY - 1 idle iterations (well under 1 µs), which is how early
 * the start stamp of a request arriving after an idle stretch can be.
 */
const IDLE_CLOCK_EVERY = 8;
/** Longest adaptive-mode sleep; a wake eventfd write or a kick ends it sooner. */
const SLEEP_TIMEOUT_MS = 100;

interface PendingStop {
  /** Control request id to answer, or -1 (stopped because of `exit`). */
  requestId: number;
  device: EngineDevice;
}

/** Make the device a `start` request describes. Owns the guest mapping on success. */
export function createDevice(desc: DeviceDesc, sys: PollerSys): EngineDevice {
  const env: DeviceEnv = { signal: (fd) => sys.eventfdWrite(fd, 1) };
  switch (desc.kind) {
    case 'blk': {
      const mem = GuestMemory.map(desc.regions, sys);
      try {
        return new BlkDevice(desc, mem, env);
      } catch (err) {
        mem.unmap();
        throw err;
      }
    }
    default: {
      const kind: never = desc.kind;
      throw new Error(`unknown device kind ${String(kind)}`);
    }
  }
}

export class Poller {
  private running = true;
  private exitRequestId = -1;
  private readonly devices: EngineDevice[] = [];
  private readonly stopping: PendingStop[] = [];
  private readonly stats: Float64Array;
  private readonly port: MessagePort;
  private sleepFds = new Int32Array(1);
  private sleepFdCount = 0;
  private sleepFdsDirty = true;

  constructor(
    private readonly init: WorkerInit,
    private readonly sys: PollerSys,
    private readonly makeDevice: (desc: DeviceDesc, sys: PollerSys) => EngineDevice = createDevice,
  ) {
    this.port = init.port;
    this.stats = new Float64Array(init.stats, 0, WorkerStat.Count);
  }

  /**
   * The loop. Returns after an `exit` request has been answered.
   *
   * Clock: one read per busy iteration, at its end; that reading is the
   * clock the next iteration's device polls get (their submission stamps,
   * and the completion time of what the previous iteration reaped, see
   * IoStatRecorder.note). Idle iterations read it every IDLE_CLOCK_EVERY;
   * the idle iterations before a busy one are charged to idle time at the
   * per-iteration cost measured by the last all-idle sample, the rest of
   * the span to busy time.
   */
  run(): void {
    const stats = this.stats;
    const adaptive = this.init.pollMode === 'adaptive';
    const idleSleepMs = this.init.idleSleepUs / 1000;
    let iter = 0;
    let last = performance.now();
    let lastWork = last;
    /** Idle iterations since the last clock read, and the measured cost of one. */
    let idleRun = 0;
    let idleIterMs = 0;
    while (this.running) {
      let work = 0;
      const devices = this.devices;
      for (let i = 0; i < devices.length; i++) {
        const dev = devices[i];
        try {
          work += dev.poll(last);
        } catch (err) {
          dev.fail(err);
          this.sleepFdsDirty = true;
        }
      }
      if (this.stopping.length > 0) this.finishStops();
      if ((++iter & (CONTROL_EVERY - 1)) === 0) {
        stats[WorkerStat.Iterations] = iter;
        work += this.takeMessages();
      }

      if (work > 0) {
        const now = performance.now();
        let span = now - last;
        if (idleRun > 0) {
          let idle = idleRun * idleIterMs;
          if (idle > span) idle = span;
          stats[WorkerStat.IdleNs] += idle * 1e6;
          span -= idle;
          idleRun = 0;
        }
        stats[WorkerStat.BusyNs] += span * 1e6;
        last = now;
        lastWork = now;
        continue;
      }
      if (++idleRun < IDLE_CLOCK_EVERY) continue;
      const now = performance.now();
      idleIterMs = (now - last) / idleRun;
      stats[WorkerStat.IdleNs] += (now - last) * 1e6;
      idleRun = 0;
      last = now;

      if (adaptive && now - lastWork >= idleSleepMs && this.maySleep()) {
        if (this.sleep()) lastWork = performance.now();
        const after = performance.now();
        stats[WorkerStat.IdleNs] += (after - last) * 1e6;
        last = after;
      }
    }
    stats[WorkerStat.Iterations] = iter;
  }

  /** Handle one control request (public for tests that drive the poller step by step). */
  handle(req: ControlRequest): void {
    switch (req.op) {
      case 'start': {
        if (this.exitRequestId >= 0) {
          this.reply({ id: req.id, ok: false, error: 'worker is exiting', code: 'ERR_EXITING' });
          return;
        }
        if (this.devices.some((d) => d.id === req.device.id)) {
          this.reply({ id: req.id, ok: false, error: `device ${req.device.id} already runs here`, code: 'ERR_DEVICE_EXISTS' });
          return;
        }
        let dev: EngineDevice;
        try {
          dev = this.makeDevice(req.device, this.sys);
        } catch (err) {
          const e = err as { message?: unknown; code?: unknown };
          logger.error('device start failed', { device: req.device.name, err: String(e.message ?? err) });
          this.reply({
            id: req.id,
            ok: false,
            error: String(e.message ?? err),
            code: typeof e.code === 'string' ? e.code : 'ERR_DEVICE_START',
          });
          return;
        }
        this.devices.push(dev);
        this.devicesChanged();
        logger.info('device started', { device: dev.name, id: dev.id });
        this.reply({ id: req.id, ok: true });
        return;
      }
      case 'stop': {
        const dev = this.devices.find((d) => d.id === req.deviceId);
        if (!dev || this.stopping.some((s) => s.device === dev)) {
          this.reply({ id: req.id, ok: false, error: `no running device ${req.deviceId}`, code: 'ERR_NO_DEVICE' });
          return;
        }
        dev.beginStop();
        this.stopping.push({ requestId: req.id, device: dev });
        this.finishStops();
        return;
      }
      case 'resize': {
        const dev = this.devices.find((d) => d.id === req.deviceId);
        if (!dev) {
          this.reply({ id: req.id, ok: false, error: `no running device ${req.deviceId}`, code: 'ERR_NO_DEVICE' });
          return;
        }
        try {
          dev.resize(req.numBlocks);
        } catch (err) {
          this.reply({ id: req.id, ok: false, error: String((err as Error).message ?? err), code: 'ERR_RESIZE' });
          return;
        }
        logger.info('device resized', { device: dev.name, numBlocks: req.numBlocks });
        this.reply({ id: req.id, ok: true });
        return;
      }
      case 'exit': {
        this.exitRequestId = req.id;
        for (const dev of this.devices) {
          if (!this.stopping.some((s) => s.device === dev)) {
            logger.warn('exit with a device still running: stopping it', { device: dev.name });
            dev.beginStop();
            this.stopping.push({ requestId: -1, device: dev });
          }
        }
        this.finishStops();
        return;
      }
      default: {
        const unknown = req as { id?: unknown; op?: unknown };
        this.reply({
          id: typeof unknown.id === 'number' ? unknown.id : -1,
          ok: false,
          error: `unknown control op ${String(unknown.op)}`,
          code: 'ERR_UNKNOWN_OP',
        });
      }
    }
  }

  /** Devices currently on this worker (including ones being stopped). */
  get deviceCount(): number {
    return this.devices.length;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** Take every queued control request; returns how many. */
  takeMessages(): number {
    let n = 0;
    for (;;) {
      const m = receiveMessageOnPort(this.port);
      if (m === undefined) return n;
      n++;
      this.handle(m.message as ControlRequest);
    }
  }

  /** Answer the stops whose devices have drained; end the loop after `exit` once all are done. */
  private finishStops(): void {
    for (let i = 0; i < this.stopping.length; ) {
      const { requestId, device } = this.stopping[i];
      if (device.inflight > 0) {
        i++;
        continue;
      }
      this.stopping.splice(i, 1);
      this.devices.splice(this.devices.indexOf(device), 1);
      this.devicesChanged();
      let result: StopResult | null = null;
      let error: unknown = null;
      try {
        result = device.finishStop();
      } catch (err) {
        error = err;
        logger.error('device stop failed', { device: device.name, err: String(err) });
      }
      logger.info('device stopped', { device: device.name, id: device.id });
      if (requestId >= 0) {
        this.reply(
          result !== null
            ? { id: requestId, ok: true, result }
            : { id: requestId, ok: false, error: String(error), code: 'ERR_DEVICE_STOP' },
        );
      }
    }
    if (this.exitRequestId >= 0 && this.devices.length === 0) {
      this.running = false;
      this.reply({ id: this.exitRequestId, ok: true });
    }
  }

  private reply(r: ControlReply): void {
    this.port.postMessage(r);
  }

  private devicesChanged(): void {
    this.stats[WorkerStat.Devices] = this.devices.length;
    this.sleepFdsDirty = true;
  }

  /** Sleeping is safe only when no I/O waits for a completion that only polling would reap. */
  private maySleep(): boolean {
    if (this.stopping.length > 0) return false;
    for (const dev of this.devices) if (dev.inflight > 0) return false;
    return true;
  }

  /**
   * Adaptive mode: drain stale eventfd counts, ask the drivers for kicks,
   * re-check the rings and the port, then block in poll(2) until a kick,
   * a wake-up or the timeout; afterwards suppress kicks again. The order
   * (drain, enable, re-check, sleep) leaves no window in which a kick is lost.
   * Returns true when woken by an fd (not by the timeout) or when work was found.
   */
  private sleep(): boolean {
    if (this.sleepFdsDirty) this.collectSleepFds();
    const fds = this.sleepFds;
    const n = this.sleepFdCount;
    for (let i = 0; i < n; i++) this.sys.eventfdRead(fds[i]);
    let waiting = false;
    for (const dev of this.devices) if (dev.running && dev.setNotification(true)) waiting = true;
    let woke = waiting;
    if (!waiting && this.takeMessages() === 0 && this.running) {
      woke = this.sys.pollReadable(fds, n, SLEEP_TIMEOUT_MS) > 0;
      for (let i = 0; i < n; i++) this.sys.eventfdRead(fds[i]);
    } else {
      woke = true;
    }
    for (const dev of this.devices) if (dev.running) dev.setNotification(false);
    return woke;
  }

  private collectSleepFds(): void {
    const list: number[] = [];
    if (this.init.wakeFd >= 0) list.push(this.init.wakeFd);
    for (const dev of this.devices) if (dev.running) list.push(...dev.kickFds());
    if (this.sleepFds.length < list.length) this.sleepFds = new Int32Array(list.length);
    this.sleepFds.set(list);
    this.sleepFdCount = list.length;
    this.sleepFdsDirty = false;
  }
}
