/**
 * The poll loop's control ops, driven step by step (poller.handle() and
 * poller.iterate()) with the real device registry, the real bdev layer and
 * a mock driver ring: start with no queues, queueStart, setCallFd,
 * queueStop waiting for its in-flight I/O, memUpdate resuming at the same
 * ring positions, bdevResize reaching the device, stop and exit.
 */
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
import t from 'tap';
import { type Bdev, type BdevChannel, type BdevIo, BdevIoStatus, BdevIoType } from '../../engine/bdev/bdev';
import { WorkerBdevLayer } from '../../engine/bdev/layer';
import { BDEV_MODULES } from '../../engine/bdev/modules';
import { type ControlReply, type ControlRequest, type DeviceDesc, DeviceStat, type RegionDesc, WorkerStat } from '../../engine/control';
import type { EngineDevice } from '../../engine/device';
import { Poller, type PollerSys } from '../../engine/poller';
import { BlkStatus, BlkType } from '../../engine/virtio/spec';
import { F_EVENT_IDX, F_INDIRECT, F_VERSION_1, MockVring } from '../lib/mock-vring';

/** A resizable bdev that completes only when the test releases it. */
class HeldBdev implements Bdev {
  readonly name = 'Held0';
  readonly blockSize = 512;
  numBlocks = 16;
  readonly held: BdevIo[] = [];
  readonly done: BdevIo[] = [];
  /** Complete at submit (as a null or malloc bdev does: delivered at the channel's next poll). */
  immediate = false;
  ioTypeSupported(type: BdevIoType): boolean {
    return type === BdevIoType.Read || type === BdevIoType.Write;
  }
  createChannel(): BdevChannel {
    const self = this;
    return {
      submit: (io) => {
        self.held.push(io);
        if (self.immediate) self.release();
      },
      poll(): number {
        const n = self.done.length;
        for (const io of self.done.splice(0)) io.onComplete();
        return n;
      },
      get outstanding() {
        return self.held.length + self.done.length;
      },
      destroy(): void {},
    };
  }
  resize(numBlocks: number): void {
    this.numBlocks = numBlocks;
  }
  release(): void {
    for (const io of this.held.splice(0)) {
      io.status = BdevIoStatus.Success;
      this.done.push(io);
    }
  }
  destroy(): void {}
}

function header(vr: MockVring, type: number, sector: number): number {
  const a = vr.alloc(16);
  vr.view.setUint32(a - vr.gpa, type, true);
  vr.view.setBigUint64(a - vr.gpa + 8, BigInt(sector), true);
  return a;
}

/** A control request before it gets its id (Omit over each member of the union). */
type WithoutId<R> = R extends unknown ? Omit<R, 'id'> : never;

function harness() {
  const vr = new MockVring({ size: 16 });
  const bdev = new HeldBdev();
  const { port1, port2 } = new MessageChannel();
  const stats = new SharedArrayBuffer(WorkerStat.Count * 8);
  /** fd → the memory a "front-end" shared under it. */
  /** A second ring in memory of its own, at another guest address (only in the table of fd 102). */
  const vr2 = new MockVring({ size: 16, gpa: 0x200000 });
  const fds = new Map<number, ArrayBuffer>([
    [100, vr.buffer],
    [101, vr.buffer],
    [102, vr2.buffer],
  ]);
  const mapped: number[] = [];
  const unmapped: ArrayBuffer[] = [];
  const signals: number[] = [];
  const sys: PollerSys = {
    mmap(fd, offset, length) {
      const b = fds.get(fd);
      if (b === undefined || offset !== 0 || length !== b.byteLength) throw Object.assign(new Error(`mmap ${fd}`), { code: 'EBADF' });
      mapped.push(fd);
      return b;
    },
    munmap: (b) => void unmapped.push(b),
    eventfdWrite: (fd) => void signals.push(fd),
    eventfdRead: () => 0,
    pollReadable: () => 0,
    yieldCpu: () => undefined,
  };
  const modules = new Map(BDEV_MODULES);
  modules.set('held', { name: 'held', open: () => bdev });
  const poller = new Poller({ core: 0, port: port1, wakeFd: -1, stats, pollMode: 'poll', idleSleepUs: 0 }, sys, new WorkerBdevLayer(modules));
  let nextId = 1;
  const replies = (): ControlReply[] => {
    const out: ControlReply[] = [];
    for (let m = receiveMessageOnPort(port2); m !== undefined; m = receiveMessageOnPort(port2)) out.push(m.message as ControlReply);
    return out;
  };
  const send = (req: WithoutId<ControlRequest>): number => {
    const id = nextId++;
    poller.handle({ ...req, id } as ControlRequest);
    return id;
  };
  const region = (fd: number): RegionDesc => {
    const r = fd === 102 ? vr2 : vr;
    return { fd, guestPhysAddr: r.gpa, sizeBytes: r.buffer.byteLength, userAddr: r.gpa, mmapOffset: 0 };
  };
  const devStats = new SharedArrayBuffer(DeviceStat.Count * 8);
  const device: DeviceDesc = {
    id: 5,
    name: 'vhost.5',
    features: F_VERSION_1 | F_INDIRECT | F_EVENT_IDX,
    model: { kind: 'blk', readonly: false },
    bdevs: [{ name: 'Held0', module: 'held', blockSize: 512, numBlocks: 16, params: null }],
    regions: [region(100)],
    queues: [],
    stats: devStats,
  };
  const close = () => {
    port1.close();
    port2.close();
  };
  return { vr, vr2, bdev, poller, send, replies, device, region, mapped, unmapped, signals, stats: new Float64Array(stats), close };
}

