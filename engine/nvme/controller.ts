/**
 * An NVMe controller (NVM Express Base 2.0 / NVM Command Set 1.0) served from
 * an engine worker. The guest's driver puts commands in submission queues in
 * guest memory and rings doorbells in BAR0's doorbell page — shared memory
 * this worker polls (or, after Doorbell Buffer Config, shadow doorbells in
 * guest memory); completions go to completion queues in guest memory with
 * phase tags, and interrupts are eventfd writes (one per vector per poll).
 * Register writes (CC, AQA, ASQ, ACQ) arrive in the same shared BAR0 page
 * (written by the reactor, see pci.ts); the controller reacts to CC on its
 * next poll and publishes CSTS there.
 *
 * Namespaces are bdevs opened through the worker's bdev layer; every NVM
 * command becomes a typed bdev I/O (parse, then execute) or a spec status.
 * Guest addresses (queues, PRPs, SGLs) are translated through GuestMemory
 * with range checks: nothing outside a mapped region is ever touched. A
 * doorbell value beyond its queue sets CSTS.CFS (controller fatal) and the
 * controller stops fetching until it is reset.
 *
 * No allocation per command: request objects (a BdevIo each) are made per
 * queue slot when a queue is created.
 *
 * Thread: the engine worker that owns the controller.
 */
import { BdevIo, BdevIoStatus, BdevIoType } from '../bdev/bdev';
import type { BdevHandle, BdevLayer, BdevUser } from '../bdev/layer';
import type { BdevDesc } from '../control';
import { type GuestMemory, PLAIN_LOAD_ACQUIRES } from '../memory';
import {
  AdminOpcode,
  AEC_NS_ATTR,
  AEN_NS_ATTR_CHANGED,
  AER_LIMIT,
  Bar0,
  CC_CSS_SHIFT,
  CC_IOCQES_SHIFT,
  CC_IOSQES_SHIFT,
  CC_MPS_SHIFT,
  CC_SHN_SHIFT,
  CcBit,
  Cns,
  CQE_BYTES,
  Csts,
  Feature,
  LogPage,
  MAX_IO_QUEUES,
  MAX_QUEUE_ENTRIES,
  MDTS,
  NVME_VERSION,
  NvmOpcode,
  PAGE_BYTES,
  Reg,
  SQE_BYTES,
  Status,
  STATUS_DNR,
} from './spec';
import { PCI_IDS } from './pci';

/** Where interrupts go: vector → one eventfd write (the owner maps vectors to MSI-X or INTx eventfds). */
export interface InterruptSink {
  signal(vector: number): void;
}

export interface NvmeNamespaceDesc {
  /** 1-based namespace id. */
  nsid: number;
  bdev: BdevDesc;
  /** 16 bytes; derived from the controller serial and bdev name when absent. */
  nguid?: Uint8Array;
  uuid?: Uint8Array;
}

export interface NvmeControllerDesc {
  name: string;
  /** Up to 20 ASCII characters. */
  serial: string;
  /** Up to 40 ASCII characters. */
  model: string;
  /** Up to 8 ASCII characters. */
  firmware: string;
  /** NVM subsystem NQN (up to 255 bytes). */
  subnqn: string;
  /** I/O queue pairs offered (1..255). */
  maxIoQueues: number;
  /** MSI-X vectors of the PCI function (interrupt vectors 0..n-1). */
  vectors: number;
  namespaces: NvmeNamespaceDesc[];
  /** Highest namespace id (NN); defaults to 32. */
  maxNamespaces?: number;
}

const MAX_TRANSFER = PAGE_BYTES << MDTS;
const IOV_CAPACITY = (MAX_TRANSFER / PAGE_BYTES) + 1;
const TWO32 = 2 ** 32;
/** Commands taken from one submission queue per poll. */
const SQ_BATCH = 64;

/** One namespace: a bdev handle (null while not ready) and its identification. */
class Namespace implements BdevUser {
  handle: BdevHandle | null = null;
  blockShift = 9;
  /** Hot remove under way: new commands fail with Namespace Not Ready while its I/O completes. */
  removing = false;
  constructor(
    readonly ctrl: NvmeController,
    readonly desc: NvmeNamespaceDesc,
    readonly nguid: Uint8Array,
    readonly uuid: Uint8Array,
  ) {}
  bdevResized(_numBlocks: number): void {
    this.ctrl.namespaceChanged(this.desc.nsid);
  }
}

class CompletionQueue {
  tail = 0;
  phase = 1;
  head = 0;
  /** Region index of the queue memory, and its byte offset there. */
  region = -1;
  offset = 0;
  sqCount = 0;
  /** Requests whose completion waits for room in this queue. */
  readonly waiting: NvmeRequest[] = [];
  constructor(
    readonly id: number,
    readonly size: number,
    readonly gpa: number,
    readonly ien: boolean,
    readonly vector: number,
  ) {}
}

class SubmissionQueue {
  head = 0;
  region = -1;
  offset = 0;
  inflight = 0;
  deleting = false;
  readonly free: NvmeRequest[] = [];
  constructor(
    readonly id: number,
    readonly size: number,
    readonly gpa: number,
    readonly cq: CompletionQueue,
  ) {}
}

/** One command in flight: a bdev I/O plus where its completion goes. */
class NvmeRequest extends BdevIo {
  sq!: SubmissionQueue;
  cid = 0;
  nvmeStatus = 0;
  dw0 = 0;
  opcode = 0;
  ns: Namespace | null = null;
  /**
   * Compare: the bdev reads into this, then it is compared with the guest's
   * data. Sized by the command and dropped when the request is released: a
   * pooled request never keeps one (a queue of 1024 would keep 512 MiB).
   */
  bounce: Uint8Array | null = null;
  /** Dataset Management: ranges to deallocate (start LBA, count) and where we are. */
  ranges: Float64Array | null = null;
  rangeCount = 0;
  rangeAt = 0;
  /** Guest data iovs kept for a compare (the bdev I/O points at the bounce buffer). */
  readonly dataBuf: Uint8Array[];
  readonly dataOff: Float64Array;
  readonly dataLen: Uint32Array;
  dataCount = 0;

  constructor(private readonly ctrl: NvmeController) {
    super(IOV_CAPACITY);
    this.dataBuf = new Array<Uint8Array>(IOV_CAPACITY);
    this.dataOff = new Float64Array(IOV_CAPACITY);
    this.dataLen = new Uint32Array(IOV_CAPACITY);
  }

  override done(): void {
    this.ctrl.ioDone(this);
  }
}

/** What a released request's iovs point at instead of a buffer it no longer owns. */
const NO_DATA = new Uint8Array(0);

/** A scratch I/O for admin data transfers (never submitted). */
class ScratchIo extends BdevIo {
  override done(): void {}
}

export class NvmeController {
  readonly name: string;
  private memory: GuestMemory | null = null;
  private readonly regs: DataView;
  private readonly doorbells: Uint32Array;
  private lastCc = 0;
  private enabled = false;
  private fatal = false;
  private shutdownPending = false;
  private resetting = false;
  private stopping = false;
  private started = false;
  private readonly sqs: (SubmissionQueue | null)[];
  private readonly cqs: (CompletionQueue | null)[];
  private readonly namespaces = new Map<number, Namespace>();
  private readonly nn: number;
  private inflightCount = 0;
  private readonly pendingVectors: Uint8Array;
  private readonly vectorList: Int32Array;
  private nPendingVectors = 0;
  private readonly scratch = new ScratchIo(IOV_CAPACITY);
  private readonly page = new Uint8Array(PAGE_BYTES);
  private readonly identifyCtrl = new Uint8Array(PAGE_BYTES);
  // Features (§5.27.1)
  private arbitration = 0;
  private powerState = 0;
  private tempThreshold = 0x0157;
  private errorRecovery = 0;
  private writeCache = 1;
  private queuesAllocated: number;
  private queuesSet = false;
  private coalescing = 0;
  private asyncEventConfig = 0;
  private keepAlive = 0;
  private readonly ivConfig: Uint32Array;
  // Async events
  private readonly aerCids: number[] = [];
  private readonly events: number[] = [];
  private aenMasked = false;
  private readonly changedNs = new Set<number>();
  // Shadow doorbells (Doorbell Buffer Config)
  private dbbufShadow = -1;
  private dbbufShadowOff = 0;
  private dbbufEvent = -1;
  private dbbufEventOff = 0;
  private dbbufShadowGpa = 0;
  private dbbufEventGpa = 0;
  // SMART counters
  private readonly startMs: number;
  private unitsRead = 0;
  private unitsWritten = 0;
  private readCommands = 0;
  private writeCommands = 0;
  private bytesReadRest = 0;
  private bytesWrittenRest = 0;
  /** Admin deletion of an SQ waiting for its in-flight commands: the admin queue pauses behind it. */
  private pendingDelete: { sq: SubmissionQueue; cid: number } | null = null;
  private nowMs = 0;

