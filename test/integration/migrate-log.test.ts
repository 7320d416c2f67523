/**
 * Dirty logging for live migration, driven through the real vhostd by the
 * in-repo front-end: LOG_SHMFD + SET_LOG_BASE (with its reply, as QEMU
 * waits for it), SET_FEATURES with VHOST_F_LOG_ALL and SET_VRING_ADDR with
 * VHOST_VRING_F_LOG. After a read exactly the pages of its data, its status
 * byte and the used ring are set in the bitmap; after a write only the
 * status and used ring pages; with LOG_ALL clear (or never set) the bitmap
 * stays 0 — what makes the log matter: without it the front-end would not
 * know these pages changed. A log smaller than the memory table needs is
 * refused (the connection is closed), and two blk controllers share a bdev.
 * Thread: test main thread.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { native } from '../../bindings';
import { VhostUserFrontend } from '../lib/frontend';
import { BLK_HDR_SIZE, BlkStatus, BlkType, ProtoBit, Req, bit, blkHeader, concat, u64, vringAddr } from '../lib/frontend-wire';
import { deleteControllerOnceFree, startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(120_000);

const PAGE = 4096;
const LOG_ALL = 1n << 26n;
const VRING_F_LOG = 1;
const MEM_BYTES = 32 << 20;
/** One bit per page of 32 MiB at gpa 0. */
const LOG_BYTES = MEM_BYTES / PAGE / 8;

let vhostd: VhostdHandle;
const ctrl = { socket: '' };

t.before(async () => {
  vhostd = await startVhostd();
  await vhostd.rpc('bdev_malloc_create', { name: 'Mig0', num_blocks: 8192, block_size: 512 });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'mig.blk0', dev_name: 'Mig0' });
  ctrl.socket = vhostd.socketOf('mig.blk0');
});

t.teardown(async () => {
  await vhostd?.stop();
});

interface Log {
  fd: number;
  bits: Uint8Array;
  close(): void;
}

function makeLog(sizeBytes: number): Log {
  const fd = native.memfdCreate('test-dirty-log', 0);
  native.ftruncate(fd, sizeBytes);
  const buf = native.mmap(fd, 0, sizeBytes, true);
  return {
    fd,
    bits: new Uint8Array(buf),
    close() {
      native.munmap(buf);
      native.close(fd);
    },
  };
}

function marked(bits: Uint8Array): number[] {
  const out: number[] = [];
  for (let p = 0; p < bits.byteLength * 8; p++) if (bits[p >> 3] & (1 << (p & 7))) out.push(p);
  return out;
}

function pages(gpa: number, len: number): number[] {
  const out: number[] = [];
  for (let p = Math.floor(gpa / PAGE); p <= Math.floor((gpa + len - 1) / PAGE); p++) out.push(p);
  return out;
}

const union = (...lists: number[][]): number[] => [...new Set(lists.flat())].sort((a, b) => a - b);

async function connect(protocolExtra: bigint): Promise<VhostUserFrontend> {
  const fe = await VhostUserFrontend.connect(ctrl.socket, 5000, { waitAccepted: true });
  const base = bit(ProtoBit.MQ) | bit(ProtoBit.REPLY_ACK) | bit(ProtoBit.CONFIG) | bit(ProtoBit.CONFIGURE_MEM_SLOTS);
  await fe.negotiate({ protocolFeatures: base | protocolExtra, regions: [{ gpa: 0, sizeBytes: MEM_BYTES }] });
  return fe;
}

async function setLogBase(fe: VhostUserFrontend, log: Log, sizeBytes = log.bits.byteLength): Promise<void> {
  const reply = await fe.request(Req.SET_LOG_BASE, concat([u64(BigInt(sizeBytes)), u64(0n)]), [log.fd], { expectReply: true });
  if (reply === undefined || reply.request !== Req.SET_LOG_BASE) throw new Error('no SET_LOG_BASE reply');
}

