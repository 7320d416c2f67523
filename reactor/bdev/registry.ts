/**
 * The bdevs the target knows, by name. A malloc bdev's blocks live in a
 * SharedArrayBuffer that every engine worker can reach; a null bdev has none.
 * Thread: main (reactor); workers see a bdev only as a BdevDesc.
 */
import { randomUUID } from 'node:crypto';
import type { BdevDesc } from '../../engine/control';
import { logger } from '../log';
import { RpcCode, RpcError, type BdevInfo } from '../target';

const log = logger('bdev');

export type BdevKind = BdevDesc['kind'];

const PRODUCT_NAME: Record<BdevKind, string> = { malloc: 'Malloc disk', null: 'Null disk' };

/** The largest malloc bdev a SharedArrayBuffer can hold here. */
const MAX_MALLOC_BYTES = 2 ** 53 - 1;

export interface Bdev {
  readonly name: string;
  readonly kind: BdevKind;
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly uuid: string;
  readonly storage?: SharedArrayBuffer;
  /** The controller that uses this bdev, if any. */
  claimedBy: string | null;
}

export interface CreateBdevParams {
  name: string;
  numBlocks: number;
  blockSize: number;
  uuid?: string;
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
      claimedBy: null,
    };
    this.bdevs.set(p.name, bdev);
    log.info('bdev created', { name: p.name, kind, blockSize: p.blockSize, numBlocks: p.numBlocks });
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
    log.info('bdev deleted', { name, kind });
  }

  list(): Bdev[] {
    return [...this.bdevs.values()];
  }

  static describe(b: Bdev): BdevDesc {
    return { name: b.name, kind: b.kind, blockSize: b.blockSize, numBlocks: b.numBlocks, storage: b.storage };
  }

  static info(b: Bdev): BdevInfo {
    return {
      name: b.name,
      aliases: [],
      product_name: PRODUCT_NAME[b.kind],
      block_size: b.blockSize,
      num_blocks: b.numBlocks,
      uuid: b.uuid,
      assigned_rate_limits: { rw_ios_per_sec: 0, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 0, w_mbytes_per_sec: 0 },
      claimed: b.claimedBy !== null,
      zoned: false,
      supported_io_types: {
        read: true,
        write: true,
        unmap: true,
        write_zeroes: true,
        flush: b.kind === 'malloc',
        reset: true,
        compare: false,
        compare_and_write: false,
        abort: false,
        nvme_admin: false,
        nvme_io: false,
      },
      driver_specific: {},
    };
  }
}
