/**
 * Unit tests of the control-plane pieces that need no process: the
 * framework state machine (STARTUP → RUNTIME through framework_start_init,
 * state errors from the server), spdk_kill_instance's signal names,
 * /proc/stat parsing, batch arrays in configs, and rpc.py's load_config /
 * save_config algorithms against a scripted client. Runs on the tap main thread.
 */
import t from 'tap';
import { parseConfig } from '../../reactor/config';
import { parseProcStat } from '../../reactor/cpu-stat';
import { Framework } from '../../reactor/framework';
import { loadConfig, saveConfig, type CallingClient } from '../../reactor/rpc/config-commands';
import { killSignal } from '../../reactor/rpc/methods/framework';
import { defineMethod, NO_PARAMS, RpcState } from '../../reactor/rpc/schema';
import { RpcServer } from '../../reactor/rpc/server';
import { RpcError } from '../../reactor/rpc/errors';

t.test('framework: STARTUP until startInit, state errors, waitInit, init failure', async (t) => {
  const server = new RpcServer();
  const order: string[] = [];
  const fw = new Framework(server, {
    waitForRpc: true,
    init: () => {
      order.push(`init state=${server.state}`);
    },
    afterRuntime: () => {
      order.push(`after state=${server.state}`);
    },
  });
  server.register(defineMethod('rt', NO_PARAMS, () => 'rt'));
  server.register(defineMethod('both', NO_PARAMS, () => 'both', { states: RpcState.Startup | RpcState.Runtime }));
  server.register(defineMethod('su', NO_PARAMS, () => 'su', { states: RpcState.Startup }));
  t.equal(server.state, RpcState.Startup);
  t.same(server.methodNames(true), ['both', 'su']);
  t.same(server.methodNames(), ['rt', 'both', 'su']);
  await t.rejects(server.invoke('rt'), { code: -1, message: /after framework is initialized/ });
  t.equal(await server.invoke('both'), 'both');
  let waited = false;
  const w = fw.waitInit().then(() => (waited = true));
  await new Promise((r) => setImmediate(r));
  t.notOk(waited);
  await fw.startInit();
  await w;
  t.ok(waited && fw.initialized);
  t.same(order, [`init state=${RpcState.Startup}`, `after state=${RpcState.Runtime}`], 'init in STARTUP, config in RUNTIME');
  t.same(server.methodNames(true), ['rt', 'both']);
  await t.rejects(server.invoke('su'), { code: -1, message: /before framework is initialized/ });
  await t.rejects(fw.startInit(), { code: -1 });

  const failing = new Framework(new RpcServer(), {
    waitForRpc: true,
    init: () => {
      throw new Error('no engine');
    },
    onInitFailed: (e) => order.push(`failed ${e.message}`),
  });
  await t.rejects(failing.startInit(), new RpcError(-32603, 'framework_initialization failed: no engine'));
  t.equal(order.at(-1), 'failed no engine');

  const killed: string[] = [];
  const k = new Framework(new RpcServer(), { kill: (s) => killed.push(s) });
  k.kill('SIGTERM');
  t.same(killed, [], 'the signal waits for the reply to go out');
  await new Promise((r) => setImmediate(r));
  t.same(killed, ['SIGTERM']);
});

t.test('spdk_kill_instance signal names', async (t) => {
  t.equal(killSignal('SIGINT'), 'SIGINT');
  t.equal(killSignal('15'), 'SIGTERM');
  t.equal(killSignal('9'), 'SIGKILL');
  t.equal(killSignal('SIGUSR1'), undefined);
  t.equal(killSignal('sigterm'), undefined, 'case-sensitive, as SPDK (strcmp)');
  t.equal(killSignal('10'), undefined);
  t.equal(killSignal(''), undefined);
});

t.test('/proc/stat parsing', async (t) => {
  const m = parseProcStat('cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 10 1 20 99 5 3 4 0 0 0\ncpu3 1 0 2 3 4 5 6\ncpu4 bad\nintr 1 2\n');
  t.same([...m.keys()], [0, 3]);
  t.same(m.get(0), { usr: 10, sys: 20, irq: 7 });
  t.same(m.get(3), { usr: 1, sys: 2, irq: 11 });
});

