/**
 * SPDK's virtio-user initiator (lib/virtio's vhost-user transport, what SPDK's
 * bdevperf and SPDK apps use with bdev_virtio_attach_controller trtype "user")
 * against vhostd, two ways:
 *
 * 1. Everywhere (CI included): the byte fixture
 *    test/fixtures/spdk-v23.05-virtio-user-blk.json — the messages SPDK
 *    v23.05's bdevperf exchanged with vhostd, recorded by
 *    scripts/vhost-user-tap.py — is replayed: every front-end message is sent
 *    byte for byte (its fds replaced by memfds of the recorded sizes for the
 *    hugetlbfs regions and by fresh eventfds), each reply vhostd sends is
 *    checked against the recorded one, and between ring setup and the first
 *    GET_VRING_BASE a write and a read-back go through queue 0 laid out
 *    exactly where SPDK put it (its addresses, its memory table).
 * 2. Where SPDK is built (/var/tmp/spdk-work, by ../shared/peers/build-spdk.sh):
 *    the real bdevperf runs a verify job against a vhostd malloc disk. Not run
 *    (said so) only when /var/tmp/spdk-work does not exist.
 * Thread: test main thread.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../../bindings';
import { MessageChannel, type VhostUserMessage } from '../lib/frontend-channel';
import { Flags, hasBit, Req, VirtioBit } from '../lib/frontend-wire';
import { repoRoot } from '../lib/repo';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(300_000);

const FIXTURE = path.join(repoRoot(), 'test', 'fixtures', 'spdk-v23.05-virtio-user-blk.json');
const SPDK_WORK = '/var/tmp/spdk-work';
const REPLY_TIMEOUT_MS = 10_000;

interface Recorded {
  conn: number;
  dir: 'fe' | 'be';
  hex: string;
  fds: string[];
}
interface Fixture {
  peer: string;
  capture: { bdev: { method: string; params: Record<string, unknown> } };
  messages: Recorded[];
}

interface Msg {
  request: number;
  flags: number;
  payload: Buffer;
  fds: string[];
}
function parse(r: Recorded): Msg {
  const b = Buffer.from(r.hex, 'hex');
  return { request: b.readUInt32LE(0), flags: b.readUInt32LE(4), payload: b.subarray(12), fds: r.fds };
}

/** One region of the replayed memory table: a memfd standing in for SPDK's hugetlbfs file, mapped here too. */
interface Region {
  gpa: bigint;
  size: bigint;
  uva: bigint;
  mmapOffset: bigint;
  fd: number;
  buf: ArrayBuffer;
  bytes: Uint8Array;
}

interface Queue {
  size: number;
  desc?: bigint;
  used?: bigint;
  avail?: bigint;
  base: number;
  /** Requests this replay put on the ring since SET_VRING_BASE. */
  submitted: number;
  kick?: number;
}

class Replay {
  regions: Region[] = [];
  queues = new Map<number, Queue>();
  ownFds: number[] = [];

  queue(i: number): Queue {
    let q = this.queues.get(i);
    if (!q) this.queues.set(i, (q = { size: 0, base: 0, submitted: 0 }));
    return q;
  }

