/**
 * The embedding API (reactor/embed.ts, `import { Vhostd } from 'vhostd'`):
 * examples/embed.mjs runs under node as a user would run it (the package's
 * own name resolves through its "exports"), and the API is driven directly
 * in this process: bdev and controller creation through the RPC methods,
 * listing, errors with SPDK's codes, the same methods over the optional RPC
 * socket, an in-repo front-end doing verified I/O, the connect/disconnect
 * events, the replaceable logger, and a stop that leaves no socket behind.
 * Thread: test main thread (the target's reactor runs here too).
 */
import t, { type Test } from 'tap';
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RpcError, Vhostd, type ConnectionEvent, type LogRecord } from '../../reactor';
import { log } from '../../reactor/log';
import { callFdThatBreaks } from '../lib/bad-input';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus, Req, vringFdPayload } from '../lib/frontend-wire';
import { repoRoot } from '../lib/repo';
import { rpcCall } from '../lib/rpc';
import { waitFor } from '../lib/wait';

t.setTimeout(120_000);

function tmpDir(t: Test, prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('examples/embed.mjs runs: starts, creates a bdev and a controller, prints the socket, stops', async (t) => {
  const dir = tmpDir(t, 'embed-example-');
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [path.join(repoRoot(), 'examples', 'embed.mjs'), dir], { cwd: repoRoot(), timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
  t.equal(r.code, 0, 'the example exits 0', { stdout: r.stdout, stderr: r.stderr });
  t.match(r.stdout, `socket: ${path.join(dir, 'vhost.0')}\n`, 'it prints the controller socket');
  t.match(r.stdout, 'bdev Malloc0: controller vhost.0 on cpumask 0x1', 'it lists the controller it made');
  t.match(r.stdout, /stopped\n$/, 'it stops');
  t.match(r.stderr, /\[vhostd info\] vhost: controller created/, "the reactor's log records went to its logger");
  t.match(r.stderr, /\[vhostd info\] engine:0: engine worker running/, "and the engine worker's");
  t.notMatch(r.stderr, /^\d{4}-\d\d-\d\dT/m, 'no line bypassed the logger');
  t.same(fs.readdirSync(dir), [], 'no socket is left in the socket directory');
});

t.test('the API: create, list, RPC socket, front-end I/O, events, logger, stop', async (t) => {
  const dir = tmpDir(t, 'embed-api-');
  const socketDir = path.join(dir, 'socks');
  const rpcSocket = path.join(dir, 'rpc.sock');
  const records: LogRecord[] = [];
  const vhostd = await Vhostd.start({ socketDir, cpumask: [0], rpcSocket, pollMode: 'interrupt', logger: (r) => records.push(r) });
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await vhostd.stop();
  });
  const events: string[] = [];
  const connects: ConnectionEvent[] = [];
  vhostd.on('connect', (e) => {
    events.push(`connect ${e.ctrlr}`);
    connects.push(e);
  });
  vhostd.on('disconnect', (e) => events.push(`disconnect ${e.ctrlr}`));
  vhostd.on('deviceFailed', (e) => events.push(`deviceFailed ${e.ctrlr}`));
  vhostd.on('stopped', () => events.push('stopped'));

  t.equal(vhostd.rpcSocket, rpcSocket, 'the RPC socket listens');
  t.equal(await vhostd.createMallocBdev({ numBlocks: 8192 }), 'Malloc0', 'a malloc bdev without a name gets the next MallocN');
  const bdevs = await vhostd.getBdevs('Malloc0');
  t.same(bdevs.map((b) => [b.name, b.block_size, b.num_blocks]), [['Malloc0', 512, 8192]], 'getBdevs reports it');
  const socket = await vhostd.createBlkController({ name: 'emb.blk0', bdev: 'Malloc0' });
  t.equal(socket, path.join(socketDir, 'emb.blk0'), 'createBlkController resolves to the socket path');
  t.ok(fs.lstatSync(socket).isSocket(), 'the controller socket exists');
  const ctrls = await vhostd.getControllers();
  t.same(ctrls.map((c) => [c.ctrlr, c.socket, c.cpumask]), [['emb.blk0', socket, '0x1']], 'getControllers lists it');
  t.same(await vhostd.call('vhost_get_controllers', { name: 'emb.blk0' }), ctrls, 'call() reaches the same method');
  t.same(await rpcCall(rpcSocket, 'vhost_get_controllers'), ctrls, 'so does a client on the RPC socket');

  // Errors are the RPC methods' own, with SPDK's codes.
  const noBdev = await vhostd.createBlkController({ name: 'emb.blk1', bdev: 'NoSuchBdev' }).catch((e: unknown) => e);
  t.ok(noBdev instanceof RpcError, 'a controller on a missing bdev rejects with RpcError');
  t.equal((noBdev as RpcError).code, -19, 'code -ENODEV, as SPDK');
  const bad = await vhostd.call('bdev_malloc_create', { num_blocks: 'many', block_size: 512 }).catch((e: unknown) => e);
  t.equal((bad as RpcError).code, -32602, 'bad parameters are -32602, as over the socket');
  const unknown = await vhostd.call('no_such_method').catch((e: unknown) => e);
  t.equal((unknown as RpcError).code, -32601, 'an unknown method is -32601');

  // A front-end connects and does verified I/O.
  const fe = await VhostUserFrontend.connect(socket, 10_000, { waitAccepted: true });
  let feOpen = true;
  t.teardown(() => {
    if (feOpen) fe.close();
  });
  await fe.negotiate();
  await fe.setupQueue(0, 128);
  for (const sector of [0, 8, 4000]) {
    const data = randomBytes(4096);
    const w = await fe.write(0, sector, data);
    const rd = await fe.read(0, sector, 4096);
    t.equal(w.status, BlkStatus.OK, `write at sector ${sector} succeeds`);
    t.equal(rd.status, BlkStatus.OK, `read at sector ${sector} succeeds`);
    t.ok(Buffer.from(rd.data).equals(data), `sector ${sector} reads back what was written`);
  }
  await waitFor(() => events.includes('connect emb.blk0'), 10_000, "the 'connect' event");
  t.same(connects, [{ ctrlr: 'emb.blk0', socket }], "'connect' names the controller and its socket");
  const busy = await vhostd.deleteController('emb.blk0').catch((e: unknown) => e);
  t.equal((busy as RpcError).code, -16, 'deleting a controller with a front-end connected is -EBUSY');
  fe.close();
  feOpen = false;
  await waitFor(() => events.includes('disconnect emb.blk0'), 10_000, "the 'disconnect' event");
  t.same(events, ['connect emb.blk0', 'disconnect emb.blk0'], 'one connect, then one disconnect');

  await vhostd.deleteController('emb.blk0');
  t.notOk(fs.existsSync(socket), 'deleteController removes the socket');
  await vhostd.createBlkController({ name: 'emb.blk2', bdev: 'Malloc0', readonly: true });
  t.same((await vhostd.getControllers()).map((c) => c.ctrlr), ['emb.blk2'], 'a second controller on the bdev');

  t.ok(records.some((r) => r.component === 'vhost' && r.message === 'controller created' && r.fields.ctrlr === 'emb.blk0'), 'the logger got the controller-created record with its fields');
  t.ok(records.some((r) => r.component === 'rpc' && r.level === 'info' && r.message === 'RPC server listening'), 'and the RPC server record');
  t.ok(records.some((r) => r.component === 'engine:0' && r.message === 'engine worker running' && r.fields.core === 0), "the engine worker's lines reach the logger too");
  t.ok(records.every((r) => r.time instanceof Date && typeof r.message === 'string'), 'records are typed');

  await vhostd.stop();
  stopped = true;
  t.equal(events.at(-1), 'stopped', "'stopped' is emitted");
  t.same(fs.readdirSync(socketDir), [], 'stop leaves no controller socket');
  t.notOk(fs.existsSync(rpcSocket), 'stop removes the RPC socket');
  t.equal(vhostd.rpcSocket, null, 'the RPC socket is closed');
  await t.rejects(vhostd.call('spdk_get_version'), /stopped/, 'a call after stop rejects');
  await vhostd.stop(); // idempotent

  // The logger option's sink is uninstalled at stop: a later record is not delivered to it.
  const before = records.length;
  log('error', 'app', 'embed test: a record after stop goes to stderr');
  t.equal(records.length, before, 'the sink is uninstalled by stop');
});

