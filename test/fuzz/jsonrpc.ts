/**
 * JSON-RPC fuzzer: one case = one request on the RPC socket, as SPDK's
 * framing streams them (objects back to back, no delimiter). Most cases are
 * well-formed JSON-RPC 2.0 calls of the methods the target lists
 * (rpc_get_methods), with random parameters — known parameter names with
 * values of every JSON type and boundary numbers, unknown keys, arrays for
 * objects — and must get exactly one well-formed response with their id.
 * The rest are hostile bytes on a fresh connection: truncated objects,
 * binary garbage, invalid UTF-8, deep nesting, wrong versions, id types and
 * batches, or the connection cut mid-request; those may be answered or
 * closed, but the server must carry on.
 * Names used for objects the calls may create or delete come from a small
 * pool apart from the runner's own controllers; quiesce() deletes what the
 * cases created and puts the log settings back.
 * Thread: the fuzz runner's main thread.
 */
import net from 'node:net';
import type { Fuzzer } from './fuzzer';
import type { Rng } from './rng';
import type { FuzzTarget } from './target';

const NAMES = ['fzr0', 'fzr1', 'fzr2', 'Malloc_fzr', 'N_fzr', ''];
const NEVER = new Set(['spdk_kill_instance']);
const PARAM_KEYS = [
  'name', 'num_blocks', 'block_size', 'uuid', 'ctrlr', 'dev_name', 'cpumask', 'readonly', 'filename', 'new_size_in_mib', 'new_size',
  'rw_ios_per_sec', 'rw_mbytes_per_sec', 'r_mbytes_per_sec', 'w_mbytes_per_sec', 'delay_base_us', 'iops_threshold', 'flag', 'level',
  'subsystem', 'sig_name', 'current', 'packed_ring', 'bdev_name', 'timeout', 'fallocate', 'optimal_io_boundary', 'md_size', 'include_mapping',
  'per_channel', 'lun_num', 'indent', 'flags',
];

/** A minimal splitter of a stream of JSON objects (depth and string state only), written apart from the server's. */
class Responses {
  private buf = '';
  private depth = 0;
  private inStr = false;
  private esc = false;
  private start = 0;
  readonly out: unknown[] = [];
  bad: string | null = null;
  push(text: string): void {
    let i = this.buf.length;
    this.buf += text;
    for (; i < this.buf.length; i++) {
      const c = this.buf[i];
      if (this.inStr) {
        if (this.esc) this.esc = false;
        else if (c === '\\') this.esc = true;
        else if (c === '"') this.inStr = false;
        continue;
      }
      if (c === '"') this.inStr = true;
      else if (c === '{' || c === '[') {
        if (this.depth === 0) this.start = i;
        this.depth++;
      } else if (c === '}' || c === ']') {
        this.depth--;
        if (this.depth === 0) {
          const v = this.buf.slice(this.start, i + 1);
          try {
            this.out.push(JSON.parse(v));
          } catch {
            this.bad = v.slice(0, 200);
          }
          this.buf = this.buf.slice(i + 1);
          i = -1;
        }
      }
    }
  }
}

interface Conn {
  sock: net.Socket;
  resp: Responses;
  closed: boolean;
  waiters: (() => void)[];
}

export class JsonRpcFuzzer implements Fuzzer {
  readonly name = 'jsonrpc';
  readonly checkEvery = 5000;
  private target!: FuzzTarget;
  private methods: string[] = [];
  private conn: Conn | null = null;
  private nextId = 1;
  private readonly count = { calls: 0, answeredOk: 0, answeredError: 0, hostile: 0, connections: 0 };

  async setup(target: FuzzTarget): Promise<void> {
    this.target = target;
    this.methods = ((await target.rpc('rpc_get_methods')) as string[]).filter((m) => !NEVER.has(m));
  }

  counters(): Record<string, number> {
    return { ...this.count };
  }

  replayStart(caseNo: number): number {
    return caseNo;
  }

  dispose(): void {
    this.conn?.sock.destroy();
    this.conn = null;
  }

