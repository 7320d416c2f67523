/**
 * Interrupt and adaptive mode (issue #12 item 1):
 * - the kernel rings' completion eventfds (io_uring's registered eventfd,
 *   AIO's IOCB_FLAG_RESFD) really become readable when an I/O completes, and
 *   the file channel says when a worker may sleep with I/O in the kernel;
 * - the poll loop, run for real (Poller.run) with a scripted poll(2), sleeps
 *   on the kick, completion and wake fds with guest notifications enabled,
 *   never sleeps past a request that arrived or a completion that was posted
 *   while notifications were off (the re-check after enabling), sleeps with
 *   I/O in flight only when the bdev vouches for a signal, and reports
 *   in_interrupt;
 * - adaptive mode (issue #13) sleeps at once while its only work is bdev I/O
 *   that will signal (librbd's callback, the kernel), spins otherwise, and
 *   loses no completion that raced the arming of the eventfd.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
import t, { type Test } from 'tap';
import { native } from '../../bindings';
import { type Bdev, type BdevChannel, type BdevIo, BdevIoStatus, BdevIoType } from '../../engine/bdev/bdev';
import { WorkerBdevLayer } from '../../engine/bdev/layer';
import type { ModuleWorkerState } from '../../engine/bdev/module';
import { BDEV_MODULES } from '../../engine/bdev/modules';
import { type ControlReply, type DeviceDesc, DeviceStat, type PollMode, WorkerStat } from '../../engine/control';
import { IDLE_CLOCK_EVERY, IO_WAIT_SPIN_MS, Poller, type PollerSys, wantsSleep, yieldsToHelpers } from '../../engine/poller';
import { BlkType } from '../../engine/virtio/spec';
import { F_VERSION_1, MockVring } from '../lib/mock-vring';
import { fdCount, guestMemory, makeBdev, openTestFile, TestIo } from '../lib/file-bdev-cases';

const VRING_USED_F_NO_NOTIFY = 1;

for (const kind of ['uring', 'aio'] as const) {
  t.test(`${kind}: the completion eventfd is signalled by an I/O in the kernel`, async (t) => {
    const fds0 = fdCount();
    const dir = fs.mkdtempSync(path.join('/var/tmp', 'vhostd-irq-'));
    const f = openTestFile(path.join(dir, 'f'), 1 << 20);
    const mem = guestMemory(1 << 16);
    const bdev = makeBdev(kind, f, 2048, { factory: kind === 'uring' ? (e, m) => new native.IoUring(e, m) : (e, m) => new native.LinuxAio(e, m) });
    const state = (bdev as unknown as { state: ModuleWorkerState }).state;
    state.enableCompletionFds?.();
    const ch = bdev.createChannel();
    const fds: number[] = [];
    state.completionFds?.(fds);
    t.equal(fds.length, 1, 'the ring has a completion eventfd once the worker may sleep');
    const efd = Int32Array.from(fds);
    t.equal(native.pollReadable(efd, 1, 0), 0, 'not readable before any I/O');

    state.setCompletionNotify?.(true);
    const io = new TestIo();
    io.prepare(BdevIoType.Read, 0, 8);
    io.addIov(mem.bytes, 4096, 4096);
    ch.submit(io);
    t.equal(ch.sleepReady?.(), false, 'an I/O not yet handed to the kernel: no sleep');
    let delivered = ch.poll();
    if (io.completions === 0) {
      t.equal(ch.sleepReady?.(), true, 'in the kernel, with a completion eventfd: the worker may sleep');
      // No timing: block until the kernel signals (or fail after a generous while).
      t.equal(native.pollReadable(efd, 1, 10_000), 1, 'the completion makes the eventfd readable');
    }
    for (let i = 0; i < 100_000 && io.completions === 0; i++) delivered += ch.poll();
    t.equal(io.completions, 1);
    t.equal(io.status, BdevIoStatus.Success);
    t.ok(delivered >= 1);
    native.eventfdRead(efd[0]);
    state.setCompletionNotify?.(false);
    ch.destroy();
    bdev.destroy();
    t.equal(fds.length, 1);
    f.close();
    mem.release();
    fs.rmSync(dir, { recursive: true, force: true });
    t.equal(fdCount(), fds0, 'the ring closed its completion eventfd with it');
  });
}

/** A bdev whose I/Os stay "in the kernel" until the test completes them; its module state has a completion fd. */
class KernelLikeBdev implements Bdev {
  readonly name = 'K0';
  readonly blockSize = 512;
  readonly numBlocks = 64;
  readonly held: BdevIo[] = [];
  readonly done: BdevIo[] = [];
  onSubmit: ((io: BdevIo) => void) | null = null;
  /** Called at every channel poll (the loop's bdev poll), with the count so far. */
  onPoll: ((n: number) => void) | null = null;
  polls = 0;
  /** Held I/Os will signal the completion fd (false: like staged I/O a poll must push, no signal). */
  signals = true;
  ioTypeSupported(type: BdevIoType): boolean {
    return type === BdevIoType.Read || type === BdevIoType.Write;
  }
  createChannel(): BdevChannel {
    const self = this;
    return {
      submit(io) {
        self.held.push(io);
        self.onSubmit?.(io);
      },
      poll(): number {
        self.onPoll?.(++self.polls);
        const n = self.done.length;
        for (const io of self.done.splice(0)) io.onComplete();
        return n;
      },
      get outstanding() {
        return self.held.length + self.done.length;
      },
      sleepReady: () => self.signals && self.done.length === 0,
      destroy(): void {},
    };
  }
  /** The "kernel" finishes every held I/O. */
  complete(): void {
    for (const io of this.held.splice(0)) {
      io.status = BdevIoStatus.Success;
      this.done.push(io);
    }
  }
  destroy(): void {}
}

