/**
 * The bench the bad-input tests share: a target with a controller that takes
 * the abuse ("bad") and a healthy one with a front-end already attached.
 * afterCase() checks, after each hostile case, that the healthy controller
 * still serves I/O, the target lives, and the bad connection left no fd or
 * guest mapping behind. Thread: the test's main thread.
 */
import type { Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { VhostUserFrontend } from './frontend';
import { BlkStatus, Req, vringFdPayload } from './frontend-wire';
import { settle, stableSnapshot, startTarget, type BlkController, type BlkTarget, type ResourceSnapshot } from './frontend-target';

export class BadInputBench {
  private sector = 0;

  private constructor(
    readonly target: BlkTarget,
    readonly bad: BlkController,
    readonly good: BlkController,
    readonly healthy: VhostUserFrontend,
    readonly base: ResourceSnapshot,
  ) {}

  static async start(names: { bad: string; good: string }, numBlocks: number): Promise<BadInputBench> {
    const target = await startTarget();
    const bad = await target.createBlk({ name: names.bad, numBlocks });
    const good = await target.createBlk({ name: names.good, numBlocks });
    // Warm up: one full session on `bad`, so lazily created per-core state is not counted as a leak.
    const warm = await VhostUserFrontend.connect(bad.socket, 5000, { waitAccepted: true });
    await warm.negotiate();
    await warm.setupQueue(0, 32);
    await warm.read(0, 0, 512);
    warm.close();
    await new Promise((r) => setTimeout(r, 200));
    const healthy = await VhostUserFrontend.connect(good.socket, 5000, { waitAccepted: true });
    await healthy.negotiate();
    await healthy.setupQueue(0, 64);
    return new BadInputBench(target, bad, good, healthy, await stableSnapshot(bad.pid));
  }

  /** The other controller still works, the process lives, and the bad connection left nothing behind. */
  async afterCase(t: Test): Promise<void> {
    const d = randomBytes(4096);
    const sector = (this.sector += 8);
    const w = await this.healthy.write(0, sector, d);
    const r = await this.healthy.read(0, sector, 4096);
    t.ok(w.status === BlkStatus.OK && Buffer.from(r.data).equals(d), 'the healthy controller still serves I/O');
    t.ok(this.target.alive(), 'the target process is alive');
    t.same(await settle(this.bad.pid, this.base), this.base, 'fds and guest mappings back to baseline');
  }

  async stop(): Promise<void> {
    this.healthy.close();
    await this.target.stop();
  }
}

/**
 * A bad-input test file's bench, started before its first test and stopped
 * after its last: `bad` is the controller that takes the abuse.
 */
export class BadInputSuite {
  private bench?: BadInputBench;

  constructor(root: Test, names: { bad: string; good: string }, numBlocks: number) {
    root.before(async () => {
      this.bench = await BadInputBench.start(names, numBlocks);
    });
    root.teardown(async () => {
      await this.bench?.stop();
    });
  }

  get bad(): BlkController {
    if (this.bench === undefined) throw new Error('the bad-input bench has not started');
    return this.bench.bad;
  }

  /** BadInputBench.afterCase, bound: pass it around as a function. */
  readonly afterCase = (t: Test): Promise<void> => {
    if (this.bench === undefined) throw new Error('the bad-input bench has not started');
    return this.bench.afterCase(t);
  };

  /** A new connection to the bad controller, closed when `t` ends. */
  async connectBad(t: Test): Promise<VhostUserFrontend> {
    const fe = await VhostUserFrontend.connect(this.bad.socket, 5000, { waitAccepted: true });
    t.teardown(() => fe.close());
    return fe;
  }
}

/**
 * Gives queue `queue` of `fe` a call fd that stops taking writes once adopted:
 * a FIFO (made in `dir`) whose writer end is sent with SET_VRING_CALL while a
 * reader is open (the session may signal it once), after which both ends are
 * closed here. The engine's next completion signal then gets EPIPE.
 */
export async function callFdThatBreaks(fe: VhostUserFrontend, dir: string, queue = 0): Promise<void> {
  const fifo = path.join(dir, `call-${queue}-${Date.now()}`);
  execFileSync('mkfifo', [fifo]);
  const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const writer = fs.openSync(fifo, fs.constants.O_WRONLY);
  await fe.request(Req.SET_VRING_CALL, vringFdPayload(queue, false), [writer]);
  await fe.sync();
  fs.closeSync(writer);
  fs.closeSync(reader);
}
