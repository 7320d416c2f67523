/**
 * The NVMe controller's PCI function as a vfio-user client sees it: config
 * space (NVMe class code 01/08/02, one 64-bit memory BAR0, capabilities PM →
 * MSI-X → PCI Express), BAR0 (registers at 0, the doorbell page at 0x1000,
 * MSI-X table at 0x2000 and PBA at 0x3000) and the IRQ types (INTx, MSI-X).
 * It implements the session's VfioUserDeviceModel (structurally: the engine
 * imports nothing from the reactor).
 *
 * BAR0 lives in one shared memory file (a memfd, Bar0.Size bytes): the
 * reactor maps it for register accesses that trap (REGION_READ/WRITE), the
 * VMM maps the doorbell page straight into the guest (the sparse-mmap area),
 * and the engine worker that owns the controller maps it to poll CC and the
 * doorbells and to publish CSTS. Register writes are applied here with their
 * rules (read-only bits kept, INTMS/INTMC folded into one mask); the
 * controller reacts to CC changes on its next poll.
 *
 * Pure logic over a byte array: no native calls, no engine state. The
 * reactor may import this file (like engine/virtio/spec.ts).
 * Thread: main (reactor) for the model; the layout constants are shared.
 */
import { Bar0, MAX_QUEUE_ENTRIES, NVME_VERSION, Reg } from './spec';

/**
 * PCI identity, stated once. No vendor id belongs to vhostd; these are the
 * ids SPDK's vfio-user NVMe controller presents (vendor 0x4e58), so a guest
 * sees what it would see under SPDK's nvmf VFIOUSER transport. Linux binds
 * its nvme driver by the class code, not by these.
 */
export const PCI_IDS = {
  vendorId: 0x4e58,
  deviceId: 0x0001,
  subsystemVendorId: 0x4e58,
  subsystemId: 0x0000,
  revision: 0x00,
} as const;

/** NVMe class code: base 01 (mass storage), sub 08 (NVM), prog-if 02 (NVM Express). */
export const PCI_CLASS = { base: 0x01, sub: 0x08, progIf: 0x02 } as const;

export const CONFIG_SPACE_BYTES = 256;
const CAP_PM = 0x40;
const CAP_MSIX = 0x50;
const CAP_PCIE = 0x60;

/** VFIO region / IRQ indices and flags this file needs (same values as reactor/vfio-user/messages.ts). */
const REGION_BAR0 = 0;
const REGION_CONFIG = 7;
const REGION_READ = 1;
const REGION_WRITE = 2;
const REGION_MMAP = 4;
const IRQ_INTX = 0;
const IRQ_MSIX = 2;
const IRQ_EVENTFD = 1;
const IRQ_MASKABLE = 2;
const IRQ_AUTOMASKED = 4;
const IRQ_NORESIZE = 8;

/** CAP (§3.1.3.1): MQES = 1023, CQR, TO = 20 × 500 ms, DSTRD 0, CSS = NVM, MPSMIN = MPSMAX = 4 KiB. */
export const CAP_LO = (MAX_QUEUE_ENTRIES - 1) | (1 << 16) | (20 << 24);
export const CAP_HI = 1 << (37 - 32);

/** Put CAP and VS into a fresh register page, everything else 0 (the state after a controller reset). */
export function initRegisters(bar: DataView): void {
  for (let i = 0; i < Bar0.DoorbellOffset; i += 4) bar.setUint32(i, 0, true);
  bar.setUint32(Reg.Cap, CAP_LO, true);
  bar.setUint32(Reg.Cap + 4, CAP_HI, true);
  bar.setUint32(Reg.Vs, NVME_VERSION, true);
}

/**
 * Apply a register write of `data` at `offset` of the register page, by the
 * rules of §3.1.3: CAP, VS, CSTS are read-only; INTMS sets and INTMC clears
 * bits of one mask (both read back the mask); CC, AQA, ASQ, ACQ are stored;
 * NSSR is ignored (NSSRS is 0). Only aligned 4-byte writes (8-byte for ASQ
 * and ACQ) are accepted. Returns false for any other access.
 */
