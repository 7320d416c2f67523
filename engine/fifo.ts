/**
 * A first-in first-out queue on a ring that doubles when full and never
 * shrinks, so a steady state allocates nothing: the waiting lists of the bdev
 * layer and its modules (completions, QoS, I/Os waiting for ring slots).
 * Thread: whichever owns it (engine worker).
 */
export class Fifo<T> {
  private ring: (T | undefined)[];
  private head = 0;
  private count = 0;

  constructor(initialCapacity = 64) {
    this.ring = new Array<T | undefined>(Math.max(1, initialCapacity)).fill(undefined);
  }

  get length(): number {
    return this.count;
  }

  push(item: T): void {
    if (this.count === this.ring.length) this.grow();
    // head + count < 2 * length: a compare instead of an integer division (two per I/O on the bdev path).
    let i = this.head + this.count;
    if (i >= this.ring.length) i -= this.ring.length;
    this.ring[i] = item;
    this.count++;
  }

  /** The oldest item (the queue must not be empty). */
  peek(): T {
    return this.ring[this.head] as T;
  }

  /** Remove and return the oldest item (the queue must not be empty). */
  shift(): T {
    const item = this.ring[this.head] as T;
    this.ring[this.head] = undefined;
    const next = this.head + 1;
    this.head = next === this.ring.length ? 0 : next;
    this.count--;
    return item;
  }

  /**
   * Remove the items `pick` selects, in order, handing each to `take`; the
   * others keep their order.
   */
  removeWhere(pick: (item: T) => boolean, take: (item: T) => void): number {
    const len = this.ring.length;
    let kept = 0;
    let removed = 0;
    for (let i = 0; i < this.count; i++) {
      const item = this.ring[(this.head + i) % len] as T;
      if (pick(item)) {
        removed++;
        take(item);
      } else {
        this.ring[(this.head + kept) % len] = item;
        kept++;
      }
    }
    for (let i = kept; i < this.count; i++) this.ring[(this.head + i) % len] = undefined;
    this.count = kept;
    return removed;
  }

  private grow(): void {
    const old = this.ring;
    const ring = new Array<T | undefined>(old.length * 2).fill(undefined);
    for (let i = 0; i < this.count; i++) ring[i] = old[(this.head + i) % old.length];
    this.ring = ring;
    this.head = 0;
  }
}
