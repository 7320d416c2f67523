/**
 * qemu-storage-daemon as a reference vhost-user-blk back-end, to validate the
 * guest harness independently of vhostd. Main-thread test helper.
 */
import fs from 'node:fs';
import { Daemon } from './daemon';

export interface QsdOptions {
  /** Backing image file; created (sparse) with `sizeBytes` if it does not exist. */
  image: string;
  sizeBytes: number;
  socketPath: string;
  numQueues: number;
  readonly?: boolean;
  /** The image is shared with another process (two exports of one disk, as a migration needs): no file locking. */
  shared?: boolean;
}

/** Starts qemu-storage-daemon exporting `image` on `socketPath`; resolves once the socket exists. */
export async function startQsd(opts: QsdOptions): Promise<Daemon> {
  if (!fs.existsSync(opts.image)) {
    const fd = fs.openSync(opts.image, 'w');
    fs.ftruncateSync(fd, opts.sizeBytes);
    fs.closeSync(fd);
  }
  const d = new Daemon('qsd', 'qemu-storage-daemon', [
    '--blockdev', `driver=file,filename=${opts.image},node-name=f,discard=unmap${opts.shared === true ? ',locking=off' : ''}`,
    '--export',
    `type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=${opts.socketPath},` +
      `writable=${opts.readonly === true ? 'off' : 'on'},num-queues=${opts.numQueues}`,
  ]);
  try {
    await d.waitSocket(opts.socketPath, { timeoutMs: 15_000, connect: false, intervalMs: 50 });
  } catch (err) {
    await d.stop();
    throw err;
  }
  return d;
}

/** True when qemu-storage-daemon is installed. */
export function haveQsd(): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && fs.existsSync(`${dir}/qemu-storage-daemon`));
}
