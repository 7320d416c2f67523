/**
 * One accepted vhost-user connection: reads one message at a time from the
 * nonblocking Unix socket (header with its fds by recvmsg, then the payload),
 * has the codec decode it, awaits the session's handling, performs the
 * effects the session asks for (signal a call eventfd, close fds, send on
 * the back-end channel — never blocking: those fds are nonblocking) and
 * writes the reply with any fds it carries. It waits for readiness through
 * an FdWatcher on the main loop, so it never blocks. On EOF, an I/O error, a
 * ProtocolError or a call fd that cannot be written it closes the socket,
 * logs one line with the reason, closes the session (which stops the device
 * and closes every fd) and tells the backend the front-end is gone.
 * Thread: main (reactor).
 */
import { native, PollEvents, type FdWatcher, type NativeError } from '../../bindings';
import type { Logger } from '../log';
import type { VhostBackend } from './backend';
import { closeFds, decodeHeader, decodeMessage, ProtocolError, type Header } from './codec';
import { HEADER_SIZE, MAX_FDS } from './messages';
import type { SessionEffect, VhostUserSession } from './session';

/** Thrown inside the read/write loop when close() was asked for. */
class ClosedLocally extends Error {}

/** The front-end went away in a way the socket reports as an error (a normal disconnect). */
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

/** An eventfd increment of 1 (host order); one buffer for every signal. */
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

export class VhostUserConnection {
  private readonly watcher: FdWatcher;
  private waiting: ((status: number) => void) | null = null;
  private closeRequested = false;
  private closeReason = 'closed by the target';
  private closeLevel: 'info' | 'warn' = 'info';
  /** Reused recvmsg fd array (the addon wants at least 8 slots). */
  private readonly fdsOut = new Int32Array(MAX_FDS);
  /** Resolves once the connection is fully torn down (socket closed, session closed). */
  readonly done: Promise<void>;

