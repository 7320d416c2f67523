/**
 * vhost-user codec: byte fixtures (hand-built, little-endian, independent of
 * the encoders) for every request kind the back-end serves, and every
 * validation failure, proving that the fds that came with a rejected message
 * are closed. fds are real (/dev/null); closure is checked with fstat → EBADF.
 */
import t from 'tap';
import * as fs from 'node:fs';
import {
  decodeHeader,
  decodeMessage,
  encodeReply,
  LIBERAL_READINGS,
  ProtocolError,
  type Header,
  type VhostMessage,
} from '../../reactor/vhost-user/codec';
import { Request } from '../../reactor/vhost-user/messages';

function openFd(): number {
  return fs.openSync('/dev/null', 'r');
}

function isOpen(fd: number): boolean {
  try {
    fs.fstatSync(fd);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EBADF') return false;
    throw err;
  }
}

/** Build a payload from little-endian fields. */
function le(...fields: ([32, number] | [64, bigint | number])[]): Buffer {
  const len = fields.reduce((n, [w]) => n + w / 8, 0);
  const b = Buffer.alloc(len);
  let off = 0;
  for (const [w, v] of fields) {
    if (w === 32) b.writeUInt32LE(v, off);
    else b.writeBigUInt64LE(BigInt(v), off);
    off += w / 8;
  }
  return b;
}

function header(request: number, flags: number, size: number): Buffer {
  return le([32, request], [32, flags], [32, size]);
}

function decode(request: number, payload: Buffer, fds: number[] = [], flags = 1): VhostMessage {
  const h: Header = decodeHeader(header(request, flags, payload.length));
  return decodeMessage(h, payload, fds);
}

/** Expect a ProtocolError mentioning `match`, and every fd closed. */
function rejects(tt: Tap, request: number, payload: Buffer, nfds: number, match: RegExp, what: string): void {
  const fds = Array.from({ length: nfds }, openFd);
  tt.throws(() => decode(request, payload, fds), match, what);
  let threw: unknown = null;
  try {
    decode(request, payload, []);
  } catch (e) {
    threw = e;
  }
  tt.ok(threw === null || threw instanceof ProtocolError, `${what}: error type`);
  for (const fd of fds) tt.notOk(isOpen(fd), `${what}: fd ${fd} closed`);
}
/** A tap subtest (the type of the callback's argument of t.test(cb)). */
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const region = (gpa: bigint | number, size: bigint | number, uva: bigint | number, off: bigint | number) =>
  [
    [64, gpa],
    [64, size],
    [64, uva],
    [64, off],
  ] as [64, bigint | number][];

t.test('header validation', (tt) => {
  tt.same(decodeHeader(header(1, 1, 0)), { request: 1, flags: 1, size: 0 });
  tt.same(decodeHeader(header(2, 1 | 8, 8)), { request: 2, flags: 9, size: 8 });
  tt.throws(() => decodeHeader(header(1, 0, 0)), /version 0/);
  tt.throws(() => decodeHeader(header(1, 2, 0)), /version 2/);
  tt.throws(() => decodeHeader(header(1, 1 | 4, 0)), /reply flag/);
  tt.throws(() => decodeHeader(header(5, 1, 4097)), /exceeds 4096/);
  tt.doesNotThrow(() => decodeHeader(header(25, 1, 4096)));
  tt.throws(() => decodeHeader(header(99, 1, 0)), /unknown request id 99/);
  tt.same(decodeHeader(header(6, 1, 16)), { request: 6, flags: 1, size: 16 });
  tt.same(decodeHeader(header(7, 1, 0)), { request: 7, flags: 1, size: 0 });
  tt.throws(() => decodeHeader(header(19, 1, 8)), /unsupported request SEND_RARP/);
  tt.throws(() => decodeHeader(Buffer.alloc(11)), /short header/);
  tt.throws(() => decodeHeader(header(1, 0, 0)), ProtocolError);
  tt.end();
});

t.test('requests without payload', (tt) => {
  for (const r of [
    Request.GetFeatures,
    Request.SetOwner,
    Request.ResetOwner,
    Request.GetProtocolFeatures,
    Request.GetQueueNum,
    Request.ResetDevice,
    Request.GetMaxMemSlots,
    Request.GetStatus,
  ]) {
    const m = decode(r, Buffer.alloc(0));
    tt.equal(m.request, r);
    tt.equal(m.needReply, false);
    rejects(tt, r, Buffer.alloc(8), 0, /payload is 8 bytes, expected 0/, `request ${r} with payload`);
    rejects(tt, r, Buffer.alloc(0), 1, /carries 1 fds, expected 0/, `request ${r} with an fd`);
  }
  const m = decode(Request.SetOwner, Buffer.alloc(0), [], 1 | 8);
  tt.equal(m.needReply, true);
  tt.end();
});

