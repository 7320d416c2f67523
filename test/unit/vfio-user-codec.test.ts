/**
 * The vfio-user codec (reactor/vfio-user/codec.ts): byte fixtures for
 * headers and each command, the rule table's refusals (sizes, fds, flags),
 * fd ownership on failure, and the reply encoders' layouts.
 */
import t from 'tap';
import { native } from '../../bindings';
import {
  decodeHeader,
  decodeMessage,
  encodeCommand,
  encodeDmaMap,
  encodeErrorReply,
  encodeRegionInfo,
  encodeSetIrqs,
  encodeVersion,
  ProtocolError,
  type VfioUserMessage,
} from '../../reactor/vfio-user/codec';
import { Command, HEADER_SIZE } from '../../reactor/vfio-user/messages';

function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}

function decode(bytes: Uint8Array, fds: number[] = []): VfioUserMessage {
  const h = decodeHeader(bytes.subarray(0, HEADER_SIZE));
  return decodeMessage(h, bytes.subarray(HEADER_SIZE), fds);
}

function isClosed(fd: number): boolean {
  try {
    native.fstat(fd);
    return false;
  } catch (err) {
    return (err as { code?: string }).code === 'EBADF';
  }
}

t.test('header fixture: id, command, size, flags', async (t) => {
  // id 0x0102, DEVICE_RESET (13), size 16, flags NO_REPLY (0x10), error 0
  const h = decodeHeader(hex('0201 0d00 10000000 10000000 00000000'));
  t.same(h, { id: 0x0102, command: 13, size: 16, flags: 0x10, error: 0 });
  const m = decode(hex('0201 0d00 10000000 10000000 00000000'));
  t.same(m, { id: 0x0102, noReply: true, command: Command.DeviceReset });
});

t.test('headers that are refused', async (t) => {
  t.throws(() => decodeHeader(hex('0100 0100 10000000 01000000 00000000')), ProtocolError, 'a reply where a command belongs');
  t.throws(() => decodeHeader(hex('0100 0100 10000000 20000000 00000000')), /reply-only header flags/, 'error flag on a command');
  t.throws(() => decodeHeader(hex('0100 0100 10000000 40000000 00000000')), /unknown/, 'unknown flag');
  t.throws(() => decodeHeader(hex('0100 0100 0f000000 00000000 00000000')), /message size 15/, 'size below the header');
  t.throws(() => decodeHeader(hex('0100 0100 00000010 00000000 00000000')), /outside/, 'size too large');
  t.throws(() => decodeHeader(new Uint8Array(8)), /header of 8 bytes/);
});

t.test('VERSION: JSON capabilities, defaults and malformed data', async (t) => {
  const json = '{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"migration":{"pgsize":4096}}}';
  const m = decode(encodeCommand(7, Command.Version, encodeVersion(0, 0, json)));
  t.same(m, { id: 7, noReply: false, command: Command.Version, major: 0, minor: 0, caps: { maxMsgFds: 16, maxDataXferSize: 1048576 } });
  const bare = decode(encodeCommand(1, Command.Version, hex('0000 0000')));
  t.same((bare as { caps: unknown }).caps, { maxMsgFds: 1, maxDataXferSize: 1048576 }, 'spec defaults without JSON');
  t.throws(() => decode(encodeCommand(1, Command.Version, encodeVersion(0, 0, '{nope'))), /not JSON/);
  t.throws(() => decode(encodeCommand(1, Command.Version, encodeVersion(0, 0, '[1]'))), /not a JSON object/);
  t.throws(() => decode(encodeCommand(1, Command.Version, encodeVersion(0, 0, '{"capabilities":{"max_msg_fds":-1}}'))), /max_msg_fds/);
  const noNul = encodeCommand(1, Command.Version, Uint8Array.from([0, 0, 0, 0, 0x7b, 0x7d]));
  t.throws(() => decode(noNul), /NUL-terminated/);
  t.throws(() => decode(encodeCommand(1, Command.Version, hex('0000'))), /payload of 2 bytes outside 4/);
});

