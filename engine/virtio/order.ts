/**
 * Memory ordering between the device's stores to a ring and its reads of
 * the driver's event suppression words, for the interrupt decision
 * (virtio 1.2 §2.7.10, §2.8.10; the same race as the driver's
 * enable-then-recheck): the used index (split) or the batch's first flags
 * (packed) must be visible before the device reads used_event / the driver
 * area, or a driver that asked for an interrupt just then sleeps and gets
 * none. A seq_cst Atomics.store of the index gives that order, at the price
 * of a full barrier in every publish: on x86-64 an `xchg` that waits until
 * the index store — and the used entries and status bytes before it — own
 * their cache lines, which a driver polling on another core holds: ~230 ns
 * per publish measured at QD1 (vhostd-perf, null bdev), a quarter of the
 * engine's busy time per request.
 *
 * On x86-64 a plain store is already a release store (TSO: stores become
 * visible in program order, and V8 emits typed-array stores in program
 * order), so the index can be published without the barrier; the read that
 * follows is then only a hint (plain loads: a stale value costs at most an
 * interrupt too many or a settle), and the decision it cannot make — "no
 * interrupt" — is settled later with a barrier of its own (fullFence), by
 * which time the stores have drained and it costs little (Virtqueue.settle).
 * Elsewhere (arm64: stlr then ldar are ordered) the seq_cst store and the
 * load after it decide at once, as before.
 */

/** A plain typed-array store publishes (x86-64); false: publish with Atomics.store and decide at once. */
export const PLAIN_STORE_RELEASES = process.arch === 'x64';

/** The word fullFence() exchanges: this thread's own, never shared, so the exchange contends with nobody. */
const FENCE_WORD = new Int32Array(1);

/**
 * A full barrier (store→load included): an atomic read-modify-write of a
 * private word, V8's `xchg` on x86-64 as DPDK's `lock addl` on the stack
 * before its own interrupt decision (rte_vhost_vring_call).
 */
export function fullFence(): void {
  Atomics.exchange(FENCE_WORD, 0, 0);
}

/**
 * The interrupt decision after each publish, for a ring layout (split.ts,
 * packed.ts) that supplies the driver's answer (wantsInterrupt) and its
 * used position: final when the store before it was seq_cst or the answer
 * is "interrupt"; else the queue is `unsettled` until settle().
 */
export abstract class InterruptDecision {
  /** The device's next used position (split: the 16-bit used idx; packed: the slot). */
  abstract usedIdx: number;
  /** The used position at the previous decision (vhost's signalled_used). */
  protected signalledUsed = 0;
  /** False until the first decision: the first one always signals. */
  protected signalledValid = false;
  /** Used entries (split) or slots (packed) since the previous decision: more than one publish while undecided. */
  protected sinceDecision = 0;
  /**
   * Entries (split, 2^15) or slots (packed, a ring's worth) the decision's
   * index arithmetic can span: wantsInterrupt() answers "interrupt" past it.
   * A publish that leaves half of it or more undecided settles at once
   * instead (a barrier, then the decision): a queue that keeps publishing
   * may never be quiet long enough for the device to settle it.
   */
  protected abstract readonly decidableSpan: number;
  /** A publish's "no interrupt" was read without a barrier after the store: settle() decides. */
  private undecided = false;

  /**
   * Whether the driver's words, as read now, ask for an interrupt for what
   * was used since the previous decision. `hint`: the read right after a
   * plain store (decideAfterStore on x86-64), whose "no" is settled later
   * anyway: plain loads will do (an Atomics.load is a builtin call on Node
   * 20, ~15-20 ns); else Atomics.load, as the decision is final.
   */
  protected abstract wantsInterrupt(hint: boolean): boolean;

  /** A publish() said "no interrupt" without a barrier: settle() must decide, soon. */
  get unsettled(): boolean {
    return this.undecided;
  }

  /** Decide an unsettled publish: a full barrier, then the driver's words. True when the driver wants an interrupt. */
  settle(): boolean {
    if (!this.undecided) return false;
    fullFence();
    return this.decide();
  }

  /** The decision right after a publish's store (see the file comment). */
  protected decideAfterStore(): boolean {
    if (!PLAIN_STORE_RELEASES) return this.decide();
    if (this.wantsInterrupt(true)) {
      this.decided();
      return true;
    }
    if (this.sinceDecision >= this.decidableSpan >> 1) {
      fullFence();
      return this.decide();
    }
    this.undecided = true;
    return false;
  }

  private decide(): boolean {
    const wants = this.wantsInterrupt(false);
    this.decided();
    return wants;
  }

  private decided(): void {
    this.signalledUsed = this.usedIdx;
    this.signalledValid = true;
    this.sinceDecision = 0;
    this.undecided = false;
  }
}