export function writeRegister(bar: DataView, offset: number, data: Uint8Array): boolean {
  const size = data.byteLength;
  const v = new DataView(data.buffer, data.byteOffset, size);
  if (size === 8 && (offset === Reg.Asq || offset === Reg.Acq)) {
    bar.setUint32(offset, v.getUint32(0, true), true);
    bar.setUint32(offset + 4, v.getUint32(4, true), true);
    return true;
  }
  if (size !== 4 || (offset & 3) !== 0) return false;
  const value = v.getUint32(0, true);
  switch (offset) {
    case Reg.Intms:
    case Reg.Intmc: {
      const mask = bar.getUint32(Reg.Intms, true);
      const next = offset === Reg.Intms ? (mask | value) >>> 0 : (mask & ~value) >>> 0;
      bar.setUint32(Reg.Intms, next, true);
      bar.setUint32(Reg.Intmc, next, true);
      return true;
    }
    case Reg.Cc:
      // CC.SHN is 2 bits at 15:14; reserved bits 31:24 and 3:1 read as 0.
      bar.setUint32(Reg.Cc, value & 0x00fffff1, true);
      return true;
    case Reg.Aqa:
      bar.setUint32(Reg.Aqa, value & 0x0fff0fff, true);
      return true;
    case Reg.Asq:
    case Reg.Asq + 4:
    case Reg.Acq:
    case Reg.Acq + 4:
      bar.setUint32(offset, offset === Reg.Asq || offset === Reg.Acq ? value & ~0xfff : value, true);
      return true;
    case Reg.Nssr:
      return true;
    default:
      // Read-only and reserved registers: writes are ignored.
      return offset < 0x1000;
  }
}

export interface PciFunctionOptions {
  /** BAR0 (Bar0.Size bytes), mapped from `barFd`. */
  bar: Uint8Array;
  /** The shared memory file behind BAR0 (sent to the VMM for the doorbell page). */
  barFd: number;
  /** MSI-X vectors (1..256). */
  msixVectors: number;
}

/** The PCI function (config space + BAR0 access rules) of one vhostd NVMe controller. */
export class NvmePciFunction {
  readonly config = new Uint8Array(CONFIG_SPACE_BYTES);
  private readonly cfg: DataView;
  private readonly bar: Uint8Array;
  private readonly barView: DataView;
  private readonly barFd: number;
  readonly msixVectors: number;

  constructor(opts: PciFunctionOptions) {
    if (opts.bar.byteLength < Bar0.Size) throw new RangeError(`BAR0 needs ${Bar0.Size} bytes, got ${opts.bar.byteLength}`);
    if (!Number.isInteger(opts.msixVectors) || opts.msixVectors < 1 || opts.msixVectors > 256) {
      throw new RangeError(`msixVectors must be 1..256, got ${opts.msixVectors}`);
    }
    this.bar = opts.bar;
    this.barView = new DataView(opts.bar.buffer, opts.bar.byteOffset, Bar0.Size);
    this.barFd = opts.barFd;
    this.msixVectors = opts.msixVectors;
    this.cfg = new DataView(this.config.buffer);
    this.buildConfig();
    initRegisters(this.barView);
  }

  private buildConfig(): void {
    const c = this.cfg;
    c.setUint16(0x00, PCI_IDS.vendorId, true);
    c.setUint16(0x02, PCI_IDS.deviceId, true);
    c.setUint16(0x06, 0x0010, true); // status: capabilities list
    c.setUint8(0x08, PCI_IDS.revision);
    c.setUint8(0x09, PCI_CLASS.progIf);
    c.setUint8(0x0a, PCI_CLASS.sub);
    c.setUint8(0x0b, PCI_CLASS.base);
    c.setUint32(0x10, 0x4, true); // BAR0: memory, 64-bit, not prefetchable
    c.setUint16(0x2c, PCI_IDS.subsystemVendorId, true);
    c.setUint16(0x2e, PCI_IDS.subsystemId, true);
    c.setUint8(0x34, CAP_PM);
    c.setUint8(0x3d, 1); // interrupt pin INTA
    // Power management (PCI PM 1.2): version 3, D0 only.
    c.setUint8(CAP_PM, 0x01);
    c.setUint8(CAP_PM + 1, CAP_MSIX);
    c.setUint16(CAP_PM + 2, 0x0003, true);
    c.setUint16(CAP_PM + 4, 0x0008, true); // PMCSR: No_Soft_Reset
    // MSI-X: table size N-1, table and PBA in BAR0.
    c.setUint8(CAP_MSIX, 0x11);
    c.setUint8(CAP_MSIX + 1, CAP_PCIE);
    c.setUint16(CAP_MSIX + 2, this.msixVectors - 1, true);
    c.setUint32(CAP_MSIX + 4, Bar0.MsixTableOffset | 0, true);
    c.setUint32(CAP_MSIX + 8, Bar0.MsixPbaOffset | 0, true);
    // PCI Express capability v2, Root Complex Integrated Endpoint (type 9).
    c.setUint8(CAP_PCIE, 0x10);
    c.setUint8(CAP_PCIE + 1, 0x00);
    c.setUint16(CAP_PCIE + 2, 0x0002 | (9 << 4), true);
    c.setUint32(CAP_PCIE + 4, 0x0000_8000 | 0x1, true); // DevCap: role-based error reporting, MPS 256
    c.setUint16(CAP_PCIE + 8, 0x2810, true); // DevCtl: MRRS 512, MPS 128, relaxed ordering
  }

  // --- VfioUserDeviceModel -------------------------------------------------------

