/**
 * The fuzz runner's RSS bound (test/fuzz/run.ts rssStillGrowing): a plateau
 * reached early passes however far above the baseline it is; growth that goes
 * on fails, whatever its rate, once the run is long enough.
 */
import t from 'tap';
import { rssStillGrowing } from '../fuzz/run';
import { recordHeap, type HeapTrack } from '../fuzz/target';

const MiB = 1024;

t.test('the NVMe fuzzer run of seed 4243: 116 MiB rising to a 181 MiB plateau by ~250k cases passes to 10^6 cases', async (t) => {
  // One check every 5000 cases; RSS rises over the first 50 checks (250k cases) and stays.
  const rss = [116 * MiB];
  for (let k = 1; k <= 200; k++) rss.push(Math.round((116 + 65 * Math.min(1, k / 50)) * MiB));
  for (let k = 1; k <= 200; k++) t.equal(rssStillGrowing(rss.slice(0, k + 1), 64 * MiB), null, `check ${k}`, { diagnostic: false });
  t.ok(rss[120] > rss[0] + 64 * MiB, 'the old bound (baseline + 64 MiB) fails it at check 120 (case 600,000)');
});

t.test('a leak fails: 1 KiB per case (5 MiB per check) once half its growth exceeds the slack', async (t) => {
  const rss = [116 * MiB];
  let failedAt = -1;
  for (let k = 1; k <= 100 && failedAt < 0; k++) {
    rss.push(116 * MiB + 5 * MiB * k);
    if (rssStillGrowing(rss, 64 * MiB) !== null) failedAt = k;
  }
  t.equal(failedAt, 25, 'caught at check 25 (125 MiB grown, 65 MiB of it since check 12)');
  t.match(rssStillGrowing(rss, 64 * MiB), /RSS 241 MiB at check 25, still growing: the most up to check 12 was 176 MiB \+ 64 MiB slack/);
});

t.test('a slow leak is caught later, a jump at once; noise within the slack passes', async (t) => {
  const slow = [100 * MiB];
  let failedAt = -1;
  for (let k = 1; k <= 1000 && failedAt < 0; k++) {
    slow.push(100 * MiB + 512 * k); // 0.5 MiB per check
    if (rssStillGrowing(slow, 64 * MiB) !== null) failedAt = k;
  }
  t.equal(failedAt, 257, 'a 0.5 MiB-per-check leak fails at check 257');
  t.match(rssStillGrowing([100 * MiB, 100 * MiB, 100 * MiB, 200 * MiB], 64 * MiB), /at check 3/, 'a jump of 100 MiB after a flat start fails');
  t.equal(rssStillGrowing([100 * MiB], 64 * MiB), null, 'the baseline alone');
  const noisy = [100 * MiB];
  for (let k = 1; k <= 300; k++) noisy.push(100 * MiB + ((k * 7919) % 60) * MiB);
  let bad = 0;
  for (let k = 1; k <= 300; k++) if (rssStillGrowing(noisy.slice(0, k + 1), 64 * MiB) !== null) bad++;
  t.equal(bad, 0, 'RSS going up and down within 60 MiB of the baseline passes');
});

t.test('the live-heap bound shared by the fuzz runner and the soak (recordHeap)', async (t) => {
  const heap = new Map<number, HeapTrack>();
  const probe = (main: number, worker: number) => [
    { tid: 0, usedKiB: main * MiB, totalKiB: 0, externalKiB: 0 },
    { tid: 1, usedKiB: worker * MiB, totalKiB: 0, externalKiB: 0 },
  ];
  t.equal(recordHeap(heap, probe(10.5, 5.3), 32 * MiB), null, 'the first reading is the baseline');
  t.equal(recordHeap(heap, probe(42.5, 37.3), 32 * MiB), null, 'exactly baseline + slack passes');
  t.same(heap.get(1), { base: 5.3 * MiB, max: 37.3 * MiB, last: 37.3 * MiB }, 'max and last follow the readings');
  t.equal(recordHeap(heap, probe(11, 37.4), 32 * MiB)?.tid, 1, 'above baseline + slack: that isolate is named');
  t.same(heap.get(0), { base: 10.5 * MiB, max: 42.5 * MiB, last: 11 * MiB }, 'the other isolates are still recorded');
  t.equal(recordHeap(heap, [{ tid: 2, usedKiB: 500 * MiB, totalKiB: 0, externalKiB: 0 }], 32 * MiB), null, 'a thread first seen starts its own baseline');
  t.equal(recordHeap(heap, probe(900, 900), Infinity), null, 'no bound before the baseline is taken (slack Infinity)');
});
