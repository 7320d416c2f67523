/**
 * One vhost-user connection's state machine (back-end side). It consumes one
 * decoded message at a time and returns the reply bytes to send, if any; it
 * owns no socket (the connection does). It keeps the negotiated features, the
 * guest memory table and every virtqueue's setup, decides which queues are
 * ready, and starts/stops the device through its VhostBackend so that the
 * running device always matches the current state ("reconcile").
 *
 * fd ownership: every fd received on the connection belongs to the session
 * from handle() on, and is closed exactly once: a replaced or removed fd as
 * soon as the engine no longer uses it (after backend.stop() resolved when the
 * device was running with it), the rest on close().
 *
 * Messages must be handled strictly one at a time (await each handle()).
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';
import type { QueueDesc, RegionDesc } from '../../engine/control';
import { VirtioFeature } from '../../engine/virtio/spec';
import { log, type Logger } from '../log';
import type { BackendChannel, DeviceRunState, VhostBackend } from './backend';
import {
  closeFd,
  encodeReply,
  messageFds,
  ProtocolError,
  requestReplies,
  u64Payload,
  vringStatePayload,
  configPayload,
  encodeMessage,
  type MemRegion,
  type VhostMessage,
} from './codec';
import {
  BackendRequest,
  HeaderFlag,
  MAX_MEM_SLOTS,
  MAX_QUEUE_SIZE,
  ProtocolFeature,
  protocolBit,
  Request,
  requestName,
  SUPPORTED_PROTOCOL_FEATURES,
  VHOST_USER_F_PROTOCOL_FEATURES,
} from './messages';

const RING_PACKED = 1n << BigInt(VirtioFeature.RingPacked);

/** One virtqueue's setup as the front-end gave it. */
interface QueueState {
  readonly index: number;
  /** SET_VRING_NUM; 0 = not set. */
  size: number;
  /** SET_VRING_ADDR (front-end virtual addresses); null = not set. */
  addr: { descAddr: number; availAddr: number; usedAddr: number } | null;
  /** Next avail index: SET_VRING_BASE or what the last stop reported. */
  lastAvailIdx: number;
  /** SET_VRING_KICK: null = none since the last GET_VRING_BASE (ring stopped); -1 = polling. */
  kickFd: number | null;
  /** SET_VRING_CALL fd, or -1. */
  callFd: number;
  /** SET_VRING_ERR fd, or -1 (kept, never used). */
  errFd: number;
  /** SET_VRING_ENABLE. */
  enabled: boolean;
}

/** A REPLY_ACK failure value (non-zero) the session survives. */
class SurvivableFailure extends Error {}

export class VhostUserSession implements BackendChannel {
  private features = 0n;
  private protocolFeatures = 0n;
  private regions: RegionDesc[] = [];
  private readonly queues: QueueState[] = [];
  private backendReqFd = -1;
  private status = 0;
  private owner = false;

  /** The state the device runs with, or null when it is stopped. */
  private running: DeviceRunState | null = null;
  /** fds no longer referenced by the session's state, closed once the engine no longer uses them. */
  private retired: number[] = [];
  private closed = false;
  private busy = false;

  constructor(
    private readonly backend: VhostBackend,
    private readonly log: Logger,
  ) {
    for (let i = 0; i < backend.maxQueues; i++) {
      this.queues.push({
        index: i,
        size: 0,
        addr: null,
        lastAvailIdx: 0,
        kickFd: null,
        callFd: -1,
        errFd: -1,
        enabled: false,
      });
    }
    backend.attachSession?.(this);
  }

  /**
   * Tell the front-end that the config space changed
   * (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG on the SET_BACKEND_REQ_FD channel;
   * it then reads it again with GET_CONFIG). Sent without need_reply, as
   * DPDK's rte_vhost_backend_config_change(vid, false) does for SPDK, so the
   * reactor never waits for the front-end. False when BACKEND_REQ and CONFIG
   * were not both negotiated, there is no channel, or the send failed.
   */
  notifyConfigChange(): boolean {
    if (this.closed || this.backendReqFd < 0) return false;
    if (!this.hasProtocolFeature(ProtocolFeature.BackendReq) || !this.hasProtocolFeature(ProtocolFeature.Config)) return false;
    const msg = encodeMessage(BackendRequest.ConfigChangeMsg, HeaderFlag.Version);
    try {
      const n = fs.writeSync(this.backendReqFd, msg);
      if (n !== msg.byteLength) throw new Error(`short write (${n} of ${msg.byteLength} bytes)`);
    } catch (err) {
      this.log.warn('config change notification not sent', { ctrlr: this.backend.name, err: err as Error });
      return false;
    }
    this.log.info('config change notified', { ctrlr: this.backend.name });
    return true;
  }