  constructor(
    readonly desc: NvmeControllerDesc,
    /** BAR0 (at least the register page and the doorbell page), shared memory. */
    bar: Uint8Array,
    private readonly layer: BdevLayer,
    private readonly irq: InterruptSink,
  ) {
    if (!Number.isInteger(desc.maxIoQueues) || desc.maxIoQueues < 1 || desc.maxIoQueues > MAX_IO_QUEUES) {
      throw new RangeError(`nvme ${desc.name}: maxIoQueues must be 1..${MAX_IO_QUEUES}, got ${desc.maxIoQueues}`);
    }
    if (!Number.isInteger(desc.vectors) || desc.vectors < 1 || desc.vectors > 256) {
      throw new RangeError(`nvme ${desc.name}: vectors must be 1..256, got ${desc.vectors}`);
    }
    if (bar.byteLength < Bar0.MsixTableOffset) throw new RangeError(`nvme ${desc.name}: BAR0 view too small`);
    this.name = desc.name;
    this.regs = new DataView(bar.buffer, bar.byteOffset, Bar0.DoorbellOffset);
    this.doorbells = new Uint32Array(bar.buffer, bar.byteOffset + Bar0.DoorbellOffset, Bar0.DoorbellBytes / 4);
    this.sqs = new Array<SubmissionQueue | null>(desc.maxIoQueues + 1).fill(null);
    this.cqs = new Array<CompletionQueue | null>(desc.maxIoQueues + 1).fill(null);
    this.pendingVectors = new Uint8Array(desc.vectors);
    this.vectorList = new Int32Array(desc.vectors);
    this.ivConfig = new Uint32Array(desc.vectors);
    this.queuesAllocated = desc.maxIoQueues;
    this.nn = desc.maxNamespaces ?? 32;
    for (const ns of desc.namespaces) this.addNamespaceObject(ns);
    this.startMs = Date.now();
    this.buildIdentifyController();
    this.lastCc = this.regs.getUint32(Reg.Cc, true) & ~CcBit.En;
  }

  /**
   * Whether poll() polls the bdev layer itself (a stand-alone owner such as
   * the probe). An engine worker's poller polls its layer once per loop
   * iteration for all its devices and sets this to false.
   */
  pollsLayer = true;

  // --- lifecycle ---------------------------------------------------------------------

  /** Open every namespace's bdev (the device starts on this worker). */
  start(nowMs: number): void {
    this.nowMs = nowMs;
    for (const ns of this.namespaces.values()) this.openNamespace(ns);
    this.started = true;
    this.stopping = false;
  }

  /** Commands taken and not completed yet. */
  get inflight(): number {
    return this.inflightCount;
  }

  get running(): boolean {
    return this.started && !this.stopping;
  }

  /** Stop taking commands; in-flight ones still complete through poll(). */
  drain(): void {
    this.stopping = true;
    for (const ns of this.namespaces.values()) ns.handle?.drain();
  }

  /** Take commands again after drain() (a DMA table change is done). */
  resume(): void {
    if (this.started) this.stopping = false;
  }

  /** With inflight === 0: release every bdev handle and forget guest memory (the owner unmaps it). */
  stop(): void {
    // Completions still waiting for completion-queue room hold no bdev I/O: they go with the device.
    for (const cq of this.cqs) {
      if (cq === null) continue;
      for (const r of cq.waiting) this.release(r);
      cq.waiting.length = 0;
    }
    if (this.inflightCount !== 0) throw new Error(`nvme ${this.name}: stop with ${this.inflightCount} commands in flight`);
    this.stopping = true;
    this.started = false;
    for (const ns of this.namespaces.values()) {
      ns.handle?.close();
      ns.handle = null;
    }
    this.memory = null;
  }

  /** Bdev I/Os submitted and not completed (commands waiting only for completion-queue room do not count: they point into no memory). */
  bdevOutstanding(): number {
    let n = 0;
    for (const ns of this.namespaces.values()) if (ns.handle !== null) n += ns.handle.outstanding;
    return n;
  }

  /**
   * The DMA table changed: use `memory` from now on (null: the client is
   * gone). Queue addresses are translated again; only with no bdev I/O in
   * flight (the owner drains first: bdevOutstanding() === 0), since those
   * point into the old mapping.
   */
  setMemory(memory: GuestMemory | null): void {
    const busy = this.bdevOutstanding();
    if (busy !== 0) throw new Error(`nvme ${this.name}: memory changed with ${busy} bdev I/Os in flight`);
    this.memory = memory;
    if (memory === null) {
      for (const q of this.sqs) if (q !== null) q.region = -1;
      for (const q of this.cqs) if (q !== null) q.region = -1;
      return;
    }
    // A queue the new table does not cover (QEMU remaps the BIOS area while
    // firmware runs) is left alone until a later table covers it again.
    for (const q of this.sqs) if (q !== null && !this.placeQueue(q, q.size * SQE_BYTES)) q.region = -1;
    for (const q of this.cqs) if (q !== null && !this.placeQueue(q, q.size * CQE_BYTES)) q.region = -1;
    if (this.dbbufShadow >= 0) this.placeDbbuf(this.dbbufShadowGpa, this.dbbufEventGpa);
  }

  /** A namespace was added (hot add): its bdev opens now and the guest gets a namespace-attribute event. */
  addNamespace(ns: NvmeNamespaceDesc): void {
    const n = this.addNamespaceObject(ns);
    if (this.started) this.openNamespace(n);
    this.namespaceChanged(ns.nsid);
  }

  /** Hot remove, first half: commands to `nsid` fail with Namespace Not Ready from now on; its I/O in flight completes. */
  beginRemoveNamespace(nsid: number): void {
    const ns = this.namespaces.get(nsid);
    if (ns === undefined) throw new RangeError(`nvme ${this.name}: no namespace ${nsid}`);
    ns.removing = true;
    ns.handle?.drain();
  }

  /** Bdev I/Os of namespace `nsid` not completed yet (0 for an unknown one). */
  namespaceOutstanding(nsid: number): number {
    return this.namespaces.get(nsid)?.handle?.outstanding ?? 0;
  }

  /**
   * A reset of the whole function (vfio-user DEVICE_RESET, or its client
   * went away): as CC.EN 1 → 0 (§3.7.2), the queues go once the commands in
   * flight completed (see resetDone); the owner then puts the registers back
   * to their reset values.
   */
  beginDeviceReset(): void {
    if (this.enabled || this.fatal) this.beginReset();
    this.regs.setUint32(Reg.Cc, 0, true);
    this.lastCc = 0;
  }

  /** The reset begun by beginDeviceReset() (or by CC.EN) has finished. */
  get resetDone(): boolean {
    return !this.resetting;
  }

  /** A namespace goes away (hot remove; only with nothing in flight on it). */
  removeNamespace(nsid: number): void {
    const ns = this.namespaces.get(nsid);
    if (ns === undefined) return;
    if (ns.handle !== null && ns.handle.outstanding > 0) throw new Error(`nvme ${this.name}: namespace ${nsid} removed with I/O outstanding`);
    ns.handle?.close();
    this.namespaces.delete(nsid);
    this.namespaceChanged(nsid);
  }

  /** Namespace `nsid` changed (added, removed, resized): log it and raise the async event. */
  namespaceChanged(nsid: number): void {
    this.changedNs.add(nsid);
    if (!this.events.includes(AEN_NS_ATTR_CHANGED)) this.events.push(AEN_NS_ATTR_CHANGED);
  }

  // --- poll --------------------------------------------------------------------------

