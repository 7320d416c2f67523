/**
 * Driver side of one split virtqueue (virtio 1.2 section 2.7), laid out in the
 * test front-end's guest memory: descriptor table (16-byte aligned), available
 * ring, used ring (4-byte aligned). It hands out descriptors, publishes chains
 * (direct or through an indirect table, section 2.7.5.3), kicks the kick
 * eventfd and reaps the used ring when the call eventfd fires (or by polling).
 * Each submission resolves with the used element the device returned.
 * Thread: the test's main thread.
 */
import { native, PollEvents } from '../../bindings';
import type { FdWatcher } from '../../bindings';
import type { GuestMemory } from './frontend-memory';
import { Desc, DESC_SIZE } from './frontend-wire';

/** One buffer of a chain, in guest-physical terms. */
export interface Segment {
  gpa: number;
  len: number;
  /** Device-writable (VIRTQ_DESC_F_WRITE). */
  writable: boolean;
}

/**
 * A descriptor written exactly as given (for hostile-input tests). `next` is an
 * index into the list passed to submitRaw (translated to the real slot), or,
 * with `rawNext`, the literal value written to the table.
 */
export interface RawDescriptor {
  addr: bigint;
  len: number;
  flags: number;
  next?: number;
}

export interface UsedElem {
  id: number;
  len: number;
}

export interface QueueOptions {
  /** EVENT_IDX negotiated: keep used_event current so every completion interrupts. */
  eventIdx: boolean;
  /**
   * 'interrupt': reap only when the call eventfd fires (proves the back-end
   * signals); 'poll': also poll the used ring every millisecond.
   */
  completion: 'interrupt' | 'poll';
  /** Per-request deadline. */
  timeoutMs: number;
}

interface SlotWaiter {
  n: number;
  resolve: (slots: number[]) => void;
  reject: (e: Error) => void;
}

