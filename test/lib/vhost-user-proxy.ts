/**
 * A vhost-user man in the middle for tests: listens on a Unix socket (where
 * QEMU connects), opens a connection to the real back-end for each front-end
 * connection, and forwards every message both ways, each with the SCM_RIGHTS
 * fds that came with it (memory tables, kick/call eventfds, the dirty log,
 * the back-end request channel).
 *
 * In `transparent` mode the bytes are forwarded unchanged. In `strip-log`
 * mode the back-end is kept from dirty logging, as a back-end without
 * logging would behave: VHOST_F_LOG_ALL (feature bit 26) is cleared in
 * SET_FEATURES and VHOST_VRING_F_LOG (flags bit 0) in SET_VRING_ADDR, so
 * the back-end writes guest pages during a migration without telling QEMU.
 * This lets the migration e2e test show that it can fail; vhostd itself has
 * no switch for it. Layouts: QEMU docs/interop/vhost-user.rst ("Message
 * specification": header u32 request, u32 flags, u32 size; "A vring address
 * description"). Main-thread test helper.
 */
import fs from 'node:fs';
import { native, PollEvents } from '../../bindings';
import type { FdWatcher, NativeError } from '../../bindings';
import { concat, decodeHeader, encodeHeader, HEADER_SIZE, Req } from './frontend-wire';

export type ProxyMode = 'transparent' | 'strip-log';

const LOG_ALL = 1n << 26n;
const VRING_F_LOG = 0x1;

/** What the proxy saw and changed, for the test's assertions. */
export interface ProxyCounts {
  connections: number;
  /** Messages forwarded front-end → back-end and back. */
  toBackend: number;
  toFrontend: number;
  /** fds passed on (either way). */
  fds: number;
  /** SET_FEATURES with LOG_ALL set by the front-end, and SET_VRING_ADDR with VRING_F_LOG. */
  logAllSeen: number;
  vringLogSeen: number;
  /** Of those, how many the proxy stripped (strip-log mode). */
  stripped: number;
}

interface Message {
  request: number;
  flags: number;
  payload: Uint8Array;
  /** fds that came with it; the proxy closes its copies once they are passed on. */
  fds: number[];
}

/**
 * One side of a proxied connection. Reads exactly one header, then exactly its
 * payload (recvmsg never asked for more than that), so the fds a peer sent with
 * a message (SCM_RIGHTS on its first byte) arrive with that message and no other.
 */
class Side {
  private readonly header = new Uint8Array(HEADER_SIZE);
  private payload: Uint8Array | null = null;
  private got = 0;
  private fds: number[] = [];
  private readonly fdsOut = new Int32Array(8);
  private watcher: FdWatcher | null;
  private closed = false;
  endReason: string | null = null;

  constructor(
    readonly fd: number,
    private readonly onMessage: (m: Message) => void,
    private readonly onEnd: () => void,
  ) {
    this.watcher = new native.FdWatcher(fd, (status) => this.onReadable(status));
    this.watcher.start(PollEvents.Readable | PollEvents.Disconnect);
  }

  private onReadable(status: number): void {
    if (this.endReason !== null) return;
    if (status < 0) return this.end(`uv status ${status}`);
    for (;;) {
      const target = this.payload ?? this.header;
      let n: number;
      try {
        n = native.recvMsg(this.fd, target.subarray(this.got), this.fdsOut);
      } catch (e) {
        return this.end((e as NativeError).code ?? String(e));
      }
      if (n === -1) return;
      for (const f of this.fdsOut) if (f >= 0) this.fds.push(f);
      if (n === 0) return this.end('EOF');
      this.got += n;
      if (this.got < target.byteLength) continue;
      if (this.payload === null) {
        const h = decodeHeader(this.header);
        this.payload = new Uint8Array(h.size);
        this.got = 0;
        if (h.size > 0) continue;
      }
      const h = decodeHeader(this.header);
      const m: Message = { request: h.request, flags: h.flags, payload: this.payload, fds: this.fds };
      this.payload = null;
      this.got = 0;
      this.fds = [];
      this.onMessage(m);
    }
  }

  private end(reason: string): void {
    this.endReason = reason;
    this.watcher?.close();
    this.watcher = null;
    this.onEnd();
  }

