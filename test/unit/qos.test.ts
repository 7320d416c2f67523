/**
 * The engine's QoS gate (engine/bdev/qos.ts) on a simulated clock, the
 * per-bdev I/O statistics recorder (engine/bdev/iostat.ts) and the reactor's
 * QoS limits object (SPDK rounding, config writer).
 */
import t from 'tap';
import { type BdevChannel, BdevIo, BdevIoType } from '../../engine/bdev/bdev';
import { IoStatRecorder } from '../../engine/bdev/iostat';
import { MAX_CATCHUP_SLICES, QosGate } from '../../engine/bdev/qos';
import { BdevStat, QosSlot } from '../../engine/control';
import { BdevIoStats } from '../../reactor/bdev/iostat';
import { BdevQosLimits } from '../../reactor/bdev/qos';

class TestIo extends BdevIo {
  constructor(type: BdevIoType, numBlocks: number) {
    super(1);
    this.prepare(type, 0, numBlocks);
  }
  override done(): void {}
}

/** A channel that records what reached it. */
class Recorder implements BdevChannel {
  readonly started: BdevIo[] = [];
  submit(io: BdevIo): void {
    this.started.push(io);
  }
  poll(): number {
    return 0;
  }
  get outstanding(): number {
    return 0;
  }
  destroy(): void {}
}

function limits(v: Partial<Record<QosSlot, number>>): SharedArrayBuffer {
  const b = new SharedArrayBuffer(QosSlot.Count * 8);
  const f = new Float64Array(b);
  for (const [k, x] of Object.entries(v)) f[Number(k)] = x;
  return b;
}

t.test('IOPS limit: limit/1000 I/Os per 1 ms timeslice, the rest waits in order', async (t) => {
  const ch = new Recorder();
  const buf = limits({ [QosSlot.RwIosPerSec]: 5000 });
  const gate = new QosGate(buf, ch, 512, 1024, 0);
  t.ok(gate.active, 'a limit is set');
  const ios = Array.from({ length: 23 }, () => new TestIo(BdevIoType.Read, 8));
  for (const io of ios) gate.submit(io);
  t.equal(ch.started.length, 5, 'first timeslice: 5 I/Os (5000/s)');
  t.equal(gate.queued, 18, 'the others wait');
  gate.tick(0.5);
  t.equal(ch.started.length, 5, 'nothing more within the same timeslice');
  gate.tick(1.0);
  t.equal(ch.started.length, 10, 'next timeslice: 5 more');
  gate.tick(3.2);
  t.equal(ch.started.length, 20, 'two elapsed timeslices while I/Os waited: both granted');
  gate.tick(4.0);
  t.equal(ch.started.length, 23, 'the rest');
  t.same(ch.started, ios, 'in submission order');

  // Over many timeslices, with unlimited demand: exactly the limit.
  const ch2 = new Recorder();
  const g2 = new QosGate(limits({ [QosSlot.RwIosPerSec]: 3000 }), ch2, 512, 100_000, 0);
  for (let i = 0; i < 20_000; i++) g2.submit(new TestIo(BdevIoType.Write, 1));
  for (let ms = 0.25; ms <= 1000; ms += 0.25) g2.tick(ms);
  t.equal(ch2.started.length, 3000 + 3, '1000 ms at 3000 IOPS: 3000 (+ the full first slice)');
});

t.test('byte limits: overrun paid back, read/write limits apply to their direction only', async (t) => {
  const ch = new Recorder();
  // 4 MiB/s read: 4194 bytes per timeslice; a 16 KiB read overruns and is paid back.
  const gate = new QosGate(limits({ [QosSlot.RBytesPerSec]: 4 * 1048576 }), ch, 512, 10_000, 0);
  for (let i = 0; i < 2000; i++) gate.submit(new TestIo(BdevIoType.Read, 32));
  for (let ms = 1; ms <= 1000; ms++) gate.tick(ms);
  const bytes = ch.started.length * 16384;
  t.ok(Math.abs(bytes - 4 * 1048576) <= 16384 * 2, `1 s at 4 MiB/s: ${bytes} bytes`);

  const ch2 = new Recorder();
  const g2 = new QosGate(limits({ [QosSlot.RBytesPerSec]: 1048576 }), ch2, 512, 100, 0);
  g2.submit(new TestIo(BdevIoType.Read, 32));
  g2.submit(new TestIo(BdevIoType.Read, 32));
  t.equal(ch2.started.length, 1, 'second read waits');
  g2.submit(new TestIo(BdevIoType.Write, 32));
  t.equal(ch2.started.length, 1, 'a write queued behind a waiting read does not overtake it');
  g2.tick(20);
  t.equal(ch2.started.length, 3, 'both start once the read budget is back; the write was never limited');

  const ch3 = new Recorder();
  const g3 = new QosGate(limits({ [QosSlot.RwIosPerSec]: 1000 }), ch3, 512, 100, 0);
  g3.submit(new TestIo(BdevIoType.Read, 1));
  g3.submit(new TestIo(BdevIoType.Read, 1));
  g3.submit(new TestIo(BdevIoType.Flush, 0));
  t.equal(ch3.started.length, 1, 'a flush waits for the I/Os queued before it');
  g3.tick(1);
  t.equal(ch3.started.length, 3, 'and takes no budget itself');
});