async function setFeatures(fe: VhostUserFrontend, features: bigint): Promise<void> {
  await fe.request(Req.SET_FEATURES, u64(features), [], { needReply: true });
}

async function setRingLog(fe: VhostUserFrontend, qi: number, on: boolean): Promise<void> {
  const q = fe.queue(qi);
  const a = q.ringAddresses();
  await fe.request(Req.SET_VRING_ADDR, vringAddr(qi, on ? VRING_F_LOG : 0, a.desc, a.used, a.avail, on ? BigInt(q.usedGpa) : 0n), [], { needReply: true });
}

/** A read of `len` bytes at `sector` into buffers this test places; returns what it wrote where. */
/**
 * One blk request on queue 0 with its header, data and status each on a page
 * of their own (so the dirty log tells them apart): IN of `data` bytes, or
 * OUT of `data`. The data as the device left it, and where each part was.
 */
async function blkRequest(
  fe: VhostUserFrontend,
  sector: number,
  data: number | Uint8Array,
): Promise<{ status: number; data: Uint8Array; hdr: number; dataGpa: number; statusGpa: number }> {
  const isRead = typeof data === 'number';
  const len = isRead ? data : data.byteLength;
  const hdr = fe.alloc(blkHeader(isRead ? BlkType.IN : BlkType.OUT, BigInt(sector)), undefined, PAGE);
  const dataGpa = fe.alloc(data, undefined, PAGE);
  const statusGpa = fe.alloc(PAGE, undefined, PAGE);
  const m = fe.memory!;
  m.setU8(statusGpa, 0xff);
  await fe.queue(0).submit([
    { gpa: hdr, len: BLK_HDR_SIZE, writable: false },
    { gpa: dataGpa, len, writable: isRead },
    { gpa: statusGpa, len: 1, writable: true },
  ]);
  const out = { status: m.u8(statusGpa), data: m.read(dataGpa, len), hdr, dataGpa, statusGpa };
  fe.release(hdr, BLK_HDR_SIZE);
  fe.release(dataGpa, len);
  fe.release(statusGpa, PAGE);
  return out;
}

const read = (fe: VhostUserFrontend, sector: number, len: number) => blkRequest(fe, sector, len);
const write = (fe: VhostUserFrontend, sector: number, data: Uint8Array) => blkRequest(fe, sector, data);

/** A connection offered `protocol`, with queue 0 set up, and a dirty log of `logBytes` (both closed at the test's end). */
async function loggedConnection(t: Test, protocol: bigint, logBytes: number): Promise<{ fe: VhostUserFrontend; log: Log }> {
  const fe = await connect(protocol);
  t.teardown(() => fe.close());
  await fe.setupQueue(0, 128);
  const log = makeLog(logBytes);
  t.teardown(() => log.close());
  return { fe, log };
}