  poll(nowMs: number): number {
    this.nowMs = nowMs;
    let work = 0;
    const cc = this.regs.getUint32(Reg.Cc, true);
    if (cc !== this.lastCc) work += this.ccChanged(cc);
    if (this.pollsLayer) work += this.layer.poll(nowMs);
    if (this.resetting) {
      if (this.inflightCount === 0) this.finishReset();
      return work + 1;
    }
    if (this.shutdownPending && this.inflightCount === 0) {
      this.shutdownPending = false;
      this.setCsts((this.getCsts() & ~Csts.ShstMask) | Csts.ShstComplete);
    }
    if (!this.enabled || this.fatal || this.memory === null) {
      this.flushInterrupts();
      return work;
    }
    // Completion queue heads first: they make room for waiting completions.
    for (let i = 0; i < this.cqs.length; i++) {
      const cq = this.cqs[i];
      if (cq === null || cq.region < 0) continue;
      const head = this.readDoorbell(i, true);
      if (head >= cq.size) {
        this.setFatal(`CQ ${i} head doorbell ${head} beyond its ${cq.size} entries`);
        return work;
      }
      cq.head = head;
      if (cq.waiting.length > 0) work += this.flushWaiting(cq);
    }
    if (this.pendingDelete !== null && this.pendingDelete.sq.inflight === 0) {
      const { sq, cid } = this.pendingDelete;
      this.pendingDelete = null;
      this.removeSq(sq);
      this.postAdmin(cid, Status.Success, 0);
    }
    if (!this.stopping && !this.shutdownPending) {
      for (let i = 0; i < this.sqs.length && !this.fatal; i++) {
        const sq = this.sqs[i];
        if (sq === null || sq.deleting || sq.region < 0) continue;
        if (i === 0 && this.pendingDelete !== null) continue;
        work += this.pollSq(sq, i);
      }
      work += this.deliverEvents();
    }
    this.flushInterrupts();
    return work;
  }

  private pollSq(sq: SubmissionQueue, qid: number): number {
    const tail = this.readDoorbell(qid, false);
    if (tail >= sq.size) {
      this.setFatal(`SQ ${qid} tail doorbell ${tail} beyond its ${sq.size} entries`);
      return 0;
    }
    const mem = this.memory as GuestMemory;
    const view = mem.views[sq.region];
    let n = 0;
    while (sq.head !== tail && n < SQ_BATCH) {
      if (qid === 0 && this.pendingDelete !== null) break;
      // A driver that reuses slots before their commands complete waits for a free request object.
      if (qid !== 0 && sq.free.length === 0) break;
      const at = sq.offset + sq.head * SQE_BYTES;
      sq.head = sq.head + 1 === sq.size ? 0 : sq.head + 1;
      n++;
      if (qid === 0) this.admin(view, at);
      else this.io(sq, view, at);
    }
    if (qid !== 0 && this.dbbufEvent >= 0) this.writeEventIdx(qid, false, tail);
    return n;
  }

  // --- registers -----------------------------------------------------------------------

  private getCsts(): number {
    return this.regs.getUint32(Reg.Csts, true);
  }

  private setCsts(v: number): void {
    this.regs.setUint32(Reg.Csts, v, true);
  }

  /** Why CSTS.CFS was set last (for the owner's log). */
  fatalReason = '';

  private setFatal(reason: string): void {
    this.fatalReason = reason;
    this.fatal = true;
    this.setCsts(this.getCsts() | Csts.Cfs);
  }

  private ccChanged(cc: number): number {
    const was = this.lastCc;
    this.lastCc = cc;
    const en = (cc & CcBit.En) !== 0;
    if (en && (was & CcBit.En) === 0) this.enable(cc);
    else if (!en && (was & CcBit.En) !== 0) this.beginReset();
    const shn = (cc >>> CC_SHN_SHIFT) & 3;
    const wasShn = (was >>> CC_SHN_SHIFT) & 3;
    if (shn !== 0 && wasShn === 0) {
      this.setCsts((this.getCsts() & ~Csts.ShstMask) | Csts.ShstProcessing);
      this.shutdownPending = true;
    } else if (shn === 0 && wasShn !== 0) {
      this.setCsts(this.getCsts() & ~Csts.ShstMask);
      this.shutdownPending = false;
    }
    return 1;
  }

  private enable(cc: number): void {
    const mps = (cc >>> CC_MPS_SHIFT) & 0xf;
    const css = (cc >>> CC_CSS_SHIFT) & 0x7;
    const aqa = this.regs.getUint32(Reg.Aqa, true);
    const asqs = (aqa & 0xfff) + 1;
    const acqs = ((aqa >>> 16) & 0xfff) + 1;
    const asq = this.reg64(Reg.Asq);
    const acq = this.reg64(Reg.Acq);
    if (mps !== 0 || css !== 0 || asqs < 2 || acqs < 2 || asq % PAGE_BYTES !== 0 || acq % PAGE_BYTES !== 0 || this.memory === null) {
      this.setFatal(`enable refused: CC 0x${cc.toString(16)} AQA 0x${aqa.toString(16)} ASQ 0x${asq.toString(16)} ACQ 0x${acq.toString(16)}${this.memory === null ? ', no guest memory' : ''}`);
      return;
    }
    const cq = new CompletionQueue(0, acqs, acq, true, 0);
    const sq = new SubmissionQueue(0, asqs, asq, cq);
    if (!this.placeQueue(cq, acqs * CQE_BYTES) || !this.placeQueue(sq, asqs * SQE_BYTES)) {
      this.setFatal('admin queues outside guest memory');
      return;
    }
    this.cqs[0] = cq;
    this.sqs[0] = sq;
    cq.sqCount = 1;
    this.enabled = true;
    this.fatal = false;
    this.setCsts(Csts.Rdy);
  }

  private beginReset(): void {
    this.enabled = false;
    this.resetting = true;
    // Completions waiting for room are dropped with their queues: they hold no bdev I/O.
    for (const cq of this.cqs) {
      if (cq === null) continue;
      for (const r of cq.waiting) this.release(r);
      cq.waiting.length = 0;
    }
  }

  /** §3.7.2 controller reset: every queue deleted, features back to defaults, CSTS.RDY cleared. */
  private finishReset(): void {
    this.resetting = false;
    this.fatal = false;
    this.shutdownPending = false;
    this.pendingDelete = null;
    this.sqs.fill(null);
    this.cqs.fill(null);
    this.aerCids.length = 0;
    this.aenMasked = false;
    this.dbbufShadow = -1;
    this.dbbufEvent = -1;
    this.queuesAllocated = this.desc.maxIoQueues;
    this.queuesSet = false;
    this.arbitration = 0;
    this.powerState = 0;
    this.writeCache = 1;
    this.coalescing = 0;
    this.asyncEventConfig = 0;
    this.keepAlive = 0;
    this.ivConfig.fill(0);
    this.doorbells.fill(0);
    const shst = this.getCsts() & Csts.ShstMask;
    this.setCsts(shst);
  }

  private reg64(off: number): number {
    return this.regs.getUint32(off + 4, true) * TWO32 + this.regs.getUint32(off, true);
  }

  // --- doorbells ------------------------------------------------------------------------

  /**
   * The driver's doorbell: the MMIO page, or after Doorbell Buffer Config
   * the shadow page in guest memory (I/O queues). Either is written after
   * the entries it makes available: an acquire load, plain on x86-64.
   */
  private readDoorbell(qid: number, cq: boolean): number {
    let words = this.doorbells;
    let idx = 2 * qid + (cq ? 1 : 0);
    if (qid !== 0 && this.dbbufShadow >= 0) {
      words = (this.memory as GuestMemory).words32[this.dbbufShadow];
      idx += this.dbbufShadowOff >>> 2;
    }
    return PLAIN_LOAD_ACQUIRES ? words[idx] : Atomics.load(words, idx);
  }

  /** Keep the event index one behind what was seen: a polling controller never needs the MMIO doorbell. */
  private writeEventIdx(qid: number, cq: boolean, seen: number): void {
    const mem = this.memory as GuestMemory;
    mem.words32[this.dbbufEvent][(this.dbbufEventOff >>> 2) + 2 * qid + (cq ? 1 : 0)] = (seen - 1) >>> 0;
  }

  // --- queue memory ------------------------------------------------------------------------

  private placeQueue(q: { gpa: number; region: number; offset: number }, bytes: number): boolean {
    const mem = this.memory;
    if (mem === null) return false;
    const r = mem.translate(q.gpa, bytes);
    if (r < 0) return false;
    q.region = r;
    q.offset = mem.offset;
    return true;
  }

