/**
 * One vhost-user stream socket seen from the front-end: sends messages with
 * SCM_RIGHTS fds and collects incoming messages (header + payload + the fds
 * that arrived with them) from an FdWatcher on the calling thread's loop.
 * Independent of the back-end's codec (see frontend-wire.ts).
 * Thread: the test's main thread.
 */
import { native, PollEvents } from '../../bindings';
import type { FdWatcher, NativeError } from '../../bindings';
import { decodeHeader, HEADER_SIZE } from './frontend-wire';

export interface VhostUserMessage {
  request: number;
  flags: number;
  payload: Uint8Array;
  /** fds that arrived with this message; the receiver owns (and must close) them. */
  fds: number[];
}

/** Raised to waiters when the peer closed the connection. */
export class PeerClosedError extends Error {
  readonly code = 'EPEERCLOSED';
  constructor(readonly reason?: string) {
    super('vhost-user peer closed the connection' + (reason ? ` (${reason})` : ''));
  }
}

interface Waiter {
  resolve: (m: VhostUserMessage) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class MessageChannel {
  private readonly recvBuf = new Uint8Array(1 << 16);
  private readonly fdsOut = new Int32Array(8);
  private inbuf = new Uint8Array(0);
  private pendingFds: number[] = [];
  private readonly messages: VhostUserMessage[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly eofWaiters: (() => void)[] = [];
  private watcher: FdWatcher | null;
  private eofSeen = false;
  private fdClosed = false;
  /** Why the read side ended: 'EOF' or an errno code. */
  endReason: string | null = null;
  /** Called for each message when set (instead of queueing it). */
  onMessage: ((m: VhostUserMessage) => void) | null = null;

  constructor(readonly fd: number) {
    this.watcher = new native.FdWatcher(fd, (status) => this.onReadable(status));
    this.watcher.start(PollEvents.Readable | PollEvents.Disconnect);
  }

  get eof(): boolean {
    return this.eofSeen;
  }

  private onReadable(status: number): void {
    if (this.eofSeen) return;
    if (status < 0) {
      this.finish(`uv status ${status}`);
      return;
    }
    for (;;) {
      let n: number;
      try {
        n = native.recvMsg(this.fd, this.recvBuf, this.fdsOut);
      } catch (e) {
        this.finish((e as NativeError).code ?? String(e));
        return;
      }
      if (n === -1) break;
      for (const f of this.fdsOut) if (f >= 0) this.pendingFds.push(f);
      if (n === 0) {
        this.finish('EOF');
        return;
      }
      const grown = new Uint8Array(this.inbuf.byteLength + n);
      grown.set(this.inbuf);
      grown.set(this.recvBuf.subarray(0, n), this.inbuf.byteLength);
      this.inbuf = grown;
      this.parse();
    }
  }

  private parse(): void {
    while (this.inbuf.byteLength >= HEADER_SIZE) {
      const h = decodeHeader(this.inbuf);
      if (this.inbuf.byteLength < HEADER_SIZE + h.size) return;
      const m: VhostUserMessage = {
        request: h.request,
        flags: h.flags,
        payload: this.inbuf.slice(HEADER_SIZE, HEADER_SIZE + h.size),
        fds: this.pendingFds,
      };
      this.pendingFds = [];
      this.inbuf = this.inbuf.slice(HEADER_SIZE + h.size);
      this.deliver(m);
    }
  }

  private deliver(m: VhostUserMessage): void {
    if (this.onMessage) {
      this.onMessage(m);
      return;
    }
    const w = this.waiters.shift();
    if (w) {
      clearTimeout(w.timer);
      w.resolve(m);
    } else {
      this.messages.push(m);
    }
  }

  private finish(reason: string): void {
    this.eofSeen = true;
    this.endReason = reason;
    this.watcher?.close();
    this.watcher = null;
    for (const f of this.pendingFds) native.close(f);
    this.pendingFds = [];
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new PeerClosedError(reason));
    }
    for (const w of this.eofWaiters.splice(0)) w();
  }

  /** The next incoming message, in order. Rejects on EOF or after timeoutMs. */
  next(timeoutMs: number): Promise<VhostUserMessage> {
    const m = this.messages.shift();
    if (m) return Promise.resolve(m);
    if (this.eofSeen) return Promise.reject(new PeerClosedError(this.endReason ?? undefined));
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(Object.assign(new Error(`no vhost-user message within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  /** Resolves true once the peer has closed (EOF / reset), false if it has not after timeoutMs. */
  waitEof(timeoutMs: number): Promise<boolean> {
    if (this.eofSeen) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        const i = this.eofWaiters.indexOf(done);
        if (i >= 0) this.eofWaiters.splice(i, 1);
        resolve(false);
      }, timeoutMs);
      this.eofWaiters.push(done);
    });
  }

  /** Send all of `bytes`, the fds riding on the first byte. Rejects if the peer is gone. */
  async send(bytes: Uint8Array, fds: number[] = [], timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let off = 0;
    let first = true;
    while (off < bytes.byteLength || (first && bytes.byteLength === 0)) {
      if (this.fdClosed) throw new Error('channel closed');
      let n: number;
      try {
        n = native.sendMsg(this.fd, bytes.subarray(off), first && fds.length > 0 ? fds : null);
      } catch (e) {
        const code = (e as NativeError).code;
        if (code === 'EPIPE' || code === 'ECONNRESET') throw new PeerClosedError(code);
        throw e;
      }
      if (n === -1) {
        if (Date.now() > deadline) throw Object.assign(new Error('send would block for too long'), { code: 'ETIMEDOUT' });
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      first = false;
      off += n;
      if (bytes.byteLength === 0) break;
    }
  }

  /** Close our end (fds still queued are closed too). */
  close(): void {
    if (this.fdClosed) return;
    this.watcher?.close();
    this.watcher = null;
    for (const m of this.messages) for (const f of m.fds) native.close(f);
    this.messages.length = 0;
    for (const f of this.pendingFds) native.close(f);
    this.pendingFds = [];
    if (!this.eofSeen) {
      this.eofSeen = true;
      this.endReason = 'closed locally';
      for (const w of this.waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new PeerClosedError('closed locally'));
      }
      for (const w of this.eofWaiters.splice(0)) w();
    }
    this.fdClosed = true;
    native.close(this.fd);
  }
}
