/**
 * vhost-user wire constants: request ids with the spec's names, header flags,
 * protocol feature bits and the few fixed sizes of the protocol
 * (QEMU docs/interop/vhost-user.rst). Constants only, no logic beyond naming.
 * Thread: main (reactor); also usable by the in-repo test front-end.
 */

/** Front-end → back-end request ids ("Front-end message types"). */
export const enum Request {
  GetFeatures = 1,
  SetFeatures = 2,
  SetOwner = 3,
  ResetOwner = 4,
  SetMemTable = 5,
  SetLogBase = 6,
  SetLogFd = 7,
  SetVringNum = 8,
  SetVringAddr = 9,
  SetVringBase = 10,
  GetVringBase = 11,
  SetVringKick = 12,
  SetVringCall = 13,
  SetVringErr = 14,
  GetProtocolFeatures = 15,
  SetProtocolFeatures = 16,
  GetQueueNum = 17,
  SetVringEnable = 18,
  SendRarp = 19,
  NetSetMtu = 20,
  SetBackendReqFd = 21,
  IotlbMsg = 22,
  SetVringEndian = 23,
  GetConfig = 24,
  SetConfig = 25,
  CreateCryptoSession = 26,
  CloseCryptoSession = 27,
  PostcopyAdvise = 28,
  PostcopyListen = 29,
  PostcopyEnd = 30,
  GetInflightFd = 31,
  SetInflightFd = 32,
  GpuSetSocket = 33,
  ResetDevice = 34,
  VringKick = 35,
  GetMaxMemSlots = 36,
  AddMemReg = 37,
  RemMemReg = 38,
  SetStatus = 39,
  GetStatus = 40,
}

/** The spec's names (VHOST_USER_<name>), for logs and error messages. */
const REQUEST_NAMES: Record<number, string> = {
  1: 'GET_FEATURES',
  2: 'SET_FEATURES',
  3: 'SET_OWNER',
  4: 'RESET_OWNER',
  5: 'SET_MEM_TABLE',
  6: 'SET_LOG_BASE',
  7: 'SET_LOG_FD',
  8: 'SET_VRING_NUM',
  9: 'SET_VRING_ADDR',
  10: 'SET_VRING_BASE',
  11: 'GET_VRING_BASE',
  12: 'SET_VRING_KICK',
  13: 'SET_VRING_CALL',
  14: 'SET_VRING_ERR',
  15: 'GET_PROTOCOL_FEATURES',
  16: 'SET_PROTOCOL_FEATURES',
  17: 'GET_QUEUE_NUM',
  18: 'SET_VRING_ENABLE',
  19: 'SEND_RARP',
  20: 'NET_SET_MTU',
  21: 'SET_BACKEND_REQ_FD',
  22: 'IOTLB_MSG',
  23: 'SET_VRING_ENDIAN',
  24: 'GET_CONFIG',
  25: 'SET_CONFIG',
  26: 'CREATE_CRYPTO_SESSION',
  27: 'CLOSE_CRYPTO_SESSION',
  28: 'POSTCOPY_ADVISE',
  29: 'POSTCOPY_LISTEN',
  30: 'POSTCOPY_END',
  31: 'GET_INFLIGHT_FD',
  32: 'SET_INFLIGHT_FD',
  33: 'GPU_SET_SOCKET',
  34: 'RESET_DEVICE',
  35: 'VRING_KICK',
  36: 'GET_MAX_MEM_SLOTS',
  37: 'ADD_MEM_REG',
  38: 'REM_MEM_REG',
  39: 'SET_STATUS',
  40: 'GET_STATUS',
};

/** "SET_MEM_TABLE", or "request 99" for an id the spec does not name. */
export function requestName(request: number): string {
  return REQUEST_NAMES[request] ?? `request ${request}`;
}

