/**
 * What SPDK's tools ask of a target, through SPDK's unchanged rpc.py (the
 * peer at ../shared/peers/spdk-rpc) against the real vhostd with the in-repo
 * front-end doing I/O:
 * - spdk_top's methods: thread_get_pollers (the engine thread's poll loop
 *   counts runs and busy runs), thread_get_io_channels (the bdev channel of
 *   a running device, ref = devices using it), framework_get_scheduler /
 *   framework_set_scheduler (static here; dynamic: test/integration/scheduler.test.ts).
 * - bdev_reset_iostat (all, maxmin) and bdev_get_iostat --reset-mode.
 * - bdev_enable_histogram / bdev_get_histogram in SPDK's format, decoded as
 *   SPDK's scripts/histogram.py decodes it: the counts add up to the I/Os
 *   done, and each latency lies inside the min/max bdev_get_iostat reports.
 * Thread: test main thread.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus } from '../lib/frontend-wire';
import { runRpcPy, spdkRpcDir } from '../lib/spdk-rpc';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(300_000);

type Obj = Record<string, unknown>;

/** The first value `fn` gives that is not undefined (polled; waitFor's timeout and message). */
async function until<T>(fn: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  let got: T | undefined;
  await waitFor(async () => (got = await fn()) !== undefined, timeoutMs, what, 100);
  return got as T;
}

class Py {
  constructor(
    readonly t: Test,
    readonly dir: string,
    readonly h: VhostdHandle,
  ) {}

  async out(...args: string[]): Promise<string> {
    const r = await runRpcPy(this.dir, ['-s', this.h.rpcSocket, ...args]);
    this.t.equal(r.code, 0, `rpc.py ${args.join(' ')}: exit 0${r.code === 0 ? '' : `\n${r.stdout}${r.stderr}`}`);
    return r.stdout;
  }

  async json<T = Obj>(...args: string[]): Promise<T> {
    return JSON.parse(await this.out(...args)) as T;
  }

  /** A command that must fail with JSON-RPC error `code`. */
  async fails(code: number, ...args: string[]): Promise<string> {
    const r = await runRpcPy(this.dir, ['-s', this.h.rpcSocket, ...args]);
    this.t.equal(r.code, 1, `rpc.py ${args.join(' ')}: exit 1`);
    const m = /response:\n(\{[\s\S]*\})\s*$/.exec(r.stdout);
    const err = m ? (JSON.parse(m[1]) as { code: number; message: string }) : { code: NaN, message: r.stdout + r.stderr };
    this.t.equal(err.code, code, `rpc.py ${args[0]}: error ${code} (${err.message})`);
    return err.message;
  }
}

/**
 * SPDK's scripts/histogram.py, its arithmetic in TypeScript: each bucket's
 * [start, end) in ticks and its count. (histogram.py iterates ranges
 * 0..max_range-min_range-1; the last range here too, which only matters for
 * clamped datapoints.)
 */
function decodeHistogram(h: { histogram: string; granularity: number; min_range: number; max_range: number }): { start: number; end: number; count: number }[] {
  const data = Buffer.from(h.histogram, 'base64');
  const out: { start: number; end: number; count: number }[] = [];
  let bucket = 0;
  for (let i = 0; i <= h.max_range - h.min_range; i++) {
    for (let j = 0; j < 1 << h.granularity; j++) {
      const index = ((i << h.granularity) + j) * 8;
      const count = Number(data.readBigUInt64LE(index));
      const last = bucket;
      if (i > 0) bucket = 2 ** (i + h.granularity + h.min_range - 1) + (j + 1) * 2 ** (i + h.min_range - 1);
      else bucket = (j + 1) * 2 ** h.min_range;
      if (count > 0) out.push({ start: last, end: bucket, count });
    }
  }
  return out;
}

