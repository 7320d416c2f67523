/**
 * Unit tests of vhostd-perf, the native load generator (bench/native/,
 * bench/perf/perf.ts), against qemu-storage-daemon: a null-co export for a
 * short timed run in both completion modes, and a small file export for the
 * CRC-32C verify passes, including runs that must find corrupted data; and
 * packed rings and indirect descriptors against vhostd (qemu-storage-daemon offers split rings only).
 * Checks the report's shape, never its speed. Runs on the tap main thread;
 * the generator runs on its own native thread.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Daemon } from '../lib/daemon';
import { haveQsd } from '../lib/qsd';
import { startVhostd } from '../lib/vhostd';
import { type PerfReport, crc32c, parseSize, runPerf } from '../../bench/perf/perf';

const BLOCK = 4096;

async function startExport(name: string, blockdev: string, socketPath: string): Promise<Daemon> {
  const d = new Daemon(name, 'qemu-storage-daemon', [
    '--blockdev',
    blockdev,
    '--export',
    `type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=${socketPath},num-queues=2,writable=on`,
  ]);
  try {
    await d.waitSocket(socketPath, { timeoutMs: 10_000, connect: false, intervalMs: 50 });
  } catch (err) {
    await d.stop();
    throw err;
  }
  return d;
}

/** Every number in the report finite, counters consistent, percentiles ordered. */
function checkReport(t: Test, r: PerfReport, what: string): void {
  const numbers: [string, number][] = [
    ['ios', r.ios],
    ['reads', r.reads],
    ['writes', r.writes],
    ['errors', r.errors],
    ['elapsedSec', r.elapsedSec],
    ['iops', r.iops],
    ['bytes', r.bytes],
    ['bandwidthBytesPerSec', r.bandwidthBytesPerSec],
    ['mbPerSec', r.mbPerSec],
    ['mibPerSec', r.mibPerSec],
    ['kicks', r.kicks],
    ['kicksPerIo', r.kicksPerIo],
    ['callWakeups', r.callWakeups],
    ...Object.entries(r.latencyNs),
    ...Object.entries(r.cpu),
  ];
  for (const [name, v] of numbers) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) t.fail(`${what}: ${name} = ${String(v)}`);
  }
  t.ok(r.ios > 0, `${what}: completed I/Os (${r.ios})`);
  t.equal(r.reads + r.writes, r.ios, `${what}: reads + writes = ios`);
  t.equal(r.errors, 0, `${what}: no error statuses`);
  t.equal(r.bytes, r.ios * r.job.blockSizeBytes, `${what}: bytes = ios x bs`);
  t.ok(r.elapsedSec > 0, `${what}: a measured window`);
  const l = r.latencyNs;
  t.ok(
    l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
    `${what}: min <= p50 <= p90 <= p99 <= p99.9 <= max (${JSON.stringify(l)})`,
  );
  t.ok(l.min <= l.mean && l.mean <= l.max, `${what}: min <= mean <= max`);
  t.ok(r.cpu.busyFraction <= 1, `${what}: busy fraction at most 1`);
}

t.test('crc32c and size parsing', async (t) => {
  t.equal(crc32c(Buffer.from('123456789')), 0xe3069283, 'CRC-32C check value');
  t.equal(crc32c(new Uint8Array(0)), 0, 'empty input');
  t.equal(parseSize('4k'), 4096);
  t.equal(parseSize('1M'), 1 << 20);
  t.throws(() => parseSize('4q'), /not a size/);
});

t.test('option and connection errors', async (t) => {
  await t.rejects(runPerf({ socketPath: '/nonexistent/vhostd-perf.sock', runtimeSec: 1 }), {
    code: 'ERR_VHOSTD_PERF',
    message: /connect/,
  });
  await t.rejects(
    runPerf({ socketPath: '/tmp/x.sock', rw: 'randomread' as unknown as 'randread' }),
    /options\.rw must be one of/,
  );
  await t.rejects(runPerf({ socketPath: '/tmp/x.sock', blockSizeBytes: 1000 }), /multiple of 512/);
  await t.rejects(runPerf({ socketPath: '/tmp/x.sock', hugepages: 'yes' as unknown as boolean }), /options\.hugepages must be a boolean/);
});

