/**
 * The JSON-RPC 2.0 server of vhostd's control plane, wire-compatible with
 * SPDK's (lib/jsonrpc): a Unix stream socket, requests and replies as JSON
 * values streamed back to back without framing, replies ending in "\n" with
 * members in SPDK's order (`jsonrpc`, `id`, `result`|`error`). SPDK's own
 * scripts/rpc.py works against it unchanged.
 *
 * - A value that is not JSON, or a request larger than `maxRequestBytes`
 *   (1 MiB), gets a -32700 "Parse error" reply and its connection is closed
 *   (a stream has no resynchronisation point); other connections go on.
 * - Envelope checks as SPDK's parse_single_request: members jsonrpc ("2.0" if
 *   present), method (string), id (string, number or null), params (object,
 *   array or null); anything else is -32600 "Invalid request".
 * - A batch (array) runs its requests in order and gets one array reply
 *   holding the replies of the non-notifications (none at all if all were
 *   notifications); an empty batch is -32600. rpc.py's `-b` sends these.
 * - A notification (no `id` member) gets no reply, not even an error.
 * - Requests of one connection run one after another, so replies go out in
 *   request order and a pipelined "create, then use" sequence works; many
 *   connections are served at once.
 *
 * Thread: main (reactor). Owns its listening socket and every connection.
 */

import * as fs from 'node:fs';
import * as net from 'node:net';
import { asRpcError, RpcCode, RpcError } from './errors';
import { logger } from '../log';
import { removeStaleSocket } from '../socket-file';
import { JsonStreamSplitter } from './framing';
import { RpcState, type RpcMethod } from './schema';

const log = logger('rpc');

/** SPDK's messages for the JSON-RPC protocol errors (jsonrpc_server_handle_error). */
const PROTOCOL_MESSAGES: Record<number, string> = {
  [RpcCode.ParseError]: 'Parse error',
  [RpcCode.InvalidRequest]: 'Invalid request',
  [RpcCode.MethodNotFound]: 'Method not found',
  [RpcCode.InvalidParams]: 'Invalid parameters',
  [RpcCode.InternalError]: 'Internal error',
};

export const DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024;
/** A connection stops reading while this many of its requests wait to run. */
const MAX_QUEUED_REQUESTS = 64;
/** On close, how long a connection may take to flush its last replies before it is destroyed. */
const CLOSE_FLUSH_MS = 1000;

export interface RpcServerOptions {
  /** Largest request (one top-level JSON value) accepted; default 1 MiB. */
  maxRequestBytes?: number;
  /** File mode of the socket, set once it is bound; default 0o600. */
  socketMode?: number;
}

type Id = string | number | null;

/** A reply object as SPDK writes it; members in this order. */
interface Reply {
  jsonrpc: '2.0';
  id: Id;
  result?: unknown;
  error?: { code: number; message: string };
}

function errorReply(id: Id, code: number, message?: string): Reply {
  return { jsonrpc: '2.0', id, error: { code, message: message ?? PROTOCOL_MESSAGES[code] ?? 'Error' } };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const ENVELOPE_MEMBERS = new Set(['jsonrpc', 'method', 'params', 'id']);

/** One client connection: its framing state and its queue of requests. */
class Connection {
  private readonly splitter: JsonStreamSplitter;
  /** Tail of the chain of this connection's requests; each runs after the previous one. */
  private tail: Promise<void> = Promise.resolve();
  private queued = 0;
  private closing = false;

  constructor(
    private readonly server: RpcServer,
    readonly socket: net.Socket,
    maxRequestBytes: number,
  ) {
    this.splitter = new JsonStreamSplitter(maxRequestBytes);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      log.debug('connection error', { code: err.code, message: err.message });
    });
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return;
    const { values, error } = this.splitter.push(chunk);
    for (const bytes of values) {
      let value: unknown;
      try {
        value = JSON.parse(bytes.toString('utf8'));
      } catch (err) {
        this.closeWithParseError(err instanceof Error ? err.message : String(err));
        return;
      }
      this.enqueue(value);
    }
    if (error) this.closeWithParseError(error.message);
  }

  private enqueue(value: unknown): void {
    this.queued++;
    if (this.queued >= MAX_QUEUED_REQUESTS) this.socket.pause();
    this.tail = this.tail.then(async () => {
      try {
        const reply = await this.server.handleValue(value);
        if (reply !== undefined) await this.send(reply);
      } catch (err) {
        log.error('RPC request handling failed', { error: err instanceof Error ? err.message : String(err) });
      }
      this.queued--;
      if (this.queued < MAX_QUEUED_REQUESTS && !this.closing && !this.socket.destroyed) this.socket.resume();
    });
  }

  /**
   * -32700, then close: after the replies to the requests before the bad
   * bytes. Later bytes are read and dropped (a client blocked writing a huge
   * request must not miss the reply); the socket is destroyed once the reply
   * is flushed.
   */
  private closeWithParseError(reason: string): void {
    this.closing = true;
    log.notice('closing RPC connection after a parse error', { reason });
    this.socket.resume();
    this.tail = this.tail.then(async () => {
      await this.send(errorReply(null, RpcCode.ParseError));
      if (this.socket.destroyed) return;
      this.socket.end(() => this.socket.destroy());
    });
  }

  /** Write one reply; waits for 'drain' when the client reads slowly. */
  private async send(reply: Reply | Reply[]): Promise<void> {
    if (this.socket.destroyed || !this.socket.writable) return;
    let text: string;
    try {
      text = JSON.stringify(reply) + '\n';
    } catch (err) {
      // A result that cannot be serialised (a bug in a method): tell the client.
      const id = Array.isArray(reply) ? null : reply.id;
      log.error('RPC result is not serialisable', { error: err instanceof Error ? err.message : String(err) });
      text = JSON.stringify(errorReply(id, RpcCode.InternalError, 'Internal error: result is not serialisable')) + '\n';
    }
    if (this.socket.write(text)) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }
}