const KICK_FD = 300;
const COMPLETION_FD = 400;
const WAKE_FD = 500;
const CALL_FD = 42;

/**
 * Poller.run() in `mode` with a scripted world: `onSleep(n, fds)` is the n-th
 * poll(2) (return 1 = an fd fired, 0 = timeout; it may change the ring or the
 * bdev, or post exit). `notify` hooks the module state's completion switch.
 */
function world(mode: PollMode, opts: { notifyHook?: (on: boolean) => void; sleepable?: boolean; idleSleepUs?: number; helperThreads?: boolean } = {}) {
  const vr = new MockVring({ size: 16 });
  vr.usedEvent = 0xffff;
  const bdev = new KernelLikeBdev();
  const { port1, port2 } = new MessageChannel();
  const statsBuf = new SharedArrayBuffer(WorkerStat.Count * 8);
  const stats = new Float64Array(statsBuf);
  const signals: number[] = [];
  const notifyLog: boolean[] = [];
  let sleepHandler: (n: number, fds: number[]) => number = () => 0;
  let sleeps = 0;
  /** The fds a poll that fired reports ready (null: all it polled), and every eventfd read, in order. */
  let readyFds: number[] | null = null;
  const reads: number[] = [];
  let onYield: (n: number) => void = () => undefined;
  let yields = 0;
  const sys: PollerSys = {
    mmap: () => vr.buffer,
    munmap: () => undefined,
    eventfdWrite: (fd) => void signals.push(fd),
    eventfdRead: (fd) => {
      reads.push(fd);
      return 0;
    },
    pollReadable: (fds, count, _timeoutMs, ready) => {
      const fired = sleepHandler(++sleeps, Array.from(fds.subarray(0, count)));
      if (ready !== undefined) for (let i = 0; i < count; i++) ready[i] = fired > 0 && (readyFds === null || readyFds.includes(fds[i])) ? 1 : 0;
      return fired;
    },
    yieldCpu: () => onYield(++yields),
  };
  let completionFdsEnabled = false;
  const state: ModuleWorkerState = {
    forgetBuffers: () => undefined,
    close: () => undefined,
    enableCompletionFds: () => void (completionFdsEnabled = true),
    completionFds: (out) => void (completionFdsEnabled && out.push(COMPLETION_FD)),
    setCompletionNotify: (on) => {
      notifyLog.push(on);
      opts.notifyHook?.(on);
    },
  };
  const modules = new Map(BDEV_MODULES);
  modules.set('kernel', { name: 'kernel', createState: () => state, open: () => bdev, completesOnHelperThreads: opts.helperThreads === true });
  const poller = new Poller({ core: 0, port: port1, wakeFd: WAKE_FD, stats: statsBuf, pollMode: mode, idleSleepUs: opts.idleSleepUs ?? 0 }, sys, new WorkerBdevLayer(modules));
  const device: DeviceDesc = {
    id: 1,
    name: 'vhost.irq',
    features: F_VERSION_1,
    model: { kind: 'blk', readonly: false },
    bdevs: [{ name: 'K0', module: 'kernel', blockSize: 512, numBlocks: 64, params: null }],
    regions: [{ fd: 100, guestPhysAddr: vr.gpa, sizeBytes: vr.buffer.byteLength, userAddr: vr.gpa, mmapOffset: 0 }],
    queues: [{ ...vr.queueDesc(0), kickFd: KICK_FD, callFd: CALL_FD }],
    stats: new SharedArrayBuffer(DeviceStat.Count * 8),
  };
  poller.handle({ id: 1, op: 'start', device });
  const replies = (): ControlReply[] => {
    const out: ControlReply[] = [];
    for (let m = receiveMessageOnPort(port2); m !== undefined; m = receiveMessageOnPort(port2)) out.push(m.message as ControlReply);
    return out;
  };
  t.same(replies(), [{ id: 1, ok: true }]);
  const read = (sector: number): { head: number; st: number } => {
    const h = vr.alloc(16);
    vr.view.setUint32(h - vr.gpa, BlkType.In, true);
    vr.view.setBigUint64(h - vr.gpa + 8, BigInt(sector), true);
    const st = vr.alloc(1, 0xee);
    const head = vr.addChain([{ addr: h, len: 16 }, { addr: vr.alloc(512), len: 512, write: true }, { addr: st, len: 1, write: true }]);
    return { head, st };
  };
  const exit = (): void => port2.postMessage({ id: 99, op: 'exit' });
  return {
    vr,
    bdev,
    stats,
    signals,
    notifyLog,
    poller,
    replies,
    read,
    exit,
    onSleep: (h: (n: number, fds: number[]) => number) => (sleepHandler = h),
    /**
     * Script the sleeps: the n-th poll runs steps[n - 1] and reports an fd fired;
     * a poll beyond the script fails the test and exits.
     */
    sleepSteps: (tt: Test, steps: (() => void)[]) =>
      (sleepHandler = (n) => {
        const step = steps[n - 1];
        if (step === undefined) {
          tt.fail(`unexpected sleep ${n}`);
          exit();
        } else {
          step();
        }
        return 1;
      }),
    setReady: (fds: number[] | null) => (readyFds = fds),
    reads,
    onYield: (h: (n: number) => void) => (onYield = h),
    yields: () => yields,
    close: () => {
      port1.close();
      port2.close();
    },
  };
}

