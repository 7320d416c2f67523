/**
 * The engine workers: one piscina worker per core of the app mask, each
 * running one never-ending task (engine/worker.ts) that pins itself to its
 * core and busy-polls the devices placed on it. The reactor talks to a worker
 * only through its MessagePort (control requests and replies) and a wake
 * eventfd. Thread: main (reactor).
 */
import * as path from 'node:path';
import { MessageChannel, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import Piscina from 'piscina';
import { native } from '../bindings';
import {
  WorkerStat,
  type ControlReply,
  type ControlRequest,
  type DeviceFailedEvent,
  type EngineLogEvent,
  type DeviceDesc,
  type ModelOp,
  type QueueDesc,
  type QueueStopResult,
  type RegionDesc,
  type StopResult,
  type WorkerInit,
  type PollMode,
} from '../engine/control';
import { engineLogControl, logForwarded, logger } from './log';

const log = logger('engine');

/** A request as the reactor writes it: the id is added by EngineWorker. */
type Request = ControlRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export class EngineError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

/** The reactor's handle on one engine worker. */
export class EngineWorker {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: ControlReply) => void }>();
  private readonly statsView: Float64Array;
  /** Requests posted so far (WorkerInit.mail, shared with the worker). */
  private readonly mailView: Int32Array;
  /** Resolves when the worker's task has ended. */
  done: Promise<unknown> = Promise.resolve();

  constructor(
    readonly core: number,
    private readonly port: MessagePort,
    readonly wakeFd: number,
    readonly stats: SharedArrayBuffer,
    mail: SharedArrayBuffer,
  ) {
    this.statsView = new Float64Array(stats);
    this.mailView = new Int32Array(mail, 0, 1);
    port.on('message', (msg: ControlReply | DeviceFailedEvent | EngineLogEvent) => {
      if ('event' in msg) {
        this.onEvent(msg);
        return;
      }
      const reply = msg;
      const p = this.pending.get(reply.id);
      if (!p) {
        if (!this.failed) log.warn('reply to an unknown request', { core, id: reply.id });
        return;
      }
      this.pending.delete(reply.id);
      p.resolve(reply);
    });
  }

  private readonly failureWatchers = new Map<number, (reason: string) => void>();

  /** `onFailed` hears it when device `deviceId` fails on this worker (until unwatchDevice). */
  watchDevice(deviceId: number, onFailed: (reason: string) => void): void {
    this.failureWatchers.set(deviceId, onFailed);
  }

  unwatchDevice(deviceId: number): void {
    this.failureWatchers.delete(deviceId);
  }

  private onEvent(e: DeviceFailedEvent | EngineLogEvent): void {
    if (e.event === 'log') {
      logForwarded(e.level, e.component, e.message, e.fields);
      return;
    }
    if (e.event !== 'deviceFailed') return;
    const w = this.failureWatchers.get(e.deviceId);
    if (w) w(e.reason);
    else log.warn('a device the reactor no longer watches failed', { core: this.core, device: e.deviceId, reason: e.reason });
  }

  /** The worker's task ended: every request still waiting fails. */
  fail(why: string): void {
    this.failed = why;
    for (const [id, p] of this.pending) p.resolve({ id, ok: false, error: why, code: 'ERR_ENGINE_GONE' });
    this.pending.clear();
  }

  private failed: string | null = null;

  private request(req: Request): Promise<ControlReply> {
    if (this.failed) return Promise.resolve({ id: 0, ok: false, error: this.failed, code: 'ERR_ENGINE_GONE' });
    const id = this.nextId++;
    const message = { ...req, id } as ControlRequest;
    return new Promise((resolve) => {
      this.pending.set(id, { resolve });
      this.port.postMessage(message);
      // After the post: the worker looks at its port when this count moves.
      Atomics.add(this.mailView, 0, 1);
      native.eventfdWrite(this.wakeFd, 1);
    });
  }

  private async call(req: Request): Promise<ControlReply & { ok: true }> {
    const reply = await this.request(req);
    if (!reply.ok) throw new EngineError(reply.error, reply.code);
    return reply;
  }

  /** Map the memory, open the bdevs, start the queues given (possibly none). */
  async start(device: DeviceDesc): Promise<void> {
    await this.call({ op: 'start', device });
  }

  /** Stop every queue of the device (in-flight I/O completes first), unmap, release its bdevs. */
  async stop(deviceId: number): Promise<StopResult> {
    const { result } = await this.call({ op: 'stop', deviceId });
    if (result === undefined) return { queues: [] };
    if (!('queues' in result)) throw new EngineError(`stop of device ${deviceId}: the worker replied with a queue, not a device`);
    return result;
  }

  /** Start one more queue of a running device. */
  async queueStart(deviceId: number, queue: QueueDesc): Promise<void> {
    await this.call({ op: 'queueStart', deviceId, queue });
  }

  /** Stop one queue of a running device; resolves with where it ended. */
  async queueStop(deviceId: number, index: number): Promise<QueueStopResult> {
    const { result } = await this.call({ op: 'queueStop', deviceId, index });
    if (result === undefined || !('pos' in result)) throw new EngineError(`queueStop ${index} of device ${deviceId}: the worker replied without a position`);
    return result;
  }

  /** The running queue signals callFd (-1: none) from the resolution on. */
  async setCallFd(deviceId: number, index: number, callFd: number): Promise<void> {
    await this.call({ op: 'setCallFd', deviceId, index, callFd });
  }

  /** Quiesce, remap and resume a running device with a new memory table. */
  async memUpdate(deviceId: number, regions: RegionDesc[]): Promise<void> {
    await this.call({ op: 'memUpdate', deviceId, regions });
  }

  /** A change to a running device's model (virtio-scsi hot-plug, NVMe interrupts and namespaces); resolves once the device applied it. */
  async modelOp(deviceId: number, modelOp: ModelOp): Promise<void> {
    await this.call({ op: 'modelOp', deviceId, modelOp });
  }
  /** The named bdev now has numBlocks blocks: every device of this worker that uses it checks against that. */
  async bdevResize(name: string, numBlocks: number): Promise<void> {
    await this.call({ op: 'bdevResize', name, numBlocks });
  }

  /** Devices placed on this worker (its pollers). */
  deviceCount(): number {
    return this.statsView[WorkerStat.Devices];
  }

  async exit(): Promise<void> {
    const reply = await this.request({ op: 'exit' });
    // The task may end before its reply crosses the port: an ended task is what exit asked for.
    if (!reply.ok && reply.code !== 'ERR_ENGINE_GONE') throw new EngineError(reply.error, reply.code);
  }

  /**
   * Once the task has ended: hand on what it posted last (its "exiting" log
   * line, forwarded to a log sink, may still be queued behind the exit reply), then close the port.
   */
  closePort(): void {
    for (let m = receiveMessageOnPort(this.port); m !== undefined; m = receiveMessageOnPort(this.port)) {
      const msg = m.message as ControlReply | DeviceFailedEvent | EngineLogEvent;
      if ('event' in msg) this.onEvent(msg);
    }
    this.port.close();
  }

  /** The worker thread's kernel thread id, or 0 until its task has started. */
  tid(): number {
    return this.statsView[WorkerStat.Tid];
  }

  /** Loop iterations so far, and those that did work (updated every few iterations). */
  iterations(): { run: number; busy: number } {
    return { run: this.statsView[WorkerStat.Iterations], busy: this.statsView[WorkerStat.BusyIterations] };
  }

  /** Busy and idle time so far, in nanoseconds. */
  ticks(): { busyNs: number; idleNs: number } {
    return { busyNs: this.statsView[WorkerStat.BusyNs], idleNs: this.statsView[WorkerStat.IdleNs] };
  }

  /** In interrupt mode now (see WorkerStat.InInterrupt), and how often it has slept. */
  interruptState(): { inInterrupt: boolean; sleeps: number } {
    return { inInterrupt: this.statsView[WorkerStat.InInterrupt] !== 0, sleeps: this.statsView[WorkerStat.Sleeps] };
  }
}

