/**
 * vfio-user codec, sans-IO: a 16-byte header, its payload and the fds that
 * came with it become one typed message, and typed replies become bytes. It
 * knows no sockets. Every wire check lives in RULES, one row per command:
 * payload size, how many fds it may carry, and a decoder that range-checks
 * each field (flags, argsz, counts) before any handler sees it. A message
 * that breaks a rule is a ProtocolError: the connection closes with that
 * reason. A well-formed command we do not implement is not malformed: it is
 * answered with an error reply (ENOSYS/ENOTSUP) by the session.
 *
 * fd ownership: decodeMessage() owns the fds it is given: on success they are
 * in the message (the session owns them from then on), on failure every one
 * is closed before the ProtocolError is thrown.
 *
 * Numbers: the spec says host byte order; vhostd runs on little-endian hosts
 * only (as the vhost-user codec), so every field is read little-endian.
 * 64-bit fields must be below 2^53 (guest addresses and sizes always are).
 *
 * Thread: main (reactor); the encoders are also used by tests and the probe client.
 */
import { closeFd, closeFds } from '../fds';
import {
  Command,
  commandName,
  DmaMapFlag,
  DmaUnmapFlag,
  HEADER_SIZE,
  HeaderFlag,
  IrqSetFlag,
  MAX_DATA_XFER,
  MAX_FDS,
  MAX_MESSAGE_SIZE,
  MAX_VERSION_JSON,
} from './messages';

/** A violation of the vfio-user protocol by the client: the connection is closed with this reason. */
export class ProtocolError extends Error {
  readonly code = 'ERR_VFIO_USER_PROTOCOL';
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export { closeFd, closeFds };

export interface Header {
  id: number;
  command: number;
  /** Whole message size, header included. */
  size: number;
  flags: number;
  error: number;
}

/** Decode and check a command header: a command (not a reply), no unknown flag bits, a size within limits. */
export function decodeHeader(buf: Uint8Array): Header {
  if (buf.byteLength < HEADER_SIZE) throw new ProtocolError(`header of ${buf.byteLength} bytes, need ${HEADER_SIZE}`);
  const v = new DataView(buf.buffer, buf.byteOffset, HEADER_SIZE);
  const h: Header = {
    id: v.getUint16(0, true),
    command: v.getUint16(2, true),
    size: v.getUint32(4, true),
    flags: v.getUint32(8, true),
    error: v.getUint32(12, true),
  };
  if ((h.flags & HeaderFlag.TypeMask) !== HeaderFlag.TypeCommand) {
    throw new ProtocolError(`${commandName(h.command)}: message type ${h.flags & HeaderFlag.TypeMask} where a command (0) was expected`);
  }
  if ((h.flags & ~(HeaderFlag.TypeMask | HeaderFlag.NoReply)) !== 0) {
    throw new ProtocolError(`${commandName(h.command)}: unknown or reply-only header flags 0x${h.flags.toString(16)}`);
  }
  if (h.size < HEADER_SIZE || h.size > MAX_MESSAGE_SIZE) {
    throw new ProtocolError(`${commandName(h.command)}: message size ${h.size} outside ${HEADER_SIZE}..${MAX_MESSAGE_SIZE}`);
  }
  return h;
}

interface Common {
  id: number;
  noReply: boolean;
}

/** The client's JSON capabilities (absent members take the spec's defaults). */
export interface ClientCaps {
  maxMsgFds: number;
  maxDataXferSize: number;
}

export type VfioUserMessage =
  | (Common & { command: Command.Version; major: number; minor: number; caps: ClientCaps })
  | (Common & { command: Command.DmaMap; flags: number; offset: number; address: number; size: number; fd: number })
  | (Common & { command: Command.DmaUnmap; argsz: number; flags: number; address: number; size: number })
  | (Common & { command: Command.DeviceGetInfo; argsz: number })
  | (Common & { command: Command.DeviceGetRegionInfo; argsz: number; index: number })
  | (Common & { command: Command.DeviceGetIrqInfo; argsz: number; index: number })
  | (Common & {
      command: Command.DeviceSetIrqs;
      flags: number;
      index: number;
      start: number;
      count: number;
      /** DATA_BOOL: one byte per sub-index; otherwise null. */
      bools: Uint8Array | null;
      /** DATA_EVENTFD: `count` fds, or none (de-assign). */
      fds: number[];
    })
  | (Common & { command: Command.RegionRead; offset: number; region: number; count: number })
  | (Common & { command: Command.RegionWrite; offset: number; region: number; count: number; data: Uint8Array })
  | (Common & { command: Command.DeviceReset })
  /** A well-formed command vhostd does not implement: answered with `errno`. */
  | (Common & { command: Command.DeviceGetRegionIoFds | Command.DeviceFeature | Command.RegionWriteMulti | Command.DirtyPages | Command.MigDataRead | Command.MigDataWrite; unsupported: number });

type Decoder = (v: DataView, payload: Uint8Array, fds: number[], c: Common, name: string) => VfioUserMessage;

interface Rule {
  /** Smallest and largest payload (after the header). */
  minPayload: number;
  maxPayload: number;
  /** fds the command may carry. */
  maxFds: number;
  decode: Decoder;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

function u64(v: DataView, off: number, what: string, name: string): number {
  const hi = v.getUint32(off + 4, true);
  const lo = v.getUint32(off, true);
  const n = hi * 2 ** 32 + lo;
  if (hi >= 2 ** 21) throw new ProtocolError(`${name}: ${what} 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is beyond 2^53`);
  return n;
}

function need(cond: boolean, name: string, what: string): void {
  if (!cond) throw new ProtocolError(`${name}: ${what}`);
}

function parseCaps(payload: Uint8Array, name: string): ClientCaps {
  const caps: ClientCaps = { maxMsgFds: 1, maxDataXferSize: MAX_DATA_XFER };
  if (payload.byteLength <= 4) return caps;
  let json = payload.subarray(4);
  const nul = json.indexOf(0);
  need(nul === json.byteLength - 1, name, 'version data is not one NUL-terminated string');
  json = json.subarray(0, nul);
  need(json.byteLength <= MAX_VERSION_JSON, name, `version data longer than ${MAX_VERSION_JSON} bytes`);
  if (json.byteLength === 0) return caps;
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(json.buffer, json.byteOffset, json.byteLength).toString('utf8'));
  } catch {
    throw new ProtocolError(`${name}: version data is not JSON`);
  }
  need(typeof doc === 'object' && doc !== null && !Array.isArray(doc), name, 'version data is not a JSON object');
  const c = (doc as Record<string, unknown>).capabilities;
  if (c === undefined) return caps;
  need(typeof c === 'object' && c !== null && !Array.isArray(c), name, 'capabilities is not an object');
  const cap = c as Record<string, unknown>;
  for (const [key, field, min] of [
    ['max_msg_fds', 'maxMsgFds', 0],
    ['max_data_xfer_size', 'maxDataXferSize', 1],
  ] as const) {
    const x = cap[key];
    if (x === undefined) continue;
    need(typeof x === 'number' && Number.isSafeInteger(x) && x >= min, name, `capability ${key} must be an integer >= ${min}`);
    caps[field] = x as number;
  }
  return caps;
}