t.test('interrupt mode: sleeps on kick, completion and wake fds with notifications on; I/O in the kernel does not keep it awake', async (t) => {
  const w = world('interrupt');
  t.teardown(w.close);
  const seen: string[] = [];
  let r: { head: number; st: number } | null = null;
  w.onSleep((n, fds) => {
    t.same([...fds].sort(), [KICK_FD, COMPLETION_FD, WAKE_FD].sort(), `sleep ${n}: kick, completion and wake fds`);
    t.equal(w.vr.usedFlags & VRING_USED_F_NO_NOTIFY, 0, `sleep ${n}: the driver is asked for kicks`);
    t.equal(w.notifyLog[w.notifyLog.length - 1], true, `sleep ${n}: completion eventfd switched on`);
    t.equal(w.stats[WorkerStat.InInterrupt], 1, 'in_interrupt');
    switch (n) {
      case 1:
        seen.push('idle');
        r = w.read(3); // the guest adds a request and kicks
        return 1;
      case 2:
        seen.push(`asleep with ${w.bdev.held.length} I/O in the kernel`);
        w.bdev.complete(); // the kernel completes it and signals the completion fd
        return 1;
      case 3:
        seen.push(`used ${w.vr.readUsed().length}, calls ${w.signals.filter((s) => s === CALL_FD).length}`);
        w.exit();
        return 1;
      default:
        t.fail(`unexpected sleep ${n}`);
        w.exit();
        return 1;
    }
  });
  w.poller.run();
  t.same(seen, ['idle', 'asleep with 1 I/O in the kernel', 'used 1, calls 1']);
  t.equal(w.vr.view.getUint8((r as unknown as { st: number }).st - w.vr.gpa), 0, 'status OK written');
  t.same(w.replies(), [{ id: 99, ok: true }], 'exit answered');
  t.equal(w.stats[WorkerStat.Sleeps], 3);
  t.ok(w.vr.usedFlags & VRING_USED_F_NO_NOTIFY, 'kicks suppressed again after the last sleep');
});

