/**
 * vhost-user codec, sans-IO: turns a 12-byte header, its payload and the fds
 * that rode on it into a typed message, and typed values back into bytes. It
 * knows no sockets. All wire validation lives here, driven by one table per
 * request (payload size rule, fds it may or must carry, whether the request
 * always has a reply of its own); handlers in session.ts only see typed,
 * range-checked values.
 *
 * fd ownership: decodeMessage() takes ownership of the fds it is given. On
 * success they are all inside the returned message (the receiver now owns
 * them); on failure every one of them is closed before the ProtocolError is
 * thrown, so no path leaks an fd.
 *
 * Thread: main (reactor); the encoders are also used by the test front-end.
 */
import * as os from 'node:os';
import type { RegionDesc } from '../../engine/control';
import { closeFd, closeFds } from '../fds';
import {
  CONFIG_HEADER_SIZE,
  HEADER_SIZE,
  INFLIGHT_PAYLOAD_SIZE,
  LOG_PAYLOAD_SIZE,
  HeaderFlag,
  MAX_CONFIG_SIZE,
  MAX_FDS,
  MAX_PAYLOAD_SIZE,
  REGION_SIZE,
  Request,
  requestName,
  VRING_INDEX_MASK,
  VRING_NOFD_MASK,
} from './messages';

