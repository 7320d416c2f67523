/**
 * Soak (issue #15 item 5): `npm run soak -- [--cycles N] [--minutes M]
 * [--loops K] [--sample-s S] [--heap-s H] [--seed X]`.
 *
 * Against one vhostd (-m 0x2), at the same time:
 *   - K connect loops, one controller each: connect, negotiate, one queue,
 *     a verified 4 KiB write + read, disconnect — until N cycles in all;
 *   - a churn loop (mixed load): create a malloc bdev and a controller, attach
 *     a front-end with 1-2 queues of random size and one or two memory
 *     regions, random verified I/O, detach, delete both; with RPC reads
 *     (vhost_get_controllers, bdev_get_iostat) in between;
 * until the cycles are done and at least M minutes have passed. Every S
 * seconds it prints a sample (elapsed, cycles, churn rounds, fds, RSS MiB);
 * at the end it quiesces and prints the fd count against the warmed-up
 * baseline and the RSS spread after warm-up (the first 10% of the samples,
 * at least 30 s), and the RSS growth per connection: the RSS floor (lowest
 * sample) of the last third after warm-up less that of the first third, over
 * the connections (cycles + churn rounds) made between the two thirds'
 * midpoints — floors, because a GC'd heap's peaks come and go but what is
 * retained per connection raises the floor. Every H seconds (default 60; 0:
 * never) each isolate of vhostd collects its garbage and reports its live
 * V8 heap (test/fuzz/heap-probe.ts, as the fuzz runner does): RSS also
 * follows V8's young generation and heap limits, which come and go; the live
 * heap is what the process keeps. Exit status 1 when fds grew, RSS moved
 * more than ±20 MB, grew more than MAX_GROWTH_PER_CONN bytes per connection
 * (the engine worker that never turned its event loop kept ~250 B per mapped
 * region: 400-1400 B per connection), or an isolate's live heap rose more
 * than HEAP_SLACK_MIB above its first reading.
 * Thread: main.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus } from '../lib/frontend-wire';
import { FuzzTarget, heapText, isolateName, recordHeap, type ControllerInfo, type HeapTrack, type IsolateHeap, type ProcStats } from './target';
import { Rng } from './rng';

/** Bytes of RSS a connection may leave behind, at most (see the header). */
export const MAX_GROWTH_PER_CONN = 128;
/** MiB an isolate's live heap (after a full GC) may rise above its first reading, as in the fuzz runner. */
export const HEAP_SLACK_MIB = 32;

/**
 * RSS growth per connection from samples after warm-up (see the header);
 * null with fewer than 6 samples or no connections between the thirds.
 */
export function growthPerConnection(samples: readonly { rssKiB: number; cycles: number; churn: number }[]): number | null {
  if (samples.length < 6) return null;
  const third = Math.floor(samples.length / 3);
  const first = samples.slice(0, third);
  const last = samples.slice(samples.length - third);
  const floor = (xs: typeof samples): number => Math.min(...xs.map((s) => s.rssKiB));
  const conns = (s: (typeof samples)[number]): number => s.cycles + s.churn;
  const mid = (xs: typeof samples): number => (conns(xs[0]) + conns(xs[xs.length - 1])) / 2;
  const between = mid(last) - mid(first);
  if (between <= 0) return null;
  return ((floor(last) - floor(first)) * 1024) / between;
}

interface Args {
  cycles: number;
  minutes: number;
  loops: number;
  sampleS: number;
  heapS: number;
  seed: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { cycles: 100_000, minutes: 0, loops: 4, sampleS: 10, heapS: 60, seed: Date.now() >>> 0 };
  for (let i = 0; i < argv.length; i++) {
    const v = Number(argv[i + 1]);
    switch (argv[i]) {
      case '--cycles': a.cycles = v; i++; break;
      case '--minutes': a.minutes = v; i++; break;
      case '--loops': a.loops = v; i++; break;
      case '--sample-s': a.sampleS = v; i++; break;
      case '--heap-s': a.heapS = v; i++; break;
      case '--seed': a.seed = v >>> 0; i++; break;
      default: throw new Error(`unknown option ${argv[i]}`);
    }
    if (!Number.isFinite(v) || v < 0) throw new Error(`${argv[i - 1]} needs a non-negative number`);
  }
  return a;
}

interface Sample extends ProcStats {
  tS: number;
  cycles: number;
  churn: number;
}

