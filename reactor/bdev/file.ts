/**
 * Opens and checks the backing file of a bdev_uring / bdev_aio: O_DIRECT when
 * the file system takes it (otherwise buffered, with a notice: FLUSH then
 * goes to fdatasync, which the workers issue for every FLUSH anyway), a
 * second buffered fd for requests O_DIRECT refuses, the size, and the block
 * size — by default the device's logical block size (BLKSSZGET) for a block
 * device and 512 (or the file system's O_DIRECT offset alignment, when
 * larger) for a regular file; a requested block size the store cannot honour
 * is refused. Also probes whether io_uring works here.
 *
 * The fds returned are owned by the caller (the uring / aio module's state in
 * the bdev registry), closed when the bdev is deleted. Thread: main (reactor).
 */
import { native, type NativeError } from '../../bindings';
import type { FileBdevDesc } from '../../engine/control';
import { ErrorCode, VhostdError } from '../errors';
import { logger } from '../log';
import type { Opened } from './registry';

const log = logger('bdev');

/** An opened backing file: what the engine gets of it (FileBdevDesc, less what the module decides: unmap) and its geometry. */
export interface OpenedFile extends Omit<FileBdevDesc, 'unmap'> {
  sizeBytes: number;
  blockSize: number;
  numBlocks: number;
  /** The smallest block size the store takes (for messages and tests). */
  minBlockSize: number;
}

export interface OpenFileOptions {
  /** Requested block size (0 or undefined: the default). */
  blockSize?: number;
  readonly: boolean;
}

const MIN_BLOCK_SIZE = 512;

function isNativeError(err: unknown): err is NativeError {
  return err instanceof Error && typeof (err as Partial<NativeError>).errno === 'number';
}

/** A NativeError as a system error carrying its errno (the RPC layer reports -errno, as SPDK). */
function systemError(err: unknown, what: string): VhostdError {
  if (isNativeError(err)) return new VhostdError(ErrorCode.System, `${what}: ${err.message}`, { errno: err.errno, cause: err });
  return new VhostdError(ErrorCode.Internal, `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

function closeQuietly(fd: number): void {
  try {
    native.close(fd);
  } catch {
    // nothing left to do
  }
}

export function openBackingFile(name: string, filename: string, opts: OpenFileOptions): OpenedFile {
  if (filename === '') throw new VhostdError(ErrorCode.Invalid, 'filename must not be empty');
  const writable = !opts.readonly;
  let fd: number;
  let direct = true;
  try {
    fd = native.fileOpen(filename, writable, true);
  } catch (err) {
    if (!isNativeError(err) || err.code !== 'EINVAL') throw systemError(err, `cannot open ${filename}`);
    // The file system does not do O_DIRECT.
    direct = false;
    try {
      fd = native.fileOpen(filename, writable, false);
    } catch (err2) {
      throw systemError(err2, `cannot open ${filename}`);
    }
  }
  let bufferedFd = -1;
  try {
    const info = native.fileInfo(fd);
    if (info.type !== 'file' && info.type !== 'block') {
      throw new VhostdError(ErrorCode.Invalid, `${filename} is a ${info.type}, not a regular file or block device`);
    }
    const blockDevice = info.type === 'block';
    let minBlockSize = MIN_BLOCK_SIZE;
    if (blockDevice && info.logicalBlockSize > minBlockSize) minBlockSize = info.logicalBlockSize;
    if (direct && info.dioOffsetAlign > minBlockSize) minBlockSize = info.dioOffsetAlign;
    const requested = opts.blockSize ?? 0;
    const blockSize = requested === 0 ? minBlockSize : requested;
    // The registry checked a requested size (a power of 2 in 512..65536); a default one it checks after.
    if (blockSize < minBlockSize) {
      const why = blockDevice ? `the device's logical block size is ${info.logicalBlockSize}` : `O_DIRECT on this file system needs ${minBlockSize}-byte aligned I/O`;
      throw new VhostdError(ErrorCode.Invalid, `block_size ${blockSize} cannot be honoured by ${filename}: ${why}`);
    }
    const numBlocks = Math.floor(info.sizeBytes / blockSize);
    if (numBlocks < 1) {
      throw new VhostdError(ErrorCode.Invalid, `${filename} holds ${info.sizeBytes} bytes, less than one block of ${blockSize}`);
    }
    if (info.sizeBytes % blockSize !== 0) {
      log.warn('file size is not a multiple of the block size; the tail is not used', { name, filename, sizeBytes: info.sizeBytes, blockSize });
    }
    if (direct) {
      try {
        bufferedFd = native.fileOpen(filename, writable, false);
      } catch (err) {
        throw systemError(err, `cannot open ${filename} a second time (buffered)`);
      }
    } else {
      log.notice('O_DIRECT is not supported by the file system: buffered I/O, FLUSH reaches storage through fdatasync', {
        name,
        filename,
      });
    }
    return {
      filename,
      fd,
      bufferedFd,
      direct,
      blockDevice,
      readonly: opts.readonly,
      sizeBytes: info.sizeBytes,
      blockSize,
      numBlocks,
      minBlockSize,
    };
  } catch (err) {
    closeQuietly(fd);
    if (bufferedFd >= 0) closeQuietly(bufferedFd);
    if (err instanceof VhostdError) throw err;
    throw systemError(err, `cannot use ${filename}`);
  }
}

/** Close what openBackingFile opened. */
export function closeBackingFile(f: { fd: number; bufferedFd: number }): void {
  closeQuietly(f.fd);
  if (f.bufferedFd >= 0) closeQuietly(f.bufferedFd);
}

/**
 * Throws a clear error when io_uring cannot be used in this process
 * (io_uring_setup refused: EPERM/ENOSYS under seccomp or
 * kernel.io_uring_disabled, ENOMEM under a low memlock limit).
 */
export function checkUringAvailable(): void {
  try {
    const ring = new native.IoUring(2, 1);
    ring.close();
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    const message = `io_uring is not available on this host (${detail}); use bdev_aio_create instead`;
    if (isNativeError(err)) throw new VhostdError(ErrorCode.System, message, { errno: err.errno, cause: err });
    throw new VhostdError(ErrorCode.Internal, message, { cause: err });
  }
}

/** What a uring or aio module keeps for its bdev: the engine's FileBdevDesc (its fds owned here) and what save_config writes back. */
export interface FileBdevState {
  desc: FileBdevDesc;
  /** The block_size the creator asked for (0: the default); written back by save_config only when set. */
  requestedBlockSize: number;
}

/**
 * Open the backing file of a uring / aio bdev (as openBackingFile) and
 * describe it for the engine. `unmap`: DISCARD and WRITE ZEROES through
 * fallocate / BLKDISCARD (uring: always; aio: its `fallocate` option).
 */
export function openFileBdev(
  name: string,
  filename: string,
  opts: { blockSize: number; readonly: boolean; unmap: boolean },
): Opened<FileBdevState> {
  const f = openBackingFile(name, filename, { blockSize: opts.blockSize, readonly: opts.readonly });
  const desc: FileBdevDesc = {
    filename: f.filename,
    fd: f.fd,
    bufferedFd: f.bufferedFd,
    direct: f.direct,
    blockDevice: f.blockDevice,
    readonly: f.readonly,
    unmap: opts.unmap,
  };
  log.info('backing file opened', { name, filename, direct: f.direct, blockDevice: f.blockDevice, readonly: f.readonly });
  return { blockSize: f.blockSize, numBlocks: f.numBlocks, state: { desc, requestedBlockSize: opts.blockSize } };
}
