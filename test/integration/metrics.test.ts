/**
 * `--metrics`: the real vhostd serves GET /metrics while the in-repo
 * vhost-user front-end drives I/O through a controller; the exposition is
 * judged by the Prometheus project's own parsers (prometheus_client: the
 * 0.0.4 text format by default, strict OpenMetrics 1.0 when the Accept
 * header asks for it), and the counters move with the I/O: bdev and
 * controller ops and bytes, the latency histogram, per-core busy time,
 * controller errors and in-flight requests, connected state. Also: the Unix
 * socket form (mode 0600), 404 for other paths, a bad --metrics value.
 * Thread: test main thread.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import http from 'node:http';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startBlkLoad } from '../lib/blk-load';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus } from '../lib/frontend-wire';
import { parseExposition, sampleValue, type PromFamily } from '../lib/prometheus';
import { repoRoot } from '../lib/repo';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(180_000);

interface Scrape {
  status: number;
  contentType: string;
  body: string;
}

function scrape(target: { host: string; port: number } | { socketPath: string }, urlPath = '/metrics', accept?: string): Promise<Scrape> {
  return new Promise((resolve, reject) => {
    const req = http.get({ ...target, path: urlPath, headers: accept ? { accept } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error('scrape timed out')));
  });
}

/** The address of the "metrics listening" log line. */
async function metricsAddress(h: VhostdHandle): Promise<{ host: string; port: number }> {
  let m: RegExpExecArray | null = null;
  await waitFor(() => (m = /metrics listening address=([0-9.]+):(\d+)/.exec(h.daemon.log)) !== null, 20_000, 'metrics listening line');
  const found = m as unknown as RegExpExecArray;
  return { host: found[1], port: Number(found[2]) };
}

