/**
 * Count, from outside, the requests a stopped vhostd has in flight — what the
 * next back-end must resubmit after a kill -9 (issue #10's restart tests).
 *
 * The process is stopped with SIGSTOP (every thread: nothing completes, no
 * word of the shared memory changes), then read through /proc/<pid>/mem:
 *   - the in-flight region (vhost-user INFLIGHT_SHMFD) through vhostd's
 *     mapping of it (`/memfd:vhostd-inflight` in /proc/<pid>/maps);
 *   - the ring words the spec's reconnect steps look at (the split used
 *     ring's idx, a packed ring's descriptor flags) through vhostd's mapping
 *     of guest RAM (QEMU's `memory-backend-memfd`: `/memfd:memory-backend-memfd`, file
 *     offset = guest-physical address for the RAM below 4 GiB); the rings'
 *     guest-physical addresses come from QEMU's monitor
 *     (`info virtio-vhost-queue-status`), asked while vhostd still runs.
 *
 * The count follows vhost-user.rst ("Inflight I/O tracking"), written here
 * from the spec, not from vhostd's code:
 *   split:  if the region's used_idx differs from the used ring's idx, the
 *           last batch (that many entries of the list at last_batch_head) was
 *           published: its entries are not in flight; the rest with
 *           inflight = 1 are.
 *   packed: if used_idx/used_wrap_counter differ from old_*, a batch was being
 *           published; it reached the driver iff the ring slot at
 *           old_used_idx no longer reads available for old_used_wrap_counter:
 *           then the free list starts at free_head, else at old_free_head.
 *           Head entries with inflight = 1 that are not on that free list are
 *           in flight.
 * Main-thread test helper (Linux only).
 */
import fs from 'node:fs';
import { hmpCommands } from './hmp';

/** A ring of the device as QEMU set it up for the back-end. */
export interface RingAddrs {
  queue: number;
  size: number;
  descPhys: number;
  usedPhys: number;
}

/**
 * The rings of the guest's vhost-user device of `kind` (queues 0..numQueues-1:
 * for scsi the control and event queues and then the request queues), from
 * QEMU's monitor at `monitor`.
 */
export async function vhostRings(monitor: string, kind: 'blk' | 'scsi', numQueues: number): Promise<RingAddrs[]> {
  const [list] = await hmpCommands(monitor, ['info virtio']);
  const m = new RegExp(`(/machine/\\S+)\\s+\\[(?:vhost-user|virtio)-${kind}\\]`).exec(list);
  if (m === null) throw new Error(`no vhost-user-${kind} in QEMU's 'info virtio': ${JSON.stringify(list)}`);
  const cmds: string[] = [];
  for (let q = 0; q < numQueues; q++) cmds.push(`info virtio-vhost-queue-status ${m[1]} ${q}`);
  const outs = await hmpCommands(monitor, cmds);
  return outs.map((out, queue) => {
    const num = /num:\s+(\d+)/.exec(out);
    const desc = /desc_phys:\s+0x([0-9a-f]+)/.exec(out);
    const used = /used_phys:\s+0x([0-9a-f]+)/.exec(out);
    if (num === null || desc === null || used === null) throw new Error(`queue ${queue}: cannot read the ring from ${JSON.stringify(out)}`);
    return { queue, size: Number(num[1]), descPhys: parseInt(desc[1], 16), usedPhys: parseInt(used[1], 16) };
  });
}

interface Mapping {
  start: number;
  end: number;
  offset: number;
  inode: string;
  name: string;
}

function readMaps(pid: number): Mapping[] {
  const out: Mapping[] = [];
  for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ (\d+)\s+(.*)$/.exec(line);
    if (m === null) continue;
    out.push({ start: parseInt(m[1], 16), end: parseInt(m[2], 16), offset: parseInt(m[3], 16), inode: m[4], name: m[5] });
  }
  return out;
}

/**
 * SIGSTOP `pid` and wait until every one of its threads is stopped. The
 * kernel's io_uring workers of the process (`iou-wrk-*`, `iou-sqp-*`) do not
 * stop and need not: they complete into the kernel's ring, which only the
 * stopped threads read; they never write the in-flight region.
 */