/** The control-plane JSON-RPC server (see the module comment). Owned by the main thread. */
export class RpcServer {
  private readonly methods = new Map<string, RpcMethod>();
  private readonly maxRequestBytes: number;
  private readonly socketMode: number;
  private readonly connections = new Set<net.Socket>();
  private server: net.Server | null = null;
  private socketPath: string | null = null;
  /** close() was called: a listen() still binding gives up instead of linking its socket into place. */
  private closed = false;
  /**
   * The RPC state (RpcState.Startup or RpcState.Runtime), as SPDK's
   * spdk_rpc_set_state: methods whose `states` lack it are refused with -1.
   */
  state: number = RpcState.Runtime;

  constructor(options: RpcServerOptions = {}) {
    const max = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    if (!Number.isSafeInteger(max) || max < 2) throw new RangeError('options.maxRequestBytes must be an integer >= 2');
    this.maxRequestBytes = max;
    const mode = options.socketMode ?? 0o600;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new RangeError('options.socketMode must be a file mode (0 to 0o7777)');
    this.socketMode = mode;
  }

  /** Add a method; a second method with the same name is a programming error. */
  register(method: RpcMethod): void {
    if (this.methods.has(method.name)) throw new Error(`RPC method ${method.name} is already registered`);
    this.methods.set(method.name, method);
  }

  /** Names of the registered methods, in registration order; `current`: only those callable in the current state. */
  methodNames(current = false): string[] {
    const all = [...this.methods.values()];
    return (current ? all.filter((m) => this.allowed(m)) : all).map((m) => m.name);
  }

  /** The RpcState bits a method runs in (undefined: no such method). */
  statesOf(name: string): number | undefined {
    const m = this.methods.get(name);
    return m === undefined ? undefined : (m.states ?? RpcState.Runtime);
  }

  private allowed(m: RpcMethod): boolean {
    return ((m.states ?? RpcState.Runtime) & this.state) === this.state;
  }

  /** The socket path while listening. */
  get path(): string | null {
    return this.socketPath;
  }

  /**
   * Call a method in-process, through the same validation as a remote call
   * (for the JSON config loader). Resolves to the result; rejects with RpcError.
   */
  async invoke(method: string, params?: unknown): Promise<unknown> {
    const m = this.methods.get(method);
    if (!m) throw new RpcError(RpcCode.MethodNotFound, PROTOCOL_MESSAGES[RpcCode.MethodNotFound]);
    if (!this.allowed(m)) {
      // SPDK's messages (lib/rpc/rpc.c), code SPDK_JSONRPC_ERROR_INVALID_STATE.
      throw new RpcError(
        RpcCode.InvalidState,
        this.state === RpcState.Startup
          ? 'Method may only be called after framework is initialized using framework_start_init RPC.'
          : 'Method may only be called before framework is initialized. Use --wait-for-rpc command line parameter and then issue this RPC before the framework_start_init RPC.',
      );
    }
    let result: unknown;
    try {
      result = await m.invoke(params);
    } catch (err) {
      // A domain error (VhostdError) gets SPDK's code here, and only here.
      throw asRpcError(err) ?? err;
    }
    if (result === undefined) {
      throw new RpcError(RpcCode.InternalError, `Internal error: ${method} returned no result`);
    }
    return result;
  }

