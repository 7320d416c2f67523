/**
 * vhost-user connection over a real socketpair, with the in-repo front-end's
 * channel on the other end and a do-nothing backend: the connection performs
 * the session's effects without ever blocking the reactor (issue #15 item 1),
 * closes with a logged reason when a call fd cannot be written at all, sends
 * CONFIG_CHANGE_MSG on the back-end channel, and logs a front-end that goes
 * away as a normal disconnect.
 */
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { native } from '../../bindings';
import type { QueueStopResult, StopResult } from '../../engine/control';
import type { Logger } from '../../reactor/log';
import type { BackendChannel, VhostBackend } from '../../reactor/vhost-user/backend';
import { VhostUserConnection } from '../../reactor/vhost-user/connection';
import { VhostUserListener } from '../../reactor/vhost-user/listener';
import { VhostUserSession } from '../../reactor/vhost-user/session';
import { MessageChannel } from '../lib/frontend-channel';
import { encodeHeader, Flags, readU64, Req, u64, vringFdPayload, concat } from '../lib/frontend-wire';

const O_NONBLOCK = 0o4000;
const F_PROTOCOL = 1n << 30n;
const PROTO_REPLY_ACK = 1n << 3n;
const PROTO_BACKEND_REQ = 1n << 5n;
const PROTO_CONFIG = 1n << 9n;

class IdleBackend implements VhostBackend {
  readonly name = 'conn0';
  readonly features = F_PROTOCOL | (1n << 32n);
  readonly protocolFeatures = PROTO_REPLY_ACK | PROTO_BACKEND_REQ | PROTO_CONFIG;
  readonly maxQueues = 2;
  connected: boolean[] = [];
  session: BackendChannel | null = null;
  readConfig(size: number): Uint8Array {
    return new Uint8Array(Math.max(size, 60));
  }
  writeConfig(): boolean {
    return true;
  }
  async start(): Promise<void> {}
  async stop(): Promise<StopResult> {
    return { queues: [] };
  }
  async startQueue(): Promise<void> {}
  async stopQueue(index: number): Promise<QueueStopResult> {
    return { index, pos: { availIdx: 0, availWrap: false, usedIdx: 0, usedWrap: false } };
  }
  async setCallFd(): Promise<void> {}
  async updateMemory(): Promise<void> {}
  connectionChanged(connected: boolean): void {
    this.connected.push(connected);
  }
  attachSession(session: BackendChannel | null): void {
    this.session = session;
  }
}

type Line = { level: string; message: string; fields?: Record<string, unknown> };

function recorder(lines: Line[]): Logger {
  const at =
    (level: string) =>
    (message: string, fields?: Record<string, unknown>): void => {
      lines.push({ level, message, fields });
    };
  return { error: at('error'), warn: at('warn'), notice: at('notice'), info: at('info'), debug: at('debug') };
}

function setup(): { be: IdleBackend; conn: VhostUserConnection; fe: MessageChannel; lines: Line[] } {
  const [a, b] = native.socketPair();
  const be = new IdleBackend();
  const lines: Line[] = [];
  const log = recorder(lines);
  const conn = new VhostUserConnection(a, new VhostUserSession(be, log), be, log);
  return { be, conn, fe: new MessageChannel(b), lines };
}

function request(req: number, payload: Uint8Array = new Uint8Array(0), needReply = false): Uint8Array {
  return concat([encodeHeader(req, Flags.VERSION | (needReply ? Flags.NEED_REPLY : 0), payload.byteLength), payload]);
}

function disconnectLine(lines: Line[]): Line | undefined {
  return lines.find((l) => l.message === 'front-end disconnected');
}

