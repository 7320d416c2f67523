/**
 * Replayed VMM front-ends for the interop matrix (test/integration/interop.test.ts):
 * the vhost-user-blk message sequences cloud-hypervisor and crosvm send when a
 * guest boots, rebuilt from their sources (facts only; every line written
 * here) on top of the in-repo front-end (frontend.ts, frontend-wire.ts):
 * the same requests in the same order, the same header flags (need_reply or
 * not), payload sizes, fds and config offsets/sizes, and the same feature
 * masks. The guest's part (which features a Linux virtio_blk driver acks,
 * which config fields it reads) is modelled as a Linux 6.x guest does it.
 *
 * Sources read:
 * - cloud-hypervisor ae44c2971c83 (2026-08, after v51) and v50's GET_CONFIG
 *   offset (commit 15d34ffeb, first in v51, changed it from rust-vmm's
 *   VHOST_USER_CONFIG_OFFSET = 0x100 to 0): virtio-devices/src/vhost_user/
 *   {blk.rs, vu_common_ctrl.rs, mod.rs}; the rust-vmm vhost crate 4e217d992c57
 *   (vhost/src/vhost_user/frontend.rs: which requests wait for an ack).
 * - crosvm f1e797a68dad (2026-08): devices/src/virtio/vhost_user_frontend/mod.rs,
 *   third_party/vmm_vhost/src/backend_client.rs, devices/src/virtio/mod.rs
 *   (base_features), device_constants.rs (the device-type feature mask).
 *
 * Each replay returns the trace of what it sent, so the test can show the
 * sequence and the lead can compare it with the sources.
 * Thread: the test's main thread.
 */
import { native } from '../../bindings';
import { type NegotiateResult, VhostUserFrontend } from './frontend';
import { GuestMemory, type RegionSpec } from './frontend-memory';
import { SplitQueue } from './frontend-ring';
import {
  BLK_COMMON_BITS,
  bit,
  type BlkConfig,
  configMsg,
  decodeBlkConfig,
  Flags,
  hasBit,
  memTable,
  ProtoBit,
  readU32,
  readU64,
  Req,
  u64,
  VirtioBit,
  vringAddr,
  vringFdPayload,
  vringState,
} from './frontend-wire';

const REQ_NAMES = new Map<number, string>(Object.entries(Req).map(([k, v]) => [v, k]));

/** One message a replay sent. */
export interface TraceEntry {
  request: string;
  flags: number;
  /** Header size field (payload bytes). */
  size: number;
  fds: number;
  /** GET_CONFIG: offset/size/flags asked. */
  note?: string;
}

export interface ReplayResult {
  fe: VhostUserFrontend;
  trace: TraceEntry[];
  offeredFeatures: bigint;
  /** What SET_FEATURES carried. */
  features: bigint;
  offeredProtocolFeatures: bigint;
  protocolFeatures: bigint;
  queueNum: number;
  /** The config as the guest saw it. */
  config: BlkConfig;
  /** The queues started, in order. */
  queues: number[];
}

export interface ReplayOptions {
  /** Request queues the VMM was configured with (--disk num_queues= / the backend's count for crosvm). */
  numQueues: number;
  queueSize: number;
}

/** Protocol bits not in frontend-wire.ts (vhost-user.rst numbering). */
const ProtoExtra = { DEVICE_STATE: 19, SHMEM_CHV: 21, SHMEM_CROSVM: 22 } as const;
/** Virtio bits not in frontend-wire.ts. */
const VBit = { LOG_ALL: 26, IN_ORDER: 35, ORDER_PLATFORM: 36, NOTIFICATION_DATA: 38, SUSPEND_CROSVM: 42 } as const;

/** What a Linux 6.x virtio_blk driver (with virtio_ring) acks when offered. */
const LINUX_GUEST_ACKS =
  BLK_COMMON_BITS |
  bit(VirtioBit.BLK_MQ) |
  bit(VirtioBit.RING_INDIRECT_DESC) |
  bit(VirtioBit.RING_EVENT_IDX) |
  bit(VirtioBit.VERSION_1) |
  bit(VBit.ORDER_PLATFORM) |
  bit(VBit.NOTIFICATION_DATA);

