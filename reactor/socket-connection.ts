/**
 * The part every accepted Unix-socket protocol connection shares (vhost-user
 * and vfio-user): waiting for readiness through an FdWatcher on the main loop
 * (never blocking), reading exactly N bytes by recvmsg while collecting the
 * fds that ride on them, writing all of a reply with its fds on the first
 * byte, close() from outside while a message is being handled, and the
 * teardown: one log line with the reason and a level that tells a normal
 * disconnect (info) from a protocol fault (warn) and an I/O fault of ours
 * (error), the subclass's release, then the socket closed.
 *
 * A subclass says what a message is (serve(): read, handle, reply until EOF),
 * what to release when the connection ends, and which ProtocolError its codec
 * uses (so its errors are reported as protocol errors).
 * Thread: main (reactor).
 */
import { native, PollEvents, type FdWatcher, type NativeError } from '../bindings';
import type { Logger } from './log';

/** Thrown inside the read/write loop when close() was asked for. */
class ClosedLocally extends Error {}

/** The peer went away in a way the socket reports as an error (a normal disconnect). */
class PeerGone extends Error {}

/** errno names that mean "the peer closed its end", not a fault of ours. */
const PEER_GONE_CODES = new Set(['EPIPE', 'ECONNRESET', 'ENOTCONN', 'ESHUTDOWN']);

/** libuv status → errno name, for the few a poll on a socket reports. */
function uvStatusName(status: number): string {
  switch (-status) {
    case 9:
      return 'EBADF';
    case 32:
      return 'EPIPE';
    case 104:
      return 'ECONNRESET';
    default:
      return `libuv status ${status}`;
  }
}

export type CloseLevel = 'info' | 'warn' | 'error';

/** Why serve() ended on its own (not EOF, not a throw): the reason logged and its level. */
export interface ServeEnd {
  reason: string;
  level: CloseLevel;
}

export interface SocketConnectionNames {
  /** Who is on the other end, in log lines and reasons ("front-end", "vfio-user client"). */
  peer: string;
  /** The controller name logged with every line. */
  ctrlr: string;
  /** Most fds one recvmsg may carry (the recvmsg fd array's size; at least 8 for the addon). */
  maxFds: number;
  /** The codec's protocol error class: its errors end the connection at warn level. */
  protocolError: new (message: string) => Error;
}

export abstract class SocketConnection {
  private readonly watcher: FdWatcher;
  private waiting: ((status: number) => void) | null = null;
  private closeRequested = false;
  private closeReason = 'closed by the target';
  private closeLevel: CloseLevel = 'info';
  /** Reused recvmsg fd array. */
  private readonly fdsOut: Int32Array;
  private finished: Promise<void> | null = null;

  constructor(
    protected readonly fd: number,
    protected readonly log: Logger,
    private readonly names: SocketConnectionNames,
  ) {
    this.fdsOut = new Int32Array(Math.max(8, names.maxFds));
    this.watcher = new native.FdWatcher(fd, (status) => {
      this.watcher.stop();
      const w = this.waiting;
      this.waiting = null;
      w?.(status);
    });
  }

  /** Resolves once the connection is fully torn down (released, socket closed). */
  get done(): Promise<void> {
    if (this.finished === null) throw new Error('connection not started');
    return this.finished;
  }

  /** Begin serving; the subclass calls it once, at the end of its constructor. */
  protected start(): void {
    this.finished ??= this.run();
  }

  /** Ask the connection to close (also while a message is being handled); resolves when it is torn down. */
  close(reason = 'closed by the target', level: 'info' | 'warn' = 'info'): Promise<void> {
    if (!this.closeRequested) {
      this.closeRequested = true;
      this.closeReason = reason;
      this.closeLevel = level;
      const w = this.waiting;
      this.waiting = null;
      if (w) {
        this.watcher.stop();
        w(0);
      }
    }
    return this.done;
  }

  /** Read, handle and answer messages until EOF at a message boundary (return null) or a reason to end (return it). */
  protected abstract serve(): Promise<ServeEnd | null>;

  /** Let go of everything the connection held but the socket (runs before the socket closes). */
  protected abstract release(): Promise<void>;