t.test('DMA_MAP fixture with its fd; refusals close the fd', async (t) => {
  // argsz 32, flags RW, offset 0x1000, address 0x100000, size 0x200000
  const payload = hex('20000000 03000000 0010000000000000 0000100000000000 0000200000000000');
  t.same(payload, encodeDmaMap(3, 0x1000, 0x100000, 0x200000), 'encoder matches the fixture');
  const fd = native.eventfd(0, 0);
  const m = decode(encodeCommand(2, Command.DmaMap, payload), [fd]);
  t.same(m, { id: 2, noReply: false, command: Command.DmaMap, flags: 3, offset: 0x1000, address: 0x100000, size: 0x200000, fd });
  native.close(fd);

  const bad: [Uint8Array, RegExp][] = [
    [encodeDmaMap(3, 0, 0x1000, 0), /size 0/],
    [encodeDmaMap(8, 0, 0x1000, 0x1000), /unknown flags/],
    [hex('18000000 03000000 0000000000000000 0000100000000000 0000200000000000'), /argsz 24/],
    [encodeDmaMap(3, 0, 2 ** 53 - 4096, 8192), /beyond 2\^53/],
  ];
  for (const [p, re] of bad) {
    const fd2 = native.eventfd(0, 0);
    t.throws(() => decode(encodeCommand(2, Command.DmaMap, p), [fd2]), re);
    t.ok(isClosed(fd2), `fd closed after ${re}`);
  }
  const two = [native.eventfd(0, 0), native.eventfd(0, 0)];
  t.throws(() => decode(encodeCommand(2, Command.DmaMap, payload), two), /2 fds, at most 1/);
  t.ok(two.every(isClosed), 'both fds closed');
  const noFd = decode(encodeCommand(2, Command.DmaMap, encodeDmaMap(1, 0, 0xc0000, 0x20000)));
  t.equal((noFd as { fd: number }).fd, -1, 'a window without an fd');
  t.throws(() => decode(encodeCommand(2, Command.DmaMap, encodeDmaMap(1, 4096, 0xc0000, 0x20000))), /without an fd must have offset 0/);
});

t.test('DMA_UNMAP, info requests, region access', async (t) => {
  const unmap = decode(encodeCommand(3, Command.DmaUnmap, hex('18000000 00000000 0000100000000000 0000200000000000')));
  t.same(unmap, { id: 3, noReply: false, command: Command.DmaUnmap, argsz: 24, flags: 0, address: 0x100000, size: 0x200000 });
  t.throws(() => decode(encodeCommand(3, Command.DmaUnmap, hex('18000000 01000000 0000100000000000 0000200000000000'))), /dirty bitmap/);
  t.throws(() => decode(encodeCommand(3, Command.DmaUnmap, hex('18000000 02000000 0000100000000000 0000200000000000'))), /UNMAP_ALL with an address/);
  t.same(decode(encodeCommand(4, Command.DeviceGetInfo, hex('10000000 00000000 00000000 00000000'))), { id: 4, noReply: false, command: Command.DeviceGetInfo, argsz: 16 });
  t.throws(() => decode(encodeCommand(4, Command.DeviceGetInfo, hex('08000000 00000000 00000000 00000000'))), /argsz 8 below 16/);
  t.same(decode(encodeCommand(5, Command.DeviceGetRegionInfo, hex('00010000 00000000 07000000 00000000 0000000000000000 0000000000000000'))), {
    id: 5,
    noReply: false,
    command: Command.DeviceGetRegionInfo,
    argsz: 256,
    index: 7,
  });
  t.same(decode(encodeCommand(9, Command.RegionRead, hex('0400000000000000 07000000 04000000'))), { id: 9, noReply: false, command: Command.RegionRead, offset: 4, region: 7, count: 4 });
  t.throws(() => decode(encodeCommand(9, Command.RegionRead, hex('0400000000000000 07000000 00000000'))), /count 0/);
  const w = decode(encodeCommand(10, Command.RegionWrite, hex('1400000000000000 00000000 04000000 01004600')));
  t.same({ ...w, data: Array.from((w as { data: Uint8Array }).data) }, { id: 10, noReply: false, command: Command.RegionWrite, offset: 0x14, region: 0, count: 4, data: [1, 0, 0x46, 0] });
  t.throws(() => decode(encodeCommand(10, Command.RegionWrite, hex('1400000000000000 00000000 08000000 01004600'))), /count 8 with 4 data bytes/);
  t.throws(() => decode(encodeCommand(13, Command.DeviceReset, hex('00000000'))), /must be 0/);
});

