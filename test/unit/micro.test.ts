/**
 * bench/micro.ts runs the engine's request path in process: check that it
 * completes its requests and reports sane numbers (no timing assertions).
 */
import t from 'tap';
import { runMicro } from '../../bench/micro';

t.test('the in-process microbenchmark completes its requests and reports', async (t) => {
  const r = runMicro(20000, 8, 2);
  t.ok(Number.isFinite(r.nsPerReq) && r.nsPerReq > 0, `ns per request ${r.nsPerReq}`);
  t.ok(r.reqPerPoll > 0 && r.reqPerPoll <= 2, `at most the 2 requests the driver adds per poll (${r.reqPerPoll})`);
  t.ok(Number.isFinite(r.mIops) && r.mIops > 0, 'a rate');
});
