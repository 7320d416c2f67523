/**
 * vhostd-rpc syntax (rpc.py's) of bdev_get_iostat, bdev_set_qos_limit,
 * bdev_null_resize, vhost_controller_set_coalescing and thread_get_stats,
 * and their parameter schemas (reactor/rpc/methods/tuning.ts) against a
 * recording target.
 */
import t from 'tap';
import { parseCommandLine } from '../../reactor/rpc/commands';
import { tuningMethods } from '../../reactor/rpc/methods/tuning';
import type { MethodContext } from '../../reactor/rpc/methods/context';
import { ErrorCode, VhostdError } from '../../reactor/errors';

function call(argv: string[]): { method: string; params: Record<string, unknown> | undefined } {
  const c = parseCommandLine(argv);
  if (c.kind !== 'call') throw new Error(`not a call: ${c.kind}`);
  return { method: c.method, params: c.params };
}

t.test('vhostd-rpc: rpc.py syntax', async (t) => {
  t.same(call(['bdev_get_iostat']).params, { per_channel: false }, 'per_channel always sent (store_true)');
  t.same(call(['bdev_get_iostat', '-b', 'Malloc0', '-c']).params, { name: 'Malloc0', per_channel: true });
  t.same(call(['bdev_get_iostat', '--names', 'a,b']).params, { names: ['a', 'b'], per_channel: false });
  t.same(call(['bdev_set_qos_limit', 'Malloc0', '--rw-ios-per-sec', '20000', '--r-mbytes-per-sec', '100']).params, {
    name: 'Malloc0',
    rw_ios_per_sec: 20000,
    r_mbytes_per_sec: 100,
  });
  t.same(call(['bdev_null_resize', 'Null0', '64']).params, { name: 'Null0', new_size: 64 });
  t.same(call(['vhost_controller_set_coalescing', 'vhost.0', '100', '60000']).params, {
    ctrlr: 'vhost.0',
    delay_base_us: 100,
    iops_threshold: 60000,
  });
  t.same(call(['thread_get_stats']), { method: 'thread_get_stats', params: undefined });
  t.throws(() => parseCommandLine(['bdev_null_resize', 'Null0', 'big']), /invalid int/);
  t.throws(() => parseCommandLine(['vhost_controller_set_coalescing', 'vhost.0', '100']), /required/);
  const help = parseCommandLine(['bdev_set_qos_limit', '--help']);
  t.ok(help.kind === 'help' && help.text.includes('--rw-ios-per-sec'), 'per-method --help');
});

t.test('methods: schemas and what reaches the target', async (t) => {
  const calls: unknown[][] = [];
  const services = {
    bdevs: {
      require: (name: string) => {
        if (name === 'nope') throw new VhostdError(ErrorCode.NoBdev, 'no bdev');
        return {};
      },
      iostat: (p: unknown) => (calls.push(['iostat', p]), { tick_rate: 1e9, ticks: 1, bdevs: [] }),
      setQosLimit: (name: string, l: unknown) => void calls.push(['qos', name, l]),
    },
    vhost: {
      setCoalescing: (c: string, d: number, i: number) => {
        if (c === 'nope') throw new VhostdError(ErrorCode.NoController, 'no controller');
        calls.push(['coalescing', c, d, i]);
      },
    },
    system: { threadStats: () => ({ tick_rate: 1e9, threads: [] }) },
  };
  const ctx = { services, methodNames: () => [] } as unknown as MethodContext;
  const m = new Map(tuningMethods(ctx).map((x) => [x.name, x]));
  const invoke = (name: string, p?: unknown): unknown => (m.get(name) as { invoke(p: unknown): unknown }).invoke(p);
  const code = (fn: () => unknown): number | undefined => {
    try {
      fn();
    } catch (err) {
      return (err as { code?: number }).code;
    }
    return undefined;
  };

  invoke('bdev_get_iostat', { name: 'a', names: ['b'], per_channel: false });
  t.same(calls.pop(), ['iostat', { names: ['a', 'b'], perChannel: false }]);
  invoke('bdev_get_iostat');
  t.same(calls.pop(), ['iostat', { names: undefined, perChannel: false }]);
  t.equal(code(() => invoke('bdev_get_iostat', { per_channel: true, names: ['a', 'b'] })), -22);
  t.equal(code(() => invoke('bdev_get_iostat', { names: 'a' })), -32602, 'names must be an array');

  t.equal(invoke('bdev_set_qos_limit', { name: 'b', rw_mbytes_per_sec: 0 }), true);
  t.same(calls.pop(), ['qos', 'b', { rw_mbytes_per_sec: 0 }]);
  t.equal(code(() => invoke('bdev_set_qos_limit', { name: 'b' })), -22, 'no limit');
  t.equal(code(() => invoke('bdev_set_qos_limit', { name: 'b', rw_ios_per_sec: 1.5 })), -32602, 'not an integer');

  t.equal(code(() => invoke('bdev_set_qos_limit', { name: 'nope', rw_ios_per_sec: 1000 })), -19, 'no bdev: -19 before the limits are looked at');
  t.equal(code(() => invoke('bdev_set_qos_limit', { name: 'nope' })), -19, 'no bdev and no limit: -19 first');
  t.equal(invoke('vhost_controller_set_coalescing', { ctrlr: 'c', delay_base_us: 0, iops_threshold: 100 }), true);
  t.same(calls.pop(), ['coalescing', 'c', 0, 100]);
  t.equal(code(() => invoke('vhost_controller_set_coalescing', { ctrlr: 'c', delay_base_us: -1, iops_threshold: 100 })), -32602);
  t.equal(code(() => invoke('vhost_controller_set_coalescing', { ctrlr: 'nope', delay_base_us: 0, iops_threshold: 100 })), -19, 'no controller: -19');
  t.same(invoke('thread_get_stats'), { tick_rate: 1e9, threads: [] });
  t.equal(code(() => invoke('thread_get_stats', { a: 1 })), -32602);

});
