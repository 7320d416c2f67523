/**
 * Hostile virtio-blk requests against vhostd: each case on its own
 * connection to one controller, each followed by checks that the connection's
 * resources are released (open fds and guest mappings back to baseline) and
 * that a second, healthy controller still serves I/O.
 *
 * Expected (design.md, virtio 1.2 5.2.6): a request the device cannot carry
 * out completes with status IOERR (1), an unknown type with UNSUPP (2); the
 * device never writes outside guest memory and never stops serving others.
 * Thread: test main thread.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus, BlkType, Desc } from '../lib/frontend-wire';
import { BadInputSuite } from '../lib/bad-input';

t.setTimeout(120_000);

const NUM_BLOCKS = 8192;

const suite = new BadInputSuite(t, { bad: 'fe.bad', good: 'fe.good' }, NUM_BLOCKS);
const afterCase = suite.afterCase;

/** Connect to the bad controller and start queue 0. */
async function open(t: tap.Test): Promise<VhostUserFrontend> {
  const fe = await suite.connectBad(t);
  await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 8 << 20 }] });
  await fe.setupQueue(0, 32, { timeoutMs: 5000 });
  return fe;
}

/** A valid request on the same queue still works after the bad one. */
async function sameQueueStillWorks(t: tap.Test, fe: VhostUserFrontend): Promise<void> {
  const d = randomBytes(1024);
  const w = await fe.write(0, 100, d);
  const r = await fe.read(0, 100, 1024);
  t.ok(w.status === BlkStatus.OK && Buffer.from(r.data).equals(d), 'the same queue still serves valid requests');
}

function status(fe: VhostUserFrontend): number {
  return fe.alloc(1);
}

t.test('descriptor chain that loops', async (t) => {
  const fe = await open(t);
  const hdr = fe.header(BlkType.IN, 0);
  const st = status(fe);
  // header → status, and the status descriptor's next points to itself
  const r = await fe.submitRaw(
    0,
    [
      { addr: BigInt(hdr), len: 16, flags: Desc.NEXT, next: 1 },
      { addr: BigInt(st), len: 1, flags: Desc.WRITE | Desc.NEXT, next: 1 },
    ],
    { statusGpa: st },
  );
  // There is no last descriptor to hold a status: the chain must come back
  // either with nothing written (len 0) or with IOERR.
  t.ok(r.usedLen === 0 || (r.usedLen === 1 && r.status === BlkStatus.IOERR), `looping chain returned: len ${r.usedLen} status ${r.status}`);
  t.not(r.status, BlkStatus.OK, 'not completed as OK');
  fe.close();
  await afterCase(t);
});

t.test('indirect table that loops', async (t) => {
  const fe = await open(t);
  const hdr = fe.header(BlkType.IN, 0);
  const st = status(fe);
  const r = await fe.submitRaw(
    0,
    [
      { addr: BigInt(hdr), len: 16, flags: Desc.NEXT, next: 1 },
      { addr: BigInt(st), len: 1, flags: Desc.WRITE | Desc.NEXT, next: 0 },
    ],
    { statusGpa: st, indirect: true },
  );
  t.ok(r.usedLen === 0 || (r.usedLen === 1 && r.status === BlkStatus.IOERR), `looping indirect chain returned: len ${r.usedLen} status ${r.status}`);
  fe.close();
  await afterCase(t);
});

t.test('buffer address outside guest memory', async (t) => {
  const fe = await open(t);
  const hdr = fe.header(BlkType.IN, 0);
  const st = status(fe);
  const outside = BigInt(fe.memory?.end() ?? 0) + 0x10_0000n;
  const r = await fe.submitRaw(
    0,
    [
      { addr: BigInt(hdr), len: 16, flags: Desc.NEXT, next: 1 },
      { addr: outside, len: 4096, flags: Desc.WRITE | Desc.NEXT, next: 2 },
      { addr: BigInt(st), len: 1, flags: Desc.WRITE },
    ],
    { statusGpa: st },
  );
  t.same(r, { status: BlkStatus.IOERR, usedLen: 1 }, 'IOERR, only the status written');
  // a buffer that starts inside and runs past the end of the region
  const end = fe.memory?.end() ?? 0;
  const r2 = await fe.submitRaw(
    0,
    [
      { addr: BigInt(hdr), len: 16, flags: Desc.NEXT, next: 1 },
      { addr: BigInt(end - 512), len: 4096, flags: Desc.WRITE | Desc.NEXT, next: 2 },
      { addr: BigInt(st), len: 1, flags: Desc.WRITE },
    ],
    { statusGpa: st },
  );
  t.same(r2, { status: BlkStatus.IOERR, usedLen: 1 }, 'buffer straddling the region end: IOERR');
  // an address whose end overflows 64 bits
  const r3 = await fe.submitRaw(
    0,
    [
      { addr: BigInt(hdr), len: 16, flags: Desc.NEXT, next: 1 },
      { addr: 0xffff_ffff_ffff_fe00n, len: 4096, flags: Desc.WRITE | Desc.NEXT, next: 2 },
      { addr: BigInt(st), len: 1, flags: Desc.WRITE },
    ],
    { statusGpa: st },
  );
  t.same(r3, { status: BlkStatus.IOERR, usedLen: 1 }, 'address + len overflowing 2^64: IOERR');
  await sameQueueStillWorks(t, fe);
  fe.close();
  await afterCase(t);
});

