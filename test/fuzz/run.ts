/**
 * The fuzz runner: `npm run fuzz -- [--minutes N | --cases N] [--seed S]
 * [--from C] [--only name,name] [--rss-slack-mib M] [--heap-slack-mib M]`.
 *
 * Each selected fuzzer (vhost-user, chains, packed, jsonrpc, scsi, nvme,
 * vfio-user) runs in turn against its
 * own fresh vhostd (-m 0x2) for N minutes or N cases. Case c draws from
 * Rng.forCase(seed, c), so a failure is replayed from its seed and the case
 * its connection began at (printed with the failure). Every `checkEvery`
 * cases and at the end the runner closes the hostile connection and checks:
 * the process lives; the fuzzer's own check (e.g. the shadow copy of guest
 * memory); verified I/O on a fresh connection to a second controller that
 * took no abuse; the JSON-RPC server answers; the open fds are back at the
 * warmed-up baseline; memory:
 *   - each isolate's live V8 heap (after a full GC, test/fuzz/heap-probe.ts)
 *     is within its warmed-up baseline + `heapSlackMiB` (default 32): the
 *     objects vhostd keeps (Maps, queued completions, queue and region
 *     state) do not grow with the cases;
 *   - RSS has stopped growing: at check k it is within the largest RSS seen
 *     up to check k/2 (the baseline at first) + `rssSlackMiB` (default 64).
 *     RSS also counts what the process legitimately grows to a plateau (V8's
 *     new-space semispaces expanding to --max-semi-space-size in each
 *     isolate, committed free old space, malloc arenas): the NVMe fuzzer,
 *     seed 4243, stopped at case 600,000 on the old "baseline + 64 MiB"
 *     bound with RSS 181 MiB against 116 + 64, flat since ~250k, while each
 *     isolate's live heap stayed flat. A leak of any rate still fails, once
 *     the run is long enough for half its growth to exceed the slack.
 * Exit status 1 on a failure. Thread: main.
 */
import { ChainFuzzer } from './chains';
import type { Fuzzer } from './fuzzer';
import { JsonRpcFuzzer } from './jsonrpc';
import { PackedChainFuzzer } from './packed';
import { NvmeFuzzer, VfioUserFuzzer } from './nvme';
import { Rng } from './rng';
import { ScsiFuzzer } from './scsi';
import { FuzzFailure, FuzzTarget, heapText, isolateName, recordHeap, type ControllerInfo, type HeapTrack } from './target';
import { VhostUserFuzzer } from './vhost-user';

export const FUZZERS: Record<string, () => Fuzzer> = {
  'vhost-user': () => new VhostUserFuzzer(),
  chains: () => new ChainFuzzer(),
  packed: () => new PackedChainFuzzer(),
  jsonrpc: () => new JsonRpcFuzzer(),
  scsi: () => new ScsiFuzzer(),
  nvme: () => new NvmeFuzzer(),
  'vfio-user': () => new VfioUserFuzzer(),
};

export interface FuzzOptions {
  /** Stop each fuzzer after this many cases (default: unlimited, then `minutes` must be set). */
  cases?: number;
  minutes?: number;
  seed: number;
  from?: number;
  only?: string[];
  rssSlackMiB?: number;
  /** Allowed growth of each isolate's live V8 heap over its baseline (default 32 MiB). */
  heapSlackMiB?: number;
  /** The target's --poll-mode (default adaptive: an idle target does not take a core from the fuzzer). */
  pollMode?: 'poll' | 'adaptive';
  /** Test hook: change each fuzzer before setup. */
  prepare?: (f: Fuzzer) => void;
  /** Progress lines (default: stdout). */
  say?: (line: string) => void;
}

export interface FuzzResult {
  fuzzer: string;
  cases: number;
  checks: number;
  seconds: number;
  counters: Record<string, number>;
  fds: { base: number; last: number };
  rssMiB: { base: number; max: number; last: number };
  /** RSS at each check (MiB), thinned to at most 24 points: the curve. */
  rssCurveMiB: number[];
  /** Each isolate's live V8 heap (MiB after a full GC): at the baseline, the most seen, the last. */
  heapMiB: { tid: number; base: number; max: number; last: number }[];
  rpcMaxMs: number;
}

const WARMUP_CASES = 200;

