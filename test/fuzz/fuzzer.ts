/**
 * What the fuzz runner (run.ts) drives: a fuzzer makes and sends cases from a
 * per-case seeded Rng against a FuzzTarget, and says where its hostile
 * connection is so the runner can close it before a liveness check.
 * Thread: the fuzz runner's main thread.
 */
import type { Rng } from './rng';
import type { FuzzTarget } from './target';

export interface Fuzzer {
  readonly name: string;
  /** Create controllers, warm up. Called once per target. */
  setup(target: FuzzTarget): Promise<void>;
  /** Run case `caseNo`; throw (an Error saying what) on a failure the case itself sees. */
  runCase(rng: Rng, caseNo: number): Promise<void>;
  /** Close whatever the cases left open (a liveness check and the fd count follow). */
  quiesce(): Promise<void>;
  /** The fuzzer's own checks after quiesce (e.g. guest memory outside writable buffers unchanged). */
  check(): Promise<void>;
  /** Cases per liveness check. */
  readonly checkEvery: number;
  /** Counters worth printing (e.g. connections opened, closed by the target). */
  counters(): Record<string, number>;
  /** The first case a replay of case `caseNo` must start from (where its connection began). */
  replayStart(caseNo: number): number;
  /** Release what setup made in this process (fds, temp files). */
  dispose(): void;
}