  /** Our fds for a recorded message, and the bookkeeping its payload implies. */
  fdsFor(m: Msg): number[] {
    const out: number[] = [];
    if (m.request === Req.SET_MEM_TABLE) {
      for (const r of this.regions) this.unmapRegion(r);
      this.regions = [];
      const n = m.payload.readUInt32LE(0);
      if (n !== m.fds.length) throw new Error(`fixture: ${n} regions with ${m.fds.length} fds`);
      for (let i = 0; i < n; i++) {
        const o = 8 + i * 32;
        const gpa = m.payload.readBigUInt64LE(o);
        const size = m.payload.readBigUInt64LE(o + 8);
        const uva = m.payload.readBigUInt64LE(o + 16);
        const mmapOffset = m.payload.readBigUInt64LE(o + 24);
        const recordedSize = Number(m.fds[i].split(':')[1] ?? 0);
        const fileSize = Math.max(recordedSize, Number(mmapOffset + size));
        const fd = native.memfdCreate(`spdk-replay-${i}`, 0);
        native.ftruncate(fd, fileSize);
        const buf = native.mmap(fd, Number(mmapOffset), Number(size), true);
        this.regions.push({ gpa, size, uva, mmapOffset, fd, buf, bytes: new Uint8Array(buf) });
        out.push(fd);
      }
      return out;
    }
    for (const kind of m.fds) {
      if (kind !== 'eventfd') throw new Error(`fixture: unexpected fd kind ${kind} on request ${m.request}`);
      const fd = native.eventfd(0, 0);
      this.ownFds.push(fd);
      out.push(fd);
    }
    const idx = m.payload.length >= 4 ? m.payload.readUInt32LE(0) & 0xff : 0;
    switch (m.request) {
      case Req.SET_VRING_NUM:
        this.queue(m.payload.readUInt32LE(0)).size = m.payload.readUInt32LE(4);
        break;
      case Req.SET_VRING_BASE: {
        const q = this.queue(m.payload.readUInt32LE(0));
        q.base = m.payload.readUInt32LE(4);
        q.submitted = 0;
        break;
      }
      case Req.SET_VRING_ADDR: {
        const q = this.queue(m.payload.readUInt32LE(0));
        q.desc = m.payload.readBigUInt64LE(8);
        q.used = m.payload.readBigUInt64LE(16);
        q.avail = m.payload.readBigUInt64LE(24);
        break;
      }
      case Req.SET_VRING_KICK:
        if (out.length === 1) this.queue(idx).kick = out[0];
        break;
      default:
    }
    return out;
  }

  /** [region, offset] of a front-end virtual address (SET_VRING_ADDR space). */
  byUva(uva: bigint, len: number): [Region, number] {
    for (const r of this.regions) if (uva >= r.uva && uva + BigInt(len) <= r.uva + r.size) return [r, Number(uva - r.uva)];
    throw new Error(`uva 0x${uva.toString(16)} outside the memory table`);
  }

  unmapRegion(r: Region): void {
    native.munmap(r.buf);
    native.close(r.fd);
  }

  close(): void {
    for (const r of this.regions) this.unmapRegion(r);
    this.regions = [];
    for (const f of this.ownFds) native.close(f);
    this.ownFds = [];
  }
}

/**
 * Submits one virtio-blk request on split queue `q` at SPDK's ring addresses
 * and polls its used ring (virtio 1.2 2.7): header, data, status in three
 * descriptors starting at `head`; buffers at guest-physical addresses in the
 * last 64 KiB of the largest region (checked not to overlap the rings).
 */