  /** Is the device running (for status reporting)? */
  get started(): boolean {
    return this.running !== null;
  }

  /** Protocol features this session offers: what the backend asks for, limited to what is implemented. */
  private get offeredProtocolFeatures(): bigint {
    return this.backend.protocolFeatures & SUPPORTED_PROTOCOL_FEATURES;
  }

  private hasProtocolFeature(bit: ProtocolFeature): boolean {
    return (this.protocolFeatures & protocolBit(bit)) !== 0n;
  }

  /**
   * Handle one message. Resolves with the reply bytes (or null: nothing to
   * send). Throws ProtocolError on a protocol violation (the connection must
   * then close) and passes on backend start/stop failures. Takes ownership of
   * every fd in `msg`, whatever happens.
   */
  async handle(msg: VhostMessage): Promise<Uint8Array | null> {
    const fds = messageFds(msg);
    if (this.closed || this.busy) {
      for (const fd of fds) closeFd(fd);
      throw new ProtocolError(
        this.closed ? 'message after the session closed' : 'messages must be handled one at a time',
      );
    }
    this.busy = true;
    const adopted = new Set<number>();
    this.log.debug('request', { ctrlr: this.backend.name, req: requestName(msg.request), needReply: msg.needReply });
    try {
      let reply: Uint8Array | null;
      let ack = 0n;
      try {
        reply = await this.dispatch(msg, adopted);
      } catch (err) {
        if (!(err instanceof SurvivableFailure)) throw err;
        this.log.warn('request failed', { ctrlr: this.backend.name, req: requestName(msg.request), reason: err.message });
        reply = null;
        ack = 1n;
      }
      if (reply === null && msg.needReply && !requestReplies(msg.request) && this.hasProtocolFeature(ProtocolFeature.ReplyAck)) {
        reply = encodeReply(msg.request, 0, u64Payload(ack));
      }
      return reply;
    } finally {
      // fds that no handler took over are ours to close (on errors, or the ones a handler ignores).
      for (const fd of fds) if (!adopted.has(fd)) closeFd(fd);
      this.busy = false;
    }
  }

  private queue(index: number, what: string): QueueState {
    const q = this.queues[index];
    if (index >= this.queues.length || !q) {
      throw new ProtocolError(`${what}: queue index ${index} out of range (device has ${this.queues.length} queues)`);
    }
    return q;
  }

  /** Take ownership of fd (it is now referenced from session state). */
  private adopt(adopted: Set<number>, fd: number): number {
    if (fd >= 0) adopted.add(fd);
    return fd;
  }

  /** fd is no longer referenced by the session: close it once the engine cannot be using it. */
  private retire(fd: number | null): void {
    if (fd !== null && fd >= 0) this.retired.push(fd);
  }

