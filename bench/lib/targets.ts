/**
 * The two vhost-user-blk back-ends the bench compares, started fresh for
 * every run on core 1 with the same kind of bdev:
 *
 * | kind   | vhostd (`-m 0x2`: its engine worker pins itself to core 1) | qemu-storage-daemon (`taskset -c 1`)          |
 * |--------|-------------------------------------------------------------|-----------------------------------------------|
 * | null   | bdev_null_create                                             | driver=null-co                                |
 * | malloc | bdev_malloc_create (SharedArrayBuffer)                       | driver=file on a /dev/shm file (aio=threads)  |
 * | uring  | bdev_uring_create on a /dev/shm file                         | driver=file, aio=io_uring, same /dev/shm file |
 *
 * vhostd's main thread (the reactor) is not pinned: it sleeps in its event
 * loop while the engine worker polls. Both daemons run under setpriv
 * --pdeathsig so they die with the bench. Main thread of the bench runner.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Daemon } from '../../test/lib/daemon';
import { RpcError, rpcCall } from '../../test/lib/rpc';

export type BdevKind = 'null' | 'malloc' | 'uring';
export type TargetName = 'vhostd' | 'qsd';

export const BDEV_KINDS: readonly BdevKind[] = ['null', 'malloc', 'uring'];
/** Logical block size of every bdev, on both sides (qemu-storage-daemon's default). */
export const BLOCK_SIZE = 512;

export interface TargetConfig {
  repo: string;
  kind: BdevKind;
  sizeBytes: number;
  /** Backing file for malloc (qemu side) and uring (both sides). */
  shmFile: string;
  /** Core of the target: vhostd's -m mask bit, qemu-storage-daemon's taskset. */
  core: number;
  /** Extra node flags for vhostd (e.g. --cpu-prof). */
  vhostdNodeArgs?: string[];
  /** Extra vhostd flags (e.g. --poll-mode adaptive). */
  vhostdArgs?: string[];
  /** Give qemu-storage-daemon's export an iothread (it then polls adaptively). */
  qsdIothread?: boolean;
}

export interface RunningTarget {
  name: TargetName;
  socketPath: string;
  pid: number;
  /** Its JSON-RPC socket, for the targets that have one (vhostd). */
  rpcSocket?: string;
  /** Everything the daemon printed so far. */
  log(): string;
  /** Graceful stop; removes its temporary directory. */
  stop(): Promise<void>;
}

const CTRLR = 'bench0';

function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Starts vhostd with one bdev of `kind` behind controller bench0. */
export async function startVhostdTarget(cfg: TargetConfig): Promise<RunningTarget> {
  const dir = tmpDir('vhostd-bench-');
  const rpcSocket = path.join(dir, 'rpc.sock');
  const mask = `0x${(1n << BigInt(cfg.core)).toString(16)}`;
  const d = new Daemon(
    'vhostd',
    process.execPath,
    [...(cfg.vhostdNodeArgs ?? []), path.join(cfg.repo, 'bin', 'vhostd.js'), '-m', mask, '-S', dir, '-r', rpcSocket, '--log-level', 'warn', ...(cfg.vhostdArgs ?? [])],
    { cwd: cfg.repo },
  );
  const stop = async (): Promise<void> => {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await d.waitSocket(rpcSocket, { intervalMs: 25 });
    const numBlocks = Math.floor(cfg.sizeBytes / BLOCK_SIZE);
    let bdev: string;
    switch (cfg.kind) {
      case 'null':
        bdev = 'Null0';
        await rpcCall(rpcSocket, 'bdev_null_create', { name: bdev, num_blocks: numBlocks, block_size: BLOCK_SIZE });
        break;
      case 'malloc':
        bdev = 'Malloc0';
        await rpcCall(rpcSocket, 'bdev_malloc_create', { name: bdev, num_blocks: numBlocks, block_size: BLOCK_SIZE });
        break;
      case 'uring':
        bdev = 'Uring0';
        await rpcCall(rpcSocket, 'bdev_uring_create', { name: bdev, filename: cfg.shmFile, block_size: BLOCK_SIZE });
        break;
    }
    await rpcCall(rpcSocket, 'vhost_create_blk_controller', { ctrlr: CTRLR, dev_name: bdev });
  } catch (err) {
    await stop();
    throw err;
  }
  const pid = d.child.pid;
  if (pid === undefined) throw new Error('vhostd: no pid');
  return { name: 'vhostd', socketPath: path.join(dir, CTRLR), pid, rpcSocket, log: () => d.log, stop };
}

