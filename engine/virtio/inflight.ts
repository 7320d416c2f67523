/**
 * The shared in-flight region of vhost-user's INFLIGHT_SHMFD for split rings
 * (docs/interop/vhost-user.rst, "Inflight I/O tracking"), in the layout QEMU
 * keeps for the back-end across reconnects (the same one libvhost-user and
 * DPDK use):
 *
 *   per queue, at index * inflightQueueBytes(queue_size):
 *     le64 features        @0   (0)
 *     le16 version         @8   (1; 0 = never initialised)
 *     le16 desc_num        @10  (the queue size the region was laid out for)
 *     le16 last_batch_head @12  (head of the list of the last used batch)
 *     le16 used_idx        @14  (the used ring's idx once the batch is settled)
 *     desc[desc_num]       @16, 16 bytes each:
 *       u8 inflight @0, u8 padding[5], le16 next @6, le64 counter @8
 *
 * What the device does with it (the spec's steps, the push step done once
 * per batch just before the used idx store: only the batch's own links are
 * ever followed, so nothing needs them earlier):
 *   pop head i:     desc[i].counter = counter++, desc[i].inflight = 1
 *   publishing:     for the batch's heads h0..hn: desc[hk].next = h(k-1), last_batch_head = hn
 *   publish batch:  (used ring idx stored) each pushed desc.inflight = 0, used_idx = used ring idx
 *   reconnect:      used_idx != used ring idx → the last batch was published but not
 *                   cleared: clear (idx - used_idx) entries of the batch list, set used_idx;
 *                   then resubmit every desc with inflight = 1 in counter order.
 *
 * The region is a MAP_SHARED memfd: stores survive the process (kill -9
 * included), which is the point. A region written by someone else is input
 * like any other: a wrong version, desc_num, head or batch is refused
 * (QueueSetupError), never followed outside the region.
 *
 * Thread: the engine worker that owns the device.
 */
import { QueueSetupError } from './split';
import type { InflightTracker, InflightTrackers } from './queue';

export const INFLIGHT_VERSION = 1;
/** Bytes of a queue region's header (features, version, desc_num, last_batch_head, used_idx). */
export const INFLIGHT_HEADER_BYTES = 16;
/** Bytes of one descriptor's state. */
export const INFLIGHT_DESC_BYTES = 16;
/** Each queue region starts on a 64-byte boundary (INFLIGHT_ALIGNMENT in libvhost-user and DPDK). */
export const INFLIGHT_ALIGN = 64;

const OFF_VERSION = 8;
const OFF_DESC_NUM = 10;
const OFF_LAST_BATCH_HEAD = 12;
const OFF_USED_IDX = 14;
const D_INFLIGHT = 0;
const D_NEXT = 6;
const D_COUNTER = 8;
const TWO32 = 2 ** 32;

/** Bytes of one queue's region for queues of `queueSize` descriptors. */
export function inflightQueueBytes(queueSize: number): number {
  return alignInflight(INFLIGHT_HEADER_BYTES + INFLIGHT_DESC_BYTES * queueSize);
}

/** `raw` bytes rounded up to a whole number of INFLIGHT_ALIGN blocks (a queue region's size, split or packed). */
export function alignInflight(raw: number): number {
  return Math.ceil(raw / INFLIGHT_ALIGN) * INFLIGHT_ALIGN;
}

/** A region as 32-, 16- and 8-bit elements (host order = little-endian, as the layout). */
export interface InflightViews {
  words: Uint32Array;
  halves: Uint16Array;
  bytes: Uint8Array;
}

/**
 * A region's shape, split or packed (`what` names it in errors): queues of
 * 1..32768 descriptors, at least one queue, `view` large enough for
 * `numQueues` regions of `perQueue` bytes and 4-byte aligned (a mapping or a
 * buffer start). Returns the region's element views; throws QueueSetupError.
 */
