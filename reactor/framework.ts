/**
 * The application framework's state, as SPDK's lib/event and lib/rpc keep
 * it: the RPC server starts in the STARTUP state when the target runs with
 * `--wait-for-rpc` (only methods registered for STARTUP are callable), and
 * framework_start_init runs the deferred initialization (engine workers,
 * the `-c` config) and moves it to RUNTIME; without `--wait-for-rpc` the
 * target initializes before it listens and the server is in RUNTIME from the
 * start. framework_wait_init resolves once initialization has completed.
 * spdk_kill_instance sends a signal to this process, as SPDK's does.
 *
 * Thread: main (reactor).
 */
import { RpcCode, RpcError } from './rpc/errors';
import { RpcState } from './rpc/schema';

/** What the framework methods control (see methods/framework.ts). */
export interface FrameworkControl {
  /** framework_start_init: run the deferred initialization, then enter RUNTIME. */
  startInit(): Promise<void>;
  /** framework_wait_init: resolves once initialization has completed. */
  waitInit(): Promise<void>;
  /** spdk_kill_instance: deliver `signal` to this process (after the reply has been written). */
  kill(signal: NodeJS.Signals): void;
}

/** The part of the RPC server the framework drives. */
export interface StatefulServer {
  state: number;
}

export interface FrameworkOptions {
  /** Start in STARTUP and wait for framework_start_init (`--wait-for-rpc`). Default false. */
  waitForRpc?: boolean;
  /** The deferred initialization's first part, run in STARTUP (e.g. starting the engine). */
  init?: () => Promise<void> | void;
  /** Its second part, run once the server is in RUNTIME (e.g. replaying the `-c` config through RPC). */
  afterRuntime?: () => Promise<void> | void;
  /** Called when initialization failed (SPDK stops the app then). */
  onInitFailed?: (err: Error) => void;
  /** How to deliver a signal; default process.kill(process.pid, signal). */
  kill?: (signal: NodeJS.Signals) => void;
}

export class Framework implements FrameworkControl {
  private started = false;
  private done = false;
  private readonly waiters: (() => void)[] = [];

  constructor(
    private readonly server: StatefulServer,
    private readonly options: FrameworkOptions = {},
  ) {
    if (options.waitForRpc) {
      server.state = RpcState.Startup;
    } else {
      server.state = RpcState.Runtime;
    }
  }

  /** Has initialization completed (RUNTIME and the config replayed)? */
  get initialized(): boolean {
    return this.done;
  }

  /**
   * Initialize now. Called by framework_start_init, or directly at start
   * without --wait-for-rpc (then the server is already in RUNTIME).
   */
  async startInit(): Promise<void> {
    if (this.started) {
      throw new RpcError(RpcCode.InvalidState, 'framework_start_init was already called: the framework is initialized or initializing');
    }
    this.started = true;
    try {
      await this.options.init?.();
      this.server.state = RpcState.Runtime;
      await this.options.afterRuntime?.();
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      this.options.onInitFailed?.(e);
      throw new RpcError(RpcCode.InternalError, `framework_initialization failed: ${e.message}`);
    }
    this.done = true;
    for (const w of this.waiters.splice(0)) w();
  }

  waitInit(): Promise<void> {
    if (this.done) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  kill(signal: NodeJS.Signals): void {
    const deliver = this.options.kill ?? ((sig: NodeJS.Signals) => process.kill(process.pid, sig));
    // After the current turn: the reply to spdk_kill_instance is written first.
    setImmediate(() => deliver(signal));
  }
}
