/**
 * The engine worker's bdev layer (engine/bdev/layer.ts): one refcounted
 * handle/channel per bdev per worker, NOMEM retry, QoS and iostat inside
 * submit, events by bdev name, module worker state and memory release.
 */
import t from 'tap';
import { type Bdev, type BdevChannel, BdevIo, BdevIoStatus, BdevIoType, CompletionQueue } from '../../engine/bdev/bdev';
import { type BdevUser, WorkerBdevLayer } from '../../engine/bdev/layer';
import type { BdevModuleEngine, ModuleWorkerState } from '../../engine/bdev/module';
import { BDEV_MODULES } from '../../engine/bdev/modules';
import { type BdevDesc, BdevStat, QosSlot } from '../../engine/control';

class TestIo extends BdevIo {
  statuses: BdevIoStatus[] = [];
  constructor(type = BdevIoType.Read, offsetBlocks = 0, numBlocks = 1) {
    super(4);
    this.prepare(type, offsetBlocks, numBlocks);
    if (type === BdevIoType.Read || type === BdevIoType.Write) this.addIov(new Uint8Array(numBlocks * 512), 0, numBlocks * 512);
  }
  override done(): void {
    this.statuses.push(this.status);
  }
}

class Recorder implements BdevUser {
  sizes: number[] = [];
  bdevResized(numBlocks: number): void {
    this.sizes.push(numBlocks);
  }
}

function nullDesc(name = 'Null0', numBlocks = 1024, extra: Partial<BdevDesc> = {}): BdevDesc {
  return { name, module: 'null', blockSize: 512, numBlocks, params: undefined, ...extra };
}

/** A module whose channels refuse the first `refuse` submissions with NOMEM, and whose worker state is observable. */
function fakeModule(refuse: number) {
  const log = { states: 0, closed: 0, forgotten: [] as Uint8Array[], channels: 0, destroyed: 0, submitted: 0 };
  let left = refuse;
  const module: BdevModuleEngine = {
    name: 'fake',
    createState(): ModuleWorkerState {
      log.states++;
      return {
        forgetBuffers: (views) => log.forgotten.push(...views),
        close: () => log.closed++,
      };
    },
    open(desc: BdevDesc): Bdev {
      return {
        name: desc.name,
        blockSize: desc.blockSize,
        numBlocks: desc.numBlocks,
        ioTypeSupported: (type) => type === BdevIoType.Read,
        createChannel(): BdevChannel {
          log.channels++;
          const done = new CompletionQueue();
          return {
            submit(io) {
              log.submitted++;
              if (left > 0) {
                left--;
                done.complete(io, BdevIoStatus.NoMem);
              } else {
                done.complete(io, BdevIoStatus.Success);
              }
            },
            poll: () => done.reap(),
            get outstanding() {
              return done.length;
            },
            destroy: () => log.destroyed++,
          };
        },
        destroy() {},
      };
    },
  };
  return { module, log };
}

t.test('users of one bdev on a worker share one channel; the last close releases it', async (t) => {
  const fake = fakeModule(0);
  const layer = new WorkerBdevLayer(new Map([['fake', fake.module]]));
  const desc: BdevDesc = { name: 'F0', module: 'fake', blockSize: 512, numBlocks: 8, params: undefined };
  const a = layer.open(desc, new Recorder());
  const b = layer.open(desc, new Recorder());
  t.equal(layer.openCount, 1, 'one open bdev');
  t.equal(fake.log.channels, 1, 'one channel for both users');
  t.equal(fake.log.states, 1, 'one module state');
  const other = layer.open({ ...desc, name: 'F1' }, new Recorder());
  t.equal(fake.log.states, 1, 'the module state is shared by its bdevs');
  t.equal(fake.log.channels, 2);
  const io = new TestIo();
  a.submit(io, 0);
  t.equal(a.outstanding, 1);
  t.equal(b.outstanding, 0, 'outstanding is per user');
  t.throws(() => a.close(), /outstanding/, 'a handle with I/O out cannot close');
  t.equal(layer.poll(1), 1);
  t.same(io.statuses, [BdevIoStatus.Success]);
  t.equal(a.outstanding, 0);
  a.close();
  t.equal(fake.log.destroyed, 0, 'the channel stays while another user has it');
  b.close();
  t.equal(fake.log.destroyed, 1, 'released with the last user');
  t.equal(layer.openCount, 1);
  t.equal(fake.log.closed, 0, 'state kept while the module has a bdev here');
  other.close();
  t.equal(fake.log.closed, 1, 'module state closed with its last bdev');
  t.equal(layer.openCount, 0);
  a.close();
  t.equal(fake.log.destroyed, 2, 'closing twice changes nothing');
});