/**
 * The config reads a Linux 6.x virtio_blk probe makes for the acked features,
 * as [offset, width]: 8-byte fields are two 4-byte reads on virtio-pci modern.
 * crosvm forwards each as one GET_CONFIG (read_config(offset, data) → get_config).
 */
function linuxConfigReads(acked: bigint): [number, number][] {
  const r: [number, number][] = [];
  if (hasBit(acked, VirtioBit.BLK_SEG_MAX)) r.push([12, 4]);
  if (hasBit(acked, VirtioBit.BLK_MQ)) r.push([34, 2]);
  if (hasBit(acked, VirtioBit.BLK_SIZE_MAX)) r.push([8, 4]);
  if (hasBit(acked, VirtioBit.BLK_BLK_SIZE)) r.push([20, 4]);
  if (hasBit(acked, VirtioBit.BLK_TOPOLOGY)) r.push([24, 1], [25, 1], [26, 2], [28, 4]);
  if (hasBit(acked, VirtioBit.BLK_DISCARD)) r.push([36, 4], [44, 4], [40, 4]);
  if (hasBit(acked, VirtioBit.BLK_WRITE_ZEROES)) r.push([48, 4], [52, 4], [56, 1]);
  if (hasBit(acked, VirtioBit.BLK_CONFIG_WCE)) r.push([32, 1]);
  r.push([0, 4], [4, 4]);
  return r;
}

/** Sends messages with a fixed header-flag policy and records them; checks replies as the VMM's client does. */
class Replayer {
  readonly trace: TraceEntry[] = [];
  /** Header flags for every request from now on (cloud-hypervisor switches to NEED_REPLY after REPLY_ACK). */
  flags: number = Flags.VERSION;
  replyAck = false;

  constructor(readonly fe: VhostUserFrontend) {}

  /** A request without its own reply; waits for the ack when the flags ask for one (and REPLY_ACK is on). */
  async send(type: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], note?: string): Promise<void> {
    this.record(type, payload, fds, note);
    const waitAck = this.replyAck && (this.flags & Flags.NEED_REPLY) !== 0;
    await this.fe.request(type, payload, fds, { flags: this.flags, needReply: waitAck });
  }

  /** A request with its own reply (GET_*): the reply alone, whatever the need_reply flag says. */
  async get(type: number, payload: Uint8Array = new Uint8Array(0), note?: string): Promise<{ payload: Uint8Array; fds: number[] }> {
    this.record(type, payload, [], note);
    const r = await this.fe.request(type, payload, [], { flags: this.flags });
    if (!r) throw new Error(`no reply to ${REQ_NAMES.get(type)}`);
    return { payload: r.payload, fds: r.fds };
  }

  async getU64(type: number): Promise<bigint> {
    const r = await this.get(type);
    for (const f of r.fds) native.close(f);
    if (r.payload.byteLength !== 8) throw Object.assign(new Error(`${REQ_NAMES.get(type)} reply of ${r.payload.byteLength} bytes`), { code: 'EBADREPLY' });
    return readU64(r.payload);
  }

  /**
   * GET_CONFIG as both VMMs' clients send it: the 12-byte header plus `size`
   * zero bytes; the reply must echo offset and size and carry `size` bytes
   * (vhost crate / vmm_vhost get_config checks).
   */
  async getConfig(offset: number, size: number, flags: number): Promise<Uint8Array> {
    const r = await this.get(Req.GET_CONFIG, configMsg(offset, size, flags), `offset 0x${offset.toString(16)} size ${size} flags ${flags}`);
    for (const f of r.fds) native.close(f);
    const p = r.payload;
    if (p.byteLength < 12 || readU32(p, 0) !== offset || readU32(p, 4) !== size || p.byteLength !== 12 + size) {
      throw Object.assign(new Error(`GET_CONFIG reply does not echo offset ${offset} size ${size} (${p.byteLength} bytes)`), { code: 'EBADREPLY' });
    }
    return p.slice(12);
  }

  /** The guest's memory is `mem`: the front-end maps it and SET_MEM_TABLE sends its regions (both VMMs). */
  async memTable(mem: GuestMemory): Promise<void> {
    this.fe.memory = mem;
    await this.send(
      Req.SET_MEM_TABLE,
      memTable(mem.regions.map((r) => r.wire())),
      mem.regions.map((r) => r.fd),
    );
  }

  /** The replay is done: what was negotiated, recorded on the front-end (its blk helpers read it) and returned with the trace. */
  finish(n: Omit<NegotiateResult, 'maxMemSlots' | 'config'> & { config: BlkConfig }, queues: SplitQueue[]): ReplayResult {
    this.fe.negotiated = { ...n, maxMemSlots: 0 };
    const { rawConfig: _raw, ...seen } = n;
    return { fe: this.fe, trace: this.trace, ...seen, queues: queues.map((q) => q.index) };
  }

  private record(type: number, payload: Uint8Array, fds: number[], note?: string): void {
    this.trace.push({ request: REQ_NAMES.get(type) ?? String(type), flags: this.flags, size: payload.byteLength, fds: fds.length, ...(note ? { note } : {}) });
  }
}