async function cycle(c: ControllerInfo, rng: Rng): Promise<void> {
  const fe = await VhostUserFrontend.connect(c.socket, 30_000, { waitAccepted: true });
  try {
    await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 1 << 20 }] });
    await fe.setupQueue(0, 32, { timeoutMs: 30_000 });
    const data = randomBytes(4096);
    const sector = rng.int(c.numBlocks - 8);
    const w = await fe.write(0, sector, data);
    const r = await fe.read(0, sector, 4096);
    if (w.status !== BlkStatus.OK || r.status !== BlkStatus.OK || !Buffer.from(r.data).equals(data)) {
      throw new Error(`verified I/O failed on ${c.name} (write ${w.status}, read ${r.status})`);
    }
  } finally {
    fe.close();
  }
}

async function churnRound(target: FuzzTarget, n: number, rng: Rng): Promise<void> {
  const c = await target.createBlk(`churn.${n}`, 4096);
  try {
    const fe = await VhostUserFrontend.connect(c.socket, 30_000, { waitAccepted: true });
    try {
      const two = rng.chance(0.5);
      await fe.negotiate({
        regions: two ? [{ gpa: 0, sizeBytes: 1 << 20 }, { gpa: 1 << 20, sizeBytes: 1 << 20 }] : [{ gpa: 0, sizeBytes: 2 << 20 }],
      });
      const nq = Math.min(fe.negotiated?.queueNum ?? 1, rng.range(1, 2));
      for (let q = 0; q < nq; q++) await fe.setupQueue(q, 2 ** rng.range(3, 8), { timeoutMs: 30_000 });
      const ios: Promise<void>[] = [];
      for (let i = 0; i < rng.range(4, 32); i++) {
        const q = rng.int(nq);
        const sector = rng.int(c.numBlocks - 16) & ~7;
        const data = randomBytes(512 * rng.range(1, 16));
        ios.push(
          (async () => {
            const w = await fe.write(q, sector, data, { segments: rng.range(1, 4) });
            const r = await fe.read(q, sector, data.byteLength, { segments: rng.range(1, 4) });
            if (w.status !== BlkStatus.OK || r.status !== BlkStatus.OK) throw new Error(`churn I/O status ${w.status}/${r.status}`);
            // concurrent requests may overlap: only a request alone on its range is comparable
          })(),
        );
      }
      await Promise.all(ios);
      const data = randomBytes(4096);
      await fe.write(0, 0, data);
      const back = await fe.read(0, 0, 4096);
      if (!Buffer.from(back.data).equals(data)) throw new Error('churn: read back other data than written');
      await target.rpc('vhost_get_controllers');
      await target.rpc('bdev_get_iostat');
    } finally {
      fe.close();
    }
  } finally {
    // The controller refuses deletion (-16) until it has seen the front-end go.
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await target.deleteBlk(c);
        break;
      } catch (e) {
        if (Date.now() > deadline || (e as { code?: number }).code !== -16) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const target = await FuzzTarget.start({ extraArgs: ['--log-level', 'warn'], heapProbe: args.heapS > 0 });
  const rng = new Rng(args.seed);
  let failed = false;
  try {
    const ctrls: ControllerInfo[] = [];
    for (let i = 0; i < args.loops; i++) ctrls.push(await target.createBlk(`soak.${i}`, 8192));
    process.stdout.write(`soak: pid ${target.pid}, ${args.loops} connect loops, ${args.cycles} cycles, >= ${args.minutes} min, seed ${args.seed}\n`);
    process.stdout.write('t_s\tcycles\tchurn\tfds\trss_mib\tanon_mib\n');
    const t0 = Date.now();
    let cycles = 0;
    let churn = 0;
    let stopping = false;
    const samples: Sample[] = [];
    const sample = (): void => {
      const s = { ...target.stats(), tS: Math.round((Date.now() - t0) / 1000), cycles, churn };
      samples.push(s);
      const anon = /^RssAnon:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${target.pid}/status`, 'utf8'));
      process.stdout.write(`${s.tS}\t${s.cycles}\t${s.churn}\t${s.fds}\t${(s.rssKiB / 1024).toFixed(1)}\t${anon ? (Number(anon[1]) / 1024).toFixed(1) : '?'}\n`);
    };
    const timer = setInterval(sample, args.sampleS * 1000);
    // Live V8 heap per isolate (KiB): the first reading is the baseline.
    const heap = new Map<number, HeapTrack>();
    let heapOver = null as IsolateHeap | null;
    let probing: Promise<void> = Promise.resolve();
    const probeHeap = async (): Promise<void> => {
      heapOver ??= recordHeap(heap, (await target.heapProbe()) ?? [], HEAP_SLACK_MIB * 1024);
      process.stdout.write(`# live V8 heap at ${Math.round((Date.now() - t0) / 1000)} s: ${heapText(heap, 'last')}\n`);
    };
    const heapTimer = args.heapS > 0 ? setInterval(() => (probing = probing.then(probeHeap)), args.heapS * 1000) : null;
    const done = (): boolean => cycles >= args.cycles && Date.now() - t0 >= args.minutes * 60_000;
    const loops = ctrls.map(async (c, i) => {
      const r = new Rng(args.seed + 1 + i);
      while (!stopping && !done()) {
        await cycle(c, r);
        cycles++;
      }
    });
    const churner = (async () => {
      while (!stopping && !done()) await churnRound(target, churn++, rng);
    })();
    try {
      await Promise.all([...loops, churner]);
    } catch (e) {
      stopping = true;
      failed = true;
      process.stdout.write(`soak: FAILED after ${cycles} cycles, ${churn} churn rounds: ${(e as Error).stack ?? e}\n`);
      process.stdout.write(`soak: vhostd's log, last lines:\n${target.log().slice(-4000)}\n`);
      await Promise.allSettled([...loops, churner]);
    }
    clearInterval(timer);
    if (heapTimer !== null) clearInterval(heapTimer);
    sample();
    // Quiesced: nothing connected. Compare with the state after warm-up.
    await new Promise((r) => setTimeout(r, 1000));
    const end = target.stats();
    const warm = Math.max(Math.ceil(samples.length / 10), Math.ceil(30 / args.sampleS));
    const after = samples.slice(Math.min(warm, samples.length - 1));
    const rss = after.map((s) => s.rssKiB / 1024);
    const fdsAfter = after.map((s) => s.fds);
    const rssMin = Math.min(...rss);
    const rssMax = Math.max(...rss);
    const rssMid = (rssMin + rssMax) / 2;
    const perConn = growthPerConnection(after);
    process.stdout.write(
      `soak: ${cycles} connect cycles, ${churn} churn rounds in ${((Date.now() - t0) / 60_000).toFixed(1)} min; ` +
        `after warm-up (${warm} samples): fds ${Math.min(...fdsAfter)}..${Math.max(...fdsAfter)}, quiesced ${end.fds} ` +
        `(at start ${samples[0]?.fds}); RSS ${rssMin.toFixed(1)}..${rssMax.toFixed(1)} MiB (${rssMid.toFixed(1)} ± ${((rssMax - rssMin) / 2).toFixed(1)}); ` +
        `RSS floor growth ${perConn === null ? 'not measured (too few samples)' : `${perConn.toFixed(0)} B per connection`}\n`,
    );
    if (!target.alive()) {
      failed = true;
      process.stdout.write(`soak: vhostd died:\n${target.log().slice(-4000)}\n`);
    }
    if ((rssMax - rssMin) / 2 > 20) {
      failed = true;
      process.stdout.write('soak: RSS moved more than ±20 MB after warm-up\n');
    }
    if (perConn !== null && perConn > MAX_GROWTH_PER_CONN) {
      failed = true;
      process.stdout.write(`soak: RSS grew ${perConn.toFixed(0)} B per connection (bound ${MAX_GROWTH_PER_CONN})\n`);
    }
    try {
      await probing;
    } catch (e) {
      failed = true;
      process.stdout.write(`soak: heap probe failed: ${(e as Error).message}\n`);
    }
    for (const [tid, h] of heap) {
      process.stdout.write(`soak: live V8 heap of ${isolateName(tid)}: ${(h.base / 1024).toFixed(1)} first, ${(h.max / 1024).toFixed(1)} max, ${(h.last / 1024).toFixed(1)} last MiB\n`);
    }
    if (heapOver !== null) {
      failed = true;
      process.stdout.write(`soak: the live V8 heap of ${isolateName(heapOver.tid)} rose more than ${HEAP_SLACK_MIB} MiB above its first reading (${(heapOver.usedKiB / 1024).toFixed(1)} MiB)\n`);
    }
    const fdBase = Math.min(...fdsAfter);
    if (end.fds > fdBase) {
      failed = true;
      process.stdout.write(`soak: ${end.fds - fdBase} more fds open at the end than the lowest after warm-up\n`);
    }
  } finally {
    const exit = await target.stop();
    process.stdout.write(`soak: vhostd exit ${JSON.stringify(exit)}\n`);
  }
  process.exitCode = failed ? 1 : 0;
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`soak: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  });
}
