/**
 * The bdevs the target knows, by name. A malloc bdev's blocks live in a
 * SharedArrayBuffer that every engine worker can reach; a null bdev has none;
 * a uring or aio bdev has a backing file whose fds the registry owns (opened
 * by file.ts, closed at delete — which is refused while a controller uses
 * the bdev, so no worker still uses them).
 * Thread: main (reactor); workers see a bdev only as a BdevDesc.
 */
import { randomUUID } from 'node:crypto';
import type { BdevDesc, FileBdevDesc } from '../../engine/control';
import { closeBackingFile } from './file';
import { BdevIoStats } from './iostat';
import { BdevQosLimits } from './qos';
import { logger } from '../log';
import { RpcCode, RpcError, type BdevInfo } from '../target';

const log = logger('bdev');

export type BdevKind = BdevDesc['kind'];

const PRODUCT_NAME: Record<BdevKind, string> = { malloc: 'Malloc disk', null: 'Null disk', uring: 'URING bdev', aio: 'AIO disk' };

/** The engine each file bdev kind uses, for logs. */
const ENGINE_NAME: Partial<Record<BdevKind, string>> = { uring: 'io_uring', aio: 'linux-aio' };

/** The largest malloc bdev a SharedArrayBuffer can hold here. */
const MAX_MALLOC_BYTES = 2 ** 53 - 1;

export interface Bdev {
  readonly name: string;
  readonly kind: BdevKind;
  readonly blockSize: number;
  /** Changes only through bdev_null_resize. */
  numBlocks: number;
  readonly uuid: string;
  readonly storage?: SharedArrayBuffer;
  /** bdev_set_qos_limit's limits, shared with the engine that enforces them. */
  readonly qos: BdevQosLimits;
  /** Per-worker I/O statistics (bdev_get_iostat). */
  readonly iostat: BdevIoStats;
  /** uring / aio: the backing file (fds owned here). */
  readonly file?: FileBdevState;
  /** The controller that uses this bdev, if any. */
  claimedBy: string | null;
}

export interface FileBdevState extends FileBdevDesc {
  /** aio: SPDK's `fallocate` option (unmap and write zeroes through fallocate). */
  fallocate: boolean;
  /** The block_size the creator asked for (0: the default); written back by save_config only when set. */
  requestedBlockSize: number;
}