t.test('native fdGetFlags / fdSetNonBlocking', (tt) => {
  const fd = fs.openSync('/dev/null', 'r');
  tt.equal(native.fdGetFlags(fd) & O_NONBLOCK, 0);
  tt.equal(native.fdSetNonBlocking(fd), true, 'newly set');
  tt.equal(native.fdGetFlags(fd) & O_NONBLOCK, O_NONBLOCK);
  tt.equal(native.fdSetNonBlocking(fd), false, 'already set');
  fs.closeSync(fd);
  tt.throws(() => native.fdSetNonBlocking(fd), { code: 'EBADF', syscall: 'fcntl' });
  tt.throws(() => native.fdGetFlags(fd), { code: 'EBADF', syscall: 'fcntl' });
  tt.end();
});

t.test('SET_VRING_CALL with a full, blocking pipe does not freeze the reactor', async (tt) => {
  const { be, conn, fe } = setup();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-conn-'));
  const fifo = path.join(dir, 'call');
  execFileSync('mkfifo', [fifo]);
  // A reader (O_RDWR never blocks on open), used first to fill the pipe to the brim.
  const filler = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  const chunk = Buffer.alloc(65536, 1);
  for (;;) {
    try {
      fs.writeSync(filler, chunk);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
      throw err;
    }
  }
  // A second, blocking open file description of the same pipe: a write to it would block forever.
  const blocking = fs.openSync(fifo, fs.constants.O_WRONLY);
  tt.equal(native.fdGetFlags(blocking) & O_NONBLOCK, 0, 'the call fd starts out blocking');
  await fe.send(request(Req.SET_VRING_CALL, vringFdPayload(0, false)), [blocking]);
  // The session asks for one signal of the new call fd; on a blocking full pipe that write would hang here.
  let ticked = false;
  const timer = setTimeout(() => (ticked = true), 1);
  await fe.send(request(Req.GET_FEATURES));
  const reply = await fe.next(5000);
  tt.equal(reply.request, Req.GET_FEATURES, 'the connection still answers');
  tt.equal(readU64(reply.payload), be.features);
  await new Promise((r) => setTimeout(r, 5));
  tt.ok(ticked, 'timers still run');
  clearTimeout(timer);
  tt.equal(native.fdGetFlags(blocking) & O_NONBLOCK, O_NONBLOCK, 'the adopted call fd was made nonblocking');
  tt.notOk(fe.eof, 'EAGAIN on a call fd means "already signalled": the connection stays');
  fe.close();
  await conn.done;
  tt.same(be.connected, [true, false]);
  fs.closeSync(blocking);
  fs.closeSync(filler);
  fs.rmSync(dir, { recursive: true });
});

t.test('a call fd that cannot be written closes the connection with a logged reason', async (tt) => {
  const { be, conn, fe, lines } = setup();
  const readOnly = fs.openSync('/dev/null', 'r');
  await fe.send(request(Req.SET_VRING_CALL, vringFdPayload(1, false)), [readOnly]);
  fs.closeSync(readOnly);
  tt.ok(await fe.waitEof(5000), 'the target closed the connection');
  await conn.done;
  tt.same(be.connected, [true, false]);
  const line = disconnectLine(lines);
  tt.equal(line?.level, 'warn');
  tt.match(String(line?.fields?.reason), /call fd of queue 1 cannot be signalled \(write: EBADF\)/);
  fe.close();
});

t.test('notifyConfigChange sends CONFIG_CHANGE_MSG on the back-end channel without waiting', async (tt) => {
  const { be, conn, fe } = setup();
  await fe.send(request(Req.SET_PROTOCOL_FEATURES, u64(PROTO_REPLY_ACK | PROTO_BACKEND_REQ | PROTO_CONFIG)));
  const [mine, theirs] = native.socketPair();
  await fe.send(request(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), true), [theirs]);
  native.close(theirs);
  const ack = await fe.next(5000);
  tt.equal(readU64(ack.payload), 0n, 'SET_BACKEND_REQ_FD acked');
  const channel = new MessageChannel(mine);
  tt.ok(be.session?.notifyConfigChange(), 'sent');
  const m = await channel.next(5000);
  tt.same({ request: m.request, flags: m.flags, size: m.payload.byteLength }, { request: 2, flags: Flags.VERSION, size: 0 });
  channel.close();
  fe.close();
  await conn.done;
  tt.notOk(be.session?.notifyConfigChange() ?? false, 'no session after the close');
});