/** The addon calls of a poller whose devices map no guest memory. */
function noMemorySys(): PollerSys {
  return {
    mmap: () => {
      throw new Error('no memory here');
    },
    munmap: () => undefined,
    eventfdWrite: () => undefined,
    eventfdRead: () => 0,
    pollReadable: () => 0,
    yieldCpu: () => undefined,
  };
}

/** A read of one sector; returns its head and status address. */
function read(vr: MockVring, sector: number): { head: number; st: number } {
  const st = vr.alloc(1, 0xee);
  const head = vr.addChain([{ addr: header(vr, BlkType.In, sector), len: 16 }, { addr: vr.alloc(512), len: 512, write: true }, { addr: st, len: 1, write: true }]);
  return { head, st };
}

t.test('control ops step by step: start without queues, queueStart, setCallFd, queueStop, memUpdate, bdevResize, stop, exit', async (t) => {
  const h = harness();
  t.teardown(h.close);
  const { vr, bdev, poller, send, replies } = h;
  vr.usedEvent = 0xffff;

  const start = send({ op: 'start', device: h.device });
  t.same(replies(), [{ id: start, ok: true }], 'a device starts with no queue');
  t.equal(poller.deviceCount, 1);
  t.same(h.mapped, [100]);

  const r1 = read(vr, 0);
  poller.iterate(0);
  t.equal(bdev.held.length, 0, 'no queue runs yet: the request waits');

  const qs = send({ op: 'queueStart', deviceId: 5, queue: { ...vr.queueDesc(0), callFd: 42, kickFd: -1 } });
  t.same(replies(), [{ id: qs, ok: true }]);
  const dup = send({ op: 'queueStart', deviceId: 5, queue: vr.queueDesc(0) });
  t.match(replies(), [{ id: dup, ok: false, code: 'ERR_QUEUE_SETUP' }], 'a queue cannot start twice');
  poller.iterate(0);
  t.equal(bdev.held.length, 1, 'the queue started later takes the waiting request');

  const cf = send({ op: 'setCallFd', deviceId: 5, index: 0, callFd: 77 });
  t.same(replies(), [{ id: cf, ok: true }]);
  bdev.release();
  poller.iterate(0);
  t.same(vr.readUsed(), [{ id: r1.head, len: 513 }]);
  t.same(h.signals, [77], 'the interrupt goes to the new call fd');

  // queueStop waits for the queue's in-flight I/O.
  const r2 = read(vr, 1);
  poller.iterate(0);
  t.equal(bdev.held.length, 1);
  const stopQ = send({ op: 'queueStop', deviceId: 5, index: 0 });
  poller.iterate(0);
  t.same(replies(), [], 'no reply while a request of the queue is in flight');
  read(vr, 2);
  poller.iterate(0);
  t.equal(bdev.held.length, 1, 'a stopping queue takes no new request');
  bdev.release();
  poller.iterate(0);
  t.same(replies(), [{ id: stopQ, ok: true, result: { index: 0, pos: { availIdx: 2, availWrap: false, usedIdx: 2, usedWrap: false } } }]);
  t.same(vr.readUsed(), [{ id: r2.head, len: 513 }], 'its completion was published before the reply');
  const again = send({ op: 'queueStop', deviceId: 5, index: 0 });
  t.match(replies(), [{ id: again, ok: false, code: 'ERR_NO_QUEUE' }]);

  // Restart the queue where it ended; memUpdate with a request in flight.
  send({ op: 'queueStart', deviceId: 5, queue: { ...vr.queueDesc(0, 2), callFd: 42, kickFd: -1 } });
  replies();
  poller.iterate(0);
  t.equal(bdev.held.length, 1, 'the request left in the ring is taken after the restart');
  const mu = send({ op: 'memUpdate', deviceId: 5, regions: [h.region(101)] });
  read(vr, 3);
  poller.iterate(0);
  t.same(replies(), [], 'memUpdate waits for in-flight I/O');
  t.equal(bdev.held.length, 1, 'and takes no new request meanwhile');
  t.same(h.mapped, [100], 'the new table is not mapped yet');
  bdev.release();
  poller.iterate(0);
  t.same(replies(), [{ id: mu, ok: true }]);
  t.same(h.mapped, [100, 101], 'new regions mapped');
  t.equal(h.unmapped.length, 1, 'old regions unmapped');
  t.equal(vr.readUsed().length, 1, 'the drained request was published before the switch');
  poller.iterate(0);
  t.equal(bdev.held.length, 1, 'requests flow again at the same ring position');
  bdev.release();
  poller.iterate(0);
  t.equal(vr.readUsed().length, 1);

  const badMu = send({ op: 'memUpdate', deviceId: 5, regions: [h.region(999)] });
  poller.iterate(0);
  t.match(replies(), [{ id: badMu, ok: false, code: 'EBADF' }], 'a table that cannot be mapped is refused');
  const r5 = read(vr, 15);
  poller.iterate(0);
  bdev.release();
  poller.iterate(0);
  t.same(vr.readUsed(), [{ id: r5.head, len: 513 }], 'the device runs on its old memory');

  // bdevResize reaches the device through the layer.
  const r6 = read(vr, 16);
  poller.iterate(0);
  t.same(vr.readUsed(), [{ id: r6.head, len: 1 }]);
  t.equal(vr.bytes[r6.st - vr.gpa], BlkStatus.IoErr, 'sector 16 is past 16 blocks');
  const rs = send({ op: 'bdevResize', name: 'Held0', numBlocks: 32 });
  t.same(replies(), [{ id: rs, ok: true }]);
  const r7 = read(vr, 16);
  poller.iterate(0);
  bdev.release();
  poller.iterate(0);
  t.same(vr.readUsed(), [{ id: r7.head, len: 513 }], 'after the resize sector 16 is inside');

  // stop with I/O in flight, then exit.
  read(vr, 0);
  poller.iterate(0);
  const stop = send({ op: 'stop', deviceId: 5 });
  t.same(replies(), [], 'stop waits for in-flight I/O');
  const late = send({ op: 'setCallFd', deviceId: 5, index: 0, callFd: 1 });
  t.match(replies(), [{ id: late, ok: false, code: 'ERR_NO_DEVICE' }], 'a stopping device takes no more ops');
  bdev.release();
  poller.iterate(0);
  t.same(replies(), [{ id: stop, ok: true, result: { queues: [{ index: 0, pos: { availIdx: 8, availWrap: false, usedIdx: 8, usedWrap: false } }] } }]);
  t.equal(poller.deviceCount, 0);
  t.equal(h.unmapped.length, 2, 'both tables the device mapped were released (the refused one was never mapped)');
  const exit = send({ op: 'exit' });
  t.same(replies(), [{ id: exit, ok: true }]);
  t.equal(poller.isRunning, false);
});