t.test('NOMEM: the layer resubmits; the user sees one completion', async (t) => {
  const fake = fakeModule(2);
  const layer = new WorkerBdevLayer(new Map([['fake', fake.module]]));
  const h = layer.open({ name: 'F0', module: 'fake', blockSize: 512, numBlocks: 8, params: undefined }, new Recorder());
  const io = new TestIo();
  h.submit(io, 0);
  for (let i = 0; i < 5 && io.statuses.length === 0; i++) layer.poll(i);
  t.same(io.statuses, [BdevIoStatus.Success], 'completed once, with success');
  t.equal(fake.log.submitted, 3, 'two refusals, then accepted');
  t.equal(h.outstanding, 0);
  h.close();
});

t.test('open checks the description', async (t) => {
  const layer = new WorkerBdevLayer();
  t.throws(() => layer.open({ name: 'X', module: 'nope', blockSize: 512, numBlocks: 8, params: undefined }, new Recorder()), /unknown bdev module/);
  const h = layer.open(nullDesc(), new Recorder());
  t.throws(() => layer.open(nullDesc('Null0', 1024, { blockSize: 4096 }), new Recorder()), /is open here as a null bdev of 512-byte blocks/);
  t.throws(() => layer.open({ name: 'M', module: 'malloc', blockSize: 512, numBlocks: 8, params: {} }, new Recorder()), /no storage/);
  t.equal(layer.openCount, 1, 'failed opens leave nothing open');
  h.close();
});

t.test('supported I/O types come from the module (a null bdev has no unmap, no flush)', async (t) => {
  const layer = new WorkerBdevLayer();
  const h = layer.open(nullDesc(), new Recorder());
  t.ok(h.ioTypeSupported(BdevIoType.Read));
  t.ok(h.ioTypeSupported(BdevIoType.Write));
  t.notOk(h.ioTypeSupported(BdevIoType.Unmap));
  t.notOk(h.ioTypeSupported(BdevIoType.Flush));
  h.close();
  t.ok(BDEV_MODULES.has('malloc') && BDEV_MODULES.has('null') && BDEV_MODULES.has('uring') && BDEV_MODULES.has('aio'), 'every module in the table');
});

t.test('resize by name reaches every user; a module that cannot resize refuses', async (t) => {
  const layer = new WorkerBdevLayer();
  const u1 = new Recorder();
  const u2 = new Recorder();
  const a = layer.open(nullDesc('N', 100), u1);
  const b = layer.open(nullDesc('N', 100), u2);
  t.equal(layer.resize('N', 300), 2, 'two users told');
  t.same(u1.sizes, [300]);
  t.same(u2.sizes, [300]);
  t.equal(a.numBlocks, 300, 'handles see the new size');
  const io = new TestIo(BdevIoType.Read, 250, 1);
  b.submit(io, 0);
  layer.poll(0);
  t.same(io.statuses, [BdevIoStatus.Success], 'I/O past the old end now succeeds');
  t.equal(layer.resize('absent', 5), 0, 'not open here: nobody told');
  const m = layer.open({ name: 'M', module: 'malloc', blockSize: 512, numBlocks: 4, params: { storage: new SharedArrayBuffer(2048) } }, new Recorder());
  t.throws(() => layer.resize('M', 8), /cannot change size/);
  a.close();
  b.close();
  m.close();
});

