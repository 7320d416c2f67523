/**
 * The fuzzers of test/fuzz/ in short runs (issue #15 item 3): each against
 * its own vhostd, a few thousand cases with liveness checks (verified I/O
 * on a fresh connection, RPC, fds, RSS) — well under a minute in all. Long
 * runs: `npm run fuzz -- --minutes N`. The seed is printed; a failure names
 * the seed and the cases that reproduce it.
 * Thread: test main thread.
 */
import t from 'tap';
import { runFuzz } from '../fuzz/run';
import type { ChainFuzzer } from '../fuzz/chains';

t.setTimeout(240_000);

const seed = Number(process.env.FUZZ_SEED ?? Date.now()) >>> 0;
const say = (l: string): void => void t.comment(l);

const SHORT: [string, number][] = [
  ['vhost-user', 2000],
  ['chains', 3000],
  ['packed', 1500],
  ['jsonrpc', 1000],
  ['scsi', 1000],
  ['nvme', 800],
  ['vfio-user', 300],
];

for (const [name, cases] of SHORT) {
  t.test(`${name}: ${cases} cases, seed ${seed}`, async (t) => {
    const [r] = await runFuzz({ only: [name], cases, seed, say });
    t.equal(r.cases, cases, 'every case ran');
    t.ok(r.checks >= 2, `liveness checked ${r.checks} times`);
    t.ok(r.fds.last <= r.fds.base, `fds back at the baseline (${r.fds.base} → ${r.fds.last})`);
    t.ok(r.heapMiB.some((h) => h.tid === 0) && r.heapMiB.some((h) => h.tid !== 0), `the heap probe answered from the main thread and the engine worker (${JSON.stringify(r.heapMiB)})`);
  });
}

for (const name of ['chains', 'packed', 'scsi']) {
  t.test(`the ${name} fuzzer's shadow check catches a byte changed outside every device-writable buffer`, async (t) => {
    await t.rejects(
      runFuzz({ only: [name], cases: 50, seed, say, prepare: (f) => ((f as ChainFuzzer).tamper = true) }),
      new RegExp(`guest memory changed outside every device-writable buffer at gpa 0x20003.*reproduce with: npm run fuzz -- --only ${name} --seed \\d+ --from`, 's'),
    );
  });
}
