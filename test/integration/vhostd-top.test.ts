/**
 * `vhostd-top` against the real vhostd while the in-repo vhost-user
 * front-end drives reads and writes through a blk controller: one --once
 * frame fits 80x24 and shows the core running the controller, the
 * controller connected with its bdev's rates, the bdev's read and write
 * IOPS above zero with a mean latency; `-n 2` prints two frames; a wrong
 * socket is a one-line error. Thread: test main thread.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { startBlkLoad } from '../lib/blk-load';
import { VhostUserFrontend } from '../lib/frontend';
import { repoRoot } from '../lib/repo';
import { startVhostd } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(180_000);

function top(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repoRoot(), 'bin', 'vhostd-top.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('vhostd-top while I/O runs', async (t) => {
  const h = await startVhostd({ cpumask: '0x1' });
  t.teardown(() => h.stop());
  await h.rpc('bdev_malloc_create', { name: 'Tp0', num_blocks: 32768, block_size: 512 });
  await h.rpc('bdev_null_create', { name: 'Tn0', num_blocks: 1024, block_size: 512 });
  await h.rpc('vhost_create_blk_controller', { ctrlr: 'tp.0', dev_name: 'Tp0' });

  const fe = await VhostUserFrontend.connect(h.socketOf('tp.0'), 5000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate();
  await fe.setupQueue(0, 128);

  const load = startBlkLoad(fe, 4, 32768);
  let once: Awaited<ReturnType<typeof top>>;
  let twice: Awaited<ReturnType<typeof top>>;
  try {
    await waitFor(() => load.done >= 100, 60_000, '100 I/Os done');
    once = await top(['-r', h.rpcSocket, '--once', '-d', '1']);
    twice = await top(['-r', h.rpcSocket, '-n', '2', '-d', '0.3']);
  } finally {
    await load.stop();
  }

  t.equal(once.code, 0, once.stderr);
  const lines = once.stdout.replace(/\n$/, '').split('\n');
  t.ok(lines.length <= 24, `${lines.length} lines (at most 24)`);
  t.ok(lines.every((l) => l.length <= 80), 'at most 80 columns');
  t.notMatch(once.stdout, /\x1b/, 'no terminal control codes with --once');
  t.match(lines[0], /^vhostd-top {2}vhostd v\S+ {2}pid \d+ /, 'header');
  t.ok(lines.some((l) => /^\s+0\s+\d+\.\d\s+\d+\.\d\s+poll\s+tp\.0$/.test(l)), 'core 0 runs tp.0');
  const ctrl = lines.find((l) => l.startsWith('tp.0 '));
  t.match(ctrl, /^tp\.0\s+blk\s+0\s+yes\s+\d+\s+\S+\s+\S+\s+\S+\s+Tp0$/, 'controller row');
  const bdev = lines.find((l) => l.startsWith('Tp0 ')) ?? '';
  const cols = bdev.trim().split(/\s+/);
  t.equal(cols.length, 8, 'bdev row has 8 columns');
  const value = (s: string): number => (s.endsWith('k') ? Number(s.slice(0, -1)) * 1e3 : s.endsWith('M') ? Number(s.slice(0, -1)) * 1e6 : Number(s));
  t.ok(value(cols[1]) > 0, `read IOPS ${cols[1]} > 0`);
  t.ok(value(cols[2]) > 0, `write IOPS ${cols[2]} > 0`);
  t.ok(Number(cols[5]) > 0, `mean read latency ${cols[5]} µs`);
  t.ok(lines.some((l) => /^Tn0\s+0\s+0\s+0\s+0\s+-\s+-\s+0$/.test(l)), 'idle bdev: zeros and no latency');

  t.equal(twice.code, 0, twice.stderr);
  t.equal(twice.stdout.split('\n').filter((l) => l.startsWith('vhostd-top ')).length, 2, '-n 2: two frames');

  const bad = await top(['-r', path.join(h.dir, 'nope.sock'), '--once']);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /^vhostd-top: cannot connect to .*nope\.sock: ENOENT/);
});