t.test('a sleep reads only the eventfds its poll found ready, and none before it', async (t) => {
  const w = world('interrupt');
  t.teardown(w.close);
  const readsAtSleep: number[][] = [];
  const noting = (step: () => void) => () => {
    readsAtSleep.push([...w.reads]);
    step();
  };
  w.sleepSteps(t, [
    noting(() => {
      w.read(3);
      w.setReady([KICK_FD]); // the guest's kick
    }),
    noting(() => {
      w.bdev.complete();
      w.setReady([COMPLETION_FD]); // the kernel's completion signal
    }),
    noting(() => {
      w.exit();
      w.setReady([WAKE_FD]); // the reactor's wake-up with the exit message
    }),
  ]);
  w.poller.run();
  t.same(readsAtSleep, [[], [KICK_FD], [KICK_FD, COMPLETION_FD]], 'no eventfd read before a sleep beyond the one that woke the last');
  t.same(w.reads, [KICK_FD, COMPLETION_FD, WAKE_FD], 'each wake-up read exactly the fd that fired');
  t.equal(w.vr.readUsed().length, 1, 'the request completed');
  t.same(w.replies(), [{ id: 99, ok: true }], 'exit answered');
});

t.test('a count left on an eventfd while its signals were off costs one early wake-up, then the worker sleeps', async (t) => {
  const w = world('interrupt');
  t.teardown(w.close);
  let polled = 0;
  w.sleepSteps(t, [
    () => {
      polled = 1;
      // A kick the driver sent although kicks were suppressed: poll returns at once, with no request behind it.
      w.setReady([KICK_FD]);
    },
    () => {
      polled = 2;
      t.same(w.reads, [KICK_FD], 'the stale count was reset by the first wake-up');
      w.exit();
      w.setReady([WAKE_FD]);
    },
  ]);
  w.poller.run();
  t.equal(polled, 2, 'polled again after the early wake-up (and took the exit before a third)');
  t.same(w.replies(), [{ id: 99, ok: true }], 'exit answered');
});