  private async dispatch(msg: VhostMessage, adopted: Set<number>): Promise<Uint8Array | null> {
    const name = requestName(msg.request);
    switch (msg.request) {
      case Request.GetFeatures:
        return encodeReply(msg.request, 0, u64Payload(this.backend.features));

      case Request.SetFeatures: {
        const extra = msg.features & ~this.backend.features;
        if (extra !== 0n) throw new ProtocolError(`${name}: features 0x${extra.toString(16)} were not offered`);
        this.features = msg.features;
        await this.reconcile();
        return null;
      }

      case Request.GetProtocolFeatures:
        if (!(this.backend.features & VHOST_USER_F_PROTOCOL_FEATURES)) {
          throw new ProtocolError(`${name}: VHOST_USER_F_PROTOCOL_FEATURES was not offered`);
        }
        return encodeReply(msg.request, 0, u64Payload(this.offeredProtocolFeatures));

      case Request.SetProtocolFeatures: {
        if (!(this.backend.features & VHOST_USER_F_PROTOCOL_FEATURES)) {
          throw new ProtocolError(`${name}: VHOST_USER_F_PROTOCOL_FEATURES was not offered`);
        }
        const extra = msg.features & ~this.offeredProtocolFeatures;
        if (extra !== 0n) throw new ProtocolError(`${name}: protocol features 0x${extra.toString(16)} were not offered`);
        this.protocolFeatures = msg.features;
        return null;
      }

      case Request.SetOwner:
        this.owner = true;
        return null;

      case Request.ResetOwner:
        // Deprecated; the spec recommends ignoring it or disabling all rings. Disable them.
        for (const q of this.queues) q.enabled = false;
        await this.reconcile();
        return null;

      case Request.ResetDevice:
        await this.resetDevice();
        return null;

      case Request.GetQueueNum:
        return encodeReply(msg.request, 0, u64Payload(this.backend.maxQueues));

      case Request.GetMaxMemSlots:
        return encodeReply(msg.request, 0, u64Payload(MAX_MEM_SLOTS));

      case Request.SetMemTable: {
        checkRegionTable(msg.regions, name);
        for (const r of msg.regions) checkRegionBacking(r, name);
        for (const r of msg.regions) this.adopt(adopted, r.fd);
        for (const r of this.regions) this.retire(r.fd);
        this.regions = msg.regions.map((r) => ({ ...r }));
        await this.reconcile();
        return null;
      }

      case Request.AddMemReg: {
        if (this.regions.length >= MAX_MEM_SLOTS) {
          throw new ProtocolError(`${name}: already ${this.regions.length} regions, the limit is ${MAX_MEM_SLOTS}`);
        }
        checkRegionTable([...this.regions, msg.region], name);
        checkRegionBacking(msg.region, name);
        this.regions = [...this.regions, { ...msg.region }];
        this.adopt(adopted, msg.region.fd);
        await this.reconcile();
        return null;
      }

      case Request.RemMemReg: {
        const i = this.regions.findIndex((r) => sameRegion(r, msg.region));
        if (i < 0) {
          throw new SurvivableFailure(
            `${name}: no region gpa=0x${msg.region.guestPhysAddr.toString(16)} size=0x${msg.region.sizeBytes.toString(16)} uva=0x${msg.region.userAddr.toString(16)}`,
          );
        }
        this.retire(this.regions[i].fd);
        this.regions = this.regions.filter((_, j) => j !== i);
        await this.reconcile();
        return null;
      }

      case Request.SetVringNum: {
        const q = this.queue(msg.index, name);
        const packed = (this.features & RING_PACKED) !== 0n;
        if (msg.num < 1 || msg.num > MAX_QUEUE_SIZE || (!packed && (msg.num & (msg.num - 1)) !== 0)) {
          throw new ProtocolError(`${name}: queue ${msg.index} size ${msg.num} is not a power of 2 in 1..${MAX_QUEUE_SIZE}`);
        }
        q.size = msg.num;
        await this.reconcile(q.index);
        return null;
      }

      case Request.SetVringAddr: {
        const q = this.queue(msg.index, name);
        q.addr = { descAddr: msg.descAddr, availAddr: msg.availAddr, usedAddr: msg.usedAddr };
        await this.reconcile(q.index);
        return null;
      }

      case Request.SetVringBase: {
        const q = this.queue(msg.index, name);
        // The engine owns the index of a running queue: stop it first so the stop cannot overwrite this value.
        if (this.isRunningQueue(q.index)) await this.stopDevice();
        q.lastAvailIdx = msg.num;
        await this.reconcile(q.index);
        return null;
      }

      case Request.GetVringBase: {
        const q = this.queue(msg.index, name);
        if (this.isRunningQueue(q.index)) await this.stopDevice();
        // The ring is stopped now; it starts again with its next SET_VRING_KICK.
        this.retire(q.kickFd);
        q.kickFd = null;
        const reply = encodeReply(msg.request, 0, vringStatePayload(q.index, q.lastAvailIdx));
        await this.reconcile(q.index);
        return reply;
      }

      case Request.SetVringKick: {
        const q = this.queue(msg.index, name);
        this.retire(q.kickFd);
        q.kickFd = this.adopt(adopted, msg.fd);
        await this.reconcile(q.index);
        return null;
      }

      case Request.SetVringCall: {
        const q = this.queue(msg.index, name);
        this.retire(q.callFd);
        q.callFd = this.adopt(adopted, msg.fd);
        await this.reconcile(q.index);
        // Completions signalled on the old fd may never reach the driver: signal the new one once
        // (a spurious interrupt is harmless; libvhost-user does the same).
        signalEventfd(q.callFd);
        return null;
      }

      case Request.SetVringErr: {
        const q = this.queue(msg.index, name);
        // The engine never uses err fds: the old one can go at once.
        closeFd(q.errFd);
        q.errFd = this.adopt(adopted, msg.fd);
        return null;
      }

      case Request.SetVringEnable: {
        const q = this.queue(msg.index, name);
        q.enabled = msg.enable;
        await this.reconcile(q.index);
        return null;
      }

      case Request.SetBackendReqFd:
        closeFd(this.backendReqFd);
        this.backendReqFd = this.adopt(adopted, msg.fd);
        return null;

      case Request.GetConfig: {
        // readConfig(n) is at least n bytes from offset 0.
        const config = this.backend.readConfig(msg.offset + msg.size);
        const data = config.subarray(msg.offset, msg.offset + msg.size);
        if (data.byteLength !== msg.size) {
          throw new ProtocolError(`${name}: backend config is ${config.byteLength} bytes, need ${msg.offset + msg.size}`);
        }
        return encodeReply(msg.request, 0, configPayload(msg.offset, msg.size, msg.configFlags, data));
      }

      case Request.SetConfig:
        // Nothing in the config space is writable yet: accept and ignore (QEMU writes e.g. wce).
        this.log.debug('SET_CONFIG ignored', { ctrlr: this.backend.name, offset: msg.offset, size: msg.size });
        return null;

      case Request.SetStatus:
        this.status = msg.status;
        return null;

      case Request.GetStatus:
        return encodeReply(msg.request, 0, u64Payload(this.status));
    }
  }

