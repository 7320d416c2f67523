/**
 * One vhost-user connection's state machine (back-end side), sans-IO: it
 * consumes one decoded message at a time and resolves with what the
 * connection must do — the reply (and fds riding on it), and effects
 * (signal a call eventfd, close fds the engine let go of, send a message on
 * the back-end channel). It performs no I/O itself: no socket call, no
 * write(2); the connection (connection.ts) owns the sockets and performs
 * every effect.
 *
 * It keeps the negotiated features, the guest memory table and every
 * virtqueue's setup, and drives the device through its VhostBackend
 * incrementally (backend.ts):
 *   - the device starts (backend.start) once memory and features are there
 *     and the first queue becomes ready, with every queue ready then;
 *   - a queue that becomes ready later starts alone (startQueue); one that
 *     stops being ready (SET_VRING_ENABLE 0, GET_VRING_BASE, a new kick fd,
 *     new ring size/addresses/base) stops alone (stopQueue → its RingPos);
 *   - SET_VRING_CALL on a running queue → setCallFd; the old fd is closed
 *     after it resolved;
 *   - a memory table change on a running device → updateMemory (quiesce,
 *     remap, resume); the old region fds are closed after it resolved;
 *   - a feature change, RESET_DEVICE or RESET_OWNER → stop (+ start again
 *     when something is ready).
 *
 * fd ownership: every fd received on the connection belongs to the session
 * from handle() on, as an OwnedFd (closed exactly once). A replaced or
 * removed fd is closed only once the engine no longer uses it: it goes out
 * as a `close` effect of the message that retired it, after the backend call
 * that let go of it resolved. close() closes everything left.
 *
 * Messages must be handled strictly one at a time (await each handle()).
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';
import type { InflightDesc, LogDesc, QueueDesc, RegionDesc, RingPos } from '../../engine/control';
import { inflightRegionBytes } from '../../engine/virtio/inflight';
import { packedInflightRegionBytes } from '../../engine/virtio/inflight-packed';

import { logBytesFor } from '../../engine/virtio/dirty-log';
import { VirtioFeature } from '../../engine/virtio/spec';
import { native } from '../../bindings';
import { inspectMappedFd, type MappedFdInfo } from '../fds';
import type { Logger } from '../log';
import type { BackendChannel, VhostBackend } from './backend';
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
  inflightPayload,
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
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_VRING_F_LOG,
} from './messages';
import { unsealedReason } from './memory-policy';
import { fdOf, OwnedFd } from './owned-fd';

const RING_PACKED = 1n << BigInt(VirtioFeature.RingPacked);

/** Something the connection must do on the session's behalf, in order. */
export type SessionEffect =
  /**
   * Add 1 to this call eventfd (nonblocking: EAGAIN means it is already
   * signalled). An fd that cannot be written at all (EBADF, EINVAL, EPERM...)
   * means the front-end gave a broken call fd: close the connection.
   */
  | { kind: 'signal'; queue: number; fd: OwnedFd }
  /** Close these fds: nothing uses them any more. */
  | { kind: 'close'; fds: OwnedFd[] }
  /** Send `bytes` on the back-end channel socket (SET_BACKEND_REQ_FD) without waiting. */
  | { kind: 'backendMessage'; fd: OwnedFd; bytes: Uint8Array; what: string }
  /** The device cannot go on (it failed in the engine): close the connection, logging `reason`. */
  | { kind: 'fail'; reason: string };

/** What handle() asks the connection to do. */
export interface HandleResult {
  /** Reply bytes to send, or null. */
  reply: Uint8Array | null;
  /** fds to pass with the reply (SCM_RIGHTS); still owned by the session. */
  fds: number[];
  /** To perform in order, before the reply is sent. */
  effects: SessionEffect[];
}

/** Where the connection performs effects that arise outside handle() (notifyConfigChange). */
export type EffectSink = (effects: SessionEffect[]) => void;

/** One virtqueue's setup as the front-end gave it. */
interface QueueState {
  readonly index: number;
  /** SET_VRING_NUM; 0 = not set. */
  size: number;
  /**
   * SET_VRING_ADDR (front-end virtual addresses); null = not set. logAddr:
   * log_guest_addr when VHOST_VRING_F_LOG was set (the ring's writes are
   * logged while LOG_ALL is negotiated), else null.
   */
  addr: { descAddr: number; availAddr: number; usedAddr: number; logAddr: number | null } | null;
  /** SET_VRING_BASE or where the queue last stopped; null = never set (the ring type's start). */
  pos: RingPos | null;
  /** SET_VRING_KICK seen since the last GET_VRING_BASE (the ring may run). */
  kickSet: boolean;
  /** The kick fd; null with kickSet = the front-end asked for polling. */
  kick: OwnedFd | null;
  call: OwnedFd | null;
  /** SET_VRING_ERR fd (kept, never used). */
  err: OwnedFd | null;
  /** SET_VRING_ENABLE. */
  enabled: boolean;
  /** The engine runs this queue (started, not stopped since). */
  running: boolean;
}

interface Region {
  desc: MemRegion;
  fd: OwnedFd;
}

/** The in-flight region the front-end handed over (SET_INFLIGHT_FD). */
interface InflightState {
  fd: OwnedFd;
  sizeBytes: number;
  mmapOffset: number;
  numQueues: number;
  queueSize: number;
}

/** The dirty log the front-end handed over (SET_LOG_BASE, LOG_SHMFD). */
interface LogState {
  fd: OwnedFd;
  sizeBytes: number;
  mmapOffset: number;
}