/** Driver-side queues for the replay, registered in fe.queues so its blk helpers (read/write/flush) work. */
function makeQueue(fe: VhostUserFrontend, mem: GuestMemory, index: number, size: number, eventIdx: boolean): SplitQueue {
  const q = new SplitQueue(mem, index, size, { eventIdx, completion: 'interrupt', timeoutMs: 10_000 });
  fe.queues.set(index, q);
  return q;
}

function inflightRequest(numQueues: number, queueSize: number): Uint8Array {
  // VhostUserInflight, repr(C): u64 mmap_size, u64 mmap_offset, u16 num_queues, u16 queue_size, 4 bytes padding.
  const b = new Uint8Array(24);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, 0n, true);
  v.setBigUint64(8, 0n, true);
  v.setUint16(16, numQueues, true);
  v.setUint16(18, queueSize, true);
  return b;
}

/**
 * cloud-hypervisor's vhost-user-blk (`--disk vhost_user=true,socket=...`):
 * `version` 'v51' is the current sequence (GET_CONFIG at offset 0), 'v50' the
 * same with GET_CONFIG at offset 0x100 (rust-vmm's VHOST_USER_CONFIG_OFFSET).
 *
 * Device creation (Blk::new, connect_vhost_user, negotiate_features_vhost_user):
 * SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES — then
 * every request carries NEED_REPLY when REPLY_ACK was acked (set_hdr_flags) —
 * GET_QUEUE_NUM, GET_CONFIG(0 or 0x100, 60, WRITABLE). No SET_BACKEND_REQ_FD
 * (blk has no backend handler), no SET_VRING_ERR, no early SET_VRING_CALL.
 * Activation (setup_vhost_user): SET_FEATURES, SET_MEM_TABLE, SET_VRING_NUM
 * for every queue, GET_INFLIGHT_FD + SET_INFLIGHT_FD (INFLIGHT_SHMFD acked),
 * then per queue SET_VRING_ADDR, SET_VRING_BASE, SET_VRING_CALL,
 * SET_VRING_KICK, and SET_VRING_ENABLE 1 for all queues at the end.
 */