t.test('LOG_ALL + SET_LOG_BASE: a read marks exactly its data, status and used ring pages; a write its status and used ring', async (t) => {
  const fe = await connect(bit(ProtoBit.LOG_SHMFD));
  t.teardown(() => fe.close());
  t.ok(fe.negotiated!.offeredFeatures & LOG_ALL, 'VHOST_F_LOG_ALL offered');
  t.ok(fe.negotiated!.offeredProtocolFeatures & bit(ProtoBit.LOG_SHMFD), 'LOG_SHMFD offered');
  await fe.setupQueue(0, 128);
  const written = randomBytes(3 * PAGE);
  t.equal((await write(fe, 64, written)).status, BlkStatus.OK);

  const log = makeLog(LOG_BYTES);
  t.teardown(() => log.close());
  // QEMU's order at migration start: the log, then the features with LOG_ALL, then each ring with F_LOG.
  await setLogBase(fe, log);
  await setFeatures(fe, fe.features | LOG_ALL);
  await setRingLog(fe, 0, true);
  const usedPages = pages(fe.queue(0).usedGpa, 6 + 8 * 128);
  log.bits.fill(0);

  const r = await read(fe, 64, 3 * PAGE);
  t.equal(r.status, BlkStatus.OK);
  t.ok(Buffer.from(r.data).equals(written), 'the read returns the data');
  t.same(marked(log.bits), union(pages(r.dataGpa, 3 * PAGE), [r.statusGpa / PAGE], usedPages), 'data pages, the status page and the used ring');
  t.notOk(marked(log.bits).includes(r.hdr / PAGE), 'the header page (device-readable) is not marked');

  log.bits.fill(0);
  const w = await write(fe, 128, randomBytes(2 * PAGE));
  t.equal(w.status, BlkStatus.OK);
  t.same(marked(log.bits), union([w.statusGpa / PAGE], usedPages), 'a write marks its status page and the used ring only');

  // Logging stops when LOG_ALL is cleared (QEMU at the end of migration, or when it is cancelled).
  await setRingLog(fe, 0, false);
  await setFeatures(fe, fe.features & ~LOG_ALL);
  log.bits.fill(0);
  const r2 = await read(fe, 64, PAGE);
  t.equal(r2.status, BlkStatus.OK);
  t.same(marked(log.bits), [], 'LOG_ALL cleared: nothing is marked');
});

t.test('a log given but LOG_ALL never set: the bitmap stays 0 (the pages a read changed are unknown to the front-end)', async (t) => {
  const { fe, log } = await loggedConnection(t, bit(ProtoBit.LOG_SHMFD), LOG_BYTES);
  await setLogBase(fe, log);
  await setRingLog(fe, 0, true);
  const r = await read(fe, 0, 2 * PAGE);
  t.equal(r.status, BlkStatus.OK);
  t.same(marked(log.bits), [], 'not logging');
});

t.test('a log too small for the memory table is refused: the connection closes; the device never wrote past it', async (t) => {
  const { fe, log } = await loggedConnection(t, bit(ProtoBit.LOG_SHMFD), PAGE);
  await t.rejects(setLogBase(fe, log, LOG_BYTES / 2), 'SET_LOG_BASE with half the needed size closes the connection');
  t.same(marked(log.bits), []);
});

t.test('SET_LOG_BASE without LOG_SHMFD negotiated closes the connection', async (t) => {
  const fe = await connect(0n);
  t.teardown(() => fe.close());
  const log = makeLog(LOG_BYTES);
  t.teardown(() => log.close());
  await t.rejects(setLogBase(fe, log));
});

t.test('two blk controllers on one bdev (SPDK allows it): both serve it, claimed stays true until both are gone', async (t) => {
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'mig.blk1', dev_name: 'Mig0' });
  const claimed = async (): Promise<boolean> => ((await vhostd.rpc('bdev_get_bdevs', { name: 'Mig0' })) as { claimed: boolean }[])[0].claimed;
  t.equal(await claimed(), true);
  const a = await connect(0n);
  t.teardown(() => a.close());
  await a.setupQueue(0, 128);
  const b = await VhostUserFrontend.connect(vhostd.socketOf('mig.blk1'), 5000, { waitAccepted: true });
  t.teardown(() => b.close());
  await b.negotiate({ regions: [{ gpa: 0, sizeBytes: MEM_BYTES }] });
  await b.setupQueue(0, 128);
  const data = randomBytes(2 * PAGE);
  t.equal((await a.write(0, 256, data)).status, BlkStatus.OK, 'written through the first controller');
  const r = await b.read(0, 256, 2 * PAGE);
  t.ok(r.status === BlkStatus.OK && Buffer.from(r.data).equals(data), 'read back through the second');
  b.close();
  await t.rejects(vhostd.rpc('bdev_malloc_delete', { name: 'Mig0' }), 'the bdev cannot be deleted while controllers use it');
  await deleteControllerOnceFree(vhostd.rpc, 'mig.blk1');
  t.equal(await claimed(), true, 'still claimed: mig.blk0 uses it');
});