/** Largest dirty log accepted: 1 GiB of bits covers 32 TiB of guest-physical space. */
const MAX_LOG_BYTES = 2 ** 30;

/** A REPLY_ACK failure value (non-zero) the session survives. */
class SurvivableFailure extends Error {}

/** How many calls of each kind the session made, for logs and tests. */
export interface BackendCallCounts {
  start: number;
  stop: number;
  startQueue: number;
  stopQueue: number;
  setCallFd: number;
  updateMemory: number;
}

export class VhostUserSession implements BackendChannel {
  private features = 0n;
  private featuresSet = false;
  private protocolFeatures = 0n;
  private regions: Region[] = [];
  private readonly queues: QueueState[] = [];
  private backendReq: OwnedFd | null = null;
  private status = 0;
  private owner = false;
  /** SET_INFLIGHT_FD's region (INFLIGHT_SHMFD), given to the device at start. */
  private inflight: InflightState | null = null;
  /** SET_LOG_BASE's dirty log; the device logs into it while LOG_ALL is negotiated. */
  private logBase: LogState | null = null;
  /** The memfd made for the last GET_INFLIGHT_FD reply: it must live until that reply is sent. */
  private inflightOffered: OwnedFd | null = null;
  /** fds to send with the reply of the message being handled. */
  private replyFds: number[] = [];

  /** The device runs on the engine (start resolved, stop not yet called). */
  private deviceRunning = false;
  /** The features it was started with. */
  private runningFeatures = 0n;
  /** fds no longer referenced, safe to close (the engine call that let go of them resolved). */
  private retired: OwnedFd[] = [];
  private sink: EffectSink | null = null;
  private closed = false;
  private busy = false;
  readonly calls: BackendCallCounts = { start: 0, stop: 0, startQueue: 0, stopQueue: 0, setCallFd: 0, updateMemory: 0 };

  constructor(
    private readonly backend: VhostBackend,
    private readonly log: Logger,
  ) {
    for (let i = 0; i < backend.maxQueues; i++) {
      this.queues.push({
        index: i,
        size: 0,
        addr: null,
        pos: null,
        kickSet: false,
        kick: null,
        call: null,
        err: null,
        enabled: false,
        running: false,
      });
    }
    backend.attachSession?.(this);
  }

  /** The connection tells where effects that arise outside handle() go. */
  setEffectSink(sink: EffectSink | null): void {
    this.sink = sink;
  }

  /**
   * Tell the front-end that the config space changed
   * (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG on the SET_BACKEND_REQ_FD channel;
   * it then reads it again with GET_CONFIG). Sent without need_reply, as
   * DPDK's rte_vhost_backend_config_change(vid, false) does for SPDK, and
   * handed to the connection as an effect, which sends it without waiting:
   * the reactor never blocks on the front-end. False when BACKEND_REQ and
   * CONFIG were not both negotiated, there is no channel or no connection.
   */
  notifyConfigChange(): boolean {
    if (this.closed || this.backendReq === null || this.sink === null) return false;
    if (!this.hasProtocolFeature(ProtocolFeature.BackendReq) || !this.hasProtocolFeature(ProtocolFeature.Config)) return false;
    const bytes = encodeMessage(BackendRequest.ConfigChangeMsg, HeaderFlag.Version);
    this.sink([{ kind: 'backendMessage', fd: this.backendReq, bytes, what: 'config change notification' }]);
    this.log.info('config change notified', { ctrlr: this.backend.name });
    return true;
  }

  /** The engine failed the running device: the connection closes with the reason (issue #15 item 1). */
  deviceFailed(reason: string): void {
    if (this.closed || this.sink === null) return;
    this.sink([{ kind: 'fail', reason: `device failed in the engine: ${reason}` }]);
  }

  /** Is the device running (for status reporting)? */
  get started(): boolean {
    return this.deviceRunning;
  }

  /** Protocol features this session offers: what the backend asks for, limited to what is implemented. */
  private get offeredProtocolFeatures(): bigint {
    return this.backend.protocolFeatures & SUPPORTED_PROTOCOL_FEATURES;
  }

  private hasProtocolFeature(bit: ProtocolFeature): boolean {
    return (this.protocolFeatures & protocolBit(bit)) !== 0n;
  }

  private get packed(): boolean {
    return (this.features & RING_PACKED) !== 0n;
  }

  /**
   * Handle one message. Resolves with the reply and the effects to perform.
   * Throws ProtocolError on a protocol violation (the connection must then
   * close) and passes on backend failures. Takes ownership of every fd in
   * `msg`, whatever happens.
   */
  async handle(msg: VhostMessage): Promise<HandleResult> {
    const fds = messageFds(msg);
    if (this.closed || this.busy) {
      for (const fd of fds) closeFd(fd);
      throw new ProtocolError(
        this.closed ? 'message after the session closed' : 'messages must be handled one at a time',
      );
    }
    this.busy = true;
    // The reply that carried it went out: the front-end has its own copy now.
    if (this.inflightOffered !== null) {
      this.retire(this.inflightOffered);
      this.inflightOffered = null;
    }
    this.replyFds = [];
    const adopted = new Map<number, OwnedFd>();
    const effects: SessionEffect[] = [];
    this.log.debug('request', { ctrlr: this.backend.name, req: requestName(msg.request), needReply: msg.needReply });
    try {
      let reply: Uint8Array | null;
      let ack = 0n;
      try {
        reply = await this.dispatch(msg, adopted, effects);
      } catch (err) {
        if (!(err instanceof SurvivableFailure)) throw err;
        this.log.warn('request refused', { ctrlr: this.backend.name, req: requestName(msg.request), reason: err.message });
        reply = null;
        ack = 1n;
      }
      if (reply === null && msg.needReply && !requestReplies(msg.request) && this.hasProtocolFeature(ProtocolFeature.ReplyAck)) {
        reply = encodeReply(msg.request, 0, u64Payload(ack));
      }
      if (this.retired.length > 0) {
        effects.unshift({ kind: 'close', fds: this.retired });
        this.retired = [];
      }
      return { reply, fds: reply === null ? [] : this.replyFds, effects };
    } catch (err) {
      // A failure half-way: fds adopted by this message that no state refers to are closed here.
      const kept = this.referencedFds();
      for (const owned of adopted.values()) if (!kept.has(owned)) owned.close();
      throw err;
    } finally {
      // fds that no handler took over are ours to close (on errors, or the ones a handler ignores).
      for (const fd of fds) if (!adopted.has(fd)) closeFd(fd);
      this.busy = false;
    }
  }