function fixed(size: number, maxFds: number, decode: Decoder): Rule {
  return { minPayload: size, maxPayload: size, maxFds, decode };
}

function unsupported(minPayload: number, errno: number): Rule {
  return {
    minPayload,
    maxPayload: MAX_MESSAGE_SIZE - HEADER_SIZE,
    maxFds: 0,
    decode: (_v, _p, _f, c, _n) => ({ ...c, command: 0 as Command.DeviceFeature, unsupported: errno }),
  };
}

/** One row per command the client may send. Commands absent here (DMA_READ/WRITE: server to client only; unknown ids) are protocol errors. */
export const RULES: ReadonlyMap<number, Rule> = new Map<number, Rule>([
  [
    Command.Version,
    {
      minPayload: 4,
      maxPayload: 4 + MAX_VERSION_JSON + 1,
      maxFds: 0,
      decode: (v, p, _f, c, name) => ({ ...c, command: Command.Version, major: v.getUint16(0, true), minor: v.getUint16(2, true), caps: parseCaps(p, name) }),
    },
  ],
  [
    Command.DmaMap,
    fixed(32, 1, (v, _p, fds, c, name) => {
      const argsz = v.getUint32(0, true);
      const flags = v.getUint32(4, true);
      need(argsz === 32, name, `argsz ${argsz}, must be 32`);
      need((flags & ~(DmaMapFlag.Read | DmaMapFlag.Write)) === 0, name, `unknown flags 0x${flags.toString(16)}`);
      const offset = u64(v, 8, 'offset', name);
      const address = u64(v, 16, 'address', name);
      const size = u64(v, 24, 'size', name);
      need(size > 0, name, 'size 0');
      need(address <= MAX_SAFE - size && offset <= MAX_SAFE - size, name, 'window ends beyond 2^53');
      need(fds.length === 1 || offset === 0, name, 'a window without an fd must have offset 0');
      return { ...c, command: Command.DmaMap, flags, offset, address, size, fd: fds.length === 1 ? fds[0] : -1 };
    }),
  ],
  [
    Command.DmaUnmap,
    fixed(24, 0, (v, _p, _f, c, name) => {
      const argsz = v.getUint32(0, true);
      const flags = v.getUint32(4, true);
      need(argsz >= 24, name, `argsz ${argsz} below 24`);
      need((flags & ~DmaUnmapFlag.All) === 0, name, `flags 0x${flags.toString(16)} (only UNMAP_ALL is offered: no dirty bitmap without migration)`);
      const address = u64(v, 8, 'address', name);
      const size = u64(v, 16, 'size', name);
      if (flags & DmaUnmapFlag.All) need(address === 0 && size === 0, name, 'UNMAP_ALL with an address or size');
      return { ...c, command: Command.DmaUnmap, argsz, flags, address, size };
    }),
  ],
  [
    Command.DeviceGetInfo,
    fixed(16, 0, (v, _p, _f, c, name) => {
      const argsz = v.getUint32(0, true);
      need(argsz >= 16, name, `argsz ${argsz} below 16`);
      return { ...c, command: Command.DeviceGetInfo, argsz };
    }),
  ],
  [
    Command.DeviceGetRegionInfo,
    fixed(32, 0, (v, _p, _f, c, name) => {
      const argsz = v.getUint32(0, true);
      need(argsz >= 32, name, `argsz ${argsz} below 32`);
      return { ...c, command: Command.DeviceGetRegionInfo, argsz, index: v.getUint32(8, true) };
    }),
  ],
  [Command.DeviceGetRegionIoFds, unsupported(16, 95 /* ENOTSUP */)],
  [
    Command.DeviceGetIrqInfo,
    fixed(16, 0, (v, _p, _f, c, name) => {
      const argsz = v.getUint32(0, true);
      need(argsz >= 16, name, `argsz ${argsz} below 16`);
      return { ...c, command: Command.DeviceGetIrqInfo, argsz, index: v.getUint32(8, true) };
    }),
  ],
  [
    Command.DeviceSetIrqs,
    {
      minPayload: 20,
      maxPayload: 20 + 2048,
      maxFds: MAX_FDS,
      decode: (v, p, fds, c, name) => {
        const argsz = v.getUint32(0, true);
        const flags = v.getUint32(4, true);
        const index = v.getUint32(8, true);
        const start = v.getUint32(12, true);
        const count = v.getUint32(16, true);
        need(argsz === p.byteLength, name, `argsz ${argsz} is not the payload size ${p.byteLength}`);
        need((flags & ~(IrqSetFlag.DataMask | IrqSetFlag.ActionMaskBits)) === 0, name, `unknown flags 0x${flags.toString(16)}`);
        const data = flags & IrqSetFlag.DataMask;
        const action = flags & IrqSetFlag.ActionMaskBits;
        need(data !== 0 && (data & (data - 1)) === 0, name, 'exactly one DATA flag is required');
        need(action !== 0 && (action & (action - 1)) === 0, name, 'exactly one ACTION flag is required');
        need(start <= 2048 && count <= 2048 - start, name, `sub-indexes ${start}+${count} beyond 2048`);
        let bools: Uint8Array | null = null;
        if (data === IrqSetFlag.DataBool) {
          need(p.byteLength === 20 + count, name, `DATA_BOOL with ${p.byteLength - 20} bytes for ${count} sub-indexes`);
          bools = p.slice(20);
        } else {
          need(p.byteLength === 20, name, 'data bytes without DATA_BOOL');
        }
        if (data === IrqSetFlag.DataEventfd) {
          need(fds.length === 0 || fds.length === count, name, `${fds.length} eventfds for ${count} sub-indexes`);
        } else {
          need(fds.length === 0, name, 'fds without DATA_EVENTFD');
          if (data === IrqSetFlag.DataNone && count === 0) need(start === 0, name, 'count 0 with a start');
        }
        return { ...c, command: Command.DeviceSetIrqs, flags, index, start, count, bools, fds: fds.slice() };
      },
    },
  ],
  [
    Command.RegionRead,
    fixed(16, 0, (v, _p, _f, c, name) => {
      const offset = u64(v, 0, 'offset', name);
      const region = v.getUint32(8, true);
      const count = v.getUint32(12, true);
      need(count > 0 && count <= MAX_DATA_XFER, name, `count ${count} outside 1..${MAX_DATA_XFER}`);
      return { ...c, command: Command.RegionRead, offset, region, count };
    }),
  ],
  [
    Command.RegionWrite,
    {
      minPayload: 17,
      maxPayload: 16 + MAX_DATA_XFER,
      maxFds: 0,
      decode: (v, p, _f, c, name) => {
        const offset = u64(v, 0, 'offset', name);
        const region = v.getUint32(8, true);
        const count = v.getUint32(12, true);
        need(count > 0 && p.byteLength === 16 + count, name, `count ${count} with ${p.byteLength - 16} data bytes`);
        return { ...c, command: Command.RegionWrite, offset, region, count, data: p.subarray(16) };
      },
    },
  ],
  [Command.DeviceReset, fixed(0, 0, (_v, _p, _f, c) => ({ ...c, command: Command.DeviceReset }))],
  [Command.DirtyPages, unsupported(0, 95)],
  [Command.RegionWriteMulti, unsupported(8, 95)],
  [Command.DeviceFeature, unsupported(8, 95)],
  [Command.MigDataRead, unsupported(8, 95)],
  [Command.MigDataWrite, unsupported(8, 95)],
]);