async function runOne(name: string, opts: FuzzOptions): Promise<FuzzResult> {
  const say = opts.say ?? ((l: string) => process.stdout.write(l + '\n'));
  const fuzzer = FUZZERS[name]();
  opts.prepare?.(fuzzer);
  const target = await FuzzTarget.start({ extraArgs: ['--poll-mode', opts.pollMode ?? 'adaptive'], heapProbe: true });
  const t0 = Date.now();
  let caseNo = opts.from ?? 0;
  const end = opts.cases !== undefined ? caseNo + opts.cases : Infinity;
  const deadline = opts.minutes !== undefined ? t0 + opts.minutes * 60_000 : Infinity;
  const slack = (opts.rssSlackMiB ?? 64) * 1024;
  const heapSlack = (opts.heapSlackMiB ?? 32) * 1024;
  /** RSS (KiB) at the baseline and at each check after it. */
  const rssAt: number[] = [];
  const heap = new Map<number, HeapTrack>();
  let checks = 0;
  let rpcMaxMs = 0;
  let base = { fds: 0, rssKiB: 0 };
  let maxRss = 0;
  let live: ControllerInfo;
  const fail = (what: string, at = caseNo): FuzzFailure => new FuzzFailure(name, opts.seed, fuzzer.replayStart(at), at, `case ${at}: ${what}`);
  const check = async (): Promise<void> => {
    await fuzzer.quiesce();
    if (!target.alive()) throw fail(`vhostd died: ${JSON.stringify(target.h.daemon.exit)}\n${target.log().slice(-3000)}`);
    try {
      await fuzzer.check();
      await target.verifiedIo(live);
      const ms = await target.rpcPing();
      if (ms > rpcMaxMs) rpcMaxMs = ms;
    } catch (e) {
      if (e instanceof FuzzFailure) throw e;
      throw fail(`liveness: ${(e as Error).message}\n${target.log().slice(-3000)}`);
    }
    const s = await target.settleFds(base.fds);
    if (base.fds > 0 && s.fds > base.fds) throw fail(`${s.fds - base.fds} more fds open than the baseline ${base.fds}`);
    if (s.rssKiB > maxRss) maxRss = s.rssKiB;
    // Checked against the baseline once it is taken (after warm-up).
    const over = recordHeap(heap, (await target.heapProbe()) ?? [], base.rssKiB > 0 ? heapSlack : Infinity);
    if (over !== null) {
      throw fail(`the live V8 heap of ${isolateName(over.tid)} is ${(over.usedKiB / 1024).toFixed(1)} MiB after a full GC, baseline ${((heap.get(over.tid) as HeapTrack).base / 1024).toFixed(1)} MiB + ${heapSlack / 1024} MiB slack`);
    }
    if (base.rssKiB > 0) {
      rssAt.push(s.rssKiB);
      const growing = rssStillGrowing(rssAt, slack);
      if (growing !== null) throw fail(`${growing} (baseline ${(base.rssKiB / 1024).toFixed(0)} MiB; curve ${curve(rssAt).join(' ')})`);
    }
    checks++;
  };
  let lastSay = Date.now();
  try {
    live = await target.createBlk('fz.live', 4096);
    await fuzzer.setup(target);
    // Warm up, so lazily created per-core state is part of the baseline.
    const warmRng = new Rng(opts.seed ^ 0x5a5a5a5a);
    for (let i = 0; i < Math.min(WARMUP_CASES, end - caseNo); i++) {
      try {
        await fuzzer.runCase(Rng.forCase(warmRng.u32(), i), -1 - i);
      } catch (e) {
        throw new FuzzFailure(name, opts.seed, caseNo, caseNo, `warm-up case ${i}: ${(e as Error).message}`);
      }
    }
    await check();
    await new Promise((r) => setTimeout(r, 300));
    const s = target.stats();
    base = { fds: s.fds, rssKiB: s.rssKiB };
    maxRss = s.rssKiB;
    rssAt.push(s.rssKiB);
    heap.clear();
    recordHeap(heap, (await target.heapProbe()) ?? [], Infinity);
    say(`fuzz ${name}: seed ${opts.seed}, from case ${caseNo}, baseline fds ${base.fds}, RSS ${(base.rssKiB / 1024).toFixed(1)} MiB, live V8 heap ${heapText(heap, 'base')}`);
    let sinceCheck = 0;
    while (caseNo < end && Date.now() < deadline) {
      try {
        await fuzzer.runCase(Rng.forCase(opts.seed, caseNo), caseNo);
      } catch (e) {
        if (e instanceof FuzzFailure) throw e;
        throw fail((e as Error).stack ?? String(e));
      }
      caseNo++;
      if (++sinceCheck >= fuzzer.checkEvery) {
        sinceCheck = 0;
        await check();
      }
      if (Date.now() - lastSay > 10_000) {
        lastSay = Date.now();
        const st = target.stats();
        say(`fuzz ${name}: ${caseNo} cases, ${checks} checks, fds ${st.fds}, RSS ${(st.rssKiB / 1024).toFixed(1)} MiB, live V8 heap at the last check ${heapText(heap, 'last')}, ${JSON.stringify(fuzzer.counters())}`);
      }
    }
    await check();
    const last = target.stats();
    const r: FuzzResult = {
      fuzzer: name,
      cases: caseNo - (opts.from ?? 0),
      checks,
      seconds: (Date.now() - t0) / 1000,
      counters: fuzzer.counters(),
      fds: { base: base.fds, last: last.fds },
      rssMiB: { base: base.rssKiB / 1024, max: maxRss / 1024, last: last.rssKiB / 1024 },
      rssCurveMiB: curve(rssAt),
      heapMiB: [...heap].map(([tid, h]) => ({ tid, base: h.base / 1024, max: h.max / 1024, last: h.last / 1024 })),
      rpcMaxMs,
    };
    say(`fuzz ${name}: done, ${JSON.stringify(r)}`);
    return r;
  } finally {
    fuzzer.dispose();
    await target.stop();
  }
}