  /** Every OwnedFd the session's state (or its retired list) refers to. */
  private referencedFds(): Set<OwnedFd> {
    const refs = new Set<OwnedFd>(this.retired);
    if (this.backendReq) refs.add(this.backendReq);
    if (this.inflight) refs.add(this.inflight.fd);
    if (this.logBase) refs.add(this.logBase.fd);
    if (this.inflightOffered) refs.add(this.inflightOffered);
    for (const r of this.regions) refs.add(r.fd);
    for (const q of this.queues) {
      for (const f of [q.kick, q.call, q.err]) if (f) refs.add(f);
    }
    return refs;
  }

  private queue(index: number, what: string): QueueState {
    const q = this.queues[index];
    if (index >= this.queues.length || !q) {
      throw new ProtocolError(`${what}: queue index ${index} out of range (device has ${this.queues.length} queues)`);
    }
    return q;
  }

  /** Take ownership of a message fd (-1: none). */
  private adopt(adopted: Map<number, OwnedFd>, fd: number): OwnedFd | null {
    if (fd < 0) return null;
    const owned = new OwnedFd(fd);
    adopted.set(fd, owned);
    return owned;
  }

  /**
   * Adopt a notification fd (kick, call, err, back-end channel) and make it
   * nonblocking, so that no thread ever blocks on it (issue #15): eventfds,
   * pipes and sockets honour O_NONBLOCK.
   */
  private adoptNonBlocking(adopted: Map<number, OwnedFd>, fd: number, what: string): OwnedFd | null {
    const owned = this.adopt(adopted, fd);
    if (owned === null) return null;
    try {
      native.fdSetNonBlocking(owned.fd);
    } catch (err) {
      throw new ProtocolError(`${what}: fd cannot be made nonblocking: ${(err as Error).message}`);
    }
    return owned;
  }

  /** fd is no longer referenced: closed with this message's effects (the caller made sure the engine let go). */
  private retire(fd: OwnedFd | null): void {
    if (fd !== null) this.retired.push(fd);
  }