/** Back-end → front-end requests on the SET_BACKEND_REQ_FD channel (vhost-user.rst "Back-end message types"). */
export const enum BackendRequest {
  /** VHOST_USER_BACKEND_CONFIG_CHANGE_MSG: the config space changed; no payload. */
  ConfigChangeMsg = 2,
}

/** Header flags word. */
export const enum HeaderFlag {
  /** Bits 0-1: protocol version. */
  VersionMask = 0x3,
  Version = 0x1,
  /** Set on every back-end reply. */
  Reply = 0x4,
  /** The front-end asks for a REPLY_ACK answer. */
  NeedReply = 0x8,
}

/** vhost-user protocol feature bits (bit numbers). */
export const enum ProtocolFeature {
  Mq = 0,
  LogShmfd = 1,
  Rarp = 2,
  ReplyAck = 3,
  Mtu = 4,
  BackendReq = 5,
  CrossEndian = 6,
  CryptoSession = 7,
  Pagefault = 8,
  Config = 9,
  BackendSendFd = 10,
  HostNotifier = 11,
  InflightShmfd = 12,
  ResetDevice = 13,
  InbandNotifications = 14,
  ConfigureMemSlots = 15,
  Status = 16,
}

/** The protocol-feature mask of one bit. */
export function protocolBit(bit: ProtocolFeature): bigint {
  return 1n << BigInt(bit);
}

/** Protocol features this implementation can serve; a backend offers a subset. */
export const SUPPORTED_PROTOCOL_FEATURES: bigint =
  protocolBit(ProtocolFeature.Mq) |
  protocolBit(ProtocolFeature.ReplyAck) |
  protocolBit(ProtocolFeature.BackendReq) |
  protocolBit(ProtocolFeature.Config) |
  protocolBit(ProtocolFeature.ConfigureMemSlots) |
  protocolBit(ProtocolFeature.Status) |
  protocolBit(ProtocolFeature.InflightShmfd) |
  protocolBit(ProtocolFeature.LogShmfd);

/** Feature bit 26: VHOST_F_LOG_ALL, dirty logging during live migration (vhost-user.rst "Migration"). */
export const VHOST_F_LOG_ALL = 1n << 26n;

/** SET_VRING_ADDR flags bit 0: VHOST_VRING_F_LOG, log_guest_addr is valid and the ring's writes are logged. */
export const VHOST_VRING_F_LOG = 0x1;

/** SET_LOG_BASE payload: u64 mmap_size, u64 mmap_offset. */
export const LOG_PAYLOAD_SIZE = 16;

/** Virtio feature bit 30: VHOST_USER_F_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 1n << 30n;

/** Fixed sizes and limits. */
export const HEADER_SIZE = 12;
/** Largest payload this back-end accepts; every request it serves is far smaller. */
export const MAX_PAYLOAD_SIZE = 4096;
/** At most this many fds ride on one message (and SET_MEM_TABLE regions). */
export const MAX_FDS = 8;
/** One memory region description: gpa, size, uva, mmap offset. */
export const REGION_SIZE = 32;
/** GET_MAX_MEM_SLOTS's answer and the region table's limit. */
export const MAX_MEM_SLOTS = 32;
/** Config space accesses (GET/SET_CONFIG) must lie in [0, 256). */
export const MAX_CONFIG_SIZE = 256;
/** The config access header: u32 offset, u32 size, u32 flags. */
export const CONFIG_HEADER_SIZE = 12;
/** Largest virtqueue (virtio 1.2 §2.7 / §2.6: Queue Size ≤ 32768). */
export const MAX_QUEUE_SIZE = 32768;

/** GET/SET_INFLIGHT_FD payload: u64 mmap_size, u64 mmap_offset, u16 num_queues, u16 queue_size, 4 bytes padding. */
export const INFLIGHT_PAYLOAD_SIZE = 24;

/** KICK/CALL/ERR payload: bits 0-7 index, bit 8 "no fd". */
export const VRING_INDEX_MASK = 0xffn;
export const VRING_NOFD_MASK = 0x100n;
