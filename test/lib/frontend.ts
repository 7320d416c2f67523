/**
 * VhostUserFrontend: an in-repo vhost-user-blk front-end (the role QEMU plays)
 * that integration tests use to drive a real back-end process (vhostd, or
 * qemu-storage-daemon as a reference peer) over its Unix socket.
 *
 * Low level: request() / sendRaw() speak raw vhost-user messages (for
 * hostile-input tests). High level: negotiate() follows QEMU 7.2's message
 * order (design.md), guest memory comes from memfds mapped here
 * (frontend-memory.ts), setupQueue() builds driver-side split queues
 * (frontend-ring.ts), and the blk helpers submit virtio-blk requests and
 * return the status byte and used length.
 *
 * Written independently of reactor/vhost-user/codec.ts on purpose.
 * Thread: the test's main thread (uses FdWatchers on its loop).
 */
import { native } from '../../bindings';
import { MessageChannel, PeerClosedError, type VhostUserMessage } from './frontend-channel';
import { GuestMemory, type GuestRegion, type RegionSpec } from './frontend-memory';
import { SplitQueue, type RawDescriptor, type Segment, type UsedElem } from './frontend-ring';
import {
  BLK_COMMON_BITS,
  ALWAYS_REPLIES,
  bit,
  BLK_HDR_SIZE,
  BLK_ID_BYTES,
  blkHeader,
  blkSegment,
  BlkType,
  type BlkConfig,
  concat,
  configMsg,
  decodeBlkConfig,
  Desc,
  encodeHeader,
  Flags,
  hasBit,
  memTable,
  ProtoBit,
  readU32,
  readU64,
  Req,
  singleRegion,
  u64,
  VirtioBit,
  vringAddr,
  vringFdPayload,
  vringState,
} from './frontend-wire';

export { PeerClosedError } from './frontend-channel';
export type { VhostUserMessage } from './frontend-channel';
export type { RawDescriptor, Segment, UsedElem } from './frontend-ring';

export interface RequestOptions {
  /** Set the need_reply flag and wait for the u64 ack. */
  needReply?: boolean;
  /** Override the header flags entirely (version bits included). */
  flags?: number;
  /** Override the header's size field (the payload sent stays as given). */
  sizeField?: number;
  /** Wait for a reply even for a request that normally has none. */
  expectReply?: boolean;
  timeoutMs?: number;
}

export interface NegotiateOptions {
  /** Virtio features to ack (default: everything offered that this front-end drives). */
  features?: bigint;
  /** Protocol features to ack (default: offered ∩ MQ, REPLY_ACK, BACKEND_REQ, CONFIG, CONFIGURE_MEM_SLOTS). */
  protocolFeatures?: bigint;
  /** Guest memory regions (default one region of 32 MiB at GPA 0). */
  regions?: RegionSpec[];
  /** Use ADD_MEM_REG per region when CONFIGURE_MEM_SLOTS is negotiated (QEMU does). Default true. */
  addMemReg?: boolean;
  /** GET_CONFIG size (QEMU 7.2 asks for sizeof(virtio_blk_config) = 60). */
  configSize?: number;
  /** Queues to prepare (CALL/ERR at init). Default: the back-end's GET_QUEUE_NUM, or 1. */
  numQueues?: number;
}

export interface NegotiateResult {
  offeredFeatures: bigint;
  features: bigint;
  offeredProtocolFeatures: bigint;
  protocolFeatures: bigint;
  queueNum: number;
  maxMemSlots: number;
  config: BlkConfig | null;
  rawConfig: Uint8Array | null;
}

export interface QueueSetupOptions {
  /** Send SET_VRING_ENABLE 1 at the end (default true). */
  enable?: boolean;
  /** First avail index (SET_VRING_BASE), default 0. */
  base?: number;
  completion?: 'interrupt' | 'poll';
  timeoutMs?: number;
  /** Region to put the rings in. */
  regionIndex?: number;
}

export interface BlkResult {
  /** The status byte the device wrote (0xff if it wrote none). */
  status: number;
  usedLen: number;
}

