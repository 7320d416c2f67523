/**
 * The per-core poll loop (what SPDK calls a reactor): busy-polls every
 * device placed on this worker, takes control requests synchronously from
 * the reactor's MessagePort every few iterations, accounts busy and idle
 * time, and in adaptive mode (once it has been idle for idleSleepUs, or
 * after a short spin while bdev I/O that signals a completion eventfd is in
 * flight: see wantsSleep) or interrupt mode (as soon as an iteration finds nothing)
 * sleeps in poll(2)
 * on its kick eventfds, its bdev completion eventfds (io_uring / AIO) and its
 * wake eventfd, with guest notifications re-enabled and every source
 * re-checked after enabling (no lost kick, no lost completion).
 *
 * Thread: the engine worker it runs in. run() blocks that thread until an
 * `exit` request: the worker's event loop never turns, so everything here
 * is synchronous (receiveMessageOnPort, native calls, fs.writeSync logs).
 */
import { performance } from 'node:perf_hooks';
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { Native } from '../bindings/native';
import type { BdevLayer } from './bdev/layer';
import { type ControlReply, type ControlRequest, type DeviceFailedEvent, type PollMode, type QueueDesc, type RegionDesc, type WorkerInit, WorkerStat, type ModelOp } from './control';
import type { DeviceEnv, DeviceFactory, EngineDevice } from './device';
import { deviceFactory } from './devices';
import { logger } from './log';
import { GuestMemory } from './memory';

/** The addon calls the loop uses (injectable for tests). */
export type PollerSys = Pick<Native, 'mmap' | 'munmap' | 'eventfdWrite' | 'eventfdRead' | 'pollReadable' | 'yieldCpu'>;

/** Control messages are looked at every this many iterations (a power of 2). */
const CONTROL_EVERY = 32;
/**
 * Idle iterations read the clock only every this many: an iteration that
 * found no work costs a few tens of ns, a clock read as much again. The
 * bound this puts on the staleness of the clock a device gets: at most
 * IDLE_CLOCK_EVERY - 1 idle iterations (well under 1 µs), which is how early
 * the start stamp of a request arriving after an idle stretch can be.
 */
export const IDLE_CLOCK_EVERY = 8;
/**
 * Longest sleep; a wake eventfd write, a kick or a completion ends it
 * sooner. It bounds what an unsignalled event could cost (none is expected:
 * this is a safety net, not a poll period; SPDK's interrupt-mode reactor
 * has none). Each wake-up costs an idle worker ~0.3 ms of CPU (cold caches
 * and TLB after the sleep, the slice's event-loop turn): at 100 ms that was
 * ~0.3 % of a core per idle worker, nearly all of an idle vhostd's CPU;
 * at 1 s it is ~0.03 %.
 */
const SLEEP_TIMEOUT_MS = 1000;
/**
 * A slice of the loop lasts this long before the worker turns its event loop
 * once (runSlice). A turn with nothing queued costs some µs; the bound keeps
 * what node defers to the event loop (native finalizers, V8 tasks) from
 * piling up.
 */
const YIELD_EVERY_MS = 100;

/**
 * A control op on a running device. Ops of one device run in the order they
 * came: one begins only when the ops before it have finished (so a queue
 * started after a memUpdate is set up in the new memory); stop, queueStop
 * and memUpdate then wait for in-flight I/O before they finish and reply.
 */
type DeviceOp = { requestId: number; device: EngineDevice; begun: boolean } & (
  /** requestId -1: stopped because of `exit`. */
  | { kind: 'stop' }
  | { kind: 'queueStop'; index: number }
  | { kind: 'memUpdate'; regions: RegionDesc[] }
  | { kind: 'queueStart'; queue: QueueDesc }
  | { kind: 'setCallFd'; index: number; callFd: number }
  /** A model change: `outcome` is set by the device's callback (undefined while it runs). */
  | { kind: 'modelOp'; op: ModelOp }
);

/** Finds the factory of a device kind (engine/devices.ts; injectable for tests). */
export type FactoryLookup = (kind: string) => DeviceFactory | undefined;

