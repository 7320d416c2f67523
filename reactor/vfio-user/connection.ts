/**
 * One accepted vfio-user connection: reads one command at a time from the
 * nonblocking Unix socket (the 16-byte header by recvmsg, with any fds that
 * rode on it, then the rest of the message), has the codec validate it, lets
 * the session decide, has the backend apply the session's effects (DMA table,
 * IRQ eventfds, reset) and only then writes the reply (with the fds the reply
 * carries) and closes the fds the effects retired. Readiness comes from an
 * FdWatcher on the main loop, so it never blocks. On EOF, an I/O error or a
 * ProtocolError it logs one line with the reason, tells the backend the client
 * is gone (the device stops using guest memory and eventfds), closes every fd
 * the session still held and the socket. Device state is kept for a
 * reconnecting client (vfio-user.rst, "Client Disconnection").
 * Thread: main (reactor).
 */
import { native, PollEvents, type FdWatcher, type NativeError } from '../../bindings';
import type { Logger } from '../log';
import { closeFds, decodeHeader, decodeMessage, ProtocolError } from './codec';
import { HEADER_SIZE, MAX_FDS } from './messages';
import type { SessionEffect, VfioUserSession } from './session';

/** What a connection needs of the controller behind it. */
export interface VfioUserBackend {
  readonly name: string;
  /** Apply effects in order (the engine maps the new DMA table, takes the new eventfds, resets); resolves when the engine let go of what they retire. */
  apply(effects: readonly SessionEffect[]): Promise<void>;
  /** The client connected (true) or is gone (false; resolves once the engine stopped using its memory and eventfds). */
  connectionChanged(connected: boolean): Promise<void>;
}

class ClosedLocally extends Error {}

export class VfioUserConnection {
  private readonly watcher: FdWatcher;
  private waiting: ((status: number) => void) | null = null;
  private closeRequested = false;
  private closeReason = 'closed by the target';
  private readonly fdsOut = new Int32Array(MAX_FDS);
  readonly done: Promise<void>;

  constructor(
    private readonly fd: number,
    private readonly session: VfioUserSession,
    private readonly backend: VfioUserBackend,
    private readonly log: Logger,
  ) {
    this.watcher = new native.FdWatcher(fd, (status) => {
      this.watcher.stop();
      const w = this.waiting;
      this.waiting = null;
      w?.(status);
    });
    this.log.info('vfio-user client connected', { ctrlr: backend.name, fd });
    this.done = this.run();
  }

  close(reason = 'closed by the target'): Promise<void> {
    if (!this.closeRequested) {
      this.closeRequested = true;
      this.closeReason = reason;
      const w = this.waiting;
      this.waiting = null;
      if (w) {
        this.watcher.stop();
        w(0);
      }
    }
    return this.done;
  }

  private async waitFor(events: number): Promise<void> {
    if (this.closeRequested) throw new ClosedLocally();
    const status = await new Promise<number>((resolve) => {
      this.waiting = resolve;
      this.watcher.start(events | PollEvents.Disconnect);
    });
    if (this.closeRequested) throw new ClosedLocally();
    if (status < 0) throw new Error(`poll failed: libuv status ${status}`);
  }

  private async run(): Promise<void> {
    let reason = 'client closed the connection';
    let level: 'info' | 'warn' | 'error' = 'info';
    try {
      // A device that cannot start (no engine, a bdev gone) ends this connection, with the reason logged below.
      await this.backend.connectionChanged(true);
      for (;;) {
        if (this.closeRequested) throw new ClosedLocally();
        const head = new Uint8Array(HEADER_SIZE);
        const fds: number[] = [];
        let msgFds: number[] = fds;
        try {
          if (!(await this.readExactly(head, fds, true))) break;
          const header = decodeHeader(head);
          const payload = new Uint8Array(header.size - HEADER_SIZE);
          await this.readExactly(payload, fds, false);
          msgFds = [];
          const msg = decodeMessage(header, payload, fds);
          const result = this.session.handle(msg);
          await this.backend.apply(result.effects);
          if (result.reply !== null) await this.writeAll(result.reply, result.fds);
          for (const e of result.effects) if ('retired' in e) closeFds(e.retired);
        } finally {
          closeFds(msgFds);
        }
      }
    } catch (err) {
      if (err instanceof ClosedLocally) {
        reason = this.closeReason;
      } else if (err instanceof ProtocolError) {
        reason = `protocol error: ${err.message}`;
        level = 'warn';
      } else {
        const e = err as Partial<NativeError> & Error;
        reason = e.code && e.syscall ? `${e.syscall} failed: ${e.code}` : `error: ${e.message}`;
        level = 'error';
      }
    }
    this.watcher.close();
    try {
      await this.backend.connectionChanged(false);
    } catch (err) {
      this.log.error('vfio-user backend disconnect failed', { ctrlr: this.backend.name, err: err as Error });
    }
    closeFds(this.session.close());
    try {
      native.close(this.fd);
    } catch (err) {
      this.log.error('socket close failed', { ctrlr: this.backend.name, err: err as Error });
    }
    this.log[level]('vfio-user client disconnected', { ctrlr: this.backend.name, reason });
  }

  /** Fill `buf`; false on EOF before the first byte when `eofOk`. fds received are appended to `fds`. */
  private async readExactly(buf: Uint8Array, fds: number[], eofOk: boolean): Promise<boolean> {
    let got = 0;
    while (got < buf.byteLength) {
      let n: number;
      try {
        n = native.recvMsg(this.fd, buf.subarray(got), this.fdsOut);
      } catch (err) {
        if ((err as NativeError).code === 'EMSGSIZE') throw new ProtocolError(`more than ${MAX_FDS} fds on one message`);
        throw err;
      }
      for (let i = 0; i < this.fdsOut.length; i++) if (this.fdsOut[i] >= 0) fds.push(this.fdsOut[i]);
      if (n < 0) {
        await this.waitFor(PollEvents.Readable);
        continue;
      }
      if (n === 0) {
        if (eofOk && got === 0 && fds.length === 0) return false;
        throw new ProtocolError(`end of stream inside a message (${got} of ${buf.byteLength} bytes)`);
      }
      got += n;
    }
    return true;
  }

  private async writeAll(bytes: Uint8Array, fds: number[]): Promise<void> {
    let off = 0;
    let withFds: number[] | null = fds.length > 0 ? fds : null;
    while (off < bytes.byteLength) {
      if (this.closeRequested) throw new ClosedLocally();
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