  /**
   * Listen on a Unix socket. An existing socket file nobody listens on is
   * removed first; a live one (another server) or a non-socket file is an
   * error (EADDRINUSE / EEXIST). The socket gets `socketMode` (0600) once bound.
   */
  async listen(path: string): Promise<void> {
    if (this.server) throw new Error('RpcServer is already listening');
    removeStaleSocket(path);
    // Bound under a temporary name, given its mode, then linked into place:
    // the socket is never connectable with the umask's mode.
    const aside = `${path}.~${process.pid}`;
    const bound = Buffer.byteLength(aside) < 108 ? aside : path; // sun_path's limit
    await fs.promises.unlink(bound).catch(() => undefined);
    const server = net.createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(bound, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => log.error('RPC server error', { error: err.message }));
    if (this.closed) {
      // Stopped (a signal at start-up) while binding: nothing may be left at `path`.
      server.close();
      fs.rmSync(bound, { force: true });
      throw new Error('RPC server closed while it was starting');
    }
    // From here to `this.server = server` without yielding: a close() can
    // only come before (refused above) or after (and then finds the server
    // and the path it must unlink), never between the link and the fields.
    try {
      fs.chmodSync(bound, this.socketMode);
      if (bound !== path) fs.linkSync(bound, path); // never replaces a file there
    } catch (err) {
      server.close();
      fs.rmSync(bound, { force: true });
      throw err;
    }
    if (bound !== path) fs.rmSync(bound, { force: true });
    this.server = server;
    this.socketPath = path;
    log.info('RPC server listening', { path });
  }

  /**
   * Stop listening, end every connection (replies already written are
   * flushed; a client that does not read them within CLOSE_FLUSH_MS is cut
   * off), remove the socket file.
   */
  async close(): Promise<void> {
    this.closed = true;
    const server = this.server;
    const path = this.socketPath;
    this.server = null;
    this.socketPath = null;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.connections) {
      socket.end();
      setTimeout(() => socket.destroy(), CLOSE_FLUSH_MS).unref();
    }
    this.connections.clear();
    await closed;
    // net.Server removes the file on close for Unix sockets; make sure.
    if (path) await fs.promises.unlink(path).catch(() => undefined);
  }

  private accept(socket: net.Socket): void {
    this.connections.add(socket);
    socket.on('close', () => this.connections.delete(socket));
    new Connection(this, socket, this.maxRequestBytes);
  }

  /** One parsed top-level value → the reply to send (undefined: send nothing). */
  async handleValue(value: unknown): Promise<Reply | Reply[] | undefined> {
    if (!Array.isArray(value)) return this.handleRequest(value);
    if (value.length === 0) return errorReply(null, RpcCode.InvalidRequest);
    const replies: Reply[] = [];
    for (const element of value) {
      const reply = await this.handleRequest(element);
      if (reply) replies.push(reply);
    }
    return replies.length > 0 ? replies : undefined;
  }

  /** One request object → its reply, or undefined for a notification. */
  private async handleRequest(req: unknown): Promise<Reply | undefined> {
    if (!isPlainObject(req)) return errorReply(null, RpcCode.InvalidRequest);
    const hasId = Object.prototype.hasOwnProperty.call(req, 'id');
    const rawId = req.id;
    const idValid = rawId === null || typeof rawId === 'string' || typeof rawId === 'number';
    const id: Id = hasId && idValid ? (rawId as Id) : null;
    const envelopeOk =
      Object.keys(req).every((k) => ENVELOPE_MEMBERS.has(k)) &&
      (!('jsonrpc' in req) || req.jsonrpc === '2.0') &&
      typeof req.method === 'string' &&
      (!hasId || idValid) &&
      (req.params === undefined || req.params === null || typeof req.params === 'object');
    if (!envelopeOk) {
      // An invalid request is answered even without an id: we cannot tell it was meant as a notification.
      return errorReply(id, RpcCode.InvalidRequest);
    }
    const method = req.method as string;
    let reply: Reply;
    try {
      const result = await this.invoke(method, req.params === null ? undefined : req.params);
      reply = { jsonrpc: '2.0', id, result };
    } catch (err) {
      if (err instanceof RpcError) {
        reply = errorReply(id, err.code, err.message);
        // Every failed call leaves one line (the caller's error, not the target's: warn).
        log.warn('RPC failed', { method, code: err.code, message: err.message, ...(hasId ? {} : { notification: true }) });
      } else {
        const message = err instanceof Error ? err.message : String(err);
        log.error('RPC method failed', { method, error: message });
        reply = errorReply(id, RpcCode.InternalError, `Internal error: ${message}`);
      }
    }
    if (!hasId) return undefined;
    return reply;
  }
}