t.test('start refuses unknown kinds and bad descriptions; exit stops running devices', async (t) => {
  const h = harness();
  t.teardown(h.close);
  const { poller, send, replies, device } = h;
  const bad = send({ op: 'start', device: { ...device, model: { kind: 'virtio-gpu' } as never } });
  t.match(replies(), [{ id: bad, ok: false, code: 'ERR_DEVICE_KIND' }]);
  const noBdev = send({ op: 'start', device: { ...device, bdevs: [{ ...device.bdevs[0], module: 'nope' }] } });
  t.match(replies(), [{ id: noBdev, ok: false, error: /unknown bdev module/ }]);
  t.equal(h.unmapped.length, 1, 'the memory of a failed start is unmapped');
  const badQueue = send({ op: 'start', device: { ...device, queues: [{ ...h.vr.queueDesc(0), size: 12 }] } });
  t.match(replies(), [{ id: badQueue, ok: false, code: 'ERR_QUEUE_SETUP' }]);
  t.equal(h.unmapped.length, 2);
  const ok = send({ op: 'start', device: { ...device, queues: [h.vr.queueDesc(0)] } });
  t.same(replies(), [{ id: ok, ok: true }]);
  const exit = send({ op: 'exit' });
  t.same(replies(), [{ id: exit, ok: true }], 'exit stops the idle device and ends the loop');
  t.equal(poller.deviceCount, 0);
  t.equal(h.unmapped.length, 3);
});