  /** RESET_DEVICE: stop, forget features, rings and memory (the connection and its owner stay). */
  private async resetDevice(): Promise<void> {
    if (this.running) await this.stopDevice();
    for (const r of this.regions) this.retire(r.fd);
    this.regions = [];
    for (const q of this.queues) {
      this.retire(q.kickFd);
      this.retire(q.callFd);
      closeFd(q.errFd);
      Object.assign(q, { size: 0, addr: null, lastAvailIdx: 0, kickFd: null, callFd: -1, errFd: -1, enabled: false });
    }
    this.features = 0n;
    this.status = 0;
    this.closeRetired();
  }

  private isRunningQueue(index: number): boolean {
    return this.running !== null && this.running.queues.some((q) => q.index === index);
  }

  /** A queue is ready when it has a size, ring addresses, a kick (fd or polling) and is enabled. */
  private isReady(q: QueueState): boolean {
    if (q.size === 0 || q.addr === null || q.kickFd === null) return false;
    // Without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled by its kick alone.
    return (this.features & VHOST_USER_F_PROTOCOL_FEATURES) === 0n || q.enabled;
  }

  /**
   * The state the device should run with, or null if it should not run.
   * A ready queue whose rings do not each lie inside one region is a protocol
   * error when it is the queue the current message set up (`strictQueue`);
   * any other such queue (after a memory change, say) is held back until the
   * memory covers it again.
   */
  private desiredState(strictQueue: number | null, logHeld: boolean): DeviceRunState | null {
    if (this.regions.length === 0) return null;
    const packed = (this.features & RING_PACKED) !== 0n;
    const queues: QueueDesc[] = [];
    for (const q of this.queues) {
      if (!this.isReady(q) || q.addr === null || q.kickFd === null) continue;
      const bad = ringProblem(this.regions, q.size, q.addr, packed);
      if (bad !== null) {
        const reason = `queue ${q.index}: ${bad}`;
        if (q.index === strictQueue) throw new ProtocolError(reason);
        if (logHeld) this.log.warn('queue held back: ring outside guest memory', { ctrlr: this.backend.name, reason });
        continue;
      }
      queues.push({
        index: q.index,
        size: q.size,
        descAddr: q.addr.descAddr,
        availAddr: q.addr.availAddr,
        usedAddr: q.addr.usedAddr,
        lastAvailIdx: q.lastAvailIdx,
        kickFd: q.kickFd,
        callFd: q.callFd,
      });
    }
    if (queues.length === 0) return null;
    return { features: this.features, regions: this.regions.map((r) => ({ ...r })), queues };
  }