t.test('u64 requests', (tt) => {
  const f = decode(Request.SetFeatures, le([64, 0x1_4000_0000n]));
  tt.same(f.request === Request.SetFeatures && f.features, 0x1_4000_0000n);
  const p = decode(Request.SetProtocolFeatures, le([64, 0x1_8229n]));
  tt.same(p.request === Request.SetProtocolFeatures && p.features, 0x1_8229n);
  const s = decode(Request.SetStatus, le([64, 0x0f]));
  tt.equal(s.request === Request.SetStatus && s.status, 15);
  rejects(tt, Request.SetStatus, le([64, 0x100]), 0, /does not fit in 8 bits/, 'status > 0xff');
  rejects(tt, Request.SetFeatures, Buffer.alloc(4), 0, /payload is 4 bytes, expected 8/, 'short u64');
  rejects(tt, Request.SetFeatures, le([64, 1]), 2, /carries 2 fds, expected 0/, 'u64 with fds');
  tt.end();
});

t.test('SET_MEM_TABLE', (tt) => {
  const fds = [openFd(), openFd()];
  const payload = le(
    [32, 2],
    [32, 0],
    ...region(0, 0xa0000, 0x7f00_0000_0000n, 0),
    ...region(0x100000, 0x3ff0_0000, 0x7f00_0010_0000n, 0x100000),
  );
  tt.equal(payload.length, 8 + 64);
  const m = decode(Request.SetMemTable, payload, fds);
  if (m.request !== Request.SetMemTable) throw new Error('wrong kind');
  tt.same(m.regions, [
    { fd: fds[0], guestPhysAddr: 0, sizeBytes: 0xa0000, userAddr: 0x7f00_0000_0000, mmapOffset: 0 },
    { fd: fds[1], guestPhysAddr: 0x100000, sizeBytes: 0x3ff0_0000, userAddr: 0x7f00_0010_0000, mmapOffset: 0x100000 },
  ]);
  tt.ok(isOpen(fds[0]) && isOpen(fds[1]), 'fds handed over, not closed');
  fds.forEach((fd) => fs.closeSync(fd));

  const one = (...r: [64, bigint | number][]) => le([32, 1], [32, 0], ...r);
  rejects(tt, Request.SetMemTable, le([32, 0], [32, 0]), 0, /0 regions, expected 1..8/, 'no regions');
  rejects(tt, Request.SetMemTable, Buffer.concat([le([32, 9], [32, 0]), Buffer.alloc(9 * 32)]), 8, /9 regions/, '9 regions');
  rejects(tt, Request.SetMemTable, le([32, 2], [32, 0], ...region(0, 4096, 0, 0)), 2, /expected 72 for 2 regions/, 'short table');
  rejects(tt, Request.SetMemTable, Buffer.alloc(4), 0, /shorter than the table header/, 'tiny');
  rejects(tt, Request.SetMemTable, one(...region(0, 4096, 0, 0)), 0, /carries 0 fds, expected 1/, 'missing fd');
  rejects(tt, Request.SetMemTable, one(...region(0, 4096, 0, 0)), 2, /carries 2 fds, expected 1/, 'extra fd');
  rejects(tt, Request.SetMemTable, one(...region(0, 0, 0, 0)), 1, /region size is 0/, 'empty region');
  rejects(
    tt,
    Request.SetMemTable,
    one(...region(0xffff_ffff_ffff_f000n, 0x2000, 0, 0)),
    1,
    /guest_phys_addr \+ size overflows u64/,
    'gpa overflow',
  );
  rejects(
    tt,
    Request.SetMemTable,
    one(...region(0, 0x2000, 0xffff_ffff_ffff_f000n, 0)),
    1,
    /userspace_addr \+ size overflows u64/,
    'uva overflow',
  );
  rejects(tt, Request.SetMemTable, one(...region(0, 0x2000, 1n << 53n, 0)), 1, /not below 2\^53/, 'uva ≥ 2^53');
  rejects(tt, Request.SetMemTable, one(...region((1n << 53n) - 0x1000n, 0x2000, 0, 0)), 1, /not below 2\^53/, 'gpa end ≥ 2^53');
  rejects(tt, Request.SetMemTable, one(...region(0, 0x2000, 0, 1n << 60n)), 1, /mmap_offset \+ size/, 'offset ≥ 2^53');
  tt.end();
});

