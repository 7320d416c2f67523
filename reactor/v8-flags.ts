/**
 * The V8 flags vhostd runs with (two heap flags, one compiler flag), and
 * the re-exec that applies them.
 *
 * `--max-semi-space-size=1` keeps every isolate's young generation at two
 * 1 MiB semi-spaces instead of letting it grow to 2 x 16 MiB apiece. With the
 * default, the main thread's and each engine worker's new space came and went
 * by up to 32 MiB with control-plane churn: an hour of connect/disconnect
 * cycles moved RSS between 133 and 225 MiB while the live heap stayed at
 * 17 MiB (issue #15's soak). The I/O path allocates next to nothing (26
 * scavenges in 2.5 M requests, all at start-up), so it pays nothing for it.
 *
 * `--heap-growing-percent=30` lets the old generation grow to 1.3 x what
 * survived the last full GC before the next one (V8 picks 1.1-4 x by GC
 * speed): the main thread's old space went between 19 and 46 MiB with 11 MiB
 * live, the rest of the soak's swing (RSS ±20.8 MB over an hour with the
 * first flag alone). In an 8-minute soak run beside one without it: RSS
 * ±3.3 against ±14.3 MB, main-thread CPU per connect cycle 1.59 against
 * 1.56 ms; micro.js does no full GC at all either way.
 *
 * `--max-inlined-bytecode-size-cumulative=3000` (V8's default 920) lets
 * TurboFan inline the whole request path into the poll loop: bytecode
 * inlined into one optimized function stops at that sum, and the device's
 * poll (walk, parse, submit, complete, publish) is past it. CPU per request
 * of the engine alone (`taskset -c 1 node [flag] dist/bench/micro.js
 * --requests 1500000 --per-iter 32 [...]`, median of 5 alternating rounds):
 * blk 160.8 → 152.3 ns, blk with in-flight tracking 178.2 → 167.1, scsi
 * 178.3 → 169.7, packed 196.4 → 194.7, malloc 512 MiB 801.6 → 774.2.
 *
 * A running isolate's heap limits are fixed when it is created, so the heap
 * flags must be on node's command line; the compiler flag goes the same way
 * (one mechanism, in force before any code is compiled).
 * `execWithV8Flags` re-executes the same node (execve: same pid, fds and
 * environment) with the missing ones added. One already there (on the command line or, for the first, in
 * NODE_OPTIONS, which refuses the other two) is left as the operator gave it.
 * Engine workers inherit the process's flags.
 * Thread: main, before anything else runs.
 */
import { native } from '../bindings';

export const V8_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--heap-growing-percent=30', '--max-inlined-bytecode-size-cumulative=3000'];

/** The flags of V8_FLAGS that neither `execArgv` nor `nodeOptions` sets (by name, any value). */
export function missingV8Flags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const given = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)].map((a) => a.split('=')[0]!.replace(/_/g, '-'));
  return V8_FLAGS.filter((f) => !given.includes(f.split('=')[0]!));
}

/**
 * Re-execute `script` with `args` under this node plus the missing V8
 * flags; returns (having done nothing) when none is missing. Returns the
 * error text when execve failed: vhostd then runs with V8's defaults.
 */
export function execWithV8Flags(script: string, args: readonly string[]): string | null {
  const missing = missingV8Flags(process.execArgv, process.env.NODE_OPTIONS);
  if (missing.length === 0) return null;
  const env = Object.entries(process.env).map(([k, v]) => `${k}=${v ?? ''}`);
  try {
    native.execve(process.execPath, [process.argv0, ...missing, ...process.execArgv, script, ...args], env);
  } catch (err) {
    return (err as Error).message;
  }
  return null;
}
