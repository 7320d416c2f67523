/**
 * Unit tests of vhostd-top's frame (reactor/top.ts renderFrame) from two
 * hand-made samples in the RPC methods' shapes: rates and mean latencies
 * are the differences over the interval, each controller gets its bdevs'
 * rates and the core its lw_thread names, and a frame with more rows than
 * room still fits 80x24 with "+N more" lines. Also the argument checks and
 * the --metrics address parser (reactor/cli-args.ts).
 * Runs on the tap main thread.
 */
import t from 'tap';
import { parseTopArgs, renderFrame, type TopSample } from '../../reactor/top';
import { parseMetricsAddress } from '../../reactor/cli-args';

function sample(atMs: number, nCtrl: number, readOps: number, readTicks: number, busy: number, idle: number): TopSample {
  const controllers = Array.from({ length: nCtrl }, (_, i) => ({
    ctrlr: `c${i}`,
    cpumask: '0x1',
    sessions: i === 0 ? [{ vid: 0, inflight_task_cnt: 3 }] : [],
    backend_specific: i % 2 === 0 ? { block: { bdev: `b${i}`, readonly: false } } : { scsi: [{ scsi_dev_num: 0, luns: [{ id: 0, bdev_name: `b${i}` }] }] },
  }));
  return {
    atMs,
    version: 'vhostd v0.1.0',
    reactors: { tick_rate: 1e9, pid: 42, reactors: [{ lcore: 0, busy, idle, in_interrupt: false, lw_threads: [{ name: 'vhost.c0', id: 1 }] }] },
    controllers,
    iostat: {
      tick_rate: 1e9,
      ticks: 0,
      bdevs: Array.from({ length: nCtrl }, (_, i) => ({
        name: `b${i}`,
        num_read_ops: i === 0 ? readOps : 0,
        bytes_read: i === 0 ? readOps * 4096 : 0,
        read_latency_ticks: i === 0 ? readTicks : 0,
        num_write_ops: 0,
        bytes_written: 0,
        write_latency_ticks: 0,
        io_error: {},
      })),
    },
  };
}

t.test('rates over the interval', async (t) => {
  // 2 s apart: 20000 more reads (10000/s, 39.06 MiB/s), 20000 × 25 µs of latency; core 75% busy.
  const lines = renderFrame(sample(0, 2, 1000, 1000 * 7000, 0, 0), sample(2000, 2, 21000, 1000 * 7000 + 20000 * 25000, 3e9, 1e9));
  const text = lines.join('\n');
  t.match(text, /pid 42/);
  t.match(text, /every 2\.0 s/);
  t.match(lines.find((l) => l.startsWith('    0')) ?? '', /^\s+0\s+75\.0\s+25\.0\s+poll\s+c0$/, 'core 0: 75% busy, runs c0');
  t.match(lines.find((l) => l.startsWith('c0 ')) ?? '', /^c0\s+blk\s+0\s+yes\s+3\s+10\.0k\s+0\s+39\.1\s+b0$/, 'c0: its bdev b0 rates, on core 0, connected, 3 in flight');
  t.match(lines.find((l) => l.startsWith('c1 ')) ?? '', /^c1\s+scsi\s+-\s+no\s+0\s+0\s+0\s+0\s+b1$/, 'c1: scsi, not running');
  t.match(lines.find((l) => l.startsWith('b0 ')) ?? '', /^b0\s+10\.0k\s+0\s+39\.1\s+0\s+25\s+-\s+0$/, 'b0: 10k read IOPS, 25 µs mean read latency');
});

t.test('fits 80x24 with many rows', async (t) => {
  const lines = renderFrame(sample(0, 40, 0, 0, 0, 0), sample(1000, 40, 0, 0, 1, 1));
  t.ok(lines.length <= 24, `${lines.length} lines`);
  t.ok(lines.every((l) => l.length <= 80), 'every line at most 80 columns');
  t.equal(lines.filter((l) => /… \+\d+ more/.test(l)).length, 2, 'controllers and bdevs both cut with +N more');
  const small = renderFrame(sample(0, 40, 0, 0, 0, 0), sample(1000, 40, 0, 0, 1, 1), 60, 14);
  t.ok(small.length <= 14 && small.every((l) => l.length <= 60), '60x14 too');
});

t.test('arguments', async (t) => {
  t.same(parseTopArgs(['-r', '/x.sock', '-d', '0.5', '-n', '3']), { socket: '/x.sock', delayMs: 500, iterations: 3, once: false });
  t.same(parseTopArgs(['--once']), { socket: '/var/tmp/vhostd.sock', delayMs: 1000, iterations: Infinity, once: true });
  t.equal(parseTopArgs(['-h']), 'help');
  t.throws(() => parseTopArgs(['-d', '0']), /-d must be a number of seconds/);
  t.throws(() => parseTopArgs(['-n', '0']), /-n must be a positive whole number/);
  t.throws(() => parseTopArgs(['--bogus']), /bogus/);
});

t.test('--metrics addresses', async (t) => {
  t.same(parseMetricsAddress('9100'), { kind: 'tcp', host: '127.0.0.1', port: 9100 });
  t.same(parseMetricsAddress(':9100'), { kind: 'tcp', host: '127.0.0.1', port: 9100 });
  t.same(parseMetricsAddress('0.0.0.0:9100'), { kind: 'tcp', host: '0.0.0.0', port: 9100 });
  t.same(parseMetricsAddress('[::1]:9100'), { kind: 'tcp', host: '::1', port: 9100 });
  t.same(parseMetricsAddress('localhost:0'), { kind: 'tcp', host: 'localhost', port: 0 });
  t.same(parseMetricsAddress('/run/vhostd/metrics.sock'), { kind: 'unix', path: '/run/vhostd/metrics.sock' });
  t.throws(() => parseMetricsAddress('host:port'), /is not HOST:PORT/);
  t.throws(() => parseMetricsAddress('1.2.3.4:70000'), /between 0 and 65535/);
});