t.test('ADD_MEM_REG / REM_MEM_REG', (tt) => {
  const payload = le([64, 0], ...region(0x1_0000_0000n, 0x4000_0000, 0x7f10_0000_0000n, 0x4000_0000));
  tt.equal(payload.length, 40);
  const fd = openFd();
  const m = decode(Request.AddMemReg, payload, [fd]);
  tt.same(m.request === Request.AddMemReg && m.region, {
    fd,
    guestPhysAddr: 0x1_0000_0000,
    sizeBytes: 0x4000_0000,
    userAddr: 0x7f10_0000_0000,
    mmapOffset: 0x4000_0000,
  });
  tt.ok(isOpen(fd));
  fs.closeSync(fd);
  rejects(tt, Request.AddMemReg, payload, 0, /carries 0 fds, expected 1/, 'ADD without fd');
  rejects(tt, Request.AddMemReg, payload, 2, /carries 2 fds, expected 1/, 'ADD with 2 fds');
  rejects(tt, Request.AddMemReg, payload.subarray(8), 1, /payload is 32 bytes, expected 40/, 'ADD without pad');
  rejects(tt, Request.AddMemReg, le([64, 0], ...region(0, 0, 0, 0)), 1, /region size is 0/, 'ADD empty');

  const rem = decode(Request.RemMemReg, payload, []);
  tt.same(rem.request === Request.RemMemReg && rem.region, {
    guestPhysAddr: 0x1_0000_0000,
    sizeBytes: 0x4000_0000,
    userAddr: 0x7f10_0000_0000,
    mmapOffset: 0x4000_0000,
  });
  // The spec lets a back-end accept one fd on REM_MEM_REG; it must close it unused.
  const fd2 = openFd();
  const rem2 = decode(Request.RemMemReg, payload, [fd2]);
  tt.equal(rem2.request, Request.RemMemReg);
  tt.notOk(isOpen(fd2), 'REM_MEM_REG fd closed unused');
  rejects(tt, Request.RemMemReg, payload, 2, /carries 2 fds, expected 1/, 'REM with 2 fds');
  tt.end();
});

t.test('vring state, num, base, enable', (tt) => {
  for (const r of [Request.SetVringNum, Request.SetVringBase, Request.GetVringBase] as const) {
    const m = decode(r, le([32, 1], [32, 256]));
    tt.same(m.request === r && { index: m.index, num: m.num }, { index: 1, num: 256 });
    rejects(tt, r, Buffer.alloc(12), 0, /payload is 12 bytes, expected 8/, `request ${r} long`);
  }
  const e = decode(Request.SetVringEnable, le([32, 3], [32, 1]));
  tt.same(e.request === Request.SetVringEnable && { index: e.index, enable: e.enable }, { index: 3, enable: true });
  const d = decode(Request.SetVringEnable, le([32, 0], [32, 0]));
  tt.equal(d.request === Request.SetVringEnable && d.enable, false);
  // Liberal reading (LIBERAL_READINGS): any non-zero value enables; SPDK's virtio-user sends the queue size.
  for (const num of [2, 512, 0xffff_ffff]) {
    const m = decode(Request.SetVringEnable, le([32, 1], [32, num]));
    tt.same(m.request === Request.SetVringEnable && { index: m.index, enable: m.enable }, { index: 1, enable: true }, `enable ${num}`);
  }
  tt.ok(LIBERAL_READINGS.some((r) => r.request === Request.SetVringEnable && /SPDK/.test(r.peer)), 'listed with its peer');
  tt.end();
});

t.test('SET_VRING_ADDR', (tt) => {
  const payload = le([32, 1], [32, 0], [64, 0x7f00_0000_1000n], [64, 0x7f00_0000_3000n], [64, 0x7f00_0000_2000n], [64, 0]);
  tt.equal(payload.length, 40);
  const m = decode(Request.SetVringAddr, payload);
  if (m.request !== Request.SetVringAddr) throw new Error('wrong kind');
  tt.same(
    { index: m.index, descAddr: m.descAddr, usedAddr: m.usedAddr, availAddr: m.availAddr, logAddr: m.logAddr },
    { index: 1, descAddr: 0x7f00_0000_1000, usedAddr: 0x7f00_0000_3000, availAddr: 0x7f00_0000_2000, logAddr: 0n },
  );
  rejects(tt, Request.SetVringAddr, payload.subarray(0, 32), 0, /expected 40/, 'short addr');
  const big = le([32, 0], [32, 0], [64, 1n << 53n], [64, 0], [64, 0], [64, 0]);
  rejects(tt, Request.SetVringAddr, big, 0, /descriptor address .* not below 2\^53/, 'desc ≥ 2^53');
  const big2 = le([32, 0], [32, 0], [64, 0], [64, 0], [64, 0xffff_ffff_ffff_ffffn], [64, 0]);
  rejects(tt, Request.SetVringAddr, big2, 0, /available address/, 'avail ≥ 2^53');
  tt.end();
});