  private async dispatch(msg: VhostMessage, adopted: Map<number, OwnedFd>, effects: SessionEffect[]): Promise<Uint8Array | null> {
    const name = requestName(msg.request);
    switch (msg.request) {
      case Request.GetFeatures:
        return encodeReply(msg.request, 0, u64Payload(this.backend.features));

      case Request.SetFeatures: {
        const extra = msg.features & ~this.backend.features;
        if (extra !== 0n) throw new ProtocolError(`${name}: features 0x${extra.toString(16)} were not offered`);
        // A change of features changes how every ring is read: stop, then start again with the new ones.
        if (this.deviceRunning && msg.features !== this.runningFeatures) await this.stopDevice('features changed');
        this.features = msg.features;
        this.featuresSet = true;
        this.log.debug('features set', { ctrlr: this.backend.name, features: `0x${msg.features.toString(16)}`, offered: `0x${this.backend.features.toString(16)}` });
        if ((msg.features & VHOST_F_LOG_ALL) !== 0n) {
          if (this.logBase === null) this.log.warn('LOG_ALL set before SET_LOG_BASE: nothing is logged until a log comes', { ctrlr: this.backend.name });
          else this.log.info('dirty logging requested (live migration)', { ctrlr: this.backend.name, logBytes: this.logBase.sizeBytes });
        }
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
        // Deprecated; the spec recommends ignoring it or disabling all rings. Stop the device and disable them.
        await this.stopDevice('RESET_OWNER');
        for (const q of this.queues) q.enabled = false;
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
        const ids = msg.regions.map((r) => checkRegionBacking(r, name));
        const fresh = msg.regions.map((r, i): Region & { id: string } => ({
          desc: regionOnly(r),
          fd: this.adopt(adopted, r.fd) as OwnedFd,
          id: ids[i],
        }));
        if (this.sameTable(fresh)) {
          // QEMU re-sends an unchanged table (new fd numbers, same files): keep the mapping, drop the copies.
          for (const r of fresh) this.retire(r.fd);
          return null;
        }
        await this.changeMemory(fresh.map(({ desc, fd }) => ({ desc, fd })), this.regions.map((r) => r.fd));
        return null;
      }

      case Request.AddMemReg: {
        if (this.regions.length >= MAX_MEM_SLOTS) {
          throw new ProtocolError(`${name}: already ${this.regions.length} regions, the limit is ${MAX_MEM_SLOTS}`);
        }
        checkRegionTable([...this.regions.map((r) => r.desc), msg.region], name);
        checkRegionBacking(msg.region, name);
        const added = { desc: regionOnly(msg.region), fd: this.adopt(adopted, msg.region.fd) as OwnedFd };
        await this.changeMemory([...this.regions, added], []);
        return null;
      }

      case Request.RemMemReg: {
        const i = this.regions.findIndex((r) => sameRegion(r.desc, msg.region));
        if (i < 0) {
          throw new SurvivableFailure(
            `${name}: no region gpa=0x${msg.region.guestPhysAddr.toString(16)} size=0x${msg.region.sizeBytes.toString(16)} uva=0x${msg.region.userAddr.toString(16)}`,
          );
        }
        await this.changeMemory(
          this.regions.filter((_, j) => j !== i),
          [this.regions[i].fd],
        );
        return null;
      }

      case Request.SetVringNum: {
        const q = this.queue(msg.index, name);
        if (msg.num < 1 || msg.num > MAX_QUEUE_SIZE || (!this.packed && (msg.num & (msg.num - 1)) !== 0)) {
          throw new ProtocolError(`${name}: queue ${msg.index} size ${msg.num} is not a power of 2 in 1..${MAX_QUEUE_SIZE}`);
        }
        await this.stopQueue(q, name);
        q.size = msg.num;
        await this.reconcile(q.index);
        return null;
      }

      case Request.SetVringAddr: {
        const q = this.queue(msg.index, name);
        await this.stopQueue(q, name);
        let logAddr: number | null = null;
        if ((msg.vringFlags & VHOST_VRING_F_LOG) !== 0) {
          if (msg.logAddr >= 1n << 53n) throw new ProtocolError(`${name}: log_guest_addr 0x${msg.logAddr.toString(16)} is not below 2^53`);
          logAddr = Number(msg.logAddr);
        }
        q.addr = { descAddr: msg.descAddr, availAddr: msg.availAddr, usedAddr: msg.usedAddr, logAddr };
        await this.reconcile(q.index);
        return null;
      }

      case Request.SetVringBase: {
        const q = this.queue(msg.index, name);
        const pos = decodeRingBase(msg.num, this.packed);
        if (pos === null) {
          // Issue #15 item 4: a split ring's index is a u16; a larger value is refused, not truncated.
          throw new SurvivableFailure(`${name}: queue ${msg.index} base ${msg.num} does not fit a split ring's 16-bit index`);
        }
        // The engine owns the position of a running queue: stop it first so its stop cannot overwrite this one.
        await this.stopQueue(q, name);
        q.pos = pos;
        await this.reconcile(q.index);
        return null;
      }

      case Request.GetVringBase: {
        const q = this.queue(msg.index, name);
        await this.stopQueue(q, name);
        // The ring is stopped now; it runs again after its next SET_VRING_KICK.
        this.retire(q.kick);
        q.kick = null;
        q.kickSet = false;
        return encodeReply(msg.request, 0, vringStatePayload(q.index, encodeRingBase(this.posOf(q), this.packed)));
      }

      case Request.SetVringKick: {
        const q = this.queue(msg.index, name);
        const kick = this.adoptNonBlocking(adopted, msg.fd, name);
        // The engine may wait on the old kick fd: the queue restarts with the new one.
        await this.stopQueue(q, name);
        this.retire(q.kick);
        q.kick = kick;
        q.kickSet = true;
        await this.reconcile(q.index);
        return null;
      }

      case Request.SetVringCall: {
        const q = this.queue(msg.index, name);
        const call = this.adoptNonBlocking(adopted, msg.fd, name);
        if (q.running) {
          this.calls.setCallFd++;
          await this.backend.setCallFd(q.index, fdOf(call));
        }
        // Not running: the engine does not know the old fd; running: setCallFd resolved, it let go of it.
        this.retire(q.call);
        q.call = call;
        // Completions signalled on the old fd may never reach the driver: signal the new one once
        // (a spurious interrupt is harmless; libvhost-user does the same).
        if (call !== null) effects.push({ kind: 'signal', queue: q.index, fd: call });
        return null;
      }

      case Request.SetVringErr: {
        const q = this.queue(msg.index, name);
        // The engine never uses err fds: the old one can go at once.
        const err = this.adoptNonBlocking(adopted, msg.fd, name);
        this.retire(q.err);
        q.err = err;
        return null;
      }

      case Request.SetVringEnable: {
        const q = this.queue(msg.index, name);
        q.enabled = msg.enable;
        await this.reconcile(q.index);
        return null;
      }

      case Request.SetBackendReqFd: {
        const fd = this.adoptNonBlocking(adopted, msg.fd, name);
        this.retire(this.backendReq);
        this.backendReq = fd;
        return null;
      }

      case Request.GetConfig: {
        // The offset is echoed; where it points is the codec's LIBERAL_READINGS rule: inside the device's
        // struct it is applied (the spec; crosvm forwards each guest config read), 0x100 + a struct offset
        // is rust-vmm's VHOST_USER_CONFIG_OFFSET base (cloud-hypervisor up to v50), anything else reads
        // from the start as DPDK, SPDK and libvhost-user answer. readConfig(n) is at least n bytes.
        const config = this.backend.readConfig(msg.size);
        const start = configReadStart(msg.offset, msg.size, this.backend.readConfig(0).byteLength);
        const data = config.subarray(start, start + msg.size);
        if (data.byteLength !== msg.size) {
          throw new ProtocolError(`${name}: backend config is ${config.byteLength} bytes, need ${msg.size}`);
        }
        return encodeReply(msg.request, 0, configPayload(msg.offset, msg.size, msg.configFlags, data));
      }

      case Request.SetConfig:
        if (!this.backend.writeConfig(msg.offset, msg.data)) {
          throw new SurvivableFailure(`${name}: the device refused ${msg.size} bytes at offset ${msg.offset}`);
        }
        return null;

      case Request.SetStatus:
        this.status = msg.status;
        return null;

      case Request.GetStatus:
        return encodeReply(msg.request, 0, u64Payload(this.status));

      case Request.GetInflightFd: {
        if (!this.hasProtocolFeature(ProtocolFeature.InflightShmfd)) throw new ProtocolError(`${name}: INFLIGHT_SHMFD was not negotiated`);
        checkInflightGeometry(msg.numQueues, msg.queueSize, this.queues.length, name);
        // QEMU sets the features before it asks (vhost_dev_prepare_inflight): the ring layout is known.
        const sizeBytes = (this.packed ? packedInflightRegionBytes : inflightRegionBytes)(msg.numQueues, msg.queueSize);
        let fd: number;
        try {
          fd = native.memfdCreate('vhostd-inflight', 0);
        } catch (err) {
          throw new SurvivableFailure(`${name}: cannot create the region: ${(err as Error).message}`);
        }
        const owned = new OwnedFd(fd);
        try {
          native.ftruncate(fd, sizeBytes);
        } catch (err) {
          owned.close();
          throw new SurvivableFailure(`${name}: cannot size the region: ${(err as Error).message}`);
        }
        // Zero-filled: every queue region reads version 0 (never used) until its queue first starts.
        this.inflightOffered = owned;
        this.replyFds = [fd];
        this.log.info('in-flight region offered', { ctrlr: this.backend.name, queues: msg.numQueues, queueSize: msg.queueSize, sizeBytes, layout: this.packed ? 'packed' : 'split' });
        return encodeReply(msg.request, 0, inflightPayload({ sizeBytes, mmapOffset: 0, numQueues: msg.numQueues, queueSize: msg.queueSize }));
      }

      case Request.SetLogBase: {
        const fd = this.adopt(adopted, msg.fd) as OwnedFd;
        if (!this.hasProtocolFeature(ProtocolFeature.LogShmfd)) throw new ProtocolError(`${name}: LOG_SHMFD was not negotiated`);
        this.checkLogSize(msg.sizeBytes, this.regions.map((r) => r.desc), name);
        if (msg.mmapOffset % 4096 !== 0) throw new ProtocolError(`${name}: mmap_offset ${msg.mmapOffset} is not page aligned`);
        let isFile = false;
        try {
          isFile = fs.fstatSync(fd.fd).isFile();
        } catch {
          isFile = false;
        }
        // The log is shared memory (QEMU: a sealed memfd); anything else cannot be mapped as one.
        if (!isFile) throw new ProtocolError(`${name}: the log fd is not a memory file (memfd, shm)`);
        checkRegionBacking({ fd: fd.fd, guestPhysAddr: 0, sizeBytes: msg.sizeBytes, userAddr: 0, mmapOffset: msg.mmapOffset }, name);
        // A device logging into the old log must move to the new one: stop, then start again with it.
        if (this.deviceRunning && this.logging) await this.stopDevice('dirty log replaced');
        if (this.logBase !== null) this.retire(this.logBase.fd);
        this.logBase = { fd, sizeBytes: msg.sizeBytes, mmapOffset: msg.mmapOffset };
        this.log.info('dirty log set', { ctrlr: this.backend.name, logBytes: msg.sizeBytes });
        await this.reconcile();
        // QEMU reads a reply (request SET_LOG_BASE) when LOG_SHMFD is negotiated; a u64 0 as libvhost-user sends.
        return encodeReply(msg.request, 0, u64Payload(0n));
      }

      case Request.SetLogFd:
        // An eventfd to signal after log writes (for front-ends that poll it): this back-end's log is
        // read by the front-end's own sync, so the fd is accepted and closed (not adopted).
        return null;

      case Request.SetInflightFd: {
        const fd = this.adopt(adopted, msg.fd) as OwnedFd;
        if (!this.hasProtocolFeature(ProtocolFeature.InflightShmfd)) throw new ProtocolError(`${name}: INFLIGHT_SHMFD was not negotiated`);
        checkInflightGeometry(msg.numQueues, msg.queueSize, this.queues.length, name);
        const need = (this.packed ? packedInflightRegionBytes : inflightRegionBytes)(msg.numQueues, msg.queueSize);
        if (msg.sizeBytes < need) {
          throw new ProtocolError(`${name}: mmap_size ${msg.sizeBytes} is smaller than ${need}, what ${msg.numQueues} queues of ${msg.queueSize} need`);
        }
        if (msg.sizeBytes > need + 65536) {
          throw new ProtocolError(`${name}: mmap_size ${msg.sizeBytes} is not the layout of ${msg.numQueues} queues of ${msg.queueSize} (${need} bytes)`);
        }
        checkRegionBacking({ fd: fd.fd, guestPhysAddr: 0, sizeBytes: msg.sizeBytes, userAddr: 0, mmapOffset: msg.mmapOffset }, name);
        if (msg.mmapOffset % 4096 !== 0) throw new ProtocolError(`${name}: mmap_offset ${msg.mmapOffset} is not page aligned`);
        // The running device writes the old region: stop it, then it starts again on the new one.
        await this.stopDevice('in-flight region replaced');
        if (this.inflight !== null) this.retire(this.inflight.fd);
        this.inflight = { fd, sizeBytes: msg.sizeBytes, mmapOffset: msg.mmapOffset, numQueues: msg.numQueues, queueSize: msg.queueSize };
        this.log.info('in-flight region set', { ctrlr: this.backend.name, queues: msg.numQueues, queueSize: msg.queueSize });
        await this.reconcile();
        return null;
      }
    }
  }

