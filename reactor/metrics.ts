/**
 * The metrics endpoint (`--metrics ADDR`): Prometheus text exposition 0.0.4,
 * or OpenMetrics 1.0 when the scraper's Accept header asks for
 * `application/openmetrics-text`, on `GET /metrics` over HTTP (TCP or a Unix
 * socket). Built on prom-client.
 *
 * Nothing here is on the I/O path. Every value is read at scrape time from
 * the words the engine workers already keep for the RPC methods:
 * - per core: the worker's WorkerStat words (framework_get_reactors,
 *   thread_get_stats, thread_get_pollers);
 * - per bdev: the per-worker BdevStat words and latency histogram that
 *   bdev_get_iostat and bdev_get_histogram read (reactor/bdev/iostat.ts);
 * - per controller: the DeviceStat words of its engine devices
 *   (Controller.counters(); vhost_get_controllers' inflight_task_cnt).
 * A scrape costs a few loops over those typed arrays on the main thread.
 *
 * Counters follow the sources: bdev_reset_iostat (and bdev_get_iostat's
 * reset modes) resets the bdev counters, which Prometheus reads as a counter
 * reset.
 *
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type MetricType, type MetricValueWithName, type OpenMetricsContentType, type RegistryContentType } from 'prom-client';

type AnyRegistry = Registry<RegistryContentType>;
import { DeviceStat } from '../engine/control';
import type { BdevIoStats, IoStatCounters } from './bdev/iostat';
import type { MetricsAddress } from './cli-args';
import { logger } from './log';
import { removeStaleSocket } from './socket-file';

const log = logger('app');

/** One engine worker's statistics words. */
export interface CoreSample {
  busyNs: number;
  idleNs: number;
  iterations: number;
  busyIterations: number;
  devices: number;
  inInterrupt: boolean;
  sleeps: number;
}

/** What the endpoint reads; App gives it (see appMetricsSource in reactor/cli.ts). */
export interface MetricsSource {
  readonly cores: readonly number[];
  /** A core's worker words, or null while the engine is not started (--wait-for-rpc). */
  core(core: number): CoreSample | null;
  bdevs(): { name: string; module: string; blockSize: number; numBlocks: number; iostat: BdevIoStats }[];
  /** The vhost controllers: DeviceStat counters summed over their shards. */
  controllers(): { name: string; kind: string; connected: boolean; counters: Float64Array }[];
}

const OPS = ['read', 'write', 'unmap'] as const;

/**
 * A bdev's SPDK latency histogram (bdev_enable_histogram) as a Prometheus
 * histogram. SPDK's buckets are 2^granularity per power-of-two range; this
 * reports the cumulative count at the end of each range (every range of
 * [min_range, max_range]), so every `le` is exact: the largest whole
 * nanosecond count of that range, in seconds. Datapoints SPDK clamps into the
 * last range are counted by +Inf. There is no _sum (SPDK's histogram keeps
 * none) and so no _count (OpenMetrics: a _count needs a _sum; the +Inf
 * bucket is the count): the iostat latency sums
 * (vhostd_bdev_io_time_seconds_total) cover another span (they reset with
 * bdev_reset_iostat, the histogram with bdev_enable_histogram).
 */
class SpdkLatencyHistogram extends Histogram<'bdev' | 'le'> {
  static readonly NAME = 'vhostd_bdev_latency_seconds';
  static readonly HELP = 'I/O latency of the bdev (submit to completion in the engine), from its SPDK histogram; present while bdev_enable_histogram has it enabled';

  constructor(
    registry: AnyRegistry,
    private readonly source: MetricsSource,
  ) {
    super({
      name: SpdkLatencyHistogram.NAME,
      help: SpdkLatencyHistogram.HELP,
      labelNames: ['bdev'],
      buckets: [],
      registers: [registry],
    });
  }

  /** What the registry renders (prom-client calls getForPromString when a metric has it, as its Histogram does). */
  async getForPromString(): ReturnType<Histogram<'bdev' | 'le'>['get']> {
    return this.get();
  }