export interface EnginePoolOptions {
  cores: readonly number[];
  pollMode: PollMode;
  idleSleepUs: number;
}

/** One piscina pool, fixed at one thread per core, each running one task for the life of the target. */
export class EnginePool {
  private readonly pool: Piscina;
  readonly workers = new Map<number, EngineWorker>();

  constructor(private readonly options: EnginePoolOptions) {
    const n = options.cores.length;
    this.pool = new Piscina({
      filename: path.join(__dirname, '..', 'engine', 'worker.js'),
      minThreads: n,
      maxThreads: n,
      idleTimeout: Infinity,
      concurrentTasksPerWorker: 1,
      maxQueue: 0,
      // The task never returns, so piscina's Atomics.wait hand-off would buy nothing.
      useAtomics: false,
    });
  }

  /** Start one task per core. Resolves once every worker has its task. */
  start(): void {
    for (const core of this.options.cores) {
      const { port1, port2 } = new MessageChannel();
      const wakeFd = native.eventfd(0, 0);
      const stats = new SharedArrayBuffer(WorkerStat.Count * 8);
      const mail = new SharedArrayBuffer(4);
      const worker = new EngineWorker(core, port1, wakeFd, stats, mail);
      const init: WorkerInit = {
        core,
        port: port2,
        wakeFd,
        stats,
        mail,
        pollMode: this.options.pollMode,
        idleSleepUs: this.options.idleSleepUs,
        logControl: engineLogControl,
      };
      worker.done = this.pool.run(init, { transferList: [port2] }).then(
        () => worker.fail(`engine worker on core ${core} has exited`),
        (err: unknown) => {
          const why = err instanceof Error ? err.message : String(err);
          log.error('engine worker task failed', { core, error: why });
          worker.fail(`engine worker on core ${core} failed: ${why}`);
        },
      );
      this.workers.set(core, worker);
    }
  }

  /**
   * Resolves once every worker's task runs (it has written its thread id),
   * or rejects when one failed or did not start within `timeoutMs`.
   */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const waiting = [...this.workers.values()].filter((w) => w.tid() === 0);
      if (waiting.length === 0) return;
      if (Date.now() > deadline) throw new EngineError(`engine workers on cores ${waiting.map((w) => w.core).join(',')} did not start`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  worker(core: number): EngineWorker {
    const w = this.workers.get(core);
    if (!w) throw new EngineError(`no engine worker on core ${core}`);
    return w;
  }

  /**
   * Tell every worker that the named bdev changed size (a worker that holds
   * no handle on it has nothing to do). Resolves once all have replied.
   */
  async bdevResize(name: string, numBlocks: number): Promise<void> {
    await Promise.all([...this.workers.values()].map((w) => w.bdevResize(name, numBlocks)));
  }

  /** Ask every worker to leave its loop, wait for the tasks, tear the pool down. */
  async close(): Promise<void> {
    await Promise.all(
      [...this.workers.values()].map(async (w) => {
        try {
          await w.exit();
          await w.done;
        } catch (err) {
          log.error('engine worker did not exit cleanly', { core: w.core, error: (err as Error).message });
        } finally {
          w.closePort();
        }
      }),
    );
    await this.pool.destroy();
    for (const w of this.workers.values()) native.close(w.wakeFd);
    this.workers.clear();
  }
}