export function inflightRegionViews(what: string, view: DataView, numQueues: number, queueSize: number, perQueue: number): InflightViews {
  if (!Number.isInteger(queueSize) || queueSize < 1 || queueSize > 32768) {
    throw new QueueSetupError(`${what}: queue size ${queueSize} is not in 1..32768`);
  }
  if (!Number.isInteger(numQueues) || numQueues < 1) throw new QueueSetupError(`${what}: ${numQueues} queues`);
  if (view.byteLength < numQueues * perQueue) {
    throw new QueueSetupError(`${what} holds ${view.byteLength} bytes, ${numQueues} queues of ${queueSize} need ${numQueues * perQueue}`);
  }
  if (view.byteOffset % 4 !== 0) throw new QueueSetupError(`${what}: not 4-byte aligned`);
  return {
    words: new Uint32Array(view.buffer, view.byteOffset, Math.floor(view.byteLength / 4)),
    halves: new Uint16Array(view.buffer, view.byteOffset, Math.floor(view.byteLength / 2)),
    bytes: new Uint8Array(view.buffer, view.byteOffset, view.byteLength),
  };
}

/** resume()'s first checks: queue `queue` of `size` descriptors fits a region of `numQueues` queues of `queueSize`. */
export function checkInflightQueue(queue: number, size: number, numQueues: number, queueSize: number): void {
  if (!Number.isInteger(queue) || queue < 0 || queue >= numQueues) {
    throw new QueueSetupError(`queue ${queue}: the in-flight region covers ${numQueues} queues`);
  }
  if (size > queueSize) {
    throw new QueueSetupError(`queue ${queue}: size ${size} is larger than the in-flight region's queue size ${queueSize}`);
  }
}

/**
 * The header of queue `queue`'s region at `base` (version @8 and desc_num
 * @10 in both layouts): false when it was never used (version 0), true when
 * it is in use and laid out for `descNum` descriptors; QueueSetupError else.
 */
export function inflightInUse(v: DataView, base: number, queue: number, descNum: number): boolean {
  const version = v.getUint16(base + OFF_VERSION, true);
  if (version === 0) return false;
  if (version !== INFLIGHT_VERSION) {
    throw new QueueSetupError(`queue ${queue}: in-flight region version ${version}, expected ${INFLIGHT_VERSION}`);
  }
  const found = v.getUint16(base + OFF_DESC_NUM, true);
  if (found !== descNum) throw new QueueSetupError(`queue ${queue}: in-flight region laid out for ${found} descriptors, expected ${descNum}`);
  return true;
}

/** Queue region at `base` is laid out (its other header words written): desc_num, then version 1 last. */
export function setInflightInUse(v: DataView, base: number, descNum: number): void {
  v.setUint16(base + OFF_DESC_NUM, descNum, true);
  v.setUint16(base + OFF_VERSION, INFLIGHT_VERSION, true);
}

/** The le64 counter at byte `at` (both layouts keep it at desc + 8). */
export function readInflightCounter(v: DataView, at: number): number {
  return v.getUint32(at + 4, true) * TWO32 + v.getUint32(at, true);
}

/** Bytes of a whole region: `numQueues` queue regions. */
export function inflightRegionBytes(numQueues: number, queueSize: number): number {
  return numQueues * inflightQueueBytes(queueSize);
}

/** What a queue does when it (re)starts on a region. */
export interface InflightResume {
  /** Heads to run again, oldest first (in the order the driver made them available). */
  heads: number[];
  /** The used ring's next index (= the ring's idx). */
  usedIdx: number;
  /** The next avail ring entry to take: usedIdx + heads.length. */
  availIdx: number;
}

/**
 * A queue's next le64 counter value (only its order matters) as small
 * integers in fields, so the hot path stores it without floating-point
 * arithmetic or a heap number: the value is ctrHigh · 2^30 + ctrLow with
 * ctrLow < 2^30; its low word is ctrLow | ctrLowBits (bits 30-31), its high
 * word ctrHighWord. storeCounter() writes both words and advances.
 */
export class InflightCounter {
  protected ctrLow = 0;
  protected ctrLowBits = 0;
  protected ctrHighWord = 0;
  private ctrHigh = 0;

  /** Set the next counter value (a safe integer, below 2^53). */
  setCounter(counter: number): void {
    const high = Math.floor(counter / 2 ** 30);
    this.ctrLow = counter - high * 2 ** 30;
    this.ctrHigh = high;
    this.ctrLowBits = (high % 4) << 30;
    this.ctrHighWord = Math.floor(high / 4);
  }

  /** The next counter value. */
  get counter(): number {
    return this.ctrHigh * 2 ** 30 + this.ctrLow;
  }