  constructor(
    private readonly fd: number,
    private readonly session: VhostUserSession,
    private readonly backend: VhostBackend,
    private readonly log: Logger,
  ) {
    this.watcher = new native.FdWatcher(fd, (status) => {
      this.watcher.stop();
      const w = this.waiting;
      this.waiting = null;
      w?.(status);
    });
    session.setEffectSink((effects) => {
      const fatal = this.perform(effects);
      if (fatal !== null) void this.close(fatal, 'warn');
    });
    backend.connectionChanged(true);
    this.log.info('front-end connected', { ctrlr: backend.name, fd });
    this.done = this.run();
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

  /** Wait until the socket is ready for `events`; throws ClosedLocally if close() was called. */
  private async waitFor(events: number): Promise<void> {
    if (this.closeRequested) throw new ClosedLocally();
    const status = await new Promise<number>((resolve) => {
      this.waiting = resolve;
      this.watcher.start(events | PollEvents.Disconnect);
    });
    if (this.closeRequested) throw new ClosedLocally();
    // An error on a socket we poll is the front-end going away (e.g. it closed with a reply unread).
    if (status < 0) throw new PeerGone(`front-end went away (socket poll reported ${uvStatusName(status)})`);
  }

  private async run(): Promise<void> {
    let reason = 'front-end closed the connection';
    let level: 'info' | 'warn' | 'error' = 'info';
    try {
      for (;;) {
        if (this.closeRequested) throw new ClosedLocally();
        const head = await this.readHeader();
        if (head === null) break;
        const payload = await this.readPayload(head.header.size, head.fds);
        const msg = decodeMessage(head.header, payload, head.fds);
        const result = await this.session.handle(msg);
        const fatal = this.perform(result.effects);
        if (fatal !== null) {
          reason = fatal;
          level = 'warn';
          break;
        }
        if (result.reply !== null) await this.writeAll(result.reply, result.fds);
      }
    } catch (err) {
      const code = (err as Partial<NativeError>).code;
      if (err instanceof ClosedLocally) {
        reason = this.closeReason;
        level = this.closeLevel;
      } else if (err instanceof PeerGone) {
        reason = err.message;
      } else if (code !== undefined && PEER_GONE_CODES.has(code)) {
        reason = `front-end went away (${(err as NativeError).syscall ?? 'I/O'}: ${code})`;
      } else if (err instanceof ProtocolError) {
        reason = `protocol error: ${err.message}`;
        level = 'warn';
      } else {
        const e = err as Partial<NativeError> & Error;
        reason = e.code ? `${e.syscall ?? 'I/O'} failed: ${e.code}` : `error: ${e.message}`;
        level = 'error';
      }
    }
    this.watcher.close();
    // The device stops first (its worker finishes the I/O in flight and pushes
    // the completions), then the socket closes: a front-end that sees the
    // socket close (a target shutting down) has already seen every completion.
    try {
      await this.session.close();
    } catch (err) {
      this.log.error('session close failed', { ctrlr: this.backend.name, err: err as Error });
    }
    try {
      native.close(this.fd);
    } catch (err) {
      this.log.error('socket close failed', { ctrlr: this.backend.name, err: err as Error });
    }
    this.log[level]('front-end disconnected', { ctrlr: this.backend.name, reason });
    this.backend.connectionChanged(false);
  }

  /**
   * Read the 12-byte header and the fds that came with it. Null on EOF at a
   * message boundary. Any fds received are closed if this fails.
   */
  private async readHeader(): Promise<{ header: Header; fds: number[] } | null> {
    const buf = new Uint8Array(HEADER_SIZE);
    const fds: number[] = [];
    try {
      let got = 0;
      while (got < HEADER_SIZE) {
        const n = this.recv(buf.subarray(got), fds);
        if (n < 0) {
          await this.waitFor(PollEvents.Readable);
          continue;
        }
        if (n === 0) {
          if (got === 0 && fds.length === 0) return null;
          throw new ProtocolError(`end of stream inside a message header (${got} of ${HEADER_SIZE} bytes)`);
        }
        got += n;
      }
      return { header: decodeHeader(buf), fds };
    } catch (err) {
      closeFds(fds);
      throw err;
    }
  }

  /**
   * Read exactly `size` payload bytes. recvmsg rather than read(2), so that fds
   * a front-end attaches to the payload part are collected (and checked by the
   * codec) instead of being silently dropped by the kernel.
   */
  private async readPayload(size: number, fds: number[]): Promise<Uint8Array> {
    const buf = new Uint8Array(size);
    try {
      let got = 0;
      while (got < size) {
        const n = this.recv(buf.subarray(got), fds);
        if (n < 0) {
          await this.waitFor(PollEvents.Readable);
          continue;
        }
        if (n === 0) throw new ProtocolError(`end of stream inside a payload (${got} of ${size} bytes)`);
        got += n;
      }
      return buf;
    } catch (err) {
      closeFds(fds);
      fds.length = 0;
      throw err;
    }
  }

  /** One recvmsg; received fds are appended to `fds` (owned by the caller from then on). */
  private recv(into: Uint8Array, fds: number[]): number {
    let n: number;
    try {
      n = native.recvMsg(this.fd, into, this.fdsOut);
    } catch (err) {
      if ((err as NativeError).code === 'EMSGSIZE') {
        throw new ProtocolError(`more than ${MAX_FDS} fds on one message (control data truncated)`);
      }
      throw err;
    }
    for (let i = 0; i < this.fdsOut.length; i++) {
      if (this.fdsOut[i] >= 0) fds.push(this.fdsOut[i]);
    }
    return n;
  }

  /**
   * Perform the session's effects in order, without blocking. Returns why
   * the connection must close (a call fd that cannot be written at all), or
   * null; fds to close are closed even then.
   */
  private perform(effects: readonly SessionEffect[]): string | null {
    let fatal: string | null = null;
    for (const e of effects) {
      switch (e.kind) {
        case 'close':
          for (const f of e.fds) f.close();
          break;
        case 'signal':
          if (fatal === null) fatal = this.signal(e.queue, e.fd.fd);
          break;
        case 'backendMessage':
          if (fatal === null) this.sendBackend(e.fd.fd, e.bytes, e.what);
          break;
        case 'fail':
          if (fatal === null) fatal = e.reason;
          break;
      }
    }
    return fatal;
  }

  /** Add 1 to a (nonblocking) call fd; EAGAIN = already signalled. A reason to close on any other failure. */
  private signal(queue: number, fd: number): string | null {
    if (fd < 0) return null;
    try {
      const n = native.write(fd, ONE);
      if (n >= 0 && n !== ONE.byteLength) return `call fd of queue ${queue} took ${n} of 8 bytes: not an eventfd`;
      return null;
    } catch (err) {
      const e = err as NativeError;
      return `call fd of queue ${queue} cannot be signalled (${e.syscall ?? 'write'}: ${e.code ?? e.message})`;
    }
  }

  /** One nonblocking send on the back-end channel; a full or broken channel drops the message with a warning. */
  private sendBackend(fd: number, bytes: Uint8Array, what: string): void {
    if (fd < 0) return;
    let problem: string | null = null;
    try {
      const n = native.sendMsg(fd, bytes, null);
      if (n < 0) problem = 'the channel is full';
      else if (n !== bytes.byteLength) problem = `short send (${n} of ${bytes.byteLength} bytes)`;
    } catch (err) {
      const e = err as NativeError;
      problem = `${e.syscall ?? 'sendmsg'} failed: ${e.code ?? e.message}`;
    }
    if (problem !== null) this.log.warn(`${what} not sent on the back-end channel`, { ctrlr: this.backend.name, reason: problem });
  }

  /** Write all of `bytes`, the fds (still owned by the session) riding on the first byte. */
  private async writeAll(bytes: Uint8Array, fds: readonly number[] = []): Promise<void> {
    let off = 0;
    while (off < bytes.byteLength) {
      if (this.closeRequested) throw new ClosedLocally();
      const n = native.sendMsg(this.fd, bytes.subarray(off), off === 0 && fds.length > 0 ? [...fds] : null);
      if (n < 0) {
        await this.waitFor(PollEvents.Writable);
        continue;
      }
      off += n;
    }
    this.log.debug('reply sent', { ctrlr: this.backend.name, bytes: bytes.byteLength });
  }
}
