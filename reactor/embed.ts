/**
 * The embedding API: `import { Vhostd } from 'vhostd'` runs the target
 * inside the embedder's Node process. It is a thin layer over what the
 * `vhostd` command runs (reactor/cli.ts): the same App, the same RPC server
 * object with every method registered, initialized through the same
 * Framework. `call(method, params)` invokes an RPC method in-process through
 * the server's own validation (RpcServer.invoke), and the typed methods
 * (createMallocBdev, createBlkController, ...) are calls of those methods,
 * so an embedder and an rpc.py user get the same checks, results and errors
 * (RpcError with SPDK's code). With `rpcSocket` the server also listens
 * there, for rpc.py or vhostd-rpc.
 *
 * Events ('connect', 'disconnect', 'deviceFailed') come from the vhost
 * controllers (ControllerOptions.onEvent); the logger is reactor/log.ts's
 * sink (setLogSink), process-wide. No signal handlers are installed: the
 * embedder owns the process.
 *
 * Thread: main (reactor).
 */
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import { native } from '../bindings';
import type { PollMode } from '../engine/control';
import { App } from './app';
import { checkCores } from './cli-args';
import { onlineCpus } from './cli';
import { Framework } from './framework';
import type { BdevInfo, ControllerInfo } from './info';
import { getPrintLevel, setLogSink, setPrintLevel, type LogLevel, type LogRecord, type LogSink } from './log';
import { parseCpumask } from './placement';
import { registerMethods } from './rpc/methods';
import { RpcServer } from './rpc/server';
import type { ControllerEvent } from './vhost/controller';

export type { LogLevel, LogRecord, LogSink } from './log';
export type { BdevInfo, ControllerInfo } from './info';
export type { PollMode } from '../engine/control';
export { RpcError } from './rpc/errors';

export interface VhostdOptions {
  /** Directory of the controller sockets (created if missing): `-S`. */
  socketDir: string;
  /** Cores to poll on: a mask ('0x3'), a list ('[0,2-3]') or core numbers; default core 0 (`-m 0x1`). */
  cpumask?: string | readonly number[];
  /** Also serve JSON-RPC (rpc.py, vhostd-rpc) on this Unix socket; default: no socket, call() only. */
  rpcSocket?: string;
  /** 'poll' (default, SPDK's busy polling), 'adaptive' or 'interrupt' (`--poll-mode`). */
  pollMode?: PollMode;
  /** How long an adaptive worker sleeps when idle, in µs (`--idle-sleep-us`); default 1000. */
  idleSleepUs?: number;
  /** File mode of the controller sockets and the RPC socket; default 0o600. */
  socketMode?: number;
  /** Receives every log record (process-wide, see Vhostd.setLogger) from start() until stop(). */
  logger?: LogSink;
  /** The most verbose level logged (`--log-level`, process-wide); default: unchanged ('info'). */
  logLevel?: LogLevel;
}

export interface MallocBdevOptions {
  /** Default: the next free MallocN. */
  name?: string;
  numBlocks: number;
  /** Default 512. */
  blockSize?: number;
  uuid?: string;
}

export interface BlkControllerOptions {
  /** The controller's name: its socket is <socketDir>/<name>. */
  name: string;
  /** The bdev it exports. */
  bdev: string;
  /** Cores it may run on (inside the instance's); default all of them. */
  cpumask?: string;
  readonly?: boolean;
  packedRing?: boolean;
  /** Spread the queues over the cores of the cpumask (vhostd-specific). */
  spreadQueues?: boolean;
}

/** The payload of 'connect' and 'disconnect'. */
export interface ConnectionEvent {
  ctrlr: string;
  /** The controller's socket path. */
  socket: string;
}

/** The payload of 'deviceFailed': the engine stopped a device (e.g. its call fd broke); its connection is ended. */
export interface DeviceFailedEvent {
  ctrlr: string;
  core: number;
  reason: string;
}

export interface VhostdEvents {
  connect: [ConnectionEvent];
  disconnect: [ConnectionEvent];
  deviceFailed: [DeviceFailedEvent];
  /** stop() finished: every socket is closed and unlinked. */
  stopped: [];
}

/** A vhostd target running in this process (see the module comment). */
export class Vhostd extends EventEmitter<VhostdEvents> {
  /** The application object (bdev registry, controllers, engine pool) for what the typed API does not cover. */
  readonly app: App;
  private readonly rpc: RpcServer;
  private readonly framework: Framework;
  private stopping: Promise<void> | null = null;
  private installedSink: LogSink | null = null;
  private previousSink: LogSink | null = null;
  private previousLevel: LogLevel | null = null;

  private constructor(readonly options: Readonly<VhostdOptions>, cores: number[]) {
    super();
    const socketDir = path.resolve(options.socketDir);
    this.app = new App({
      cores,
      socketDir,
      rpcSocket: options.rpcSocket !== undefined ? path.resolve(options.rpcSocket) : '',
      pollMode: options.pollMode ?? 'poll',
      idleSleepUs: options.idleSleepUs ?? 1000,
      socketMode: options.socketMode ?? 0o600,
      onControllerEvent: (e) => this.onControllerEvent(e, socketDir),
    });
    this.rpc = new RpcServer({ socketMode: options.socketMode ?? 0o600 });
    this.framework = new Framework(this.rpc, {
      init: async () => {
        this.app.start();
        await this.app.engine.ready();
      },
      // spdk_kill_instance over the RPC socket stops this instance, not the embedder's process.
      kill: () => void this.stop(),
    });
    registerMethods(this.rpc, this.app, this.framework);
  }