/** Validate and type one command. Takes ownership of `fds` (closed on failure). */
export function decodeMessage(h: Header, payload: Uint8Array, fds: number[]): VfioUserMessage {
  try {
    const name = commandName(h.command);
    const rule = RULES.get(h.command);
    if (rule === undefined) throw new ProtocolError(`${name}: not a command a client may send`);
    const size = payload.byteLength;
    if (size !== h.size - HEADER_SIZE) throw new ProtocolError(`${name}: payload of ${size} bytes, header says ${h.size - HEADER_SIZE}`);
    if (size < rule.minPayload || size > rule.maxPayload) {
      throw new ProtocolError(
        rule.minPayload === rule.maxPayload
          ? `${name}: payload of ${size} bytes, must be ${rule.minPayload}`
          : `${name}: payload of ${size} bytes outside ${rule.minPayload}..${rule.maxPayload}`,
      );
    }
    if (fds.length > rule.maxFds) throw new ProtocolError(`${name}: ${fds.length} fds, at most ${rule.maxFds}`);
    const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    const msg = rule.decode(v, payload, fds, { id: h.id, noReply: (h.flags & HeaderFlag.NoReply) !== 0 }, name);
    if ('unsupported' in msg) {
      closeFds(fds);
      return { ...msg, command: h.command as Command.DeviceFeature };
    }
    return msg;
  } catch (err) {
    closeFds(fds);
    throw err;
  }
}

