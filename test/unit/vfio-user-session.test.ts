/**
 * The vfio-user session (reactor/vfio-user/session.ts) with a recording
 * device model, and with the NVMe PCI function (engine/nvme/pci.ts) as the
 * model: version negotiation, DMA table effects and fd retirement, region
 * and IRQ info, SET_IRQS effects, region access, reset, state rules.
 */
import t from 'tap';
import fs from 'node:fs';
import { native } from '../../bindings';
import {
  decodeHeader,
  decodeMessage,
  encodeCommand,
  encodeDmaMap,
  encodeDmaUnmap,
  encodeInfoRequest,
  encodeSetIrqs,
  encodeVersion,
  ProtocolError,
} from '../../reactor/vfio-user/codec';
import { Command, HEADER_SIZE } from '../../reactor/vfio-user/messages';
import { type RegionDescription, type SessionResult, type VfioUserDeviceModel, VfioUserSession } from '../../reactor/vfio-user/session';
import { NvmePciFunction, PCI_IDS } from '../../engine/nvme/pci';
import { setRequireSealedMemory } from '../../reactor/vhost-user/memory-policy';
import { Bar0, Reg } from '../../engine/nvme/spec';

class RecordingModel implements VfioUserDeviceModel {
  readonly log: string[] = [];
  readonly mem = new Uint8Array(256);
  region(index: number): RegionDescription | null {
    if (index === 7) return { sizeBytes: 256, flags: 3 };
    if (index === 0) return { sizeBytes: 0x4000, flags: 7, mmap: { fd: 42, offset: 0, areas: [{ offset: 0x1000, size: 0x1000 }] } };
    return null;
  }
  irq(index: number): { count: number; flags: number } | null {
    if (index === 2) return { count: 4, flags: 9 };
    if (index === 0) return { count: 1, flags: 7 };
    return null;
  }
  regionRead(index: number, offset: number, out: Uint8Array): boolean {
    this.log.push(`read ${index} ${offset} ${out.length}`);
    out.set(this.mem.subarray(offset, offset + out.length));
    return true;
  }
  regionWrite(index: number, offset: number, data: Uint8Array): boolean {
    this.log.push(`write ${index} ${offset} ${Array.from(data).join(',')}`);
    if (index !== 7) return false;
    this.mem.set(data, offset);
    return true;
  }
}

let nextId = 1;
function send(s: VfioUserSession, command: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], flags = 0): SessionResult {
  const bytes = encodeCommand(nextId++, command, payload, flags);
  return s.handle(decodeMessage(decodeHeader(bytes), bytes.subarray(HEADER_SIZE), fds));
}

function replyOf(r: SessionResult): { flags: number; error: number; payload: DataView } {
  const b = r.reply as Uint8Array;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { flags: v.getUint32(8, true), error: v.getUint32(12, true), payload: new DataView(b.buffer, b.byteOffset + HEADER_SIZE, b.byteLength - HEADER_SIZE) };
}

function ready(model: VfioUserDeviceModel = new RecordingModel()): VfioUserSession {
  const s = new VfioUserSession(model);
  send(s, Command.Version, encodeVersion(0, 0, '{"capabilities":{"max_msg_fds":16}}'));
  return s;
}

t.test('VERSION first, once; the reply carries our capabilities', async (t) => {
  const s = new VfioUserSession(new RecordingModel());
  t.throws(() => send(s, Command.DeviceGetInfo, encodeInfoRequest(16, 16, 0)), ProtocolError, 'a command before VERSION');
  const r = send(s, Command.Version, encodeVersion(0, 0, '{"capabilities":{"max_msg_fds":16,"migration":{"pgsize":4096}}}'));
  const { payload } = replyOf(r);
  t.equal(payload.getUint16(0, true), 0, 'major');
  t.equal(payload.getUint16(2, true), 0, 'minor');
  const json = Buffer.from(payload.buffer, payload.byteOffset + 4, payload.byteLength - 5).toString();
  t.same(JSON.parse(json), { capabilities: { max_msg_fds: 8, max_data_xfer_size: 1048576, max_dma_maps: 64, pgsizes: 4096 } }, 'no migration capability');
  t.equal(payload.getUint8(payload.byteLength - 1), 0, 'NUL-terminated');
  t.equal(s.clientMaxFds, 16);
  t.equal(s.state, 'ready');
  t.throws(() => send(s, Command.Version, encodeVersion(0, 0, '')), /twice/);
  const s2 = new VfioUserSession(new RecordingModel());
  t.throws(() => send(s2, Command.Version, encodeVersion(1, 0, '')), /major 1/);
});