t.test('against qemu-storage-daemon', async (t) => {
  if (!haveQsd()) {
    t.fail('qemu-storage-daemon is not installed (Debian: apt-get install qemu-system-common); vhostd-perf needs it to be tested');
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-perf-'));
  const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : dir;
  const image = path.join(shm, `vhostd-perf-${process.pid}.img`);
  const daemons: Daemon[] = [];
  t.teardown(async () => {
    for (const d of daemons) await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(image, { force: true });
  });

  await t.test('null-co export: timed randread, poll and interrupt', async (t) => {
    const sock = path.join(dir, 'null.sock');
    daemons.push(await startExport('qsd-null', 'driver=null-co,node-name=n,size=1073741824', sock));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 20);
    const poll = await runPerf({ socketPath: sock, rw: 'randread', iodepth: 8, runtimeSec: 0.8, rampSec: 0.2, cpu: -1 });
    clearInterval(timer);
    t.ok(ticks > 0, 'the event loop ran while the generator did');
    checkReport(t, poll, 'poll');
    t.equal(poll.job.completion, 'poll');
    t.equal(poll.device.capacityBytes, 1 << 30, 'capacity from GET_CONFIG');
    t.equal(poll.reads, poll.ios, 'randread only reads');
    t.equal(poll.callWakeups, 0, 'polling never waits on the call eventfd');
    t.equal(poll.verify, null);

    const irq = await runPerf({
      socketPath: sock,
      rw: 'randrw',
      rwmixread: 70,
      queues: 2,
      iodepth: 4,
      runtimeSec: 0.5,
      completion: 'interrupt',
      eventIdx: true,
      cpu: -1,
    });
    checkReport(t, irq, 'interrupt');
    t.equal(irq.job.queues, 2);
    t.equal(irq.device.eventIdx, true, 'EVENT_IDX negotiated');
    t.ok(irq.reads > 0 && irq.writes > 0, 'randrw does both');
    t.ok(irq.callWakeups > 0, 'interrupt mode waited on the call eventfd');
  });

  await t.test('file export: verify passes, then catches bad data', async (t) => {
    const sizeBytes = 4 << 20;
    fs.writeFileSync(image, Buffer.alloc(sizeBytes));
    const sock = path.join(dir, 'file.sock');
    daemons.push(await startExport('qsd-file', `driver=file,filename=${image},node-name=n`, sock));
    const blocks = sizeBytes / BLOCK;

    const wr = await runPerf({ socketPath: sock, rw: 'randwrite', verify: 'write-read', verifySeed: 7, cpu: -1 });
    checkReport(t, wr, 'write-read');
    t.same(
      { ...wr.verify, firstMismatches: undefined },
      { mode: 'write-read', seed: 7, blocksWritten: blocks, blocksChecked: blocks, mismatches: 0, firstMismatches: undefined },
      'every block written once and read back intact',
    );
    t.equal(wr.writes, blocks);
    t.equal(wr.reads, blocks);

    const again = await runPerf({ socketPath: sock, rw: 'read', verify: 'read', verifySeed: 7, cpu: -1 });
    t.equal(again.verify?.mismatches, 0, 'a later read pass with the same seed agrees');
    t.equal(again.verify?.blocksChecked, blocks);

    const wrongSeed = await runPerf({ socketPath: sock, rw: 'read', verify: 'read', verifySeed: 8, cpu: -1 });
    t.equal(wrongSeed.verify?.mismatches, blocks, 'another seed: every block mismatches');

    // Corrupt one byte of block 100 behind the daemon's back.
    const fd = fs.openSync(image, 'r+');
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, 100 * BLOCK + 333);
    byte[0] ^= 0x5a;
    fs.writeSync(fd, byte, 0, 1, 100 * BLOCK + 333);
    fs.closeSync(fd);
    const corrupt = await runPerf({ socketPath: sock, rw: 'randread', verify: 'read', verifySeed: 7, cpu: -1 });
    t.equal(corrupt.verify?.mismatches, 1, 'exactly the corrupted block mismatches');
    t.equal(corrupt.verify?.firstMismatches[0]?.block, 100, 'and it is block 100');
    t.equal(corrupt.verify?.firstMismatches[0]?.offsetBytes, 100 * BLOCK);

    const mixed = await runPerf({
      socketPath: sock,
      rw: 'randrw',
      verify: 'write-read',
      iodepth: 8,
      runtimeSec: 0.3,
      cpu: -1,
    });
    checkReport(t, mixed, 'randrw verify');
    t.equal(mixed.verify?.mismatches, 0, 'mixed reads agree with the writes of the run');
    t.ok((mixed.verify?.blocksChecked ?? 0) > 0, 'mixed run checked reads');
  });
});

