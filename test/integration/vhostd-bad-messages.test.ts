/**
 * Malformed vhost-user messages against vhostd: each on its own connection;
 * vhostd must close that connection (the front-end sees EOF), keep serving a
 * second controller, and release every fd and guest mapping the connection
 * held. Thread: test main thread.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { native } from '../../bindings';
import { VhostUserFrontend } from '../lib/frontend';
import { GuestMemory } from '../lib/frontend-memory';
import {
  BlkStatus,
  concat,
  encodeHeader,
  Flags,
  memTable,
  Req,
  u64,
  vringState,
  type WireRegion,
} from '../lib/frontend-wire';
import { BadInputSuite } from '../lib/bad-input';

t.setTimeout(180_000);

const EOF_TIMEOUT_MS = 5000;

const suite = new BadInputSuite(t, { bad: 'fe.msg', good: 'fe.ok' }, 4096);
const afterCase = suite.afterCase;

/** A connection past the cheap part of the handshake (features, protocol features, owner). */
async function open(t: tap.Test): Promise<VhostUserFrontend> {
  const fe = await suite.connectBad(t);
  const f = await fe.getU64(Req.GET_FEATURES);
  t.ok(f > 0n, 'handshake starts normally');
  const pf = await fe.getU64(Req.GET_PROTOCOL_FEATURES);
  await fe.setU64(Req.SET_PROTOCOL_FEATURES, pf & 0x8209n); // MQ, REPLY_ACK, CONFIG, CONFIGURE_MEM_SLOTS when offered
  await fe.request(Req.SET_OWNER);
  await fe.sync();
  return fe;
}

async function expectEof(t: tap.Test, fe: VhostUserFrontend, what: string): Promise<void> {
  const closed = await fe.channel.waitEof(EOF_TIMEOUT_MS);
  t.ok(closed, `${what}: vhostd closed the connection (${fe.channel.endReason ?? 'still open'})`);
}

function regions(mem: GuestMemory): WireRegion[] {
  return mem.regions.map((r) => r.wire());
}

t.test('bad version bits', async (t) => {
  const fe = await open(t);
  await fe.sendRaw(encodeHeader(Req.GET_FEATURES, 0x2, 0));
  await expectEof(t, fe, 'version 2');
  fe.close();
  await afterCase(t);
  const fe2 = await open(t);
  await fe2.sendRaw(encodeHeader(Req.GET_FEATURES, 0x0, 0));
  await expectEof(t, fe2, 'version 0');
  fe2.close();
  await afterCase(t);
});

t.test('a reply flag on a request', async (t) => {
  const fe = await open(t);
  await fe.sendRaw(concat([encodeHeader(Req.SET_FEATURES, Flags.VERSION | Flags.REPLY, 8), u64(1n << 32n)]));
  await expectEof(t, fe, 'REPLY bit set by the front-end');
  fe.close();
  await afterCase(t);
});

t.test('wrong payload size', async (t) => {
  const fe = await open(t);
  await fe.sendRaw(concat([encodeHeader(Req.SET_FEATURES, Flags.VERSION, 4), new Uint8Array(4)]));
  await expectEof(t, fe, 'SET_FEATURES with 4 bytes');
  fe.close();
  await afterCase(t);
  const fe2 = await open(t);
  await fe2.sendRaw(concat([encodeHeader(Req.SET_VRING_NUM, Flags.VERSION, 12), new Uint8Array(12)]));
  await expectEof(t, fe2, 'SET_VRING_NUM with 12 bytes');
  fe2.close();
  await afterCase(t);
});

t.test('SET_MEM_TABLE with fewer fds than regions', async (t) => {
  const fe = await open(t);
  const mem = new GuestMemory([
    { gpa: 0, sizeBytes: 1 << 20 },
    { gpa: 0x1000_0000, sizeBytes: 1 << 20 },
  ]);
  t.teardown(() => mem.close());
  await fe.request(Req.SET_MEM_TABLE, memTable(regions(mem)), [mem.regions[0].fd]);
  await expectEof(t, fe, '2 regions, 1 fd');
  fe.close();
  await afterCase(t);
});

t.test('SET_MEM_TABLE with more fds than regions, and nregions past 8', async (t) => {
  const mem = new GuestMemory([
    { gpa: 0, sizeBytes: 1 << 20 },
    { gpa: 0x1000_0000, sizeBytes: 1 << 20 },
  ]);
  t.teardown(() => mem.close());
  const fe = await open(t);
  await fe.request(Req.SET_MEM_TABLE, memTable(regions(mem).slice(0, 1)), mem.regions.map((r) => r.fd));
  await expectEof(t, fe, '1 region, 2 fds');
  fe.close();
  await afterCase(t);
  const fe2 = await open(t);
  await fe2.request(Req.SET_MEM_TABLE, memTable(regions(mem), 9), mem.regions.map((r) => r.fd));
  await expectEof(t, fe2, 'nregions = 9');
  fe2.close();
  await afterCase(t);
});

