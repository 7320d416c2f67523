/**
 * The Unix socket of one controller: listens on its path (mode 0600 by
 * default), accepts front-ends through an FdWatcher on the main loop and
 * serves one at a time. A second front-end that connects while one is served
 * (or still being torn down) is held briefly, then refused, with a log line.
 * What speaks on an accepted socket comes from a connection factory: the
 * vhost-user one (a VhostUserConnection over a fresh VhostUserSession) by
 * default; another protocol (vfio-user for NVMe) brings its own.
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { native, PollEvents, type FdWatcher } from '../../bindings';
import { logger, type Logger } from '../log';
import { removeStaleSocket } from '../socket-file';
import type { VhostBackend } from './backend';
import { VhostUserConnection } from './connection';
import { VhostUserSession } from './session';

/**
 * Who may connect to a listener's socket: its permission bits, or the bits
 * and the group the socket file gets (`--socket-group`; set before the file
 * appears under its name).
 */
export type SocketAccess = number | { mode: number; gid?: number };

/** The backend of each accepted front-end: one object shared by every connection, or a factory called per connection. */
export type BackendSource<B = VhostBackend> = B | (() => B);

/** What the listener needs of a served connection. */
export interface ServedConnection {
  /** Resolves once the connection is fully torn down. */
  readonly done: Promise<void>;
  /** Close it (the controller goes away); resolves when torn down. */
  close(reason?: string): Promise<void>;
}

/** Makes the protocol side of one accepted socket `fd` (owned by the connection from then on). */
export type ConnectionFactory<B> = (fd: number, backend: B, log: Logger) => ServedConnection;

/** vhost-user: a session over the backend, and the connection that feeds it. */
export const vhostUserConnection: ConnectionFactory<VhostBackend> = (fd, backend, log) =>
  new VhostUserConnection(fd, new VhostUserSession(backend, log), backend, log);

const BACKLOG = 16;
/** How long a reconnecting front-end may wait for the old connection's teardown. */
const RECONNECT_WAIT_MS = 2000;

/** A listener for any protocol: B is the backend type its connections serve. */
export class UnixListener<B> {
  private listenFd = -1;
  private watcher: FdWatcher | null = null;
  private current: ServedConnection | null = null;
  private closing: Promise<void> | null = null;
  /** A front-end accepted while the previous one was still connected (see park()), or -1. */
  private parkedFd = -1;
  private readonly log: Logger = logger('vhost');
  private readonly opts: { path: string; name: string; mode: number; gid: number };

  /**
   * @param path socket path, e.g. <socketDir>/<ctrlr>
   * @param mode permission bits of the socket file (0o600 unless the operator chose otherwise), or the bits and its group
   * @param backend the controller's backend, or a factory called once per accepted front-end
   * @param makeConnection the protocol spoken on each accepted socket
   */
  constructor(
    path: string,
    mode: SocketAccess,
    private readonly backend: BackendSource<B>,
    private readonly makeConnection: ConnectionFactory<B>,
  ) {
    const access = typeof mode === 'number' ? { mode } : mode;
    this.opts = { path, mode: access.mode, gid: access.gid ?? -1, name: nodePath.basename(path) };
  }

  get path(): string {
    return this.opts.path;
  }

  /** Is a front-end connected (or its connection still being torn down)? */
  get connected(): boolean {
    return this.current !== null;
  }

  /**
   * Create the socket and start accepting. A stale socket file at the path is
   * removed first; any other kind of file there is an error (never deleted).
   */
  listen(): void {
    if (this.listenFd >= 0) throw new Error(`vhost-user listener ${this.opts.path} is already listening`);
    removeStaleSocket(this.opts.path);
    this.listenFd = native.unixListen(this.opts.path, BACKLOG, this.opts.mode, this.opts.gid);
    this.watcher = new native.FdWatcher(this.listenFd, (status) => this.onReadable(status));
    this.watcher.start(PollEvents.Readable);
    this.log.info('listening', { ctrlr: this.opts.name, path: this.opts.path });
  }

  private onReadable(status: number): void {
    if (status < 0) {
      this.log.error('accept poll failed', { ctrlr: this.opts.name, status });
      return;
    }
    for (;;) {
      if (this.listenFd < 0) return;
      let fd: number;
      try {
        fd = native.unixAccept(this.listenFd);
      } catch (err) {
        // ECONNABORTED, EMFILE...: log and wait for the next readiness.
        this.log.error('accept failed', { ctrlr: this.opts.name, err: err as Error });
        return;
      }
      if (fd < 0) return;
      if (this.current !== null) {
        this.park(fd);
        continue;
      }
      this.serve(fd);
    }
  }

  /**
   * A front-end that reconnects at once (QEMU's reconnect=, a restarted VM)
   * often arrives while its old connection is still being torn down: the
   * device draining, or its EOF not yet read. Hold the newcomer until the old
   * connection is gone, up to RECONNECT_WAIT_MS; a second live front-end is
   * refused then. At most one waits.
   */
  private park(fd: number): void {
    if (this.parkedFd >= 0) {
      this.log.warn('front-end refused: one is connected and another waits', { ctrlr: this.opts.name });
      native.close(fd);
      return;
    }
    this.parkedFd = fd;
    const current = this.current;
    const timer = setTimeout(() => {
      if (this.parkedFd !== fd) return;
      this.parkedFd = -1;
      this.log.warn('second front-end refused: one is already connected', { ctrlr: this.opts.name });
      native.close(fd);
    }, RECONNECT_WAIT_MS);
    void current?.done.then(() => {
      if (this.parkedFd !== fd) return;
      clearTimeout(timer);
      this.parkedFd = -1;
      if (this.listenFd < 0 || this.current !== null) {
        native.close(fd);
        return;
      }
      this.serve(fd);
    });
  }

  private serve(fd: number): void {
    let conn: ServedConnection;
    try {
      const backend = typeof this.backend === 'function' ? (this.backend as () => B)() : this.backend;
      conn = this.makeConnection(fd, backend, this.log);
    } catch (err) {
      this.log.error('front-end refused: no backend', { ctrlr: this.opts.name, err: err as Error });
      native.close(fd);
      return;
    }
    this.current = conn;
    void conn.done.then(() => {
      if (this.current === conn) this.current = null;
    });
  }

  /**
   * Stop accepting, close the current connection (awaiting its session's
   * close: the device is stopped and every fd closed) and remove the socket
   * file. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.watcher) {
      this.watcher.close();
      this.watcher = null;
    }
    if (this.parkedFd >= 0) {
      native.close(this.parkedFd);
      this.parkedFd = -1;
    }
    if (this.listenFd >= 0) {
      native.close(this.listenFd);
      this.listenFd = -1;
      try {
        fs.unlinkSync(this.opts.path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
          this.log.warn('cannot remove socket file', { ctrlr: this.opts.name, path: this.opts.path, err: err as Error });
        }
      }
    }
    const conn = this.current;
    if (conn) await conn.close('controller closed');
    this.log.info('stopped listening', { ctrlr: this.opts.name, path: this.opts.path });
  }
}

/**
 * The vhost-user listener of a controller: `new VhostUserListener(path,
 * mode, backend)` serves vhost-user sessions; a fourth argument replaces how
 * each accepted socket is served (tests, another session type).
 */
export class VhostUserListener extends UnixListener<VhostBackend> {
  constructor(
    path: string,
    mode: SocketAccess,
    backend: BackendSource<VhostBackend>,
    makeConnection: ConnectionFactory<VhostBackend> = vhostUserConnection,
  ) {
    super(path, mode, backend, makeConnection);
  }
}
