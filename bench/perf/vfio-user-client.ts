/**
 * An in-repo vfio-user client (the role QEMU's vfio-user-pci plays), for
 * integration tests against the real vhostd process and for the NVMe mode of
 * the load generator (bench/perf/nvme.ts), and a small NVMe driver on top
 * of it: guest memory in a memfd shared with DMA_MAP, BAR0 registers
 * through REGION_READ/WRITE, doorbells through the mmapped doorbell page the
 * server offers (its sparse-mmap area) or, without one, REGION_WRITE
 * messages, interrupts as eventfds given with SET_IRQS.
 *
 * Written from docs/interop/vfio-user.rst and the NVMe Base specification,
 * independently of reactor/vfio-user/codec.ts (the test peer shares no code
 * with what it tests). Little-endian host only. Thread: the test's main thread.
 */
import { native } from '../../bindings';

export const Cmd = {
  VERSION: 1,
  DMA_MAP: 2,
  DMA_UNMAP: 3,
  DEVICE_GET_INFO: 4,
  DEVICE_GET_REGION_INFO: 5,
  DEVICE_GET_IRQ_INFO: 7,
  DEVICE_SET_IRQS: 8,
  REGION_READ: 9,
  REGION_WRITE: 10,
  DEVICE_RESET: 13,
} as const;

const FLAG_REPLY = 0x1;
const FLAG_ERROR = 0x20;
/** VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER */
const IRQ_SET_EVENTFD_TRIGGER = 0x4 | 0x20;
export const IRQ_INTX = 0;
export const IRQ_MSIX = 2;

export interface Reply {
  id: number;
  command: number;
  flags: number;
  error: number;
  payload: Uint8Array;
  fds: number[];
}

export class PeerClosed extends Error {}

export class VfioUserClient {
  private nextId = 1;
  private readonly fdsIn = new Int32Array(8);
  private closed = false;

  private constructor(readonly fd: number) {}