t.test('metrics over TCP while I/O runs', async (t) => {
  const h = await startVhostd({ cpumask: '0x1', extraArgs: ['--metrics', '127.0.0.1:0'] });
  t.teardown(() => h.stop());
  const addr = await metricsAddress(h);

  await h.rpc('bdev_malloc_create', { name: 'Mx0', num_blocks: 32768, block_size: 512 });
  await h.rpc('bdev_enable_histogram', { name: 'Mx0', enable: true });
  await h.rpc('vhost_create_blk_controller', { ctrlr: 'mx.0', dev_name: 'Mx0' });

  const before = await parseExposition((await scrape(addr)).body, 'prometheus');
  t.equal(sampleValue(before, 'vhostd_controller_connected', { ctrlr: 'mx.0', type: 'blk' }), 0, 'no front-end yet');
  t.equal(sampleValue(before, 'vhostd_bdev_ops_total', { bdev: 'Mx0', op: 'write' }), 0, 'no writes yet');
  t.equal(sampleValue(before, 'vhostd_bdev_size_bytes', { bdev: 'Mx0', module: 'malloc' }), 32768 * 512, 'bdev size');

  const fe = await VhostUserFrontend.connect(h.socketOf('mx.0'), 5000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate();
  await fe.setupQueue(0, 128);

  // A closed loop of 8 writers+readers (4 KiB) that runs while we scrape.
  const load = startBlkLoad(fe, 8, 32768);
  let a: PromFamily[];
  let b: PromFamily[];
  try {
    await waitFor(() => load.done >= 200, 60_000, '200 I/Os done');
    const first = await scrape(addr);
    t.equal(first.status, 200);
    t.match(first.contentType, /^text\/plain; version=0\.0\.4/, 'Prometheus text format by default');
    a = await parseExposition(first.body, 'prometheus');
    await waitFor(() => load.done >= 600, 60_000, '600 I/Os done');
    const secondOm = await scrape(addr, '/metrics', 'application/openmetrics-text; version=1.0.0,text/plain;q=0.5');
    t.match(secondOm.contentType, /^application\/openmetrics-text; version=1\.0\.0/, 'OpenMetrics when asked for');
    t.match(secondOm.body, /# EOF\n$/, 'ends with # EOF');
    b = await parseExposition(secondOm.body, 'openmetrics');
  } finally {
    await load.stop();
  }
  // Scraped while I/O runs, each family is read at its own moment (the worker keeps completing
  // requests in between), so exact relations between families are checked on a scrape taken once
  // the load has stopped and every request it issued has completed.
  const q = await parseExposition((await scrape(addr)).body, 'prometheus');

  for (const op of ['read', 'write']) {
    const ba = sampleValue(a, 'vhostd_bdev_ops_total', { bdev: 'Mx0', op }) as number;
    const bb = sampleValue(b, 'vhostd_bdev_ops_total', { bdev: 'Mx0', op }) as number;
    t.ok(ba > 0 && bb > ba, `bdev ${op} ops move: ${ba} → ${bb}`);
    const ca = sampleValue(a, 'vhostd_controller_ops_total', { ctrlr: 'mx.0', op }) as number;
    const cb = sampleValue(b, 'vhostd_controller_ops_total', { ctrlr: 'mx.0', op }) as number;
    t.ok(ca > 0 && cb > ca, `controller ${op} ops move: ${ca} → ${cb}`);
    const bq = sampleValue(q, 'vhostd_bdev_ops_total', { bdev: 'Mx0', op }) as number;
    const cq = sampleValue(q, 'vhostd_controller_ops_total', { ctrlr: 'mx.0', op }) as number;
    t.ok(bq >= bb && cq >= cb, `after the load: bdev ${op} ops ${bq}, controller ${cq}`);
    t.equal(sampleValue(q, 'vhostd_bdev_bytes_total', { bdev: 'Mx0', op }), bq * 4096, `bdev ${op} bytes are 4 KiB per op`);
    t.equal(sampleValue(q, 'vhostd_controller_bytes_total', { ctrlr: 'mx.0', op }), cq * 4096, `controller ${op} bytes are 4 KiB per op`);
    const la = sampleValue(a, 'vhostd_bdev_io_time_seconds_total', { bdev: 'Mx0', op }) as number;
    const lb = sampleValue(b, 'vhostd_bdev_io_time_seconds_total', { bdev: 'Mx0', op }) as number;
    t.ok(la > 0 && lb > la, `summed ${op} latency moves`);
  }
  t.equal(sampleValue(b, 'vhostd_controller_connected', { ctrlr: 'mx.0', type: 'blk' }), 1, 'connected');
  t.equal(sampleValue(b, 'vhostd_core_devices', { core: '0' }), 1, 'one device on core 0');
  const busyA = sampleValue(a, 'vhostd_core_busy_seconds_total', { core: '0' }) as number;
  const busyB = sampleValue(b, 'vhostd_core_busy_seconds_total', { core: '0' }) as number;
  t.ok(busyA > 0 && busyB > busyA, `core 0 busy time moves: ${busyA} → ${busyB}`);
  t.ok((sampleValue(b, 'vhostd_core_idle_seconds_total', { core: '0' }) as number) >= 0, 'idle time reported');
  t.type(sampleValue(a, 'vhostd_controller_inflight', { ctrlr: 'mx.0' }), 'number', 'in-flight gauge');

  // The histogram: cumulative buckets ending at +Inf with every I/O since it was enabled.
  const hist = q.find((f) => f.name === 'vhostd_bdev_latency_seconds') as PromFamily;
  t.equal(hist?.type, 'histogram', 'latency histogram family');
  const buckets = hist.samples.filter((s) => s.name === 'vhostd_bdev_latency_seconds_bucket' && s.labels.bdev === 'Mx0');
  t.ok(buckets.length > 2, `${buckets.length} buckets`);
  t.equal(buckets[buckets.length - 1].labels.le, '+Inf', 'last bucket +Inf');
  const counts = buckets.map((s) => s.value as number);
  t.ok(counts.every((c, i) => i === 0 || c >= counts[i - 1]), 'cumulative');
  const total = (sampleValue(q, 'vhostd_bdev_ops_total', { bdev: 'Mx0', op: 'read' }) as number) + (sampleValue(q, 'vhostd_bdev_ops_total', { bdev: 'Mx0', op: 'write' }) as number);
  t.equal(counts[counts.length - 1], total, '+Inf counts every read and write (histogram enabled before any I/O)');

  // A request past the end of the disk: an error status, counted for the controller.
  const errA = sampleValue(b, 'vhostd_controller_errors_total', { ctrlr: 'mx.0' }) as number;
  t.not((await fe.read(0, 32768, 4096)).status, BlkStatus.OK, 'read past the end fails');
  const c = await parseExposition((await scrape(addr)).body, 'prometheus');
  t.equal(sampleValue(c, 'vhostd_controller_errors_total', { ctrlr: 'mx.0' }), errA + 1, 'controller error counted');
  t.equal(sampleValue(c, 'vhostd_controller_inflight', { ctrlr: 'mx.0' }), 0, 'nothing in flight once the load stopped');

  // bdev_reset_iostat resets the bdev counters (a counter reset for Prometheus).
  await h.rpc('bdev_reset_iostat', { name: 'Mx0', mode: 'all' });
  const d = await parseExposition((await scrape(addr)).body, 'prometheus');
  t.equal(sampleValue(d, 'vhostd_bdev_ops_total', { bdev: 'Mx0', op: 'read' }), 0, 'reset with bdev_reset_iostat');

  t.equal((await scrape(addr, '/')).status, 404, 'other paths: 404');
  await fe.close();
  await waitFor(async () => sampleValue(await parseExposition((await scrape(addr)).body, 'prometheus'), 'vhostd_controller_connected', { ctrlr: 'mx.0', type: 'blk' }) === 0, 20_000, 'disconnect seen');
});

t.test('metrics on a Unix socket', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-metrics-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'metrics.sock');
  const h2 = await startVhostd({ cpumask: '0x1', extraArgs: ['--metrics', sock] });
  t.teardown(() => h2.stop());
  await waitFor(() => h2.daemon.log.includes(`metrics listening address=${sock}`), 20_000, 'metrics listening line');
  t.equal(fs.statSync(sock).mode & 0o777, 0o600, 'socket mode 0600');
  const r = await scrape({ socketPath: sock });
  t.equal(r.status, 200);
  const fams = await parseExposition(r.body, 'prometheus');
  t.ok(sampleValue(fams, 'vhostd_core_poll_iterations_total', { core: '0' }) !== undefined, 'core metrics present');
  t.ok(sampleValue(fams, 'process_cpu_seconds_total') !== undefined, 'process metrics present');
  const exit = await h2.stop();
  t.equal(exit.code, 0);
  t.notOk(fs.existsSync(sock), 'socket removed at stop');
});

t.test('a bad --metrics value', async (t) => {
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'vhostd.js'), '--metrics', 'host:port'], { encoding: 'utf8' });
  t.equal(r.status, 2);
  t.match(r.stderr, /--metrics: "host:port" is not HOST:PORT/);
});