t.test('DMA_MAP / DMA_UNMAP: the table, overlap refusal, retired fds', async (t) => {
  const s = ready();
  const a = native.eventfd(0, 0);
  const b = native.eventfd(0, 0);
  let r = send(s, Command.DmaMap, encodeDmaMap(3, 0, 0x100000, 0x100000), [a]);
  t.same(r.effects, [{ kind: 'memory', windows: [{ address: 0x100000, sizeBytes: 0x100000, fd: a, offset: 0, flags: 3 }], retired: [] }]);
  r = send(s, Command.DmaMap, encodeDmaMap(3, 0x1000, 0, 0x80000), [b]);
  t.same(
    s.dmaWindows.map((w) => w.address),
    [0, 0x100000],
    'sorted by address',
  );
  const c = native.eventfd(0, 0);
  r = send(s, Command.DmaMap, encodeDmaMap(3, 0, 0x180000, 0x1000), [c]);
  t.equal(replyOf(r).flags, 0x21, 'error reply');
  t.equal(replyOf(r).error, 17, 'EEXIST for an overlap');
  t.same(r.effects, []);
  r = send(s, Command.DmaUnmap, encodeDmaUnmap(24, 0, 0x100000, 0x1000));
  t.equal(replyOf(r).error, 2, 'ENOENT: must match a mapping exactly');
  r = send(s, Command.DmaUnmap, encodeDmaUnmap(24, 0, 0x100000, 0x100000));
  t.same(r.effects, [{ kind: 'memory', windows: [{ address: 0, sizeBytes: 0x80000, fd: b, offset: 0x1000, flags: 3 }], retired: [a] }]);
  t.equal(replyOf(r).payload.byteLength, 24, 'the reply echoes the entry');
  r = send(s, Command.DmaUnmap, encodeDmaUnmap(24, 2, 0, 0));
  t.same(r.effects, [{ kind: 'memory', windows: [], retired: [b] }], 'UNMAP_ALL');
  native.close(a);
  native.close(b);
});

t.test('device, region and IRQ info', async (t) => {
  const s = ready();
  let p = replyOf(send(s, Command.DeviceGetInfo, encodeInfoRequest(16, 16, 0))).payload;
  t.same([p.getUint32(4, true), p.getUint32(8, true), p.getUint32(12, true)], [3, 9, 5], 'reset|pci, 9 regions, 5 IRQ types');
  const r = send(s, Command.DeviceGetRegionInfo, encodeInfoRequest(32, 256, 0));
  t.same(r.fds, [42], 'BAR0 sends its memfd');
  p = replyOf(r).payload;
  t.equal(p.getUint32(4, true), 0xf, 'R|W|MMAP|CAPS');
  t.equal(p.getUint32(0, true), 64);
  t.equal(p.getUint32(40, true), 1, 'one sparse area');
  p = replyOf(send(s, Command.DeviceGetRegionInfo, encodeInfoRequest(32, 32, 7))).payload;
  t.same([p.getUint32(4, true), p.getUint32(16, true)], [3, 256], 'config space: R|W, 256 bytes');
  p = replyOf(send(s, Command.DeviceGetRegionInfo, encodeInfoRequest(32, 32, 4))).payload;
  t.equal(p.getUint32(16, true), 0, 'absent BAR4: size 0');
  t.equal(replyOf(send(s, Command.DeviceGetRegionInfo, encodeInfoRequest(32, 32, 9))).error, 22, 'index past the regions');
  p = replyOf(send(s, Command.DeviceGetIrqInfo, encodeInfoRequest(16, 16, 2))).payload;
  t.same([p.getUint32(4, true), p.getUint32(12, true)], [9, 4], 'MSI-X: eventfd|noresize, 4 vectors');
  p = replyOf(send(s, Command.DeviceGetIrqInfo, encodeInfoRequest(16, 16, 1))).payload;
  t.equal(p.getUint32(12, true), 0, 'no MSI');
});