t.test('configs: batch arrays are flattened, bad shapes named', async (t) => {
  const c = parseConfig(
    JSON.stringify({ subsystems: [{ subsystem: 'bdev', config: [[{ method: 'a' }, { method: 'b', params: {} }], { method: 'c' }] }] }),
    'x.json',
  );
  t.same(c.subsystems[0].config?.map((x) => x.method), ['a', 'b', 'c']);
  t.throws(() => parseConfig('{"subsystems":[{"subsystem":"bdev","config":[[{"params":{}}]]}]}', 'y.json'), /y\.json: subsystems\[0\]\.config\[0\]\[0\] needs a "method"/);
});

/** A scripted target: methods allowed per state, framework_start_init moves to RUNTIME. */
class ScriptedClient implements CallingClient {
  state: 'startup' | 'runtime';
  readonly calls: string[] = [];
  constructor(waitForRpc: boolean) {
    this.state = waitForRpc ? 'startup' : 'runtime';
  }
  async call(method: string, params?: Record<string, unknown>): Promise<unknown> {
    const startup = ['rpc_get_methods', 'framework_start_init', 'log_set_flag'];
    const runtime = ['rpc_get_methods', 'log_set_flag', 'bdev_malloc_create', 'vhost_create_blk_controller', 'framework_get_subsystems', 'framework_get_config'];
    if (method === 'rpc_get_methods') return params?.current ? (this.state === 'startup' ? startup : runtime) : [...new Set([...startup, ...runtime])];
    this.calls.push(method);
    if (method === 'framework_start_init') this.state = 'runtime';
    if (method === 'framework_get_subsystems') return [{ subsystem: 'bdev', depends_on: [] }, { subsystem: 'vhost_blk', depends_on: ['bdev'] }, { subsystem: 'x', depends_on: [] }];
    if (method === 'framework_get_config') return [{ method: `${String(params?.name)}_m` }];
    return true;
  }
}

t.test("load_config: rpc.py's rounds by RPC state", async (t) => {
  const text = JSON.stringify({
    subsystems: [
      { subsystem: 'bdev', config: [{ method: 'bdev_malloc_create', params: { name: 'M' } }] },
      { subsystem: 'log', config: [{ method: 'log_set_flag', params: { flag: 'vhost' } }] },
      { subsystem: 'vhost_blk', config: [{ method: 'vhost_create_blk_controller' }] },
      { subsystem: 'empty', config: null },
    ],
  });
  const waiting = new ScriptedClient(true);
  const r = await loadConfig(waiting, text, 't');
  t.same(waiting.calls, ['log_set_flag', 'framework_start_init', 'bdev_malloc_create', 'vhost_create_blk_controller'], 'startup calls, start_init, then runtime');
  t.same(r, { called: 4, skipped: [] });
  const running = new ScriptedClient(false);
  await loadConfig(running, text, 't');
  t.same(running.calls, ['bdev_malloc_create', 'log_set_flag', 'vhost_create_blk_controller'], 'running: file order');
  await t.rejects(loadConfig(new ScriptedClient(false), JSON.stringify({ subsystems: [{ subsystem: 's', config: [{ method: 'nope' }] }] }), 't'), /unknown method "nope"/);
  const empty = new ScriptedClient(true);
  await loadConfig(empty, '{"subsystems":[]}', 't');
  t.same(empty.calls, ['framework_start_init'], 'an empty config still starts a waiting target');
  const emptyRunning = new ScriptedClient(false);
  await loadConfig(emptyRunning, '{"subsystems":[]}', 't');
  t.same(emptyRunning.calls, [], 'and leaves a running one alone');
});

t.test('save_config: subsystems with their dependencies', async (t) => {
  const all = JSON.parse(await saveConfig(new ScriptedClient(false))) as { subsystems: { subsystem: string; config: unknown }[] };
  t.same(all.subsystems.map((s) => s.subsystem), ['bdev', 'vhost_blk', 'x']);
  t.same(all.subsystems[0].config, [{ method: 'bdev_m' }]);
  const some = JSON.parse(await saveConfig(new ScriptedClient(false), { subsystems: 'vhost_blk' })) as typeof all;
  t.same(some.subsystems.map((s) => s.subsystem), ['bdev', 'vhost_blk']);
  await t.rejects(saveConfig(new ScriptedClient(false), { subsystems: 'nvmf' }), /unknown subsystem/);
  t.equal((await saveConfig(new ScriptedClient(false), { indent: -1 })).split('\n').length, 2, 'compact: one line');
});