t.test('limits change at a timeslice; idle pauses earn no burst; release drains', async (t) => {
  const buf = limits({ [QosSlot.RwIosPerSec]: 1000 });
  const view = new Float64Array(buf);
  const ch = new Recorder();
  const gate = new QosGate(buf, ch, 512, 1000, 0);
  for (let i = 0; i < 10; i++) gate.submit(new TestIo(BdevIoType.Read, 1));
  t.equal(ch.started.length, 1);
  view[QosSlot.RwIosPerSec] = 4000;
  gate.tick(1);
  t.equal(ch.started.length, 5, 'the new limit applies from the next timeslice (full budget)');
  view[QosSlot.RwIosPerSec] = 0;
  gate.tick(2);
  t.equal(ch.started.length, 10, 'limit removed: everything waiting starts');
  t.notOk(gate.active, 'and the gate is out of the way');

  view[QosSlot.RwIosPerSec] = 1000;
  gate.tick(3);
  gate.tick(500); // idle for ~0.5 s
  for (let i = 0; i < 10; i++) gate.submit(new TestIo(BdevIoType.Read, 1));
  t.equal(ch.started.length, 11, 'after an idle pause: one timeslice of budget, no burst');

  gate.tick(500 + MAX_CATCHUP_SLICES * 10);
  t.equal(ch.started.length, 20, 'a late refill while I/Os waited grants the elapsed slices (capped)');

  const late = 500 + MAX_CATCHUP_SLICES * 10;
  gate.tick(late + 1); // a fresh slice: the unused catch-up budget expires
  const before = ch.started.length;
  for (let i = 0; i < 50; i++) gate.submit(new TestIo(BdevIoType.Read, 1));
  t.equal(ch.started.length - before, 1, 'one I/O per timeslice again');
  gate.release();
  gate.tick(late + 1.1);
  t.equal(ch.started.length - before, 50, 'release (device stopping): the queue drains at once');
});

t.test('IoStatRecorder and BdevIoStats', async (t) => {
  const stats = new BdevIoStats();
  const a = new IoStatRecorder(stats.channel(1));
  const b = new IoStatRecorder(stats.channel(3));
  a.record(BdevIoType.Read, 4096, true, 1000);
  a.record(BdevIoType.Read, 4096, true, 3000);
  b.record(BdevIoType.Read, 8192, true, 500);
  b.record(BdevIoType.Write, 512, true, 700);
  b.record(BdevIoType.Unmap, 1 << 20, true, 900);
  b.record(BdevIoType.WriteZeroes, 4096, true, 900);
  b.record(BdevIoType.Write, 512, false, 10);
  t.same(stats.cores(), [1, 3]);
  const tot = stats.total();
  t.match(tot, {
    num_read_ops: 3,
    bytes_read: 16384,
    read_latency_ticks: 4500,
    max_read_latency_ticks: 3000,
    min_read_latency_ticks: 500,
    num_write_ops: 1,
    bytes_written: 512,
    min_write_latency_ticks: 700,
    num_unmap_ops: 1,
    bytes_unmapped: 1 << 20,
    min_copy_latency_ticks: 0,
    io_error: { failed: 1 },
  });
  t.match(stats.ofCore(1), { num_read_ops: 2, min_read_latency_ticks: 1000, num_write_ops: 0, min_write_latency_ticks: 0, io_error: {} });
  const raw = new Float64Array(stats.channel(3));
  t.equal(raw[BdevStat.ReadOps], 1, 'the worker writes the shared words');
  t.throws(() => new IoStatRecorder(new SharedArrayBuffer(8)), RangeError);
});

t.test('BdevQosLimits: SPDK rounding, omitted limits kept, config writer', async (t) => {
  const q = new BdevQosLimits();
  t.equal(q.writeConfig('b'), null, 'no limit: nothing to save');
  q.set('b', { rw_ios_per_sec: 1001, w_mbytes_per_sec: 2 });
  t.same(q.assigned(), { rw_ios_per_sec: 2000, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 0, w_mbytes_per_sec: 2 });
  q.set('b', { r_mbytes_per_sec: 5 });
  t.same(q.assigned(), { rw_ios_per_sec: 2000, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 5, w_mbytes_per_sec: 2 });
  const f = new Float64Array(q.buffer);
  t.equal(f[QosSlot.WBytesPerSec], 2 * 1048576, 'the engine sees bytes per second');
  t.same(q.writeConfig('b'), { method: 'bdev_set_qos_limit', params: { name: 'b', rw_ios_per_sec: 2000, r_mbytes_per_sec: 5, w_mbytes_per_sec: 2 } });
  q.set('b', { rw_ios_per_sec: 0 });
  t.equal(f[QosSlot.RwIosPerSec], 0, '0 = unlimited');
});