  private placeDbbuf(shadowGpa: number, eventGpa: number): boolean {
    const mem = this.memory as GuestMemory;
    const s = mem.translate(shadowGpa, PAGE_BYTES);
    const so = mem.offset;
    const e = mem.translate(eventGpa, PAGE_BYTES);
    const eo = mem.offset;
    // Both pages 4-byte aligned in their mapping too (a region's guest address need not be): they are read and written as 32-bit elements.
    if (s < 0 || e < 0 || so % 4 !== 0 || eo % 4 !== 0) {
      this.dbbufShadow = -1;
      this.dbbufEvent = -1;
      return false;
    }
    this.dbbufShadow = s;
    this.dbbufShadowOff = so;
    this.dbbufEvent = e;
    this.dbbufEventOff = eo;
    this.dbbufShadowGpa = shadowGpa;
    this.dbbufEventGpa = eventGpa;
    return true;
  }

  private allocRequests(sq: SubmissionQueue, _qid: number): void {
    for (let i = 0; i < sq.size; i++) {
      const r = new NvmeRequest(this);
      r.sq = sq;
      sq.free.push(r);
    }
  }

  // --- completions ------------------------------------------------------------------------

  /** Write one completion entry (§4.6); false when the queue is full. */
  private postEntry(cq: CompletionQueue, sqid: number, sqhd: number, cid: number, status: number, dw0: number): boolean {
    const next = cq.tail + 1 === cq.size ? 0 : cq.tail + 1;
    if (next === cq.head) return false;
    const mem = this.memory;
    if (mem === null || cq.region < 0) return false;
    const v = mem.views[cq.region];
    const at = cq.offset + cq.tail * CQE_BYTES;
    v.setUint32(at, dw0, true);
    v.setUint32(at + 4, 0, true);
    v.setUint32(at + 8, (sqhd & 0xffff) | (sqid << 16), true);
    const sf = status === 0 ? 0 : (status << 1) | (STATUS_DNR << 1);
    // The dword holding the phase tag goes last: the driver sees a whole entry once the tag flips.
    v.setUint32(at + 12, ((cid & 0xffff) | (((sf | cq.phase) & 0xffff) << 16)) >>> 0, true);
    cq.tail = next;
    if (next === 0) cq.phase ^= 1;
    if (cq.ien) this.raise(cq.vector);
    return true;
  }

  private raise(vector: number): void {
    if (this.pendingVectors[vector] === 0) {
      this.pendingVectors[vector] = 1;
      this.vectorList[this.nPendingVectors++] = vector;
    }
  }

  /** Raise the interrupts of the completions posted since the last call (poll() ends with it). */
  flushInterrupts(): void {
    const n = this.nPendingVectors;
    if (n === 0) return;
    this.nPendingVectors = 0;
    for (let i = 0; i < n; i++) {
      const v = this.vectorList[i];
      this.pendingVectors[v] = 0;
      this.irq.signal(v);
    }
    if (this.dbbufEvent >= 0) {
      for (let i = 1; i < this.cqs.length; i++) {
        const cq = this.cqs[i];
        if (cq !== null) this.writeEventIdx(i, true, cq.head);
      }
    }
  }

  private postAdmin(cid: number, status: number, dw0: number): void {
    const sq = this.sqs[0];
    if (sq === null) return;
    // The admin queue's completions are few; if it is full the driver broke the queue protocol.
    if (sq.cq.region >= 0 && !this.postEntry(sq.cq, 0, sq.head, cid, status, dw0)) this.setFatal('admin completion queue full');
  }

  private flushWaiting(cq: CompletionQueue): number {
    let n = 0;
    while (cq.waiting.length > 0) {
      const r = cq.waiting[0];
      if (!this.postEntry(cq, r.sq.id, r.sq.head, r.cid, r.nvmeStatus, r.dw0)) break;
      cq.waiting.shift();
      this.release(r);
      n++;
    }
    return n;
  }

  private release(r: NvmeRequest): void {
    r.sq.inflight--;
    this.inflightCount--;
    r.ns = null;
    if (r.bounce !== null) {
      // The bdev I/O's iov points at the bounce buffer too: drop both.
      r.bounce = null;
      r.iovBuf.fill(NO_DATA, 0, r.iovCount);
    }
    r.sq.free.push(r);
  }

  /** Finish request `r` with its status: post the completion (or wait for room). */
  private complete(r: NvmeRequest): void {
    if (this.resetting || !this.enabled) {
      this.release(r);
      return;
    }
    const cq = r.sq.cq;
    if (cq.waiting.length === 0 && this.postEntry(cq, r.sq.id, r.sq.head, r.cid, r.nvmeStatus, r.dw0)) this.release(r);
    else cq.waiting.push(r);
  }

  // --- I/O commands ------------------------------------------------------------------------

  private io(sq: SubmissionQueue, v: DataView, at: number): void {
    const r = sq.free.pop() as NvmeRequest;
    sq.inflight++;
    this.inflightCount++;
    const dw0 = v.getUint32(at, true);
    r.opcode = dw0 & 0xff;
    r.cid = dw0 >>> 16;
    r.dw0 = 0;
    r.nvmeStatus = Status.Success;
    const st = this.startIo(r, v, at, dw0);
    if (st !== Status.Success) {
      r.nvmeStatus = st;
      this.complete(r);
    }
  }

  /** Parse an NVM command and submit it; returns a status when it fails before reaching the bdev. */
  private startIo(r: NvmeRequest, v: DataView, at: number, dw0: number): number {
    if ((dw0 >>> 8) & 3) return Status.InvalidField; // fused operations are not supported
    const nsid = v.getUint32(at + 4, true);
    const op = r.opcode;
    if (op !== NvmOpcode.Flush && op !== NvmOpcode.Write && op !== NvmOpcode.Read && op !== NvmOpcode.Compare && op !== NvmOpcode.WriteZeroes && op !== NvmOpcode.DatasetManagement) {
      return Status.InvalidOpcode;
    }
    const ns = this.namespaces.get(nsid);
    if (ns === undefined) return Status.InvalidNamespace;
    const h = ns.handle;
    if (h === null || ns.removing) return Status.NamespaceNotReady;
    r.ns = ns;
    if (op === NvmOpcode.Flush) {
      if (!h.ioTypeSupported(BdevIoType.Flush)) {
        this.complete(r);
        return Status.Success;
      }
      r.prepare(BdevIoType.Flush, 0, 0);
      h.submit(r, this.nowMs);
      return Status.Success;
    }
    if (op === NvmOpcode.DatasetManagement) return this.startDsm(r, ns, v, at);
    const slbaLo = v.getUint32(at + 40, true);
    const slbaHi = v.getUint32(at + 44, true);
    const nlb = (v.getUint32(at + 48, true) & 0xffff) + 1;
    if (slbaHi >= 2 ** 21) return Status.LbaOutOfRange;
    const slba = slbaHi * TWO32 + slbaLo;
    if (slba > h.numBlocks || nlb > h.numBlocks - slba) return Status.LbaOutOfRange;
    if (op === NvmOpcode.WriteZeroes) {
      const deac = (v.getUint32(at + 48, true) >>> 25) & 1;
      const type = h.ioTypeSupported(BdevIoType.WriteZeroes) ? BdevIoType.WriteZeroes : deac && h.ioTypeSupported(BdevIoType.Unmap) ? BdevIoType.Unmap : -1;
      if (type < 0) return Status.InvalidOpcode;
      r.prepare(type as BdevIoType, slba, nlb);
      h.submit(r, this.nowMs);
      return Status.Success;
    }
    const bytes = nlb << ns.blockShift;
    if (bytes > MAX_TRANSFER) return Status.InvalidField;
    const type = op === NvmOpcode.Write ? BdevIoType.Write : BdevIoType.Read;
    r.prepare(type, slba, nlb);
    const st = this.mapData(r, v, at, bytes);
    if (st !== Status.Success) return st;
    if (op === NvmOpcode.Compare) {
      // Keep the guest's ranges, read the blocks into the bounce buffer instead.
      r.bounce = new Uint8Array(bytes);
      r.dataCount = r.iovCount;
      for (let i = 0; i < r.iovCount; i++) {
        r.dataBuf[i] = r.iovBuf[i];
        r.dataOff[i] = r.iovOff[i];
        r.dataLen[i] = r.iovLen[i];
      }
      r.prepare(BdevIoType.Read, slba, nlb);
      r.addIov(r.bounce, 0, bytes);
    } else if (op === NvmOpcode.Read) {
      this.readCommands++;
      this.bytesReadRest += bytes;
    } else {
      this.writeCommands++;
      this.bytesWrittenRest += bytes;
    }
    h.submit(r, this.nowMs);
    return Status.Success;
  }