  /**
   * Store the next value in `w` at words `at` (low) and `at + 1` (high), and
   * advance.
   */
  protected storeCounter(w: Uint32Array, at: number): void {
    const lo = this.ctrLow;
    w[at] = lo | this.ctrLowBits;
    w[(at + 1) | 0] = this.ctrHighWord;
    if (lo === 2 ** 30 - 1) this.setCounter(this.counter + 1);
    else this.ctrLow = (lo + 1) | 0;
  }
}

/**
 * One queue's part of a split region (InflightRegion.queue()): the hooks a
 * SplitQueue calls directly (no per-call lookup of the queue), over the
 * region's shared words with their indices precomputed, and its own
 * bookkeeping beside them.
 */
export class SplitInflightQueue extends InflightCounter implements InflightTracker {
  /** 32-bit word index of desc[0].counter; 16-bit index of desc[0].next; byte index of desc[0].inflight (desc i: +4i, +8i, +16i). */
  private readonly counterWord0: number;
  private readonly nextHalf0: number;
  private readonly flagByte0: number;
  /** 16-bit indices of last_batch_head and used_idx. */
  private readonly lastBatchHalf: number;
  private readonly usedIdxHalf: number;
  /** Heads pushed since the last publish (the batch list's length), and the heads themselves. */
  private batch = 0;
  private readonly batchHeads: Uint16Array;
  /** The region's used_idx mirror (advanced by each published batch). */
  private usedIdx = 0;
  private readonly words: Uint32Array;
  private readonly halves: Uint16Array;
  private readonly bytes: Uint8Array;

  constructor(
    private readonly view: DataView,
    views: InflightViews,
    /** The queue's index, and the byte offset of its region. */
    readonly queue: number,
    private readonly base: number,
    /** desc_num: the queue size the region is laid out for; the queues it covers. */
    private readonly descNum: number,
    private readonly numQueues: number,
  ) {
    super();
    ({ words: this.words, halves: this.halves, bytes: this.bytes } = views);
    this.counterWord0 = (base + INFLIGHT_HEADER_BYTES + D_COUNTER) / 4;
    this.nextHalf0 = (base + INFLIGHT_HEADER_BYTES + D_NEXT) / 2;
    this.flagByte0 = base + INFLIGHT_HEADER_BYTES + D_INFLIGHT;
    this.lastBatchHalf = (base + OFF_LAST_BATCH_HEAD) / 2;
    this.usedIdxHalf = (base + OFF_USED_IDX) / 2;
    this.batchHeads = new Uint16Array(descNum);
  }