  /**
   * Start a target: engine workers on the cores, the controller socket
   * directory, and the RPC socket if `rpcSocket` is given. Rejects (and
   * leaves nothing running) on a core that is offline or not allowed to
   * this process, or an RPC socket already in use.
   */
  static async start(options: VhostdOptions): Promise<Vhostd> {
    if (typeof options?.socketDir !== 'string' || options.socketDir === '') throw new TypeError('options.socketDir must be a directory path');
    const cpumask = options.cpumask ?? '0x1';
    const cores = typeof cpumask === 'string' ? parseCpumask(cpumask) : [...new Set(cpumask)].sort((a, b) => a - b);
    if (cores.length === 0 || !cores.every((c) => Number.isInteger(c) && c >= 0)) throw new RangeError('options.cpumask: no valid cores');
    const coreError = checkCores(cores, onlineCpus(), native.allowedCpus());
    if (coreError !== null) throw new RangeError(`options.cpumask: ${coreError}`);
    const v = new Vhostd(options, cores);
    if (options.logger) v.installedSink = options.logger;
    if (options.logger) v.previousSink = setLogSink(options.logger);
    if (options.logLevel) {
      v.previousLevel = getPrintLevel();
      setPrintLevel(options.logLevel);
    }
    try {
      await v.framework.startInit();
      if (options.rpcSocket !== undefined) await v.rpc.listen(path.resolve(options.rpcSocket));
    } catch (err) {
      await v.stop();
      throw err;
    }
    return v;
  }

  /**
   * Send every log record of the reactor (app, rpc, vhost, bdev, ...) to
   * `sink`; null: back to stderr. Process-wide: one sink for every instance.
   * Returns the sink replaced. Engine worker lines are not records: the
   * workers write them to fd 2 themselves.
   */
  static setLogger(sink: LogSink | null): LogSink | null {
    return setLogSink(sink);
  }

  /** Where the controller sockets are. */
  get socketDir(): string {
    return this.app.options.socketDir;
  }

  /** The RPC socket while it listens (options.rpcSocket), else null. */
  get rpcSocket(): string | null {
    return this.rpc.path;
  }

  /** The socket path of controller `name` (a front-end such as QEMU connects there). */
  socketPath(name: string): string {
    return path.join(this.socketDir, name);
  }

  /**
   * Call any JSON-RPC method (rpc.py's names and parameters) in-process, with
   * the same validation as over the socket. Resolves to its result; rejects
   * with RpcError (`code`: SPDK's error code) as the socket would reply.
   */
  call<T = unknown>(method: string, params?: Record<string, unknown> | unknown[]): Promise<T> {
    if (this.stopping) return Promise.reject(new Error('vhostd is stopped'));
    return this.rpc.invoke(method, params) as Promise<T>;
  }

  /** bdev_malloc_create: a RAM disk. Resolves to its name. */
  createMallocBdev(o: MallocBdevOptions): Promise<string> {
    return this.call<string>('bdev_malloc_create', { name: o.name, num_blocks: o.numBlocks, block_size: o.blockSize ?? 512, uuid: o.uuid });
  }

  /** bdev_malloc_delete. */
  async deleteMallocBdev(name: string): Promise<void> {
    await this.call('bdev_malloc_delete', { name });
  }

  /** bdev_get_bdevs: all bdevs, or the one named. */
  getBdevs(name?: string): Promise<BdevInfo[]> {
    return this.call<BdevInfo[]>('bdev_get_bdevs', name === undefined ? {} : { name });
  }

  /** vhost_create_blk_controller: a vhost-user-blk socket at socketPath(name). Resolves to that path. */
  async createBlkController(o: BlkControllerOptions): Promise<string> {
    await this.call('vhost_create_blk_controller', {
      ctrlr: o.name,
      dev_name: o.bdev,
      cpumask: o.cpumask,
      readonly: o.readonly,
      packed_ring: o.packedRing,
      spread_queues: o.spreadQueues,
    });
    return this.socketPath(o.name);
  }

  /** vhost_delete_controller (refused while a front-end is connected). */
  async deleteController(name: string): Promise<void> {
    await this.call('vhost_delete_controller', { ctrlr: name });
  }

  /** vhost_get_controllers: all controllers, or the one named. */
  getControllers(name?: string): Promise<ControllerInfo[]> {
    return this.call<ControllerInfo[]>('vhost_get_controllers', name === undefined ? {} : { name });
  }

  /**
   * Stop: the RPC socket closes, every controller's device drains and its
   * socket is unlinked, the workers end, the bdevs' files close; then
   * 'stopped'. The logger option's sink is uninstalled (if still in place).
   * Idempotent.
   */
  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      try {
        await this.rpc.close();
        await this.app.stop();
      } finally {
        if (this.installedSink !== null) {
          // Put the previous sink back, unless someone replaced ours meanwhile: keep theirs.
          const current = setLogSink(this.previousSink);
          if (current !== this.installedSink) setLogSink(current);
        }
        if (this.previousLevel !== null) setPrintLevel(this.previousLevel);
        this.emit('stopped');
      }
    })();
    return this.stopping;
  }

  private onControllerEvent(e: ControllerEvent, socketDir: string): void {
    if (e.type === 'deviceFailed') this.emit('deviceFailed', { ctrlr: e.ctrlr, core: e.core, reason: e.reason });
    else this.emit(e.type, { ctrlr: e.ctrlr, socket: path.join(socketDir, e.ctrlr) });
  }
}
