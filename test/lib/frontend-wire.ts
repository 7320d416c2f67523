/**
 * Wire constants and encoders for the test front-end (the role QEMU plays).
 *
 * Written independently from reactor/vhost-user/codec.ts on purpose: the test
 * peer must not share code with the back-end it tests, so that a symmetric
 * encoding bug cannot hide. Sources: QEMU docs/interop/vhost-user.rst (message
 * layouts), virtio 1.2 section 2.7 (split virtqueues) and 5.2 (block device).
 * Little-endian host only (x86-64, as the project targets). Thread: the test's
 * main thread.
 */

/** vhost-user front-end request ids (vhost-user.rst, "Front-end message types"). */
export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

/** Requests whose reply is always sent (the GET_* family). */
export const ALWAYS_REPLIES: ReadonlySet<number> = new Set<number>([
  Req.GET_FEATURES,
  Req.GET_VRING_BASE,
  Req.GET_PROTOCOL_FEATURES,
  Req.GET_QUEUE_NUM,
  Req.GET_CONFIG,
  Req.GET_INFLIGHT_FD,
  Req.GET_MAX_MEM_SLOTS,
  Req.GET_STATUS,
]);

/** Header flags: bits 0-1 version (1), 0x4 reply, 0x8 need_reply. */
export const Flags = { VERSION: 0x1, VERSION_MASK: 0x3, REPLY: 0x4, NEED_REPLY: 0x8 } as const;

export const HEADER_SIZE = 12;

/** vhost-user protocol feature bit numbers. */
export const ProtoBit = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** Virtio feature bit numbers used by the front-end (virtio 1.2 sections 5.2.3 and 6). */
export const VirtioBit = {
  BLK_SIZE_MAX: 1,
  BLK_SEG_MAX: 2,
  BLK_GEOMETRY: 4,
  BLK_RO: 5,
  BLK_BLK_SIZE: 6,
  BLK_FLUSH: 9,
  BLK_TOPOLOGY: 10,
  BLK_CONFIG_WCE: 11,
  BLK_MQ: 12,
  BLK_DISCARD: 13,
  BLK_WRITE_ZEROES: 14,
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  /** VHOST_USER_F_PROTOCOL_FEATURES */
  PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
  RING_PACKED: 34,
} as const;

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/**
 * The virtio-blk device bits (virtio 1.2 5.2.3) that a Linux virtio_blk driver,
 * QEMU's and cloud-hypervisor's front-ends all know, MQ apart (each decides
 * that one by its queue count).
 */
export const BLK_COMMON_BITS =
  bit(VirtioBit.BLK_SIZE_MAX) |
  bit(VirtioBit.BLK_SEG_MAX) |
  bit(VirtioBit.BLK_GEOMETRY) |
  bit(VirtioBit.BLK_RO) |
  bit(VirtioBit.BLK_BLK_SIZE) |
  bit(VirtioBit.BLK_FLUSH) |
  bit(VirtioBit.BLK_TOPOLOGY) |
  bit(VirtioBit.BLK_CONFIG_WCE) |
  bit(VirtioBit.BLK_DISCARD) |
  bit(VirtioBit.BLK_WRITE_ZEROES);

export function hasBit(mask: bigint, n: number): boolean {
  return (mask & bit(n)) !== 0n;
}

/** Split-ring descriptor flags (virtio 1.2 section 2.7.5). */
export const Desc = { NEXT: 1, WRITE: 2, INDIRECT: 4 } as const;
export const DESC_SIZE = 16;

/** virtio-blk request types and statuses (virtio 1.2 section 5.2.6). */
export const BlkType = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8, DISCARD: 11, WRITE_ZEROES: 13 } as const;
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;
export const BLK_HDR_SIZE = 16;
export const BLK_ID_BYTES = 20;
export const SECTOR = 512;

/** One memory region as the wire carries it (vhost-user.rst "Memory region description"). */
export interface WireRegion {
  guestPhysAddr: bigint;
  sizeBytes: bigint;
  userspaceAddr: bigint;
  mmapOffset: bigint;
}

export const REGION_SIZE = 32;

export function encodeHeader(request: number, flags: number, size: number): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, request >>> 0, true);
  v.setUint32(4, flags >>> 0, true);
  v.setUint32(8, size >>> 0, true);
  return b;
}

export function decodeHeader(b: Uint8Array): { request: number; flags: number; size: number } {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
}

export function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

export function u64(value: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, value), true);
  return b;
}

export function readU64(b: Uint8Array, off = 0): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(off, true);
}

export function readU32(b: Uint8Array, off = 0): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(off, true);
}

/** "A vring state description": u32 index, u32 num. */
export function vringState(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, index >>> 0, true);
  v.setUint32(4, num >>> 0, true);
  return b;
}

