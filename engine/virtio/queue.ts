/**
 * What the device core needs of a virtqueue, whatever its ring layout
 * (split now, virtio 1.2 §2.7; packed next, §2.8): take buffers the driver
 * made available, walk their descriptors, give them back as used, publish
 * once per batch and decide on interrupts, switch kicks on and off, say
 * where the ring stands (RingPos) and follow a new guest memory mapping.
 *
 * In-flight tracking (vhost-user INFLIGHT_SHMFD, issue #10) hooks in here:
 * a queue with a tracker tells it of every head it pops (before the device
 * sees the request), every head it pushes, and each batch before and after
 * it publishes it, so the tracker's record always covers the requests the
 * driver gave and has not got back.
 *
 * Thread: the engine worker that owns the device.
 */
import type { RingPos } from '../control';
import type { GuestMemory } from '../memory';
import type { ChainError, DescChain } from './chain';

/** One queue's in-flight hooks: told of every request between pop and push (the in-flight region's writer). */
export interface InflightTracker {
  /** `head` was taken from the available ring. */
  popped(head: number): void;
  /** `head` was put in the used ring (not yet published). */
  pushed(head: number): void;
  /** The used entries pushed so far are about to be made visible (before the used idx store). */
  publishing?(): void;
  /** The used entries pushed so far are now visible to the driver. */
  published(): void;
  /**
   * The queue (of `size` descriptors) (re)starts on the record: repair it
   * against the used ring's idx and say which heads are still in flight,
   * oldest first, and where the ring resumes (engine/virtio/inflight.ts).
   * Throws QueueSetupError when the record cannot be for this queue.
   */
  resume?(size: number, ringUsedIdx: number, startAvailIdx: number): { heads: number[]; usedIdx: number; availIdx: number };
}

/** A device's in-flight record: each queue's hooks (split rings; packed rings keep their own, inflight-packed.ts). */
export interface InflightTrackers {
  /** Queue `index`'s hooks, for a queue that starts (throws QueueSetupError when the record has no such queue). */
  queue(index: number): InflightTracker;
}

export interface Virtqueue {
  readonly index: number;
  readonly size: number;
  /** Set when the driver broke the ring protocol; the queue is no longer read. */
  readonly broken: string | null;
  /** In-flight hooks, or null. */
  tracker: InflightTracker | null;
  /** How many buffers the driver has made available and pop() has not taken (0 once broken). */
  available(): number;
  /** Take the next available buffer's id (after available() said there is one); -1 and broken when it is out of range. */
  pop(): number;
  /** Walk the descriptors of `head` into `out` (one pass, tail included: see DescChain). */
  walk(head: number, out: DescChain): ChainError;
  /** Give `head` back as used with `len` bytes written (visible after flush() or publish()). */
  push(head: number, len: number): void;
  /** Used entries pushed and not yet visible to the driver. */
  readonly unflushed: number;
  /** Make the pushed entries visible to the driver now (one index or flags store), leaving the interrupt decision to publish(). */
  flush(): void;
  /** Used entries pushed since the last publish() (visible or not). */
  readonly pending: number;
  /**
   * Make the pushed entries visible; true when the driver wants an interrupt
   * for those pushed since the last decision. A false may leave the decision
   * unsettled (order.ts: read without a barrier after the store).
   */
  publish(): boolean;
  /** A publish() said "no interrupt" without a barrier: settle() must decide, soon. */
  readonly unsettled: boolean;
  /** Decide an unsettled publish (a full barrier, then the driver's words): true when the driver wants an interrupt. */
  settle(): boolean;
  /**
   * Ask for kicks (true) or suppress them (false). Asking is followed by a
   * re-check of available() (a buffer added before the driver saw the
   * request sends no kick): setNotification(true) orders that re-check's
   * loads after its store.
   */
  setNotification(enabled: boolean): void;
  /** Where the ring stands now (GET_VRING_BASE's answer once nothing is in flight). */
  position(): RingPos;
  /**
   * The queue starts under an in-flight tracker with resume(): take the
   * ring position from the record and run its in-flight heads again, before
   * any new one. Returns how many heads will be resubmitted.
   */
  resumeInflight?(): number;
  /** The guest memory was remapped (memUpdate): rebuild the ring views, keep the positions. Throws QueueSetupError if the rings are no longer mapped. */
  remap(mem: GuestMemory): void;
}

/**
 * Buffers a queue runs again after resuming on an in-flight record (head
 * indexes for split rings, buffer ids for packed ones), handed out oldest
 * first before anything new is taken from the ring. `left` is read on every
 * pop: one field, no call.
 */
export class Resubmits {
  /** How many are still to hand out. */
  left = 0;
  private list: number[] = [];
  private at = 0;

  /** Replace what is pending with `list` (oldest first; kept, not copied). */
  reset(list: number[]): void {
    this.list = list;
    this.at = 0;
    this.left = list.length;
  }

  /** The next one (only when left > 0); the list is dropped after the last. */
  take(): number {
    const again = this.list[this.at++];
    if (--this.left === 0) this.reset([]);
    return again;
  }
}