export interface DataOptions {
  /** Split the data over this many descriptors (default 1). */
  segments?: number;
  /** Put the chain in an indirect table. */
  indirect?: boolean;
  /** Region for the buffers. */
  regionIndex?: number;
}

/** Virtio features the test driver knows how to drive for virtio-blk. */
export const DRIVER_FEATURES =
  BLK_COMMON_BITS |
  bit(VirtioBit.BLK_MQ) |
  bit(VirtioBit.RING_INDIRECT_DESC) |
  bit(VirtioBit.RING_EVENT_IDX) |
  bit(VirtioBit.PROTOCOL_FEATURES) |
  bit(VirtioBit.VERSION_1);

const DEFAULT_PROTOCOL =
  bit(ProtoBit.MQ) | bit(ProtoBit.REPLY_ACK) | bit(ProtoBit.BACKEND_REQ) | bit(ProtoBit.CONFIG) | bit(ProtoBit.CONFIGURE_MEM_SLOTS);

const DEFAULT_TIMEOUT_MS = 5000;

export class VhostUserFrontend {
  readonly channel: MessageChannel;
  private backendChannel: MessageChannel | null = null;
  memory: GuestMemory | null = null;
  readonly queues = new Map<number, SplitQueue>();
  /** Placeholder call/err eventfds sent at init, per queue, closed when replaced. */
  private initFds = new Map<number, number[]>();
  negotiated: NegotiateResult | null = null;
  /** Messages the back-end sent on the backend-request channel. */
  readonly backendMessages: VhostUserMessage[] = [];
  private closed = false;

  private constructor(fd: number) {
    this.channel = new MessageChannel(fd);
  }