t.test('SET_IRQS: data/action flags, bools, eventfd counts', async (t) => {
  const fds = [native.eventfd(0, 0), native.eventfd(0, 0)];
  const m = decode(encodeCommand(8, Command.DeviceSetIrqs, encodeSetIrqs(0x24, 2, 0, 2)), fds.slice());
  t.same({ ...m }, { id: 8, noReply: false, command: Command.DeviceSetIrqs, flags: 0x24, index: 2, start: 0, count: 2, bools: null, fds });
  for (const fd of fds) native.close(fd);
  const one = [native.eventfd(0, 0)];
  t.throws(() => decode(encodeCommand(8, Command.DeviceSetIrqs, encodeSetIrqs(0x24, 2, 0, 2)), one), /1 eventfds for 2/);
  t.ok(isClosed(one[0]));
  t.throws(() => decode(encodeCommand(8, Command.DeviceSetIrqs, encodeSetIrqs(0x26, 2, 0, 1))), /exactly one DATA/);
  t.throws(() => decode(encodeCommand(8, Command.DeviceSetIrqs, encodeSetIrqs(0x19, 2, 0, 1))), /exactly one ACTION/);
  t.throws(() => decode(encodeCommand(8, Command.DeviceSetIrqs, encodeSetIrqs(0x22, 0, 0, 2, Uint8Array.of(1)))), /DATA_BOOL with 1 bytes for 2/);
  const b = decode(encodeCommand(8, Command.DeviceSetIrqs, encodeSetIrqs(0x0a, 0, 0, 1, Uint8Array.of(1))));
  t.same(Array.from((b as { bools: Uint8Array }).bools), [1]);
  const p = encodeSetIrqs(0x21, 2, 0, 0);
  new DataView(p.buffer).setUint32(0, 99, true);
  t.throws(() => decode(encodeCommand(8, Command.DeviceSetIrqs, p)), /argsz 99/);
  const stray = [native.eventfd(0, 0)];
  t.throws(() => decode(encodeCommand(8, Command.DeviceSetIrqs, encodeSetIrqs(0x21, 2, 0, 0)), stray), /fds without DATA_EVENTFD/);
  t.ok(isClosed(stray[0]));
});

t.test('commands a client may not send, and well-formed ones vhostd does not implement', async (t) => {
  t.throws(() => decode(encodeCommand(1, Command.DmaRead, new Uint8Array(16))), /not a command a client may send/);
  t.throws(() => decode(encodeCommand(1, 99, new Uint8Array(0))), /command 99/);
  const f = decode(encodeCommand(1, Command.DeviceFeature, hex('10000000 01000300')));
  t.same(f, { id: 1, noReply: false, command: Command.DeviceFeature, unsupported: 95 });
  t.throws(() => decode(encodeCommand(1, Command.DeviceFeature, hex('1000'))), /payload of 2 bytes/);
  // The header's size must match the payload handed over.
  const msg = encodeCommand(4, Command.DeviceGetInfo, new Uint8Array(16));
  t.throws(() => decodeMessage(decodeHeader(msg), msg.subarray(HEADER_SIZE, 24), []), /header says 16/);
});

t.test('reply encoders: error reply, region info with a sparse-mmap capability', async (t) => {
  t.same(encodeErrorReply(5, 3, 2), hex('0500 0300 10000000 21000000 02000000'));
  const info = encodeRegionInfo(256, 0, 7, 0x4000, 0, [{ offset: 0x1000, size: 0x1000 }]);
  t.same(
    info,
    hex(
      // argsz 64, flags R|W|MMAP|CAPS, index 0, cap_offset 32, size 0x4000, offset 0
      '40000000 0f000000 00000000 20000000 0040000000000000 0000000000000000' +
        // cap header: id 1 (sparse mmap), version 1, next 0; nr_areas 1, reserved; area offset 0x1000 size 0x1000
        '0100 0100 00000000 01000000 00000000 0010000000000000 0010000000000000',
    ),
  );
  const short = encodeRegionInfo(32, 0, 7, 0x4000, 0, [{ offset: 0x1000, size: 0x1000 }]);
  t.equal(short.byteLength, 32, 'a client argsz of 32 gets the head only');
  t.equal(new DataView(short.buffer).getUint32(0, true), 64, '... and learns the full size from argsz');
  t.equal(new DataView(short.buffer).getUint32(12, true), 0, 'no cap_offset without the capability');
  t.equal(new DataView(short.buffer).getUint32(4, true), 7, 'and no CAPS flag (QEMU refuses CAPS with cap_offset 0)');
});
