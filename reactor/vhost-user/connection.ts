/**
 * One accepted vhost-user connection: reads one message at a time from the
 * nonblocking Unix socket (header with its fds by recvmsg, then the payload),
 * has the codec decode it, awaits the session's handling, performs the
 * effects the session asks for (signal a call eventfd, close fds, send on
 * the back-end channel — never blocking: those fds are nonblocking) and
 * writes the reply with any fds it carries. The socket loop (readiness,
 * recvmsg with fds, replies, close, teardown's log line) is SocketConnection's
 * (reactor/socket-connection.ts), so it never blocks. On EOF, an I/O error, a
 * ProtocolError or a call fd that cannot be written it closes the socket,
 * logs one line with the reason, closes the session (which stops the device
 * and closes every fd) and tells the backend the front-end is gone.
 * Thread: main (reactor).
 */
import { native, type NativeError } from '../../bindings';
import type { Logger } from '../log';
import { SocketConnection, type ServeEnd } from '../socket-connection';
import type { VhostBackend } from './backend';
import { closeFds, decodeHeader, decodeMessage, ProtocolError, type Header } from './codec';
import { HEADER_SIZE, MAX_FDS } from './messages';
import type { SessionEffect, VhostUserSession } from './session';

/** An eventfd increment of 1 (host order); one buffer for every signal. */
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

export class VhostUserConnection extends SocketConnection {
  constructor(
    fd: number,
    private readonly session: VhostUserSession,
    private readonly backend: VhostBackend,
    log: Logger,
  ) {
    super(fd, log, { peer: 'front-end', ctrlr: backend.name, maxFds: MAX_FDS, protocolError: ProtocolError });
    session.setEffectSink((effects) => {
      const fatal = this.perform(effects);
      if (fatal !== null) void this.close(fatal, 'warn');
    });
    backend.connectionChanged(true);
    this.log.info('front-end connected', { ctrlr: backend.name, fd });
    this.start();
  }

  protected override async serve(): Promise<ServeEnd | null> {
    for (;;) {
      this.checkOpen();
      const head = new Uint8Array(HEADER_SIZE);
      const fds: number[] = [];
      let header: Header;
      let payload: Uint8Array;
      try {
        if (!(await this.readExactly(head, fds, true, 'a message header'))) return null;
        header = decodeHeader(head);
        payload = new Uint8Array(header.size);
        await this.readExactly(payload, fds, false, 'a payload');
      } catch (err) {
        closeFds(fds);
        throw err;
      }
      // Owns the fds from here: closes them itself when it throws.
      const msg = decodeMessage(header, payload, fds);
      const result = await this.session.handle(msg);
      const fatal = this.perform(result.effects);
      if (fatal !== null) return { reason: fatal, level: 'warn' };
      if (result.reply !== null) {
        await this.writeAll(result.reply, result.fds);
        this.log.debug('reply sent', { ctrlr: this.backend.name, bytes: result.reply.byteLength });
      }
    }
  }

  /**
   * The device stops first (its worker finishes the I/O in flight and pushes
   * the completions), then the socket closes: a front-end that sees the
   * socket close (a target shutting down) has already seen every completion.
   */
  protected override async release(): Promise<void> {
    await this.session.close();
  }

  protected override closed(): void {
    this.backend.connectionChanged(false);
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
}