t.test('a front-end that leaves with a reply unread is a normal disconnect, not an error', async (tt) => {
  const { be, conn, fe, lines } = setup();
  for (let i = 0; i < 8; i++) await fe.send(request(Req.GET_FEATURES));
  fe.close();
  await conn.done;
  tt.same(be.connected, [true, false]);
  const line = disconnectLine(lines);
  tt.ok(line, 'one disconnect line');
  tt.not(line?.level, 'error', `logged at ${line?.level}: ${String(line?.fields?.reason)}`);
  tt.notOk(lines.some((l) => l.level === 'error'), 'no error line at all');
});

t.test('listener: the default factory serves vhost-user; a given factory gets each accepted socket', async (tt) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-listen-'));
  const be = new IdleBackend();
  const plain = new VhostUserListener(path.join(dir, 'a'), 0o600, be);
  plain.listen();
  const fe = new MessageChannel(native.unixConnect(path.join(dir, 'a')));
  await fe.send(request(Req.GET_FEATURES));
  tt.equal(readU64((await fe.next(5000)).payload), be.features, 'vhost-user spoken by default');
  fe.close();

  const served: { fd: number; backend: IdleBackend }[] = [];
  let closeDone: () => void = () => undefined;
  const done = new Promise<void>((r) => (closeDone = r));
  const custom = new VhostUserListener(path.join(dir, 'b'), 0o600, () => be, (fd, backend) => {
    served.push({ fd, backend: backend as IdleBackend });
    return {
      done,
      close: async () => {
        native.close(fd);
        closeDone();
      },
    };
  });
  custom.listen();
  const peer = native.unixConnect(path.join(dir, 'b'));
  for (let i = 0; i < 500 && served.length === 0; i++) await new Promise((r) => setTimeout(r, 2));
  tt.equal(served.length, 1, 'the factory got the accepted socket');
  tt.equal(served[0].backend, be, 'with the backend');
  tt.ok(custom.connected);
  await custom.close();
  await plain.close();
  native.close(peer);
  fs.rmSync(dir, { recursive: true });
});

t.test('listener: a socket file someone serves is never removed; a stale one is replaced', async (tt) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-listen-'));
  const sock = path.join(dir, 'c');
  const be = new IdleBackend();
  const first = new VhostUserListener(sock, 0o600, be);
  first.listen();
  const ino = fs.statSync(sock).ino;
  // A second target started on the same -S directory (another vhostd with the same config).
  const second = new VhostUserListener(sock, 0o600, be);
  tt.throws(() => second.listen(), { code: 'EADDRINUSE' }, 'the second listener refuses: another server is listening');
  await second.close();
  tt.equal(fs.statSync(sock).ino, ino, 'the first listener keeps its socket file');
  const fe = new MessageChannel(native.unixConnect(sock));
  await fe.send(request(Req.GET_FEATURES));
  tt.equal(readU64((await fe.next(5000)).payload), be.features, 'and still serves on it');
  fe.close();
  await first.close();

  // A socket file nobody accepts on (a process that died): removed and bound anew.
  const stale = native.unixListen(sock, 1, 0o600);
  native.close(stale);
  tt.ok(fs.statSync(sock).isSocket(), 'a stale socket file is there');
  const third = new VhostUserListener(sock, 0o600, be);
  third.listen();
  const fe3 = new MessageChannel(native.unixConnect(sock));
  await fe3.send(request(Req.GET_FEATURES));
  tt.equal(readU64((await fe3.next(5000)).payload), be.features, 'the stale file was replaced by a live socket');
  fe3.close();
  await third.close();
  fs.rmSync(dir, { recursive: true });
});