/**
 * The RSS bound: `rssAt[0]` is the baseline, `rssAt[k]` the RSS at check k.
 * The last check may exceed the largest RSS up to check ⌊k/2⌋ by at most
 * `slackKiB`: a plateau passes however high it is reached early, a leak of
 * any rate fails once half its growth exceeds the slack. Null when within,
 * else what is wrong.
 */
export function rssStillGrowing(rssAt: readonly number[], slackKiB: number): string | null {
  const k = rssAt.length - 1;
  if (k < 1) return null;
  const half = Math.floor(k / 2);
  const ref = Math.max(...rssAt.slice(0, half + 1));
  if (rssAt[k] <= ref + slackKiB) return null;
  return `RSS ${(rssAt[k] / 1024).toFixed(0)} MiB at check ${k}, still growing: the most up to check ${half} was ${(ref / 1024).toFixed(0)} MiB + ${slackKiB / 1024} MiB slack`;
}

/** RSS values (KiB) thinned to at most 24 points, in MiB. */
function curve(kib: number[]): number[] {
  const step = Math.max(1, Math.ceil(kib.length / 24));
  const out: number[] = [];
  for (let i = 0; i < kib.length; i += step) out.push(Math.round(kib[i] / 1024));
  if ((kib.length - 1) % step !== 0) out.push(Math.round(kib[kib.length - 1] / 1024));
  return out;
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzResult[]> {
  const names = opts.only ?? Object.keys(FUZZERS);
  (opts.say ?? ((l: string) => process.stdout.write(l + '\n')))(`fuzz: seed ${opts.seed}, ${opts.cases !== undefined ? `${opts.cases} cases` : ''}${opts.cases !== undefined && opts.minutes !== undefined ? ' or ' : ''}${opts.minutes !== undefined ? `${opts.minutes} min` : ''} per fuzzer: ${names.join(', ')}`);
  for (const n of names) if (!FUZZERS[n]) throw new Error(`unknown fuzzer ${n} (have: ${Object.keys(FUZZERS).join(', ')})`);
  if (opts.cases === undefined && opts.minutes === undefined) throw new Error('give --cases or --minutes');
  const out: FuzzResult[] = [];
  for (const n of names) out.push(await runOne(n, opts));
  return out;
}

function parseArgs(argv: string[]): FuzzOptions {
  const o: FuzzOptions = { seed: Date.now() >>> 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[++i];
    if (v === undefined) throw new Error(`${a} needs a value`);
    const num = (): number => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new Error(`${a} needs a non-negative number`);
      return n;
    };
    switch (a) {
      case '--minutes': o.minutes = num(); break;
      case '--cases': o.cases = num(); break;
      case '--seed': o.seed = num() >>> 0; break;
      case '--from': o.from = num(); break;
      case '--only': o.only = v.split(','); break;
      case '--rss-slack-mib': o.rssSlackMiB = num(); break;
      case '--heap-slack-mib': o.heapSlackMiB = num(); break;
      case '--poll-mode':
        if (v !== 'poll' && v !== 'adaptive') throw new Error('--poll-mode is poll or adaptive');
        o.pollMode = v;
        break;
      default: throw new Error(`unknown option ${a}`);
    }
  }
  return o;
}

if (require.main === module) {
  let opts: FuzzOptions;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`fuzz: ${(e as Error).message}\n`);
    process.exit(2);
  }
  runFuzz(opts).then(
    (rs) => {
      for (const r of rs) process.stdout.write(`${r.fuzzer}: ${r.cases} cases in ${r.seconds.toFixed(0)} s, ${r.checks} liveness checks, fds ${r.fds.base} → ${r.fds.last}, RSS ${r.rssMiB.base.toFixed(1)} → max ${r.rssMiB.max.toFixed(1)} MiB (curve ${r.rssCurveMiB.join(' ')}), live V8 heap ${r.heapMiB.map((h) => `${h.tid === 0 ? 'main' : `t${h.tid}`} ${h.base.toFixed(1)} → max ${h.max.toFixed(1)}`).join(', ')} MiB, RPC ≤ ${r.rpcMaxMs.toFixed(1)} ms\n`);
    },
    (e) => {
      process.stderr.write(`fuzz: FAILED: ${(e as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