  /** The buckets as they are now; prom-client's own (empty: nothing is observe()d) are not used. */
  override async get(): ReturnType<Histogram<'bdev' | 'le'>['get']> {
    const values: MetricValueWithName<'bdev' | 'le'>[] = [];
    for (const b of this.source.bdevs()) {
      const h = b.iostat.histogram;
      const counts = b.iostat.histogramCounts();
      if (h === null || counts === null) continue;
      const perRange = 2 ** h.granularity;
      const ranges = h.maxRange - h.minRange + 1;
      let cumulative = 0;
      for (let r = 0; r < ranges; r++) {
        for (let i = 0; i < perRange; i++) cumulative += counts[r * perRange + i];
        const range = h.minRange + r;
        if (r === ranges - 1) break; // the last range also holds what SPDK clamped: +Inf only
        // Range 0 holds [0, 2^g); range k > 0 holds [2^(k+g-1), 2^(k+g)) ns.
        const endNs = 2 ** (range + h.granularity) - 1;
        values.push({ metricName: 'vhostd_bdev_latency_seconds_bucket', labels: { bdev: b.name, le: endNs / 1e9 }, value: cumulative });
      }
      values.push({ metricName: 'vhostd_bdev_latency_seconds_bucket', labels: { bdev: b.name, le: '+Inf' }, value: cumulative });
    }
    // prom-client's typings name the type with a numeric enum; its runtime (and the exposition) uses the string.
    return { name: SpdkLatencyHistogram.NAME, help: SpdkLatencyHistogram.HELP, type: 'histogram' as unknown as MetricType, values, aggregator: 'sum', collect: () => undefined };
  }
}

