/**
 * Opens the bdev a device description names, in the calling worker.
 * Thread: engine worker.
 */
import type { BdevDesc } from '../control';
import type { Bdev } from './bdev';
import { MallocBdev } from './malloc';
import { NullBdev } from './null';
import { AioBdev } from './aio';
import { UringBdev } from './uring';

export function openBdev(desc: BdevDesc): Bdev {
  switch (desc.kind) {
    case 'malloc':
      if (!desc.storage) throw new RangeError(`malloc bdev ${desc.name} has no storage`);
      return new MallocBdev(desc.name, desc.blockSize, desc.numBlocks, desc.storage);
    case 'null':
      return new NullBdev(desc.name, desc.blockSize, desc.numBlocks);
    case 'uring':
      return new UringBdev(desc);
    case 'aio':
      return new AioBdev(desc);
    default: {
      const kind: never = desc.kind;
      throw new RangeError(`unknown bdev kind ${String(kind)}`);
    }
  }
}
