/**
 * --log-format json: every line vhostd writes on stderr — reactor and engine
 * workers — is one JSON object (time, level, component, msg, fields), and a
 * failed RPC call leaves exactly one warn line naming the method and error;
 * a front-end's connect and disconnect are one line each, in order with the
 * engine worker's device lines between them (lines and timestamps).
 * Thread: test main thread.
 */
import t from 'tap';
import { startVhostd } from '../lib/vhostd';
import { VhostUserFrontend } from '../lib/frontend';
import { waitFor } from '../lib/wait';

t.setTimeout(120_000);

t.test('--log-format json', async (t) => {
  const h = await startVhostd({ cpumask: '0x1', extraArgs: ['--log-format', 'json'] });
  await t.rejects(h.rpc('bdev_malloc_delete', { name: 'NOPE' }), { code: -19 });
  const exit = await h.stop();
  t.equal(exit.code, 0);
  const lines = h.daemon.log.trim().split('\n');
  const objs = lines.map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      t.fail(`not JSON: ${l}`);
      return {};
    }
  });
  t.ok(objs.every((o) => typeof o.time === 'string' && typeof o.level === 'string' && typeof o.component === 'string' && typeof o.msg === 'string'), 'time, level, component, msg on every line');
  t.ok(objs.some((o) => o.component === 'engine:0' && o.msg === 'engine worker running'), 'engine worker lines too');
  t.same(objs.filter((o) => o.msg === 'RPC failed'), [{ time: objs.find((o) => o.msg === 'RPC failed')?.time, level: 'warn', component: 'rpc', msg: 'RPC failed', method: 'bdev_malloc_delete', code: -19, message: 'no malloc bdev named NOPE' }], 'one warn line for the failed call');
});

t.test('--log-format other', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const path = await import('node:path');
  const { repoRoot } = await import('../lib/repo');
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'vhostd.js'), '--log-format', 'xml'], { encoding: 'utf8' });
  t.equal(r.status, 2);
  t.match(r.stderr, /--log-format: xml is not text or json/);
});

t.test('connect and disconnect: once each, in order with the engine lines', async (t) => {
  const h = await startVhostd({ cpumask: '0x1', extraArgs: ['--log-format', 'json'] });
  await h.rpc('bdev_malloc_create', { name: 'Lg0', num_blocks: 2048, block_size: 512 });
  await h.rpc('vhost_create_blk_controller', { ctrlr: 'lg.0', dev_name: 'Lg0' });
  const fe = await VhostUserFrontend.connect(h.socketOf('lg.0'), 5000, { waitAccepted: true });
  await fe.negotiate();
  await fe.setupQueue(0, 64);
  await waitFor(() => h.daemon.log.includes('"device started"'), 20_000, 'device started line');
  await fe.close();
  await waitFor(() => h.daemon.log.includes('"front-end disconnected"'), 20_000, 'disconnect line');
  const exit = await h.stop();
  t.equal(exit.code, 0);
  const objs = h.daemon.log.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  // The connection's lines (vhost), the controller's (vhost_blk) and the engine worker's (engine:0): each event once, in causal order.
  const events = objs
    .filter((o) => ((o.component === 'vhost' || o.component === 'vhost_blk') && o.ctrlr === 'lg.0') || (o.component === 'engine:0' && o.device === 'lg.0'))
    .filter((o) => /^(front-end (dis)?connected|device (started|stopped))$/.test(String(o.msg)));
  t.equal(objs.filter((o) => o.msg === 'front-end connected').length, 1, 'one connect line in all');
  t.equal(objs.filter((o) => o.msg === 'front-end disconnected').length, 1, 'one disconnect line in all');
  t.same(
    events.map((o) => [o.component, o.msg]),
    [
      ['vhost', 'front-end connected'],
      ['engine:0', 'device started'],
      ['vhost_blk', 'device started'],
      ['engine:0', 'device stopped'],
      ['vhost_blk', 'device stopped'],
      ['vhost', 'front-end disconnected'],
    ],
    'connect, the worker starts the device, the controller says so; stop likewise; disconnect — once each',
  );
  const times = events.map((o) => Date.parse(String(o.time)));
  t.ok(times.every((x, i) => i === 0 || x >= times[i - 1]), `timestamps in order: ${events.map((o) => o.time).join(' ')}`);
});