t.test('ops of one device run in order: a queue started after a memUpdate is set up in the new memory', async (t) => {
  const h = harness();
  t.teardown(h.close);
  const { vr, vr2, bdev, poller, send, replies } = h;
  send({ op: 'start', device: { ...h.device, queues: [vr.queueDesc(0)] } });
  replies();
  read(vr, 0);
  poller.iterate(0);
  t.equal(bdev.held.length, 1);
  const mu = send({ op: 'memUpdate', deviceId: 5, regions: [h.region(101), h.region(102)] });
  const qs = send({ op: 'queueStart', deviceId: 5, queue: { ...vr2.queueDesc(1), callFd: 9, kickFd: -1 } });
  const cf = send({ op: 'setCallFd', deviceId: 5, index: 1, callFd: 10 });
  t.same(replies(), [], 'the queue start waits behind the memory update, which waits for in-flight I/O');
  bdev.release();
  poller.iterate(0);
  t.same(replies(), [{ id: mu, ok: true }, { id: qs, ok: true }, { id: cf, ok: true }], 'then all three, in order');
  const st = vr2.alloc(1, 0xee);
  const head = vr2.addChain([{ addr: header(vr2, BlkType.In, 1), len: 16 }, { addr: vr2.alloc(512), len: 512, write: true }, { addr: st, len: 1, write: true }]);
  poller.iterate(0);
  bdev.release();
  poller.iterate(0);
  t.same(vr2.readUsed(), [{ id: head, len: 513 }], 'the new queue serves requests');
  t.equal(vr2.bytes[st - vr2.gpa], BlkStatus.Ok);
  t.same(h.signals, [10], 'on its new call fd');
  const stop = send({ op: 'stop', deviceId: 5 });
  const r = replies();
  t.equal(r.length, 1);
  t.same((r[0] as { id: number; result?: { queues: { index: number }[] } }).result?.queues.map((q) => q.index), [0, 1]);
  t.equal(r[0].id, stop);
});

t.test('with a mail counter the loop reads its port only when the reactor counted a post', async (t) => {
  const { port1, port2 } = new MessageChannel();
  t.teardown(() => {
    port1.close();
    port2.close();
  });
  const mail = new SharedArrayBuffer(4);
  const sys = noMemorySys();
  const stats = new SharedArrayBuffer(WorkerStat.Count * 8);
  const poller = new Poller({ core: 0, port: port1, wakeFd: -1, stats, mail, pollMode: 'poll', idleSleepUs: 0 }, sys, new WorkerBdevLayer(new Map(BDEV_MODULES)));
  port2.postMessage({ op: 'exit', id: 1 });
  // One slice (100 ms of iterations): the message waits, as it would between a post and its count.
  t.equal(poller.runSlice(), true, 'still running after a slice');
  t.equal(receiveMessageOnPort(port2), undefined, 'no reply: the port was not read');
  t.ok(new Float64Array(stats)[WorkerStat.Iterations] > 32, 'the loop went round many times meanwhile');
  Atomics.add(new Int32Array(mail), 0, 1);
  t.equal(poller.runSlice(), false, 'the counted exit ends the loop');
  t.same(receiveMessageOnPort(port2)?.message, { id: 1, ok: true });
});

