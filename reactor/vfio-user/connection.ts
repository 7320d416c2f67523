/**
 * One accepted vfio-user connection: reads one command at a time from the
 * nonblocking Unix socket (the 16-byte header by recvmsg, with any fds that
 * rode on it, then the rest of the message), has the codec validate it, lets
 * the session decide, has the backend apply the session's effects (DMA table,
 * IRQ eventfds, reset) and only then writes the reply (with the fds the reply
 * carries) and closes the fds the effects retired. The socket loop
 * (readiness, recvmsg with fds, replies, close, teardown's log line) is
 * SocketConnection's (reactor/socket-connection.ts), so it never blocks. On EOF, an I/O error or a
 * ProtocolError it logs one line with the reason, tells the backend the client
 * is gone (the device stops using guest memory and eventfds), closes every fd
 * the session still held and the socket. Device state is kept for a
 * reconnecting client (vfio-user.rst, "Client Disconnection").
 * Thread: main (reactor).
 */
import type { Logger } from '../log';
import { SocketConnection, type ServeEnd } from '../socket-connection';
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

export class VfioUserConnection extends SocketConnection {
  constructor(
    fd: number,
    private readonly session: VfioUserSession,
    private readonly backend: VfioUserBackend,
    log: Logger,
  ) {
    super(fd, log, { peer: 'vfio-user client', ctrlr: backend.name, maxFds: MAX_FDS, protocolError: ProtocolError });
    this.log.info('vfio-user client connected', { ctrlr: backend.name, fd });
    this.start();
  }

  protected override async serve(): Promise<ServeEnd | null> {
    // A device that cannot start (no engine, a bdev gone) ends this connection, with the reason logged.
    await this.backend.connectionChanged(true);
    for (;;) {
      this.checkOpen();
      const head = new Uint8Array(HEADER_SIZE);
      const fds: number[] = [];
      let msgFds: number[] = fds;
      try {
        if (!(await this.readExactly(head, fds, true, 'a message'))) return null;
        const header = decodeHeader(head);
        const payload = new Uint8Array(header.size - HEADER_SIZE);
        await this.readExactly(payload, fds, false, 'a message');
        msgFds = [];
        const msg = decodeMessage(header, payload, fds);
        const result = this.session.handle(msg);
        if (result.refused !== undefined) this.log.warn('vfio-user command refused', { ctrlr: this.backend.name, reason: result.refused });
        await this.backend.apply(result.effects);
        if (result.reply !== null) await this.writeAll(result.reply, result.fds);
        for (const e of result.effects) if ('retired' in e) closeFds(e.retired);
      } finally {
        closeFds(msgFds);
      }
    }
  }

  /** The device stops using guest memory and eventfds, then every fd the session held is closed. */
  protected override async release(): Promise<void> {
    try {
      await this.backend.connectionChanged(false);
    } catch (err) {
      this.log.error('vfio-user backend disconnect failed', { ctrlr: this.backend.name, err: err as Error });
    }
    closeFds(this.session.close());
  }

  protected override closed(): void {}
}