/** "A vring address description": u32 index, u32 flags, u64 desc, u64 used, u64 avail, u64 log (40 B). */
export function vringAddr(index: number, flags: number, desc: bigint, used: bigint, avail: bigint, log: bigint): Uint8Array {
  const b = new Uint8Array(40);
  const v = new DataView(b.buffer);
  v.setUint32(0, index >>> 0, true);
  v.setUint32(4, flags >>> 0, true);
  v.setBigUint64(8, desc, true);
  v.setBigUint64(16, used, true);
  v.setBigUint64(24, avail, true);
  v.setBigUint64(32, log, true);
  return b;
}

export function encodeRegion(r: WireRegion): Uint8Array {
  const b = new Uint8Array(REGION_SIZE);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt.asUintN(64, r.guestPhysAddr), true);
  v.setBigUint64(8, BigInt.asUintN(64, r.sizeBytes), true);
  v.setBigUint64(16, BigInt.asUintN(64, r.userspaceAddr), true);
  v.setBigUint64(24, BigInt.asUintN(64, r.mmapOffset), true);
  return b;
}

/** SET_MEM_TABLE payload: u32 nregions, u32 padding, regions (QEMU sends only the used ones). */
export function memTable(regions: WireRegion[], nregionsField = regions.length): Uint8Array {
  const head = new Uint8Array(8);
  new DataView(head.buffer).setUint32(0, nregionsField >>> 0, true);
  return concat([head, ...regions.map(encodeRegion)]);
}

/** ADD_MEM_REG / REM_MEM_REG payload: u64 padding + one region (40 B). */
export function singleRegion(r: WireRegion): Uint8Array {
  return concat([new Uint8Array(8), encodeRegion(r)]);
}

/** GET_CONFIG / SET_CONFIG payload: u32 offset, u32 size, u32 flags, then `size` bytes. */
export function configMsg(offset: number, size: number, flags: number, data?: Uint8Array): Uint8Array {
  const b = new Uint8Array(12 + size);
  const v = new DataView(b.buffer);
  v.setUint32(0, offset >>> 0, true);
  v.setUint32(4, size >>> 0, true);
  v.setUint32(8, flags >>> 0, true);
  if (data) b.set(data.subarray(0, size), 12);
  return b;
}

/** KICK/CALL/ERR payload: bits 0-7 queue index, bit 8 "no fd". */
export function vringFdPayload(index: number, noFd: boolean): Uint8Array {
  return u64(BigInt(index & 0xff) | (noFd ? 0x100n : 0n));
}

/** virtio-blk request header: le32 type, le32 ioprio, le64 sector (16 B). */
export function blkHeader(type: number, sector: bigint, ioprio = 0): Uint8Array {
  const b = new Uint8Array(BLK_HDR_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, type >>> 0, true);
  v.setUint32(4, ioprio >>> 0, true);
  v.setBigUint64(8, BigInt.asUintN(64, sector), true);
  return b;
}

/** DISCARD / WRITE_ZEROES segment: le64 sector, le32 num_sectors, le32 flags (bit 0 unmap). */
export function blkSegment(sector: bigint, numSectors: number, flags = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt.asUintN(64, sector), true);
  v.setUint32(8, numSectors >>> 0, true);
  v.setUint32(12, flags >>> 0, true);
  return b;
}

/** virtio_blk_config fields (virtio 1.2 section 5.2.4), decoded from a GET_CONFIG reply. */
export interface BlkConfig {
  capacity: bigint;
  sizeMax: number;
  segMax: number;
  blkSize: number;
  physicalBlockExp: number;
  alignmentOffset: number;
  minIoSize: number;
  optIoSize: number;
  wce: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  discardSectorAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  writeZeroesMayUnmap: number;
}

export function decodeBlkConfig(c: Uint8Array): BlkConfig {
  const padded = new Uint8Array(Math.max(60, c.byteLength));
  padded.set(c);
  const v = new DataView(padded.buffer);
  return {
    capacity: v.getBigUint64(0, true),
    sizeMax: v.getUint32(8, true),
    segMax: v.getUint32(12, true),
    blkSize: v.getUint32(20, true),
    physicalBlockExp: v.getUint8(24),
    alignmentOffset: v.getUint8(25),
    minIoSize: v.getUint16(26, true),
    optIoSize: v.getUint32(28, true),
    wce: v.getUint8(32),
    numQueues: v.getUint16(34, true),
    maxDiscardSectors: v.getUint32(36, true),
    maxDiscardSeg: v.getUint32(40, true),
    discardSectorAlignment: v.getUint32(44, true),
    maxWriteZeroesSectors: v.getUint32(48, true),
    maxWriteZeroesSeg: v.getUint32(52, true),
    writeZeroesMayUnmap: v.getUint8(56),
  };
}