t.test('packed rings against vhostd: verify, in-flight region, interrupt mode, refusal when not offered', async (t) => {
  const v = await startVhostd({ cpumask: '0x2' });
  t.teardown(() => v.stop());
  await v.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 8192, block_size: 512 });
  t.equal(await v.rpc('vhost_create_blk_controller', { ctrlr: 'p', dev_name: 'M0', packed_ring: true }), true);
  const sock = v.socketOf('p');
  const blocks = (8192 * 512) / BLOCK;

  const wr = await runPerf({ socketPath: sock, rw: 'randwrite', verify: 'write-read', verifySeed: 3, iodepth: 16, packed: true, inflight: true, cpu: -1 });
  checkReport(t, wr, 'packed write-read');
  t.equal(wr.device.packed, true, 'RING_PACKED negotiated');
  t.equal(wr.device.inflight, true, 'INFLIGHT_SHMFD negotiated (packed layout)');
  t.same([wr.verify?.blocksWritten, wr.verify?.blocksChecked, wr.verify?.mismatches], [blocks, blocks, 0], 'every block written and read back intact');
  // 16 requests of 3 descriptors in a ring of 64: the ring wraps many times over the run.
  t.ok(wr.ios > 20 * 64, `the ring wrapped (${wr.ios} I/Os)`);

  const wrong = await runPerf({ socketPath: sock, rw: 'read', verify: 'read', verifySeed: 4, packed: true, cpu: -1 });
  t.equal(wrong.verify?.mismatches, blocks, 'packed read pass with another seed: every block mismatches');

  const irq = await runPerf({ socketPath: sock, rw: 'randrw', iodepth: 4, queues: 1, runtimeSec: 0.5, completion: 'interrupt', eventIdx: true, packed: true, cpu: -1 });
  checkReport(t, irq, 'packed interrupt');
  t.ok(irq.callWakeups > 0, 'interrupt mode waited on the call eventfd');

  // A chain is the device's once its head flags are stored: a pass that reaped and resubmitted in one go timed some at 0 ns.
  const timed = await runPerf({ socketPath: sock, rw: 'randread', iodepth: 16, runtimeSec: 0.5, packed: true, cpu: -1 });
  checkReport(t, timed, 'packed timed');
  t.ok(timed.latencyNs.min > 0, `packed latencies are measured (min ${timed.latencyNs.min} ns)`);

  await v.rpc('bdev_malloc_create', { name: 'M1', num_blocks: 2048, block_size: 512 });
  t.equal(await v.rpc('vhost_create_blk_controller', { ctrlr: 's', dev_name: 'M1' }), true);
  await t.rejects(runPerf({ socketPath: v.socketOf('s'), rw: 'randread', runtimeSec: 0.2, packed: true, cpu: -1 }), /does not offer VIRTIO_F_RING_PACKED/);
});