  private startDsm(r: NvmeRequest, ns: Namespace, v: DataView, at: number): number {
    const nr = (v.getUint32(at + 40, true) & 0xff) + 1;
    const attrs = v.getUint32(at + 44, true);
    if ((attrs & 4) === 0) {
      // Only the deallocate attribute does anything; integral read/write hints are advisory.
      this.complete(r);
      return Status.Success;
    }
    const h = ns.handle as BdevHandle;
    if (!h.ioTypeSupported(BdevIoType.Unmap)) return Status.InvalidOpcode;
    const st = this.mapData(this.scratch, v, at, nr * 16);
    if (st !== Status.Success) return st;
    if (r.ranges === null) r.ranges = new Float64Array(512);
    const buf = this.page;
    this.gather(this.scratch, buf, nr * 16);
    const dv = new DataView(buf.buffer, 0, nr * 16);
    let count = 0;
    for (let i = 0; i < nr; i++) {
      const len = dv.getUint32(i * 16 + 4, true);
      const lo = dv.getUint32(i * 16 + 8, true);
      const hi = dv.getUint32(i * 16 + 12, true);
      if (len === 0) continue;
      if (hi >= 2 ** 21) return Status.LbaOutOfRange;
      const slba = hi * TWO32 + lo;
      if (slba > h.numBlocks || len > h.numBlocks - slba) return Status.LbaOutOfRange;
      r.ranges[2 * count] = slba;
      r.ranges[2 * count + 1] = len;
      count++;
    }
    if (count === 0) {
      this.complete(r);
      return Status.Success;
    }
    r.rangeCount = count;
    r.rangeAt = 1;
    r.prepare(BdevIoType.Unmap, r.ranges[0], r.ranges[1]);
    h.submit(r, this.nowMs);
    return Status.Success;
  }

  /** A bdev I/O of request `r` completed (from BdevLayer.poll). */
  ioDone(r: NvmeRequest): void {
    if (r.status !== BdevIoStatus.Success) {
      r.nvmeStatus = r.type === BdevIoType.Read ? Status.UnrecoveredReadError : r.type === BdevIoType.Write ? Status.WriteFault : Status.InternalError;
      this.complete(r);
      return;
    }
    if (r.opcode === NvmOpcode.DatasetManagement && r.rangeAt < r.rangeCount && !this.resetting) {
      const ranges = r.ranges as Float64Array;
      const i = r.rangeAt++;
      r.prepare(BdevIoType.Unmap, ranges[2 * i], ranges[2 * i + 1]);
      (r.ns?.handle as BdevHandle).submit(r, this.nowMs);
      return;
    }
    if (r.opcode === NvmOpcode.Compare) r.nvmeStatus = this.compare(r) ? Status.Success : Status.CompareFailure;
    this.complete(r);
  }

  private compare(r: NvmeRequest): boolean {
    const b = r.bounce as Uint8Array;
    let pos = 0;
    for (let i = 0; i < r.dataCount; i++) {
      const buf = r.dataBuf[i];
      const off = r.dataOff[i];
      const len = r.dataLen[i];
      for (let j = 0; j < len; j++) if (buf[off + j] !== b[pos + j]) return false;
      pos += len;
    }
    return true;
  }

  // --- data pointers ---------------------------------------------------------------------

  /** Map the command's data pointer (PRP or SGL, §4.1) for `len` bytes into io's iovs. */
  private mapData(io: BdevIo, v: DataView, at: number, len: number): number {
    io.iovCount = 0;
    if (len === 0) return Status.Success;
    const psdt = (v.getUint32(at, true) >>> 14) & 3;
    const aLo = v.getUint32(at + 24, true);
    const aHi = v.getUint32(at + 28, true);
    if (psdt === 0) {
      const bLo = v.getUint32(at + 32, true);
      const bHi = v.getUint32(at + 36, true);
      if (aHi >= 2 ** 21 || bHi >= 2 ** 21) return Status.DataTransferError;
      return this.mapPrp(io, aHi * TWO32 + aLo, bHi * TWO32 + bLo, len);
    }
    if (psdt === 3) return Status.InvalidField;
    return this.mapSgl(io, v, at + 24, len);
  }

  private addSegment(io: BdevIo, gpa: number, len: number): boolean {
    const mem = this.memory;
    if (mem === null) return false;
    const r = mem.translate(gpa, len);
    if (r < 0) return false;
    const buf = mem.bytes[r];
    const off = mem.offset;
    const n = io.iovCount;
    if (n > 0 && io.iovBuf[n - 1] === buf && io.iovOff[n - 1] + io.iovLen[n - 1] === off) {
      io.iovLen[n - 1] += len;
      return true;
    }
    return io.addIov(buf, off, len);
  }

  private readU64(gpa: number): number {
    const mem = this.memory as GuestMemory;
    const r = mem.translate(gpa, 8);
    if (r < 0) return -1;
    const v = mem.views[r];
    const hi = v.getUint32(mem.offset + 4, true);
    if (hi >= 2 ** 21) return -1;
    return hi * TWO32 + v.getUint32(mem.offset, true);
  }

  private mapPrp(io: BdevIo, prp1: number, prp2: number, len: number): number {
    if (prp1 % 4 !== 0) return Status.InvalidPrpOffset;
    let first = PAGE_BYTES - (prp1 % PAGE_BYTES);
    if (first > len) first = len;
    if (!this.addSegment(io, prp1, first)) return Status.DataTransferError;
    let left = len - first;
    if (left === 0) return Status.Success;
    if (left <= PAGE_BYTES) {
      if (prp2 % PAGE_BYTES !== 0) return Status.InvalidPrpOffset;
      return this.addSegment(io, prp2, left) ? Status.Success : Status.DataTransferError;
    }
    let list = prp2;
    if (list % 8 !== 0) return Status.InvalidPrpOffset;
    // TTL: a list cannot need more entries than the transfer has pages, plus one chain entry per list page.
    for (let ttl = 2 * IOV_CAPACITY; left > 0; ttl--) {
      if (ttl === 0) return Status.InvalidField;
      const entriesLeftInPage = (PAGE_BYTES - (list % PAGE_BYTES)) / 8;
      const entry = this.readU64(list);
      if (entry < 0) return Status.DataTransferError;
      if (entriesLeftInPage === 1 && left > PAGE_BYTES) {
        // The last entry of a list page points to the next list page.
        if (entry % 8 !== 0) return Status.InvalidPrpOffset;
        list = entry;
        continue;
      }
      if (entry % PAGE_BYTES !== 0) return Status.InvalidPrpOffset;
      const seg = left < PAGE_BYTES ? left : PAGE_BYTES;
      if (!this.addSegment(io, entry, seg)) return Status.DataTransferError;
      left -= seg;
      list += 8;
    }
    return Status.Success;
  }

  /** SGL (§4.1.2): a data block, or (last) segments of data blocks, walked with a TTL. */
  private mapSgl(io: BdevIo, cmd: DataView, descAt: number, len: number): number {
    let view = cmd;
    let at = descAt;
    let count = 1;
    let left = len;
    for (let ttl = IOV_CAPACITY + 8; ; ttl--) {
      if (ttl === 0) return Status.InvalidSglCount;
      const lo = view.getUint32(at, true);
      const hi = view.getUint32(at + 4, true);
      const dlen = view.getUint32(at + 8, true);
      const type = view.getUint8(at + 15) >>> 4;
      if (hi >= 2 ** 21) return Status.DataTransferError;
      const addr = hi * TWO32 + lo;
      count--;
      if (type === 0) {
        const seg = dlen < left ? dlen : left;
        if (seg > 0 && !this.addSegment(io, addr, seg)) return Status.DataTransferError;
        left -= seg;
        if (left === 0) return Status.Success;
        if (count === 0) return Status.DataSglLengthInvalid;
        at += 16;
        continue;
      }
      if (type !== 2 && type !== 3) return Status.SglDescriptorTypeInvalid;
      // A segment descriptor must be the last one of its segment (or the command's only one).
      if (count !== 0) return Status.InvalidSglSegmentDescriptor;
      if (dlen === 0 || dlen % 16 !== 0) return Status.InvalidSglSegmentDescriptor;
      const mem = this.memory as GuestMemory;
      const r = mem.translate(addr, dlen);
      if (r < 0) return Status.DataTransferError;
      view = mem.views[r];
      at = mem.offset;
      count = dlen / 16;
    }
  }