  /** RESET_DEVICE: stop, forget features, rings and memory (the connection, its owner and channel stay). */
  private async resetDevice(): Promise<void> {
    await this.stopDevice('RESET_DEVICE');
    for (const r of this.regions) this.retire(r.fd);
    this.regions = [];
    for (const q of this.queues) {
      this.retire(q.kick);
      this.retire(q.call);
      this.retire(q.err);
      Object.assign(q, { size: 0, addr: null, pos: null, kickSet: false, kick: null, call: null, err: null, enabled: false });
    }
    this.features = 0n;
    this.featuresSet = false;
    this.status = 0;
    // A reset driver has nothing in flight: a front-end that tracks asks for a new region.
    if (this.inflight !== null) this.retire(this.inflight.fd);
    this.inflight = null;
  }

  /** Is the current table the same as `fresh`: same layout, each region backed by the same file? */
  private sameTable(fresh: readonly (Region & { id: string })[]): boolean {
    if (fresh.length !== this.regions.length) return false;
    return fresh.every((f, i) => {
      const cur = this.regions[i];
      return sameLayout(cur.desc, f.desc) && fileId(cur.fd.fd) === f.id;
    });
  }

  /**
   * Replace the memory table with `next`; `dropped` are fds of regions that
   * are not in it any more. On a running device: queues whose rings no
   * longer lie in memory stop first, then the engine remaps (updateMemory),
   * and only then are the dropped fds closed; queues that fit again start.
   */
  private async changeMemory(next: Region[], dropped: OwnedFd[]): Promise<void> {
    const descs = next.map(regionDesc);
    if (this.deviceRunning) {
      if (next.length === 0) {
        await this.stopDevice('guest memory removed');
      } else {
        for (const q of this.queues) {
          if (!q.running || q.addr === null) continue;
          const bad = ringProblem(descs, q.size, q.addr, this.packed);
          if (bad === null) continue;
          this.log.warn('queue held back: ring outside guest memory', { ctrlr: this.backend.name, reason: `queue ${q.index}: ${bad}` });
          await this.stopQueue(q, 'memory change');
        }
        const logBase = this.logBase;
        if (this.logging && logBase !== null && logBase.sizeBytes < logBytesFor(next.reduce((m, r) => Math.max(m, r.desc.guestPhysAddr + r.desc.sizeBytes), 0))) {
          // QEMU grows the log before a table that needs more; writes past the log's end are not logged (never written).
          this.log.warn('dirty log smaller than the new memory table needs', { ctrlr: this.backend.name, logBytes: logBase.sizeBytes });
        }
        this.calls.updateMemory++;
        await this.backend.updateMemory(descs);
      }
    }
    this.regions = next;
    for (const fd of dropped) this.retire(fd);
    await this.reconcile();
  }