export async function cloudHypervisorBoot(socket: string, opts: ReplayOptions & { version: 'v50' | 'v51'; regions?: RegionSpec[] }): Promise<ReplayResult> {
  const fe = await VhostUserFrontend.connect(socket, 10_000);
  try {
    const rp = new Replayer(fe);
    // connect_vhost_user: set_owner then get_features.
    await rp.send(Req.SET_OWNER);
    const backendFeatures = await rp.getU64(Req.GET_FEATURES);
    // Blk::new: the VMM's list.
    let avail =
      BLK_COMMON_BITS |
      // DEFAULT_VIRTIO_FEATURES
      bit(VirtioBit.RING_INDIRECT_DESC) |
      bit(VirtioBit.RING_EVENT_IDX) |
      bit(VirtioBit.VERSION_1) |
      bit(VBit.IN_ORDER) |
      bit(VBit.ORDER_PLATFORM) |
      bit(VBit.NOTIFICATION_DATA) |
      bit(VirtioBit.PROTOCOL_FEATURES) |
      bit(VBit.LOG_ALL);
    if (opts.numQueues > 1) avail |= bit(VirtioBit.BLK_MQ);
    const availProtocol =
      bit(ProtoBit.CONFIG) |
      bit(ProtoBit.MQ) |
      bit(ProtoBit.CONFIGURE_MEM_SLOTS) |
      bit(ProtoBit.REPLY_ACK) |
      bit(ProtoBit.INFLIGHT_SHMFD) |
      bit(ProtoBit.LOG_SHMFD) |
      bit(ProtoExtra.DEVICE_STATE);
    // negotiate_features_vhost_user
    const offered = avail & backendFeatures;
    let offeredProtocol = 0n;
    let protocol = 0n;
    if (hasBit(offered, VirtioBit.PROTOCOL_FEATURES)) {
      offeredProtocol = await rp.getU64(Req.GET_PROTOCOL_FEATURES);
      protocol = availProtocol & offeredProtocol;
      await rp.send(Req.SET_PROTOCOL_FEATURES, u64(protocol));
    }
    if (hasBit(protocol, ProtoBit.REPLY_ACK)) {
      rp.replyAck = true;
      rp.flags = Flags.VERSION | Flags.NEED_REPLY;
    }
    let queueNum = 1;
    if (hasBit(protocol, ProtoBit.MQ)) queueNum = Number(await rp.getU64(Req.GET_QUEUE_NUM));
    if (opts.numQueues > queueNum) throw new Error(`cloud-hypervisor: ${opts.numQueues} queues asked, the back-end has ${queueNum} (BadQueueNum)`);
    // GET_CONFIG of sizeof(VirtioBlockConfig) = 60 with VhostUserConfigFlags::WRITABLE (1).
    const raw = await rp.getConfig(opts.version === 'v50' ? 0x100 : 0, 60, 1);
    const config = decodeBlkConfig(raw);
    // The guest sees `offered` (avail ∩ back-end) and num_queues overridden by the VMM; it acks what it knows.
    config.numQueues = opts.numQueues;
    const guestAcked = offered & LINUX_GUEST_ACKS;
    const acked = (guestAcked | (offered & bit(VirtioBit.PROTOCOL_FEATURES))) & backendFeatures;

    // Activation: setup_vhost_user.
    await rp.send(Req.SET_FEATURES, u64(acked));
    const mem = new GuestMemory(opts.regions ?? [{ gpa: 0, sizeBytes: 32 << 20 }]);
    await rp.memTable(mem);
    const queues: SplitQueue[] = [];
    for (let i = 0; i < opts.numQueues; i++) queues.push(makeQueue(fe, mem, i, opts.queueSize, hasBit(acked, VirtioBit.RING_EVENT_IDX)));
    for (const q of queues) await rp.send(Req.SET_VRING_NUM, vringState(q.index, opts.queueSize));
    let inflightFd = -1;
    if (hasBit(protocol, ProtoBit.INFLIGHT_SHMFD)) {
      const r = await rp.get(Req.GET_INFLIGHT_FD, inflightRequest(opts.numQueues, opts.queueSize));
      if (r.fds.length !== 1 || r.payload.byteLength !== 24) {
        for (const f of r.fds) native.close(f);
        throw Object.assign(new Error(`GET_INFLIGHT_FD reply: ${r.fds.length} fds, ${r.payload.byteLength} bytes`), { code: 'EBADREPLY' });
      }
      inflightFd = r.fds[0];
      try {
        // set_inflight_fd sends the reply's VhostUserInflight back with the fd.
        await rp.send(Req.SET_INFLIGHT_FD, r.payload, [inflightFd]);
      } finally {
        native.close(inflightFd);
      }
    }
    for (const q of queues) {
      const a = q.ringAddresses();
      await rp.send(Req.SET_VRING_ADDR, vringAddr(q.index, 0, a.desc, a.used, a.avail, 0n));
      // The base is the avail index read from guest memory: 0 at boot.
      await rp.send(Req.SET_VRING_BASE, vringState(q.index, 0));
      await rp.send(Req.SET_VRING_CALL, vringFdPayload(q.index, false), [q.callFd]);
      await rp.send(Req.SET_VRING_KICK, vringFdPayload(q.index, false), [q.kickFd]);
    }
    for (const q of queues) await rp.send(Req.SET_VRING_ENABLE, vringState(q.index, 1));
    return rp.finish({ offeredFeatures: backendFeatures, features: acked, offeredProtocolFeatures: offeredProtocol, protocolFeatures: protocol, queueNum, config, rawConfig: raw }, queues);
  } catch (e) {
    fe.close();
    throw e;
  }
}

