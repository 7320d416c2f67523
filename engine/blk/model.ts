/**
 * The virtio-blk device model (virtio 1.2 §5.2) on the virtio device core
 * (engine/virtio/device.ts): a walked chain is parsed (parse.ts) into a
 * typed request or a status, a valid one goes to the bdev through the
 * worker's bdev layer (QoS, NOMEM retries and iostat are the layer's), and
 * completion writes the status byte and the used length (bytes written to
 * the guest + 1). It also answers GET_ID and keeps the device's blk
 * counters (DeviceStat read/write/flush/unmap/error).
 *
 * A chain the walk refused still gets IOERR when its tail (the last byte of
 * its last, device-writable descriptor) lies in guest memory, found by that
 * same walk; otherwise it goes back with used length 0.
 *
 * Thread: the engine worker that runs the device.
 */
import { type BdevHandle, type BdevUser } from '../bdev/layer';
import { BdevIo, BdevIoStatus, BdevIoType } from '../bdev/bdev';
import { type BlkModelDesc, type DeviceDesc, DeviceStat } from '../control';
import type { DeviceEnv, EngineDevice } from '../device';
import { ChainError, chainErrorName } from '../virtio/chain';
import { VirtioDevice, type VirtioModel, type VirtioQueueState, VirtioTask } from '../virtio/device';
import { BLK_ID_BYTES, BLK_SECTOR_SIZE, BlkLimit, BlkStatus, BlkType } from '../virtio/spec';
import { type BlkDisk, BlkRequest, PARSE_EXECUTE, PARSE_NO_STATUS, parseBlkRequest } from './parse';

/**
 * Segments one request may use: the header, seg_max data segments and the
 * status byte. A driver that honours seg_max never needs more (Linux puts
 * header and status in descriptors of their own); a longer chain is refused
 * with IOERR.
 */
export const BLK_MAX_SEGMENTS = BlkLimit.SegMax + 2;

class BlkIo extends BdevIo {
  constructor(
    capacity: number,
    private readonly task: BlkTask,
    private readonly model: BlkModel,
  ) {
    super(capacity);
  }

  done(): void {
    this.model.ioDone(this.task);
  }
}

/** One request slot of a queue: its chain (VirtioTask), parsed request and bdev I/O. */
export class BlkTask extends VirtioTask {
  readonly req = new BlkRequest();
  readonly io: BlkIo;

  constructor(queue: VirtioQueueState, model: BlkModel) {
    super(queue, BLK_MAX_SEGMENTS);
    this.io = new BlkIo(BLK_MAX_SEGMENTS, this, model);
  }
}

export class BlkModel implements VirtioModel<BlkTask>, BdevUser {
  readonly maxSegments = BLK_MAX_SEGMENTS;
  private readonly core: VirtioDevice<BlkTask>;
  private readonly bdev: BdevHandle;
  private readonly disk: BlkDisk;
  private readonly stats: Float64Array;
  private readonly idBytes = new Uint8Array(BLK_ID_BYTES);
  private readonly sectorsPerBlock: number;
  private readonly canFlush: boolean;
  private readonly canUnmap: boolean;
  private readonly canWriteZeroes: boolean;

  constructor(core: VirtioDevice<BlkTask>, desc: DeviceDesc, model: BlkModelDesc, env: DeviceEnv) {
    if (desc.bdevs.length !== 1) throw new RangeError(`blk device ${desc.name} needs exactly one bdev, got ${desc.bdevs.length}`);
    this.core = core;
    this.stats = core.stats;
    this.bdev = env.bdevs.open(desc.bdevs[0], this, core.nowMs);
    const bdev = this.bdev;
    this.sectorsPerBlock = bdev.blockSize / BLK_SECTOR_SIZE;
    this.disk = { capacitySectors: bdev.numBlocks * this.sectorsPerBlock, blockSize: bdev.blockSize, readonly: model.readonly };
    this.canFlush = bdev.ioTypeSupported(BdevIoType.Flush);
    this.canUnmap = bdev.ioTypeSupported(BdevIoType.Unmap);
    this.canWriteZeroes = bdev.ioTypeSupported(BdevIoType.WriteZeroes);
    // GET_ID: the bdev name, at most 20 bytes, NUL-padded (§5.2.6: not NUL-terminated when 20 long).
    this.idBytes.set(Buffer.from(bdev.name, 'utf8').subarray(0, BLK_ID_BYTES));
  }

  newTask(queue: VirtioQueueState): BlkTask {
    return new BlkTask(queue, this);
  }

  bdevResized(numBlocks: number): void {
    this.disk.capacitySectors = numBlocks * this.sectorsPerBlock;
  }

  drain(): void {
    this.bdev.drain();
  }

  close(): void {
    this.bdev.close();
  }