t.test('iostat is kept per bdev inside submit, flushed at the next poll', async (t) => {
  const layer = new WorkerBdevLayer();
  const stats = new SharedArrayBuffer(BdevStat.Count * 8);
  const s = new Float64Array(stats);
  const h = layer.open(nullDesc('N', 64, { stats }), new Recorder());
  const r = new TestIo(BdevIoType.Read, 0, 2);
  const w = new TestIo(BdevIoType.Write, 0, 1);
  const bad = new TestIo(BdevIoType.Read, 63, 2);
  h.submit(r, 10);
  h.submit(w, 10);
  h.submit(bad, 10);
  layer.poll(11);
  t.equal(s[BdevStat.ReadOps], 0, 'not flushed yet');
  layer.poll(12);
  t.equal(s[BdevStat.ReadOps], 1);
  t.equal(s[BdevStat.BytesRead], 1024);
  t.equal(s[BdevStat.WriteOps], 1);
  t.equal(s[BdevStat.FailedOps], 1, 'the out-of-range read counted as failed');
  t.equal(s[BdevStat.ReadLatencyNs], 2e6, 'latency from submit (10 ms) to the flush clock (12 ms)');
  h.close();
});

t.test('QoS inside submit: over-budget I/Os wait in order; drain releases only its own user', async (t) => {
  const layer = new WorkerBdevLayer();
  const qos = new SharedArrayBuffer(QosSlot.Count * 8);
  new Float64Array(qos)[QosSlot.RwIosPerSec] = 1000; // one I/O per 1 ms timeslice
  const desc = nullDesc('N', 64, { qos });
  const a = layer.open(desc, new Recorder(), 0);
  const b = layer.open(desc, new Recorder(), 0);
  const ios = [0, 1, 2, 3].map((i) => new TestIo(BdevIoType.Read, i, 1));
  a.submit(ios[0], 0);
  b.submit(ios[1], 0);
  a.submit(ios[2], 0);
  b.submit(ios[3], 0);
  layer.poll(0.5);
  t.same(ios.map((io) => io.statuses.length), [1, 0, 0, 0], 'one I/O in the first timeslice');
  layer.poll(1.2);
  t.same(ios.map((io) => io.statuses.length), [1, 1, 0, 0], 'the next in order in the next slice');
  b.drain();
  layer.poll(1.3);
  t.same(ios.map((io) => io.statuses.length), [1, 1, 0, 1], "b's waiting I/O went at once; a's still waits for budget");
  layer.poll(2.2);
  t.same(ios.map((io) => io.statuses.length), [1, 1, 1, 1]);
  a.close();
  b.close();
});

t.test('releaseMemory tells every module state to forget the views', async (t) => {
  const fake = fakeModule(0);
  const layer = new WorkerBdevLayer(new Map([['fake', fake.module]]));
  const h = layer.open({ name: 'F0', module: 'fake', blockSize: 512, numBlocks: 8, params: undefined }, new Recorder());
  const views = [new Uint8Array(8), new Uint8Array(8)];
  layer.releaseMemory(views);
  t.same(fake.log.forgotten, views);
  h.close();
  layer.releaseMemory(views);
  t.equal(fake.log.forgotten.length, 2, 'no state left to tell');
});

t.test('a closed handle fails I/O through a completion, never a throw', async (t) => {
  const layer = new WorkerBdevLayer();
  const h = layer.open(nullDesc(), new Recorder());
  h.close();
  const io = new TestIo();
  h.submit(io, 0);
  t.same(io.statuses, [], 'not inside submit');
  layer.poll(0);
  t.same(io.statuses, [BdevIoStatus.Failed]);
});
