/**
 * One vfio-user connection's state machine, sans-IO: handle(msg) consumes one
 * decoded command and returns what to do — the reply bytes, the fds to send
 * with it, and `effects` the owner must apply, in order, BEFORE the reply is
 * sent (DMA_UNMAP: "the server must release all references to that DMA
 * region before replying"). No socket, no engine: the device is a
 * VfioUserDeviceModel (regions, IRQ types, region access) the owner supplies.
 *
 * States: 'new' (only VERSION is allowed) → 'ready' → 'closed'.
 *
 * fd ownership: the session owns every fd a command brought (DMA windows,
 * eventfds) while it records it. An effect hands the owner a complete new
 * table plus `retired` fds: those leave the session and must be closed by the
 * owner once the engine has applied the new table (a worker never writes to a
 * recycled fd number, never reads unmapped memory). Fds sent with a reply
 * (the doorbell memfd) belong to the model; sendmsg duplicates them.
 *
 * Thread: main (reactor).
 */
import { inspectMappedFd } from '../fds';
import { unsealedReason } from '../vhost-user/memory-policy';
import {
  closeFds,
  encodeDeviceInfo,
  encodeDmaUnmap,
  encodeErrorReply,
  encodeIrqInfo,
  encodeRegionAccess,
  encodeRegionInfo,
  encodeReply,
  encodeVersion,
  ProtocolError,
  type SparseArea,
  type VfioUserMessage,
} from './codec';
import {
  Command,
  DeviceFlag,
  DMA_PAGE_SIZES,
  DmaUnmapFlag,
  Errno,
  IrqSetFlag,
  MAX_DATA_XFER,
  MAX_DMA_MAPS,
  MAX_FDS,
  PciIrq,
  PciRegion,
  RegionFlag,
  VERSION_MAJOR,
  VERSION_MINOR,
} from './messages';

/** One region as the device model describes it. */
export interface RegionDescription {
  sizeBytes: number;
  /** RegionFlag.Read / Write / Mmap. */
  flags: number;
  /** With RegionFlag.Mmap: the fd to send, the region's offset in it, and the mappable areas (a sparse-mmap capability). */
  mmap?: { fd: number; offset: number; areas: readonly SparseArea[] };
}

/** What the session needs of the device behind it (a PCI function). */
export interface VfioUserDeviceModel {
  /** Region `index` (0..PciRegion.Count-1); null when the device has none there (reported with size 0). */
  region(index: number): RegionDescription | null;
  /** IRQ type `index`: how many sub-indexes and its VFIO_IRQ_INFO flags; null when absent (count 0). */
  irq(index: number): { count: number; flags: number } | null;
  /** Read `out.length` bytes of region `index` at `offset`; false when the range is not readable. */
  regionRead(index: number, offset: number, out: Uint8Array): boolean;
  /** Write `data` into region `index` at `offset`; false when the range is not writable. */
  regionWrite(index: number, offset: number, data: Uint8Array): boolean;
}

/** One DMA window of the client's memory. fd -1: not mappable (reachable only through DMA_READ/WRITE, which vhostd does not use). */
export interface DmaWindow {
  address: number;
  sizeBytes: number;
  fd: number;
  /** Where the window starts inside fd. */
  offset: number;
  flags: number;
}

export type SessionEffect =
  /** The DMA table changed: `windows` is all of it now; close `retired` after the engine applied it. */
  | { kind: 'memory'; windows: DmaWindow[]; retired: number[] }
  /** IRQ type `index` now signals through `fds` (per sub-index, -1 = none); close `retired` after the engine applied it. */
  | { kind: 'irqs'; index: number; fds: number[]; retired: number[] }
  /** The client masked or unmasked sub-indexes of IRQ type `index`. */
  | { kind: 'irqMask'; index: number; start: number; count: number; masked: boolean }
  /** The client asked the device to raise these sub-indexes itself. */
  | { kind: 'irqTrigger'; index: number; start: number; count: number }
  /** DEVICE_RESET: reset the device (its controller state; memory and IRQs stay). */
  | { kind: 'reset' };

export interface SessionResult {
  /** Bytes to send, or null (NO_REPLY). */
  reply: Uint8Array | null;
  /** fds to send with the reply (owned by the model, duplicated by sendmsg). */
  fds: number[];
  effects: SessionEffect[];
  /** Why the command got an error reply, when the reason is worth a log line (the connection logs it). */
  refused?: string;
}

export type SessionState = 'new' | 'ready' | 'closed';

export class VfioUserSession {
  private stateValue: SessionState = 'new';
  private readonly windows: DmaWindow[] = [];
  private readonly irqFds = new Map<number, number[]>();
  /** What the client said it can take (its VERSION). */
  clientMaxFds = 1;
  clientMaxXfer = MAX_DATA_XFER;

  constructor(private readonly model: VfioUserDeviceModel) {}

  get state(): SessionState {
    return this.stateValue;
  }

  /** The DMA windows now recorded (copies). */
  get dmaWindows(): DmaWindow[] {
    return this.windows.map((w) => ({ ...w }));
  }

