/**
 * virtio-blk request parsing (virtio 1.2 §5.2.6), "parse, then execute" as
 * rust-vmm's Request::parse: a walked descriptor chain becomes either a typed
 * BlkRequest ready for the bdev, or a virtio status to complete it with.
 * Nothing is thrown on guest input and nothing here touches a bdev.
 *
 * Request layout: le32 type, le32 ioprio, le64 sector (16 bytes,
 * device-readable, possibly split over several descriptors), then the data,
 * then one device-writable status byte, which is the last byte of the last
 * writable segment. Sectors are always 512 bytes.
 *
 * Thread: the engine worker that owns the device. BlkRequest objects are
 * pooled with their chains; nothing here allocates.
 */
import type { GuestMemory } from '../memory';
import type { DescChain } from '../virtio/chain';
import {
  BLK_DWZ_FLAG_UNMAP,
  BLK_DWZ_SEGMENT_SIZE,
  BLK_HEADER_SIZE,
  BLK_ID_BYTES,
  BLK_SECTOR_SIZE,
  BlkLimit,
  BlkStatus,
  BlkType,
} from '../virtio/spec';

/** parseBlkRequest() result: the request is valid and goes to execution. */
export const PARSE_EXECUTE = -1;
/** parseBlkRequest() result: no writable byte for the status, so no status can be given. */
export const PARSE_NO_STATUS = -2;

const SECTOR = BLK_SECTOR_SIZE;
const TWO_32 = 4294967296;

/** What the parser needs to know of the device. */
export interface BlkDisk {
  /** Capacity in 512-byte sectors. */
  capacitySectors: number;
  /** Bytes per bdev block: sector and length must be multiples of it. */
  blockSize: number;
  readonly: boolean;
}

/** A parsed request. Data lives in the chain: see the data* fields. */
export class BlkRequest {
  type = 0;
  sector = 0;
  /** Data bytes (IN/OUT: the transfer; GET_ID: room for the id). */
  dataBytes = 0;
  /** First chain segment holding data, and bytes of it to skip. */
  dataSeg = 0;
  dataSkip = 0;
  /** One past the last chain segment holding data, and bytes to drop at the end of that last one. */
  dataEnd = 0;
  dataTrim = 0;
  /** DISCARD / WRITE_ZEROES: the (single) segment. */
  numSectors = 0;
  dwzFlags = 0;
  /** Where the status byte goes. */
  statusRegion = 0;
  statusOffset = 0;
}

const scratch = new Uint8Array(16);
const scratchView = new DataView(scratch.buffer);

/** Where read16() left its 16 bytes: a DataView and the offset in it. */
let rView: DataView = scratchView;
let rAt = 0;

/**
 * Locate 16 readable bytes starting `skip` bytes into the readable part of
 * the chain: in place when one segment holds them, else gathered into a
 * scratch buffer. Sets rView / rAt. Callers check readableBytes first.
 */
function read16(mem: GuestMemory, chain: DescChain, skip: number): void {
  let seg = 0;
  while (skip >= chain.len[seg]) skip -= chain.len[seg++];
  if (chain.len[seg] - skip >= 16) {
    rView = mem.views[chain.region[seg]];
    rAt = chain.offset[seg] + skip;
    return;
  }
  let got = 0;
  while (got < 16) {
    const n = Math.min(16 - got, chain.len[seg] - skip);
    const src = mem.bytes[chain.region[seg]];
    const from = chain.offset[seg] + skip;
    for (let i = 0; i < n; i++) scratch[got + i] = src[from + i];
    got += n;
    seg++;
    skip = 0;
  }
  rView = scratchView;
  rAt = 0;
}

/** The 16 header bytes, read once per request. */
const header = { type: 0, sector: 0, sectorHigh: 0 };

function readHeader(mem: GuestMemory, chain: DescChain): void {
  read16(mem, chain, 0);
  header.type = rView.getUint32(rAt, true);
  const lo = rView.getUint32(rAt + 8, true);
  const hi = rView.getUint32(rAt + 12, true);
  header.sectorHigh = hi;
  header.sector = hi * TWO_32 + lo; // inexact when hi >= 2^21, but then sectorHigh refuses it
}

/**
 * Is [sector, sector + count) inside the disk, aligned to its block size?
 * Overflow-safe: sectorHigh guards the 2^53 limit, and no sum is formed.
 */
function rangeOk(disk: BlkDisk, sectorHigh: number, sector: number, count: number): boolean {
  if (sectorHigh > 0x1fffff) return false;
  if (count > disk.capacitySectors || sector > disk.capacitySectors - count) return false;
  const perBlock = disk.blockSize / SECTOR;
  // Hot path: with perBlock a power of 2 (every usual block size, 512 * 2^k),
  // x % perBlock === (x & (perBlock - 1)) for every integer 0 <= x < 2^53:
  // `&` takes x modulo 2^32 exactly (ToInt32), which keeps the low bits. That
  // avoids the double `%` (a call to fmod in V8: 5 % of the request time in
  // the profile). sector < 2^53 here (sectorHigh checked), count too.
  const m = perBlock - 1;
  if ((perBlock | 0) === perBlock && (perBlock & m) === 0) return (sector & m) === 0 && (count & m) === 0;
  return sector % perBlock === 0 && count % perBlock === 0;
}