async function blkIo(rp: Replay, q: Queue, type: 0 | 1, sector: bigint, data: Uint8Array): Promise<{ status: number; len: number; id: number; out: Uint8Array }> {
  if (q.desc === undefined || q.avail === undefined || q.used === undefined || q.size === 0) throw new Error('queue 0 not set up by the sequence');
  const [dr, doff] = rp.byUva(q.desc, q.size * 16);
  const [ar, aoff] = rp.byUva(q.avail, 4 + 2 * q.size);
  const [ur, uoff] = rp.byUva(q.used, 4 + 8 * q.size);
  const big = rp.regions.reduce((a, b) => (b.size > a.size ? b : a));
  const bufOff = Number(big.size) - 65536;
  for (const [r, o, l] of [[dr, doff, q.size * 16], [ar, aoff, 4 + 2 * q.size], [ur, uoff, 4 + 8 * q.size]] as const) {
    if (r === big && o < bufOff + 65536 && o + l > bufOff) throw new Error('ring overlaps the request buffers');
  }
  const gpa = (off: number): bigint => big.gpa + BigInt(off);
  const hdr = bufOff;
  const dat = bufOff + 4096;
  const st = bufOff + 4096 + data.length;
  const bv = new DataView(big.buf);
  bv.setUint32(hdr, type, true);
  bv.setUint32(hdr + 4, 0, true);
  bv.setBigUint64(hdr + 8, sector, true);
  if (type === 1) big.bytes.set(data, dat);
  else big.bytes.fill(0, dat, dat + data.length);
  big.bytes[st] = 0xff;

  const n = q.base + q.submitted;
  const head = (q.submitted * 3) % q.size;
  const dv = new DataView(dr.buf);
  const put = (i: number, addr: bigint, len: number, flags: number, next: number): void => {
    const o = doff + ((head + i) % q.size) * 16;
    dv.setBigUint64(o, addr, true);
    dv.setUint32(o + 8, len, true);
    dv.setUint16(o + 12, flags, true);
    dv.setUint16(o + 14, next, true);
  };
  const NEXT = 1;
  const WRITE = 2;
  put(0, gpa(hdr), 16, NEXT, (head + 1) % q.size);
  put(1, gpa(dat), data.length, NEXT | (type === 0 ? WRITE : 0), (head + 2) % q.size);
  put(2, gpa(st), 1, WRITE, 0);
  const av = new DataView(ar.buf);
  av.setUint16(aoff + 4 + 2 * (n % q.size), head, true);
  av.setUint16(aoff + 2, (n + 1) & 0xffff, true);
  q.submitted++;
  if (q.kick !== undefined) native.eventfdWrite(q.kick, 1);
  const uv = new DataView(ur.buf);
  const deadline = Date.now() + REPLY_TIMEOUT_MS;
  while (uv.getUint16(uoff + 2, true) !== ((n + 1) & 0xffff)) {
    if (Date.now() > deadline) throw new Error(`no used element for request ${n} within ${REPLY_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 1));
  }
  const e = uoff + 4 + 8 * (n % q.size);
  return { id: uv.getUint32(e, true), len: uv.getUint32(e + 4, true), status: big.bytes[st], out: big.bytes.slice(dat, dat + data.length) };
}

async function reply(ch: MessageChannel): Promise<VhostUserMessage> {
  const m = await ch.next(REPLY_TIMEOUT_MS);
  for (const f of m.fds) native.close(f);
  return m;
}

t.test("replay of SPDK v23.05 virtio-user's message sequence, byte for byte", async (t) => {
  const fx = JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as Fixture;
  t.match(fx.peer, /SPDK v23\.05/, `fixture: ${fx.peer}`);
  const recorded = fx.messages.filter((m) => m.conn === 0);
  const fe = recorded.filter((m) => m.dir === 'fe').map(parse);
  t.ok(fe.length > 10, `${fe.length} front-end messages recorded`);

  // What SPDK acknowledged: every bit it sets must be offered by vhostd now.
  const setFeatures = fe.filter((m) => m.request === Req.SET_FEATURES).map((m) => m.payload.readBigUInt64LE(0));
  const setProto = fe.filter((m) => m.request === Req.SET_PROTOCOL_FEATURES).map((m) => m.payload.readBigUInt64LE(0));
  t.ok(setFeatures.length > 0, 'the sequence sets features');
  t.notOk(setFeatures.some((f) => hasBit(f, VirtioBit.RING_PACKED)), 'split rings (what this replay lays out)');
  // SPDK's quirk that vhostd reads liberally (codec LIBERAL_READINGS): SET_VRING_ENABLE with the ring size as value.
  const enables = fe.filter((m) => m.request === Req.SET_VRING_ENABLE).map((m) => m.payload.readUInt32LE(4));
  t.ok(enables.some((v) => v > 1), `SET_VRING_ENABLE values as recorded: ${[...new Set(enables)].join(', ')}`);

  const h: VhostdHandle = await startVhostd();
  t.teardown(() => h.stop());
  const b = fx.capture.bdev;
  await h.rpc(b.method, b.params);
  await h.rpc('vhost_create_blk_controller', { ctrlr: 'spdk.0', dev_name: b.params.name });

  const ch = new MessageChannel(native.unixConnect(h.socketOf('spdk.0')));
  const rp = new Replay();
  t.teardown(() => {
    ch.close();
    rp.close();
  });

  let ioDone = false;
  let replies = 0;
  for (let i = 0; i < recorded.length; i++) {
    const rec = recorded[i];
    if (rec.dir !== 'fe') continue;
    const m = parse(rec);
    if (m.request === Req.GET_VRING_BASE && !ioDone) {
      // The rings run: I/O through queue 0 as SPDK laid it out, before the sequence stops them.
      const q = rp.queue(0);
      const pattern = new Uint8Array(4096);
      for (let k = 0; k < pattern.length; k++) pattern[k] = (k * 7 + 13) & 0xff;
      const w = await blkIo(rp, q, 1, 8n, pattern);
      t.same({ status: w.status, len: w.len }, { status: 0, len: 1 }, 'write through SPDK-laid-out queue 0: OK, used len 1');
      const r = await blkIo(rp, q, 0, 8n, pattern);
      t.same({ status: r.status, len: r.len }, { status: 0, len: 4097 }, 'read: OK, used len 4097');
      t.ok(Buffer.from(r.out).equals(Buffer.from(pattern)), 'read back what was written');
      ioDone = true;
    }
    const fds = rp.fdsFor(m);
    await ch.send(Buffer.from(rec.hex, 'hex'), fds);
    if (m.request === Req.SET_MEM_TABLE) {
      // SCM_RIGHTS gave vhostd its own references; ours stay open for the mapping (closed with it).
    } else {
      for (const f of fds) if (!rp.ownFds.includes(f)) native.close(f);
    }
    // The recorded replies to this message: the back-end messages before the next front-end one.
    for (let j = i + 1; j < recorded.length && recorded[j].dir === 'be'; j++) {
      const want = parse(recorded[j]);
      const got = await reply(ch);
      replies++;
      const gotPayload = Buffer.from(got.payload);
      const what = `reply ${replies} (request ${want.request})`;
      t.equal(got.request, want.request, `${what}: request id`);
      t.equal(got.flags & Flags.REPLY, Flags.REPLY, `${what}: reply flag`);
      t.equal(gotPayload.length, want.payload.length, `${what}: size ${want.payload.length}`);
      switch (want.request) {
        case Req.GET_FEATURES: {
          const offered = gotPayload.readBigUInt64LE(0);
          for (const f of setFeatures) t.equal(f & ~offered, 0n, `${what}: vhostd offers every feature SPDK sets (0x${f.toString(16)})`);
          break;
        }
        case Req.GET_PROTOCOL_FEATURES: {
          const offered = gotPayload.readBigUInt64LE(0);
          for (const f of setProto) t.equal(f & ~offered, 0n, `${what}: every protocol feature SPDK sets is offered (0x${f.toString(16)})`);
          break;
        }
        case Req.GET_QUEUE_NUM:
          t.ok(gotPayload.readBigUInt64LE(0) >= BigInt(rp.queues.size || 1), `${what}: enough queues`);
          break;
        case Req.GET_CONFIG:
          // virtio-blk config: capacity (u64 @0) and blk_size (u32 @20) of the same bdev as recorded.
          t.equal(gotPayload.readBigUInt64LE(12), want.payload.readBigUInt64LE(12), `${what}: capacity as recorded`);
          t.equal(gotPayload.readUInt32LE(12 + 20), want.payload.readUInt32LE(12 + 20), `${what}: blk_size as recorded`);
          break;
        case Req.GET_VRING_BASE: {
          const idx = gotPayload.readUInt32LE(0);
          const q = rp.queue(idx);
          t.equal(idx, want.payload.readUInt32LE(0), `${what}: queue index`);
          t.equal(gotPayload.readUInt32LE(4), (q.base + q.submitted) & 0xffff, `${what}: next avail index = the requests this replay made on queue ${idx}`);
          break;
        }
        default:
          t.ok(gotPayload.equals(want.payload), `${what}: payload as recorded (${want.payload.toString('hex')})`);
      }
    }
  }
  t.ok(ioDone, 'I/O ran between ring setup and teardown');
  // The front-end goes away as bdevperf does at exit; the controller stays usable (a second replay can attach).
  ch.close();
  const ctrl = (await h.rpc('vhost_get_controllers', { name: 'spdk.0' })) as { ctrlr: string }[];
  t.equal(ctrl[0]?.ctrlr, 'spdk.0', 'controller still there after the front-end left');
  t.ok(h.daemon.running, 'vhostd still running');
});

t.test("SPDK's real bdevperf (virtio-user initiator, hugetlbfs memory) against vhostd", async (t) => {
  if (!fs.existsSync(SPDK_WORK)) {
    t.comment(`not run: no SPDK build (${SPDK_WORK} absent; ../shared/peers/build-spdk.sh makes one)`);
    t.pass('not run: no SPDK build');
    return;
  }
  const sp = path.join(SPDK_WORK, 'spdk');
  const bdevperf = path.join(sp, 'build', 'examples', 'bdevperf');
  t.ok(fs.existsSync(bdevperf), `${bdevperf} is built (${SPDK_WORK} exists, so it should be)`);
  if (!fs.existsSync(bdevperf)) return;
  // Hugepages for bdevperf's -s 256 (SPDK's env needs them), as build-spdk.sh's smoke() sets them up.
  const nr = Number(fs.readFileSync('/proc/sys/vm/nr_hugepages', 'utf8'));
  if (nr < 256) fs.writeFileSync('/proc/sys/vm/nr_hugepages', '256');
  fs.mkdirSync('/dev/hugepages', { recursive: true });
  if (!fs.readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === '/dev/hugepages')) {
    const m = spawn('mount', ['-t', 'hugetlbfs', 'nodev', '/dev/hugepages']);
    await new Promise((r) => m.once('close', r));
  }

  const h = await startVhostd();
  t.teardown(() => h.stop());
  await h.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: 16384, block_size: 4096 });
  await h.rpc('vhost_create_blk_controller', { ctrlr: 'bp.0', dev_name: 'Malloc0' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-bdevperf-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cfg = path.join(dir, 'bp.json');
  fs.writeFileSync(
    cfg,
    JSON.stringify({
      subsystems: [
        {
          subsystem: 'bdev',
          config: [
            { method: 'bdev_virtio_attach_controller', params: { name: 'VirtioBlk0', trtype: 'user', traddr: h.socketOf('bp.0'), dev_type: 'blk', vq_count: 2, vq_size: 512 } },
            { method: 'bdev_wait_for_examine' },
          ],
        },
      ],
    }),
  );
  const child = spawn(bdevperf, ['-m', '0x1', '-u', '-g', '-s', '256', '--json', cfg, '-q', '16', '-o', '4096', '-w', 'verify', '-t', '3'], { cwd: sp });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const code = await new Promise<number | null>((r) => child.once('close', r));
  clearTimeout(killer);
  const total = /^\s*Total\s*:\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)/m.exec(out.replace(/\r/g, ''));
  t.equal(code, 0, 'bdevperf exits 0');
  if (code !== 0) t.comment(`bdevperf output (tail):\n${out.slice(-3000)}`);
  t.ok(total && Number(total[1]) > 0, `bdevperf verify job completed I/O: ${total?.[1] ?? 'no Total line'} IOPS`);
  t.equal(total ? Number(total[3]) : -1, 0, 'no failed I/O (Fail/s 0)');
  t.notMatch(out, /miscompare|Verification failed/i, 'no verify miscompare');
  t.ok(h.daemon.running, 'vhostd still running');
});