t.test('SET_IRQS: eventfds per vector, replacement retires the old fd, disable all', async (t) => {
  const s = ready();
  const e = [native.eventfd(0, 0), native.eventfd(0, 0), native.eventfd(0, 0)];
  let r = send(s, Command.DeviceSetIrqs, encodeSetIrqs(0x24, 2, 0, 2), [e[0], e[1]]);
  t.same(r.effects, [{ kind: 'irqs', index: 2, fds: [e[0], e[1], -1, -1], retired: [] }]);
  r = send(s, Command.DeviceSetIrqs, encodeSetIrqs(0x24, 2, 1, 1), [e[2]]);
  t.same(r.effects, [{ kind: 'irqs', index: 2, fds: [e[0], e[2], -1, -1], retired: [e[1]] }]);
  r = send(s, Command.DeviceSetIrqs, encodeSetIrqs(0x24, 2, 0, 1));
  t.same(r.effects, [{ kind: 'irqs', index: 2, fds: [-1, e[2], -1, -1], retired: [e[0]] }], 'no fds: de-assign');
  r = send(s, Command.DeviceSetIrqs, encodeSetIrqs(0x21, 2, 0, 0));
  t.same(r.effects, [{ kind: 'irqs', index: 2, fds: [-1, -1, -1, -1], retired: [e[2]] }], 'DATA_NONE count 0: all off');
  const x = native.eventfd(0, 0);
  r = send(s, Command.DeviceSetIrqs, encodeSetIrqs(0x24, 2, 3, 2), [x, native.eventfd(0, 0)].slice(0, 2));
  t.equal(replyOf(r).error, 22, 'beyond the vector count');
  r = send(s, Command.DeviceSetIrqs, encodeSetIrqs(0x09, 0, 0, 1));
  t.same(r.effects, [{ kind: 'irqMask', index: 0, start: 0, count: 1, masked: true }], 'INTx mask');
  t.equal(replyOf(send(s, Command.DeviceSetIrqs, encodeSetIrqs(0x09, 2, 0, 1))).error, 22, 'MSI-X is not maskable here');
  for (const fd of e) native.close(fd);
});

t.test('region access goes to the model; out-of-range access is an error reply; NO_REPLY; reset; close', async (t) => {
  const m = new RecordingModel();
  const s = ready(m);
  const w = new Uint8Array(16 + 2);
  new DataView(w.buffer).setUint32(8, 7, true);
  new DataView(w.buffer).setUint32(12, 2, true);
  w.set([0xab, 0xcd], 16);
  new DataView(w.buffer).setUint32(0, 4, true);
  let r = send(s, Command.RegionWrite, w);
  t.equal(replyOf(r).payload.byteLength, 16);
  const rd = new Uint8Array(16);
  new DataView(rd.buffer).setUint32(0, 4, true);
  new DataView(rd.buffer).setUint32(8, 7, true);
  new DataView(rd.buffer).setUint32(12, 2, true);
  r = send(s, Command.RegionRead, rd);
  const p = replyOf(r).payload;
  t.same([p.getUint8(16), p.getUint8(17)], [0xab, 0xcd]);
  t.same(m.log, ['write 7 4 171,205', 'read 7 4 2']);
  new DataView(rd.buffer).setUint32(0, 255, true);
  t.equal(replyOf(send(s, Command.RegionRead, rd)).error, 22, 'a read past the region end');
  t.same(m.log.length, 2, 'the model never saw it');
  r = send(s, Command.RegionWrite, w, [], 0x10);
  t.equal(r.reply, null, 'NO_REPLY');
  r = send(s, Command.DeviceReset);
  t.same(r.effects, [{ kind: 'reset' }]);
  t.equal(replyOf(send(s, Command.DeviceFeature, new Uint8Array(8))).error, 95, 'DEVICE_FEATURE: ENOTSUP');
  const fd = native.eventfd(0, 0);
  send(s, Command.DmaMap, encodeDmaMap(3, 0, 0, 4096), [fd]);
  t.same(s.close(), [fd], 'close hands back every fd');
  native.close(fd);
  t.throws(() => send(s, Command.DeviceReset), /after the session closed/);
});