t.test('SET_VRING_KICK / CALL / ERR', (tt) => {
  for (const r of [Request.SetVringKick, Request.SetVringCall, Request.SetVringErr] as const) {
    const fd = openFd();
    const m = decode(r, le([64, 1]), [fd]);
    tt.same(m.request === r && { index: m.index, fd: m.fd }, { index: 1, fd });
    tt.ok(isOpen(fd));
    fs.closeSync(fd);
    const n = decode(r, le([64, 0x100 | 5]));
    tt.same(n.request === r && { index: n.index, fd: n.fd }, { index: 5, fd: -1 }, 'nofd bit → fd -1');
    rejects(tt, r, le([64, 0x100]), 1, /carries 1 fds, expected 0/, `request ${r}: nofd with an fd`);
    rejects(tt, r, le([64, 0]), 0, /carries 0 fds, expected 1/, `request ${r}: fd missing`);
    rejects(tt, r, le([64, 2]), 2, /carries 2 fds, expected 1/, `request ${r}: 2 fds`);
    rejects(tt, r, le([64, 0x200]), 1, /undefined bits/, `request ${r}: bit 9`);
  }
  tt.end();
});

t.test('SET_BACKEND_REQ_FD', (tt) => {
  const fd = openFd();
  const m = decode(Request.SetBackendReqFd, Buffer.alloc(0), [fd]);
  tt.equal(m.request === Request.SetBackendReqFd && m.fd, fd);
  fs.closeSync(fd);
  rejects(tt, Request.SetBackendReqFd, Buffer.alloc(0), 0, /carries 0 fds, expected 1/, 'no fd');
  rejects(tt, Request.SetBackendReqFd, Buffer.alloc(8), 1, /payload is 8 bytes/, 'payload');
  tt.end();
});

t.test('GET_CONFIG / SET_CONFIG', (tt) => {
  const get = decode(Request.GetConfig, Buffer.concat([le([32, 0], [32, 60], [32, 0]), Buffer.alloc(60)]));
  tt.same(get.request === Request.GetConfig && { o: get.offset, s: get.size, f: get.configFlags }, { o: 0, s: 60, f: 0 });
  const full = decode(Request.GetConfig, Buffer.concat([le([32, 0], [32, 256], [32, 1]), Buffer.alloc(256)]));
  tt.equal(full.request === Request.GetConfig && full.size, 256);
  const data = Buffer.from([1, 2, 3, 4]);
  const set = decode(Request.SetConfig, Buffer.concat([le([32, 32], [32, 4], [32, 0]), data]));
  if (set.request !== Request.SetConfig) throw new Error('wrong kind');
  tt.same({ o: set.offset, s: set.size, d: Buffer.from(set.data) }, { o: 32, s: 4, d: data });
  // SET_CONFIG applies its offset: it must stay inside the 256-byte config space.
  rejects(
    tt,
    Request.SetConfig,
    Buffer.concat([le([32, 200], [32, 57], [32, 0]), Buffer.alloc(57)]),
    0,
    /offset 200 \+ size 57 exceeds 256/,
    'past 256',
  );
  rejects(
    tt,
    Request.SetConfig,
    Buffer.concat([le([32, 0xffff_ffff], [32, 2], [32, 0]), Buffer.alloc(2)]),
    0,
    /exceeds 256/,
    'offset wraps u32',
  );
  // GET_CONFIG: the offset is echoed, not applied (LIBERAL_READINGS): cloud-hypervisor's fixture
  // (rust-vmm's VHOST_USER_CONFIG_OFFSET 0x100, virtio-blk config 60 bytes) decodes.
  const ch = decode(
    Request.GetConfig,
    Buffer.concat([Buffer.from('00010000' + '3c000000' + '00000000', 'hex'), Buffer.alloc(60)]),
  );
  tt.same(ch.request === Request.GetConfig && { o: ch.offset, s: ch.size, f: ch.configFlags }, { o: 0x100, s: 60, f: 0 }, 'offset 0x100 size 60');
  const wrap = decode(Request.GetConfig, Buffer.concat([le([32, 0xffff_ffff], [32, 2], [32, 0]), Buffer.alloc(2)]));
  tt.equal(wrap.request === Request.GetConfig && wrap.offset, 0xffff_ffff, 'any u32 offset');
  tt.ok(LIBERAL_READINGS.some((r) => r.request === Request.GetConfig && /cloud-hypervisor/.test(r.peer)), 'listed with its peer');
  rejects(
    tt,
    Request.GetConfig,
    Buffer.concat([le([32, 0x100], [32, 257], [32, 0]), Buffer.alloc(257)]),
    0,
    /size 257 exceeds 256/,
    'GET_CONFIG larger than the config space',
  );
  rejects(tt, Request.GetConfig, Buffer.concat([le([32, 0], [32, 60], [32, 0]), Buffer.alloc(59)]), 0, /expected 72/, 'short data');
  rejects(tt, Request.SetConfig, le([32, 0], [32, 0], [32, 2]), 0, /config flags 2/, 'bad flags');
  rejects(tt, Request.GetConfig, Buffer.alloc(8), 1, /shorter than 12/, 'no config header');
  tt.end();
});