/**
 * May an idle stretch end in a sleep? (Whether it is safe is the layer's and
 * the devices' say: Poller.sleepLimitMs, and the re-check in sleep().)
 * - 'poll': never.
 * - 'interrupt': always.
 * - 'adaptive': once idle for idleSleepMs (the spin is a bet on the guest's
 *   next request arriving soon), or sooner while bdev I/O is in flight: then
 *   the worker waits on storage, whose completion eventfd wakes it as
 *   interrupt mode's does. For a disk, after IO_WAIT_SPIN_MS without a
 *   completion: the short spin keeps a fast device's completions (an NVMe
 *   SSD's tens of microseconds) on the polled path, without a wake-up's
 *   latency. When all of that I/O is in librbd (`helperInFlight` ===
 *   `bdevInFlight`), at once: an RBD request takes a network round trip and
 *   the OSD's work (100 µs and more), and the librbd threads that complete
 *   it may need this very core, so a spin only delays them. A guest request
 *   arriving meanwhile kicks (notifications are on while asleep).
 * Exported for tests.
 */
export function wantsSleep(mode: PollMode, idleMs: number, idleSleepMs: number, bdevInFlight: number, helperInFlight = 0): boolean {
  if (mode === 'interrupt') return true;
  if (mode !== 'adaptive') return false;
  if (idleMs >= idleSleepMs) return true;
  return bdevInFlight > 0 && (helperInFlight === bdevInFlight || idleMs >= IO_WAIT_SPIN_MS);
}

/**
 * Poll mode, idle, with I/O in flight on a module whose I/O completes on
 * helper threads of this process (librbd's messenger and finisher threads,
 * BdevModuleEngine.completesOnHelperThreads): the worker calls sched_yield()
 * every IDLE_CLOCK_EVERY idle iterations. It never sleeps (guest requests
 * are still polled between yields), but a runnable librbd thread on its core
 * gets the CPU at once instead of waiting for the poller's time slice to end
 * — the busy loop otherwise competed with the very threads it waited for
 * (SPDK gives librbd other cores with bdev_rbd's core_mask; vhostd has that
 * too, and this for when it shares the core). Without such I/O, or when
 * nothing else is runnable there, sched_yield returns at once.
 */
export function yieldsToHelpers(mode: PollMode, helperInFlight: number): boolean {
  return mode === 'poll' && helperInFlight > 0;
}

/** How long an adaptive worker spins on in-flight bdev I/O before it sleeps on its completion eventfds (wantsSleep). */
export const IO_WAIT_SPIN_MS = 0.05;

function errorReply(id: number, err: unknown, fallbackCode: string): ControlReply {
  const e = err as { message?: unknown; code?: unknown };
  return { id, ok: false, error: String(e?.message ?? err), code: typeof e?.code === 'string' ? e.code : fallbackCode };
}

export class Poller {
  private running = true;
  private exitRequestId = -1;
  private readonly devices: EngineDevice[] = [];
  private readonly pending: DeviceOp[] = [];
  private readonly stats: Float64Array;
  private readonly port: MessagePort;
  /** init.mail as Int32 (null without it), and the count the loop last acted on. */
  private readonly mail: Int32Array | null;
  private mailSeen = 0;
  private readonly env: DeviceEnv;
  private sleepFds = new Int32Array(1);
  /** Which of sleepFds the last poll found readable (the only ones read afterwards). */
  private sleepReady = new Uint8Array(1);
  private sleepFdCount = 0;
  private sleepFdsDirty = true;
  /** The loop's state between runSlice() calls (null before the first). */
  private loop: { iter: number; last: number; lastWork: number; idleRun: number; idleIterMs: number; busyIter: number } | null = null;

  /**
   * @param layer this worker's bdev layer (one per worker: devices open their bdevs in it)
   * @param factories device kind → factory (default: engine/devices.ts)
   */
  constructor(
    private readonly init: WorkerInit,
    private readonly sys: PollerSys,
    private readonly layer: BdevLayer,
    private readonly factories: FactoryLookup = deviceFactory,
  ) {
    this.port = init.port;
    this.stats = new Float64Array(init.stats, 0, WorkerStat.Count);
    this.mail = init.mail === undefined ? null : new Int32Array(init.mail, 0, 1);
    this.env = {
      signal: (fd) => sys.eventfdWrite(fd, 1),
      mapMemory: (regions) => GuestMemory.map(regions, sys),
      bdevs: layer,
    };
  }

  /**
   * The loop. Returns after an `exit` request has been answered. It never
   * turns this thread's event loop (tests drive it so); the worker uses
   * runSlice() instead.
   */
  run(): void {
    while (this.runSlice()) {
      /* the next slice continues where this one stopped */
    }
  }