t.test('no lost kick: a request added while kicks were suppressed is taken before sleeping', async (t) => {
  // The driver adds a request at the last moment before notifications are
  // enabled (it sees NO_NOTIFY and does not kick): the re-check must find it.
  let armed = false;
  let added: { head: number } | null = null;
  const w = world('interrupt', {
    notifyHook: (on) => {
      if (on && armed && added === null) {
        t.ok(w.vr.usedFlags & VRING_USED_F_NO_NOTIFY, 'kicks are still suppressed as the request arrives');
        added = w.read(5);
      }
    },
  });
  t.teardown(w.close);
  w.onSleep((n) => {
    if (n === 1) {
      armed = true;
      return 0; // timeout: nothing happened
    }
    // By the next sleep the silent request must be in flight.
    t.ok(added !== null, 'the request arrived before this sleep');
    t.equal(w.bdev.held.length, 1, 'the request that came without a kick was taken before sleeping');
    w.exit();
    w.bdev.complete();
    return 1;
  });
  w.poller.run();
  t.equal(w.vr.readUsed().length, 1);
});

t.test('no lost completion: an I/O that completed while completion signals were off is delivered before sleeping', async (t) => {
  let completeOnEnable = false;
  const w = world('interrupt', {
    notifyHook: (on) => {
      // Completed "just before" the eventfd was switched on: no signal comes for it.
      if (on && completeOnEnable) {
        completeOnEnable = false;
        w.bdev.complete();
      }
    },
  });
  t.teardown(w.close);
  w.onSleep((n) => {
    if (n === 1) {
      w.read(1);
      return 1;
    }
    if (n === 2) {
      t.equal(w.bdev.held.length, 1, 'asleep with the I/O in the kernel');
      completeOnEnable = true;
      return 0; // woken by the timeout only
    }
    t.equal(w.vr.readUsed().length, 1, 'the silent completion was published before the next sleep');
    t.ok(w.signals.includes(CALL_FD), 'and the guest was interrupted');
    w.exit();
    return 1;
  });
  w.poller.run();
});

t.test('I/O a poll must finish (no completion signal) keeps the worker awake', async (t) => {
  // A malloc bdev completes inside submit and delivers at the next poll: the
  // worker must not sleep between the two.
  const w = world('interrupt');
  t.teardown(w.close);
  let polledWithDone = 0;
  w.bdev.onSubmit = () => {
    // Complete at once, like malloc: delivered only by the next poll.
    w.bdev.complete();
  };
  w.onSleep((n) => {
    if (w.bdev.done.length > 0) polledWithDone++;
    if (n === 1) {
      w.read(0);
      w.read(1);
      return 1;
    }
    w.exit();
    return 1;
  });
  w.poller.run();
  t.equal(polledWithDone, 0, 'never asleep with a completion waiting for a poll');
  t.equal(w.vr.readUsed().length, 2);
});

t.test('poll mode never sleeps and reports in_interrupt false; adaptive reports it while asleep', async (t) => {
  const p = world('poll');
  t.teardown(p.close);
  let slept = false;
  p.onSleep(() => {
    slept = true;
    return 0;
  });
  // Let it spin a little (the exit message is taken after CONTROL_EVERY iterations).
  p.exit();
  p.poller.run();
  t.notOk(slept, 'poll mode never sleeps');
  t.equal(p.stats[WorkerStat.InInterrupt], 0);
  t.equal(p.stats[WorkerStat.Sleeps], 0);

  const a = world('adaptive');
  t.teardown(a.close);
  t.equal(a.stats[WorkerStat.InInterrupt], 0, 'adaptive: polling at start');
  a.onSleep((n) => {
    t.equal(a.stats[WorkerStat.InInterrupt], 1, 'adaptive: in interrupt mode while asleep');
    if (n === 1) {
      a.read(0);
      return 1;
    }
    a.exit();
    a.bdev.complete();
    return 1;
  });
  a.poller.run();
  t.equal(a.vr.readUsed().length, 1);
});