t.test('indirect descriptors against vhostd, split and packed: verify, a read pass that must fail, scsi refused', async (t) => {
  const v = await startVhostd({ cpumask: '0x2' });
  t.teardown(() => v.stop());
  const blocks = (4096 * 512) / BLOCK;
  for (const packed of [false, true]) {
    const name = packed ? 'packed' : 'split';
    await v.rpc('bdev_malloc_create', { name, num_blocks: 4096, block_size: 512 });
    t.equal(await v.rpc('vhost_create_blk_controller', { ctrlr: name, dev_name: name, packed_ring: packed }), true);
    const sock = v.socketOf(name);
    const wr = await runPerf({ socketPath: sock, rw: 'randwrite', verify: 'write-read', verifySeed: 5, iodepth: 16, indirect: true, packed, inflight: true, cpu: -1 });
    checkReport(t, wr, `${name} indirect write-read`);
    t.same([wr.device.indirect, wr.device.packed], [true, packed], `${name}: RING_INDIRECT_DESC negotiated`);
    t.same([wr.verify?.blocksWritten, wr.verify?.blocksChecked, wr.verify?.mismatches], [blocks, blocks, 0], `${name}: every block written and read back intact`);
    const wrong = await runPerf({ socketPath: sock, rw: 'read', verify: 'read', verifySeed: 6, indirect: true, packed, cpu: -1 });
    t.equal(wrong.verify?.mismatches, blocks, `${name}: read pass with another seed: every block mismatches`);
    const timed = await runPerf({ socketPath: sock, rw: 'randrw', iodepth: 8, runtimeSec: 0.3, indirect: true, packed, eventIdx: true, cpu: -1 });
    checkReport(t, timed, `${name} indirect timed`);
  }
  await t.rejects(runPerf({ socketPath: v.socketOf('split'), rw: 'randread', runtimeSec: 0.2, indirect: true, scsi: true, cpu: -1 }), /indirect descriptors are for virtio-blk/);
});

t.test('a descriptor free list (as in the split virtio_ring of Linux), direct and indirect: verify, a read pass that must fail, packed refused', async (t) => {
  const v = await startVhostd({ cpumask: '0x2' });
  t.teardown(() => v.stop());
  const blocks = (4096 * 512) / BLOCK;
  await v.rpc('bdev_malloc_create', { name: 'F', num_blocks: 4096, block_size: 512 });
  t.equal(await v.rpc('vhost_create_blk_controller', { ctrlr: 'f', dev_name: 'F' }), true);
  const sock = v.socketOf('f');
  for (const indirect of [false, true]) {
    const name = indirect ? 'indirect' : 'direct';
    // 13 requests of 3 descriptors in a ring of 64: heads come back in completion order and are reused most recent first.
    const wr = await runPerf({ socketPath: sock, rw: 'randwrite', verify: 'write-read', verifySeed: 7, iodepth: 13, descFreeList: true, indirect, inflight: true, cpu: -1 });
    checkReport(t, wr, `${name} free-list write-read`);
    t.same([wr.verify?.blocksWritten, wr.verify?.blocksChecked, wr.verify?.mismatches], [blocks, blocks, 0], `${name}: every block written and read back intact`);
    const wrong = await runPerf({ socketPath: sock, rw: 'read', verify: 'read', verifySeed: 8, iodepth: 13, descFreeList: true, indirect, cpu: -1 });
    t.equal(wrong.verify?.mismatches, blocks, `${name}: read pass with another seed: every block mismatches`);
    const timed = await runPerf({ socketPath: sock, rw: 'randrw', iodepth: 8, runtimeSec: 0.3, descFreeList: true, indirect, eventIdx: true, cpu: -1 });
    checkReport(t, timed, `${name} free-list timed`);
  }
  await t.rejects(runPerf({ socketPath: sock, rw: 'randread', runtimeSec: 0.2, descFreeList: true, packed: true, cpu: -1 }), /descriptor free list is for virtio-blk jobs on split rings/);
  await t.rejects(runPerf({ socketPath: sock, rw: 'randread', runtimeSec: 0.2, descFreeList: 1 as unknown as boolean, cpu: -1 }), /options.descFreeList must be a boolean/);
});