/** Register vhostd's metrics on `registry`, each read from `source` when scraped. */
export function registerMetrics(registry: AnyRegistry, source: MetricsSource): void {
  const registers = [registry];
  // A counter or gauge refilled from `source` on each scrape (reset first: a gone controller's series go too).
  const refilled =
    <M extends 'counter' | 'gauge'>(kind: M) =>
    <L extends string>(name: string, help: string, labelNames: L[], fill: (m: M extends 'counter' ? Counter<L> : Gauge<L>) => void): void => {
      const Metric = kind === 'counter' ? Counter<L> : Gauge<L>;
      new Metric({
        name,
        help,
        labelNames,
        registers,
        collect(this: Counter<L> | Gauge<L>) {
          this.reset();
          fill(this as M extends 'counter' ? Counter<L> : Gauge<L>);
        },
      });
    };
  const counter = refilled('counter');
  const gauge = refilled('gauge');
  // Each bdev's read, write and unmap figures (`pick`, in that order) of its iostat total.
  const forBdevOps = (
    pick: (t: IoStatCounters) => [number, number, number],
    f: (labels: { bdev: string; op: 'read' | 'write' | 'unmap' }, value: number) => void,
  ): void => {
    for (const b of source.bdevs()) {
      const [read, write, unmap] = pick(b.iostat.total());
      f({ bdev: b.name, op: 'read' }, read);
      f({ bdev: b.name, op: 'write' }, write);
      f({ bdev: b.name, op: 'unmap' }, unmap);
    }
  };
  const forCores = (f: (core: string, s: CoreSample) => void): void => {
    for (const core of source.cores) {
      const s = source.core(core);
      if (s !== null) f(String(core), s);
    }
  };

  // --- cores ----------------------------------------------------------------
  counter('vhostd_core_busy_seconds_total', 'Time the engine worker of the core spent in loop iterations that did work', ['core'], (c) =>
    forCores((core, s) => c.inc({ core }, s.busyNs / 1e9)),
  );
  counter('vhostd_core_idle_seconds_total', 'Time the engine worker of the core spent in idle iterations and asleep', ['core'], (c) =>
    forCores((core, s) => c.inc({ core }, s.idleNs / 1e9)),
  );
  counter('vhostd_core_poll_iterations_total', 'Poll loop iterations of the engine worker', ['core'], (c) => forCores((core, s) => c.inc({ core }, s.iterations)));
  counter('vhostd_core_busy_iterations_total', 'Poll loop iterations that did work', ['core'], (c) => forCores((core, s) => c.inc({ core }, s.busyIterations)));
  counter('vhostd_core_sleeps_total', 'Times the engine worker went to sleep in poll(2) (adaptive and interrupt modes)', ['core'], (c) =>
    forCores((core, s) => c.inc({ core }, s.sleeps)),
  );
  gauge('vhostd_core_devices', 'Devices placed on the engine worker of the core (its pollers)', ['core'], (g) => forCores((core, s) => g.set({ core }, s.devices)));
  gauge('vhostd_core_in_interrupt', '1 while the engine worker of the core is in interrupt mode', ['core'], (g) =>
    forCores((core, s) => g.set({ core }, s.inInterrupt ? 1 : 0)),
  );

  // --- bdevs ----------------------------------------------------------------
  gauge('vhostd_bdev_size_bytes', 'Size of the bdev', ['bdev', 'module'], (g) => {
    for (const b of source.bdevs()) g.set({ bdev: b.name, module: b.module }, b.blockSize * b.numBlocks);
  });
  counter('vhostd_bdev_ops_total', 'I/Os the bdev completed successfully, by type (bdev_get_iostat num_*_ops)', ['bdev', 'op'], (c) =>
    forBdevOps((t) => [t.num_read_ops, t.num_write_ops, t.num_unmap_ops], (labels, v) => c.inc(labels, v)),
  );
  counter('vhostd_bdev_bytes_total', 'Bytes the bdev read, wrote and unmapped (bdev_get_iostat bytes_*)', ['bdev', 'op'], (c) =>
    forBdevOps((t) => [t.bytes_read, t.bytes_written, t.bytes_unmapped], (labels, v) => c.inc(labels, v)),
  );
  counter(
    'vhostd_bdev_io_time_seconds_total',
    'Summed latency of the I/Os counted by vhostd_bdev_ops_total (rate of this / rate of that = mean latency)',
    ['bdev', 'op'],
    (c) => forBdevOps((t) => [t.read_latency_ticks / 1e9, t.write_latency_ticks / 1e9, t.unmap_latency_ticks / 1e9], (labels, v) => c.inc(labels, v)),
  );
  gauge('vhostd_bdev_latency_max_seconds', 'Largest latency of one I/O since the last reset (bdev_get_iostat max_*_latency_ticks)', ['bdev', 'op'], (g) =>
    forBdevOps((t) => [t.max_read_latency_ticks / 1e9, t.max_write_latency_ticks / 1e9, t.max_unmap_latency_ticks / 1e9], (labels, v) => g.set(labels, v)),
  );
  counter('vhostd_bdev_errors_total', 'I/Os the bdev completed with an error', ['bdev'], (c) => {
    for (const b of source.bdevs()) c.inc({ bdev: b.name }, b.iostat.total().io_error.failed ?? 0);
  });
  new SpdkLatencyHistogram(registry, source);

  // --- controllers ----------------------------------------------------------
  const ctrlrOps: [string, DeviceStat, DeviceStat | null][] = [
    ['read', DeviceStat.ReadOps, DeviceStat.ReadBytes],
    ['write', DeviceStat.WriteOps, DeviceStat.WriteBytes],
    ['unmap', DeviceStat.UnmapOps, DeviceStat.UnmapBytes],
    ['flush', DeviceStat.FlushOps, null],
  ];
  counter('vhostd_controller_ops_total', 'Requests the controller completed, by type (errors included)', ['ctrlr', 'op'], (c) => {
    for (const d of source.controllers()) for (const [op, ops] of ctrlrOps) c.inc({ ctrlr: d.name, op }, d.counters[ops]);
  });
  counter('vhostd_controller_bytes_total', 'Data bytes of the requests the controller completed, by type', ['ctrlr', 'op'], (c) => {
    for (const d of source.controllers()) for (const [op, , bytes] of ctrlrOps) if (bytes !== null) c.inc({ ctrlr: d.name, op }, d.counters[bytes]);
  });
  counter('vhostd_controller_errors_total', 'Requests the controller completed with an error status (bad requests, I/O errors)', ['ctrlr'], (c) => {
    for (const d of source.controllers()) c.inc({ ctrlr: d.name }, d.counters[DeviceStat.ErrorOps]);
  });
  counter('vhostd_controller_interrupts_total', 'Call eventfd signals the controller sent to the front-end', ['ctrlr'], (c) => {
    for (const d of source.controllers()) c.inc({ ctrlr: d.name }, d.counters[DeviceStat.CallSignals]);
  });
  gauge('vhostd_controller_inflight', 'Requests of the controller in flight now (taken from its rings, not yet completed): its queue depth', ['ctrlr'], (g) => {
    for (const d of source.controllers()) g.set({ ctrlr: d.name }, d.counters[DeviceStat.InflightTasks]);
  });
  gauge('vhostd_controller_connected', '1 while a front-end is connected to the controller', ['ctrlr', 'type'], (g) => {
    for (const d of source.controllers()) g.set({ ctrlr: d.name, type: d.kind }, d.connected ? 1 : 0);
  });
}

