/**
 * The malloc bdev: blocks kept in memory every worker serving the bdev sees
 * (as SPDK's malloc bdev keeps them in hugepage memory): the reactor's memfd,
 * mapped by each worker that opens the bdev and unmapped when it closes it,
 * or a SharedArrayBuffer. Reads and writes are byte copies between guest memory and the
 * storage, done inside submit() and delivered from poll(). Unmap and write
 * zeroes both zero the range (as SPDK's malloc does); flush has nothing to do.
 * Concurrent writers of one block on different workers race exactly as they
 * would on a disk.
 *
 * Thread: a MallocBdev and its channels belong to one engine worker; the
 * storage is shared.
 */
import type { BdevDesc } from '../../../engine/control';
import { copyBytes } from '../../../engine/bytes';
import { type Bdev, type BdevChannel, type BdevIo, BdevIoStatus, BdevIoType, CompletionQueue, ioIsValid, ioTypeIn } from '../../../engine/bdev/bdev';
import type { BdevModuleEngine } from '../../../engine/bdev/module';
import { native } from '../../../bindings';
import { MALLOC_IO_TYPES, type MallocParams } from './common';

export class MallocBdev implements Bdev {
  readonly storage: Uint8Array;

  constructor(
    readonly name: string,
    readonly blockSize: number,
    readonly numBlocks: number,
    storage: SharedArrayBuffer | ArrayBuffer,
    /** Called once by destroy() (unmaps a mapped memfd). */
    private onDestroy: (() => void) | null = null,
  ) {
    if (!Number.isInteger(blockSize) || blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) {
      throw new RangeError(`malloc bdev ${name}: blockSize must be a power of 2 >= 512, got ${blockSize}`);
    }
    if (!Number.isSafeInteger(numBlocks) || numBlocks < 1) {
      throw new RangeError(`malloc bdev ${name}: numBlocks must be a positive integer, got ${numBlocks}`);
    }
    if (storage.byteLength !== blockSize * numBlocks) {
      throw new RangeError(
        `malloc bdev ${name}: storage holds ${storage.byteLength} bytes, expected ${blockSize * numBlocks}`,
      );
    }
    this.storage = new Uint8Array(storage);
  }

  ioTypeSupported(type: BdevIoType): boolean {
    return ioTypeIn(MALLOC_IO_TYPES, type);
  }

  createChannel(): BdevChannel {
    return new MallocChannel(this);
  }

  destroy(): void {
    // The memfd (or SharedArrayBuffer) belongs to the reactor's bdev registry; a mapping of it is this worker's.
    const f = this.onDestroy;
    this.onDestroy = null;
    f?.();
  }
}

class MallocChannel implements BdevChannel {
  private readonly done = new CompletionQueue();

  constructor(private readonly bdev: MallocBdev) {}

  get outstanding(): number {
    return this.done.length;
  }

  submit(io: BdevIo): void {
    this.done.complete(io, this.execute(io));
  }

  poll(): number {
    return this.done.reap();
  }

  destroy(): void {}

  private execute(io: BdevIo): BdevIoStatus {
    const bdev = this.bdev;
    if (!bdev.ioTypeSupported(io.type) || !ioIsValid(bdev, io)) return BdevIoStatus.Failed;
    const storage = bdev.storage;
    let pos = io.offsetBlocks * bdev.blockSize;
    switch (io.type) {
      case BdevIoType.Read:
        for (let i = 0; i < io.iovCount; i++) {
          const len = io.iovLen[i];
          copyBytes(storage, pos, io.iovBuf[i], io.iovOff[i], len);
          pos += len;
        }
        return BdevIoStatus.Success;
      case BdevIoType.Write:
        for (let i = 0; i < io.iovCount; i++) {
          const len = io.iovLen[i];
          copyBytes(io.iovBuf[i], io.iovOff[i], storage, pos, len);
          pos += len;
        }
        return BdevIoStatus.Success;
      case BdevIoType.Unmap:
      case BdevIoType.WriteZeroes:
        storage.fill(0, pos, pos + io.numBlocks * bdev.blockSize);
        return BdevIoStatus.Success;
      case BdevIoType.Flush:
        return BdevIoStatus.Success;
      default:
        return BdevIoStatus.Failed;
    }
  }
}

/**
 * Touches one byte of every 4 KiB page of a fresh mapping of the (fully
 * allocated) memfd, so this worker's page tables hold every page before the
 * first I/O: a read fault on a shmem page maps it writable (no
 * page_mkwrite) and maps its neighbours too (fault-around), so this costs
 * about one fault per 64 KiB here instead of one per page inside requests.
 * The result is kept so the loop is not dead code.
 */
let touched = 0;
function populatePageTables(u8: Uint8Array): void {
  let x = 0;
  for (let i = 0; i < u8.length; i += 4096) x |= u8[i]!;
  touched |= x;
}

/** The malloc module's engine half: BdevDesc.params is MallocParams. */
export const mallocEngine: BdevModuleEngine = {
  name: 'malloc',
  open(desc: BdevDesc): Bdev {
    const p = desc.params as MallocParams | undefined;
    if (p && 'fd' in p && Number.isInteger(p.fd) && p.fd >= 0) {
      const mapped = native.mmap(p.fd, 0, p.sizeBytes, true);
      try {
        populatePageTables(new Uint8Array(mapped));
        return new MallocBdev(desc.name, desc.blockSize, desc.numBlocks, mapped, () => native.munmap(mapped));
      } catch (err) {
        native.munmap(mapped);
        throw err;
      }
    }
    if (!p || !('storage' in p) || !(p.storage instanceof SharedArrayBuffer)) throw new RangeError(`malloc bdev ${desc.name} has no storage`);
    return new MallocBdev(desc.name, desc.blockSize, desc.numBlocks, p.storage);
  },
};
