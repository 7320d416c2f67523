/**
 * A child process a test starts and must stop: captures its output for
 * diagnostics, notices an early exit, stops with SIGTERM then SIGKILL, and
 * dies with the test process (see tied.ts).
 * Main-thread test helper.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { tied } from './tied';
import { canConnect, waitFor } from './wait';

/** How much of a process's output Daemon.log keeps (the tail). */
const LOG_KEEP_CHARS = 1 << 20;

export interface DaemonExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class Daemon {
  readonly child: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  log = '';
  /** Set once the process has exited. */
  exit: DaemonExit | undefined;
  private readonly exited: Promise<DaemonExit>;

  constructor(
    readonly name: string,
    command: string,
    args: string[],
    options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
  ) {
    const cmd = tied(command, args);
    this.child = spawn(cmd.command, cmd.args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd, env: options.env });
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      this.log += text;
      // Long runs (fuzz, soak) log without end: keep the last MiB.
      if (this.log.length > LOG_KEEP_CHARS * 2) this.log = this.log.slice(-LOG_KEEP_CHARS);
      if (process.env.VHOSTD_TEST_DEBUG === '1') process.stderr.write(`[${name}] ${text}`);
    };
    this.child.stdout?.on('data', onData);
    this.child.stderr?.on('data', onData);
    this.exited = new Promise((resolve) => {
      this.child.once('error', (err) => {
        this.log += `spawn error: ${err.message}\n`;
        this.exit = { code: null, signal: null };
        resolve(this.exit);
      });
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  /**
   * Waits until the process serves the Unix socket at `socketPath`: the file
   * exists and (unless `connect` is false) a connection succeeds. Throws, with
   * the process's output, if it exits first or `timeoutMs` passes.
   */
  async waitSocket(socketPath: string, opts: { timeoutMs?: number; connect?: boolean; intervalMs?: number } = {}): Promise<void> {
    await waitFor(
      async () => {
        if (!this.running) throw new Error(`${this.name} exited early (${JSON.stringify(this.exit)}):\n${this.log.slice(-8000)}`);
        return fs.existsSync(socketPath) && (opts.connect === false || (await canConnect(socketPath)));
      },
      opts.timeoutMs ?? 30_000,
      `${this.name} socket ${socketPath}`,
      opts.intervalMs ?? 100,
    );
  }

  /** Resolves when the process has exited. */
  wait(): Promise<DaemonExit> {
    return this.exited;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves with how it exited. */
  async stop(graceMs = 10_000): Promise<DaemonExit & { killed: boolean }> {
    if (this.exit !== undefined) return { ...this.exit, killed: false };
    this.child.kill('SIGTERM');
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      this.child.kill('SIGKILL');
    }, graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return { ...exit, killed };
  }
}