interface Pending {
  slots: number[];
  indirect: { gpa: number; size: number } | null;
  resolve: (u: UsedElem) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class SplitQueue {
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  private readonly areaBytes: number;
  readonly kickFd: number;
  callFd: number;
  /** Next free-running avail index the driver will publish. */
  availIdx = 0;
  /** Next free-running used index the driver expects. */
  lastUsedIdx = 0;
  /** Used elements whose id matched no submission (a back-end bug). */
  readonly strayUsed: UsedElem[] = [];
  /** How many times the call eventfd fired. */
  interrupts = 0;
  /** How many times the back-end wrote the call eventfd (the sum of the counter values read). */
  signals = 0;
  private freeSlots: number[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly slotWaiters: SlotWaiter[] = [];
  private watcher: FdWatcher | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly mem: GuestMemory,
    readonly index: number,
    readonly size: number,
    private readonly opts: QueueOptions,
    regionIndex?: number,
  ) {
    if (size < 1 || size > 32768 || (size & (size - 1)) !== 0) throw new Error('queue size must be a power of 2 up to 32768');
    const descBytes = DESC_SIZE * size;
    const availBytes = 6 + 2 * size;
    const usedOff = Math.ceil((descBytes + availBytes) / 4) * 4;
    const usedBytes = 6 + 8 * size;
    this.areaBytes = usedOff + usedBytes;
    const base = mem.alloc(this.areaBytes, 4096, regionIndex);
    mem.bytes(base, this.areaBytes).fill(0);
    this.descGpa = base;
    this.availGpa = base + descBytes;
    this.usedGpa = base + usedOff;
    for (let i = size - 1; i >= 0; i--) this.freeSlots.push(i);
    this.kickFd = native.eventfd(0, 0);
    this.callFd = native.eventfd(0, 0);
    this.watch();
  }

  private watch(): void {
    const w = new native.FdWatcher(this.callFd, (status) => {
      if (status < 0 || this.closed) return;
      this.countSignals(native.eventfdRead(this.callFd));
      this.reap();
    });
    w.start(PollEvents.Readable);
    this.watcher = w;
  }

  /**
   * Switch to a fresh call eventfd (send it with SET_VRING_CALL). The old one
   * stays open and watched until retire() is called once the back-end has
   * processed the switch: a completion signalled on the old fd meanwhile is
   * not lost (QEMU checks the old notifier the same way).
   */
  replaceCallFd(): { fd: number; retire: () => void } {
    const oldWatcher = this.watcher;
    const oldFd = this.callFd;
    this.callFd = native.eventfd(0, 0);
    this.watch();
    return {
      fd: this.callFd,
      retire: () => {
        oldWatcher?.close();
        this.countSignals(native.eventfdRead(oldFd));
        native.close(oldFd);
        this.reap();
      },
    };
  }

  private countSignals(counter: number): void {
    if (counter <= 0) return;
    this.interrupts++;
    this.signals += counter;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  get freeDescriptors(): number {
    return this.freeSlots.length;
  }

  /** Ring addresses as SET_VRING_ADDR carries them (front-end virtual addresses). */
  ringAddresses(): { desc: bigint; avail: bigint; used: bigint } {
    return { desc: this.mem.uva(this.descGpa), avail: this.mem.uva(this.availGpa), used: this.mem.uva(this.usedGpa) };
  }

  /** Publish a normal chain; with `indirect`, through one indirect table. */
  submit(segs: Segment[], indirect = false): Promise<UsedElem> {
    const descs: RawDescriptor[] = segs.map((s, i) => ({
      addr: BigInt(s.gpa),
      len: s.len,
      flags: (s.writable ? Desc.WRITE : 0) | (i + 1 < segs.length ? Desc.NEXT : 0),
      next: i + 1 < segs.length ? i + 1 : 0,
    }));
    return indirect ? this.submitIndirect(descs) : this.submitRaw(descs);
  }

  /** Write `descs` into free slots (next indices translated unless rawNext) and publish descs[0] as head. */
  async submitRaw(descs: RawDescriptor[], rawNext = false): Promise<UsedElem> {
    if (descs.length === 0 || descs.length > this.size) throw new Error(`a chain of ${descs.length} descriptors does not fit a ring of ${this.size}`);
    const slots = await this.takeSlots(descs.length);
    descs.forEach((d, i) => {
      const next = d.next === undefined ? 0 : rawNext ? d.next : slots[d.next];
      this.writeDesc(this.descGpa + slots[i] * DESC_SIZE, d, next);
    });
    return this.publish(slots, null);
  }

  /**
   * Put `descs` in an indirect table (next = index inside the table) and
   * publish one ring descriptor with VIRTQ_DESC_F_INDIRECT pointing at it.
   */
  async submitIndirect(descs: RawDescriptor[], tableLenOverride?: number): Promise<UsedElem> {
    const [slot] = await this.takeSlots(1);
    const size = DESC_SIZE * descs.length;
    const table = this.mem.alloc(size, 16);
    descs.forEach((d, i) => this.writeDesc(table + i * DESC_SIZE, d, d.next ?? 0));
    this.writeDesc(this.descGpa + slot * DESC_SIZE, { addr: BigInt(table), len: tableLenOverride ?? size, flags: Desc.INDIRECT }, 0);
    return this.publish([slot], { gpa: table, size });
  }

  /** `n` free descriptor slots, now or (in request order) once completions free them. */
  private takeSlots(n: number): Promise<number[]> {
    if (this.closed) return Promise.reject(new Error('queue closed'));
    if (this.slotWaiters.length === 0 && this.freeSlots.length >= n) return Promise.resolve(this.popSlots(n));
    return new Promise((resolve, reject) => this.slotWaiters.push({ n, resolve, reject }));
  }

  private popSlots(n: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(this.freeSlots.pop() as number);
    return out;
  }

  private wakeSlotWaiters(): void {
    while (this.slotWaiters.length > 0 && this.freeSlots.length >= this.slotWaiters[0].n) {
      const w = this.slotWaiters.shift() as SlotWaiter;
      w.resolve(this.popSlots(w.n));
    }
  }

  private writeDesc(at: number, d: RawDescriptor, next: number): void {
    this.mem.setU64(at, d.addr);
    this.mem.setU32(at + 8, d.len >>> 0);
    this.mem.setU16(at + 12, d.flags & 0xffff);
    this.mem.setU16(at + 14, next & 0xffff);
  }

  private publish(slots: number[], indirect: Pending['indirect']): Promise<UsedElem> {
    if (this.closed) return Promise.reject(new Error('queue closed'));
    const head = slots[0];
    const p = new Promise<UsedElem>((resolve, reject) => {
      const timer = setTimeout(() => {
        // The slots stay allocated: the device may still own them.
        this.pending.delete(head);
        const used = this.deviceUsedIdx();
        const state = used !== this.lastUsedIdx ? `the device did complete more (used idx ${used}, driver at ${this.lastUsedIdx}) but raised no interrupt` : `used idx ${used}, avail idx ${this.availIdx}`;
        reject(Object.assign(new Error(`queue ${this.index}: request (head ${head}) not completed in ${this.opts.timeoutMs} ms: ${state}`), { code: 'ETIMEDOUT' }));
      }, this.opts.timeoutMs);
      this.pending.set(head, { slots, indirect, resolve, reject, timer });
    });
    // Callers await it; this only keeps an abandoned submission from being an unhandled rejection.
    p.catch(() => undefined);
    // virtio 1.2 2.7.13: ring entry first, then (ordered) the index, then notify.
    this.mem.setU16(this.availGpa + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.mem.atomicStoreU16(this.availGpa + 2, this.availIdx);
    this.kick();
    if (this.opts.completion === 'poll' && !this.pollTimer) {
      this.pollTimer = setInterval(() => this.reap(), 1);
    }
    return p;
  }

  kick(): void {
    if (!this.closed) native.eventfdWrite(this.kickFd, 1);
  }

  /** Consume every new used element. Returns how many were reaped. */
  reap(): number {
    if (this.closed) return 0;
    let n = 0;
    for (;;) {
      const usedIdx = this.mem.atomicLoadU16(this.usedGpa + 2);
      if (usedIdx === this.lastUsedIdx) break;
      while (this.lastUsedIdx !== usedIdx) {
        const at = this.usedGpa + 4 + 8 * (this.lastUsedIdx % this.size);
        const elem = { id: this.mem.u32(at), len: this.mem.u32(at + 4) };
        this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
        n++;
        this.complete(elem);
      }
      // virtio 1.2 2.7.10: publish used_event, then look again — an element
      // pushed while the old used_event was visible may have raised no interrupt.
      if (this.opts.eventIdx) this.mem.atomicStoreU16(this.availGpa + 4 + 2 * this.size, this.lastUsedIdx);
    }
    if (n > 0) this.wakeSlotWaiters();
    if (this.pending.size === 0 && this.pollTimer) {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    }
    return n;
  }

  private complete(elem: UsedElem): void {
    const p = this.pending.get(elem.id);
    if (!p) {
      this.strayUsed.push(elem);
      return;
    }
    this.pending.delete(elem.id);
    clearTimeout(p.timer);
    for (const s of p.slots) this.freeSlots.push(s);
    if (p.indirect) this.mem.release(p.indirect.gpa, p.indirect.size);
    p.resolve(elem);
  }

  /** The used index the device has published (for diagnostics). */
  deviceUsedIdx(): number {
    return this.mem.atomicLoadU16(this.usedGpa + 2);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.watcher?.close();
    this.watcher = null;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new Error(`queue ${this.index} closed with the request in flight`));
    }
    this.pending.clear();
    for (const w of this.slotWaiters.splice(0)) w.reject(new Error(`queue ${this.index} closed`));
    native.close(this.kickFd);
    native.close(this.callFd);
    try {
      this.mem.release(this.descGpa, this.areaBytes);
    } catch {
      // the region may already be unmapped
    }
  }
}