t.test('wrong direction', async (t) => {
  const fe = await open(t);
  const st = status(fe);
  const data = fe.alloc(randomBytes(4096));
  // OUT whose data buffer is device-writable
  const out = await fe.submitRaw(
    0,
    [
      { addr: BigInt(fe.header(BlkType.OUT, 8)), len: 16, flags: Desc.NEXT, next: 1 },
      { addr: BigInt(data), len: 4096, flags: Desc.WRITE | Desc.NEXT, next: 2 },
      { addr: BigInt(st), len: 1, flags: Desc.WRITE },
    ],
    { statusGpa: st },
  );
  t.equal(out.status, BlkStatus.IOERR, 'OUT with a writable data buffer: IOERR');
  // IN whose data buffer is device-readable
  const inn = await fe.submitRaw(
    0,
    [
      { addr: BigInt(fe.header(BlkType.IN, 8)), len: 16, flags: Desc.NEXT, next: 1 },
      { addr: BigInt(data), len: 4096, flags: Desc.NEXT, next: 2 },
      { addr: BigInt(st), len: 1, flags: Desc.WRITE },
    ],
    { statusGpa: st },
  );
  t.same(inn, { status: BlkStatus.IOERR, usedLen: 1 }, 'IN with a readable data buffer: IOERR');
  // the status byte itself device-readable: nothing may be written
  const before = fe.memory?.read(st, 1);
  const ro = await fe.submitRaw(0, [
    { addr: BigInt(fe.header(BlkType.IN, 8)), len: 16, flags: Desc.NEXT, next: 1 },
    { addr: BigInt(st), len: 1, flags: 0 },
  ]);
  t.equal(ro.usedLen, 0, 'no writable status: used len 0');
  t.same(fe.memory?.read(st, 1), before, 'and the readable status byte is untouched');
  await sameQueueStillWorks(t, fe);
  fe.close();
  await afterCase(t);
});

t.test('short header (8 bytes)', async (t) => {
  const fe = await open(t);
  const st = status(fe);
  const hdr = fe.header(BlkType.IN, 0);
  const data = fe.alloc(512);
  const r = await fe.submitRaw(
    0,
    [
      { addr: BigInt(hdr), len: 8, flags: Desc.NEXT, next: 1 },
      { addr: BigInt(data), len: 512, flags: Desc.WRITE | Desc.NEXT, next: 2 },
      { addr: BigInt(st), len: 1, flags: Desc.WRITE },
    ],
    { statusGpa: st },
  );
  t.same(r, { status: BlkStatus.IOERR, usedLen: 1 }, 'IOERR');
  await sameQueueStillWorks(t, fe);
  fe.close();
  await afterCase(t);
});

t.test('data length not a multiple of 512', async (t) => {
  const fe = await open(t);
  const rd = await fe.read(0, 0, 1000);
  t.same([rd.status, rd.usedLen], [BlkStatus.IOERR, 1], 'IN of 1000 bytes: IOERR');
  const wr = await fe.write(0, 0, randomBytes(700));
  t.same(wr, { status: BlkStatus.IOERR, usedLen: 1 }, 'OUT of 700 bytes: IOERR');
  await sameQueueStillWorks(t, fe);
  fe.close();
  await afterCase(t);
});

t.test('sector range past capacity', async (t) => {
  const fe = await open(t);
  const r1 = await fe.read(0, NUM_BLOCKS - 1, 1024);
  t.same([r1.status, r1.usedLen], [BlkStatus.IOERR, 1], 'read straddling the end: IOERR');
  const r2 = await fe.write(0, NUM_BLOCKS, randomBytes(512));
  t.same(r2, { status: BlkStatus.IOERR, usedLen: 1 }, 'write at capacity: IOERR');
  const r3 = await fe.read(0, 0xffff_ffff_ffff_fff0n, 4096);
  t.same([r3.status, r3.usedLen], [BlkStatus.IOERR, 1], 'sector near 2^64 (overflow): IOERR');
  const r4 = await fe.writeZeroes(0, [{ sector: NUM_BLOCKS - 4, numSectors: 8 }]);
  t.equal(r4.status, BlkStatus.IOERR, 'write zeroes past capacity: IOERR');
  await sameQueueStillWorks(t, fe);
  fe.close();
  await afterCase(t);
});

t.test('unknown request type', async (t) => {
  const fe = await open(t);
  const r = await fe.blkRequest(0, 0x55, 0n, null, 512);
  t.equal(r.status, BlkStatus.UNSUPP, 'UNSUPP (2)');
  await sameQueueStillWorks(t, fe);
  fe.close();
  await afterCase(t);
});
