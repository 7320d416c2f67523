/**
 * The back-end process an integration test drives with the front-end: the
 * real vhostd (default; malloc bdevs and blk controllers created over
 * JSON-RPC), or qemu-storage-daemon (VHOSTD_FE_TARGET=qsd, one process per
 * controller) to check the tests themselves against a reference peer.
 * Also /proc probes for the process's open fds and guest-memory mappings.
 * Thread: the test's main thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Daemon } from './daemon';
import { MEMFD_PREFIX } from './frontend-memory';
import { startQsd } from './qsd';
import { startVhostd, type VhostdHandle } from './vhostd';

export interface BlkControllerSpec {
  name: string;
  numBlocks: number;
  blockSize?: number;
  readonly?: boolean;
}

export interface BlkController {
  name: string;
  socket: string;
  /** The bdev behind it (what GET_ID should report on vhostd). */
  bdev: string;
  numBlocks: number;
  blockSize: number;
  /** The process serving this controller. */
  pid: number;
}

export interface BlkTarget {
  readonly kind: 'vhostd' | 'qsd';
  createBlk(spec: BlkControllerSpec): Promise<BlkController>;
  /** True while every process of the target runs. */
  alive(): boolean;
  log(): string;
  stop(): Promise<void>;
}

export function targetKind(): 'vhostd' | 'qsd' {
  return process.env.VHOSTD_FE_TARGET === 'qsd' ? 'qsd' : 'vhostd';
}

class VhostdTarget implements BlkTarget {
  readonly kind = 'vhostd' as const;
  constructor(private readonly h: VhostdHandle) {}

  async createBlk(spec: BlkControllerSpec): Promise<BlkController> {
    const bdev = `Malloc_${spec.name}`;
    const blockSize = spec.blockSize ?? 512;
    await this.h.rpc('bdev_malloc_create', { name: bdev, num_blocks: spec.numBlocks, block_size: blockSize });
    const params: Record<string, unknown> = { ctrlr: spec.name, dev_name: bdev };
    if (spec.readonly) params.readonly = true;
    await this.h.rpc('vhost_create_blk_controller', params);
    const pid = this.h.daemon.child.pid;
    if (pid === undefined) throw new Error('vhostd has no pid');
    return { name: spec.name, socket: this.h.socketOf(spec.name), bdev, numBlocks: spec.numBlocks, blockSize, pid };
  }

  alive(): boolean {
    return this.h.daemon.running;
  }

  log(): string {
    return this.h.daemon.log;
  }

  async stop(): Promise<void> {
    await this.h.stop();
  }
}

class QsdTarget implements BlkTarget {
  readonly kind = 'qsd' as const;
  private readonly daemons: Daemon[] = [];
  private readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fe-qsd-target-'));

  async createBlk(spec: BlkControllerSpec): Promise<BlkController> {
    const blockSize = spec.blockSize ?? 512;
    const socket = path.join(this.dir, spec.name);
    const d = await startQsd({
      image: path.join(this.dir, `${spec.name}.img`),
      sizeBytes: spec.numBlocks * blockSize,
      socketPath: socket,
      numQueues: 2,
      readonly: spec.readonly,
    });
    this.daemons.push(d);
    const pid = d.child.pid;
    if (pid === undefined) throw new Error('qemu-storage-daemon has no pid');
    return { name: spec.name, socket, bdev: 'f', numBlocks: spec.numBlocks, blockSize, pid };
  }

  alive(): boolean {
    return this.daemons.every((d) => d.running);
  }

  log(): string {
    return this.daemons.map((d) => d.log).join('\n');
  }

  async stop(): Promise<void> {
    for (const d of this.daemons) await d.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function startTarget(): Promise<BlkTarget> {
  if (targetKind() === 'qsd') return new QsdTarget();
  return new VhostdTarget(await startVhostd({ cpumask: '0x2', startTimeoutMs: 20_000 }));
}

/** How many fds the process has open. */
export function openFdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Open fds by kind: our guest memfds and eventfds (the ones a connection brings). */
function fdKinds(pid: number): { memfds: number; eventfds: number } {
  let memfds = 0;
  let eventfds = 0;
  for (const f of fs.readdirSync(`/proc/${pid}/fd`)) {
    let link: string;
    try {
      link = fs.readlinkSync(`/proc/${pid}/fd/${f}`);
    } catch {
      continue; // closed meanwhile
    }
    if (link.startsWith(`/memfd:${MEMFD_PREFIX}`)) memfds++;
    else if (link === 'anon_inode:[eventfd]') eventfds++;
  }
  return { memfds, eventfds };
}

/** Lines of /proc/<pid>/maps that map one of this front-end's guest memfds. */
export function guestMappings(pid: number): number {
  return fs
    .readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter((l) => l.includes(`/memfd:${MEMFD_PREFIX}`)).length;
}

/** Resources of the back-end process that a front-end connection may hold. */
export interface ResourceSnapshot {
  /** All open fds. */
  fds: number;
  /** Open fds of guest memfds (made by this front-end). */
  memfds: number;
  eventfds: number;
  /** Mappings of guest memfds. */
  mappings: number;
}

export function snapshot(pid: number): ResourceSnapshot {
  return { fds: openFdCount(pid), ...fdKinds(pid), mappings: guestMappings(pid) };
}

function same(a: ResourceSnapshot, b: ResourceSnapshot): boolean {
  return a.fds === b.fds && a.memfds === b.memfds && a.eventfds === b.eventfds && a.mappings === b.mappings;
}

/**
 * A baseline: the snapshot once it has not changed for 200 ms (bounded), so
 * that a JSON-RPC connection the daemon is still closing is not counted.
 */
export async function stableSnapshot(pid: number, timeoutMs = 3000): Promise<ResourceSnapshot> {
  const deadline = Date.now() + timeoutMs;
  let s = snapshot(pid);
  let stableSince = Date.now();
  while (Date.now() < deadline && Date.now() - stableSince < 200) {
    await new Promise((r) => setTimeout(r, 25));
    const n = snapshot(pid);
    if (!same(n, s)) {
      s = n;
      stableSince = Date.now();
    }
  }
  return s;
}

/**
 * Waits (bounded) until the process is back at `base` and returns the last
 * snapshot seen, which the caller compares with `base`.
 */
export async function settle(pid: number, base: ResourceSnapshot, timeoutMs = 5000): Promise<ResourceSnapshot> {
  const deadline = Date.now() + timeoutMs;
  let s = snapshot(pid);
  while (!same(s, base) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 25));
    s = snapshot(pid);
  }
  return s;
}
