/**
 * vhostd's lifecycle against the real process: socket files created mode
 * 0600 (or --socket-mode), stale socket files from a crashed run replaced,
 * every socket file removed on SIGTERM/SIGINT with exit 0, and no
 * acknowledged write lost across a shutdown: writes in flight when SIGTERM
 * arrives complete (status OK) before the front-end's socket is closed.
 * Thread: test main thread.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus } from '../lib/frontend-wire';
import { Daemon } from '../lib/daemon';
import { repoRoot } from '../lib/repo';
import { rpcCall } from '../lib/rpc';
import { startVhostd } from '../lib/vhostd';
import { canConnect, waitFor } from '../lib/wait';

t.setTimeout(180_000);

/** A socket file nobody listens on: a process bound it and exited without unlinking it (a crash). */
function staleSocket(p: string): void {
  execFileSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.exit(0))`]);
}

t.test('socket modes, stale sockets replaced, all sockets removed on exit', async (t) => {
  for (const [sig, extra, mode] of [
    ['SIGTERM', [], 0o600],
    ['SIGINT', ['--socket-mode', '0660'], 0o660],
  ] as const) {
    const h = await startVhostd({ extraArgs: [...extra] });
    t.teardown(() => h.stop());
    t.equal(fs.statSync(h.rpcSocket).mode & 0o777, mode, `${sig}: RPC socket mode ${mode.toString(8)}`);
    await h.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 1024, block_size: 512 });
    await h.rpc('bdev_null_create', { name: 'N0', num_blocks: 1024, block_size: 512 });
    // A stale file where the next controller's socket goes.
    staleSocket(h.socketOf('c1'));
    t.ok(fs.lstatSync(h.socketOf('c1')).isSocket(), 'a stale socket file is there');
    await h.rpc('vhost_create_blk_controller', { ctrlr: 'c0', dev_name: 'M0' });
    await h.rpc('vhost_create_blk_controller', { ctrlr: 'c1', dev_name: 'N0' });
    for (const c of ['c0', 'c1']) t.equal(fs.statSync(h.socketOf(c)).mode & 0o777, mode, `${sig}: ${c} socket mode`);
    // c1 serves: the stale file was replaced by a live socket.
    const fe = await VhostUserFrontend.connect(h.socketOf('c1'), 5000, { waitAccepted: true });
    fe.close();
    const before = fs.readdirSync(h.dir).filter((f) => fs.lstatSync(path.join(h.dir, f)).isSocket());
    t.same(before.sort(), ['c0', 'c1', 'rpc.sock'], 'three sockets while running');
    h.daemon.child.kill(sig);
    t.same(await h.daemon.wait(), { code: 0, signal: null }, `${sig}: exit 0`);
    t.same(fs.readdirSync(h.dir), [], `${sig}: every socket file removed`);
  }
});

t.test('a stale RPC socket from a crashed run is replaced at start', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-stale-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const rpc = path.join(dir, 'crashed.sock');
  staleSocket(rpc);
  t.ok(fs.lstatSync(rpc).isSocket(), 'stale socket file');
  const d = new Daemon('vhostd', process.execPath, [path.join(repoRoot(), 'bin', 'vhostd.js'), '-m', '0x2', '-S', dir, '-r', rpc, '--disable-cpumask-locks'], { cwd: repoRoot() });
  t.teardown(() => d.stop());
  await waitFor(async () => {
    if (!d.running) throw new Error(`vhostd exited: ${d.log}`);
    return canConnect(rpc);
  }, 30_000, 'vhostd on the replaced socket');
  t.match(await rpcCall(rpc, 'spdk_get_version'), { version: /vhostd/ }, 'serves on the path the stale file had');
  const exit = await d.stop();
  t.equal(exit.code, 0);
  t.notOk(fs.existsSync(rpc), 'removed on exit');
});

t.test('SIGTERM with writes in flight: every one completes before the socket closes, exit 0', async (t) => {
  const h = await startVhostd();
  t.teardown(() => h.stop());
  const NUM_BLOCKS = 256 * 1024; // 128 MiB
  await h.rpc('bdev_malloc_create', { name: 'M0', num_blocks: NUM_BLOCKS, block_size: 512 });
  await h.rpc('vhost_create_blk_controller', { ctrlr: 'c0', dev_name: 'M0' });
  const fe = await VhostUserFrontend.connect(h.socketOf('c0'), 5000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 64 << 20 }] });
  const q = await fe.setupQueue(0, 128);
  // Warm up: the device runs.
  t.equal((await fe.write(0, 0, Buffer.alloc(4096, 1))).status, BlkStatus.OK);

  const N = 96;
  const SIZE = 256 * 1024;
  // Indirect chains: one ring slot each, so all N are published at once.
  const writes = Array.from({ length: N }, (_, i) => fe.write(0, (i * SIZE) / 512, Buffer.alloc(SIZE, i + 1), { segments: 4, indirect: true }));
  // They reach the avail ring in microtasks; SIGTERM goes out once the device is working through them.
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(q.availIdx, (N + 1) & 0xffff, 'all published');
  while (q.deviceUsedIdx() < 2) await new Promise((resolve) => setImmediate(resolve));
  const eof = fe.channel.waitEof(60_000);
  h.daemon.child.kill('SIGTERM');
  t.ok(await eof, 'vhostd closed the front-end socket');
  // The device stops polling at a loop boundary: requests still in the avail
  // ring then were never taken (not in flight, never acknowledged). Every one
  // it took must be completed before the socket closes, and none after.
  const usedAtClose = q.deviceUsedIdx();
  const results = await Promise.allSettled(writes);
  const done = results.filter((r): r is PromiseFulfilledResult<{ status: number; usedLen: number }> => r.status === 'fulfilled');
  t.equal(q.deviceUsedIdx(), usedAtClose, 'no completion arrived after the socket closed');
  t.equal(done.length, (usedAtClose - 1) & 0xffff, 'the writes acknowledged are exactly those completed before the close');
  t.ok(done.length >= 1, `writes were in flight at SIGTERM and completed (${done.length} of ${N})`);
  t.ok(
    done.every((r) => r.value.status === BlkStatus.OK),
    'every acknowledged write has status OK',
  );
  t.ok(
    results.every((r) => r.status === 'fulfilled' || (r.reason as { code?: string }).code === 'ETIMEDOUT'),
    'the others were never taken (no completion at all)',
  );
  t.same(await h.daemon.wait(), { code: 0, signal: null }, 'exit 0');
  t.same(fs.readdirSync(h.dir), [], 'sockets removed');
});