  /**
   * Connect to a back-end's socket, retrying while it does not exist yet (up
   * to timeoutMs). With `waitAccepted`, also make one GET_FEATURES round trip
   * and reconnect if the back-end closes at once (it may refuse a second
   * front-end while it has not yet noticed that the previous one left).
   */
  static async connect(path: string, timeoutMs = DEFAULT_TIMEOUT_MS, opts: { waitAccepted?: boolean } = {}): Promise<VhostUserFrontend> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let fe: VhostUserFrontend;
      try {
        fe = new VhostUserFrontend(native.unixConnect(path));
      } catch (e) {
        const code = (e as { code?: string }).code;
        if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      if (!opts.waitAccepted) return fe;
      try {
        await fe.getU64(Req.GET_FEATURES);
        return fe;
      } catch (e) {
        fe.close();
        if (!(e instanceof PeerClosedError) || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  get protocolFeatures(): bigint {
    return this.negotiated?.protocolFeatures ?? 0n;
  }

  get features(): bigint {
    return this.negotiated?.features ?? 0n;
  }

  private get replyAck(): boolean {
    return hasBit(this.protocolFeatures, ProtoBit.REPLY_ACK);
  }

  /** Send raw bytes (and fds) exactly as given. */
  sendRaw(bytes: Uint8Array, fds: number[] = []): Promise<void> {
    return this.channel.send(bytes, fds);
  }

  /**
   * Send one message. Resolves with the reply for GET_* requests, for
   * need_reply (the ack is checked: a non-zero ack rejects with code
   * 'ENACK'), or when expectReply is set; otherwise with undefined.
   */
  async request(type: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], opts: RequestOptions = {}): Promise<VhostUserMessage | undefined> {
    const flags = opts.flags ?? Flags.VERSION | (opts.needReply ? Flags.NEED_REPLY : 0);
    const header = encodeHeader(type, flags, opts.sizeField ?? payload.byteLength);
    await this.channel.send(concat([header, payload]), fds);
    const wantsReply = ALWAYS_REPLIES.has(type) || opts.needReply === true || opts.expectReply === true;
    if (!wantsReply) return undefined;
    const reply = await this.channel.next(opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    if (reply.request !== type || (reply.flags & Flags.REPLY) === 0 || (reply.flags & Flags.VERSION_MASK) !== Flags.VERSION) {
      throw Object.assign(new Error(`bad reply to request ${type}: request ${reply.request} flags 0x${reply.flags.toString(16)}`), { code: 'EBADREPLY' });
    }
    if (opts.needReply && !ALWAYS_REPLIES.has(type)) {
      if (reply.payload.byteLength !== 8) throw Object.assign(new Error(`ack of request ${type} has ${reply.payload.byteLength} bytes`), { code: 'EBADREPLY' });
      const ack = readU64(reply.payload);
      if (ack !== 0n) throw Object.assign(new Error(`request ${type} failed: ack ${ack}`), { code: 'ENACK', ack });
    }
    return reply;
  }

  /** Send a request that must be answered, and return the reply payload. */
  async get(type: number, payload?: Uint8Array): Promise<Uint8Array> {
    const r = await this.request(type, payload);
    if (!r) throw new Error('no reply');
    for (const f of r.fds) native.close(f);
    return r.payload;
  }

  async getU64(type: number): Promise<bigint> {
    const p = await this.get(type);
    if (p.byteLength !== 8) throw Object.assign(new Error(`reply to ${type} has ${p.byteLength} bytes, not 8`), { code: 'EBADREPLY' });
    return readU64(p);
  }

  setU64(type: number, value: bigint, needReply = false): Promise<VhostUserMessage | undefined> {
    return this.request(type, u64(value), [], { needReply: needReply && this.replyAck });
  }

  /** A round trip that proves every earlier message was processed (the back-end handles them in order). */
  async sync(): Promise<void> {
    await this.getU64(Req.GET_FEATURES);
  }

  /**
   * QEMU 7.2's vhost-user-blk sequence: device init (features, protocol
   * features, queue count, memory slots, backend channel, owner, call/err fds,
   * config), then driver start (SET_FEATURES twice, memory table). Queues are
   * set up afterwards with setupQueue().
   */
  async negotiate(opts: NegotiateOptions = {}): Promise<NegotiateResult> {
    const offeredFeatures = await this.getU64(Req.GET_FEATURES);
    let offeredProtocolFeatures = 0n;
    let protocolFeatures = 0n;
    const withProtocol = hasBit(offeredFeatures, VirtioBit.PROTOCOL_FEATURES);
    if (withProtocol) {
      offeredProtocolFeatures = await this.getU64(Req.GET_PROTOCOL_FEATURES);
      protocolFeatures = (opts.protocolFeatures ?? DEFAULT_PROTOCOL) & offeredProtocolFeatures;
      await this.setU64(Req.SET_PROTOCOL_FEATURES, protocolFeatures);
    }
    this.negotiated = {
      offeredFeatures,
      features: 0n,
      offeredProtocolFeatures,
      protocolFeatures,
      queueNum: 1,
      maxMemSlots: 8,
      config: null,
      rawConfig: null,
    };
    if (hasBit(protocolFeatures, ProtoBit.MQ)) this.negotiated.queueNum = Number(await this.getU64(Req.GET_QUEUE_NUM));
    if (hasBit(protocolFeatures, ProtoBit.CONFIGURE_MEM_SLOTS)) this.negotiated.maxMemSlots = Number(await this.getU64(Req.GET_MAX_MEM_SLOTS));
    if (hasBit(protocolFeatures, ProtoBit.BACKEND_REQ)) {
      const [mine, theirs] = native.socketPair();
      this.backendChannel = new MessageChannel(mine);
      this.backendChannel.onMessage = (m) => this.onBackendMessage(m);
      try {
        await this.request(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirs], { needReply: this.replyAck });
      } finally {
        native.close(theirs);
      }
    }
    await this.request(Req.SET_OWNER);
    await this.getU64(Req.GET_FEATURES);
    const numQueues = opts.numQueues ?? this.negotiated.queueNum;
    for (let i = 0; i < numQueues; i++) {
      const call = native.eventfd(0, 0);
      const err = native.eventfd(0, 0);
      this.initFds.set(i, [call, err]);
      await this.request(Req.SET_VRING_CALL, vringFdPayload(i, false), [call]);
      await this.request(Req.SET_VRING_ERR, vringFdPayload(i, false), [err]);
    }
    if (hasBit(protocolFeatures, ProtoBit.CONFIG)) {
      const size = opts.configSize ?? 60;
      this.negotiated.rawConfig = await this.getConfig(size);
      this.negotiated.config = decodeBlkConfig(this.negotiated.rawConfig);
    }
    const features = (opts.features ?? DRIVER_FEATURES) & offeredFeatures;
    this.negotiated.features = features;
    await this.setU64(Req.SET_FEATURES, features);
    await this.setU64(Req.SET_FEATURES, features);
    this.memory = new GuestMemory(opts.regions ?? [{ gpa: 0, sizeBytes: 32 << 20 }]);
    if ((opts.addMemReg ?? true) && hasBit(protocolFeatures, ProtoBit.CONFIGURE_MEM_SLOTS)) {
      for (const r of this.memory.regions) await this.addMemReg(r);
    } else {
      await this.setMemTable();
    }
    return this.negotiated;
  }

  private onBackendMessage(m: VhostUserMessage): void {
    this.backendMessages.push(m);
    for (const f of m.fds) native.close(f);
    if ((m.flags & Flags.NEED_REPLY) !== 0 && this.backendChannel) {
      const reply = concat([encodeHeader(m.request, Flags.VERSION | Flags.REPLY, 8), u64(0n)]);
      this.backendChannel.send(reply).catch(() => undefined);
    }
  }

  /** GET_CONFIG of `size` bytes from offset 0; returns the config bytes of the reply. */
  async getConfig(size: number, offset = 0): Promise<Uint8Array> {
    const p = await this.get(Req.GET_CONFIG, configMsg(offset, size, 0));
    if (p.byteLength < 12) throw Object.assign(new Error(`GET_CONFIG reply of ${p.byteLength} bytes`), { code: 'EBADREPLY' });
    const replySize = readU32(p, 4);
    if (replySize !== size || p.byteLength !== 12 + size) {
      throw Object.assign(new Error(`GET_CONFIG reply size ${replySize} / payload ${p.byteLength}, asked ${size}`), { code: 'EBADREPLY' });
    }
    return p.slice(12);
  }

  private mem(): GuestMemory {
    if (!this.memory) throw new Error('no guest memory: negotiate() first');
    return this.memory;
  }

  /** Send SET_MEM_TABLE with every current region (one fd each, in order). */
  async setMemTable(): Promise<void> {
    const m = this.mem();
    await this.request(Req.SET_MEM_TABLE, memTable(m.regions.map((r) => r.wire())), m.regions.map((r) => r.fd), {
      needReply: this.replyAck,
    });
  }

  async addMemReg(r: GuestRegion): Promise<void> {
    await this.request(Req.ADD_MEM_REG, singleRegion(r.wire()), [r.fd], { needReply: this.replyAck });
  }

  async remMemReg(r: GuestRegion): Promise<void> {
    await this.request(Req.REM_MEM_REG, singleRegion(r.wire()), [], { needReply: this.replyAck });
  }

  /** Map a new region and announce it with ADD_MEM_REG. */
  async hotplugRegion(spec: RegionSpec): Promise<GuestRegion> {
    const r = this.mem().addRegion(spec);
    await this.addMemReg(r);
    return r;
  }

  /** NUM, BASE, ADDR, KICK, CALL for queue i (and SET_VRING_ENABLE 1 unless enable is false). */
  async setupQueue(i: number, size: number, opts: QueueSetupOptions = {}): Promise<SplitQueue> {
    const mem = this.mem();
    const q = new SplitQueue(
      mem,
      i,
      size,
      {
        eventIdx: hasBit(this.features, VirtioBit.RING_EVENT_IDX),
        completion: opts.completion ?? 'interrupt',
        timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      },
      opts.regionIndex,
    );
    const base = opts.base ?? 0;
    q.availIdx = base & 0xffff;
    q.lastUsedIdx = base & 0xffff;
    mem.setU16(q.availGpa + 2, q.availIdx);
    mem.setU16(q.usedGpa + 2, q.lastUsedIdx);
    this.queues.get(i)?.close();
    this.queues.set(i, q);
    await this.request(Req.SET_VRING_NUM, vringState(i, size));
    await this.request(Req.SET_VRING_BASE, vringState(i, base));
    const a = q.ringAddresses();
    await this.request(Req.SET_VRING_ADDR, vringAddr(i, 0, a.desc, a.used, a.avail, 0n));
    await this.request(Req.SET_VRING_KICK, vringFdPayload(i, false), [q.kickFd]);
    await this.request(Req.SET_VRING_CALL, vringFdPayload(i, false), [q.callFd]);
    const old = this.initFds.get(i);
    if (old) {
      // The back-end was told to use the new call fd; our copy of the placeholder goes.
      native.close(old[0]);
      old[0] = -1;
    }
    if (opts.enable ?? true) await this.enableQueue(i, true);
    return q;
  }

  async enableQueue(i: number, enable: boolean): Promise<void> {
    await this.request(Req.SET_VRING_ENABLE, vringState(i, enable ? 1 : 0));
  }

  /** Give queue i a fresh call eventfd (QEMU does this when it switches to irqfds). */
  async replaceCallFd(i: number): Promise<void> {
    const q = this.queue(i);
    const { fd, retire } = q.replaceCallFd();
    try {
      await this.request(Req.SET_VRING_CALL, vringFdPayload(i, false), [fd]);
      await this.sync();
    } finally {
      retire();
    }
  }

  /** GET_VRING_BASE: stops the ring; returns the back-end's next avail index. */
  async getVringBase(i: number): Promise<number> {
    const p = await this.get(Req.GET_VRING_BASE, vringState(i, 0));
    if (p.byteLength !== 8) throw Object.assign(new Error(`GET_VRING_BASE reply of ${p.byteLength} bytes`), { code: 'EBADREPLY' });
    if (readU32(p, 0) !== i) throw Object.assign(new Error(`GET_VRING_BASE reply for queue ${readU32(p, 0)}, asked ${i}`), { code: 'EBADREPLY' });
    return readU32(p, 4);
  }

  queue(i: number): SplitQueue {
    const q = this.queues.get(i);
    if (!q) throw new Error(`queue ${i} is not set up`);
    return q;
  }

  // --- guest buffers ---------------------------------------------------------

  /** Allocate guest memory and optionally fill it; returns its guest-physical address. */
  alloc(lenOrData: number | Uint8Array, regionIndex?: number, align = 16): number {
    const m = this.mem();
    const len = typeof lenOrData === 'number' ? lenOrData : lenOrData.byteLength;
    const gpa = m.alloc(len, align, regionIndex);
    if (typeof lenOrData !== 'number') m.write(gpa, lenOrData);
    else m.bytes(gpa, len).fill(0);
    return gpa;
  }

  release(gpa: number, len: number): void {
    this.mem().release(gpa, len);
  }

  // --- virtio-blk ----------------------------------------------------------------

  /**
   * Build and submit one virtio-blk request: header (device-readable), `out`
   * data (readable) or `inLen` bytes (writable), 1-byte status (writable).
   * Returns the status, used length and the bytes the device wrote.
   */
  async blkRequest(
    qi: number,
    type: number,
    sector: bigint,
    out: Uint8Array | null,
    inLen: number,
    opts: DataOptions = {},
  ): Promise<BlkResult & { data: Uint8Array }> {
    const q = this.queue(qi);
    const m = this.mem();
    const dataLen = out ? out.byteLength : inLen;
    const total = 512 + dataLen + 1;
    const base = m.alloc(total, 512, opts.regionIndex);
    m.write(base, blkHeader(type, sector));
    const dataGpa = base + 512;
    if (out) m.write(dataGpa, out);
    else m.bytes(dataGpa, inLen).fill(0xa5);
    const statusGpa = dataGpa + dataLen;
    m.setU8(statusGpa, 0xff);
    const segs: Segment[] = [{ gpa: base, len: BLK_HDR_SIZE, writable: false }];
    if (dataLen > 0) {
      const n = Math.max(1, Math.min(opts.segments ?? 1, dataLen));
      const per = Math.ceil(dataLen / n);
      for (let off = 0; off < dataLen; off += per) {
        segs.push({ gpa: dataGpa + off, len: Math.min(per, dataLen - off), writable: out === null });
      }
    }
    segs.push({ gpa: statusGpa, len: 1, writable: true });
    const used = await q.submit(segs, opts.indirect === true);
    const result = { status: m.u8(statusGpa), usedLen: used.len, data: out ? new Uint8Array(0) : m.read(dataGpa, inLen) };
    m.release(base, total);
    return result;
  }

  async read(qi: number, sector: bigint | number, nbytes: number, opts?: DataOptions): Promise<BlkResult & { data: Uint8Array }> {
    return this.blkRequest(qi, BlkType.IN, BigInt(sector), null, nbytes, opts);
  }

  async write(qi: number, sector: bigint | number, data: Uint8Array, opts?: DataOptions): Promise<BlkResult> {
    const { status, usedLen } = await this.blkRequest(qi, BlkType.OUT, BigInt(sector), data, 0, opts);
    return { status, usedLen };
  }

  async flush(qi: number): Promise<BlkResult> {
    const { status, usedLen } = await this.blkRequest(qi, BlkType.FLUSH, 0n, null, 0);
    return { status, usedLen };
  }

  async getId(qi: number): Promise<BlkResult & { id: Uint8Array; text: string }> {
    const r = await this.blkRequest(qi, BlkType.GET_ID, 0n, null, BLK_ID_BYTES);
    let end = r.data.indexOf(0);
    if (end < 0) end = BLK_ID_BYTES;
    return { status: r.status, usedLen: r.usedLen, id: r.data, text: Buffer.from(r.data.subarray(0, end)).toString('latin1') };
  }

  async discard(qi: number, segs: { sector: bigint | number; numSectors: number; flags?: number }[]): Promise<BlkResult> {
    const body = concat(segs.map((s) => blkSegment(BigInt(s.sector), s.numSectors, s.flags ?? 0)));
    const { status, usedLen } = await this.blkRequest(qi, BlkType.DISCARD, 0n, body, 0);
    return { status, usedLen };
  }

  async writeZeroes(qi: number, segs: { sector: bigint | number; numSectors: number; flags?: number }[]): Promise<BlkResult> {
    const body = concat(segs.map((s) => blkSegment(BigInt(s.sector), s.numSectors, s.flags ?? 0)));
    const { status, usedLen } = await this.blkRequest(qi, BlkType.WRITE_ZEROES, 0n, body, 0);
    return { status, usedLen };
  }

  /**
   * Submit descriptors exactly as given (see RawDescriptor) and wait for the
   * used element. `statusGpa`: where the status byte is expected (pre-set to
   * 0xff, read back after completion).
   */
  async submitRaw(
    qi: number,
    descriptors: RawDescriptor[],
    opts: { statusGpa?: number; indirect?: boolean; rawNext?: boolean; indirectLen?: number } = {},
  ): Promise<BlkResult> {
    const q = this.queue(qi);
    const m = this.mem();
    if (opts.statusGpa !== undefined) m.setU8(opts.statusGpa, 0xff);
    const used: UsedElem = opts.indirect ? await q.submitIndirect(descriptors, opts.indirectLen) : await q.submitRaw(descriptors, opts.rawNext);
    return { status: opts.statusGpa !== undefined ? m.u8(opts.statusGpa) : -1, usedLen: used.len };
  }

  /** Helper for raw chains: a header buffer, returns its gpa. */
  header(type: number, sector: bigint | number, regionIndex?: number): number {
    return this.alloc(blkHeader(type, BigInt(sector)), regionIndex);
  }

  static desc(gpa: number | bigint, len: number, writable: boolean, next?: number): RawDescriptor {
    return { addr: BigInt(gpa), len, flags: (writable ? Desc.WRITE : 0) | (next !== undefined ? Desc.NEXT : 0), next };
  }

  /** Close the connection, the queues' eventfds and the guest memory. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.channel.close();
    this.backendChannel?.close();
    for (const q of this.queues.values()) q.close();
    this.queues.clear();
    for (const fds of this.initFds.values()) for (const f of fds) if (f >= 0) native.close(f);
    this.initFds.clear();
    this.memory?.close();
    this.memory = null;
  }
}
