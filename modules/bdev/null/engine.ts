/**
 * The null bdev, as SPDK's bdev_null behaves: writes are dropped, reads
 * complete successfully *without touching the read buffers* (SPDK hands
 * a shared scratch buffer only when the caller gave none; a caller-supplied
 * buffer such as guest memory keeps whatever it held), write zeroes succeeds
 * and does nothing. Flush and unmap are not supported (ioTypeSupported says
 * so, as SPDK's does); the virtio-blk device completes those without the
 * bdev. Ranges are still checked, so an I/O past the end fails.
 *
 * Thread: a NullBdev and its channels belong to one engine worker.
 */
import type { BdevDesc } from '../../../engine/control';
import { type Bdev, type BdevChannel, type BdevIo, BdevIoStatus, type BdevIoType, CompletionQueue, ioIsValid, ioTypeIn } from '../../../engine/bdev/bdev';
import type { BdevModuleEngine } from '../../../engine/bdev/module';
import { NULL_IO_TYPES } from './common';

export class NullBdev implements Bdev {
  constructor(
    readonly name: string,
    readonly blockSize: number,
    /** Changes with resize() (bdev_null_resize). */
    public numBlocks: number,
  ) {
    if (!Number.isInteger(blockSize) || blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) {
      throw new RangeError(`null bdev ${name}: blockSize must be a power of 2 >= 512, got ${blockSize}`);
    }
    if (!Number.isSafeInteger(numBlocks) || numBlocks < 1) {
      throw new RangeError(`null bdev ${name}: numBlocks must be a positive integer, got ${numBlocks}`);
    }
  }

  ioTypeSupported(type: BdevIoType): boolean {
    return ioTypeIn(NULL_IO_TYPES, type);
  }

  createChannel(): BdevChannel {
    return new NullChannel(this);
  }

  /** A null bdev has no data: any positive size is fine, and I/O is range-checked against it from now on. */
  resize(numBlocks: number): void {
    if (!Number.isSafeInteger(numBlocks) || numBlocks < 1) {
      throw new RangeError(`null bdev ${this.name}: numBlocks must be a positive integer, got ${numBlocks}`);
    }
    this.numBlocks = numBlocks;
  }

  destroy(): void {}
}

class NullChannel implements BdevChannel {
  private readonly done = new CompletionQueue();

  constructor(private readonly bdev: NullBdev) {}

  get outstanding(): number {
    return this.done.length;
  }

  submit(io: BdevIo): void {
    const ok = this.bdev.ioTypeSupported(io.type) && ioIsValid(this.bdev, io);
    this.done.complete(io, ok ? BdevIoStatus.Success : BdevIoStatus.Failed);
  }

  poll(): number {
    return this.done.reap();
  }

  destroy(): void {}
}

/** The null module's engine half: no params. */
export const nullEngine: BdevModuleEngine = {
  name: 'null',
  open(desc: BdevDesc): Bdev {
    return new NullBdev(desc.name, desc.blockSize, desc.numBlocks);
  },
};