  /** Dirty logging is on: LOG_ALL negotiated and a log given. */
  private get logging(): boolean {
    return (this.features & VHOST_F_LOG_ALL) !== 0n && this.logBase !== null;
  }

  /** The dirty log for the device, when logging is on. */
  private logDesc(): LogDesc | undefined {
    const l = this.logBase;
    if (l === null || !this.logging) return undefined;
    return { fd: l.fd.fd, sizeBytes: l.sizeBytes, mmapOffset: l.mmapOffset };
  }

  /** A log of `sizeBytes` must hold a bit for every 4 KiB page below the end of the highest region. */
  private checkLogSize(sizeBytes: number, regions: readonly MemRegion[], what: string): void {
    if (sizeBytes < 1 || sizeBytes > MAX_LOG_BYTES) throw new ProtocolError(`${what}: log size ${sizeBytes} is not in 1..${MAX_LOG_BYTES}`);
    const end = regions.reduce((m, r) => Math.max(m, r.guestPhysAddr + r.sizeBytes), 0);
    const need = logBytesFor(end);
    if (sizeBytes < need) {
      throw new ProtocolError(`${what}: log of ${sizeBytes} bytes is smaller than the ${need} bytes guest memory up to 0x${end.toString(16)} needs`);
    }
  }

  /** The in-flight region for the device, when the front-end gave one and INFLIGHT_SHMFD is negotiated. */
  private inflightDesc(): InflightDesc | undefined {
    const i = this.inflight;
    if (i === null || !this.hasProtocolFeature(ProtocolFeature.InflightShmfd)) return undefined;
    return { fd: i.fd.fd, mmapOffset: i.mmapOffset, sizeBytes: i.sizeBytes, queueSize: i.queueSize, numQueues: i.numQueues };
  }

  /** A queue is ready when it has a size, ring addresses, a kick (fd or polling) and is enabled. */
  private isReady(q: QueueState): boolean {
    if (q.size === 0 || q.addr === null || !q.kickSet) return false;
    // Without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled by its kick alone.
    return (this.features & VHOST_USER_F_PROTOCOL_FEATURES) === 0n || q.enabled;
  }

  /** Where a queue resumes: what it was given or where it stopped; never set: the ring type's start. */
  private posOf(q: QueueState): RingPos {
    if (q.pos !== null) return q.pos;
    // virtio 1.2 §2.8.1: a packed ring's wrap counters start at 1.
    const wrap = this.packed;
    return { availIdx: 0, availWrap: wrap, usedIdx: 0, usedWrap: wrap };
  }