/** A violation of the vhost-user protocol by the peer: the connection is closed. */
export class ProtocolError extends Error {
  readonly code = 'ERR_VHOST_PROTOCOL';
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** Host byte order: the spec says "All numbers are in the machine native byte order". */
const LE = os.endianness() === 'LE';

const TWO_POW_53 = 1n << 53n;
const TWO_POW_64 = 1n << 64n;

export { closeFd, closeFds };

export interface Header {
  request: number;
  flags: number;
  /** Payload bytes that follow the header. */
  size: number;
}

/** A memory region without its fd (what REM_MEM_REG names). All values < 2^53, ends too. */
export interface MemRegion {
  guestPhysAddr: number;
  sizeBytes: number;
  userAddr: number;
  mmapOffset: number;
}

interface Common {
  /** The raw header flags. */
  headerFlags: number;
  /** need_reply (bit 3): answer with a REPLY_ACK u64 when that feature is negotiated. */
  needReply: boolean;
}

/** A decoded front-end request. Every fd in it is owned by whoever holds the message. */
export type VhostMessage = Common &
  (
    | { request: Request.GetFeatures }
    | { request: Request.SetFeatures; features: bigint }
    | { request: Request.SetOwner }
    | { request: Request.ResetOwner }
    | { request: Request.SetMemTable; regions: RegionDesc[] }
    | { request: Request.SetVringNum; index: number; num: number }
    | {
        request: Request.SetVringAddr;
        index: number;
        /** vring flags (bit 0 VHOST_VRING_F_LOG). */
        vringFlags: number;
        descAddr: number;
        usedAddr: number;
        availAddr: number;
        /** log_guest_addr: guest-physical address of the used ring for dirty logging (valid with VHOST_VRING_F_LOG). */
        logAddr: bigint;
      }
    | { request: Request.SetVringBase; index: number; num: number }
    | { request: Request.GetVringBase; index: number; num: number }
    /** fd is -1 when the front-end set the "no fd" bit. */
    | { request: Request.SetVringKick | Request.SetVringCall | Request.SetVringErr; index: number; fd: number }
    | { request: Request.GetProtocolFeatures }
    | { request: Request.SetProtocolFeatures; features: bigint }
    | { request: Request.GetQueueNum }
    | { request: Request.SetVringEnable; index: number; enable: boolean }
    | { request: Request.SetBackendReqFd; fd: number }
    | { request: Request.GetConfig; offset: number; size: number; configFlags: number }
    | { request: Request.SetConfig; offset: number; size: number; configFlags: number; data: Uint8Array }
    | { request: Request.ResetDevice }
    | { request: Request.GetMaxMemSlots }
    | { request: Request.AddMemReg; region: RegionDesc }
    | { request: Request.RemMemReg; region: MemRegion }
    | { request: Request.SetStatus; status: number }
    | { request: Request.GetStatus }
    /** The front-end's queue count and size; mmap_size/offset are 0 and ignored. */
    | { request: Request.GetInflightFd; numQueues: number; queueSize: number }
    /** The region the back-end gave earlier (or a previous back-end), handed back with its fd. */
    | { request: Request.SetInflightFd; fd: number; sizeBytes: number; mmapOffset: number; numQueues: number; queueSize: number }
    /** The dirty log (LOG_SHMFD): mmap_size bytes at mmap_offset of fd. */
    | { request: Request.SetLogBase; fd: number; sizeBytes: number; mmapOffset: number }
    /** SET_LOG_FD's fd (an eventfd to signal log writes; this back-end never uses it). */
    | { request: Request.SetLogFd; fd: number }
  );

/** Every fd a decoded message carries (for whoever must close them). */
export function messageFds(msg: VhostMessage): number[] {
  switch (msg.request) {
    case Request.SetMemTable:
      return msg.regions.map((r) => r.fd);
    case Request.AddMemReg:
      return [msg.region.fd];
    case Request.SetVringKick:
    case Request.SetVringCall:
    case Request.SetVringErr:
      return msg.fd >= 0 ? [msg.fd] : [];
    case Request.SetBackendReqFd:
    case Request.SetInflightFd:
    case Request.SetLogBase:
    case Request.SetLogFd:
      return [msg.fd];
    default:
      return [];
  }
}

// --- the rule table ---------------------------------------------------------

type PayloadRule =
  | { kind: 'exact'; bytes: number }
  /** u32 nregions, u32 pad, nregions × 32 bytes. */
  | { kind: 'memTable' }
  /** u32 offset, u32 size, u32 flags, size bytes; offset + size within the config space. */
  | { kind: 'config' }
  /** As 'config', but the offset is not applied (see LIBERAL_READINGS): only size is bounded. */
  | { kind: 'configAnyOffset' };

type FdRule =
  | 'none'
  | 'one'
  /** As many as the region table has entries. */
  | 'perRegion'
  /** u64 bit 8 set: none, else exactly one. */
  | 'nofdBit'
  /** Zero or one, and a given one is closed unused (REM_MEM_REG, spec: "MAY accept ... MUST close it"). */
  | 'ignoredOptional';

export interface RequestRule {
  payload: PayloadRule;
  fds: FdRule;
  /** The request has a reply of its own (REPLY_ACK adds nothing then). */
  replies: boolean;
}

const NONE: PayloadRule = { kind: 'exact', bytes: 0 };
const U64: PayloadRule = { kind: 'exact', bytes: 8 };
const VRING_STATE: PayloadRule = { kind: 'exact', bytes: 8 };

/**
 * Where this codec reads a request more liberally than the narrowest reading
 * of vhost-user.rst, because a real peer needs it and the common back-ends
 * (DPDK's rte_vhost — SPDK's vhost — and QEMU's libvhost-user) accept it.
 * Everything else stays strict: a value that could make us touch memory or
 * fds wrongly is refused.
 */
export const LIBERAL_READINGS: readonly { request: Request; reading: string; peer: string }[] = [
  {
    request: Request.SetVringEnable,
    reading: 'any non-zero num enables the ring (0 disables); DPDK and libvhost-user store the value as a truth value',
    peer: "SPDK's virtio-user initiator (sends the queue size, e.g. 512)",
  },
  {
    request: Request.GetConfig,
    reading:
      'the offset is echoed; a range inside the device struct is read at the offset (vhost-user.rst); a range ' +
      "inside the struct at 0x100 + offset is read at offset (rust-vmm's VHOST_USER_CONFIG_OFFSET base); any other " +
      "offset reads `size` bytes from the start, as DPDK (get_config(region, size)), SPDK's vhost and " +
      'libvhost-user/qemu-storage-daemon answer; offset is any u32, size at most 256',
    peer:
      'cloud-hypervisor up to v50 (rust-vmm vhost front-end: offset 0x100, size 60); crosvm (each guest config ' +
      "read forwarded at the field's offset and width, e.g. offset 20 size 4)",
  },
];

/** The requests this back-end serves. Anything else (unknown or unsupported) is a ProtocolError. */
export const REQUEST_RULES: ReadonlyMap<number, RequestRule> = new Map<number, RequestRule>([
  [Request.GetFeatures, { payload: NONE, fds: 'none', replies: true }],
  [Request.SetFeatures, { payload: U64, fds: 'none', replies: false }],
  [Request.SetOwner, { payload: NONE, fds: 'none', replies: false }],
  [Request.ResetOwner, { payload: NONE, fds: 'none', replies: false }],
  [Request.SetMemTable, { payload: { kind: 'memTable' }, fds: 'perRegion', replies: false }],
  [Request.SetVringNum, { payload: VRING_STATE, fds: 'none', replies: false }],
  [Request.SetVringAddr, { payload: { kind: 'exact', bytes: 40 }, fds: 'none', replies: false }],
  [Request.SetVringBase, { payload: VRING_STATE, fds: 'none', replies: false }],
  [Request.GetVringBase, { payload: VRING_STATE, fds: 'none', replies: true }],
  [Request.SetVringKick, { payload: U64, fds: 'nofdBit', replies: false }],
  [Request.SetVringCall, { payload: U64, fds: 'nofdBit', replies: false }],
  [Request.SetVringErr, { payload: U64, fds: 'nofdBit', replies: false }],
  [Request.GetProtocolFeatures, { payload: NONE, fds: 'none', replies: true }],
  [Request.SetProtocolFeatures, { payload: U64, fds: 'none', replies: false }],
  [Request.GetQueueNum, { payload: NONE, fds: 'none', replies: true }],
  [Request.SetVringEnable, { payload: VRING_STATE, fds: 'none', replies: false }],
  [Request.SetBackendReqFd, { payload: NONE, fds: 'one', replies: false }],
  [Request.GetConfig, { payload: { kind: 'configAnyOffset' }, fds: 'none', replies: true }],
  [Request.SetConfig, { payload: { kind: 'config' }, fds: 'none', replies: false }],
  [Request.ResetDevice, { payload: NONE, fds: 'none', replies: false }],
  [Request.GetMaxMemSlots, { payload: NONE, fds: 'none', replies: true }],
  [Request.AddMemReg, { payload: { kind: 'exact', bytes: 8 + REGION_SIZE }, fds: 'one', replies: false }],
  [Request.RemMemReg, { payload: { kind: 'exact', bytes: 8 + REGION_SIZE }, fds: 'ignoredOptional', replies: false }],
  [Request.SetStatus, { payload: U64, fds: 'none', replies: false }],
  [Request.GetStatus, { payload: NONE, fds: 'none', replies: true }],
  [Request.GetInflightFd, { payload: { kind: 'exact', bytes: INFLIGHT_PAYLOAD_SIZE }, fds: 'none', replies: true }],
  [Request.SetInflightFd, { payload: { kind: 'exact', bytes: INFLIGHT_PAYLOAD_SIZE }, fds: 'one', replies: false }],
  // QEMU waits for a reply to SET_LOG_BASE when LOG_SHMFD is negotiated (the only way this back-end accepts it).
  [Request.SetLogBase, { payload: { kind: 'exact', bytes: LOG_PAYLOAD_SIZE }, fds: 'one', replies: true }],
  [Request.SetLogFd, { payload: NONE, fds: 'one', replies: false }],
]);

function ruleFor(request: number): RequestRule {
  const rule = REQUEST_RULES.get(request);
  if (!rule) {
    const named = requestName(request);
    throw new ProtocolError(
      named.startsWith('request ') ? `unknown request id ${request}` : `unsupported request ${named} (${request})`,
    );
  }
  return rule;
}

/** Does this request always carry a reply of its own? (false for unknown ids) */
export function requestReplies(request: number): boolean {
  return REQUEST_RULES.get(request)?.replies ?? false;
}

// --- decoding ---------------------------------------------------------------

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/**
 * Decode and validate a request header: version 1, reply bit clear, a known
 * request id, payload size ≤ MAX_PAYLOAD_SIZE. Throws ProtocolError; it owns
 * no fds, so the caller closes whatever came with the header.
 */
export function decodeHeader(buf: Uint8Array): Header {
  if (buf.byteLength < HEADER_SIZE) throw new ProtocolError(`short header: ${buf.byteLength} bytes`);
  const dv = view(buf);
  const request = dv.getUint32(0, LE);
  const flags = dv.getUint32(4, LE);
  const size = dv.getUint32(8, LE);
  const name = requestName(request);
  if ((flags & HeaderFlag.VersionMask) !== HeaderFlag.Version) {
    throw new ProtocolError(`${name}: header version ${flags & HeaderFlag.VersionMask}, expected 1`);
  }
  if (flags & HeaderFlag.Reply) throw new ProtocolError(`${name}: reply flag set on a request`);
  if (size > MAX_PAYLOAD_SIZE) throw new ProtocolError(`${name}: payload size ${size} exceeds ${MAX_PAYLOAD_SIZE}`);
  ruleFor(request);
  return { request, flags, size };
}

/** A u64 that will be used as a JS number: must be < 2^53. */
function safeNumber(v: bigint, what: string): number {
  if (v >= TWO_POW_53) throw new ProtocolError(`${what} 0x${v.toString(16)} is not below 2^53`);
  return Number(v);
}

/** The fd and its mmap_size/mmap_offset at the payload's start (SET_LOG_BASE's VhostUserLog, SET_INFLIGHT_FD's VhostUserInflight). */
function sharedArea(dv: DataView, fds: readonly number[], name: string): { fd: number; sizeBytes: number; mmapOffset: number } {
  return {
    fd: fds[0],
    sizeBytes: safeNumber(dv.getBigUint64(0, LE), `${name}: mmap_size`),
    mmapOffset: safeNumber(dv.getBigUint64(8, LE), `${name}: mmap_offset`),
  };
}

/**
 * Decode one 32-byte region at `off`: size > 0, no u64 overflow of gpa+size,
 * uva+size or offset+size, and every value and end below 2^53 (they become
 * JS numbers).
 */
function decodeRegion(dv: DataView, off: number, what: string): MemRegion {
  const gpa = dv.getBigUint64(off, LE);
  const size = dv.getBigUint64(off + 8, LE);
  const uva = dv.getBigUint64(off + 16, LE);
  const mmapOffset = dv.getBigUint64(off + 24, LE);
  if (size === 0n) throw new ProtocolError(`${what}: region size is 0`);
  if (gpa + size > TWO_POW_64) throw new ProtocolError(`${what}: guest_phys_addr + size overflows u64`);
  if (uva + size > TWO_POW_64) throw new ProtocolError(`${what}: userspace_addr + size overflows u64`);
  if (mmapOffset + size > TWO_POW_64) throw new ProtocolError(`${what}: mmap_offset + size overflows u64`);
  safeNumber(gpa + size, `${what}: guest_phys_addr + size`);
  safeNumber(uva + size, `${what}: userspace_addr + size`);
  safeNumber(mmapOffset + size, `${what}: mmap_offset + size`);
  return {
    guestPhysAddr: Number(gpa),
    sizeBytes: Number(size),
    userAddr: Number(uva),
    mmapOffset: Number(mmapOffset),
  };
}

function expectFds(name: string, fds: readonly number[], want: number): void {
  if (fds.length !== want) throw new ProtocolError(`${name}: carries ${fds.length} fds, expected ${want}`);
}

/**
 * Decode and validate one request. Takes ownership of `fds`: on success they
 * are in the message, on failure they are all closed and a ProtocolError is
 * thrown.
 */
export function decodeMessage(header: Header, payload: Uint8Array, fds: readonly number[]): VhostMessage {
  try {
    return decodeUnchecked(header, payload, fds);
  } catch (err) {
    closeFds(fds);
    if (err instanceof ProtocolError) throw err;
    throw new ProtocolError(`${requestName(header.request)}: ${(err as Error).message}`);
  }
}

function decodeUnchecked(header: Header, payload: Uint8Array, fds: readonly number[]): VhostMessage {
  const name = requestName(header.request);
  const rule = ruleFor(header.request);
  if (payload.byteLength !== header.size) {
    throw new ProtocolError(`${name}: payload is ${payload.byteLength} bytes, header says ${header.size}`);
  }
  if (fds.length > MAX_FDS) throw new ProtocolError(`${name}: carries ${fds.length} fds, at most ${MAX_FDS}`);
  for (const fd of fds) {
    if (!Number.isInteger(fd) || fd < 0) throw new ProtocolError(`${name}: invalid fd ${fd}`);
  }
  const size = payload.byteLength;
  const dv = view(payload);

  // Payload size.
  switch (rule.payload.kind) {
    case 'exact':
      if (size !== rule.payload.bytes) {
        throw new ProtocolError(`${name}: payload is ${size} bytes, expected ${rule.payload.bytes}`);
      }
      break;
    case 'memTable': {
      if (size < 8) throw new ProtocolError(`${name}: payload is ${size} bytes, shorter than the table header`);
      const n = dv.getUint32(0, LE);
      if (n < 1 || n > MAX_FDS) throw new ProtocolError(`${name}: ${n} regions, expected 1..${MAX_FDS}`);
      if (size !== 8 + REGION_SIZE * n) {
        throw new ProtocolError(`${name}: payload is ${size} bytes, expected ${8 + REGION_SIZE * n} for ${n} regions`);
      }
      break;
    }
    case 'config':
    case 'configAnyOffset': {
      if (size < CONFIG_HEADER_SIZE) throw new ProtocolError(`${name}: payload is ${size} bytes, shorter than 12`);
      const cfgSize = dv.getUint32(4, LE);
      if (rule.payload.kind === 'configAnyOffset') {
        if (cfgSize > MAX_CONFIG_SIZE) throw new ProtocolError(`${name}: config size ${cfgSize} exceeds ${MAX_CONFIG_SIZE}`);
      } else {
        const offset = dv.getUint32(0, LE);
        // Both are u32, so the sum is exact in a double.
        if (offset + cfgSize > MAX_CONFIG_SIZE) {
          throw new ProtocolError(`${name}: config offset ${offset} + size ${cfgSize} exceeds ${MAX_CONFIG_SIZE}`);
        }
      }
      if (size !== CONFIG_HEADER_SIZE + cfgSize) {
        throw new ProtocolError(`${name}: payload is ${size} bytes, expected ${CONFIG_HEADER_SIZE + cfgSize}`);
      }
      break;
    }
  }

  // fd count.
  let owned: number[] = [...fds];
  switch (rule.fds) {
    case 'none':
      expectFds(name, fds, 0);
      break;
    case 'one':
      expectFds(name, fds, 1);
      break;
    case 'perRegion':
      expectFds(name, fds, dv.getUint32(0, LE));
      break;
    case 'nofdBit': {
      const v = dv.getBigUint64(0, LE);
      expectFds(name, fds, v & VRING_NOFD_MASK ? 0 : 1);
      break;
    }
    case 'ignoredOptional':
      if (fds.length > 1) expectFds(name, fds, 1);
      owned = [];
      break;
  }

  const common: Common = {
    headerFlags: header.flags,
    needReply: (header.flags & HeaderFlag.NeedReply) !== 0,
  };

  let msg: VhostMessage;
  switch (header.request) {
    case Request.GetFeatures:
    case Request.SetOwner:
    case Request.ResetOwner:
    case Request.GetProtocolFeatures:
    case Request.GetQueueNum:
    case Request.ResetDevice:
    case Request.GetMaxMemSlots:
    case Request.GetStatus:
      msg = { ...common, request: header.request };
      break;
    case Request.SetFeatures:
    case Request.SetProtocolFeatures:
      msg = { ...common, request: header.request, features: dv.getBigUint64(0, LE) };
      break;
    case Request.SetStatus: {
      const v = dv.getBigUint64(0, LE);
      if (v > 0xffn) throw new ProtocolError(`${name}: status 0x${v.toString(16)} does not fit in 8 bits`);
      msg = { ...common, request: header.request, status: Number(v) };
      break;
    }
    case Request.SetMemTable: {
      const n = dv.getUint32(0, LE);
      const regions: RegionDesc[] = [];
      for (let i = 0; i < n; i++) {
        const r = decodeRegion(dv, 8 + REGION_SIZE * i, `${name} region ${i}`);
        regions.push({ fd: fds[i], ...r });
      }
      msg = { ...common, request: header.request, regions };
      break;
    }
    case Request.AddMemReg:
      msg = { ...common, request: header.request, region: { fd: fds[0], ...decodeRegion(dv, 8, name) } };
      break;
    case Request.RemMemReg:
      msg = { ...common, request: header.request, region: decodeRegion(dv, 8, name) };
      break;
    case Request.SetVringNum:
    case Request.SetVringBase:
    case Request.GetVringBase:
      msg = { ...common, request: header.request, index: dv.getUint32(0, LE), num: dv.getUint32(4, LE) };
      break;
    case Request.SetVringEnable:
      // Any non-zero value enables (LIBERAL_READINGS).
      msg = { ...common, request: header.request, index: dv.getUint32(0, LE), enable: dv.getUint32(4, LE) !== 0 };
      break;
    case Request.SetVringAddr:
      msg = {
        ...common,
        request: header.request,
        index: dv.getUint32(0, LE),
        vringFlags: dv.getUint32(4, LE),
        descAddr: safeNumber(dv.getBigUint64(8, LE), `${name}: descriptor address`),
        usedAddr: safeNumber(dv.getBigUint64(16, LE), `${name}: used address`),
        availAddr: safeNumber(dv.getBigUint64(24, LE), `${name}: available address`),
        logAddr: dv.getBigUint64(32, LE),
      };
      break;
    case Request.SetVringKick:
    case Request.SetVringCall:
    case Request.SetVringErr: {
      const v = dv.getBigUint64(0, LE);
      if (v & ~(VRING_INDEX_MASK | VRING_NOFD_MASK)) {
        throw new ProtocolError(`${name}: undefined bits set in 0x${v.toString(16)}`);
      }
      const fd = v & VRING_NOFD_MASK ? -1 : fds[0];
      msg = { ...common, request: header.request, index: Number(v & VRING_INDEX_MASK), fd };
      break;
    }
    case Request.SetBackendReqFd:
    case Request.SetLogFd:
      msg = { ...common, request: header.request, fd: fds[0] };
      break;
    case Request.SetLogBase:
      msg = { ...common, request: header.request, ...sharedArea(dv, fds, name) };
      break;
    case Request.GetConfig:
    case Request.SetConfig: {
      const offset = dv.getUint32(0, LE);
      const cfgSize = dv.getUint32(4, LE);
      const configFlags = dv.getUint32(8, LE);
      if (configFlags > 1) throw new ProtocolError(`${name}: config flags ${configFlags}, expected 0 or 1`);
      if (header.request === Request.GetConfig) {
        msg = { ...common, request: header.request, offset, size: cfgSize, configFlags };
      } else {
        const data = payload.slice(CONFIG_HEADER_SIZE, CONFIG_HEADER_SIZE + cfgSize);
        msg = { ...common, request: header.request, offset, size: cfgSize, configFlags, data };
      }
      break;
    }
    case Request.GetInflightFd:
      msg = { ...common, request: header.request, numQueues: dv.getUint16(16, LE), queueSize: dv.getUint16(18, LE) };
      break;
    case Request.SetInflightFd:
      msg = {
        ...common,
        request: header.request,
        ...sharedArea(dv, fds, name),
        numQueues: dv.getUint16(16, LE),
        queueSize: dv.getUint16(18, LE),
      };
      break;
    default:
      // ruleFor() accepted it, so the table and this switch disagree: a bug here.
      throw new ProtocolError(`${name}: no decoder`);
  }

  // Only now, with nothing left to fail, give up fds that the message does not keep.
  if (owned.length === 0 && fds.length > 0) closeFds(fds);
  return msg;
}

// --- encoding ---------------------------------------------------------------

/** A 12-byte header followed by the payload. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  const dv = view(out);
  dv.setUint32(0, request, LE);
  dv.setUint32(4, flags, LE);
  dv.setUint32(8, payload.byteLength, LE);
  out.set(payload, HEADER_SIZE);
  return out;
}

/**
 * A back-end reply to `request`: `flags` are extra header flags (normally 0);
 * the version and reply bits are always set and need_reply always clear.
 */
export function encodeReply(request: number, flags: number, payload: Uint8Array): Uint8Array {
  const f = ((flags & ~(HeaderFlag.VersionMask | HeaderFlag.NeedReply)) | HeaderFlag.Version | HeaderFlag.Reply) >>> 0;
  return encodeMessage(request, f, payload);
}

/** A front-end request (for the test front-end): version 1, need_reply if asked. */
export function encodeRequest(request: number, payload: Uint8Array = new Uint8Array(0), needReply = false): Uint8Array {
  return encodeMessage(request, HeaderFlag.Version | (needReply ? HeaderFlag.NeedReply : 0), payload);
}

/** Decode a back-end reply header (front-end side): version 1 and the reply bit set. */
export function decodeReplyHeader(buf: Uint8Array): Header {
  if (buf.byteLength < HEADER_SIZE) throw new ProtocolError(`short reply header: ${buf.byteLength} bytes`);
  const dv = view(buf);
  const request = dv.getUint32(0, LE);
  const flags = dv.getUint32(4, LE);
  const size = dv.getUint32(8, LE);
  if ((flags & HeaderFlag.VersionMask) !== HeaderFlag.Version) throw new ProtocolError('reply: bad version');
  if (!(flags & HeaderFlag.Reply)) throw new ProtocolError('reply: reply flag not set');
  if (size > MAX_PAYLOAD_SIZE) throw new ProtocolError(`reply: payload size ${size} too large`);
  return { request, flags, size };
}

export function u64Payload(value: bigint | number): Uint8Array {
  const out = new Uint8Array(8);
  view(out).setBigUint64(0, BigInt(value), LE);
  return out;
}

export function decodeU64(payload: Uint8Array): bigint {
  if (payload.byteLength !== 8) throw new ProtocolError(`u64 payload is ${payload.byteLength} bytes`);
  return view(payload).getBigUint64(0, LE);
}

export function vringStatePayload(index: number, num: number): Uint8Array {
  const out = new Uint8Array(8);
  const dv = view(out);
  dv.setUint32(0, index, LE);
  dv.setUint32(4, num, LE);
  return out;
}

export function decodeVringState(payload: Uint8Array): { index: number; num: number } {
  if (payload.byteLength !== 8) throw new ProtocolError(`vring state payload is ${payload.byteLength} bytes`);
  const dv = view(payload);
  return { index: dv.getUint32(0, LE), num: dv.getUint32(4, LE) };
}

/** GET/SET_INFLIGHT_FD payload (VhostUserInflight). */
export function inflightPayload(a: { sizeBytes: number | bigint; mmapOffset: number | bigint; numQueues: number; queueSize: number }): Uint8Array {
  const out = new Uint8Array(INFLIGHT_PAYLOAD_SIZE);
  const dv = view(out);
  dv.setBigUint64(0, BigInt(a.sizeBytes), LE);
  dv.setBigUint64(8, BigInt(a.mmapOffset), LE);
  dv.setUint16(16, a.numQueues, LE);
  dv.setUint16(18, a.queueSize, LE);
  return out;
}

/** SET_LOG_BASE payload: u64 mmap_size, u64 mmap_offset. */
export function logPayload(sizeBytes: number | bigint, mmapOffset: number | bigint): Uint8Array {
  const out = new Uint8Array(LOG_PAYLOAD_SIZE);
  const dv = view(out);
  dv.setBigUint64(0, BigInt(sizeBytes), LE);
  dv.setBigUint64(8, BigInt(mmapOffset), LE);
  return out;
}

/** KICK/CALL/ERR payload; `noFd` sets bit 8. */
export function vringFdPayload(index: number, noFd: boolean): Uint8Array {
  return u64Payload(BigInt(index) | (noFd ? VRING_NOFD_MASK : 0n));
}

export function vringAddrPayload(a: {
  index: number;
  flags?: number;
  descAddr: number | bigint;
  usedAddr: number | bigint;
  availAddr: number | bigint;
  logAddr?: number | bigint;
}): Uint8Array {
  const out = new Uint8Array(40);
  const dv = view(out);
  dv.setUint32(0, a.index, LE);
  dv.setUint32(4, a.flags ?? 0, LE);
  dv.setBigUint64(8, BigInt(a.descAddr), LE);
  dv.setBigUint64(16, BigInt(a.usedAddr), LE);
  dv.setBigUint64(24, BigInt(a.availAddr), LE);
  dv.setBigUint64(32, BigInt(a.logAddr ?? 0), LE);
  return out;
}

/** A region on the wire; bigint allowed so tests can send out-of-range values. */
export interface WireRegion {
  guestPhysAddr: number | bigint;
  sizeBytes: number | bigint;
  userAddr: number | bigint;
  mmapOffset: number | bigint;
}

function putRegion(dv: DataView, off: number, r: WireRegion): void {
  dv.setBigUint64(off, BigInt(r.guestPhysAddr), LE);
  dv.setBigUint64(off + 8, BigInt(r.sizeBytes), LE);
  dv.setBigUint64(off + 16, BigInt(r.userAddr), LE);
  dv.setBigUint64(off + 24, BigInt(r.mmapOffset), LE);
}

/** SET_MEM_TABLE payload (the fds travel separately, one per region, in order). */
export function memTablePayload(regions: readonly WireRegion[]): Uint8Array {
  const out = new Uint8Array(8 + REGION_SIZE * regions.length);
  const dv = view(out);
  dv.setUint32(0, regions.length, LE);
  regions.forEach((r, i) => putRegion(dv, 8 + REGION_SIZE * i, r));
  return out;
}

/** ADD_MEM_REG / REM_MEM_REG payload: u64 padding + one region. */
export function memRegionPayload(region: WireRegion): Uint8Array {
  const out = new Uint8Array(8 + REGION_SIZE);
  putRegion(view(out), 8, region);
  return out;
}

/** GET_CONFIG / SET_CONFIG payload: offset, size, flags, then `data` (size bytes, zeroes if absent). */
export function configPayload(offset: number, size: number, flags: number, data?: Uint8Array): Uint8Array {
  const out = new Uint8Array(CONFIG_HEADER_SIZE + size);
  const dv = view(out);
  dv.setUint32(0, offset, LE);
  dv.setUint32(4, size, LE);
  dv.setUint32(8, flags, LE);
  if (data) out.set(data.subarray(0, size), CONFIG_HEADER_SIZE);
  return out;
}

/** Decode a GET_CONFIG reply payload (front-end side). */
export function decodeConfigPayload(payload: Uint8Array): { offset: number; size: number; flags: number; data: Uint8Array } {
  if (payload.byteLength < CONFIG_HEADER_SIZE) throw new ProtocolError('config payload too short');
  const dv = view(payload);
  const size = dv.getUint32(4, LE);
  if (payload.byteLength !== CONFIG_HEADER_SIZE + size) throw new ProtocolError('config payload size mismatch');
  return {
    offset: dv.getUint32(0, LE),
    size,
    flags: dv.getUint32(8, LE),
    data: payload.subarray(CONFIG_HEADER_SIZE),
  };
}