  /** IRQ fds of type `index` now recorded (copy). */
  irqFdsOf(index: number): number[] {
    return (this.irqFds.get(index) ?? []).slice();
  }

  handle(msg: VfioUserMessage): SessionResult {
    if (this.stateValue === 'closed') throw new ProtocolError('command after the session closed');
    if (this.stateValue === 'new' && msg.command !== Command.Version) {
      if (msg.command === Command.DmaMap && msg.fd >= 0) closeFds([msg.fd]);
      if (msg.command === Command.DeviceSetIrqs) closeFds(msg.fds);
      throw new ProtocolError(`command ${msg.command} before VERSION`);
    }
    const effects: SessionEffect[] = [];
    const ok = (payload?: Uint8Array, fds: number[] = []): SessionResult => ({
      reply: msg.noReply ? null : encodeReply(msg.id, msg.command, payload),
      fds: msg.noReply ? [] : fds,
      effects,
    });
    const fail = (errno: number): SessionResult => ({ reply: encodeErrorReply(msg.id, msg.command, errno), fds: [], effects });

    switch (msg.command) {
      case Command.Version: {
        if (this.stateValue !== 'new') throw new ProtocolError('VERSION sent twice');
        if (msg.major !== VERSION_MAJOR) throw new ProtocolError(`protocol major ${msg.major}, vhostd speaks ${VERSION_MAJOR}`);
        this.clientMaxFds = msg.caps.maxMsgFds;
        this.clientMaxXfer = msg.caps.maxDataXferSize;
        this.stateValue = 'ready';
        const caps = {
          capabilities: {
            max_msg_fds: MAX_FDS,
            max_data_xfer_size: MAX_DATA_XFER,
            max_dma_maps: MAX_DMA_MAPS,
            pgsizes: DMA_PAGE_SIZES,
          },
        };
        return ok(encodeVersion(VERSION_MAJOR, Math.min(msg.minor, VERSION_MINOR), JSON.stringify(caps)));
      }
      case Command.DmaMap: {
        const beyond = msg.fd >= 0 ? windowBeyondFile(msg.fd, msg.offset, msg.size) : null;
        if (beyond !== null) {
          closeFds([msg.fd]);
          return { ...fail(Errno.EINVAL), refused: `DMA_MAP at 0x${msg.address.toString(16)}: ${beyond}` };
        }
        // --require-sealed-memory covers DMA windows as it covers vhost-user regions: a window whose
        // file can shrink would SIGBUS the engine. (A window without an fd is never mapped.)
        const unsealed = msg.fd >= 0 ? unsealedReason(msg.fd) : null;
        if (unsealed !== null) {
          closeFds([msg.fd]);
          return { ...fail(Errno.EPERM), refused: `DMA_MAP at 0x${msg.address.toString(16)}: its fd ${unsealed}` };
        }
        const end = msg.address + msg.size;
        const overlaps = this.windows.some((w) => msg.address < w.address + w.sizeBytes && w.address < end);
        if (overlaps || this.windows.length >= MAX_DMA_MAPS) {
          if (msg.fd >= 0) closeFds([msg.fd]);
          return fail(overlaps ? Errno.EEXIST : Errno.ENOSPC);
        }
        this.windows.push({ address: msg.address, sizeBytes: msg.size, fd: msg.fd, offset: msg.offset, flags: msg.flags });
        this.windows.sort((a, b) => a.address - b.address);
        effects.push({ kind: 'memory', windows: this.dmaWindows, retired: [] });
        return ok();
      }
      case Command.DmaUnmap: {
        let retired: DmaWindow[];
        if (msg.flags & DmaUnmapFlag.All) {
          retired = this.windows.splice(0);
        } else {
          const i = this.windows.findIndex((w) => w.address === msg.address && w.sizeBytes === msg.size);
          if (i < 0) return fail(Errno.ENOENT);
          retired = this.windows.splice(i, 1);
        }
        effects.push({ kind: 'memory', windows: this.dmaWindows, retired: retired.map((w) => w.fd).filter((fd) => fd >= 0) });
        return ok(encodeDmaUnmap(msg.argsz, msg.flags, msg.address, msg.size));
      }
      case Command.DeviceGetInfo:
        return ok(encodeDeviceInfo(DeviceFlag.Reset | DeviceFlag.Pci, PciRegion.Count, PciIrq.Count));
      case Command.DeviceGetRegionInfo: {
        if (msg.index >= PciRegion.Count) return fail(Errno.EINVAL);
        const r = this.model.region(msg.index);
        if (r === null) return ok(encodeRegionInfo(msg.argsz, msg.index, 0, 0, 0, null));
        const mmap = r.flags & RegionFlag.Mmap ? r.mmap : undefined;
        const areas = mmap && mmap.areas.length > 0 ? mmap.areas : null;
        const info = encodeRegionInfo(msg.argsz, msg.index, r.flags & (mmap ? 0x7 : 0x3), r.sizeBytes, mmap ? mmap.offset : 0, areas);
        return ok(info, mmap ? [mmap.fd] : []);
      }
      case Command.DeviceGetIrqInfo: {
        if (msg.index >= PciIrq.Count) return fail(Errno.EINVAL);
        const irq = this.model.irq(msg.index);
        return ok(encodeIrqInfo(irq ? irq.flags : 0, msg.index, irq ? irq.count : 0));
      }
      case Command.DeviceSetIrqs:
        return this.setIrqs(msg, effects, ok, fail);
      case Command.RegionRead: {
        const out = new Uint8Array(msg.count);
        if (!this.regionOk(msg.region, msg.offset, msg.count, RegionFlag.Read) || !this.model.regionRead(msg.region, msg.offset, out)) {
          return fail(Errno.EINVAL);
        }
        return ok(encodeRegionAccess(msg.offset, msg.region, msg.count, out));
      }
      case Command.RegionWrite: {
        if (!this.regionOk(msg.region, msg.offset, msg.count, RegionFlag.Write) || !this.model.regionWrite(msg.region, msg.offset, msg.data)) {
          return fail(Errno.EINVAL);
        }
        return ok(encodeRegionAccess(msg.offset, msg.region, msg.count, null));
      }
      case Command.DeviceReset:
        effects.push({ kind: 'reset' });
        return ok();
      default:
        return fail('unsupported' in msg ? msg.unsupported : Errno.ENOSYS);
    }
  }