  static async connect(path: string, timeoutMs = 10_000): Promise<VfioUserClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return new VfioUserClient(native.unixConnect(path));
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await sleep(20);
      }
    }
  }

  close(): void {
    if (!this.closed) {
      this.closed = true;
      native.close(this.fd);
    }
  }

  /** Send raw bytes (a malformed message, for bad-input tests). */
  async sendRaw(bytes: Uint8Array, fds: number[] = []): Promise<void> {
    let off = 0;
    let withFds: number[] | null = fds.length > 0 ? fds : null;
    while (off < bytes.byteLength) {
      const n = native.sendMsg(this.fd, bytes.subarray(off), withFds);
      if (n < 0) {
        await sleep(1);
        continue;
      }
      withFds = null;
      off += n;
    }
  }

  /** Resolves true once the server closed the connection (EOF), false after timeoutMs. */
  async waitClosed(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const buf = new Uint8Array(4096);
    while (Date.now() < deadline) {
      let n: number;
      try {
        n = native.recvMsg(this.fd, buf, this.fdsIn);
      } catch {
        return true;
      }
      for (const f of this.fdsIn) if (f >= 0) native.close(f);
      if (n === 0) return true;
      if (n < 0) await sleep(2);
    }
    return false;
  }

  private async readExactly(buf: Uint8Array, fds: number[], deadline: number): Promise<void> {
    let got = 0;
    while (got < buf.byteLength) {
      const n = native.recvMsg(this.fd, buf.subarray(got), this.fdsIn);
      for (const f of this.fdsIn) if (f >= 0) fds.push(f);
      if (n === 0) throw new PeerClosed('server closed the connection');
      if (n < 0) {
        if (Date.now() > deadline) throw new Error('timed out waiting for a reply');
        await sleep(1);
        continue;
      }
      got += n;
    }
  }

  /** One command and its reply (an error reply resolves too: check `error`). */
  async request(command: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], timeoutMs = 10_000): Promise<Reply> {
    const id = this.nextId++ & 0xffff;
    const msg = new Uint8Array(16 + payload.byteLength);
    const v = new DataView(msg.buffer);
    v.setUint16(0, id, true);
    v.setUint16(2, command, true);
    v.setUint32(4, msg.byteLength, true);
    v.setUint32(8, 0, true);
    msg.set(payload, 16);
    await this.sendRaw(msg, fds);
    const deadline = Date.now() + timeoutMs;
    const head = new Uint8Array(16);
    const got: number[] = [];
    await this.readExactly(head, got, deadline);
    const h = new DataView(head.buffer);
    const size = h.getUint32(4, true);
    const body = new Uint8Array(size - 16);
    await this.readExactly(body, got, deadline);
    const reply: Reply = { id: h.getUint16(0, true), command: h.getUint16(2, true), flags: h.getUint32(8, true), error: h.getUint32(12, true), payload: body, fds: got };
    if (reply.id !== id || reply.command !== command || (reply.flags & 0xf) !== FLAG_REPLY) {
      throw new Error(`reply ${reply.id}/${reply.command} flags 0x${reply.flags.toString(16)} to ${id}/${command}`);
    }
    return reply;
  }

  async ok(command: number, payload?: Uint8Array, fds?: number[]): Promise<Reply> {
    const r = await this.request(command, payload, fds);
    if (r.flags & FLAG_ERROR) throw Object.assign(new Error(`command ${command} failed: errno ${r.error}`), { errno: r.error });
    return r;
  }

  async version(): Promise<{ major: number; minor: number; json: unknown }> {
    const json = new TextEncoder().encode(JSON.stringify({ capabilities: { max_msg_fds: 8, max_data_xfer_size: 1048576 } }) + '\0');
    const p = new Uint8Array(4 + json.byteLength);
    const v = new DataView(p.buffer);
    v.setUint16(0, 0, true);
    v.setUint16(2, 0, true);
    p.set(json, 4);
    const r = await this.ok(Cmd.VERSION, p);
    const rv = new DataView(r.payload.buffer, r.payload.byteOffset);
    const text = new TextDecoder().decode(r.payload.subarray(4)).replace(/\0.*$/s, '');
    return { major: rv.getUint16(0, true), minor: rv.getUint16(2, true), json: JSON.parse(text) };
  }

  async dmaMap(fd: number, address: number, size: number, offset = 0): Promise<void> {
    const p = new Uint8Array(32);
    const v = new DataView(p.buffer);
    v.setUint32(0, 32, true);
    v.setUint32(4, 3, true); // READ | WRITE
    v.setBigUint64(8, BigInt(offset), true);
    v.setBigUint64(16, BigInt(address), true);
    v.setBigUint64(24, BigInt(size), true);
    await this.ok(Cmd.DMA_MAP, p, [fd]);
  }

  async dmaUnmap(address: number, size: number): Promise<void> {
    const p = new Uint8Array(24);
    const v = new DataView(p.buffer);
    v.setUint32(0, 24, true);
    v.setBigUint64(8, BigInt(address), true);
    v.setBigUint64(16, BigInt(size), true);
    await this.ok(Cmd.DMA_UNMAP, p);
  }

  /** DEVICE_GET_REGION_INFO with room for capabilities: flags, size, offset, sparse areas, and the fd that came with it. */
  async regionInfo(index: number): Promise<{ flags: number; size: number; offset: number; areas: { offset: number; size: number }[]; fd: number }> {
    // The request is a bare vfio_region_info (32 bytes); argsz says how much reply room the client has (as QEMU sends it).
    const p = new Uint8Array(32);
    const v = new DataView(p.buffer);
    v.setUint32(0, 256, true);
    v.setUint32(8, index, true);
    const r = await this.ok(Cmd.DEVICE_GET_REGION_INFO, p);
    const rv = new DataView(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength);
    const flags = rv.getUint32(4, true);
    const areas: { offset: number; size: number }[] = [];
    if (flags & 0x8) {
      // VFIO_REGION_INFO_FLAG_CAPS: walk the capability chain from cap_offset.
      let at = rv.getUint32(12, true);
      while (at !== 0 && at + 8 <= rv.byteLength) {
        const id = rv.getUint16(at, true);
        if (id === 1) {
          const n = rv.getUint32(at + 8, true);
          for (let i = 0; i < n; i++) areas.push({ offset: Number(rv.getBigUint64(at + 16 + 16 * i, true)), size: Number(rv.getBigUint64(at + 24 + 16 * i, true)) });
        }
        at = rv.getUint32(at + 4, true);
      }
    }
    for (let i = 1; i < r.fds.length; i++) native.close(r.fds[i]);
    return { flags, size: Number(rv.getBigUint64(16, true)), offset: Number(rv.getBigUint64(24, true)), areas, fd: r.fds[0] ?? -1 };
  }

  async setIrqs(index: number, start: number, fds: number[]): Promise<void> {
    const p = new Uint8Array(20);
    const v = new DataView(p.buffer);
    v.setUint32(0, 20, true); // argsz covers the struct only; the eventfds ride as SCM_RIGHTS (as QEMU sends them)
    v.setUint32(4, IRQ_SET_EVENTFD_TRIGGER, true);
    v.setUint32(8, index, true);
    v.setUint32(12, start, true);
    v.setUint32(16, fds.length, true);
    await this.ok(Cmd.DEVICE_SET_IRQS, p, fds);
  }

  async read32(region: number, offset: number): Promise<number> {
    const p = new Uint8Array(16);
    const v = new DataView(p.buffer);
    v.setBigUint64(0, BigInt(offset), true);
    v.setUint32(8, region, true);
    v.setUint32(12, 4, true);
    const r = await this.ok(Cmd.REGION_READ, p);
    return new DataView(r.payload.buffer, r.payload.byteOffset).getUint32(16, true);
  }

  async write(region: number, offset: number, data: Uint8Array): Promise<Reply> {
    const p = new Uint8Array(16 + data.byteLength);
    const v = new DataView(p.buffer);
    v.setBigUint64(0, BigInt(offset), true);
    v.setUint32(8, region, true);
    v.setUint32(12, data.byteLength, true);
    p.set(data, 16);
    return this.request(Cmd.REGION_WRITE, p);
  }

  async write32(region: number, offset: number, value: number): Promise<void> {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0, true);
    const r = await this.write(region, offset, b);
    if (r.flags & FLAG_ERROR) throw new Error(`REGION_WRITE ${region}+0x${offset.toString(16)} failed: errno ${r.error}`);
  }

  async write64(region: number, offset: number, value: number): Promise<void> {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
    const r = await this.write(region, offset, b);
    if (r.flags & FLAG_ERROR) throw new Error(`REGION_WRITE ${region}+0x${offset.toString(16)} failed: errno ${r.error}`);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** NVMe completion entry. */
export interface Completion {
  dw0: number;
  sqhd: number;
  sqid: number;
  cid: number;
  /** Status field without the phase tag: (SCT << 8) | SC. */
  status: number;
  dnr: boolean;
}

/**
 * A minimal NVMe driver over a VfioUserClient: guest memory is one memfd
 * mapped here and DMA-mapped at `base`; queues are carved from it.
 */
export class NvmeDriver {
  readonly memFd: number;
  readonly mem: Uint8Array;
  readonly view: DataView;
  private readonly sqTail = new Map<number, number>();
  private readonly sqSize = new Map<number, number>();
  private readonly sqAddr = new Map<number, number>();
  private readonly cqHead = new Map<number, number>();
  private readonly cqSize = new Map<number, number>();
  private readonly cqAddr = new Map<number, number>();
  private readonly cqPhase = new Map<number, number>();
  private cid = 1;
  /** The doorbell page, mapped from the fd the server sent with BAR0's region info; null: REGION_WRITE messages. */
  doorbells: Uint32Array | null = null;
  /** Bytes between doorbells (4 << CAP.DSTRD). */
  doorbellStride = 4;
  /** SQ tails written by submit() while doorbells are messages, sent by run() or ringPending(). */
  private readonly pendingTails = new Map<number, number>();
  private barMapping: ArrayBuffer | null = null;

  constructor(
    readonly client: VfioUserClient,
    readonly base: number,
    readonly sizeBytes: number,
    /** Seal the memfd against shrinking and growing (as QEMU's memory-backend-memfd, seal=on). */
    sealed = false,
  ) {
    this.memFd = native.memfdCreate('nvme-client-mem', sealed ? 2 /* MFD_ALLOW_SEALING */ : 0);
    native.ftruncate(this.memFd, sizeBytes);
    if (sealed) native.fdAddSeals(this.memFd, 1 | 2 | 4); // F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW
    const buf = native.mmap(this.memFd, 0, sizeBytes, true);
    this.mem = new Uint8Array(buf);
    this.view = new DataView(buf);
  }

  /** Map the doorbell page (BAR0's sparse-mmap area) from the region fd. */
  mapDoorbells(fd: number, regionOffset: number, area: { offset: number; size: number }): void {
    this.barMapping = native.mmap(fd, regionOffset + area.offset, area.size, true);
    this.doorbells = new Uint32Array(this.barMapping);
  }

  release(): void {
    if (this.barMapping) native.munmap(this.barMapping);
    native.munmap(this.mem.buffer as ArrayBuffer);
    native.close(this.memFd);
  }

  off(gpa: number): number {
    return gpa - this.base;
  }

  async enable(asq: number, acq: number, entries: number): Promise<void> {
    await this.client.write32(0, 0x24, ((entries - 1) << 16) | (entries - 1));
    await this.client.write64(0, 0x28, asq);
    await this.client.write64(0, 0x30, acq);
    this.addQueuePair(0, asq, acq, entries);
    // CC: EN, IOSQES 6, IOCQES 4, MPS 0, CSS 0.
    await this.client.write32(0, 0x14, 1 | (6 << 16) | (4 << 20));
    await this.waitCsts((c) => (c & 1) === 1);
  }

  /** CC.EN = 0 and wait for CSTS.RDY = 0 (controller reset: the queues are gone). */
  async disable(): Promise<void> {
    const cc = await this.client.read32(0, 0x14);
    await this.client.write32(0, 0x14, cc & ~1);
    await this.waitCsts((c) => (c & 1) === 0);
  }

  async waitCsts(pred: (csts: number) => boolean, timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const c = await this.client.read32(0, 0x1c);
      if (pred(c)) return c;
      if (Date.now() > deadline) throw new Error(`CSTS stays 0x${c.toString(16)}`);
      await sleep(2);
    }
  }

  addQueuePair(qid: number, sq: number, cq: number, entries: number): void {
    this.sqAddr.set(qid, sq);
    this.sqSize.set(qid, entries);
    this.sqTail.set(qid, 0);
    this.cqAddr.set(qid, cq);
    this.cqSize.set(qid, entries);
    this.cqHead.set(qid, 0);
    this.cqPhase.set(qid, 1);
    this.mem.fill(0, this.off(cq), this.off(cq) + entries * 16);
  }

  /** Put a 64-byte command (dwords after CDW0 given by `fill`) on SQ `qid` and ring its doorbell through the mapping. Returns its cid. */
  submit(qid: number, opcode: number, fill: (v: DataView, at: number) => void): number {
    const tail = this.sqTail.get(qid) as number;
    const at = this.off(this.sqAddr.get(qid) as number) + tail * 64;
    this.mem.fill(0, at, at + 64);
    const cid = this.cid++ & 0xffff;
    this.view.setUint32(at, opcode | (cid << 16), true);
    fill(this.view, at);
    const next = (tail + 1) % (this.sqSize.get(qid) as number);
    this.sqTail.set(qid, next);
    if (this.doorbells === null) {
      this.pendingTails.set(qid, next);
    } else {
      Atomics.store(this.doorbells, (2 * qid * this.doorbellStride) / 4, next);
    }
    return cid;
  }

  /** Without a doorbell mapping: send the SQ tail doorbells submit() recorded. */
  async ringPending(): Promise<void> {
    for (const [qid, tail] of this.pendingTails) await this.client.write32(0, 0x1000 + 2 * qid * this.doorbellStride, tail);
    this.pendingTails.clear();
  }

  /** Wait for the next completion on CQ `qid` and ring its head doorbell. */
  async reap(qid: number, timeoutMs = 10_000): Promise<Completion> {
    const deadline = Date.now() + timeoutMs;
    const size = this.cqSize.get(qid) as number;
    for (;;) {
      const head = this.cqHead.get(qid) as number;
      const at = this.off(this.cqAddr.get(qid) as number) + head * 16;
      const dw3 = this.view.getUint32(at + 12, true);
      if (((dw3 >>> 16) & 1) === this.cqPhase.get(qid)) {
        const sf = dw3 >>> 17;
        const c: Completion = {
          dw0: this.view.getUint32(at, true),
          sqhd: this.view.getUint16(at + 8, true),
          sqid: this.view.getUint16(at + 10, true),
          cid: dw3 & 0xffff,
          status: sf & 0x7ff,
          dnr: ((sf >>> 14) & 1) === 1,
        };
        const next = head + 1 === size ? 0 : head + 1;
        if (next === 0) this.cqPhase.set(qid, (this.cqPhase.get(qid) as number) ^ 1);
        this.cqHead.set(qid, next);
        if (this.doorbells === null) {
          await this.client.write32(0, 0x1000 + (2 * qid + 1) * this.doorbellStride, next);
        } else {
          Atomics.store(this.doorbells, ((2 * qid + 1) * this.doorbellStride) / 4, next);
        }
        return c;
      }
      if (Date.now() > deadline) throw new Error(`no completion on CQ ${qid}`);
      await sleep(1);
    }
  }

  /** Submit and wait for that command's completion (other completions on the queue are an error). */
  async run(qid: number, opcode: number, fill: (v: DataView, at: number) => void): Promise<Completion> {
    const cid = this.submit(qid, opcode, fill);
    await this.ringPending();
    const c = await this.reap(qid);
    if (c.cid !== cid) throw new Error(`completion for cid ${c.cid}, expected ${cid}`);
    return c;
  }
}