export async function stopProcess(pid: number, timeoutMs = 10_000): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const tasks = fs.readdirSync(`/proc/${pid}/task`);
    const running = tasks.filter((t) => {
      try {
        // State is the field after the parenthesised command (which may hold spaces).
        const stat = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
        if (/^\d+ \(iou-(wrk|sqp)-/.test(stat)) return false;
        const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
        return state !== 'T' && state !== 't' && state !== 'Z' && state !== 'X';
      } catch {
        return false; // the thread is gone
      }
    });
    if (running.length === 0) return;
    if (Date.now() > deadline) throw new Error(`process ${pid}: threads ${running.join(',')} still run after SIGSTOP`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** What a stopped vhostd had in flight, per queue, and how the count was reached. */
export interface InflightCount {
  perQueue: number[];
  /** Per queue: the reconnect repair a restart applies (none, or a batch published / committed / rolled back). */
  repair: string[];
}

/** Reads bytes of a stopped process's memory. */
class ProcMem {
  private readonly fd: number;
  private readonly maps: Mapping[];
  constructor(readonly pid: number) {
    this.maps = readMaps(pid);
    this.fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  }
  close(): void {
    fs.closeSync(this.fd);
  }
  read(addr: number, len: number): Buffer {
    const b = Buffer.alloc(len);
    const n = fs.readSync(this.fd, b, 0, len, addr);
    if (n !== len) throw new Error(`process ${this.pid}: read ${n} of ${len} bytes at 0x${addr.toString(16)}`);
    return b;
  }
  /** The one file (by inode) mapped under a name containing `name`; every mapping of it. */
  file(name: string): Mapping[] {
    const ms = this.maps.filter((m) => m.name.includes(name));
    const inodes = new Set(ms.map((m) => m.inode));
    if (inodes.size !== 1) throw new Error(`process ${this.pid}: ${inodes.size} files mapped as ${name}; its memfds: ${[...new Set(this.maps.filter((m) => m.name.startsWith('/memfd:')).map((m) => m.name))].join(', ')}`);
    return ms;
  }
  /** `len` bytes at byte `off` of the file mapped as `name`. */
  readFile(name: string, off: number, len: number): Buffer {
    const m = this.file(name).find((x) => off >= x.offset && off + len <= x.offset + (x.end - x.start));
    if (m === undefined) throw new Error(`process ${this.pid}: bytes ${off}+${len} of ${name} are not mapped`);
    return this.read(m.start + (off - m.offset), len);
  }
}

const INFLIGHT_MEMFD = '/memfd:vhostd-inflight';
const GUEST_RAM_MEMFD = '/memfd:memory-backend-memfd';
const ALIGN = 64;

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}

/**
 * The requests stopped process `pid` has in flight on each of `rings`
 * (split or `packed`), as the spec's reconnect steps count them. `pid`
 * must be stopped (stopProcess).
 */
export function countInflight(pid: number, rings: RingAddrs[], packed: boolean): InflightCount {
  const mem = new ProcMem(pid);
  try {
    const ram: RamReader = (gpa, len) => mem.readFile(GUEST_RAM_MEMFD, gpa, len);
    const perQueue: number[] = [];
    const repair: string[] = [];
    for (const ring of rings) {
      // QEMU asked for the region with the rings' size (GET_INFLIGHT_FD's queue_size).
      const bytes = packed ? align(29 + 32 * ring.size) : align(16 + 16 * ring.size);
      const q = mem.readFile(INFLIGHT_MEMFD, ring.queue * bytes, bytes);
      const version = q.readUInt16LE(8);
      if (version === 0) {
        perQueue.push(0);
        repair.push('unused');
        continue;
      }
      if (q.readUInt16LE(10) !== ring.size) throw new Error(`queue ${ring.queue}: region desc_num ${q.readUInt16LE(10)}, ring size ${ring.size}`);
      const r = packed ? countPackedQueue(q, ring, ram) : countSplitQueue(q, ring, ram);
      perQueue.push(r.n);
      repair.push(r.repair);
    }
    return { perQueue, repair };
  } finally {
    mem.close();
  }
}

/** Guest RAM reader: `len` bytes at guest-physical `gpa`. */
export type RamReader = (gpa: number, len: number) => Buffer;

/** Requests in flight in split queue region `q` (its bytes) of `ring`, after the spec's last-batch repair. */
export function countSplitQueue(q: Buffer, ring: RingAddrs, ram: RamReader): { n: number; repair: string } {
  const desc = (i: number): number => 16 + 16 * i;
  const inflight = new Uint8Array(ring.size);
  for (let i = 0; i < ring.size; i++) inflight[i] = q[desc(i)];
  const ringUsed = ram(ring.usedPhys + 2, 2).readUInt16LE(0);
  const recorded = q.readUInt16LE(14);
  const batch = (ringUsed - recorded) & 0xffff;
  let repair = 'none';
  if (batch !== 0) {
    repair = `last batch of ${batch} published`;
    let head = q.readUInt16LE(12);
    for (let k = 0; k < batch && head < ring.size; k++) {
      inflight[head] = 0;
      head = q.readUInt16LE(desc(head) + 6);
    }
  }
  let n = 0;
  for (let i = 0; i < ring.size; i++) if (inflight[i] === 1) n++;
  return { n, repair };
}

/** Chains in flight in packed queue region `q` (its bytes) of `ring`, after the spec's commit / roll-back of a cut batch. */
export function countPackedQueue(q: Buffer, ring: RingAddrs, ram: RamReader): { n: number; repair: string } {
  const entry = (i: number): number => 32 + 32 * i;
  const AVAIL = 1 << 7;
  const USED = 1 << 15;
  const freeHead = q.readUInt16LE(12);
  const oldFreeHead = q.readUInt16LE(14);
  const usedIdx = q.readUInt16LE(16);
  const oldUsedIdx = q.readUInt16LE(18);
  const usedWrap = q[20];
  const oldUsedWrap = q[21];
  let head = oldFreeHead;
  let repair = 'none';
  if (usedIdx !== oldUsedIdx || usedWrap !== oldUsedWrap) {
    // A descriptor the driver made available in wrap W reads AVAIL = W, USED = !W; once used, both = the device's wrap.
    const flags = ram(ring.descPhys + 16 * oldUsedIdx + 14, 2).readUInt16LE(0) & (AVAIL | USED);
    const stillAvailable = flags === (oldUsedWrap === 1 ? AVAIL : USED);
    head = stillAvailable ? oldFreeHead : freeHead;
    repair = stillAvailable ? 'batch rolled back' : 'batch committed';
  }
  const free = new Uint8Array(ring.size);
  for (let e = head, steps = 0; e < ring.size && free[e] === 0 && steps < ring.size; steps++) {
    free[e] = 1;
    e = q.readUInt16LE(entry(e) + 2);
  }
  let n = 0;
  for (let i = 0; i < ring.size; i++) if (free[i] === 0 && q[entry(i)] === 1) n++;
  return { n, repair };
}