t.test('payload length must match the header, and fd sanity', (tt) => {
  const h = decodeHeader(header(Request.SetFeatures, 1, 8));
  const fd = openFd();
  tt.throws(() => decodeMessage(h, Buffer.alloc(4), [fd]), /payload is 4 bytes, header says 8/);
  tt.notOk(isOpen(fd));
  const fds = Array.from({ length: 9 }, openFd);
  tt.throws(
    () => decodeMessage(decodeHeader(header(Request.SetMemTable, 1, 8 + 32 * 8)), Buffer.alloc(8 + 32 * 8), fds),
    /carries 9 fds, at most 8/,
  );
  for (const f of fds) tt.notOk(isOpen(f));
  // A hand-made header with an unknown id still cannot get through decodeMessage.
  const fd2 = openFd();
  tt.throws(() => decodeMessage({ request: 77, flags: 1, size: 0 }, Buffer.alloc(0), [fd2]), /unknown request id 77/);
  tt.notOk(isOpen(fd2));
  tt.end();
});

t.test('reply encoding', (tt) => {
  const r = encodeReply(Request.GetFeatures, 0, Buffer.from(le([64, 0x1_4000_0000n])));
  tt.same(Buffer.from(r), Buffer.concat([header(1, 0x5, 8), le([64, 0x1_4000_0000n])]));
  // need_reply is never echoed; version and reply are forced.
  const a = encodeReply(Request.SetOwner, 0x8 | 0x2, new Uint8Array(8));
  tt.same(Buffer.from(a.subarray(0, 12)), header(3, 0x5, 8));
  tt.end();
});

t.test('GET/SET_INFLIGHT_FD: VhostUserInflight (24 bytes), SET carries exactly one fd', async (tt) => {
  const inflight = (size: bigint | number, off: bigint | number, nq: number, qs: number) => {
    const b = Buffer.alloc(24);
    b.writeBigUInt64LE(BigInt(size), 0);
    b.writeBigUInt64LE(BigInt(off), 8);
    b.writeUInt16LE(nq, 16);
    b.writeUInt16LE(qs, 18);
    return b;
  };
  const g = decode(Request.GetInflightFd, inflight(0, 0, 2, 128));
  tt.same({ r: g.request, nq: (g as { numQueues: number }).numQueues, qs: (g as { queueSize: number }).queueSize }, { r: Request.GetInflightFd, nq: 2, qs: 128 });
  const fd = openFd();
  const m = decode(Request.SetInflightFd, inflight(4224, 4096, 2, 128), [fd]);
  tt.same(m, { headerFlags: 1, needReply: false, request: Request.SetInflightFd, fd, sizeBytes: 4224, mmapOffset: 4096, numQueues: 2, queueSize: 128 });
  fs.closeSync(fd);
  rejects(tt, Request.GetInflightFd, inflight(0, 0, 2, 128).subarray(0, 20), 0, /payload is 20 bytes, expected 24/, 'short GET_INFLIGHT_FD');
  rejects(tt, Request.GetInflightFd, inflight(0, 0, 2, 128), 1, /carries 1 fds, expected 0/, 'GET_INFLIGHT_FD with an fd');
  rejects(tt, Request.SetInflightFd, inflight(4224, 0, 2, 128), 0, /carries 0 fds, expected 1/, 'SET_INFLIGHT_FD without its fd');
  rejects(tt, Request.SetInflightFd, inflight(4224, 0, 2, 128), 2, /carries 2 fds, expected 1/, 'SET_INFLIGHT_FD with two fds');
  rejects(tt, Request.SetInflightFd, inflight(1n << 60n, 0, 2, 128), 1, /mmap_size/, 'SET_INFLIGHT_FD with a huge size');
});