t.test('SET_MEM_TABLE with overlapping regions', async (t) => {
  const fe = await open(t);
  const mem = new GuestMemory([{ gpa: 0, sizeBytes: 2 << 20 }]);
  const mem2 = new GuestMemory([{ gpa: 1 << 20, sizeBytes: 2 << 20 }]);
  t.teardown(() => {
    mem.close();
    mem2.close();
  });
  const rs = [...regions(mem), ...regions(mem2)];
  await fe.request(Req.SET_MEM_TABLE, memTable(rs), [mem.regions[0].fd, mem2.regions[0].fd]);
  await expectEof(t, fe, 'overlapping guest-physical ranges');
  fe.close();
  await afterCase(t);
});

t.test('SET_MEM_TABLE region larger than its fd', async (t) => {
  const fe = await open(t);
  const mem = new GuestMemory([{ gpa: 0, sizeBytes: 1 << 20 }]);
  t.teardown(() => mem.close());
  const r = { ...mem.regions[0].wire(), sizeBytes: 64n << 20n };
  // with need_reply: a non-zero ack or closing the connection are both refusals; a zero ack is not
  let outcome: string;
  try {
    await fe.request(Req.SET_MEM_TABLE, memTable([r]), [mem.regions[0].fd], { needReply: true });
    outcome = 'acked 0';
  } catch (e) {
    const code = (e as { code?: string }).code;
    outcome = code === 'ENACK' ? 'nack' : code === 'EPEERCLOSED' ? 'closed' : String(e);
  }
  t.ok(outcome === 'nack' || outcome === 'closed', `64 MiB region over a 1 MiB memfd refused (${outcome})`);
  fe.close();
  await afterCase(t);
});

t.test('queue index out of range', async (t) => {
  const fe = await suite.connectBad(t);
  const n = await fe.negotiate();
  await fe.request(Req.SET_VRING_NUM, vringState(n.queueNum, 32));
  await expectEof(t, fe, `SET_VRING_NUM for queue ${n.queueNum} of ${n.queueNum}`);
  fe.close();
  await afterCase(t);
  const fe2 = await VhostUserFrontend.connect(suite.bad.socket, 5000, { waitAccepted: true });
  t.teardown(() => fe2.close());
  await fe2.negotiate();
  const kick = native.eventfd(0, 0);
  try {
    await fe2.request(Req.SET_VRING_KICK, u64(200n), [kick]);
  } finally {
    native.close(kick);
  }
  await expectEof(t, fe2, 'SET_VRING_KICK for queue 200');
  fe2.close();
  await afterCase(t);
});

t.test('SET_VRING_NUM not a power of two / too large', async (t) => {
  const fe = await suite.connectBad(t);
  await fe.negotiate();
  await fe.request(Req.SET_VRING_NUM, vringState(0, 100));
  await expectEof(t, fe, 'queue size 100');
  fe.close();
  await afterCase(t);
});

t.test('9 fds with one message', async (t) => {
  // The addon refuses to send more than 8 fds, so a small Python peer does it.
  const py = [
    'import os, socket, struct, sys',
    's = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
    's.connect(sys.argv[1])',
    "fds = [os.memfd_create('vhostfe-py-%d' % i) for i in range(9)]",
    "socket.send_fds(s, [struct.pack('<III', 1, 1, 0)], fds)",
    '[os.close(f) for f in fds]',
    's.settimeout(5)',
    'try:',
    "    print('EOF' if s.recv(4096) == b'' else 'DATA')",
    'except socket.timeout:',
    "    print('OPEN')",
    'except ConnectionResetError:',
    "    print('EOF')",
  ].join('\n');
  const r = spawnSync('python3', ['-c', py, suite.bad.socket], { encoding: 'utf8', timeout: 15_000 });
  if (r.error) {
    t.fail(`python3 is needed to send 9 fds (the addon refuses to): ${r.error.message}`);
    return;
  }
  t.equal(r.stdout.trim(), 'EOF', `GET_FEATURES carrying 9 fds: connection closed (python said ${r.stdout.trim() || r.stderr.trim()})`);
  await afterCase(t);
});

