/**
 * Hostile JSON-RPC clients against the real vhostd process: many clients at
 * once, a client that sends half a request and vanishes (or stays silent),
 * 1 MiB of garbage, non-JSON, an oversized request. Each gets an error or a
 * closed connection; the target and the other clients carry on, and no
 * connection is leaked (the process's fd count returns to where it was).
 * Thread: test main thread.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(180_000);

let h: VhostdHandle;

t.before(async () => {
  h = await startVhostd();
  await h.rpc('bdev_null_create', { name: 'N0', num_blocks: 1024, block_size: 512 });
});
t.teardown(() => h?.stop());

function fdCount(): number {
  return fs.readdirSync(`/proc/${h.daemon.child.pid}/fd`).length;
}

/** Connect, write `bytes`, collect everything the server sends until it closes or `waitMs` passes. */
function exchange(bytes: Buffer | string, waitMs = 10_000): Promise<{ text: string; closedByServer: boolean }> {
  return new Promise((resolve) => {
    const sock = net.connect(h.rpcSocket);
    let text = '';
    let done = false;
    const finish = (closedByServer: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ text, closedByServer });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    sock.on('data', (d: Buffer) => (text += d.toString('utf8')));
    sock.on('error', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('connect', () => sock.write(bytes));
  });
}

async function healthy(t: Test, what: string): Promise<void> {
  t.ok(h.daemon.running, `${what}: vhostd still runs`);
  t.same(((await h.rpc('bdev_get_bdevs', { name: 'N0' })) as { name: string }[]).map((b) => b.name), ['N0'], `${what}: a new client is served`);
}

t.test('many clients at once', async (t) => {
  const base = fdCount();
  const clients = Array.from({ length: 40 }, async (_, i) => {
    const results: unknown[] = [];
    for (let k = 0; k < 5; k++) results.push(await h.rpc(k % 2 ? 'spdk_get_version' : 'bdev_get_bdevs', k % 2 ? undefined : { name: 'N0' }));
    return { i, results };
  });
  const all = await Promise.all(clients);
  t.equal(all.length, 40);
  t.ok(all.every((c) => c.results.length === 5), 'every client got its 5 replies');
  await waitFor(() => fdCount() <= base, 10_000, 'fds back to baseline');
  t.pass('no connection leaked');
});

t.test('half a request, then the client vanishes', async (t) => {
  const base = fdCount();
  for (let i = 0; i < 5; i++) {
    const sock = net.connect(h.rpcSocket);
    await new Promise<void>((resolve) => sock.on('connect', () => resolve()));
    sock.write('{"jsonrpc":"2.0","id":1,"method":"bdev_get_');
    await new Promise((resolve) => setTimeout(resolve, 20));
    sock.destroy();
  }
  await healthy(t, 'vanished clients');
  await waitFor(() => fdCount() <= base, 10_000, 'fds back to baseline');
  t.pass('their connections were closed');
});

t.test('a silent half request does not block other clients', async (t) => {
  const sock = net.connect(h.rpcSocket);
  t.teardown(() => sock.destroy());
  await new Promise<void>((resolve) => sock.on('connect', () => resolve()));
  sock.write('{"jsonrpc":"2.0","id":1,"method":"spdk_get_version","params":{');
  await healthy(t, 'while one request hangs half-written');
  // The hanging client finishes its request: it is answered.
  const reply = new Promise<string>((resolve) => {
    let text = '';
    sock.on('data', (d: Buffer) => {
      text += d.toString('utf8');
      if (text.endsWith('\n')) resolve(text);
    });
  });
  sock.write('}}');
  t.match(JSON.parse(await reply), { jsonrpc: '2.0', id: 1, result: { version: /vhostd/ } }, 'completed later, answered');
});

t.test('non-JSON: parse error, connection closed', async (t) => {
  const r = await exchange('hello vhostd\n');
  t.ok(r.closedByServer, 'closed');
  t.same(JSON.parse(r.text), { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } });
  const r2 = await exchange('{"jsonrpc":"2.0","id":1,"method":"spdk_get_version"}{"id": tru}');
  const replies = r2.text.trim().split('\n').map((l) => JSON.parse(l) as { id: unknown; result?: unknown; error?: { code: number } });
  t.equal(replies.length, 2, 'the good request before the bad bytes is answered, then the parse error');
  t.ok(replies[0].result, 'first: result');
  t.equal(replies[1].error?.code, -32700, 'then -32700');
  t.ok(r2.closedByServer);
  await healthy(t, 'after non-JSON');
});

t.test('1 MiB of garbage and an oversized request', async (t) => {
  const base = fdCount();
  const garbage = randomBytes(1024 * 1024);
  garbage[0] = '{'.charCodeAt(0); // looks like the start of an object, then noise
  const r = await exchange(garbage);
  t.ok(r.closedByServer, 'random bytes: closed');
  t.ok(r.text === '' || (JSON.parse(r.text) as { error: { code: number } }).error.code === -32700, 'random bytes: -32700 or nothing');

  const open = Buffer.alloc(1024 * 1024 + 16, '[');
  const r2 = await exchange(open);
  t.ok(r2.closedByServer, '1 MiB of "[": closed');
  t.equal((JSON.parse(r2.text) as { error: { code: number } }).error.code, -32700, '1 MiB of "[": -32700');

  const big = JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'bdev_get_bdevs', params: { name: 'x'.repeat(1024 * 1024 + 1) } });
  const r3 = await exchange(big);
  t.ok(r3.closedByServer, 'request over 1 MiB: closed');
  t.equal((JSON.parse(r3.text) as { error: { code: number } }).error.code, -32700, 'request over 1 MiB: -32700');

  await healthy(t, 'after garbage');
  await waitFor(() => fdCount() <= base, 10_000, 'fds back to baseline');
  t.pass('no connection leaked');
});

t.test('invalid requests on one connection get errors and the connection stays usable', async (t) => {
  const r = await exchange(
    '{"jsonrpc":"1.0","id":1,"method":"spdk_get_version"}' +
      '{"jsonrpc":"2.0","id":2,"method":"no_such_method"}' +
      '{"jsonrpc":"2.0","id":3,"method":"bdev_get_bdevs","params":{"name":5}}' +
      '{"jsonrpc":"2.0","id":4,"method":"spdk_get_version"}',
    2000,
  );
  const replies = r.text.trim().split('\n').map((l) => JSON.parse(l) as { id: number; error?: { code: number }; result?: unknown });
  t.same(replies.map((x) => [x.id, x.error?.code ?? 'ok']), [
    [1, -32600],
    [2, -32601],
    [3, -32602],
    [4, 'ok'],
  ]);
  t.notOk(r.closedByServer, 'not closed: these are errors of single requests');
});