/**
 * crosvm's vhost-user front-end for a block device (`--vhost-user block,socket=...`).
 *
 * Device creation (VhostUserFrontend::new): SET_OWNER, GET_FEATURES,
 * GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES (CONFIG, MQ, BACKEND_REQ,
 * DEVICE_STATE, SHMEM, REPLY_ACK ∩ offered), SET_BACKEND_REQ_FD (when
 * BACKEND_REQ), GET_QUEUE_NUM (when MQ). REPLY_ACK is negotiated but
 * need_reply is never set on a request: nothing waits for acks. Guest config
 * reads: one GET_CONFIG(offset, width, WRITABLE) per access. Activation:
 * SET_FEATURES (PROTOCOL_FEATURES | guest acks), SET_MEM_TABLE (one shared
 * memory object; regions at offsets in it), then per queue SET_VRING_NUM,
 * SET_VRING_ADDR, SET_VRING_BASE, SET_VRING_CALL, SET_VRING_KICK,
 * SET_VRING_ENABLE 1. No SET_VRING_ERR, no in-flight region, no packed ring
 * (removed from the features), no indirect descriptors (bit 28 is outside
 * crosvm's allow mask).
 */
export async function crosvmBoot(socket: string, opts: ReplayOptions): Promise<ReplayResult & { backendChannelFd: number | null }> {
  const fe = await VhostUserFrontend.connect(socket, 10_000);
  let backendMine = -1;
  try {
    const rp = new Replayer(fe);
    await rp.send(Req.SET_OWNER);
    // VIRTIO_DEVICE_TYPE_SPECIFIC_FEATURES_MASK | base_features (VERSION_1, EVENT_IDX, SUSPEND) | PROTOCOL_FEATURES.
    const allow = 0xfffc_0000_00ff_ffffn | bit(VirtioBit.VERSION_1) | bit(VirtioBit.RING_EVENT_IDX) | bit(VBit.SUSPEND_CROSVM) | bit(VirtioBit.PROTOCOL_FEATURES);
    const backendFeatures = await rp.getU64(Req.GET_FEATURES);
    const avail = allow & backendFeatures;
    let acked = 0n;
    const allowProtocol =
      bit(ProtoBit.CONFIG) | bit(ProtoBit.MQ) | bit(ProtoBit.BACKEND_REQ) | bit(ProtoExtra.DEVICE_STATE) | bit(ProtoExtra.SHMEM_CROSVM) | bit(ProtoBit.REPLY_ACK);
    let offeredProtocol = 0n;
    let protocol = 0n;
    if (hasBit(avail, VirtioBit.PROTOCOL_FEATURES)) {
      acked |= bit(VirtioBit.PROTOCOL_FEATURES);
      offeredProtocol = await rp.getU64(Req.GET_PROTOCOL_FEATURES);
      protocol = allowProtocol & offeredProtocol;
      await rp.send(Req.SET_PROTOCOL_FEATURES, u64(protocol));
    }
    let backendChannelFd: number | null = null;
    if (hasBit(protocol, ProtoBit.BACKEND_REQ)) {
      const [mine, theirs] = native.socketPair();
      backendMine = mine;
      try {
        await rp.send(Req.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirs]);
      } finally {
        native.close(theirs);
      }
      backendChannelFd = mine;
    }
    let queueNum = 1; // DeviceType::Block.min_queues()
    if (hasBit(protocol, ProtoBit.MQ)) queueNum = Number(await rp.getU64(Req.GET_QUEUE_NUM));

    // The guest: features offered = avail; it acks what it knows; each config read is a GET_CONFIG.
    const guestAcked = avail & LINUX_GUEST_ACKS;
    acked |= guestAcked;
    const seen = new Uint8Array(60);
    if (hasBit(protocol, ProtoBit.CONFIG)) {
      for (const [off, width] of linuxConfigReads(guestAcked)) seen.set(await rp.getConfig(off, width, 1), off);
    }
    const config = decodeBlkConfig(seen);

    // activate(): SET_FEATURES (changed since creation), SET_MEM_TABLE, then each queue.
    await rp.send(Req.SET_FEATURES, u64(acked));
    // One shared memory object: the second region (above 4 GiB on x86) lies at an offset in it.
    const mem = new GuestMemory([
      { gpa: 0, sizeBytes: 16 << 20 },
      { gpa: 0x1_0000_0000, sizeBytes: 16 << 20, mmapOffset: 16 << 20 },
    ]);
    await rp.memTable(mem);
    const started = Math.min(opts.numQueues, queueNum);
    const eventIdx = hasBit(acked, VirtioBit.RING_EVENT_IDX);
    const queues: SplitQueue[] = [];
    for (let i = 0; i < started; i++) {
      // Rings in the region above 4 GiB for odd queues: addresses are host virtual, as crosvm sends them.
      const q = new SplitQueue(mem, i, opts.queueSize, { eventIdx, completion: 'interrupt', timeoutMs: 10_000 }, i % 2);
      fe.queues.set(i, q);
      queues.push(q);
      await rp.send(Req.SET_VRING_NUM, vringState(i, opts.queueSize));
      const a = q.ringAddresses();
      await rp.send(Req.SET_VRING_ADDR, vringAddr(i, 0, a.desc, a.used, a.avail, 0n));
      await rp.send(Req.SET_VRING_BASE, vringState(i, 0));
      await rp.send(Req.SET_VRING_CALL, vringFdPayload(i, false), [q.callFd]);
      await rp.send(Req.SET_VRING_KICK, vringFdPayload(i, false), [q.kickFd]);
      if (hasBit(acked, VirtioBit.PROTOCOL_FEATURES)) await rp.send(Req.SET_VRING_ENABLE, vringState(i, 1));
    }
    return {
      ...rp.finish({ offeredFeatures: backendFeatures, features: acked, offeredProtocolFeatures: offeredProtocol, protocolFeatures: protocol, queueNum, config, rawConfig: seen }, queues),
      backendChannelFd,
    };
  } catch (e) {
    if (backendMine >= 0) native.close(backendMine);
    fe.close();
    throw e;
  }
}