export interface CreateBdevParams {
  name: string;
  numBlocks: number;
  blockSize: number;
  uuid?: string;
  /** uring / aio: the opened backing file; the registry owns its fds from now on (closes them if create fails). */
  file?: FileBdevState;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class BdevRegistry {
  private readonly bdevs = new Map<string, Bdev>();
  private mallocSeq = 0;

  /** A free "MallocN" name, as SPDK generates when bdev_malloc_create gets none. */
  nextMallocName(): string {
    while (this.bdevs.has(`Malloc${this.mallocSeq}`)) this.mallocSeq++;
    return `Malloc${this.mallocSeq++}`;
  }

  create(kind: BdevKind, p: CreateBdevParams): Bdev {
    try {
      return this.createChecked(kind, p);
    } catch (err) {
      if (p.file) closeBackingFile(p.file);
      throw err;
    }
  }

  private createChecked(kind: BdevKind, p: CreateBdevParams): Bdev {
    if (p.name === '') throw new RpcError(RpcCode.Invalid, 'bdev name must not be empty');
    if (this.bdevs.has(p.name)) throw new RpcError(RpcCode.Exists, `bdev ${p.name} already exists`);
    if (!Number.isSafeInteger(p.blockSize) || p.blockSize < 512 || p.blockSize % 512 !== 0 || p.blockSize > 65536) {
      throw new RpcError(RpcCode.Invalid, `block_size ${p.blockSize} must be a multiple of 512 between 512 and 65536`);
    }
    if (!Number.isSafeInteger(p.numBlocks) || p.numBlocks < 1) {
      throw new RpcError(RpcCode.Invalid, `num_blocks ${p.numBlocks} must be a positive integer`);
    }
    const sizeBytes = p.numBlocks * p.blockSize;
    if (!Number.isSafeInteger(sizeBytes) || (kind === 'malloc' && sizeBytes > MAX_MALLOC_BYTES)) {
      throw new RpcError(RpcCode.Invalid, `bdev of ${p.numBlocks} blocks of ${p.blockSize} bytes is too large`);
    }
    if (p.uuid !== undefined && !UUID_RE.test(p.uuid)) throw new RpcError(RpcCode.Invalid, `uuid "${p.uuid}" is not a UUID`);
    for (const b of this.bdevs.values()) {
      if (p.uuid !== undefined && b.uuid === p.uuid.toLowerCase()) {
        throw new RpcError(RpcCode.Exists, `a bdev with uuid ${p.uuid} already exists (${b.name})`);
      }
    }
    let storage: SharedArrayBuffer | undefined;
    if (kind === 'malloc') {
      try {
        storage = new SharedArrayBuffer(sizeBytes);
      } catch (err) {
        throw new RpcError(RpcCode.NoMemory, `cannot allocate ${sizeBytes} bytes for ${p.name}: ${(err as Error).message}`);
      }
    }
    const bdev: Bdev = {
      name: p.name,
      kind,
      blockSize: p.blockSize,
      numBlocks: p.numBlocks,
      uuid: (p.uuid ?? randomUUID()).toLowerCase(),
      storage,
      file: p.file,
      qos: new BdevQosLimits(),
      iostat: new BdevIoStats(),
      claimedBy: null,
    };
    this.bdevs.set(p.name, bdev);
    const f = p.file;
    log.info('bdev created', {
      name: p.name,
      kind,
      blockSize: p.blockSize,
      numBlocks: p.numBlocks,
      ...(f ? { engine: ENGINE_NAME[kind], filename: f.filename, direct: f.direct, blockDevice: f.blockDevice, readonly: f.readonly } : {}),
    });
    return bdev;
  }

  get(name: string): Bdev | undefined {
    return this.bdevs.get(name);
  }

  /** The named bdev of that kind, or RpcError(-19). */
  require(name: string, kind?: BdevKind): Bdev {
    const b = this.bdevs.get(name);
    if (!b || (kind !== undefined && b.kind !== kind)) {
      throw new RpcError(RpcCode.NoDevice, `no ${kind ? kind + ' ' : ''}bdev named ${name}`);
    }
    return b;
  }

  delete(kind: BdevKind, name: string): void {
    const b = this.require(name, kind);
    if (b.claimedBy !== null) {
      throw new RpcError(RpcCode.Busy, `bdev ${name} is used by controller ${b.claimedBy}; delete the controller first`);
    }
    this.bdevs.delete(name);
    if (b.file) closeBackingFile(b.file);
    log.info('bdev deleted', { name, kind });
  }

  /** Release every backing file (at shutdown, after the workers are gone). */
  closeAll(): void {
    for (const b of this.bdevs.values()) if (b.file) closeBackingFile(b.file);
    this.bdevs.clear();
  }

  list(): Bdev[] {
    return [...this.bdevs.values()];
  }

  static describe(b: Bdev): BdevDesc {
    const f = b.file;
    const file: FileBdevDesc | undefined = f
      ? {
          filename: f.filename,
          fd: f.fd,
          bufferedFd: f.bufferedFd,
          direct: f.direct,
          blockDevice: f.blockDevice,
          readonly: f.readonly,
          unmap: f.unmap,
        }
      : undefined;
    return { name: b.name, kind: b.kind, blockSize: b.blockSize, numBlocks: b.numBlocks, storage: b.storage, file, qos: b.qos.buffer };
  }

  static info(b: Bdev): BdevInfo {
    return {
      name: b.name,
      aliases: [],
      product_name: PRODUCT_NAME[b.kind],
      block_size: b.blockSize,
      num_blocks: b.numBlocks,
      uuid: b.uuid,
      assigned_rate_limits: b.qos.assigned(),
      claimed: b.claimedBy !== null,
      zoned: false,
      supported_io_types: {
        read: true,
        write: !(b.file?.readonly ?? false),
        unmap: b.file ? b.file.unmap && !b.file.readonly : true,
        write_zeroes: b.file ? b.file.unmap && !b.file.readonly : true,
        flush: b.kind === 'malloc' || b.file !== undefined,
        reset: true,
        compare: false,
        compare_and_write: false,
        abort: false,
        nvme_admin: false,
        nvme_io: false,
      },
      driver_specific: BdevRegistry.driverSpecific(b),
    };
  }

  /** SPDK's dump_info_json of bdev_uring / bdev_aio. */
  private static driverSpecific(b: Bdev): Record<string, unknown> {
    const f = b.file;
    if (!f) return {};
    if (b.kind === 'uring') return { uring: { filename: f.filename } };
    return {
      aio: { filename: f.filename, block_size_override: f.requestedBlockSize !== 0, readonly: f.readonly, fallocate: f.fallocate },
    };
  }

  /** The RPC call that recreates `b` (save_config). */
  static configCall(b: Bdev): { method: string; params: Record<string, unknown> } {
    const f = b.file;
    switch (b.kind) {
      case 'malloc':
      case 'null':
        return {
          method: b.kind === 'malloc' ? 'bdev_malloc_create' : 'bdev_null_create',
          params: { name: b.name, num_blocks: b.numBlocks, block_size: b.blockSize, uuid: b.uuid },
        };
      case 'uring':
        return {
          method: 'bdev_uring_create',
          params: { name: b.name, filename: f?.filename, ...(f?.requestedBlockSize ? { block_size: f.requestedBlockSize } : {}), uuid: b.uuid },
        };
      case 'aio':
        return {
          method: 'bdev_aio_create',
          params: {
            name: b.name,
            filename: f?.filename,
            ...(f?.requestedBlockSize ? { block_size: f.requestedBlockSize } : {}),
            readonly: f?.readonly ?? false,
            fallocate: f?.fallocate ?? false,
            uuid: b.uuid,
          },
        };
    }
  }
}