t.test('poll mode with I/O in flight on a helper-threaded module (librbd) yields the CPU, never sleeps, and stops yielding once it completes', async (t) => {
  const w = world('poll', { helperThreads: true });
  t.teardown(w.close);
  w.onSleep(() => {
    t.fail('poll mode slept');
    w.exit();
    return 1;
  });
  const r = w.read(4);
  let heldAtFirstYield = -1;
  let yieldsAtCompletion = -1;
  w.onYield((n) => {
    if (n === 1) heldAtFirstYield = w.bdev.held.length;
    if (n === 3) {
      // librbd's thread ran (the yield let it): the I/O completes.
      w.bdev.complete();
      yieldsAtCompletion = n;
    }
  });
  // After the completion the worker polls with nothing in flight: it must not yield again. The exit
  // is posted once enough polls have passed for it to be taken (CONTROL_EVERY iterations).
  w.bdev.onPoll = (n) => {
    if (yieldsAtCompletion > 0 && n === 50_000) w.exit();
    if (n === 2_000_000) w.exit(); // a guard (counted, not timed) should the completion never come
  };
  w.poller.run();
  t.equal(heldAtFirstYield, 1, 'yielded with the request held by the helper-threaded module');
  t.equal(w.yields(), 3, 'no yield once nothing is in flight');
  t.equal(w.stats[WorkerStat.Sleeps], 0, 'never slept');
  t.equal(w.vr.readUsed().length, 1, 'the request completed');
  t.equal(w.vr.view.getUint8(r.st - w.vr.gpa), 0, 'status OK');

  // The same in flight on a module whose I/O the kernel completes: poll mode just spins.
  const k = world('poll');
  t.teardown(k.close);
  k.read(1);
  k.bdev.onPoll = (n) => {
    if (n === 50_000) {
      k.bdev.complete();
      k.exit();
    }
  };
  k.poller.run();
  t.equal(k.yields(), 0, 'no yield for kernel-completed I/O');
  t.equal(k.vr.readUsed().length, 1);
  t.ok(yieldsToHelpers('poll', 1) && !yieldsToHelpers('poll', 0) && !yieldsToHelpers('adaptive', 1) && !yieldsToHelpers('interrupt', 1), 'yieldsToHelpers: poll mode with helper I/O only');
});

t.test('wantsSleep: poll never, interrupt always, adaptive after idleSleepUs or after a short spin with bdev I/O in flight', async (t) => {
  t.notOk(wantsSleep('poll', 1e9, 1, 5), 'poll mode never sleeps');
  t.ok(wantsSleep('interrupt', 0, 0, 0), 'interrupt mode sleeps when idle');
  t.notOk(wantsSleep('adaptive', 0.5, 1, 0), 'adaptive, nothing in flight, idle shorter than idleSleepUs: spins for the guest');
  t.ok(wantsSleep('adaptive', 1, 1, 0), 'adaptive, idle for idleSleepUs: sleeps');
  t.notOk(wantsSleep('adaptive', IO_WAIT_SPIN_MS / 2, 1, 1), 'adaptive, bdev I/O in flight for less than the spin: spins (a fast device completes meanwhile)');
  t.ok(wantsSleep('adaptive', IO_WAIT_SPIN_MS, 1, 1), 'adaptive, bdev I/O in flight past the spin: sleeps');
  t.notOk(wantsSleep('adaptive', IO_WAIT_SPIN_MS, 1, 0), 'adaptive, the same idle time with nothing in flight: spins');
  t.ok(wantsSleep('adaptive', 0, 1, 2, 2), 'adaptive, all bdev I/O in flight in librbd (helper threads): sleeps at once');
  t.notOk(wantsSleep('adaptive', 0, 1, 2, 1), 'adaptive, part of it on a device that may complete within the spin: spins first');
  t.ok(wantsSleep('adaptive', IO_WAIT_SPIN_MS, 1, 2, 1), '... and sleeps after it');
  t.notOk(wantsSleep('adaptive', 0, 1, 0, 0), 'adaptive, nothing in flight (0 of 0 is not "all in librbd"): spins for the guest');
  t.ok(IO_WAIT_SPIN_MS < 1, 'the spin is far shorter than the default idleSleepUs (1000)');
});