  /** Copy `src` (len bytes) to the guest ranges mapped in `io`. */
  private scatter(io: BdevIo, src: Uint8Array, len: number): void {
    let pos = 0;
    for (let i = 0; i < io.iovCount && pos < len; i++) {
      const n = Math.min(io.iovLen[i], len - pos);
      io.iovBuf[i].set(src.subarray(pos, pos + n), io.iovOff[i]);
      pos += n;
    }
  }

  /** Copy the guest ranges mapped in `io` into `dst` (len bytes). */
  private gather(io: BdevIo, dst: Uint8Array, len: number): void {
    let pos = 0;
    for (let i = 0; i < io.iovCount && pos < len; i++) {
      const n = Math.min(io.iovLen[i], len - pos);
      const off = io.iovOff[i];
      dst.set(io.iovBuf[i].subarray(off, off + n), pos);
      pos += n;
    }
  }

  /** Send `data` (zero-padded to len) to the admin command's data pointer. */
  private sendData(v: DataView, at: number, data: Uint8Array, len: number): number {
    const st = this.mapData(this.scratch, v, at, len);
    if (st !== Status.Success) return st;
    if (data.byteLength < len) {
      // Zero the part past the structure.
      let pos = 0;
      const io = this.scratch;
      for (let i = 0; i < io.iovCount; i++) {
        const n = io.iovLen[i];
        const off = io.iovOff[i];
        if (pos + n > data.byteLength) io.iovBuf[i].fill(0, off + Math.max(0, data.byteLength - pos), off + n);
        pos += n;
      }
    }
    this.scatter(this.scratch, data, Math.min(len, data.byteLength));
    return Status.Success;
  }

  // --- admin commands ---------------------------------------------------------------------

  private admin(v: DataView, at: number): void {
    const dw0 = v.getUint32(at, true);
    const op = dw0 & 0xff;
    const cid = dw0 >>> 16;
    let result = 0;
    let st: number;
    switch (op) {
      case AdminOpcode.Identify:
        st = this.identify(v, at);
        break;
      case AdminOpcode.CreateIoCq:
        st = this.createCq(v, at);
        break;
      case AdminOpcode.CreateIoSq:
        st = this.createSq(v, at);
        break;
      case AdminOpcode.DeleteIoSq: {
        const qid = v.getUint32(at + 40, true) & 0xffff;
        const sq = qid === 0 || qid >= this.sqs.length ? null : this.sqs[qid];
        if (sq === null) {
          st = Status.InvalidQueueIdentifier;
          break;
        }
        sq.deleting = true;
        if (sq.inflight > 0) {
          this.pendingDelete = { sq, cid };
          return;
        }
        this.removeSq(sq);
        st = Status.Success;
        break;
      }
      case AdminOpcode.DeleteIoCq: {
        const qid = v.getUint32(at + 40, true) & 0xffff;
        const cq = qid === 0 || qid >= this.cqs.length ? null : this.cqs[qid];
        if (cq === null) st = Status.InvalidQueueIdentifier;
        else if (cq.sqCount > 0) st = Status.InvalidQueueDeletion;
        else {
          this.cqs[qid] = null;
          st = Status.Success;
        }
        break;
      }
      case AdminOpcode.GetFeatures:
      case AdminOpcode.SetFeatures: {
        const out = { dw0: 0 };
        st = op === AdminOpcode.GetFeatures ? this.getFeature(v, at, out) : this.setFeature(v, at, out);
        result = out.dw0;
        break;
      }
      case AdminOpcode.GetLogPage:
        st = this.getLogPage(v, at);
        break;
      case AdminOpcode.AsyncEventRequest:
        if (this.aerCids.length >= AER_LIMIT) st = Status.AsyncEventLimitExceeded;
        else {
          this.aerCids.push(cid);
          return;
        }
        break;
      case AdminOpcode.Abort:
        // Commands run to completion once taken: report "not aborted" (DW0 bit 0).
        result = 1;
        st = Status.Success;
        break;
      case AdminOpcode.KeepAlive:
        st = Status.Success;
        break;
      case AdminOpcode.DoorbellBufferConfig: {
        const lo1 = v.getUint32(at + 24, true);
        const hi1 = v.getUint32(at + 28, true);
        const lo2 = v.getUint32(at + 32, true);
        const hi2 = v.getUint32(at + 36, true);
        const shadow = hi1 * TWO32 + lo1;
        const event = hi2 * TWO32 + lo2;
        if (hi1 >= 2 ** 21 || hi2 >= 2 ** 21 || shadow % PAGE_BYTES !== 0 || event % PAGE_BYTES !== 0 || ((dw0 >>> 14) & 3) !== 0) {
          st = Status.InvalidField;
        } else if (!this.placeDbbuf(shadow, event)) st = Status.InvalidField;
        else {
          // Queues that exist already start from their current positions.
          const mem = this.memory as GuestMemory;
          for (let q = 1; q < this.sqs.length; q++) {
            const sq = this.sqs[q];
            const cq = this.cqs[q];
            if (sq !== null) mem.views[this.dbbufShadow].setUint32(this.dbbufShadowOff + 8 * q, Atomics.load(this.doorbells, 2 * q), true);
            if (cq !== null) mem.views[this.dbbufShadow].setUint32(this.dbbufShadowOff + 8 * q + 4, Atomics.load(this.doorbells, 2 * q + 1), true);
          }
          st = Status.Success;
        }
        break;
      }
      default:
        st = Status.InvalidOpcode;
    }
    this.postAdmin(cid, st, result);
  }

  private removeSq(sq: SubmissionQueue): void {
    this.sqs[sq.id] = null;
    sq.cq.sqCount--;
  }

  private createCq(v: DataView, at: number): number {
    const dw10 = v.getUint32(at + 40, true);
    const dw11 = v.getUint32(at + 44, true);
    const qid = dw10 & 0xffff;
    const size = (dw10 >>> 16) + 1;
    if (qid === 0 || qid > this.queuesAllocated || this.cqs[qid] !== null) return Status.InvalidQueueIdentifier;
    if (size < 2 || size > MAX_QUEUE_ENTRIES) return Status.InvalidQueueSize;
    if ((dw11 & 1) === 0) return Status.InvalidField; // CAP.CQR: queues must be physically contiguous
    const ien = (dw11 & 2) !== 0;
    const iv = dw11 >>> 16;
    if (ien && iv >= this.desc.vectors) return Status.InvalidInterruptVector;
    const cc = this.regs.getUint32(Reg.Cc, true);
    if (((cc >>> CC_IOCQES_SHIFT) & 0xf) !== 4) return Status.InvalidField;
    const lo = v.getUint32(at + 24, true);
    const hi = v.getUint32(at + 28, true);
    if (hi >= 2 ** 21) return Status.InvalidField;
    const gpa = hi * TWO32 + lo;
    if (gpa % PAGE_BYTES !== 0) return Status.InvalidPrpOffset;
    const cq = new CompletionQueue(qid, size, gpa, ien, iv);
    if (!this.placeQueue(cq, size * CQE_BYTES)) return Status.InvalidField;
    this.cqs[qid] = cq;
    Atomics.store(this.doorbells, 2 * qid + 1, 0);
    if (this.dbbufShadow >= 0) (this.memory as GuestMemory).views[this.dbbufShadow].setUint32(this.dbbufShadowOff + 8 * qid + 4, 0, true);
    return Status.Success;
  }