const OPENMETRICS = 'application/openmetrics-text';

/**
 * The HTTP server of the endpoint. Two registries with the same metrics:
 * prom-client renders one content type per registry (and renames counters
 * for OpenMetrics in place, so the two cannot share metric objects).
 */
export class MetricsServer {
  private readonly prometheus = new Registry();
  private readonly openMetrics = new Registry<OpenMetricsContentType>();
  private server: http.Server | null = null;
  private unixPath: string | null = null;

  constructor(source: MetricsSource) {
    this.openMetrics.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
    for (const r of [this.prometheus, this.openMetrics]) {
      registerMetrics(r, source);
      // The process: CPU, memory, fds, event loop lag (process_*, nodejs_*).
      collectDefaultMetrics({ register: r });
    }
  }

  /** The exposition text for an Accept header, with its content type. */
  async render(accept: string | undefined): Promise<{ contentType: string; body: string }> {
    const r = accept !== undefined && accept.includes(OPENMETRICS) ? this.openMetrics : this.prometheus;
    return { contentType: r.contentType, body: await r.metrics() };
  }

  /** Listen; resolves with what it listens on (a TCP port 0 resolved). */
  async listen(addr: MetricsAddress): Promise<string> {
    if (this.server) throw new Error('MetricsServer is already listening');
    const server = http.createServer((req, res) => this.handle(req, res));
    server.on('clientError', (_err, socket) => socket.destroy());
    const bound = addr.kind === 'unix' ? `${addr.path}.~${process.pid}` : null;
    if (addr.kind === 'unix') {
      // As the RPC socket: bound aside, given 0600, renamed into place.
      removeStaleSocket(addr.path);
      await fs.promises.unlink(bound as string).catch(() => undefined);
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if (addr.kind === 'unix') server.listen(bound as string, done);
      else server.listen(addr.port, addr.host, done);
    });
    server.on('error', (err) => log.error('metrics server error', { error: err.message }));
    let where: string;
    if (addr.kind === 'unix') {
      try {
        await fs.promises.chmod(bound as string, 0o600);
        await fs.promises.rename(bound as string, addr.path);
      } catch (err) {
        server.close();
        await fs.promises.unlink(bound as string).catch(() => undefined);
        throw err;
      }
      this.unixPath = addr.path;
      where = addr.path;
    } else {
      const a = server.address() as AddressInfo;
      where = a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    }
    this.server = server;
    log.notice('metrics listening', { address: where, path: '/metrics' });
    return where;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = (req.url ?? '').split('?')[0];
    if (url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('vhostd serves GET /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('GET /metrics\n');
      return;
    }
    this.render(req.headers.accept).then(
      ({ contentType, body }) => {
        res.writeHead(200, { 'content-type': contentType });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        log.warn('metrics scrape failed', { error: (err as Error).message });
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`scrape failed: ${(err as Error).message}\n`);
      },
    );
  }

  /** Stop listening (open scrapes are cut), remove a Unix socket file. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
    if (this.unixPath !== null) await fs.promises.unlink(this.unixPath).catch(() => undefined);
    this.unixPath = null;
  }
}