  /**
   * The loop, in slices: returns true when YIELD_EVERY_MS have passed since
   * the slice began (the caller turns the thread's event loop once, then
   * calls again: the loop resumes where it stopped), false once an `exit`
   * request has been answered.
   *
   * Why the event loop must turn: node runs the deferred half of native
   * finalizers (every mmap()ed region's ArrayBuffer, once munmap() detached
   * it or GC freed it) and V8's foreground tasks as tasks of this thread's
   * event loop. A loop that never returned kept all of them queued: ~250 B of
   * native memory per mapped region, for the life of the worker (the soak's
   * RSS growth per connection).
   *
   * Clock: one read per busy iteration, at its end; that reading is the
   * clock the next iteration's device polls get (their submission stamps,
   * and the completion time of what the previous iteration reaped, see
   * IoStatRecorder.note). Idle iterations read it every IDLE_CLOCK_EVERY;
   * the idle iterations before a busy one are charged to idle time at the
   * per-iteration cost measured by the last all-idle sample, the rest of
   * the span to busy time.
   */
  runSlice(): boolean {
    const stats = this.stats;
    const mode = this.init.pollMode;
    const sleeps = mode === 'adaptive' || mode === 'interrupt';
    const idleSleepMs = mode === 'interrupt' ? 0 : this.init.idleSleepUs / 1000;
    const adaptive = mode === 'adaptive';
    const polling = mode === 'poll';
    if (this.loop === null) {
      if (sleeps) this.layer.enableSleep();
      stats[WorkerStat.InInterrupt] = mode === 'interrupt' ? 1 : 0;
      const t = performance.now();
      this.loop = { iter: 0, last: t, lastWork: t, idleRun: 0, idleIterMs: 0, busyIter: 0 };
    }
    let { iter, last, lastWork, idleRun, idleIterMs, busyIter } = this.loop;
    const yieldAt = performance.now() + YIELD_EVERY_MS;
    let yielding = false;
    while (this.running) {
      let work = this.iterate(last);
      if ((++iter & (CONTROL_EVERY - 1)) === 0) {
        stats[WorkerStat.Iterations] = iter;
        stats[WorkerStat.BusyIterations] = busyIter;
        work += this.pollMessages();
      }

      if (work > 0) {
        if (adaptive && stats[WorkerStat.InInterrupt] !== 0) stats[WorkerStat.InInterrupt] = 0;
        busyIter++;
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
        if (now >= yieldAt) {
          yielding = true;
          break;
        }
        continue;
      }
      if (++idleRun < IDLE_CLOCK_EVERY) continue;
      const now = performance.now();
      idleIterMs = (now - last) / idleRun;
      stats[WorkerStat.IdleNs] += (now - last) * 1e6;
      idleRun = 0;
      last = now;
      if (now >= yieldAt) {
        yielding = true;
        break;
      }

      if (sleeps && wantsSleep(mode, now - lastWork, idleSleepMs, this.layer.inFlight(), this.layer.helperInFlight())) {
        const limitMs = this.sleepLimitMs(now);
        if (limitMs <= 0) continue;
        if (adaptive) stats[WorkerStat.InInterrupt] = 1;
        stats[WorkerStat.Sleeps]++;
        if (this.sleep(limitMs, now)) lastWork = performance.now();
        const after = performance.now();
        stats[WorkerStat.IdleNs] += (after - last) * 1e6;
        last = after;
      } else if (polling && yieldsToHelpers(mode, this.layer.helperInFlight())) {
        // Poll mode never sleeps, but librbd's threads that complete the I/O go first (yieldsToHelpers).
        this.sys.yieldCpu();
      }
    }
    this.loop = { iter, last, lastWork, idleRun, idleIterMs, busyIter };
    stats[WorkerStat.Iterations] = iter;
    stats[WorkerStat.BusyIterations] = busyIter;
    return yielding && this.running;
  }