  private queueDesc(q: QueueState): QueueDesc {
    const addr = q.addr as NonNullable<QueueState['addr']>;
    return {
      index: q.index,
      size: q.size,
      descAddr: addr.descAddr,
      availAddr: addr.availAddr,
      usedAddr: addr.usedAddr,
      pos: { ...this.posOf(q) },
      kickFd: fdOf(q.kick),
      callFd: fdOf(q.call),
      ...(addr.logAddr !== null && this.logging ? { logUsedAddr: addr.logAddr } : {}),
    };
  }

  /**
   * Bring the engine in line with the state: running queues that are no
   * longer ready stop; ready queues start — with the device (start) when it
   * does not run yet, alone (startQueue) when it does. The device needs
   * features and memory. A ready queue whose rings do not each lie inside
   * one region is a protocol error when it is the queue the current message
   * set up (`strictQueue`); any other such queue is held back until the
   * memory covers it again.
   */
  private async reconcile(strictQueue: number | null = null): Promise<void> {
    for (const q of this.queues) {
      if (q.running && !this.isReady(q)) await this.stopQueue(q, 'not ready');
    }
    if (!this.featuresSet || this.regions.length === 0) return;
    const descs = this.regions.map(regionDesc);
    const ready: QueueState[] = [];
    for (const q of this.queues) {
      if (q.running || !this.isReady(q) || q.addr === null) continue;
      const bad = ringProblem(descs, q.size, q.addr, this.packed);
      if (bad !== null) {
        const reason = `queue ${q.index}: ${bad}`;
        if (q.index === strictQueue) throw new ProtocolError(reason);
        this.log.warn('queue held back: ring outside guest memory', { ctrlr: this.backend.name, reason });
        continue;
      }
      ready.push(q);
    }
    if (ready.length === 0) return;
    if (!this.deviceRunning) {
      this.log.info('starting device', {
        ctrlr: this.backend.name,
        queues: ready.map((q) => q.index).join(','),
        regions: descs.length,
      });
      this.calls.start++;
      await this.backend.start({
        features: this.features,
        regions: descs,
        queues: ready.map((q) => this.queueDesc(q)),
        ...(this.inflightDesc() ? { inflight: this.inflightDesc() } : {}),
        ...(this.logDesc() ? { log: this.logDesc() } : {}),
      });
      this.deviceRunning = true;
      this.runningFeatures = this.features;
      for (const q of ready) q.running = true;
      return;
    }
    for (const q of ready) {
      this.calls.startQueue++;
      await this.backend.startQueue(this.queueDesc(q));
      q.running = true;
      this.log.debug('queue started', { ctrlr: this.backend.name, queue: q.index });
    }
  }

  /** Stop one running queue (no-op otherwise) and keep where it ended. */
  private async stopQueue(q: QueueState, why: string): Promise<void> {
    if (!q.running) return;
    this.calls.stopQueue++;
    let r;
    try {
      r = await this.backend.stopQueue(q.index);
    } finally {
      // Once stopQueue settled the queue is not ours to stop again, even when it failed.
      q.running = false;
    }
    if (r.index !== q.index) throw new Error(`stopQueue(${q.index}) reported queue ${r.index}`);
    q.pos = { ...r.pos };
    this.log.debug('queue stopped', { ctrlr: this.backend.name, queue: q.index, why, availIdx: r.pos.availIdx });
  }

  /** Stop the running device (no-op otherwise) and keep where each queue ended. */
  private async stopDevice(why: string): Promise<void> {
    if (!this.deviceRunning) return;
    this.calls.stop++;
    let result;
    try {
      result = await this.backend.stop();
    } finally {
      // Once stop() settled the device is not ours to stop again, even when it failed.
      this.deviceRunning = false;
      for (const q of this.queues) q.running = false;
    }
    for (const r of result.queues) {
      const q = this.queues[r.index];
      if (q) q.pos = { ...r.pos };
      else this.log.warn('stop reported an unknown queue', { ctrlr: this.backend.name, queue: r.index });
    }
    // The controller logs the stop at info (once per event); the positions are protocol detail.
    this.log.debug('device stopped: queue positions', {
      ctrlr: this.backend.name,
      why,
      availIdx: result.queues.map((r) => `${r.index}:${r.pos.availIdx}`).join(','),
    });
  }

  /**
   * End of the connection: stop the device if it runs (errors are logged),
   * then close every fd the session owns. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.sink = null;
    this.backend.attachSession?.(null);
    try {
      await this.stopDevice('connection closed');
    } catch (err) {
      // The engine failed to stop: closing fds it might use is still better than leaking them forever.
      this.log.error('stop failed while closing', { ctrlr: this.backend.name, err: err as Error });
    }
    const all: (OwnedFd | null)[] = [...this.retired, this.backendReq, this.inflight?.fd ?? null, this.inflightOffered, this.logBase?.fd ?? null];
    this.logBase = null;
    this.retired = [];
    this.backendReq = null;
    this.inflight = null;
    this.inflightOffered = null;
    for (const r of this.regions) all.push(r.fd);
    this.regions = [];
    for (const q of this.queues) {
      all.push(q.kick, q.call, q.err);
      q.kick = q.call = q.err = null;
      q.kickSet = false;
    }
    for (const fd of all) fd?.close();
  }

  /** Snapshot for logs and tests. */
  describe(): {
    features: bigint;
    protocolFeatures: bigint;
    owner: boolean;
    status: number;
    regions: number;
    running: boolean;
    queues: { index: number; ready: boolean; running: boolean; pos: RingPos }[];
  } {
    return {
      features: this.features,
      protocolFeatures: this.protocolFeatures,
      owner: this.owner,
      status: this.status,
      regions: this.regions.length,
      running: this.deviceRunning,
      queues: this.queues.map((q) => ({ index: q.index, ready: this.isReady(q), running: q.running, pos: this.posOf(q) })),
    };
  }
}