/**
 * Both VMMs' device reset / VM shutdown: per started queue SET_VRING_ENABLE 0
 * then GET_VRING_BASE (cloud-hypervisor reset_vhost_user, crosvm
 * deactivate_vring), with the replay's header flags. Returns the bases.
 */
export async function vmmReset(r: ReplayResult, needReply: boolean): Promise<number[]> {
  const flags = Flags.VERSION | (needReply ? Flags.NEED_REPLY : 0);
  const bases: number[] = [];
  for (const i of r.queues) {
    r.trace.push({ request: 'SET_VRING_ENABLE', flags, size: 8, fds: 0 });
    await r.fe.request(Req.SET_VRING_ENABLE, vringState(i, 0), [], { flags, needReply });
    r.trace.push({ request: 'GET_VRING_BASE', flags, size: 8, fds: 0 });
    const reply = await r.fe.request(Req.GET_VRING_BASE, vringState(i, 0), [], { flags });
    if (!reply || reply.payload.byteLength !== 8 || readU32(reply.payload, 0) !== i) throw Object.assign(new Error(`GET_VRING_BASE ${i}: bad reply`), { code: 'EBADREPLY' });
    bases.push(readU32(reply.payload, 4));
  }
  return bases;
}

/** One line per message: "NAME flags=0x9 size=8 fds=1 (note)". */
export function formatTrace(trace: TraceEntry[]): string {
  return trace.map((e) => `${e.request} flags=0x${e.flags.toString(16)} size=${e.size} fds=${e.fds}${e.note ? ` (${e.note})` : ''}`).join('\n');
}
