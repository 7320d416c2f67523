/**
 * JSON-RPC 2.0 client for vhostd's (and SPDK's) control socket: connects to
 * a Unix socket, sends each call as one JSON object, reads the replies as a
 * stream of concatenated JSON values and matches them to calls by id. Calls
 * may be pipelined. A reply with an error rejects the call with RpcError
 * (code and message from the server); transport failures reject with the
 * socket's error; a call without a reply within its timeout rejects with an
 * Error whose code is 'ERR_RPC_TIMEOUT'.
 *
 * Thread: whichever thread creates it (the vhostd-rpc CLI, tests).
 */

import * as net from 'node:net';
import { RpcCode, RpcError } from './errors';
import { JsonStreamSplitter } from './framing';

/** Replies can be large (bdev_get_bdevs with many bdevs); refuse absurd ones. */
const MAX_REPLY_BYTES = 64 * 1024 * 1024;

interface Pending {
  resolve(result: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout | null;
}

/**
 * Watches a connection's traffic (vhostd-rpc's -v/--verbose): the request
 * objects as sent, the raw bytes as received, each decoded reply.
 */
export interface RpcTrace {
  sent?(request: Record<string, unknown>): void;
  data?(chunk: Buffer): void;
  reply?(reply: unknown): void;
}

export interface CallOptions {
  /** Give up waiting for the reply after this long (the connection stays usable). */
  timeoutMs?: number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** One connection to a JSON-RPC server; owned by the thread that connected it. */
export class RpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly splitter = new JsonStreamSplitter(MAX_REPLY_BYTES);
  private failure: Error | null = null;

  private constructor(
    private readonly socket: net.Socket,
    private readonly trace: RpcTrace = {},
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed by the server')));
  }

  /** Connect to the server's Unix socket; `trace` sees the traffic. */
  static connect(path: string, trace?: RpcTrace): Promise<RpcClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(path);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RpcClient(socket, trace));
      });
    });
  }

  /** Call `method`; resolves to its result, rejects with RpcError on an error reply. */
  call(method: string, params?: Record<string, unknown> | unknown[], options: CallOptions = {}): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const request: Record<string, unknown> = { jsonrpc: '2.0', method, id };
    if (params !== undefined) request.params = params;
    return new Promise((resolve, reject) => {
      const entry: Pending = { resolve, reject, timer: null };
      if (options.timeoutMs !== undefined) {
        entry.timer = setTimeout(() => {
          this.pending.delete(id);
          const err: NodeJS.ErrnoException = new Error(`no reply to ${method} within ${options.timeoutMs} ms`);
          err.code = 'ERR_RPC_TIMEOUT';
          reject(err);
        }, options.timeoutMs);
      }
      this.pending.set(id, entry);
      this.trace.sent?.(request);
      this.socket.write(JSON.stringify(request));
    });
  }

  /** Close the connection; calls still waiting reject. */
  close(): void {
    this.fail(new Error('client closed'));
    this.socket.end();
  }

  private onData(chunk: Buffer): void {
    this.trace.data?.(chunk);
    const { values, error } = this.splitter.push(chunk);
    for (const bytes of values) {
      let reply: unknown;
      try {
        reply = JSON.parse(bytes.toString('utf8'));
      } catch (err) {
        this.protocolError(`reply is not JSON: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
      this.trace.reply?.(reply);
      this.onReply(reply);
    }
    if (error) this.protocolError(error.message);
  }

  private onReply(reply: unknown): void {
    if (!isObject(reply)) {
      this.protocolError('reply is not a JSON object');
      return;
    }
    const id = reply.id;
    if (typeof id !== 'number' || !this.pending.has(id)) {
      // A reply we cannot match: a parse error about our own bytes (id null) or a stray id.
      if (isObject(reply.error)) this.fail(toRpcError(reply.error));
      else this.protocolError(`reply with unknown id ${JSON.stringify(id)}`);
      return;
    }
    const entry = this.pending.get(id) as Pending;
    this.pending.delete(id);
    if (entry.timer) clearTimeout(entry.timer);
    if (isObject(reply.error)) entry.reject(toRpcError(reply.error));
    else if ('result' in reply) entry.resolve(reply.result);
    else entry.reject(new RpcError(RpcCode.InvalidRequest, 'reply has neither result nor error'));
  }

  private protocolError(message: string): void {
    this.fail(new Error(`protocol error: ${message}`));
    this.socket.destroy();
  }

  /** Reject every waiting call; later calls reject with the same error. */
  private fail(err: Error): void {
    if (!this.failure) this.failure = err;
    for (const entry of this.pending.values()) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.reject(err);
    }
    this.pending.clear();
  }
}

function toRpcError(error: Record<string, unknown>): RpcError {
  const code = typeof error.code === 'number' ? error.code : RpcCode.InternalError;
  const message = typeof error.message === 'string' ? error.message : 'unknown error';
  return new RpcError(code, message);
}
