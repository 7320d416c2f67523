/**
 * vfio-user wire constants (QEMU docs/interop/vfio-user.rst) and the VFIO
 * ioctl constants it reuses (<linux/vfio.h>): command ids, header flags,
 * region / IRQ indices and flag bits. Constants only.
 */

/** Every message starts with this 16-byte header: u16 id, u16 command, u32 size (header included), u32 flags, u32 error. */
export const HEADER_SIZE = 16;

export const enum Command {
  Version = 1,
  DmaMap = 2,
  DmaUnmap = 3,
  DeviceGetInfo = 4,
  DeviceGetRegionInfo = 5,
  DeviceGetRegionIoFds = 6,
  DeviceGetIrqInfo = 7,
  DeviceSetIrqs = 8,
  RegionRead = 9,
  RegionWrite = 10,
  DmaRead = 11,
  DmaWrite = 12,
  DeviceReset = 13,
  DirtyPages = 14,
  RegionWriteMulti = 15,
  DeviceFeature = 16,
  MigDataRead = 17,
  MigDataWrite = 18,
}

const NAMES: Record<number, string> = {
  1: 'VERSION',
  2: 'DMA_MAP',
  3: 'DMA_UNMAP',
  4: 'DEVICE_GET_INFO',
  5: 'DEVICE_GET_REGION_INFO',
  6: 'DEVICE_GET_REGION_IO_FDS',
  7: 'DEVICE_GET_IRQ_INFO',
  8: 'DEVICE_SET_IRQS',
  9: 'REGION_READ',
  10: 'REGION_WRITE',
  11: 'DMA_READ',
  12: 'DMA_WRITE',
  13: 'DEVICE_RESET',
  14: 'DIRTY_PAGES',
  15: 'REGION_WRITE_MULTI',
  16: 'DEVICE_FEATURE',
  17: 'MIG_DATA_READ',
  18: 'MIG_DATA_WRITE',
};

export function commandName(command: number): string {
  return NAMES[command] ?? `command ${command}`;
}

/** Header flags: bits 0-3 type (0 command, 1 reply), bit 4 no reply, bit 5 error. */
export const enum HeaderFlag {
  TypeMask = 0xf,
  TypeCommand = 0x0,
  TypeReply = 0x1,
  NoReply = 0x10,
  Error = 0x20,
}

/** The protocol version vhostd speaks (what QEMU's client proposes: 0.0). */
export const VERSION_MAJOR = 0;
export const VERSION_MINOR = 0;

/** Most fds one message may carry (our max_msg_fds; the native recvmsg takes at most 8). */
export const MAX_FDS = 8;
/** Our max_data_xfer_size: the largest REGION_READ/WRITE count (the spec's default, 1 MiB). */
export const MAX_DATA_XFER = 1 << 20;
/** Largest message we accept, header included (a REGION_WRITE of MAX_DATA_XFER plus its 16-byte head, plus slack for VERSION's JSON). */
export const MAX_MESSAGE_SIZE = HEADER_SIZE + 16 + MAX_DATA_XFER;
/** Largest VERSION JSON we parse. */
export const MAX_VERSION_JSON = 4096;
/** DMA windows at once (our max_dma_maps). */
export const MAX_DMA_MAPS = 64;
/** Page sizes we map DMA windows at (pgsizes). */
export const DMA_PAGE_SIZES = 4096;

/** VFIO_DEVICE_FLAGS_* */
export const enum DeviceFlag {
  Reset = 1 << 0,
  Pci = 1 << 1,
}

/** VFIO_PCI_*_REGION_INDEX */
export const enum PciRegion {
  Bar0 = 0,
  Bar1 = 1,
  Bar2 = 2,
  Bar3 = 3,
  Bar4 = 4,
  Bar5 = 5,
  Rom = 6,
  Config = 7,
  Vga = 8,
  /** VFIO_PCI_NUM_REGIONS */
  Count = 9,
}

/** VFIO_PCI_*_IRQ_INDEX */
export const enum PciIrq {
  Intx = 0,
  Msi = 1,
  Msix = 2,
  Err = 3,
  Req = 4,
  /** VFIO_PCI_NUM_IRQS */
  Count = 5,
}

/** VFIO_REGION_INFO_FLAG_* */
export const enum RegionFlag {
  Read = 1 << 0,
  Write = 1 << 1,
  Mmap = 1 << 2,
  Caps = 1 << 3,
}

/** VFIO_REGION_INFO_CAP_SPARSE_MMAP and its version. */
export const CAP_SPARSE_MMAP = 1;
export const CAP_SPARSE_MMAP_VERSION = 1;

/** VFIO_IRQ_INFO_* */
export const enum IrqInfoFlag {
  Eventfd = 1 << 0,
  Maskable = 1 << 1,
  Automasked = 1 << 2,
  NoResize = 1 << 3,
}

/** VFIO_IRQ_SET_* */
export const enum IrqSetFlag {
  DataNone = 1 << 0,
  DataBool = 1 << 1,
  DataEventfd = 1 << 2,
  ActionMask = 1 << 3,
  ActionUnmask = 1 << 4,
  ActionTrigger = 1 << 5,
  DataMask = 0x7,
  ActionMaskBits = 0x38,
}

/** VFIO_DMA_MAP_FLAG_* */
export const enum DmaMapFlag {
  Read = 1 << 0,
  Write = 1 << 1,
}

/** VFIO_DMA_UNMAP_FLAG_* (GET_DIRTY_BITMAP is bit 0: we offer no migration, so a client never sends it). */
export const enum DmaUnmapFlag {
  GetDirtyBitmap = 1 << 0,
  All = 1 << 1,
}

/** errno values used in error replies. */
export const enum Errno {
  EPERM = 1,
  ENOENT = 2,
  EBADF = 9,
  EBUSY = 16,
  EEXIST = 17,
  EINVAL = 22,
  ENOSPC = 28,
  ERANGE = 34,
  ENOSYS = 38,
  ENOTSUP = 95,
}