// --- encoders ------------------------------------------------------------------

function header(v: DataView, id: number, command: number, size: number, flags: number, error: number): void {
  v.setUint16(0, id, true);
  v.setUint16(2, command, true);
  v.setUint32(4, size, true);
  v.setUint32(8, flags, true);
  v.setUint32(12, error, true);
}

function putU64(v: DataView, off: number, n: number): void {
  v.setUint32(off, n % 2 ** 32, true);
  v.setUint32(off + 4, Math.floor(n / 2 ** 32), true);
}

/** A reply to command `id`, with `payload` after the header. */
export function encodeReply(id: number, command: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  header(new DataView(out.buffer), id, command, out.byteLength, HeaderFlag.TypeReply, 0);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** An error reply: the header only, Error flag and errno. */
export function encodeErrorReply(id: number, command: number, errno: number): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  header(new DataView(out.buffer), id, command, HEADER_SIZE, HeaderFlag.TypeReply | HeaderFlag.Error, errno);
  return out;
}

/** A command (the client side: tests and the probe client). */
export function encodeCommand(id: number, command: number, payload: Uint8Array = new Uint8Array(0), flags = 0): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.byteLength);
  header(new DataView(out.buffer), id, command, out.byteLength, flags, 0);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** VERSION payload: major, minor, NUL-terminated JSON. */
export function encodeVersion(major: number, minor: number, json: string): Uint8Array {
  const text = Buffer.from(json + '\0', 'utf8');
  const out = new Uint8Array(4 + text.byteLength);
  const v = new DataView(out.buffer);
  v.setUint16(0, major, true);
  v.setUint16(2, minor, true);
  out.set(text, 4);
  return out;
}