  /** The connection ends: every fd the session still owns is handed back (close after the engine let go of them). */
  close(): number[] {
    this.stateValue = 'closed';
    const fds = this.windows.splice(0).map((w) => w.fd);
    for (const list of this.irqFds.values()) fds.push(...list);
    this.irqFds.clear();
    return fds.filter((fd) => fd >= 0);
  }

  private regionOk(index: number, offset: number, count: number, need: number): boolean {
    if (index >= PciRegion.Count) return false;
    const r = this.model.region(index);
    return r !== null && (r.flags & need) !== 0 && offset <= r.sizeBytes && count <= r.sizeBytes - offset;
  }

  private setIrqs(
    msg: Extract<VfioUserMessage, { command: Command.DeviceSetIrqs }>,
    effects: SessionEffect[],
    ok: () => SessionResult,
    fail: (errno: number) => SessionResult,
  ): SessionResult {
    const irq = msg.index < PciIrq.Count ? this.model.irq(msg.index) : null;
    const data = msg.flags & IrqSetFlag.DataMask;
    const action = msg.flags & IrqSetFlag.ActionMaskBits;
    if (irq === null || msg.start + msg.count > irq.count) {
      closeFds(msg.fds);
      return fail(Errno.EINVAL);
    }
    const list = this.irqFds.get(msg.index) ?? new Array<number>(irq.count).fill(-1);
    this.irqFds.set(msg.index, list);
    if (action === IrqSetFlag.ActionTrigger) {
      const retired: number[] = [];
      if (data === IrqSetFlag.DataEventfd) {
        for (let i = 0; i < msg.count; i++) {
          const at = msg.start + i;
          if (list[at] >= 0) retired.push(list[at]);
          list[at] = msg.fds.length > 0 ? msg.fds[i] : -1;
        }
      } else if (data === IrqSetFlag.DataNone && msg.count === 0) {
        // "a count (and start) of 0, with DATA_NONE, disables all interrupts of the index"
        for (let i = 0; i < list.length; i++) {
          if (list[i] >= 0) retired.push(list[i]);
          list[i] = -1;
        }
      } else {
        effects.push({ kind: 'irqTrigger', index: msg.index, start: msg.start, count: msg.count });
        return ok();
      }
      effects.push({ kind: 'irqs', index: msg.index, fds: list.slice(), retired });
      return ok();
    }
    // MASK / UNMASK: only with DATA_NONE / DATA_BOOL (eventfd notification of masking is not offered).
    if (data === IrqSetFlag.DataEventfd) {
      closeFds(msg.fds);
      return fail(Errno.ENOTSUP);
    }
    if ((irq.flags & 2) /* MASKABLE */ === 0) return fail(Errno.EINVAL);
    effects.push({ kind: 'irqMask', index: msg.index, start: msg.start, count: msg.count, masked: action === IrqSetFlag.ActionMask });
    return ok();
  }
}

/**
 * Why a DMA window [offset, offset + size) of `fd` cannot be mapped, or null.
 * Checked at the message, as vhost-user regions are: a window past the end of
 * a regular file (memfd, shm, hugetlbfs) would SIGBUS when touched, and a
 * size far beyond any file made the engine build a mapping plan of millions
 * of windows before refusing it (the vfio-user fuzzer: +230 MB RSS for one
 * DMA_MAP of 2^52 bytes). Other fd types have no size to check here; the
 * mapping itself refuses what it cannot map.
 */
function windowBeyondFile(fd: number, offset: number, size: number): string | null {
  try {
    const { beyond } = inspectMappedFd(fd, offset, size);
    return beyond === null ? null : `the window ${beyond}`;
  } catch (err) {
    return `its fd cannot be inspected: ${(err as Error).message}`;
  }
}