/** Read an eventfd's counter without blocking (0 when not signalled). */
export function eventfdCount(fd: number): number {
  const n = native.eventfdRead(fd);
  return n < 0 ? 0 : n;
}

/** A driver attached to a vfio-user NVMe controller (attachNvme). */
export interface AttachedNvme {
  client: VfioUserClient;
  drv: NvmeDriver;
  /** The eventfds of MSI-X vectors 0 (admin) and 1. */
  irqs: number[];
}

/**
 * Connect to the vfio-user NVMe controller at `socket`: negotiate, map its
 * doorbell page when BAR0 offers one (`requireDoorbellMmap`: refuse a BAR0
 * without), DMA-map the driver's memory [memBase, memBase + memSize), give
 * MSI-X vectors 0 and 1 eventfds, and enable the controller with an admin
 * queue pair of `aqSize` entries at `asq` / `acq`. Everything made is
 * released when a step fails.
 */
export async function attachNvme(
  socket: string,
  o: { memBase: number; memSize: number; asq: number; acq: number; aqSize: number; requireDoorbellMmap?: boolean; sealed?: boolean },
): Promise<AttachedNvme> {
  const client = await VfioUserClient.connect(socket);
  let drv: NvmeDriver | null = null;
  const irqs: number[] = [];
  try {
    await client.version();
    const bar = await client.regionInfo(0);
    if (o.requireDoorbellMmap === true && (bar.fd < 0 || bar.areas.length !== 1)) {
      if (bar.fd >= 0) native.close(bar.fd);
      throw new Error(`BAR0 info without a mappable area: ${JSON.stringify(bar)}`);
    }
    drv = new NvmeDriver(client, o.memBase, o.memSize, o.sealed === true);
    if (bar.fd >= 0 && bar.areas.length === 1) drv.mapDoorbells(bar.fd, bar.offset, bar.areas[0]);
    if (bar.fd >= 0) native.close(bar.fd);
    await client.dmaMap(drv.memFd, o.memBase, o.memSize);
    irqs.push(native.eventfd(0, 0), native.eventfd(0, 0));
    await client.setIrqs(IRQ_MSIX, 0, irqs);
    await drv.enable(o.asq, o.acq, o.aqSize);
    return { client, drv, irqs };
  } catch (e) {
    detachNvme({ client, drv, irqs });
    throw e;
  }
}

/** Close the connection, release the driver's memory and the interrupt eventfds. */
export function detachNvme(a: { client: VfioUserClient; drv: NvmeDriver | null; irqs: number[] }): void {
  a.client.close();
  a.drv?.release();
  for (const fd of a.irqs) native.close(fd);
}
