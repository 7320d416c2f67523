/**
 * The engine worker turns its thread's event loop while its poll loop runs
 * (engine/worker.ts, Poller.runSlice). Node runs the deferred half of native
 * finalizers (every mmap()ed region's ArrayBuffer) and V8's foreground tasks
 * there; a worker whose loop never turned kept them queued for its whole life
 * (~250 B per mapped region: the soak's RSS growth per connection). Here the
 * real engineWorker runs in a real worker thread: an immediate queued before
 * it started must run while it polls (the old loop never let it). Also the soak's per-connection growth figure (test/fuzz/soak.ts).
 * Thread: test main thread (+ one worker).
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import path from 'node:path';
import t from 'tap';
import { WorkerStat } from '../../engine/control';
import { growthPerConnection, MAX_GROWTH_PER_CONN } from '../fuzz/soak';

t.setTimeout(60_000);

const WORKER_SRC = `
const { workerData } = require('node:worker_threads');
const engineWorker = require(workerData.workerJs).default;
const flag = new Int32Array(workerData.flag);
setImmediate(() => Atomics.store(flag, 0, 1));
engineWorker(workerData.init).then(() => Atomics.store(flag, 1, 1));
`;

t.test('an immediate queued before the poll loop began runs while it polls; exit still ends it', async (t) => {
  const { port1, port2 } = new MessageChannel();
  const stats = new SharedArrayBuffer(WorkerStat.Count * 8);
  const flag = new SharedArrayBuffer(8);
  const flags = new Int32Array(flag);
  const init = { core: 0, port: port2, wakeFd: -1, stats, pollMode: 'poll', idleSleepUs: 0 };
  const w = new Worker(WORKER_SRC, {
    eval: true,
    workerData: { workerJs: path.join(__dirname, '../../engine/worker.js'), flag, init },
    transferList: [port2],
  });
  const exited = new Promise<number>((resolve) => w.on('exit', resolve));
  const deadline = Date.now() + 20_000;
  while (Atomics.load(flags, 0) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.equal(Atomics.load(flags, 0), 1, 'the worker\'s event loop turned while the poll loop ran');
  t.equal(Atomics.load(flags, 1), 0, 'the poll loop was still running then');
  t.ok(new Float64Array(stats)[WorkerStat.Iterations] > 0, 'it polled');
  const reply = new Promise<unknown>((resolve) => port1.once('message', resolve));
  port1.postMessage({ op: 'exit', id: 7 });
  t.same(await reply, { id: 7, ok: true }, 'exit answered');
  t.equal(await exited, 0, 'the worker ended');
  t.equal(Atomics.load(flags, 1), 1, 'engineWorker resolved');
  port1.close();
});

t.test('soak growth per connection: a rising RSS floor is measured, peaks are not', async (t) => {
  const flat = Array.from({ length: 30 }, (_, i) => ({ cycles: i * 1000, churn: i * 100, rssKiB: 150_000 + (i % 4 === 0 ? 15_000 : (i * 37) % 2000) }));
  const g = growthPerConnection(flat);
  t.ok(g !== null && Math.abs(g) < MAX_GROWTH_PER_CONN, `flat with GC peaks: ${g?.toFixed(1)} B per connection`);
  // The old engine worker: ~400 B per connection retained (the soak's 150 → 210 MiB).
  const leaking = flat.map((s) => ({ ...s, rssKiB: s.rssKiB + ((s.cycles + s.churn) * 400) / 1024 }));
  const l = growthPerConnection(leaking);
  t.ok(l !== null && l > MAX_GROWTH_PER_CONN, `400 B per connection retained is over the bound: ${l?.toFixed(1)}`);
  t.equal(growthPerConnection(flat.slice(0, 5)), null, 'too few samples: not measured');
});
