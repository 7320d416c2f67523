/** The I/O types of a file bdev (uring, aio), from its backing file's description. */
import type { FileBdevDesc } from '../../engine/control';
import type { IoTypeSet } from './io-types';

export function fileIoTypes(f: Pick<FileBdevDesc, 'readonly' | 'unmap'>): IoTypeSet {
  const range = f.unmap && !f.readonly;
  return { read: true, write: !f.readonly, flush: true, unmap: range, write_zeroes: range };
}