/** idleSleepUs far beyond the test's life: an adaptive worker never sleeps for idleness alone. */
const NEVER_IDLE_SLEEP_US = 60_000_000;
/** Polls after which a test that expects a sleep gives up (counted, not timed): the loop would spin forever otherwise. */
const POLL_GUARD = 2_000_000;

t.test('adaptive: with bdev I/O in flight that signals, sleeps at once on kick, completion and wake fds; with nothing in flight it spins', async (t) => {
  const w = world('adaptive', { idleSleepUs: NEVER_IDLE_SLEEP_US });
  t.teardown(w.close);
  const r = w.read(2);
  let gaveUp = false;
  w.bdev.onPoll = (n) => {
    if (n === POLL_GUARD && w.stats[WorkerStat.Sleeps] === 0) {
      gaveUp = true;
      w.bdev.complete();
      w.exit();
    }
  };
  w.onSleep((n, fds) => {
    if (n === 1) {
      t.same([...fds].sort(), [KICK_FD, COMPLETION_FD, WAKE_FD].sort(), 'kick, completion and wake fds');
      t.equal(w.bdev.held.length, 1, 'asleep with the I/O in librbd / the kernel');
      t.equal(w.notifyLog[w.notifyLog.length - 1], true, 'completion eventfd switched on before sleeping');
      t.equal(w.vr.usedFlags & VRING_USED_F_NO_NOTIFY, 0, 'the driver is asked for kicks meanwhile');
      t.equal(w.stats[WorkerStat.InInterrupt], 1, 'in_interrupt while asleep');
      w.bdev.complete(); // the completion signals the eventfd
      w.exit(); // taken after the completion is published; the worker must not sleep again for idleness
      return 1;
    }
    t.fail(`sleep ${n} with ${w.bdev.held.length} I/O held: an idle adaptive worker with nothing in flight slept before idleSleepUs`);
    w.exit();
    return 1;
  });
  w.poller.run();
  t.notOk(gaveUp, 'slept while the I/O was in flight (did not spin until the guard)');
  t.equal(w.stats[WorkerStat.Sleeps], 1, 'exactly one sleep: the one with I/O in flight');
  t.equal(w.vr.readUsed().length, 1, 'the request completed');
  t.equal(w.vr.view.getUint8(r.st - w.vr.gpa), 0, 'status OK');
  t.ok(w.signals.includes(CALL_FD), 'the guest was interrupted');
  t.equal(w.stats[WorkerStat.InInterrupt], 0, 'polling again (not in interrupt) after the wake-up');
  t.same(w.replies(), [{ id: 99, ok: true }], 'exit answered');
});

t.test('adaptive: a wake-up that brings nothing does not start the idle spin over', async (t) => {
  const w = world('adaptive', { idleSleepUs: 1000 });
  t.teardown(w.close);
  let polls = 0;
  let pollsAtFirst = -1;
  let pollsBetween = -1;
  w.bdev.onPoll = (n) => {
    polls = n;
    if (n === POLL_GUARD) w.exit();
  };
  w.sleepSteps(t, [
    () => {
      pollsAtFirst = polls;
      w.setReady([KICK_FD]); // a stale kick: nothing new in the ring
    },
    () => {
      pollsBetween = polls - pollsAtFirst;
      w.exit();
      w.setReady([WAKE_FD]);
    },
  ]);
  w.poller.run();
  // idleSleepUs is long past when the stale kick wakes it: it sleeps again at the next idle check
  // (every IDLE_CLOCK_EVERY iterations) instead of spinning another 1000 µs.
  t.ok(pollsBetween > 0 && pollsBetween <= 2 * IDLE_CLOCK_EVERY, `slept again after ${pollsBetween} bdev polls`);
});

