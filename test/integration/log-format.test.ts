/**
 * --log-format json: every line vhostd writes on stderr — reactor and engine
 * workers — is one JSON object (time, level, component, msg, fields), and a
 * failed RPC call leaves exactly one warn line naming the method and error.
 * Thread: test main thread.
 */
import t from 'tap';
import { startVhostd } from '../lib/vhostd';

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