/** vfio_device_info reply (16 bytes). */
export function encodeDeviceInfo(flags: number, numRegions: number, numIrqs: number): Uint8Array {
  const out = new Uint8Array(16);
  const v = new DataView(out.buffer);
  v.setUint32(0, 16, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, numRegions, true);
  v.setUint32(12, numIrqs, true);
  return out;
}

export interface SparseArea {
  offset: number;
  size: number;
}

/**
 * vfio_region_info (32 bytes) and, when `areas` is given, a sparse-mmap
 * capability after it (header id/version/next, nr_areas, reserved, then
 * offset/size pairs). argsz is the full size; when the client's argsz is
 * smaller only the 32-byte head is sent, without the CAPS flag (the spec:
 * argsz says what is needed; the client asks again).
 */
export function encodeRegionInfo(
  clientArgsz: number,
  index: number,
  flags: number,
  size: number,
  offset: number,
  areas: readonly SparseArea[] | null,
): Uint8Array {
  const capBytes = areas ? 8 + 8 + 16 * areas.length : 0;
  const full = 32 + capBytes;
  const out = new Uint8Array(clientArgsz >= full ? full : 32);
  const v = new DataView(out.buffer);
  v.setUint32(0, full, true);
  // CAPS only when the capabilities are in this reply: QEMU refuses CAPS with
  // cap_offset 0, and asks again with the larger argsz it read here.
  v.setUint32(4, flags | (areas && out.byteLength === full ? 8 /* CAPS */ : 0), true);
  v.setUint32(8, index, true);
  v.setUint32(12, areas && out.byteLength === full ? 32 : 0, true);
  putU64(v, 16, size);
  putU64(v, 24, offset);
  if (areas && out.byteLength === full) {
    v.setUint16(32, 1 /* CAP_SPARSE_MMAP */, true);
    v.setUint16(34, 1, true);
    v.setUint32(36, 0, true);
    v.setUint32(40, areas.length, true);
    v.setUint32(44, 0, true);
    areas.forEach((a, i) => {
      putU64(v, 48 + 16 * i, a.offset);
      putU64(v, 56 + 16 * i, a.size);
    });
  }
  return out;
}

/** vfio_irq_info reply (16 bytes). */
export function encodeIrqInfo(flags: number, index: number, count: number): Uint8Array {
  const out = new Uint8Array(16);
  const v = new DataView(out.buffer);
  v.setUint32(0, 16, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, index, true);
  v.setUint32(12, count, true);
  return out;
}

/** REGION_READ reply (offset, region, count, data) or REGION_WRITE reply (no data). */
export function encodeRegionAccess(offset: number, region: number, count: number, data: Uint8Array | null): Uint8Array {
  const out = new Uint8Array(16 + (data ? data.byteLength : 0));
  const v = new DataView(out.buffer);
  putU64(v, 0, offset);
  v.setUint32(8, region, true);
  v.setUint32(12, count, true);
  if (data) out.set(data, 16);
  return out;
}

/** DMA_MAP payload (client side). */
export function encodeDmaMap(flags: number, offset: number, address: number, size: number): Uint8Array {
  const out = new Uint8Array(32);
  const v = new DataView(out.buffer);
  v.setUint32(0, 32, true);
  v.setUint32(4, flags, true);
  putU64(v, 8, offset);
  putU64(v, 16, address);
  putU64(v, 24, size);
  return out;
}

/** DMA_UNMAP payload (client side; also the reply, which echoes the request). */
export function encodeDmaUnmap(argsz: number, flags: number, address: number, size: number): Uint8Array {
  const out = new Uint8Array(24);
  const v = new DataView(out.buffer);
  v.setUint32(0, argsz, true);
  v.setUint32(4, flags, true);
  putU64(v, 8, address);
  putU64(v, 16, size);
  return out;
}

/** A request payload of argsz + flags + index (+ zero padding) for GET_INFO / GET_REGION_INFO / GET_IRQ_INFO (client side). */
export function encodeInfoRequest(size: number, argsz: number, index: number): Uint8Array {
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  v.setUint32(0, argsz, true);
  if (size >= 12) v.setUint32(8, index, true);
  return out;
}

/** SET_IRQS payload (client side). */
export function encodeSetIrqs(flags: number, index: number, start: number, count: number, bools: Uint8Array | null = null): Uint8Array {
  const out = new Uint8Array(20 + (bools ? bools.byteLength : 0));
  const v = new DataView(out.buffer);
  v.setUint32(0, out.byteLength, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, index, true);
  v.setUint32(12, start, true);
  v.setUint32(16, count, true);
  if (bools) out.set(bools, 20);
  return out;
}
