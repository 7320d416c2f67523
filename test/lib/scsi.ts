/**
 * Helpers for driving engine/scsi in unit tests: a task that records its
 * completions, CDB builders, a runner that executes a command through a
 * ScsiTarget and polls the real bdev layer until the task completes.
 */
import { type Bdev, type BdevChannel, BdevIoStatus, BdevIoType, CompletionQueue } from '../../engine/bdev/bdev';
import type { WorkerBdevLayer } from '../../engine/bdev/layer';
import type { BdevModuleEngine } from '../../engine/bdev/module';
import type { BdevDesc } from '../../engine/control';
import { ScsiDataDir } from '../../engine/scsi/spec';
import { ScsiTask } from '../../engine/scsi/task';
import type { ScsiTarget } from '../../engine/scsi/target';

export class TestTask extends ScsiTask {
  calls = 0;
  constructor(capacity = 8) {
    super(capacity);
  }
  override done(): void {
    this.calls++;
  }
  /** Sense key, ASC, ASCQ of the fixed-format sense data. */
  get senseTriple(): [number, number, number] | null {
    return this.senseLength === 0 ? null : [this.sense[2] & 0x0f, this.sense[12], this.sense[13]];
  }
}

export interface RunOptions {
  lun?: number;
  nexus?: number;
  /** Data-out buffer(s). */
  out?: Uint8Array | Uint8Array[];
  /** Data-in buffer size(s). */
  inLen?: number | number[];
  /** Force the task's direction (for wrong-direction tests). */
  dir?: ScsiDataDir;
  cdbLength?: number;
  task?: TestTask;
  /** Do not poll (leave the task pending). */
  noPoll?: boolean;
}

export interface RunResult {
  task: TestTask;
  /** The data-in buffers, concatenated. */
  data: Uint8Array;
}

/** Execute `cdb` on `target` and poll `layer` until it completes. */
export function run(target: ScsiTarget, layer: WorkerBdevLayer, cdb: number[], o: RunOptions = {}): RunResult {
  const task = o.task ?? new TestTask();
  task.reset();
  task.setCdb(cdb);
  if (o.cdbLength !== undefined) task.cdbLength = o.cdbLength;
  task.nexus = o.nexus ?? 1;
  const ins: Uint8Array[] = [];
  if (o.out !== undefined) {
    for (const b of Array.isArray(o.out) ? o.out : [o.out]) task.addIov(b, 0, b.length);
    task.dir = ScsiDataDir.ToDevice;
  }
  if (o.inLen !== undefined) {
    for (const n of Array.isArray(o.inLen) ? o.inLen : [o.inLen]) {
      const b = new Uint8Array(n).fill(0xee);
      ins.push(b);
      task.addIov(b, 0, n);
    }
    task.dir = ScsiDataDir.FromDevice;
  }
  if (o.dir !== undefined) task.dir = o.dir;
  const before = task.calls;
  target.execute(task, o.lun ?? 0, 0);
  if (!o.noPoll) for (let i = 0; i < 100000 && task.calls === before; i++) layer.poll(i);
  const total = ins.reduce((s, b) => s + b.length, 0);
  const data = new Uint8Array(total);
  let p = 0;
  for (const b of ins) {
    data.set(b, p);
    p += b.length;
  }
  return { task, data };
}

export function be16(n: number): number[] {
  return [(n >>> 8) & 0xff, n & 0xff];
}
export function be32(n: number): number[] {
  return [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}
export function be64(n: number): number[] {
  return [...be32(Math.floor(n / 2 ** 32)), ...be32(n % 2 ** 32)];
}
export function rd32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}
export function rd64(b: Uint8Array, off: number): number {
  return rd32(b, off) * 2 ** 32 + rd32(b, off + 4);
}