t.test('adaptive: with all its bdev I/O in librbd it sleeps at the first idle check, not after the spin', async (t) => {
  const w = world('adaptive', { idleSleepUs: NEVER_IDLE_SLEEP_US, helperThreads: true });
  t.teardown(w.close);
  w.read(2);
  let polls = 0;
  let pollsBeforeSleep = -1;
  w.bdev.onPoll = (n) => {
    polls = n;
    if (n === POLL_GUARD && w.stats[WorkerStat.Sleeps] === 0) {
      w.bdev.complete();
      w.exit();
    }
  };
  w.sleepSteps(t, [
    () => {
      pollsBeforeSleep = polls;
      t.equal(w.bdev.held.length, 1, 'asleep with the I/O in librbd');
      w.bdev.complete();
      w.exit();
    },
  ]);
  w.poller.run();
  // The request is taken in the first iterations; the clock, and with it the sleep decision, comes every
  // IDLE_CLOCK_EVERY idle iterations; sleep() polls once more. The IO_WAIT_SPIN_MS spin would take
  // far more iterations than that (50 µs at well under 1 µs each).
  t.ok(pollsBeforeSleep > 0 && pollsBeforeSleep <= 2 * IDLE_CLOCK_EVERY, `slept at the first idle check (after ${pollsBeforeSleep} bdev polls)`);
  t.equal(w.vr.readUsed().length, 1, 'the request completed');
  t.same(w.replies(), [{ id: 99, ok: true }], 'exit answered');
});

t.test('adaptive: I/O in flight that will not signal (a poll must push it) keeps the worker spinning', async (t) => {
  const w = world('adaptive', { idleSleepUs: NEVER_IDLE_SLEEP_US });
  t.teardown(w.close);
  w.bdev.signals = false;
  w.read(4);
  // The "module" finishes the I/O only through polls: the 1000th completes it.
  w.bdev.onPoll = (n) => {
    if (n === 1000) {
      t.equal(w.bdev.held.length, 1, 'still in flight after 999 polls');
      w.bdev.complete();
      w.exit();
    }
  };
  w.onSleep((n) => {
    t.fail(`slept (${n}) with I/O in flight that signals nothing`);
    w.bdev.complete();
    w.exit();
    return 1;
  });
  w.poller.run();
  t.equal(w.stats[WorkerStat.Sleeps], 0, 'never slept');
  t.equal(w.notifyLog.length, 0, 'completion notifications never switched on');
  t.equal(w.vr.readUsed().length, 1, 'the request completed');
});

t.test('adaptive: no lost completion: an I/O that completes as the eventfd is switched on is delivered without sleeping', async (t) => {
  let raced = false;
  const w = world('adaptive', {
    idleSleepUs: NEVER_IDLE_SLEEP_US,
    notifyHook: (on) => {
      // Completed "just before" notify went on: its callback saw notify off and signalled nothing.
      if (on && !raced && w.bdev.held.length === 1) {
        raced = true;
        w.bdev.complete();
        w.exit();
      }
    },
  });
  t.teardown(w.close);
  w.read(6);
  w.bdev.onPoll = (n) => {
    if (n === POLL_GUARD && !raced) {
      w.bdev.complete();
      w.exit();
    }
  };
  let slept = 0;
  w.onSleep(() => {
    slept++;
    return 0;
  });
  w.poller.run();
  t.ok(raced, 'the adaptive worker armed the completion eventfd with the I/O in flight');
  t.equal(slept, 0, 'the re-check after arming found the completion: no poll(2) that nothing would end');
  t.same(w.notifyLog, [true, false], 'armed once, disarmed after');
  t.equal(w.vr.readUsed().length, 1, 'the completion was published');
  t.ok(w.signals.includes(CALL_FD), 'and the guest interrupted');
});

t.test('the mock world leaves no temp files', async (t) => {
  t.equal(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('vhostd-irq-')).length, 0);
});