  private open(): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(this.target.h.rpcSocket);
      const c: Conn = { sock, resp: new Responses(), closed: false, waiters: [] };
      sock.setEncoding('utf8');
      const wake = (): void => {
        for (const w of c.waiters.splice(0)) w();
      };
      sock.on('data', (d: string) => {
        c.resp.push(d);
        wake();
      });
      sock.on('close', () => {
        c.closed = true;
        wake();
      });
      sock.on('error', () => undefined);
      sock.once('connect', () => {
        this.count.connections++;
        resolve(c);
      });
      sock.once('error', reject);
    });
  }

  private value(rng: Rng, depth = 0): unknown {
    switch (rng.int(depth > 2 ? 7 : 9)) {
      case 0:
        return rng.pick(NAMES);
      case 1:
        return rng.pick([0, 1, -1, 8, 512, 4096, 65536, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 53), 1.5, 1e308, -0]);
      case 2:
        return rng.int(100000);
      case 3:
        return rng.pick([true, false, null]);
      case 4:
        return rng.pick(['0x1', '0x2', '0x3', '[0]', '[1-3]', '0xffffffffffffffffffff', 'zz', '-1', 'SIGINT', 'DEBUG', 'ERROR', 'all', 'vhost', '/dev/null', '/nonexistent/x']);
      case 5:
        return Buffer.from(rng.bytes(rng.int(40))).toString('latin1');
      case 6:
        return '9a1b5f7e-3c4d-4e5f-8a6b-7c8d9e0f1a2b';
      case 7:
        return Array.from({ length: rng.int(4) }, () => this.value(rng, depth + 1));
      default:
        return this.params(rng, depth + 1);
    }
  }

  private params(rng: Rng, depth = 0): Record<string, unknown> {
    const p: Record<string, unknown> = {};
    for (let i = rng.int(5); i > 0; i--) p[rng.chance(0.9) ? rng.pick(PARAM_KEYS) : Buffer.from(rng.bytes(rng.range(1, 8))).toString('hex')] = this.value(rng, depth);
    return p;
  }

  /** Sizes kept small, so a successful create costs little memory. */
  private sane(p: Record<string, unknown>): void {
    for (const k of ['num_blocks', 'new_size_in_mib', 'new_size']) {
      if (typeof p[k] === 'number' && (p[k] as number) > 65536 && (p[k] as number) < 2 ** 40) p[k] = 65536;
    }
    for (const k of ['name', 'ctrlr', 'dev_name', 'bdev_name']) {
      if (typeof p[k] === 'string' && !NAMES.includes(p[k] as string) && (p[k] as string).startsWith('fz.')) p[k] = 'fzr0';
    }
  }

  async runCase(rng: Rng, caseNo: number): Promise<void> {
    if (rng.chance(0.12)) return this.hostile(rng);
    if (this.conn === null || this.conn.closed || rng.chance(0.05)) {
      this.conn?.sock.destroy();
      this.conn = await this.open();
    }
    const c = this.conn;
    const id: unknown = rng.chance(0.9) ? this.nextId++ : rng.pick([`s${this.nextId++}`, 0, -5, 2 ** 53 - 1 - (this.nextId++ % 1000)]);
    const method = rng.chance(0.95) ? rng.pick(this.methods) : rng.pick(['', 'x', 'rpc_get_methods ', '__proto__', 'constructor', 'toString']);
    const req: Record<string, unknown> = { jsonrpc: '2.0', id, method };
    if (rng.chance(0.8)) {
      const p = rng.chance(0.9) ? this.params(rng) : this.value(rng);
      if (p !== null && typeof p === 'object' && !Array.isArray(p)) this.sane(p as Record<string, unknown>);
      req.params = p;
    }
    const text = JSON.stringify(req);
    const before = c.resp.out.length;
    // Sometimes dribble the request in pieces.
    if (rng.chance(0.05) && text.length > 4) {
      const cut = rng.range(1, text.length - 1);
      c.sock.write(text.slice(0, cut));
      await new Promise((r) => setImmediate(r));
      c.sock.write(text.slice(cut));
    } else {
      c.sock.write(text);
    }
    this.count.calls++;
    const deadline = Date.now() + 15_000;
    while (c.resp.out.length === before && !c.closed && !c.resp.bad) {
      if (Date.now() > deadline) throw new Error(`case ${caseNo}: no response to ${text.slice(0, 300)} within 15 s`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 100);
        c.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    if (c.resp.bad) throw new Error(`response that is not JSON: ${c.resp.bad}`);
    if (c.resp.out.length === before) throw new Error(`the server closed the connection instead of answering ${text.slice(0, 300)}`);
    const r = c.resp.out.shift() as Record<string, unknown>;
    c.resp.out.length = 0;
    if (r === null || typeof r !== 'object' || r.jsonrpc !== '2.0') throw new Error(`malformed response ${JSON.stringify(r).slice(0, 300)}`);
    if (r.id !== id) throw new Error(`response id ${JSON.stringify(r.id)} to request id ${JSON.stringify(id)}`);
    const hasResult = 'result' in r;
    const err = r.error as { code?: unknown; message?: unknown } | undefined;
    if (hasResult === (err !== undefined)) throw new Error(`response with ${hasResult ? 'both result and error' : 'neither result nor error'}: ${JSON.stringify(r).slice(0, 300)}`);
    if (err !== undefined) {
      if (!Number.isInteger(err.code) || typeof err.message !== 'string') throw new Error(`malformed error ${JSON.stringify(err)}`);
      this.count.answeredError++;
    } else {
      this.count.answeredOk++;
    }
  }

  private async hostile(rng: Rng): Promise<void> {
    this.count.hostile++;
    const c = await this.open();
    let bytes: Buffer;
    switch (rng.int(8)) {
      case 0:
        bytes = Buffer.from(rng.bytes(rng.range(1, 2048)));
        break;
      case 1: {
        const s = JSON.stringify({ jsonrpc: '2.0', id: 1, method: rng.pick(this.methods), params: this.params(rng) });
        bytes = Buffer.from(s.slice(0, rng.int(s.length)));
        break;
      }
      case 2: {
        const n = rng.pick([100, 1000, 100_000, 600_000]);
        bytes = Buffer.from((rng.chance(0.5) ? '[' : '{"a":').repeat(n));
        break;
      }
      case 3:
        bytes = Buffer.from(JSON.stringify(Array.from({ length: rng.range(0, 5) }, () => ({ jsonrpc: '2.0', id: rng.int(9), method: rng.pick(this.methods) }))));
        break;
      case 4:
        bytes = Buffer.from(JSON.stringify({ jsonrpc: rng.pick(['1.0', 2, null, '2.0 ']), id: this.value(rng), method: this.value(rng), params: this.value(rng) }));
        break;
      case 5:
        bytes = Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":1,"method":"'), Buffer.from(rng.bytes(rng.range(1, 16)).map((b) => b | 0x80)), Buffer.from('"}')]);
        break;
      case 6:
        bytes = Buffer.from(`{"jsonrpc":"2.0","id":1,"method":"spdk_get_version","params":"${'x'.repeat(rng.pick([10, 1 << 16, (1 << 20) + 10]))}"}`);
        break;
      default:
        bytes = Buffer.from(rng.pick(['"a"', '123', 'null', ' \n\t', '}', ']]]]', '{"jsonrpc":"2.0","id":1}', '{}{}{}{}']));
    }
    c.sock.write(bytes);
    if (rng.chance(0.3)) {
      // stay a moment and read what comes (answer or close)
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        c.waiters.push(() => {
          if (c.closed) {
            clearTimeout(t);
            r();
          }
        });
      });
    }
    c.sock.destroy();
  }

  async quiesce(): Promise<void> {
    this.conn?.sock.destroy();
    this.conn = null;
    await this.target.rpc('log_set_print_level', { level: 'INFO' });
    await this.target.rpc('log_clear_flag', { flag: 'all' }).catch(() => undefined);
    const ctrls = (await this.target.rpc('vhost_get_controllers')) as { ctrlr: string }[];
    for (const c of ctrls) if (!c.ctrlr.startsWith('fz.')) await this.deleteWhenFree('vhost_delete_controller', { ctrlr: c.ctrlr });
    const bdevs = (await this.target.rpc('bdev_get_bdevs')) as { name: string; product_name: string }[];
    for (const b of bdevs) {
      if (b.name.startsWith('Malloc_fz.')) continue;
      const method = /malloc/i.test(b.product_name) ? 'bdev_malloc_delete' : /null/i.test(b.product_name) ? 'bdev_null_delete' : /aio/i.test(b.product_name) ? 'bdev_aio_delete' : 'bdev_uring_delete';
      await this.deleteWhenFree(method, { name: b.name });
    }
  }

  private async deleteWhenFree(method: string, params: unknown): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await this.target.rpc(method, params);
        return;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  async check(): Promise<void> {
    // quiesce() put things back; the runner's liveness checks follow.
  }
}