  private createSq(v: DataView, at: number): number {
    const dw10 = v.getUint32(at + 40, true);
    const dw11 = v.getUint32(at + 44, true);
    const qid = dw10 & 0xffff;
    const size = (dw10 >>> 16) + 1;
    const cqid = dw11 >>> 16;
    if (qid === 0 || qid > this.queuesAllocated || this.sqs[qid] !== null) return Status.InvalidQueueIdentifier;
    if (size < 2 || size > MAX_QUEUE_ENTRIES) return Status.InvalidQueueSize;
    if ((dw11 & 1) === 0) return Status.InvalidField;
    if (cqid === 0 || cqid >= this.cqs.length || this.cqs[cqid] === null) return Status.CompletionQueueInvalid;
    const cc = this.regs.getUint32(Reg.Cc, true);
    if (((cc >>> CC_IOSQES_SHIFT) & 0xf) !== 6) return Status.InvalidField;
    const lo = v.getUint32(at + 24, true);
    const hi = v.getUint32(at + 28, true);
    if (hi >= 2 ** 21) return Status.InvalidField;
    const gpa = hi * TWO32 + lo;
    if (gpa % PAGE_BYTES !== 0) return Status.InvalidPrpOffset;
    const cq = this.cqs[cqid] as CompletionQueue;
    const sq = new SubmissionQueue(qid, size, gpa, cq);
    if (!this.placeQueue(sq, size * SQE_BYTES)) return Status.InvalidField;
    this.allocRequests(sq, qid);
    this.sqs[qid] = sq;
    cq.sqCount++;
    Atomics.store(this.doorbells, 2 * qid, 0);
    if (this.dbbufShadow >= 0) (this.memory as GuestMemory).views[this.dbbufShadow].setUint32(this.dbbufShadowOff + 8 * qid, 0, true);
    return Status.Success;
  }

  private getFeature(v: DataView, at: number, out: { dw0: number }): number {
    const dw10 = v.getUint32(at + 40, true);
    const fid = dw10 & 0xff;
    const sel = (dw10 >>> 8) & 7;
    if (sel === 3) {
      // Supported capabilities: changeable, not saveable (§5.27.1.x).
      out.dw0 = 0x4;
      return this.knownFeature(fid) ? Status.Success : Status.InvalidField;
    }
    const dflt = sel === 1 || sel === 2;
    switch (fid) {
      case Feature.Arbitration:
        out.dw0 = dflt ? 0 : this.arbitration;
        break;
      case Feature.PowerManagement:
        out.dw0 = dflt ? 0 : this.powerState;
        break;
      case Feature.TemperatureThreshold:
        out.dw0 = dflt ? 0x0157 : this.tempThreshold;
        break;
      case Feature.ErrorRecovery:
        out.dw0 = dflt ? 0 : this.errorRecovery;
        break;
      case Feature.VolatileWriteCache:
        out.dw0 = dflt ? 1 : this.writeCache;
        break;
      case Feature.NumberOfQueues: {
        const n = (dflt ? this.desc.maxIoQueues : this.queuesAllocated) - 1;
        out.dw0 = (n | (n << 16)) >>> 0;
        break;
      }
      case Feature.InterruptCoalescing:
        out.dw0 = dflt ? 0 : this.coalescing;
        break;
      case Feature.InterruptVectorConfig: {
        const iv = v.getUint32(at + 44, true) & 0xffff;
        if (iv >= this.desc.vectors) return Status.InvalidField;
        out.dw0 = iv | (dflt ? 0 : this.ivConfig[iv] & 0x10000);
        break;
      }
      case Feature.WriteAtomicity:
        out.dw0 = 0;
        break;
      case Feature.AsyncEventConfig:
        out.dw0 = dflt ? 0 : this.asyncEventConfig;
        break;
      case Feature.KeepAliveTimer:
        out.dw0 = dflt ? 0 : this.keepAlive;
        break;
      default:
        return Status.InvalidField;
    }
    return Status.Success;
  }

  private knownFeature(fid: number): boolean {
    return (fid >= 1 && fid <= 0x0b && fid !== 3) || fid === Feature.KeepAliveTimer;
  }

  private setFeature(v: DataView, at: number, out: { dw0: number }): number {
    const dw10 = v.getUint32(at + 40, true);
    const dw11 = v.getUint32(at + 44, true);
    const fid = dw10 & 0xff;
    if (dw10 >>> 31) return Status.FeatureNotSaveable;
    switch (fid) {
      case Feature.Arbitration:
        this.arbitration = dw11;
        break;
      case Feature.PowerManagement:
        if ((dw11 & 0x1f) !== 0) return Status.InvalidField; // one power state (NPSS 0)
        this.powerState = dw11 & 0xff;
        break;
      case Feature.TemperatureThreshold:
        this.tempThreshold = dw11 & 0xffff;
        break;
      case Feature.ErrorRecovery:
        this.errorRecovery = dw11 & 0xffff;
        break;
      case Feature.VolatileWriteCache:
        this.writeCache = dw11 & 1;
        break;
      case Feature.NumberOfQueues: {
        const nsqr = dw11 & 0xffff;
        const ncqr = dw11 >>> 16;
        if (nsqr === 0xffff || ncqr === 0xffff) return Status.InvalidField;
        if (this.sqs.some((q, i) => i > 0 && q !== null) || this.cqs.some((q, i) => i > 0 && q !== null)) {
          return Status.CommandSequenceError;
        }
        const want = Math.max(nsqr, ncqr) + 1;
        this.queuesAllocated = Math.min(want, this.desc.maxIoQueues);
        this.queuesSet = true;
        const n = this.queuesAllocated - 1;
        out.dw0 = (n | (n << 16)) >>> 0;
        break;
      }
      case Feature.InterruptCoalescing:
        this.coalescing = dw11 & 0xffff;
        break;
      case Feature.InterruptVectorConfig: {
        const iv = dw11 & 0xffff;
        if (iv >= this.desc.vectors) return Status.InvalidField;
        this.ivConfig[iv] = dw11;
        break;
      }
      case Feature.WriteAtomicity:
        break;
      case Feature.AsyncEventConfig:
        this.asyncEventConfig = dw11;
        break;
      case Feature.KeepAliveTimer:
        this.keepAlive = dw11;
        break;
      default:
        return Status.InvalidField;
    }
    return Status.Success;
  }

  private deliverEvents(): number {
    if (this.aenMasked || this.aerCids.length === 0 || this.events.length === 0) return 0;
    const ev = this.events.shift() as number;
    if (ev === AEN_NS_ATTR_CHANGED && (this.asyncEventConfig & AEC_NS_ATTR) === 0) {
      // Not enabled: the change stays in the log page, no event.
      return 0;
    }
    const cid = this.aerCids.shift() as number;
    this.aenMasked = true;
    this.postAdmin(cid, Status.Success, ev);
    return 1;
  }

  private getLogPage(v: DataView, at: number): number {
    const dw10 = v.getUint32(at + 40, true);
    const dw11 = v.getUint32(at + 44, true);
    const lid = dw10 & 0xff;
    const rae = (dw10 >>> 15) & 1;
    const numd = ((dw11 & 0xffff) * 65536 + (dw10 >>> 16)) + 1;
    const len = numd * 4;
    const lpoLo = v.getUint32(at + 48, true);
    const lpoHi = v.getUint32(at + 52, true);
    if (lpoHi !== 0 || lpoLo % 4 !== 0) return Status.InvalidField;
    if (len > MAX_TRANSFER) return Status.InvalidField;
    const page = this.page;
    page.fill(0);
    const pv = new DataView(page.buffer);
    let size: number;
    switch (lid) {
      case LogPage.Error:
        size = 64;
        break;
      case LogPage.Smart: {
        size = 512;
        this.foldUnits();
        pv.setUint16(1, 273 + 35, true); // composite temperature, Kelvin
        page[3] = 100; // available spare
        page[4] = 10; // spare threshold
        setU128(pv, 32, this.unitsRead);
        setU128(pv, 48, this.unitsWritten);
        setU128(pv, 64, this.readCommands);
        setU128(pv, 80, this.writeCommands);
        setU128(pv, 112, 1); // power cycles
        setU128(pv, 128, Math.floor((Date.now() - this.startMs) / 3_600_000));
        break;
      }
      case LogPage.FirmwareSlot:
        size = 512;
        page[0] = 1; // slot 1 active
        writeAscii(page, 8, 8, this.desc.firmware);
        break;
      case LogPage.ChangedNamespaces: {
        size = 4096;
        const list = [...this.changedNs].sort((a, b) => a - b);
        if (list.length > 1024) pv.setUint32(0, 0xffffffff, true);
        else list.forEach((nsid, i) => pv.setUint32(4 * i, nsid, true));
        if (!rae) this.changedNs.clear();
        break;
      }
      default:
        return Status.InvalidLogPage;
    }
    if (lpoLo >= size) return Status.InvalidField;
    const st = this.sendData(v, at, page.subarray(lpoLo, size), len);
    if (st === Status.Success && !rae) this.aenMasked = false;
    return st;
  }