  /**
   * The queue (of `size` descriptors, whose used ring holds `ringUsedIdx`)
   * starts: a region never used for it is initialised and the queue resumes
   * at `startAvailIdx` (SET_VRING_BASE); a region in use is repaired (last
   * batch) and tells which heads were in flight. Throws QueueSetupError when
   * the region cannot be for this queue or is inconsistent.
   */
  resume(size: number, ringUsedIdx: number, startAvailIdx: number): InflightResume {
    const queue = this.queue;
    checkInflightQueue(queue, size, this.numQueues, this.descNum);
    const v = this.view;
    const base = this.base;
    const descNum = this.descNum;
    this.batch = 0;
    if (!inflightInUse(v, base, queue, descNum)) {
      // Never used: lay it out (the memfd is zero-filled, so no descriptor is in flight).
      for (let i = 0; i < descNum; i++) v.setUint8(base + INFLIGHT_HEADER_BYTES + INFLIGHT_DESC_BYTES * i + D_INFLIGHT, 0);
      v.setUint16(base + OFF_LAST_BATCH_HEAD, 0, true);
      v.setUint16(base + OFF_USED_IDX, startAvailIdx & 0xffff, true);
      setInflightInUse(v, base, descNum);
      this.usedIdx = startAvailIdx & 0xffff;
      this.setCounter(0);
      return { heads: [], usedIdx: startAvailIdx & 0xffff, availIdx: startAvailIdx & 0xffff };
    }
    // Step 1: a batch published (used idx stored) whose entries were not cleared yet.
    const recorded = v.getUint16(base + OFF_USED_IDX, true);
    const lastBatch = (ringUsedIdx - recorded) & 0xffff;
    if (lastBatch !== 0) {
      if (lastBatch > size) {
        throw new QueueSetupError(
          `queue ${queue}: used ring idx ${ringUsedIdx} is ${lastBatch} entries past the in-flight region's ${recorded}, more than the queue size`,
        );
      }
      let head = v.getUint16(base + OFF_LAST_BATCH_HEAD, true);
      for (let n = 0; n < lastBatch; n++) {
        if (head >= size) throw new QueueSetupError(`queue ${queue}: in-flight batch list holds head ${head} >= queue size ${size}`);
        const d = base + INFLIGHT_HEADER_BYTES + INFLIGHT_DESC_BYTES * head;
        v.setUint8(d + D_INFLIGHT, 0);
        head = v.getUint16(d + D_NEXT, true);
      }
      v.setUint16(base + OFF_USED_IDX, ringUsedIdx, true);
    }
    this.usedIdx = ringUsedIdx;
    // Step 2: what is still in flight, in the order it was taken.
    const found: { head: number; counter: number }[] = [];
    for (let i = 0; i < descNum; i++) {
      const d = base + INFLIGHT_HEADER_BYTES + INFLIGHT_DESC_BYTES * i;
      const flag = v.getUint8(d + D_INFLIGHT);
      if (flag === 0) continue;
      if (flag !== 1) throw new QueueSetupError(`queue ${queue}: in-flight flag of descriptor ${i} is ${flag}`);
      if (i >= size) throw new QueueSetupError(`queue ${queue}: descriptor ${i} is in flight but the queue has ${size}`);
      found.push({ head: i, counter: readInflightCounter(v, d + D_COUNTER) });
    }
    found.sort((a, b) => a.counter - b.counter);
    this.setCounter(found.length > 0 ? found[found.length - 1].counter + 1 : 0);
    return { heads: found.map((f) => f.head), usedIdx: ringUsedIdx, availIdx: (ringUsedIdx + found.length) & 0xffff };
  }

  popped(head: number): void {
    this.storeCounter(this.words, (this.counterWord0 + 4 * head) | 0);
    this.bytes[(this.flagByte0 + 16 * head) | 0] = 1;
  }

  /** Noted only: the batch list is written at publishing(). */
  pushed(head: number): void {
    this.batchHeads[this.batch++] = head;
  }

  /** Before the used idx store: link the batch's heads (each to the one pushed before it) and point last_batch_head at the last. */
  publishing(): void {
    const n = this.batch;
    if (n === 0) return;
    const h16 = this.halves;
    const heads = this.batchHeads;
    const next0 = this.nextHalf0;
    let prev = heads[0];
    for (let k = 1; k < n; k++) {
      const h = heads[k];
      h16[(next0 + 8 * h) | 0] = prev;
      prev = h;
    }
    h16[this.lastBatchHalf] = prev;
  }

  /** After the used idx store: the batch's flags cleared, used_idx advanced. */
  published(): void {
    const n = this.batch;
    if (n === 0) return;
    const bytes = this.bytes;
    const heads = this.batchHeads;
    const flag0 = this.flagByte0;
    // Our own copy of the batch, not the list in shared memory (the front-end could rewrite that).
    for (let k = 0; k < n; k++) bytes[(flag0 + 16 * heads[k]) | 0] = 0;
    const u = (this.usedIdx + n) & 0xffff;
    this.usedIdx = u;
    this.batch = 0;
    this.halves[this.usedIdxHalf] = u;
  }
}

/**
 * A region for `numQueues` queues of up to `queueSize` descriptors over
 * `view` (its first byte is the region's start); queue() gives each queue
 * its part.
 */
export class InflightRegion implements InflightTrackers {
  private readonly perQueue: number;
  private readonly views: InflightViews;

  constructor(
    private readonly view: DataView,
    readonly numQueues: number,
    readonly queueSize: number,
  ) {
    this.perQueue = inflightQueueBytes(queueSize);
    this.views = inflightRegionViews('in-flight region', view, numQueues, queueSize, this.perQueue);
  }

  /** Queue `queue`'s part (resume() it before use); QueueSetupError when the region has no such queue. */
  queue(queue: number): SplitInflightQueue {
    checkInflightQueue(queue, 0, this.numQueues, this.queueSize);
    return new SplitInflightQueue(this.view, this.views, queue, queue * this.perQueue, this.queueSize, this.numQueues);
  }
}