/**
 * SET_VRING_BASE's num as a ring position (vhost-user.rst): a split ring's
 * next avail index is a u16 (null when num does not fit); a packed ring's
 * num has the avail index in bits 0-14 and the driver's wrap counter in bit
 * 15 and — as QEMU sends it, the layout Linux's vhost uses — the used index
 * in bits 16-30 and its wrap counter in bit 31. With bits 16-31 clear the
 * used position is taken equal to the avail one, as DPDK does (nothing is
 * in flight across a stop).
 */
export function decodeRingBase(num: number, packed: boolean): RingPos | null {
  if (!packed) {
    if (num > 0xffff) return null;
    return { availIdx: num, availWrap: false, usedIdx: num, usedWrap: false };
  }
  const availIdx = num & 0x7fff;
  const availWrap = (num & 0x8000) !== 0;
  if (num >>> 16 === 0) return { availIdx, availWrap, usedIdx: availIdx, usedWrap: availWrap };
  return { availIdx, availWrap, usedIdx: (num >>> 16) & 0x7fff, usedWrap: (num & 0x8000_0000) !== 0 };
}

/** GET_VRING_BASE's num in the same layout as decodeRingBase reads. */
export function encodeRingBase(pos: RingPos, packed: boolean): number {
  if (!packed) return pos.availIdx & 0xffff;
  return (
    ((pos.availIdx & 0x7fff) | (pos.availWrap ? 0x8000 : 0) | ((pos.usedIdx & 0x7fff) << 16) | (pos.usedWrap ? 0x8000_0000 : 0)) >>>
    0
  );
}

/** GET/SET_INFLIGHT_FD's queue count and size: 1..the device's queues, 1..MAX_QUEUE_SIZE. */
function checkInflightGeometry(numQueues: number, queueSize: number, maxQueues: number, what: string): void {
  if (numQueues < 1 || numQueues > maxQueues) throw new ProtocolError(`${what}: num_queues ${numQueues} is not in 1..${maxQueues}`);
  if (queueSize < 1 || queueSize > MAX_QUEUE_SIZE) throw new ProtocolError(`${what}: queue_size ${queueSize} is not in 1..${MAX_QUEUE_SIZE}`);
}

function regionOnly(r: MemRegion): MemRegion {
  return { guestPhysAddr: r.guestPhysAddr, sizeBytes: r.sizeBytes, userAddr: r.userAddr, mmapOffset: r.mmapOffset };
}

function regionDesc(r: Region): RegionDesc {
  return { fd: r.fd.fd, ...r.desc };
}

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
 * — memfd, shm, hugetlbfs — have a size to check.) Returns the file's
 * identity (device:inode).
 */
function checkRegionBacking(r: RegionDesc, what: string): string {
  let backing: MappedFdInfo;
  try {
    backing = inspectMappedFd(r.fd, r.mmapOffset, r.sizeBytes);
  } catch (err) {
    throw new ProtocolError(`${what}: region fd ${r.fd} cannot be inspected: ${(err as Error).message}`);
  }
  if (backing.beyond !== null) throw new ProtocolError(`${what}: region gpa=0x${r.guestPhysAddr.toString(16)} ${backing.beyond}`);
  // issue #15 item 4: memory that can shrink under the mapping would SIGBUS the engine.
  const unsealed = unsealedReason(r.fd);
  if (unsealed !== null) throw new ProtocolError(`${what}: region gpa=0x${r.guestPhysAddr.toString(16)} ${unsealed}`);
  return backing.id;
}

/** device:inode of an fd, or '' when it cannot be inspected (never equal to a real identity). */
function fileId(fd: number): string {
  try {
    const st = fs.fstatSync(fd);
    return `${st.dev}:${st.ino}`;
  } catch {
    return '';
  }
}

function overlaps(a: number, aLen: number, b: number, bLen: number): boolean {
  return a < b + bLen && b < a + aLen;
}

/** REM_MEM_REG identifies a region by guest address, user address and size (mmap offset ignored). */
function sameRegion(a: MemRegion, b: MemRegion): boolean {
  return a.guestPhysAddr === b.guestPhysAddr && a.userAddr === b.userAddr && a.sizeBytes === b.sizeBytes;
}

function sameLayout(a: MemRegion, b: MemRegion): boolean {
  return sameRegion(a, b) && a.mmapOffset === b.mmapOffset;
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

/** rust-vmm's vhost crate: the config space starts at this offset in a GET_CONFIG (VHOST_USER_CONFIG_OFFSET). */
const RUST_VMM_CONFIG_BASE = 0x100;

/**
 * Where a GET_CONFIG of `size` bytes at `offset` reads in a config space whose
 * device struct is `structLen` bytes (codec LIBERAL_READINGS): the offset when
 * the range lies inside the struct; offset - 0x100 when that range does; else 0.
 */
export function configReadStart(offset: number, size: number, structLen: number): number {
  if (offset + size <= structLen) return offset;
  if (offset >= RUST_VMM_CONFIG_BASE && offset - RUST_VMM_CONFIG_BASE + size <= structLen) return offset - RUST_VMM_CONFIG_BASE;
  return 0;
}