  private foldUnits(): void {
    // Data units are thousands of 512-byte units, rounded up (§5.16.1.3).
    const unit = 512_000;
    this.unitsRead += Math.floor(this.bytesReadRest / unit);
    this.bytesReadRest %= unit;
    this.unitsWritten += Math.floor(this.bytesWrittenRest / unit);
    this.bytesWrittenRest %= unit;
  }

  private identify(v: DataView, at: number): number {
    const cns = v.getUint32(at + 40, true) & 0xff;
    const nsid = v.getUint32(at + 4, true);
    const page = this.page;
    page.fill(0);
    const pv = new DataView(page.buffer);
    switch (cns) {
      case Cns.Controller:
        page.set(this.identifyCtrl);
        break;
      case Cns.Namespace: {
        if (nsid === 0 || (nsid > this.nn && nsid !== 0xffffffff)) return Status.InvalidNamespace;
        if (nsid === 0xffffffff) return Status.InvalidNamespace;
        const ns = this.namespaces.get(nsid);
        if (ns !== undefined) this.identifyNamespace(ns, pv);
        // An inactive namespace id returns zeroes (§5.17.2.1).
        break;
      }
      case Cns.ActiveNamespaces: {
        if (nsid >= 0xfffffffe) return Status.InvalidNamespace;
        const ids = [...this.namespaces.keys()].filter((id) => id > nsid).sort((a, b) => a - b);
        ids.slice(0, 1024).forEach((id, i) => pv.setUint32(4 * i, id, true));
        break;
      }
      case Cns.NamespaceDescriptors: {
        const ns = this.namespaces.get(nsid);
        if (ns === undefined) return Status.InvalidNamespace;
        // NIDT 2 = NGUID (16 bytes), 3 = UUID (16 bytes), 4 = CSI (1 byte: NVM 0).
        let o = 0;
        page[o] = 2;
        page[o + 1] = 16;
        page.set(ns.nguid, o + 4);
        o += 20;
        page[o] = 3;
        page[o + 1] = 16;
        page.set(ns.uuid, o + 4);
        o += 20;
        page[o] = 4;
        page[o + 1] = 1;
        page[o + 4] = 0;
        break;
      }
      default:
        return Status.InvalidField;
    }
    return this.sendData(v, at, page, PAGE_BYTES);
  }

  private identifyNamespace(ns: Namespace, pv: DataView): void {
    const h = ns.handle;
    const blocks = h ? h.numBlocks : ns.desc.bdev.numBlocks;
    setU64(pv, 0, blocks); // NSZE
    setU64(pv, 8, blocks); // NCAP
    setU64(pv, 16, blocks); // NUSE
    const dealloc = h ? h.ioTypeSupported(BdevIoType.Unmap) : false;
    pv.setUint8(24, dealloc ? 0x4 : 0); // NSFEAT: DAE (deallocated error) reporting off; bit 2 as SPDK: dealloc supported
    pv.setUint8(25, 0); // NLBAF: one format
    pv.setUint8(26, 0); // FLBAS: format 0
    pv.setUint8(33, dealloc ? 0x09 : 0); // DLFEAT: deallocated blocks read 0; write zeroes may deallocate
    new Uint8Array(pv.buffer).set(ns.nguid, 104);
    pv.setUint32(128, ns.blockShift << 16, true); // LBAF0: LBADS
  }

  private buildIdentifyController(): void {
    const p = this.identifyCtrl;
    const v = new DataView(p.buffer);
    const d = this.desc;
    v.setUint16(0, PCI_IDS.vendorId, true);
    v.setUint16(2, PCI_IDS.subsystemVendorId, true);
    writeAscii(p, 4, 20, d.serial);
    writeAscii(p, 24, 40, d.model);
    writeAscii(p, 64, 8, d.firmware);
    p[72] = 6; // RAB
    p[77] = MDTS;
    v.setUint16(78, 1, true); // CNTLID
    v.setUint32(80, NVME_VERSION, true);
    v.setUint32(92, 1 << 8, true); // OAES: namespace attribute notices
    p[111] = 1; // CNTRLTYPE: I/O controller
    v.setUint16(256, 1 << 8, true); // OACS: Doorbell Buffer Config
    p[258] = 3; // ACL (0-based)
    p[259] = AER_LIMIT - 1; // AERL (0-based)
    p[260] = 0x3; // FRMW: slot 1 read-only, one slot
    p[261] = 0x4; // LPA: extended data for Get Log Page (NUMDU, LPO)
    p[262] = 0; // ELPE: one error log entry
    v.setUint16(266, 273 + 70, true); // WCTEMP
    v.setUint16(268, 273 + 80, true); // CCTEMP
    p[512] = 0x66; // SQES: 64 bytes
    p[513] = 0x44; // CQES: 16 bytes
    v.setUint16(514, MAX_QUEUE_ENTRIES, true); // MAXCMD
    v.setUint32(516, this.nn, true); // NN
    v.setUint16(520, 0x1 | 0x4 | 0x8, true); // ONCS: Compare, Dataset Management, Write Zeroes
    p[525] = 0x1 | (0x2 << 1); // VWC present; flush with NSID FFFFFFFFh not supported
    v.setUint32(536, 0x1, true); // SGLS: SGLs supported, no alignment requirement
    v.setUint32(540, 0, true);
    writeAscii(p, 768, 256, d.subnqn, 0);
    // Power state 0: max power 25.00 W (centiwatts), entry/exit latency unreported.
    v.setUint16(2048, 2500, true);
  }

  // --- namespaces --------------------------------------------------------------------------

  private addNamespaceObject(d: NvmeNamespaceDesc): Namespace {
    if (!Number.isInteger(d.nsid) || d.nsid < 1 || d.nsid > (this.desc.maxNamespaces ?? 32)) {
      throw new RangeError(`nvme ${this.desc.name}: nsid must be 1..${this.desc.maxNamespaces ?? 32}, got ${d.nsid}`);
    }
    if (this.namespaces.has(d.nsid)) throw new RangeError(`nvme ${this.desc.name}: namespace ${d.nsid} exists`);
    const nguid = d.nguid ?? deriveId(`${this.desc.serial}/${d.bdev.name}/nguid`);
    const uuid = d.uuid ?? deriveUuid(`${this.desc.serial}/${d.bdev.name}/uuid`);
    const ns = new Namespace(this, d, nguid, uuid);
    const bs = d.bdev.blockSize;
    if (!Number.isInteger(bs) || bs < 512 || (bs & (bs - 1)) !== 0) throw new RangeError(`nvme ${this.desc.name}: block size ${bs}`);
    ns.blockShift = Math.log2(bs);
    this.namespaces.set(d.nsid, ns);
    return ns;
  }

  private openNamespace(ns: Namespace): void {
    try {
      ns.handle = this.layer.open(ns.desc.bdev, ns, this.nowMs);
    } catch {
      // Stays "not ready": commands to it complete with Namespace Not Ready.
      ns.handle = null;
    }
  }
}

/** 16 stable bytes from a name (FNV-1a, 4 rounds): NGUIDs that survive restarts. */
function deriveId(text: string): Uint8Array {
  const out = new Uint8Array(16);
  const v = new DataView(out.buffer);
  for (let round = 0; round < 4; round++) {
    let h = 0x811c9dc5 ^ round;
    for (let i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    v.setUint32(round * 4, h, false);
  }
  return out;
}

/** A name-based UUID shape (version 8, RFC 9562 variant) from the same hash. */
function deriveUuid(text: string): Uint8Array {
  const u = deriveId(text);
  u[6] = (u[6] & 0x0f) | 0x80;
  u[8] = (u[8] & 0x3f) | 0x80;
  return u;
}

function writeAscii(p: Uint8Array, at: number, len: number, text: string, pad = 0x20): void {
  p.fill(pad, at, at + len);
  for (let i = 0; i < Math.min(len, text.length); i++) {
    const c = text.charCodeAt(i);
    p[at + i] = c >= 0x20 && c < 0x7f ? c : 0x3f;
  }
}

function setU64(v: DataView, at: number, n: number): void {
  v.setUint32(at, n % TWO32, true);
  v.setUint32(at + 4, Math.floor(n / TWO32), true);
}

function setU128(v: DataView, at: number, n: number): void {
  setU64(v, at, n);
  setU64(v, at + 8, 0);
}