export const cdb = {
  tur: (): number[] => [0x00, 0, 0, 0, 0, 0],
  inquiry: (evpd: boolean, page: number, alloc: number): number[] => [0x12, evpd ? 1 : 0, page, ...be16(alloc), 0],
  requestSense: (alloc: number, desc = false): number[] => [0x03, desc ? 1 : 0, 0, 0, alloc, 0],
  read6: (lba: number, n: number): number[] => [0x08, (lba >> 16) & 0x1f, (lba >> 8) & 0xff, lba & 0xff, n, 0],
  write6: (lba: number, n: number): number[] => [0x0a, (lba >> 16) & 0x1f, (lba >> 8) & 0xff, lba & 0xff, n, 0],
  read10: (lba: number, n: number, b1 = 0): number[] => [0x28, b1, ...be32(lba), 0, ...be16(n), 0],
  write10: (lba: number, n: number, b1 = 0): number[] => [0x2a, b1, ...be32(lba), 0, ...be16(n), 0],
  read12: (lba: number, n: number): number[] => [0xa8, 0, ...be32(lba), ...be32(n), 0, 0],
  write12: (lba: number, n: number): number[] => [0xaa, 0, ...be32(lba), ...be32(n), 0, 0],
  read16: (lba: number, n: number, b1 = 0): number[] => [0x88, b1, ...be64(lba), ...be32(n), 0, 0],
  write16: (lba: number, n: number, b1 = 0): number[] => [0x8a, b1, ...be64(lba), ...be32(n), 0, 0],
  verify10: (lba: number, n: number, bytchk: number): number[] => [0x2f, bytchk << 1, ...be32(lba), 0, ...be16(n), 0],
  verify16: (lba: number, n: number, bytchk: number): number[] => [0x8f, bytchk << 1, ...be64(lba), ...be32(n), 0, 0],
  sync10: (lba: number, n: number): number[] => [0x35, 0, ...be32(lba), 0, ...be16(n), 0],
  sync16: (lba: number, n: number): number[] => [0x91, 0, ...be64(lba), ...be32(n), 0, 0],
  writeSame10: (lba: number, n: number, b1 = 0): number[] => [0x41, b1, ...be32(lba), 0, ...be16(n), 0],
  writeSame16: (lba: number, n: number, b1 = 0): number[] => [0x93, b1, ...be64(lba), ...be32(n), 0, 0],
  unmap: (len: number, anchor = false): number[] => [0x42, anchor ? 1 : 0, 0, 0, 0, 0, 0, ...be16(len), 0],
  compareAndWrite: (lba: number, n: number): number[] => [0x89, 0, ...be64(lba), 0, 0, 0, n, 0, 0],
  readCapacity10: (): number[] => [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  readCapacity16: (alloc: number, sa = 0x10): number[] => [0x9e, sa, ...be64(0), ...be32(alloc), 0, 0],
  reportLuns: (alloc: number, select = 0): number[] => [0xa0, 0, select, 0, 0, 0, ...be32(alloc), 0, 0],
  modeSense6: (page: number, alloc: number, pc = 0, dbd = false, sub = 0): number[] => [0x1a, dbd ? 8 : 0, (pc << 6) | page, sub, alloc, 0],
  modeSense10: (page: number, alloc: number, pc = 0, llbaa = false, dbd = false): number[] => [0x5a, (llbaa ? 0x10 : 0) | (dbd ? 8 : 0), (pc << 6) | page, 0, 0, 0, 0, ...be16(alloc), 0],
  modeSelect6: (len: number, pf = true, sp = false): number[] => [0x15, (pf ? 0x10 : 0) | (sp ? 1 : 0), 0, 0, len, 0],
  modeSelect10: (len: number, pf = true): number[] => [0x55, pf ? 0x10 : 0, 0, 0, 0, 0, 0, ...be16(len), 0],
  startStop: (): number[] => [0x1b, 0, 0, 0, 1, 0],
  prIn: (action: number, alloc: number): number[] => [0x5e, action, 0, 0, 0, 0, 0, ...be16(alloc), 0],
  prOut: (action: number, type = 0, len = 24, scope = 0): number[] => [0x5f, action, (scope << 4) | type, 0, 0, ...be32(len), 0],
  reserve6: (): number[] => [0x16, 0, 0, 0, 0, 0],
  release6: (): number[] => [0x17, 0, 0, 0, 0, 0],
  reserve10: (): number[] => [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  release10: (): number[] => [0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0],
};

/** A PERSISTENT RESERVE OUT parameter list. */
export function prParams(key: bigint, saKey: bigint, flags = 0): Uint8Array {
  const p = new Uint8Array(24);
  const v = new DataView(p.buffer);
  v.setBigUint64(0, key);
  v.setBigUint64(8, saKey);
  p[20] = flags;
  return p;
}

/** An UNMAP parameter list of [lba, blocks] descriptors. */
export function unmapParams(descs: [number, number][]): Uint8Array {
  const p = new Uint8Array(8 + 16 * descs.length);
  p.set(be16(6 + 16 * descs.length), 0);
  p.set(be16(16 * descs.length), 2);
  descs.forEach(([lba, n], i) => {
    p.set(be64(lba), 8 + 16 * i);
    p.set(be32(n), 16 + 16 * i);
  });
  return p;
}

/**
 * A bdev module for error paths and I/O order: every I/O is recorded
 * (type, offset, blocks) and fails when `fail` says so; reads fill 0x5a.
 */
export function recordingModule(fail: (type: BdevIoType) => boolean) {
  const log: { type: BdevIoType; offset: number; blocks: number }[] = [];
  const module: BdevModuleEngine = {
    name: 'recording',
    open(desc: BdevDesc): Bdev {
      return {
        name: desc.name,
        blockSize: desc.blockSize,
        numBlocks: desc.numBlocks,
        ioTypeSupported: () => true,
        createChannel(): BdevChannel {
          const q = new CompletionQueue();
          return {
            submit(io) {
              log.push({ type: io.type, offset: io.offsetBlocks, blocks: io.numBlocks });
              if (io.type === BdevIoType.Read) for (let i = 0; i < io.iovCount; i++) io.iovBuf[i].fill(0x5a, io.iovOff[i], io.iovOff[i] + io.iovLen[i]);
              q.complete(io, fail(io.type) ? BdevIoStatus.Failed : BdevIoStatus.Success);
            },
            poll: () => q.reap(),
            get outstanding() {
              return q.length;
            },
            destroy() {},
          };
        },
        destroy() {},
      };
    },
  };
  return { module, log };
}