t.test('huge size field', async (t) => {
  const fe = await open(t);
  await fe.sendRaw(concat([encodeHeader(Req.SET_MEM_TABLE, Flags.VERSION, 0xffff_ff00), new Uint8Array(64)]));
  await expectEof(t, fe, 'size 0xffffff00');
  fe.close();
  await afterCase(t);
  const fe2 = await open(t);
  await fe2.sendRaw(concat([encodeHeader(Req.GET_CONFIG, Flags.VERSION, 4096 + 12), new Uint8Array(4108)]));
  await expectEof(t, fe2, 'GET_CONFIG of 4096 bytes');
  fe2.close();
  await afterCase(t);
});

t.test('GET_CONFIG whose size field disagrees with the payload', async (t) => {
  const fe = await open(t);
  const p = new Uint8Array(12 + 60);
  new DataView(p.buffer).setUint32(4, 4000, true);
  await fe.sendRaw(concat([encodeHeader(Req.GET_CONFIG, Flags.VERSION, p.byteLength), p]));
  await expectEof(t, fe, 'config size 4000 in a 72-byte payload');
  fe.close();
  await afterCase(t);
});

t.test('truncated message, then close', async (t) => {
  const fe = await open(t);
  const full = concat([encodeHeader(Req.SET_FEATURES, Flags.VERSION, 8), u64(1n << 32n)]);
  await fe.sendRaw(full.subarray(0, 15));
  fe.close();
  await afterCase(t);
  const fe2 = await open(t);
  await fe2.sendRaw(encodeHeader(Req.GET_FEATURES, Flags.VERSION, 0).subarray(0, 6));
  fe2.close();
  await afterCase(t);
});

t.test('close in the middle of a running session', async (t) => {
  const fe = await suite.connectBad(t);
  await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 4 << 20 }, { gpa: 0x1_0000_0000, sizeBytes: 4 << 20 }] });
  await fe.setupQueue(0, 64);
  await fe.setupQueue(1, 64, { regionIndex: 1 });
  const inflight = Array.from({ length: 40 }, (_, i) => fe.write(i % 2, i * 8, randomBytes(4096)).catch(() => undefined));
  fe.close();
  await Promise.all(inflight);
  await afterCase(t);
});

t.test('liberal readings keep the connection: SET_VRING_ENABLE 512, GET_CONFIG at offset 0x100', async (t) => {
  const fe = await suite.connectBad(t);
  await fe.negotiate();
  await fe.setupQueue(0, 64, { enable: false });
  // SPDK's virtio-user initiator enables a ring with its size as the value.
  await fe.request(Req.SET_VRING_ENABLE, vringState(0, 512));
  const w = await fe.write(0, 0, randomBytes(4096));
  t.equal(w.status, BlkStatus.OK, 'enabled by 512: the queue serves I/O');
  // cloud-hypervisor reads the config at offset 0x100 (rust-vmm's VHOST_USER_CONFIG_OFFSET).
  const at0 = await fe.getConfig(60);
  const at100 = await fe.getConfig(60, 0x100);
  t.same(Buffer.from(at100), Buffer.from(at0), 'offset 0x100 answers the config space from its start');
  await fe.sync();
  t.notOk(fe.channel.eof, 'still connected');
  fe.close();
  await afterCase(t);
});

t.test('SET_VRING_BASE past 16 bits on a split ring is refused; the connection stays', async (t) => {
  const fe = await open(t);
  let code: unknown = null;
  try {
    await fe.request(Req.SET_VRING_BASE, vringState(0, 0x1_0000), [], { needReply: true });
  } catch (e) {
    code = (e as { code?: unknown }).code;
  }
  t.equal(code, 'ENACK', 'failure ack');
  await fe.sync();
  t.notOk(fe.channel.eof, 'still connected');
  fe.close();
  await afterCase(t);
});

t.test('unknown request id', async (t) => {
  const fe = await open(t);
  await fe.sendRaw(concat([encodeHeader(0x7777, Flags.VERSION | Flags.NEED_REPLY, 8), u64(0n)]));
  // either an error ack or a close is acceptable; silence is not
  let outcome = 'silence';
  try {
    const m = await fe.channel.next(EOF_TIMEOUT_MS);
    outcome = m.request === 0x7777 && (m.flags & Flags.REPLY) !== 0 && m.payload.byteLength === 8 && new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(0, true) !== 0n ? 'nack' : `bad reply ${m.request}`;
  } catch (e) {
    outcome = fe.channel.eof ? 'closed' : String(e);
  }
  t.ok(outcome === 'nack' || outcome === 'closed', `unknown request with need_reply: ${outcome}`);
  fe.close();
  await afterCase(t);
});