  /** After the socket closed and the line was logged. */
  protected abstract closed(): void;

  /** Throws (ending serve()) when close() was asked for. */
  protected checkOpen(): void {
    if (this.closeRequested) throw new ClosedLocally();
  }

  /** Wait until the socket is ready for `events`; throws if close() was called or the peer went away. */
  private async waitFor(events: number): Promise<void> {
    this.checkOpen();
    const status = await new Promise<number>((resolve) => {
      this.waiting = resolve;
      this.watcher.start(events | PollEvents.Disconnect);
    });
    this.checkOpen();
    // An error on a socket we poll is the peer going away (e.g. it closed with a reply unread).
    if (status < 0) throw new PeerGone(`${this.names.peer} went away (socket poll reported ${uvStatusName(status)})`);
  }

  private async run(): Promise<void> {
    let reason = `${this.names.peer} closed the connection`;
    let level: CloseLevel = 'info';
    try {
      const end = await this.serve();
      if (end !== null) ({ reason, level } = end);
    } catch (err) {
      const code = (err as Partial<NativeError>).code;
      if (err instanceof ClosedLocally) {
        reason = this.closeReason;
        level = this.closeLevel;
      } else if (err instanceof PeerGone) {
        reason = err.message;
      } else if (code !== undefined && PEER_GONE_CODES.has(code)) {
        reason = `${this.names.peer} went away (${(err as NativeError).syscall ?? 'I/O'}: ${code})`;
      } else if (err instanceof this.names.protocolError) {
        reason = `protocol error: ${err.message}`;
        level = 'warn';
      } else {
        const e = err as Partial<NativeError> & Error;
        reason = e.code ? `${e.syscall ?? 'I/O'} failed: ${e.code}` : `error: ${e.message}`;
        level = 'error';
      }
    }
    this.watcher.close();
    try {
      await this.release();
    } catch (err) {
      this.log.error('connection release failed', { ctrlr: this.names.ctrlr, err: err as Error });
    }
    try {
      native.close(this.fd);
    } catch (err) {
      this.log.error('socket close failed', { ctrlr: this.names.ctrlr, err: err as Error });
    }
    this.log[level](`${this.names.peer} disconnected`, { ctrlr: this.names.ctrlr, reason });
    this.closed();
  }

  /**
   * Fill `buf` by recvmsg (so fds a peer attaches anywhere are collected, not
   * dropped by the kernel); fds received are appended to `fds`, owned by the
   * caller from then on. False on EOF before the first byte when `eofOk` and
   * no fd came; `what` names the part in the end-of-stream error.
   */
  protected async readExactly(buf: Uint8Array, fds: number[], eofOk: boolean, what: string): Promise<boolean> {
    let got = 0;
    while (got < buf.byteLength) {
      this.checkOpen();
      let n: number;
      try {
        n = native.recvMsg(this.fd, buf.subarray(got), this.fdsOut);
      } catch (err) {
        if ((err as NativeError).code === 'EMSGSIZE') {
          throw new this.names.protocolError(`more than ${this.names.maxFds} fds on one message (control data truncated)`);
        }
        throw err;
      }
      for (let i = 0; i < this.fdsOut.length; i++) if (this.fdsOut[i] >= 0) fds.push(this.fdsOut[i]);
      if (n < 0) {
        await this.waitFor(PollEvents.Readable);
        continue;
      }
      if (n === 0) {
        if (eofOk && got === 0 && fds.length === 0) return false;
        throw new this.names.protocolError(`end of stream inside ${what} (${got} of ${buf.byteLength} bytes)`);
      }
      got += n;
    }
    return true;
  }

  /** Write all of `bytes`, the fds (still owned by the caller) riding on the first byte. */
  protected async writeAll(bytes: Uint8Array, fds: readonly number[] = []): Promise<void> {
    let off = 0;
    let withFds: number[] | null = fds.length > 0 ? [...fds] : null;
    while (off < bytes.byteLength) {
      this.checkOpen();
      const n = native.sendMsg(this.fd, bytes.subarray(off), withFds);
      if (n < 0) {
        await this.waitFor(PollEvents.Writable);
        continue;
      }
      withFds = null;
      off += n;
    }
  }
}