/**
 * Parse `chain` into `req`. Returns PARSE_EXECUTE when `req` is a valid
 * request to run, PARSE_NO_STATUS when the chain has no writable byte (it
 * can only be returned with used length 0), or a BlkStatus to complete it
 * with at once (req.statusRegion/statusOffset are then valid, and the used
 * length is 1: nothing else was written).
 */
export function parseBlkRequest(mem: GuestMemory, chain: DescChain, disk: BlkDisk, req: BlkRequest): number {
  // The status byte: last byte of the last writable segment.
  const last = chain.count - 1;
  if (chain.count === chain.readable) return PARSE_NO_STATUS;
  req.statusRegion = chain.region[last];
  req.statusOffset = chain.offset[last] + chain.len[last] - 1;
  req.dataBytes = 0;
  req.numSectors = 0;

  if (chain.readableBytes < BLK_HEADER_SIZE) return BlkStatus.IoErr;
  readHeader(mem, chain);
  req.type = header.type;
  req.sector = header.sector;

  const extraReadable = chain.readableBytes - BLK_HEADER_SIZE;
  const writableData = chain.writableBytes - 1;

  switch (header.type) {
    case BlkType.In: {
      if (extraReadable !== 0 || writableData === 0 || writableData % SECTOR !== 0) return BlkStatus.IoErr;
      if (!rangeOk(disk, header.sectorHigh, header.sector, writableData / SECTOR)) return BlkStatus.IoErr;
      req.dataBytes = writableData;
      req.dataSeg = chain.readable;
      req.dataSkip = 0;
      req.dataEnd = chain.count;
      req.dataTrim = 1;
      return PARSE_EXECUTE;
    }
    case BlkType.Out: {
      if (disk.readonly) return BlkStatus.IoErr; // §5.2.6.2
      if (writableData !== 0 || extraReadable === 0 || extraReadable % SECTOR !== 0) return BlkStatus.IoErr;
      if (!rangeOk(disk, header.sectorHigh, header.sector, extraReadable / SECTOR)) return BlkStatus.IoErr;
      req.dataBytes = extraReadable;
      setReadableData(chain, req);
      return PARSE_EXECUTE;
    }
    case BlkType.Flush:
      // The sector field is reserved for FLUSH; any data is ignored.
      return PARSE_EXECUTE;
    case BlkType.GetId: {
      if (writableData === 0) return BlkStatus.IoErr;
      req.dataBytes = Math.min(writableData, BLK_ID_BYTES);
      req.dataSeg = chain.readable;
      req.dataSkip = 0;
      req.dataEnd = chain.count;
      req.dataTrim = 1;
      return PARSE_EXECUTE;
    }
    case BlkType.Discard:
    case BlkType.WriteZeroes: {
      if (disk.readonly) return BlkStatus.IoErr;
      const discard = header.type === BlkType.Discard;
      const maxSeg = discard ? BlkLimit.MaxDiscardSeg : BlkLimit.MaxWriteZeroesSeg;
      const maxSectors = discard ? BlkLimit.MaxDiscardSectors : BlkLimit.MaxWriteZeroesSectors;
      if (extraReadable === 0 || extraReadable % BLK_DWZ_SEGMENT_SIZE !== 0) return BlkStatus.IoErr;
      if (extraReadable / BLK_DWZ_SEGMENT_SIZE > maxSeg) return BlkStatus.IoErr;
      // BlkLimit.Max*Seg is 1: exactly one segment.
      read16(mem, chain, BLK_HEADER_SIZE);
      const lo = rView.getUint32(rAt, true);
      const hi = rView.getUint32(rAt + 4, true);
      const count = rView.getUint32(rAt + 8, true);
      const flags = rView.getUint32(rAt + 12, true);
      // §5.2.6.2: unknown flags, or unmap on a discard, are UNSUPP.
      if (discard ? flags !== 0 : (flags & ~BLK_DWZ_FLAG_UNMAP) !== 0) return BlkStatus.Unsupp;
      if (count === 0 || count > maxSectors) return BlkStatus.IoErr;
      const sector = hi * TWO_32 + lo;
      if (!rangeOk(disk, hi, sector, count)) return BlkStatus.IoErr;
      req.sector = sector;
      req.numSectors = count;
      req.dwzFlags = flags;
      return PARSE_EXECUTE;
    }
    default:
      return BlkStatus.Unsupp;
  }
}

/** Data of an OUT request: the readable bytes after the header. */
function setReadableData(chain: DescChain, req: BlkRequest): void {
  let seg = 0;
  let skip = BLK_HEADER_SIZE;
  while (skip >= chain.len[seg]) skip -= chain.len[seg++];
  req.dataSeg = seg;
  req.dataSkip = skip;
  req.dataEnd = chain.readable;
  req.dataTrim = 0;
}