  /**
   * One loop iteration without control messages (public for tests that
   * drive the poller step by step): bdev completions first, so each device
   * publishes them in its poll; then, when the devices did work (a virtio
   * poll counts the requests it took; an NVMe poll its other work too), the
   * completions a bdev produced at once (BdevLayer.reap: a null or malloc
   * bdev, a ring that finished already), published in this iteration rather
   * than after the next clock read and loop turn; then the pending ops whose
   * I/O has drained.
   */
  iterate(nowMs: number): number {
    let work = this.layer.poll(nowMs);
    const devices = this.devices;
    let devWork = 0;
    for (let i = 0; i < devices.length; i++) {
      const dev = devices[i];
      try {
        devWork += dev.poll(nowMs);
      } catch (err) {
        this.deviceFailed(dev, err);
      }
    }
    if (devWork > 0 && this.layer.reap() > 0) {
      for (let i = 0; i < devices.length; i++) {
        const dev = devices[i];
        if (dev.publish === undefined) continue;
        try {
          dev.publish(nowMs);
        } catch (err) {
          this.deviceFailed(dev, err);
        }
      }
    }
    work += devWork;
    if (this.pending.length > 0) this.finishPending();
    return work;
  }

  /** An exception escaped a device's poll or publish: it stops taking requests, and the reactor closes its connection. */
  private deviceFailed(dev: EngineDevice, err: unknown): void {
    const wasRunning = dev.running;
    dev.fail(err);
    this.sleepFdsDirty = true;
    // Tell the reactor, which closes the device's connection with the reason (issue #15 item 1).
    if (wasRunning) this.port.postMessage({ event: 'deviceFailed', deviceId: dev.id, reason: String((err as Error)?.message ?? err) } satisfies DeviceFailedEvent);
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
        const kind = (req.device.model as { kind?: unknown } | undefined)?.kind;
        const factory = typeof kind === 'string' ? this.factories(kind) : undefined;
        if (factory === undefined) {
          this.reply({ id: req.id, ok: false, error: `unknown device kind ${String(kind)}`, code: 'ERR_DEVICE_KIND' });
          return;
        }
        let dev: EngineDevice;
        try {
          dev = factory(req.device, this.env);
        } catch (err) {
          logger.error('device start failed', { device: req.device.name, err: String((err as Error)?.message ?? err) });
          this.reply(errorReply(req.id, err, 'ERR_DEVICE_START'));
          return;
        }
        this.devices.push(dev);
        this.devicesChanged();
        logger.info('device started', { device: dev.name, id: dev.id, queues: req.device.queues.length });
        this.reply({ id: req.id, ok: true });
        return;
      }
      case 'stop':
      case 'queueStart':
      case 'queueStop':
      case 'setCallFd':
      case 'modelOp':
      case 'memUpdate': {
        const dev = this.liveDevice(req.id, req.deviceId);
        if (dev === null) return;
        const base = { requestId: req.id, device: dev, begun: false };
        switch (req.op) {
          case 'stop':
            this.pending.push({ ...base, kind: 'stop' });
            break;
          case 'queueStart':
            this.pending.push({ ...base, kind: 'queueStart', queue: req.queue });
            break;
          case 'queueStop':
            this.pending.push({ ...base, kind: 'queueStop', index: req.index });
            break;
          case 'setCallFd':
            this.pending.push({ ...base, kind: 'setCallFd', index: req.index, callFd: req.callFd });
            break;
          case 'memUpdate':
            this.pending.push({ ...base, kind: 'memUpdate', regions: req.regions });
            break;
          case 'modelOp':
            this.pending.push({ ...base, kind: 'modelOp', op: req.modelOp });
            break;
        }
        this.finishPending();
        return;
      }
      case 'bdevResize': {
        let users: number;
        try {
          users = this.layer.resize(req.name, req.numBlocks);
        } catch (err) {
          this.reply(errorReply(req.id, err, 'ERR_RESIZE'));
          return;
        }
        logger.info('bdev resized', { bdev: req.name, numBlocks: req.numBlocks, users });
        this.reply({ id: req.id, ok: true });
        return;
      }
      case 'exit': {
        this.exitRequestId = req.id;
        for (const dev of this.devices) {
          if (!this.isStopping(dev)) {
            logger.warn('exit with a device still running: stopping it', { device: dev.name });
            this.pending.push({ kind: 'stop', requestId: -1, device: dev, begun: false });
          }
        }
        this.finishPending();
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

  /**
   * takeMessages() when the reactor has posted since the last look (always,
   * without a mail counter). A receiveMessageOnPort that finds nothing
   * costs about 0.7 µs, one Atomics.load a few ns: at 32 iterations per
   * look and 1-2 requests per iteration the look was ~10 ns of every
   * request. The count is read before the port: a message is in the port's
   * queue before its count is added (postMessage enqueues synchronously),
   * so one counted is always found.
   */
  private pollMessages(): number {
    const mail = this.mail;
    if (mail !== null) {
      const posted = Atomics.load(mail, 0);
      if (posted === this.mailSeen) return 0;
      this.mailSeen = posted;
    }
    return this.takeMessages();
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

  /** A device that runs and is not being stopped, or null after replying ERR_NO_DEVICE. */
  private liveDevice(requestId: number, deviceId: number): EngineDevice | null {
    const dev = this.devices.find((d) => d.id === deviceId);
    if (dev === undefined || this.isStopping(dev)) {
      this.reply({ id: requestId, ok: false, error: `no running device ${deviceId}`, code: 'ERR_NO_DEVICE' });
      return null;
    }
    return dev;
  }

  private isStopping(dev: EngineDevice): boolean {
    return this.pending.some((p) => p.kind === 'stop' && p.device === dev);
  }

  /**
   * Run the device ops that can run: each device's first op begins, and
   * finishes (with its reply) once what it waits for has drained, which lets
   * the device's next op begin. Ends the loop after `exit` once every device
   * is gone.
   */
  private finishPending(): void {
    for (let i = 0; i < this.pending.length; ) {
      const op = this.pending[i];
      let blocked = false;
      for (let j = 0; j < i && !blocked; j++) if (this.pending[j].device === op.device) blocked = true;
      if (blocked || !this.advance(op)) {
        i++;
        continue;
      }
      // Done: removed (the scan goes on at i, the next op, which may be this device's next).
      this.pending.splice(this.pending.indexOf(op), 1);
    }
    if (this.exitRequestId >= 0 && this.devices.length === 0 && this.running) {
      this.running = false;
      this.reply({ id: this.exitRequestId, ok: true });
    }
  }

  /** Begin `op` if it has not begun; finish it if it can. Returns true when it is done (replied). */
  private advance(op: DeviceOp): boolean {
    const dev = op.device;
    switch (op.kind) {
      case 'queueStart':
        try {
          dev.queueStart(op.queue);
        } catch (err) {
          this.reply(errorReply(op.requestId, err, 'ERR_QUEUE_SETUP'));
          return true;
        }
        this.sleepFdsDirty = true;
        this.reply({ id: op.requestId, ok: true });
        return true;
      case 'setCallFd':
        try {
          dev.setCallFd(op.index, op.callFd);
        } catch (err) {
          this.reply(errorReply(op.requestId, err, 'ERR_NO_QUEUE'));
          return true;
        }
        this.reply({ id: op.requestId, ok: true });
        return true;
      case 'queueStop': {
        if (!op.begun) {
          try {
            dev.beginQueueStop(op.index);
          } catch (err) {
            this.reply(errorReply(op.requestId, err, 'ERR_NO_QUEUE'));
            return true;
          }
          op.begun = true;
          this.sleepFdsDirty = true;
        }
        if (dev.queueInflight(op.index) > 0) return false;
        let reply: ControlReply;
        try {
          reply = { id: op.requestId, ok: true, result: dev.finishQueueStop(op.index) };
        } catch (err) {
          reply = errorReply(op.requestId, err, 'ERR_QUEUE_STOP');
        }
        this.reply(reply);
        return true;
      }
      case 'memUpdate': {
        if (!op.begun) {
          dev.beginMemUpdate();
          op.begun = true;
        }
        if (dev.inflight > 0) return false;
        let reply: ControlReply;
        try {
          dev.finishMemUpdate(op.regions);
          reply = { id: op.requestId, ok: true };
          logger.info('device memory updated', { device: dev.name, regions: op.regions.length });
        } catch (err) {
          logger.error('device memory update failed', { device: dev.name, err: String((err as Error)?.message ?? err) });
          reply = errorReply(op.requestId, err, 'ERR_GUEST_MEMORY');
        }
        this.reply(reply);
        return true;
      }
      case 'modelOp': {
        if (!op.begun) {
          try {
            if (dev.beginModelOp === undefined) throw Object.assign(new Error(`device ${dev.name} has no model op ${op.op.kind}`), { code: 'ERR_MODEL_OP' });
            dev.beginModelOp(op.op);
          } catch (err) {
            this.reply(errorReply(op.requestId, err, 'ERR_MODEL_OP'));
            return true;
          }
          op.begun = true;
        }
        if (dev.modelOpReady !== undefined && !dev.modelOpReady(op.op)) return false;
        let reply: ControlReply;
        try {
          dev.finishModelOp?.(op.op);
          this.sleepFdsDirty = true;
          reply = { id: op.requestId, ok: true };
        } catch (err) {
          reply = errorReply(op.requestId, err, 'ERR_MODEL_OP');
        }
        this.reply(reply);
        return true;
      }
      case 'stop':
        if (!op.begun) {
          dev.beginStop();
          op.begun = true;
          this.sleepFdsDirty = true;
        }
        if (dev.inflight > 0) return false;
        this.finishStop(op.requestId, dev);
        return true;
    }
  }

  private finishStop(requestId: number, device: EngineDevice): void {
    this.devices.splice(this.devices.indexOf(device), 1);
    this.devicesChanged();
    let reply: ControlReply;
    try {
      reply = { id: requestId, ok: true, result: device.finishStop() };
    } catch (err) {
      logger.error('device stop failed', { device: device.name, err: String(err) });
      reply = errorReply(requestId, err, 'ERR_DEVICE_STOP');
    }
    logger.info('device stopped', { device: device.name, id: device.id });
    if (requestId >= 0) this.reply(reply);
  }

  private reply(r: ControlReply): void {
    this.port.postMessage(r);
  }

  private devicesChanged(): void {
    this.stats[WorkerStat.Devices] = this.devices.length;
    this.sleepFdsDirty = true;
  }

  /**
   * How long the worker may sleep (0: not now). Not while a control op
   * waits (it finishes in an iteration); not while the bdev layer has work
   * a poll must do. A device's in-flight requests wait on bdev I/O, which the
   * layer vouches for: in the kernel or in librbd, each signals a completion
   * eventfd (once notifications are on: sleep() turns them on, then polls).
   */
  private sleepLimitMs(nowMs: number): number {
    if (this.pending.length > 0) return 0;
    const limit = this.layer.sleepLimitMs(nowMs);
    return limit < SLEEP_TIMEOUT_MS ? limit : SLEEP_TIMEOUT_MS;
  }

  /**
   * Sleep in poll(2) until a kick, a bdev completion, a wake-up or
   * `timeoutMs`. Order: switch the bdev completion eventfds on and poll the
   * layer once (what completed while they were off signalled nothing); ask
   * the drivers for kicks, which re-checks the rings; look at the port; only
   * then block. Afterwards the eventfds poll found readable are reset (only
   * those: a read of each would cost a syscall per fd and wake-up), and kicks
   * and completion signals are switched off again. A count left from while
   * signals were off (a kick the driver sent anyway) makes the next poll
   * return at once; that wake-up resets it, so it costs one loop turn, never
   * a missed event. Returns true when it found work instead of sleeping (a
   * completion, a request, a control message), which the loop counts as
   * work; what a wake-up by an fd brought, the iterations after it find and
   * count (after a stale count they find nothing, so an adaptive worker
   * does not start its idle spin over).
   */
  private sleep(timeoutMs: number, nowMs: number): boolean {
    if (this.sleepFdsDirty) this.collectSleepFds();
    const fds = this.sleepFds;
    const n = this.sleepFdCount;
    const layer = this.layer;
    layer.setCompletionNotify(true);
    let found = layer.poll(nowMs) > 0;
    if (!found) for (const dev of this.devices) if (dev.running && dev.setNotification(true)) found = true;
    if (!found && this.takeMessages() === 0 && this.running && this.pending.length === 0) {
      const ready = this.sleepReady;
      if (this.sys.pollReadable(fds, n, Math.max(1, Math.ceil(timeoutMs)), ready) > 0) {
        for (let i = 0; i < n; i++) if (ready[i] !== 0) this.sys.eventfdRead(fds[i]);
      }
    } else {
      found = true;
    }
    for (const dev of this.devices) if (dev.running) dev.setNotification(false);
    layer.setCompletionNotify(false);
    return found;
  }

  private collectSleepFds(): void {
    const list: number[] = [];
    if (this.init.wakeFd >= 0) list.push(this.init.wakeFd);
    for (const dev of this.devices) if (dev.running) list.push(...dev.kickFds());
    this.layer.sleepFds(list);
    if (this.sleepFds.length < list.length) {
      this.sleepFds = new Int32Array(list.length);
      this.sleepReady = new Uint8Array(list.length);
    }
    this.sleepFds.set(list);
    this.sleepFdCount = list.length;
    this.sleepFdsDirty = false;
  }
}