  region(index: number): { sizeBytes: number; flags: number; mmap?: { fd: number; offset: number; areas: { offset: number; size: number }[] } } | null {
    if (index === REGION_CONFIG) return { sizeBytes: CONFIG_SPACE_BYTES, flags: REGION_READ | REGION_WRITE };
    if (index === REGION_BAR0) {
      return {
        sizeBytes: Bar0.Size,
        flags: REGION_READ | REGION_WRITE | REGION_MMAP,
        mmap: { fd: this.barFd, offset: 0, areas: [{ offset: Bar0.DoorbellOffset, size: Bar0.DoorbellBytes }] },
      };
    }
    return null;
  }

  irq(index: number): { count: number; flags: number } | null {
    if (index === IRQ_INTX) return { count: 1, flags: IRQ_EVENTFD | IRQ_MASKABLE | IRQ_AUTOMASKED };
    if (index === IRQ_MSIX) return { count: this.msixVectors, flags: IRQ_EVENTFD | IRQ_NORESIZE };
    return null;
  }

  regionRead(index: number, offset: number, out: Uint8Array): boolean {
    const len = out.byteLength;
    if (index === REGION_CONFIG) {
      if (offset + len > CONFIG_SPACE_BYTES) return false;
      out.set(this.config.subarray(offset, offset + len));
      return true;
    }
    if (index === REGION_BAR0) {
      if (offset + len > Bar0.Size) return false;
      if (offset < Bar0.DoorbellOffset && offset + len > Bar0.DoorbellOffset) return false;
      if (offset >= Bar0.DoorbellOffset && offset < Bar0.MsixTableOffset) {
        // Doorbells are write-only; reads return 0 (§3.1.3.x).
        out.fill(0);
        return true;
      }
      // Registers are read as whole words by the same rule the worker writes them (4-byte aligned).
      out.set(this.bar.subarray(offset, offset + len));
      return true;
    }
    return false;
  }

  regionWrite(index: number, offset: number, data: Uint8Array): boolean {
    const len = data.byteLength;
    if (index === REGION_CONFIG) {
      if (offset + len > CONFIG_SPACE_BYTES) return false;
      for (let i = 0; i < len; i++) this.configWriteByte(offset + i, data[i]);
      return true;
    }
    if (index !== REGION_BAR0 || offset + len > Bar0.Size) return false;
    if (offset < Bar0.DoorbellOffset) return offset + len <= Bar0.DoorbellOffset && writeRegister(this.barView, offset, data);
    if (offset < Bar0.MsixTableOffset) {
      // A doorbell written through the socket instead of the mapping: same word, same effect.
      if (len !== 4 || (offset & 3) !== 0 || offset + len > Bar0.MsixTableOffset) return false;
      Atomics.store(new Uint32Array(this.bar.buffer, this.bar.byteOffset + offset, 1), 0, new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true));
      return true;
    }
    this.bar.set(data, offset);
    return true;
  }

  /** Config space writes, byte by byte: only the writable bits of writable registers change. */
  private configWriteByte(at: number, value: number): void {
    const c = this.config;
    const bar0Mask = ~(Bar0.Size - 1);
    if (at === 0x04) c[at] = value & 0x46; // memory space, bus master, parity error response
    else if (at === 0x05) c[at] = value & 0x05; // SERR#, INTx disable
    else if (at >= 0x10 && at <= 0x13) {
      // BAR0 low: writable address bits only; type bits stay (64-bit memory).
      const shift = (at - 0x10) * 8;
      const mask = ((bar0Mask >>> shift) & 0xff) & (at === 0x10 ? 0xf0 : 0xff);
      c[at] = (value & mask) | (at === 0x10 ? 0x4 : 0);
    } else if (at >= 0x14 && at <= 0x17) c[at] = value; // BAR0 high half
    else if (at === 0x3c) c[at] = value; // interrupt line
    else if (at === CAP_PM + 4) c[at] = (c[at] & ~0x3) | (value & 0x3 ? c[at] & 0x3 : 0); // only D0
    else if (at === CAP_MSIX + 3) c[at] = (c[at] & 0x3f) | (value & 0xc0); // MSI-X enable, function mask
    else if (at === CAP_PCIE + 8 || at === CAP_PCIE + 9) c[at] = value; // device control
    else if (at === CAP_PCIE + 0x10 || at === CAP_PCIE + 0x11) c[at] = value; // link control
    // Everything else is read-only.
  }

  /** MSI-X enabled by the guest (config space). */
  get msixEnabled(): boolean {
    return (this.config[CAP_MSIX + 3] & 0x80) !== 0;
  }

  /** A device reset: registers back to their reset values (config space keeps BAR and enables, as a function-level reset would not; QEMU re-writes them). */
  resetRegisters(): void {
    initRegisters(this.barView);
    this.bar.fill(0, Bar0.DoorbellOffset, Bar0.MsixTableOffset);
  }
}