t.test('the NVMe PCI function as the model: config space, BAR0 registers, doorbells', async (t) => {
  const bar = new Uint8Array(Bar0.Size);
  const pci = new NvmePciFunction({ bar, barFd: 99, msixVectors: 8 });
  const s = ready(pci);
  const read = (region: number, offset: number, count: number): DataView => {
    const rd = new Uint8Array(16);
    const v = new DataView(rd.buffer);
    v.setUint32(0, offset, true);
    v.setUint32(8, region, true);
    v.setUint32(12, count, true);
    const p = replyOf(send(s, Command.RegionRead, rd)).payload;
    return new DataView(p.buffer, p.byteOffset + 16, count);
  };
  const write = (region: number, offset: number, bytes: number[]): number => {
    const w = new Uint8Array(16 + bytes.length);
    const v = new DataView(w.buffer);
    v.setUint32(0, offset, true);
    v.setUint32(8, region, true);
    v.setUint32(12, bytes.length, true);
    w.set(bytes, 16);
    return replyOf(send(s, Command.RegionWrite, w)).error;
  };
  let c = read(7, 0, 64);
  t.equal(c.getUint16(0, true), PCI_IDS.vendorId);
  t.equal(c.getUint16(2, true), PCI_IDS.deviceId);
  t.same([c.getUint8(0x0b), c.getUint8(0x0a), c.getUint8(0x09)], [1, 8, 2], 'class code 01/08/02');
  t.equal(c.getUint32(0x10, true), 4, 'BAR0: 64-bit memory');
  t.equal(c.getUint16(0x06, true) & 0x10, 0x10, 'capability list');
  // Walk the capability list: PM, MSI-X, PCIe.
  const caps: number[] = [];
  for (let at = c.getUint8(0x34); at !== 0; ) {
    const cap = read(7, at, 4);
    caps.push(cap.getUint8(0));
    if (cap.getUint8(0) === 0x11) t.equal(read(7, at + 2, 2).getUint16(0, true), 7, 'MSI-X table size 8');
    at = cap.getUint8(1);
  }
  t.same(caps, [0x01, 0x11, 0x10], 'PM → MSI-X → PCIe');
  // BAR sizing: write all ones, read back the size mask.
  t.equal(write(7, 0x10, [0xff, 0xff, 0xff, 0xff]), 0);
  t.equal(read(7, 0x10, 4).getUint32(0, true), (~(Bar0.Size - 1) | 4) >>> 0, 'BAR0 size mask');
  t.equal(write(7, 0x00, [0, 0]), 0, 'vendor id is read-only');
  c = read(7, 0, 4);
  t.equal(c.getUint16(0, true), PCI_IDS.vendorId);
  // Registers.
  t.equal(read(0, Reg.Vs, 4).getUint32(0, true), 0x00010400);
  t.equal(write(0, Reg.Cc, [0x01, 0x00, 0x46, 0x00]), 0);
  t.equal(new DataView(bar.buffer).getUint32(Reg.Cc, true), 0x00460001, 'CC lands in the shared page');
  t.equal(write(0, Reg.Vs, [0, 0, 0, 0]), 0, 'a write to VS is ignored');
  t.equal(read(0, Reg.Vs, 4).getUint32(0, true), 0x00010400);
  t.equal(write(0, Reg.Intms, [0x3, 0, 0, 0]), 0);
  t.equal(write(0, Reg.Intmc, [0x1, 0, 0, 0]), 0);
  t.equal(read(0, Reg.Intms, 4).getUint32(0, true), 2, 'INTMS/INTMC fold into one mask');
  t.equal(write(0, Reg.Cc + 1, [0x01]), 22, 'an unaligned register write is refused');
  t.equal(write(0, Bar0.DoorbellOffset + 8, [5, 0, 0, 0]), 0, 'a doorbell through the socket');
  t.equal(new DataView(bar.buffer).getUint32(Bar0.DoorbellOffset + 8, true), 5);
  t.equal(read(0, Bar0.DoorbellOffset + 8, 4).getUint32(0, true), 0, 'doorbells read as 0');
});