  start(task: BlkTask, walkErr: ChainError): void {
    const core = this.core;
    const chain = task.chain;
    const req = task.req;
    if (walkErr !== ChainError.Ok) {
      // A bad data buffer still gets IOERR when the status byte itself is sound.
      if (chain.tailRegion < 0) {
        core.drop(task, chainErrorName(walkErr));
        return;
      }
      core.guestError(task.queue, chainErrorName(walkErr), chain.head);
      req.type = -1;
      req.statusRegion = chain.tailRegion;
      req.statusOffset = chain.tailOffset;
      this.complete(task, BlkStatus.IoErr, 0);
      return;
    }
    const parsed = parseBlkRequest(core.mem, chain, this.disk, req);
    if (parsed === PARSE_NO_STATUS) {
      core.drop(task, 'no writable status byte');
      return;
    }
    if (parsed !== PARSE_EXECUTE) {
      this.complete(task, parsed, 0);
      return;
    }
    const io = task.io;
    const spb = this.sectorsPerBlock;
    switch (req.type) {
      case BlkType.In:
      case BlkType.Out:
        io.prepare(req.type === BlkType.In ? BdevIoType.Read : BdevIoType.Write, req.sector / spb, req.dataBytes / this.disk.blockSize);
        this.addData(task);
        this.bdev.submit(io, core.nowMs);
        return;
      case BlkType.Flush:
        if (!this.canFlush) {
          // No volatile cache behind this bdev: nothing to flush.
          this.complete(task, BlkStatus.Ok, 0);
          return;
        }
        io.prepare(BdevIoType.Flush, 0, 0);
        this.bdev.submit(io, core.nowMs);
        return;
      case BlkType.GetId:
        this.writeId(task);
        this.complete(task, BlkStatus.Ok, req.dataBytes);
        return;
      case BlkType.Discard:
        if (!this.canUnmap) {
          // A discard is a hint (§5.2.6.2: data after it is unspecified); nothing to release.
          this.complete(task, BlkStatus.Ok, 0);
          return;
        }
        io.prepare(BdevIoType.Unmap, req.sector / spb, req.numSectors / spb);
        this.bdev.submit(io, core.nowMs);
        return;
      case BlkType.WriteZeroes:
        if (!this.canWriteZeroes) {
          this.complete(task, BlkStatus.Unsupp, 0);
          return;
        }
        io.prepare(BdevIoType.WriteZeroes, req.sector / spb, req.numSectors / spb);
        this.bdev.submit(io, core.nowMs);
        return;
      default:
        this.complete(task, BlkStatus.Unsupp, 0);
    }
  }

  /** A bdev I/O finished (called from the bdev layer's poll()). */
  ioDone(task: BlkTask): void {
    const ok = task.io.status === BdevIoStatus.Success;
    const written = ok && task.req.type === BlkType.In ? task.req.dataBytes : 0;
    this.complete(task, ok ? BlkStatus.Ok : BlkStatus.IoErr, written);
  }

  /** The request's data segments as the I/O's scatter list (at most as many as the chain has: fits the capacity). */
  private addData(task: BlkTask): void {
    const { chain, req, io } = task;
    const bytes = this.core.mem.bytes;
    let remaining = req.dataBytes;
    let skip = req.dataSkip;
    for (let seg = req.dataSeg; remaining > 0 && seg < req.dataEnd; seg++) {
      let len = chain.len[seg] - skip;
      if (len > remaining) len = remaining;
      io.addIov(bytes[chain.region[seg]], chain.offset[seg] + skip, len);
      remaining -= len;
      skip = 0;
    }
  }

  /** GET_ID: copy req.dataBytes (<= 20) bytes of the id into the writable data segments. */
  private writeId(task: BlkTask): void {
    const { chain, req } = task;
    const bytes = this.core.mem.bytes;
    let done = 0;
    for (let seg = req.dataSeg; done < req.dataBytes && seg < req.dataEnd; seg++) {
      const dst = bytes[chain.region[seg]];
      const off = chain.offset[seg];
      const n = Math.min(chain.len[seg], req.dataBytes - done);
      for (let i = 0; i < n; i++) dst[off + i] = this.idBytes[done + i];
      done += n;
    }
  }

  /** Write the status byte, count, and complete (used len = bytes written + 1). */
  private complete(task: BlkTask, status: number, written: number): void {
    const req = task.req;
    this.core.mem.bytes[req.statusRegion][req.statusOffset] = status;
    const s = this.stats;
    if (status !== BlkStatus.Ok) {
      s[DeviceStat.ErrorOps]++;
    } else {
      switch (req.type) {
        case BlkType.In:
          s[DeviceStat.ReadOps]++;
          s[DeviceStat.ReadBytes] += req.dataBytes;
          break;
        case BlkType.Out:
          s[DeviceStat.WriteOps]++;
          s[DeviceStat.WriteBytes] += req.dataBytes;
          break;
        case BlkType.Flush:
          s[DeviceStat.FlushOps]++;
          break;
        case BlkType.Discard:
        case BlkType.WriteZeroes:
          // Both release or zero a range: counted as unmaps (SPDK's vhost counts them apart from writes).
          s[DeviceStat.UnmapOps]++;
          s[DeviceStat.UnmapBytes] += req.numSectors * BLK_SECTOR_SIZE;
          break;
        default:
          break;
      }
    }
    this.core.complete(task, written + 1);
  }
}

/** The device factory for model kind 'blk' (registered in engine/devices.ts). */
export function createBlkDevice(desc: DeviceDesc, env: DeviceEnv): EngineDevice {
  const model = desc.model;
  if (model.kind !== 'blk') throw new RangeError(`device ${desc.name} is not a blk device`);
  return new VirtioDevice<BlkTask>(desc, env, (core) => new BlkModel(core, desc, model, env));
}