t.test("spdk_top's methods, iostat resets and histograms through SPDK's rpc.py", async (t) => {
  const dir = spdkRpcDir();
  const h = await startVhostd({ cpumask: '0x1' });
  t.teardown(() => h.stop());
  const py = new Py(t, dir, h);

  await py.out('bdev_malloc_create', '-b', 'T0', '16', '512');
  await py.out('vhost_create_blk_controller', 'tc0', 'T0');

  // --- scheduler
  t.same(await py.json('framework_get_scheduler'), { scheduler_name: 'static', scheduler_period: 1_000_000 });
  t.equal(await py.out('framework_set_scheduler', 'static', '-p', '500000'), '');
  t.same(await py.json('framework_get_scheduler'), { scheduler_name: 'static', scheduler_period: 500_000 }, 'period kept');
  t.match(await py.fails(-22, 'framework_set_scheduler', 'gscheduler'), /gscheduler/, 'a scheduler vhostd does not have is refused');
  t.same(await py.json('framework_get_scheduler'), { scheduler_name: 'static', scheduler_period: 500_000 }, 'still static');

  // --- a running device
  const fe = await VhostUserFrontend.connect(h.socketOf('tc0'), 5000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate();
  await fe.setupQueue(0, 64);

  interface Channels {
    threads: { name: string; io_channels: { name: string; ref: number }[] }[];
  }
  const channels = await until(async () => {
    const c = await py.json<Channels>('thread_get_io_channels');
    return c.threads.find((x) => x.name === 'engine_0')?.io_channels.length ? c : undefined;
  }, 20_000, 'the engine thread opens the bdev channel');
  t.same(channels.threads, [
    { name: 'app_thread', io_channels: [] },
    { name: 'engine_0', io_channels: [{ name: 'T0', ref: 1 }] },
  ]);

  // --- histogram, on before the I/O
  t.equal(await py.out('bdev_enable_histogram', '--histogram', 'T0'), '');
  const writes = 40;
  for (let i = 0; i < writes; i++) t.equal((await fe.write(0, i * 8, randomBytes(4096))).status, BlkStatus.OK);
  const reads = await Promise.all(Array.from({ length: 30 }, (_, i) => fe.read(0, (i % 10) * 8, 4096)));
  t.ok(reads.every((r) => r.status === BlkStatus.OK), '30 reads');

  interface Hist {
    histogram: string;
    granularity: number;
    min_range: number;
    max_range: number;
    tsc_rate: number;
  }
  const stat = await until(async () => {
    const s = (await py.json<{ bdevs: Obj[] }>('bdev_get_iostat', '--names', 'T0')).bdevs[0];
    return s.num_read_ops === 30 && s.num_write_ops === writes ? s : undefined;
  }, 10_000, 'iostat counts the I/O');
  const hist = await py.json<Hist>('bdev_get_histogram', 'T0');
  t.match(hist, { granularity: 7, min_range: 0, max_range: 57, tsc_rate: 1e9 }, "SPDK's default shape");
  t.equal(Buffer.from(hist.histogram, 'base64').length, 58 * 128 * 8, '58 ranges of 128 u64 buckets');
  const buckets = decodeHistogram(hist);
  t.equal(buckets.reduce((n, b) => n + b.count, 0), 70, 'every read and write once');
  const lo = Math.min(stat.min_read_latency_ticks as number, stat.min_write_latency_ticks as number);
  const hi = Math.max(stat.max_read_latency_ticks as number, stat.max_write_latency_ticks as number);
  t.ok(buckets[0].end > lo && buckets[buckets.length - 1].start <= hi, `buckets [${buckets[0].start}, ${buckets[buckets.length - 1].end}) cover the latencies [${lo}, ${hi}]`);

  // Only writes, narrowed: a fresh histogram.
  t.equal(await py.out('bdev_enable_histogram', '--histogram', '-o', 'write', '--granularity', '5', '--min-nsec', '1000', '--max-nsec', '100000000000', 'T0'), '');
  const h2 = await py.json<Hist>('bdev_get_histogram', 'T0');
  t.match(h2, { granularity: 5, min_range: 5, max_range: 32 });
  t.same(decodeHistogram(h2), [], 'fresh histogram: empty');
  for (let i = 0; i < 5; i++) await fe.write(0, i * 8, randomBytes(4096));
  await fe.read(0, 0, 4096);
  const h3 = await until(async () => {
    const x = await py.json<Hist>('bdev_get_histogram', 'T0');
    return decodeHistogram(x).reduce((n, b) => n + b.count, 0) === 5 ? x : undefined;
  }, 10_000, 'the 5 writes in the histogram');
  t.ok(h3, 'the read is not counted (-o write)');
  await py.fails(-22, 'bdev_enable_histogram', '--histogram', '-o', 'compare', 'T0');
  await py.fails(-22, 'bdev_enable_histogram', '--histogram', '--granularity', '12', 'T0');
  t.equal(await py.out('bdev_enable_histogram', '--no-histogram', 'T0'), '');
  t.equal(await py.fails(-32603, 'bdev_get_histogram', 'T0'), 'Bad address', 'disabled: as SPDK (-EFAULT)');
  await py.fails(-19, 'bdev_get_histogram', 'NOPE');

  // --- iostat resets
  const before = (await py.json<{ bdevs: Obj[] }>('bdev_get_iostat', '--names', 'T0')).bdevs[0];
  t.ok((before.max_write_latency_ticks as number) > 0, 'max latency before the reset');
  t.equal(await py.out('bdev_reset_iostat', '-b', 'T0', '-m', 'maxmin'), '');
  const mm = (await py.json<{ bdevs: Obj[] }>('bdev_get_iostat', '--names', 'T0')).bdevs[0];
  t.match(mm, { num_write_ops: before.num_write_ops, num_read_ops: before.num_read_ops, max_write_latency_ticks: 0, min_write_latency_ticks: 0, max_read_latency_ticks: 0 }, 'maxmin: counts stay, extremes go');
  await fe.write(0, 0, randomBytes(4096));
  const after = await until(async () => {
    const s = (await py.json<{ bdevs: Obj[] }>('bdev_get_iostat', '--names', 'T0')).bdevs[0];
    return s.num_write_ops === (before.num_write_ops as number) + 1 ? s : undefined;
  }, 10_000, 'one more write');
  t.ok((after.max_write_latency_ticks as number) > 0 && after.max_write_latency_ticks === after.min_write_latency_ticks, 'extremes of the one write since the reset');

  const got = (await py.json<{ bdevs: Obj[] }>('bdev_get_iostat', '--names', 'T0', '--reset-mode', 'all')).bdevs[0];
  t.equal(got.num_write_ops, after.num_write_ops, '--reset-mode all: the statistics before the reset');
  t.match((await py.json<{ bdevs: Obj[] }>('bdev_get_iostat', '--names', 'T0')).bdevs[0], { num_write_ops: 0, num_read_ops: 0, bytes_written: 0, max_write_latency_ticks: 0 }, 'then zero');
  await fe.read(0, 0, 4096);
  await waitFor(async () => (await py.json<{ bdevs: Obj[] }>('bdev_get_iostat', '--names', 'T0')).bdevs[0].num_read_ops === 1, 10_000, 'counting again after the reset', 100);
  t.equal(await py.out('bdev_reset_iostat'), '', 'bdev_reset_iostat: every bdev (mode all)');
  t.match((await py.json<{ bdevs: Obj[] }>('bdev_get_iostat', '--names', 'T0')).bdevs[0], { num_read_ops: 0 });
  await py.fails(-19, 'bdev_reset_iostat', '-b', 'NOPE');

  // --- pollers: the engine loop runs, and some runs did work
  interface Pollers {
    threads: { name: string; active_pollers: { name: string; state: string; run_count: number; busy_count: number }[]; timed_pollers: unknown[]; paused_pollers: unknown[] }[];
  }
  const pollers = await py.json<Pollers>('thread_get_pollers');
  t.same(pollers.threads.map((x) => x.name), ['app_thread', 'engine_0']);
  const loop = pollers.threads[1].active_pollers;
  t.match(loop, [{ name: 'engine_poll(tc0)', state: 'running' }], 'one poller: the loop, polling tc0');
  t.ok(loop[0].run_count > loop[0].busy_count && loop[0].busy_count > 0, `run_count ${loop[0].run_count} > busy_count ${loop[0].busy_count} > 0`);

  await fe.close();
});
