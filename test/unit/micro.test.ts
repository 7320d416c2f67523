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
  // Warm-up (a quarter) plus the measured requests, less those still in flight at the end.
  t.ok(r.readOps >= 25000 - 8 && r.errorOps === 0, `the device read them all (${r.readOps} reads, ${r.errorOps} errors)`);
});

t.test('--scsi: the same chains as READ 16 commands on a virtio-scsi device, answered GOOD', async (t) => {
  const r = runMicro(20000, 8, 2, false, false, true);
  t.ok(Number.isFinite(r.cpuNsPerReq) && r.cpuNsPerReq > 0, `CPU ns per request ${r.cpuNsPerReq}`);
  // The nexus's first command gets the power-on unit attention (CHECK CONDITION, counted as an error); every other one reads.
  t.ok(r.readOps >= 25000 - 8 - 1, `${r.readOps} reads`);
  t.equal(r.errorOps, 1, 'one error: the power-on unit attention');
});
