/**
 * cpumask parsing/formatting as SPDK writes masks, and the placement rule:
 * the core of the device's mask carrying the fewest devices, lowest on a tie.
 */
import t from 'tap';
import { formatCpumask, parseCpumask, Placement } from '../../reactor/placement';
import { ErrorCode, VhostdError } from '../../reactor/errors';
import { RpcCode, rpcCodeOf } from '../../reactor/rpc/errors';

t.test('parseCpumask: hex and lists', async (t) => {
  t.same(parseCpumask('0x3'), [0, 1]);
  t.same(parseCpumask('0X5'), [0, 2]);
  t.same(parseCpumask('6'), [1, 2], 'hex without 0x, as SPDK saves it');
  t.same(parseCpumask('[0,2-3]'), [0, 2, 3]);
  t.same(parseCpumask('[ 5 , 1-2 ]'), [1, 2, 5], 'sorted, spaces allowed');
  t.same(parseCpumask('0x10000000000000000'), [64], 'beyond 53 bits');
});

t.test('parseCpumask: refusals are -22 with the reason', async (t) => {
  for (const bad of ['', '0x0', 'zz', '[]', '[3-1]', '[1,a]', '[0', '[1024]', '0x' + '1'.padEnd(300, '0')]) {
    t.throws(() => parseCpumask(bad), new VhostdError(ErrorCode.Invalid, ''), `"${bad.slice(0, 20)}" refused`);
    t.throws(() => parseCpumask(bad), { code: ErrorCode.Invalid, message: /invalid cpumask/ });
    try {
      parseCpumask(bad);
    } catch (err) {
      t.equal(rpcCodeOf(err as VhostdError), RpcCode.Invalid, 'reported as -22');
    }
  }
});

t.test('formatCpumask round-trips', async (t) => {
  t.equal(formatCpumask([0, 1]), '0x3');
  t.equal(formatCpumask([1]), '0x2');
  t.equal(formatCpumask(parseCpumask('[0,2-3]')), '0xd');
});

t.test('Placement: fewest devices, lowest core on a tie, inside the app mask', async (t) => {
  const p = new Placement([0, 1, 2]);
  t.equal(p.acquire([0, 1, 2]), 0, 'tie: lowest');
  t.equal(p.acquire([0, 1, 2]), 1, 'then the next empty core');
  t.equal(p.acquire([1, 2]), 2);
  t.equal(p.acquire([0, 1, 2]), 0, 'all carry one: lowest');
  p.release(1);
  t.equal(p.acquire([0, 1, 2]), 1, 'core 1 has fewest after a release');
  t.equal(p.devicesOn(0), 2);
  t.doesNotThrow(() => p.checkInside([1, 2], '0x6'));
  t.throws(() => p.checkInside([2, 3], '0xc'), /not a subset .*core 3 outside/);
});