t.test('a request the bdev completes at once is published and signalled in the iteration that took it', async (t) => {
  const h = harness();
  t.teardown(h.close);
  const { vr, bdev, poller, send, replies } = h;
  send({ op: 'start', device: h.device });
  send({ op: 'queueStart', deviceId: 5, queue: { ...vr.queueDesc(0), callFd: 42, kickFd: -1 } });
  replies();
  bdev.immediate = true;
  const r = read(vr, 3);
  t.ok(poller.iterate(0) > 0, 'the iteration did work');
  t.same(vr.readUsed(), [{ id: r.head, len: 513 }], 'used in the same iteration');
  t.same(h.signals, [42], 'and the driver interrupted');
  t.equal(poller.iterate(0), 0, 'the next iteration has nothing left to do');
  t.same(h.signals, [42], 'no second interrupt');
  // A bdev that does not finish at once: nothing is published early.
  bdev.immediate = false;
  read(vr, 4);
  poller.iterate(0);
  t.same(vr.readUsed(), [], 'a held request is not used');
  bdev.release();
  poller.iterate(0);
  t.equal(vr.readUsed().length, 1, 'it is, once the bdev completes it');
  const stop = send({ op: 'stop', deviceId: 5 });
  poller.iterate(0);
  t.match(replies(), [{ id: stop, ok: true }]);
});

t.test('busy and idle time: busy iterations charged as busy, idle ones as idle, none lost between slices', async (t) => {
  const { port1, port2 } = new MessageChannel();
  t.teardown(() => {
    port1.close();
    port2.close();
  });
  const sys = noMemorySys();
  // A device with one unit of work at every poll, then once, then none.
  let busy = true;
  let once = false;
  let polls = 0;
  const fake = {
    id: 9,
    name: 'fake',
    inflight: 0,
    running: true,
    poll: (): number => {
      polls++;
      if (once) {
        once = false;
        return 1;
      }
      return busy ? 1 : 0;
    },
  } as unknown as EngineDevice;
  const stats = new SharedArrayBuffer(WorkerStat.Count * 8);
  const s = new Float64Array(stats);
  const poller = new Poller({ core: 0, port: port1, wakeFd: -1, stats, pollMode: 'poll', idleSleepUs: 0 }, sys, new WorkerBdevLayer(new Map(BDEV_MODULES)), () => () => fake);
  poller.handle({ id: 1, op: 'start', device: { id: 9, name: 'fake', model: { kind: 'fake' }, queues: [] } as unknown as DeviceDesc });
  t.equal((receiveMessageOnPort(port2)?.message as ControlReply | undefined)?.ok, true, 'the fake device started');

  const t0 = performance.now();
  t.equal(poller.runSlice(), true, 'a slice of busy iterations');
  const wall = (performance.now() - t0) * 1e6;
  t.ok(polls > 100, `the device was polled (${polls} times)`);
  t.equal(s[WorkerStat.BusyIterations], s[WorkerStat.Iterations], 'every iteration was busy');
  t.equal(s[WorkerStat.IdleNs], 0, 'no idle time charged');
  t.ok(s[WorkerStat.BusyNs] > 0 && s[WorkerStat.BusyNs] <= wall, `busy time charged, within the slice (${s[WorkerStat.BusyNs]} of ${wall} ns)`);

  // One unit of work, then none.
  busy = false;
  once = true;
  const busyBefore = s[WorkerStat.BusyNs];
  t.equal(poller.runSlice(), true, 'a slice of one busy iteration, then idle ones');
  t.ok(s[WorkerStat.IdleNs] > 0, 'idle time charged');
  t.ok(s[WorkerStat.BusyNs] > busyBefore, 'the lone busy iteration charged as busy');

  const busyIdle = s[WorkerStat.BusyNs];
  const idleBefore = s[WorkerStat.IdleNs];
  t.equal(poller.runSlice(), true, 'a slice of idle iterations');
  t.ok(s[WorkerStat.IdleNs] > idleBefore, 'idle time charged');
  t.equal(s[WorkerStat.BusyNs], busyIdle, 'no busy time without work');
});