t.test("'deviceFailed': a call fd that stops taking writes (EPIPE) fails the device, then the front-end is disconnected", async (t) => {
  const dir = tmpDir(t, 'embed-fail-');
  const vhostd = await Vhostd.start({ socketDir: path.join(dir, 's'), pollMode: 'interrupt', logger: () => undefined });
  t.teardown(() => vhostd.stop());
  const events: string[] = [];
  vhostd.on('connect', (e) => events.push(`connect ${e.ctrlr}`));
  vhostd.on('disconnect', (e) => events.push(`disconnect ${e.ctrlr}`));
  vhostd.on('deviceFailed', (e) => events.push(`deviceFailed ${e.ctrlr} core=${e.core} ${e.reason}`));
  const bdev = await vhostd.createMallocBdev({ name: 'F0', numBlocks: 4096 });
  const socket = await vhostd.createBlkController({ name: 'emb.fail', bdev });
  const fe = await VhostUserFrontend.connect(socket, 10_000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 1 << 20 }] });
  await fe.setupQueue(0, 16, { completion: 'poll' });
  t.equal((await fe.read(0, 0, 512)).status, BlkStatus.OK, 'I/O before');
  await callFdThatBreaks(fe, dir);
  const io = fe.read(0, 0, 512).catch((e: Error) => e);
  t.ok(await fe.channel.waitEof(10_000), 'the connection is closed');
  await io;
  await waitFor(() => events.includes('disconnect emb.fail'), 10_000, "the 'disconnect' event");
  t.equal(events[0], 'connect emb.fail', "'connect' first");
  t.match(events[1], /^deviceFailed emb\.fail core=0 .*EPIPE/, "then 'deviceFailed' with the core and the reason");
  t.equal(events[2], 'disconnect emb.fail', "then 'disconnect'");
  t.equal(events.length, 3, 'nothing else');
});