t.test('DMA_MAP of a window beyond the end of its file: EINVAL at the message, with the reason', async (t) => {
  // The vfio-user fuzzer: a 4 MiB memfd mapped with a size of 2^52 + 1 was accepted here and made the
  // engine plan millions of mapping windows (+230 MB RSS) before refusing it.
  const s = ready();
  const fd = native.memfdCreate('dma-short', 0);
  native.ftruncate(fd, 4 << 20);
  const keep = native.dup(fd);
  let r = send(s, Command.DmaMap, encodeDmaMap(3, 0, 0xffffffff, 2 ** 52 + 1), [fd]);
  t.equal(replyOf(r).flags, 0x21, 'error reply');
  t.equal(replyOf(r).error, 22, 'EINVAL');
  t.same(r.effects, [], 'no memory change');
  t.match(r.refused, /DMA_MAP at 0xffffffff: the window needs bytes up to 4503599627370497 of its fd, which has 4194304/, 'the reason, for the log');
  t.same(s.dmaWindows, [], 'nothing recorded');
  const fd2 = native.dup(keep);
  r = send(s, Command.DmaMap, encodeDmaMap(3, 0x1000, 0x100000, 4 << 20), [fd2]);
  t.equal(replyOf(r).error, 22, 'offset + size past the end by one page: EINVAL');
  const fd3 = native.dup(keep);
  r = send(s, Command.DmaMap, encodeDmaMap(3, 0x1000, 0x100000, (4 << 20) - 0x1000), [fd3]);
  t.equal(replyOf(r).flags, 0x1, 'a window that fits is mapped');
  t.equal(r.refused, undefined);
  t.same(s.dmaWindows.map((w) => [w.address, w.sizeBytes]), [[0x100000, (4 << 20) - 0x1000]]);
  native.close(keep);
  for (const f of s.close()) native.close(f);
});

t.test('--require-sealed-memory covers DMA_MAP: an fd that can shrink is refused (EPERM, with the reason); a sealed memfd and a window without an fd are mapped', async (t) => {
  // Before: only vhost-user memory tables asked for seals; an unsealed DMA window was mapped, and a
  // client shrinking its memfd under the engine could SIGBUS it.
  setRequireSealedMemory(true);
  t.teardown(() => setRequireSealedMemory(false));
  const s = ready();
  const plain = native.memfdCreate('dma-unsealed', 0);
  native.ftruncate(plain, 1 << 20);
  let r = send(s, Command.DmaMap, encodeDmaMap(3, 0, 0x100000, 1 << 20), [plain]);
  t.equal(replyOf(r).flags, 0x21, 'error reply');
  t.equal(replyOf(r).error, 1, 'EPERM');
  t.same(r.effects, [], 'no memory change');
  t.match(r.refused, /DMA_MAP at 0x100000: its fd is not sealed against shrinking \(F_SEAL_SHRINK\), and --require-sealed-memory is set/);
  t.throws(() => native.fdGetSeals(plain), 'the refused fd was closed by the session');
  const devnull = fs.openSync('/dev/null', 'r+');
  r = send(s, Command.DmaMap, encodeDmaMap(3, 0, 0x100000, 1 << 20), [devnull]);
  t.equal(replyOf(r).error, 1, 'a file that cannot carry seals: EPERM');
  t.match(r.refused, /cannot carry seals/);
  const growOnly = native.memfdCreate('dma-grow-sealed', 2);
  native.ftruncate(growOnly, 1 << 20);
  native.fdAddSeals(growOnly, 4); // F_SEAL_GROW only: it can still shrink
  r = send(s, Command.DmaMap, encodeDmaMap(3, 0, 0x100000, 1 << 20), [growOnly]);
  t.equal(replyOf(r).error, 1, 'sealed against growing but not shrinking: EPERM');
  t.same(s.dmaWindows, [], 'nothing recorded');

  const sealed = native.memfdCreate('dma-sealed', 2);
  native.ftruncate(sealed, 1 << 20);
  native.fdAddSeals(sealed, 1 | 2 | 4);
  r = send(s, Command.DmaMap, encodeDmaMap(3, 0, 0x100000, 1 << 20), [sealed]);
  t.equal(replyOf(r).flags, 0x1, 'a memfd sealed against shrinking is mapped');
  t.equal(r.refused, undefined);
  r = send(s, Command.DmaMap, encodeDmaMap(3, 0, 0x200000, 0x1000), []);
  t.equal(replyOf(r).flags, 0x1, 'a window without an fd (never mapped by vhostd) is accepted');
  t.same(s.dmaWindows.map((w) => w.address), [0x100000, 0x200000]);
  for (const f of s.close()) native.close(f);
});