  /** Make the device run with the current state: stop it if it differs, start it if anything is ready. */
  private async reconcile(strictQueue: number | null = null): Promise<void> {
    const want = this.desiredState(strictQueue, false);
    if (this.running && (want === null || !sameRunState(this.running, want))) await this.stopDevice();
    this.closeRetired();
    if (this.running) return;
    // Recompute: the stop may have moved the queues' avail indexes.
    const start = this.desiredState(strictQueue, true);
    if (start === null) return;
    this.log.info('starting device', {
      ctrlr: this.backend.name,
      queues: start.queues.map((q) => q.index).join(','),
      regions: start.regions.length,
    });
    await this.backend.start(start);
    this.running = start;
  }

  /** Stop the running device and keep each queue's next avail index. */
  private async stopDevice(): Promise<void> {
    if (!this.running) return;
    const was = this.running;
    let result;
    try {
      result = await this.backend.stop();
    } finally {
      // Once stop() settled the device is not ours to stop again, even when it failed.
      this.running = null;
    }
    for (const r of result.queues) {
      const q = this.queues[r.index];
      if (q && was.queues.some((w) => w.index === r.index)) q.lastAvailIdx = r.lastAvailIdx;
      else this.log.warn('stop reported an unknown queue', { ctrlr: this.backend.name, queue: r.index });
    }
    this.log.info('device stopped', {
      ctrlr: this.backend.name,
      lastAvail: result.queues.map((r) => `${r.index}:${r.lastAvailIdx}`).join(','),
    });
    this.closeRetired();
  }

  /** Close retired fds, unless the running device still uses them. */
  private closeRetired(): void {
    if (this.retired.length === 0) return;
    const inUse = new Set<number>();
    if (this.running) {
      for (const r of this.running.regions) inUse.add(r.fd);
      for (const q of this.running.queues) {
        inUse.add(q.kickFd);
        inUse.add(q.callFd);
      }
    }
    const keep: number[] = [];
    for (const fd of this.retired) {
      if (inUse.has(fd)) keep.push(fd);
      else closeFd(fd);
    }
    this.retired = keep;
  }

  /**
   * End of the connection: stop the device if it runs (errors are logged),
   * then close every fd the session owns. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.backend.attachSession?.(null);
    if (this.running) {
      try {
        await this.stopDevice();
      } catch (err) {
        // The engine failed to stop: closing fds it might use is still better than leaking them forever.
        this.log.error('stop failed while closing', { ctrlr: this.backend.name, err: err as Error });
        this.running = null;
      }
    }
    const all = new Set<number>(this.retired);
    this.retired = [];
    for (const r of this.regions) all.add(r.fd);
    this.regions = [];
    for (const q of this.queues) {
      if (q.kickFd !== null) all.add(q.kickFd);
      all.add(q.callFd);
      all.add(q.errFd);
      q.kickFd = null;
      q.callFd = -1;
      q.errFd = -1;
    }
    all.add(this.backendReqFd);
    this.backendReqFd = -1;
    for (const fd of all) closeFd(fd);
  }

  /** Snapshot for logs and tests. */
  describe(): {
    features: bigint;
    protocolFeatures: bigint;
    owner: boolean;
    status: number;
    regions: number;
    running: boolean;
    queues: { index: number; ready: boolean; lastAvailIdx: number }[];
  } {
    return {
      features: this.features,
      protocolFeatures: this.protocolFeatures,
      owner: this.owner,
      status: this.status,
      regions: this.regions.length,
      running: this.running !== null,
      queues: this.queues.map((q) => ({ index: q.index, ready: this.isReady(q), lastAvailIdx: q.lastAvailIdx })),
    };
  }
}

/** Add 1 to an eventfd's counter; a full counter (EAGAIN) already means "signalled". */
function signalEventfd(fd: number): void {
  if (fd < 0) return;
  try {
    fs.writeSync(fd, ONE);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EAGAIN') log('warn', 'vhost', 'cannot signal call fd', { fd, code });
  }
}
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

/** Region table checks: at most MAX_MEM_SLOTS, no two regions overlapping in guest-physical or user space. */
function checkRegionTable(regions: readonly MemRegion[], what: string): void {
  if (regions.length > MAX_MEM_SLOTS) throw new ProtocolError(`${what}: ${regions.length} regions, limit ${MAX_MEM_SLOTS}`);
  // Values and ends are < 2^53 (codec), so plain number arithmetic is exact.
  for (let i = 0; i < regions.length; i++) {
    for (let j = i + 1; j < regions.length; j++) {
      const a = regions[i];
      const b = regions[j];
      if (overlaps(a.guestPhysAddr, a.sizeBytes, b.guestPhysAddr, b.sizeBytes)) {
        throw new ProtocolError(`${what}: regions ${i} and ${j} overlap in guest physical addresses`);
      }
      if (overlaps(a.userAddr, a.sizeBytes, b.userAddr, b.sizeBytes)) {
        throw new ProtocolError(`${what}: regions ${i} and ${j} overlap in front-end virtual addresses`);
      }
    }
  }
}