  /** Send all of `bytes`, the fds riding on the first byte; waits while the socket is full. */
  async send(bytes: Uint8Array, fds: number[]): Promise<void> {
    const deadline = Date.now() + 30_000;
    let off = 0;
    while (off < bytes.byteLength) {
      if (this.closed) throw new Error('closed');
      const n = native.sendMsg(this.fd, bytes.subarray(off), off === 0 && fds.length > 0 ? fds : null);
      if (n === -1) {
        if (Date.now() > deadline) throw new Error('send would block for 30 s');
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      off += n;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    for (const f of this.fds) native.close(f);
    this.fds = [];
    native.close(this.fd);
  }
}

interface Pair {
  front: Side;
  back: Side;
  chains: Promise<void>[];
}

export class VhostUserProxy {
  readonly counts: ProxyCounts = { connections: 0, toBackend: 0, toFrontend: 0, fds: 0, logAllSeen: 0, vringLogSeen: 0, stripped: 0 };
  private readonly listenFd: number;
  private watcher: FdWatcher | null;
  private readonly pairs = new Set<Pair>();
  /** Forwarding errors (a send that failed for another reason than the peer closing). */
  readonly errors: string[] = [];

  constructor(
    readonly path: string,
    readonly backendPath: string,
    readonly mode: ProxyMode,
  ) {
    fs.rmSync(path, { force: true });
    this.listenFd = native.unixListen(path, 4, 0o600);
    this.watcher = new native.FdWatcher(this.listenFd, () => this.accept());
    this.watcher.start(PollEvents.Readable);
  }

  private accept(): void {
    for (;;) {
      const fd = native.unixAccept(this.listenFd);
      if (fd < 0) return;
      let backFd: number;
      try {
        backFd = native.unixConnect(this.backendPath);
      } catch (err) {
        this.errors.push(`connect ${this.backendPath}: ${String(err)}`);
        native.close(fd);
        continue;
      }
      this.counts.connections++;
      const chains = [Promise.resolve(), Promise.resolve()];
      // Either side ending ends the pair, once what was read before is passed on.
      const end = (): void => void Promise.all(pair.chains).then(() => this.closePair(pair));
      const pair: Pair = {
        front: new Side(fd, (m) => this.forward(pair, m, true), end),
        back: new Side(backFd, (m) => this.forward(pair, m, false), end),
        chains,
      };
      this.pairs.add(pair);
    }
  }

  /** Pass one message on, in order per direction (chains[0]: to the back-end, chains[1]: back). */
  private forward(pair: Pair, m: Message, toBackend: boolean): void {
    if (process.env.VHOSTD_PROXY_DEBUG === '1') process.stderr.write(`proxy ${toBackend ? '->' : '<-'} ${m.request} flags ${m.flags} size ${m.payload.byteLength} fds ${m.fds.length}\n`);
    const to = toBackend ? pair.back : pair.front;
    const payload = toBackend ? this.rewrite(m) : m.payload;
    const bytes = concat([encodeHeader(m.request, m.flags, payload.byteLength), payload]);
    const i = toBackend ? 0 : 1;
    pair.chains[i] = pair.chains[i]!.then(async () => {
      try {
        await to.send(bytes, m.fds);
        if (toBackend) this.counts.toBackend++;
        else this.counts.toFrontend++;
        this.counts.fds += m.fds.length;
      } catch (err) {
        if (to.endReason === null) this.errors.push(`forward request ${m.request}: ${String(err)}`);
      } finally {
        for (const f of m.fds) native.close(f);
      }
    });
  }

  /** The payload to pass to the back-end: unchanged, or with the logging bits cleared (strip-log). */
  private rewrite(m: Message): Uint8Array {
    const p = m.payload;
    if (m.request === Req.SET_FEATURES && p.byteLength >= 8) {
      const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
      const features = v.getBigUint64(0, true);
      if ((features & LOG_ALL) === 0n) return p;
      this.counts.logAllSeen++;
      if (this.mode === 'transparent') return p;
      const out = p.slice();
      new DataView(out.buffer).setBigUint64(0, features & ~LOG_ALL, true);
      this.counts.stripped++;
      return out;
    }
    if (m.request === Req.SET_VRING_ADDR && p.byteLength >= 8) {
      const flags = new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(4, true);
      if ((flags & VRING_F_LOG) === 0) return p;
      this.counts.vringLogSeen++;
      if (this.mode === 'transparent') return p;
      const out = p.slice();
      new DataView(out.buffer).setUint32(4, flags & ~VRING_F_LOG, true);
      this.counts.stripped++;
      return out;
    }
    return p;
  }

  private closePair(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    pair.front.close();
    pair.back.close();
  }

  /** Stop listening and close every connection (both sides). */
  close(): void {
    this.watcher?.close();
    this.watcher = null;
    for (const pair of [...this.pairs]) this.closePair(pair);
    native.close(this.listenFd);
    fs.rmSync(this.path, { force: true });
  }
}