t.test('Vhostd.setLogger replaces the sink process-wide and returns the previous one', async (t) => {
  const got: LogRecord[] = [];
  const sink = (r: LogRecord): void => {
    got.push(r);
  };
  const previous = Vhostd.setLogger(sink);
  try {
    log('notice', 'app', 'embed test record', { n: 1, skipped: undefined });
    const throwing = (): void => {
      throw new Error('sink failure');
    };
    Vhostd.setLogger(throwing);
    log('notice', 'app', 'a record the failing sink loses'); // must not throw
    t.equal(Vhostd.setLogger(sink), throwing, 'setLogger returns the sink it replaced');
    log('debug', 'app', 'below the print level');
  } finally {
    Vhostd.setLogger(previous);
  }
  t.same(
    got.map((r) => [r.level, r.component, r.message, r.fields]),
    [['notice', 'app', 'embed test record', { n: 1 }]],
    'one record, undefined fields dropped; debug lines stay filtered',
  );
});

t.test('start rejects bad options', async (t) => {
  const dir = tmpDir(t, 'embed-bad-');
  await t.rejects(Vhostd.start({ socketDir: dir, cpumask: [4095] }), /cpumask/, 'a core that does not exist');
  await t.rejects(Vhostd.start({ socketDir: '' }), TypeError, 'no socket directory');
  const rpcSocket = path.join(dir, 'rpc.sock');
  fs.writeFileSync(rpcSocket, 'not a socket');
  await t.rejects(Vhostd.start({ socketDir: path.join(dir, 's'), rpcSocket, pollMode: 'interrupt' }), /not a socket/, 'an RPC socket path taken by a file');
  t.equal(fs.readFileSync(rpcSocket, 'utf8'), 'not a socket', 'the file is left alone');
});