/**
 * A region must lie inside the file behind its fd: mapping past the end of a
 * memfd or file and touching it would SIGBUS the engine. (Only regular files
 * — memfd, shm, hugetlbfs — have a size to check.)
 */
function checkRegionBacking(r: RegionDesc, what: string): void {
  let st: fs.Stats;
  try {
    st = fs.fstatSync(r.fd);
  } catch (err) {
    throw new ProtocolError(`${what}: region fd ${r.fd} cannot be inspected: ${(err as Error).message}`);
  }
  if (st.isFile() && r.mmapOffset + r.sizeBytes > st.size) {
    throw new ProtocolError(
      `${what}: region gpa=0x${r.guestPhysAddr.toString(16)} needs bytes up to ${r.mmapOffset + r.sizeBytes} of its fd, which has ${st.size}`,
    );
  }
}

function overlaps(a: number, aLen: number, b: number, bLen: number): boolean {
  return a < b + bLen && b < a + aLen;
}

/** REM_MEM_REG identifies a region by guest address, user address and size (mmap offset ignored). */
function sameRegion(a: MemRegion, b: MemRegion): boolean {
  return a.guestPhysAddr === b.guestPhysAddr && a.userAddr === b.userAddr && a.sizeBytes === b.sizeBytes;
}

/** Does [uva, uva+len) lie inside one region's front-end virtual range? */
function inOneRegion(regions: readonly RegionDesc[], uva: number, len: number): boolean {
  return regions.some((r) => uva >= r.userAddr && len <= r.sizeBytes && uva - r.userAddr <= r.sizeBytes - len);
}

/**
 * Ring extents (virtio 1.2 §2.7.5-§2.7.8 split: desc 16·n, avail 6+2·n
 * (flags, idx, ring, used_event), used 6+8·n (flags, idx, ring, avail_event);
 * §2.8.10 packed: desc 16·n, two 4-byte event suppression areas).
 * Returns why a ring does not fit in one region, or null.
 */
function ringProblem(
  regions: readonly RegionDesc[],
  size: number,
  addr: { descAddr: number; availAddr: number; usedAddr: number },
  packed: boolean,
): string | null {
  const parts: [string, number, number][] = packed
    ? [
        ['descriptor ring', addr.descAddr, 16 * size],
        ['driver event area', addr.availAddr, 4],
        ['device event area', addr.usedAddr, 4],
      ]
    : [
        ['descriptor table', addr.descAddr, 16 * size],
        ['available ring', addr.availAddr, 6 + 2 * size],
        ['used ring', addr.usedAddr, 6 + 8 * size],
      ];
  for (const [what, uva, len] of parts) {
    if (!inOneRegion(regions, uva, len)) {
      return `${what} at 0x${uva.toString(16)} (${len} bytes) does not lie inside one memory region`;
    }
  }
  return null;
}

function sameRunState(a: DeviceRunState, b: DeviceRunState): boolean {
  if (a.features !== b.features || a.regions.length !== b.regions.length || a.queues.length !== b.queues.length) {
    return false;
  }
  for (let i = 0; i < a.regions.length; i++) {
    const x = a.regions[i];
    const y = b.regions[i];
    if (
      x.fd !== y.fd ||
      x.guestPhysAddr !== y.guestPhysAddr ||
      x.sizeBytes !== y.sizeBytes ||
      x.userAddr !== y.userAddr ||
      x.mmapOffset !== y.mmapOffset
    ) {
      return false;
    }
  }
  // lastAvailIdx is left out: the running engine moves it.
  for (let i = 0; i < a.queues.length; i++) {
    const x = a.queues[i];
    const y = b.queues[i];
    if (
      x.index !== y.index ||
      x.size !== y.size ||
      x.descAddr !== y.descAddr ||
      x.availAddr !== y.availAddr ||
      x.usedAddr !== y.usedAddr ||
      x.kickFd !== y.kickFd ||
      x.callFd !== y.callFd
    ) {
      return false;
    }
  }
  return true;
}
