/**
 * Minimal JSON-RPC 2.0 client for tests, speaking SPDK's framing over a Unix
 * stream socket: one request object out, then read until one JSON object
 * parses. One connection per call. Main-thread test helper.
 */
import net from 'node:net';

/** A JSON-RPC error response, with the server's code (SPDK codes, e.g. -19). */
export class RpcError extends Error {
  constructor(
    readonly method: string,
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(`${method}: ${message} (code ${code})`);
    this.name = 'RpcError';
  }
}

let nextId = 1;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Sends one call and resolves with its `result`; rejects with RpcError on an error response. */
export function rpcCall(socketPath: string, method: string, params?: unknown, timeoutMs = 30_000): Promise<unknown> {
  const id = nextId++;
  const request: Record<string, unknown> = { jsonrpc: '2.0', id, method };
  if (params !== undefined) request.params = params;
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    let text = '';
    let done = false;
    const finish = (err: Error | null, value?: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value);
    };
    const timer = setTimeout(() => finish(new Error(`${method}: no response within ${timeoutMs} ms`)), timeoutMs);
    sock.setEncoding('utf8');
    sock.once('connect', () => sock.write(JSON.stringify(request)));
    sock.on('data', (chunk: string) => {
      text += chunk;
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        return; // incomplete: keep reading
      }
      if (!isRecord(parsed) || parsed.jsonrpc !== '2.0' || parsed.id !== id) {
        finish(new Error(`${method}: malformed response ${text}`));
        return;
      }
      const error = parsed.error;
      if (error !== undefined) {
        if (isRecord(error) && typeof error.code === 'number' && typeof error.message === 'string') {
          finish(new RpcError(method, error.code, error.message, error.data));
        } else {
          finish(new Error(`${method}: malformed error ${JSON.stringify(error)}`));
        }
        return;
      }
      if (!('result' in parsed)) {
        finish(new Error(`${method}: response without result ${text}`));
        return;
      }
      finish(null, parsed.result);
    });
    sock.on('error', (err) => finish(err));
    sock.on('close', () => finish(new Error(`${method}: connection closed before a response (got ${JSON.stringify(text)})`)));
  });
}