/** Starts qemu-storage-daemon (taskset to the core) exporting one node of `kind`. */
export async function startQsdTarget(cfg: TargetConfig): Promise<RunningTarget> {
  const dir = tmpDir('qsd-bench-');
  const socketPath = path.join(dir, CTRLR);
  let blockdev: string;
  switch (cfg.kind) {
    case 'null':
      blockdev = `driver=null-co,node-name=n,size=${cfg.sizeBytes}`;
      break;
    case 'malloc':
      blockdev = `driver=file,node-name=n,filename=${cfg.shmFile}`;
      break;
    case 'uring':
      blockdev = `driver=file,node-name=n,filename=${cfg.shmFile},aio=io_uring`;
      break;
  }
  const iothread = cfg.qsdIothread === true;
  const args = [
    '-c', String(cfg.core), 'qemu-storage-daemon',
    ...(iothread ? ['--object', 'iothread,id=io0'] : []),
    '--blockdev', blockdev,
    '--export',
    `type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=${socketPath},num-queues=1,writable=on` +
      (iothread ? ',iothread=io0' : ''),
  ];
  const d = new Daemon('qsd', 'taskset', args);
  const stop = async (): Promise<void> => {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await d.waitSocket(socketPath, { timeoutMs: 15_000, connect: false, intervalMs: 25 });
  } catch (err) {
    await stop();
    throw err;
  }
  const pid = d.child.pid;
  if (pid === undefined) throw new Error('qemu-storage-daemon: no pid');
  return { name: 'qsd', socketPath, pid, log: () => d.log, stop };
}

export function startTarget(name: TargetName, cfg: TargetConfig): Promise<RunningTarget> {
  return name === 'vhostd' ? startVhostdTarget(cfg) : startQsdTarget(cfg);
}

/**
 * Which bdev kinds this vhostd build can create (rpc_get_methods): null and
 * malloc always; uring when bdev_uring_create is listed. Starts and stops one
 * vhostd. Returns the kinds that are not available, with the reason; throws
 * when vhostd does not start.
 */
export async function probeVhostdKinds(repo: string, core: number): Promise<Map<BdevKind, string>> {
  const dir = tmpDir('vhostd-probe-');
  const rpcSocket = path.join(dir, 'rpc.sock');
  const mask = `0x${(1n << BigInt(core)).toString(16)}`;
  const d = new Daemon('vhostd', process.execPath, [path.join(repo, 'bin', 'vhostd.js'), '-m', mask, '-S', dir, '-r', rpcSocket, '--log-level', 'warn'], {
    cwd: repo,
  });
  const missing = new Map<BdevKind, string>();
  try {
    // A vhostd that does not start is an error of the whole bench (thrown), not a missing kind.
    await d.waitSocket(rpcSocket, { intervalMs: 25 });
    const methods = await rpcCall(rpcSocket, 'rpc_get_methods');
    const list = Array.isArray(methods) ? methods.filter((m): m is string => typeof m === 'string') : [];
    const need: Record<BdevKind, string> = { null: 'bdev_null_create', malloc: 'bdev_malloc_create', uring: 'bdev_uring_create' };
    for (const kind of BDEV_KINDS) {
      if (!list.includes(need[kind])) missing.set(kind, `vhostd does not list ${need[kind]} in rpc_get_methods`);
    }
  } catch (err) {
    if (!(err instanceof RpcError)) throw err;
    for (const kind of BDEV_KINDS) missing.set(kind, `rpc_get_methods failed: ${err.message}`);
  } finally {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return missing;
}

/** Creates the /dev/shm backing file fully allocated (zeros), so neither side pays for first-touch page faults. */
export function createShmFile(file: string, sizeBytes: number): void {
  const fd = fs.openSync(file, 'w');
  try {
    const chunk = Buffer.alloc(1 << 20);
    for (let off = 0; off < sizeBytes; off += chunk.length) {
      fs.writeSync(fd, chunk, 0, Math.min(chunk.length, sizeBytes - off), off);
    }
  } finally {
    fs.closeSync(fd);
  }
}
