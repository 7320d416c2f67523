/**
 * Issue #15 over the real socket: each finding of the hostile-front-end run
 * has a test here that failed on the code before its fix (named by finding),
 * plus the isolation test of item 2: a hostile front-end on one controller
 * while verified I/O runs on another and the RPC server keeps answering.
 * Thread: test main thread.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { native } from '../../bindings';
import { callFdThatBreaks } from '../lib/bad-input';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus, BlkType, blkHeader, encodeHeader, Flags, Req, vringFdPayload, vringState } from '../lib/frontend-wire';
import { FuzzTarget, type ControllerInfo } from '../fuzz/target';
import { nvmeAttach, nvmeSubsystem, nvmeVerifiedIo } from '../fuzz/nvme';
import { detachNvme } from '../../bench/perf/vfio-user-client';
import { waitFor } from '../lib/wait';

t.setTimeout(300_000);

let target: FuzzTarget;
t.before(async () => {
  target = await FuzzTarget.start();
});
t.teardown(async () => {
  await target?.stop();
});

let serial = 0;
async function controller(numBlocks = 4096): Promise<ControllerInfo> {
  return target.createBlk(`h15.${serial++}`, numBlocks);
}

function tmpDir(t: tap.Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-h15-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function tmpFifo(t: tap.Test): string {
  const fifo = path.join(tmpDir(t), 'f');
  execFileSync('mkfifo', [fifo]);
  return fifo;
}

function logSince(mark: number): string {
  return target.log().slice(mark);
}

t.test('finding 1 (engine side): a call fd that stops taking writes after adoption (EPIPE) closes the connection with a reason', async (t) => {
  const c = await controller();
  const fe = await VhostUserFrontend.connect(c.socket, 10_000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 1 << 20 }] });
  await fe.setupQueue(0, 16, { completion: 'poll' });
  t.equal((await fe.read(0, 0, 512)).status, BlkStatus.OK, 'I/O before');
  await callFdThatBreaks(fe, tmpDir(t));
  const mark = target.log().length;
  // The engine's next completion signal gets EPIPE.
  const io = fe.read(0, 0, 512).catch((e: Error) => e);
  const closed = await fe.channel.waitEof(10_000);
  t.ok(closed, `vhostd closed the connection (${fe.channel.endReason})`);
  await io;
  await waitFor(() => /front-end disconnected/.test(logSince(mark)), 5000, 'the disconnect log line');
  t.match(logSince(mark), /warn.*front-end disconnected.*device failed in the engine.*EPIPE/, 'logged with the reason, at warn level');
  fe.close();
  await target.verifiedIo(c);
  t.pass('the controller takes a new front-end');
});

t.test('finding 2: a 32768-entry queue over the real socket starts at once, serves verified I/O and gives its memory back', async (t) => {
  const c = await controller();
  const base = target.stats();
  await target.verifiedIo(c); // warm
  // The warm-up connection's teardown (its fds close on the main thread and in the worker) may still be under way.
  const before = await target.settleFds(base.fds);
  const fe = await VhostUserFrontend.connect(c.socket, 10_000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 4 << 20 }] });
  await fe.setupQueue(0, 32768, { timeoutMs: 30_000 });
  const ios = Array.from({ length: 64 }, async (_, i) => {
    const d = randomBytes(4096);
    const w = await fe.write(0, i * 8, d);
    const r = await fe.read(0, i * 8, 4096);
    return w.status === BlkStatus.OK && r.status === BlkStatus.OK && Buffer.from(r.data).equals(d);
  });
  t.ok((await Promise.all(ios)).every(Boolean), '64 verified writes + reads on the 32768-entry queue');
  const during = target.stats();
  fe.close();
  await target.verifiedIo(c); // the controller is free again
  const after = await target.settleFds(before.fds);
  t.comment(`fds before ${before.fds} during ${during.fds} after ${after.fds}; RSS before ${(before.rssKiB / 1024).toFixed(1)} MiB, with the queue ${(during.rssKiB / 1024).toFixed(1)} MiB, after ${(after.rssKiB / 1024).toFixed(1)} MiB`);
  t.ok(during.rssKiB - before.rssKiB < 64 * 1024, 'the queue costs far less than 64 MiB (it was ~33 B × qsize² = 35 GB before)');
  t.ok(after.rssKiB - before.rssKiB < 32 * 1024, 'and memory is back within 32 MiB of before once the connection closed');
  t.ok(after.fds <= before.fds, `fds back (${after.fds} after, ${before.fds} before)`);
});

t.test('finding 3: a data buffer spanning two guest-physically adjacent regions is served, not refused', async (t) => {
  const c = await controller();
  const fe = await VhostUserFrontend.connect(c.socket, 10_000, { waitAccepted: true });
  t.teardown(() => fe.close());
  const R = 1 << 20;
  await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: R }, { gpa: R, sizeBytes: R }] });
  await fe.setupQueue(0, 16);
  const m = fe.memory!;
  const data = randomBytes(8192);
  const buf = R - 4096; // 4 KiB in each region
  m.write(buf, data.subarray(0, 4096));
  m.write(R, data.subarray(4096));
  const hdr = fe.header(BlkType.OUT, 24, 0);
  const st = fe.alloc(1, 0);
  const w = await fe.submitRaw(0, [VhostUserFrontend.desc(hdr, 16, false, 1), VhostUserFrontend.desc(buf, 8192, false, 2), VhostUserFrontend.desc(st, 1, true)], { statusGpa: st });
  t.equal(w.status, BlkStatus.OK, 'a write from a buffer across the boundary');
  const r = await fe.read(0, 24, 8192);
  t.same(Buffer.from(r.data), data, 'the bdev holds both halves');
  m.bytes(buf, 4096).fill(0);
  m.bytes(R, 4096).fill(0);
  const hdr2 = fe.alloc(blkHeader(BlkType.IN, 24n), 0);
  const rr = await fe.submitRaw(0, [VhostUserFrontend.desc(hdr2, 16, false, 1), VhostUserFrontend.desc(buf, 8192, true, 2), VhostUserFrontend.desc(st, 1, true)], { statusGpa: st });
  t.equal(rr.status, BlkStatus.OK, 'a read into a buffer across the boundary');
  t.same(Buffer.concat([m.read(buf, 4096), m.read(R, 4096)]), data, 'both halves arrive');
});

t.test('finding 4: SET_VRING_BASE ≥ 65536 is refused at the message (REPLY_ACK failure), the connection carries on', async (t) => {
  const c = await controller();
  const fe = await VhostUserFrontend.connect(c.socket, 10_000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 1 << 20 }] });
  const mark = target.log().length;
  await fe.request(Req.SET_VRING_NUM, vringState(0, 16));
  await t.rejects(fe.request(Req.SET_VRING_BASE, vringState(0, 65536), [], { needReply: true }), { code: 'ENACK' }, 'nack');
  await waitFor(() => /65536/.test(logSince(mark)), 5000, 'the log line');
  t.match(logSince(mark), /queue 0 base 65536 does not fit a split ring's 16-bit index/, 'with the reason logged');
  await fe.setupQueue(0, 16);
  t.equal((await fe.read(0, 0, 512)).status, BlkStatus.OK, 'the connection still serves I/O');
});

t.test('finding 4: a front-end that closes with a reply unread is an info line, not a poll error', async (t) => {
  const c = await controller();
  const mark = target.log().length;
  for (let i = 0; i < 20; i++) {
    const fd = native.unixConnect(c.socket);
    native.sendMsg(fd, encodeHeader(Req.GET_FEATURES, Flags.VERSION, 0), null);
    native.close(fd);
    await new Promise((r) => setTimeout(r, 20));
  }
  await target.verifiedIo(c);
  const log = logSince(mark);
  t.notMatch(log, /libuv status/, 'no "poll failed: libuv status" line');
  t.notMatch(log, / error /, 'nothing at error level');
  t.match(log, /info.*front-end disconnected/, 'the disconnects are info lines');
});

t.test('isolation (item 2): a hostile front-end on one controller does not stall verified I/O on another, nor the RPC server', async (t) => {
  const bad = await controller();
  const good = await controller();
  let stop = false;
  // The hostile side: a blocking full FIFO as call fd, the largest queue, kicks, junk messages, reconnects.
  const fifo = tmpFifo(t);
  const filler = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  t.teardown(() => fs.closeSync(filler));
  for (;;) {
    try {
      fs.writeSync(filler, Buffer.alloc(65536, 1));
    } catch {
      break;
    }
  }
  let hostileRounds = 0;
  const hostile = (async () => {
    while (!stop) {
      const fe = await VhostUserFrontend.connect(bad.socket, 10_000, { waitAccepted: true });
      try {
        await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 4 << 20 }] });
        const q = await fe.setupQueue(0, 32768, { completion: 'poll' });
        await fe.request(Req.SET_VRING_CALL, vringFdPayload(0, false), [fs.openSync(fifo, fs.constants.O_WRONLY)]).catch(() => undefined);
        for (let i = 0; i < 200 && !stop; i++) {
          q.kick();
          await fe.sendRaw(new Uint8Array(randomBytes(12 + (i % 40)))).catch(() => undefined);
          if (fe.channel.eof) break;
        }
      } catch {
        // the target may close on the junk; that is what it should do
      } finally {
        fe.close();
      }
      hostileRounds++;
    }
  })();
  // The good side, and the RPC probe.
  let rpcMax = 0;
  let rpcCalls = 0;
  const rpcProbe = (async () => {
    while (!stop) {
      rpcMax = Math.max(rpcMax, await target.rpcPing(10_000));
      rpcCalls++;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const fe = await VhostUserFrontend.connect(good.socket, 10_000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 2 << 20 }] });
  await fe.setupQueue(0, 64);
  let ioMax = 0;
  let verified = 0;
  for (let i = 0; i < 300; i++) {
    const d = randomBytes(4096);
    const t0 = performance.now();
    const w = await fe.write(0, (i % 500) * 8, d);
    const r = await fe.read(0, (i % 500) * 8, 4096);
    ioMax = Math.max(ioMax, performance.now() - t0);
    if (w.status === BlkStatus.OK && r.status === BlkStatus.OK && Buffer.from(r.data).equals(d)) verified++;
  }
  stop = true;
  await Promise.all([hostile, rpcProbe]);
  t.comment(`bound: ${verified} verified write+read pairs, slowest ${ioMax.toFixed(1)} ms; ${rpcCalls} RPC calls, slowest ${rpcMax.toFixed(1)} ms; ${hostileRounds} hostile rounds`);
  t.equal(verified, 300, 'every write+read pair on the healthy controller verified (each within the front-end\'s 5 s deadline)');
  t.ok(rpcCalls > 0, 'the RPC server answered every call within its 10 s deadline');
  t.ok(target.alive(), 'vhostd lives');
});

t.test('item 4 (SIGBUS): with --require-sealed-memory, memory that could shrink is refused; sealed memory works and cannot shrink', async (t) => {
  const sealedTarget = await FuzzTarget.start({ extraArgs: ['--require-sealed-memory'] });
  t.teardown(() => sealedTarget.stop());
  const c = await sealedTarget.createBlk('h15.sealed', 4096);
  const mark = sealedTarget.log().length;
  const unsealed = await VhostUserFrontend.connect(c.socket, 10_000, { waitAccepted: true });
  t.teardown(() => unsealed.close());
  await t.rejects(unsealed.negotiate({ regions: [{ gpa: 0, sizeBytes: 1 << 20 }] }), 'an unsealed memfd region is refused');
  t.ok(await unsealed.channel.waitEof(5000), 'and the connection closed');
  await waitFor(() => /not sealed against shrinking/.test(sealedTarget.log().slice(mark)), 5000, 'the reason in the log');
  unsealed.close();

  const fe = await VhostUserFrontend.connect(c.socket, 10_000, { waitAccepted: true });
  t.teardown(() => fe.close());
  await fe.negotiate({ regions: [{ gpa: 0, sizeBytes: 1 << 20, sealed: true }] });
  await fe.setupQueue(0, 16);
  const d = randomBytes(4096);
  t.equal((await fe.write(0, 8, d)).status, BlkStatus.OK);
  t.same(Buffer.from((await fe.read(0, 8, 4096)).data), d, 'verified I/O on sealed memory');
  t.throws(() => native.ftruncate(fe.memory!.regions[0].fd, 4096), { code: 'EPERM' }, 'the front-end cannot shrink it under vhostd');
  t.equal((await fe.read(0, 8, 4096)).status, BlkStatus.OK, 'and vhostd goes on');
  t.ok(sealedTarget.alive());
});

t.test('item 4 (SIGBUS) for vfio-user: --require-sealed-memory refuses a DMA_MAP whose fd could shrink; sealed DMA windows work', async (t) => {
  // Before: the option covered vhost-user memory tables only; an NVMe-over-vfio-user driver's
  // unsealed memfd was mapped, and shrinking it under vhostd could SIGBUS the engine.
  const sealedTarget = await FuzzTarget.start({ extraArgs: ['--require-sealed-memory'] });
  t.teardown(() => sealedTarget.stop());
  const socket = await nvmeSubsystem(sealedTarget, tmpDir(t), 'h15seal', true);
  const mark = sealedTarget.log().length;
  await t.rejects(nvmeAttach(socket, false, false), /failed: errno 1$/, 'a DMA_MAP of an unsealed memfd gets an EPERM error reply');
  await waitFor(() => /DMA_MAP at 0x[0-9a-f]+: its fd is not sealed against shrinking/.test(sealedTarget.log().slice(mark)), 5000, 'the reason in the log');
  await nvmeVerifiedIo(socket, 8, true);
  t.pass('verified Write/Read through a sealed DMA window');
  const a = await nvmeAttach(socket, false, true);
  t.teardown(() => detachNvme(a));
  t.throws(() => native.ftruncate(a.drv.memFd, 4096), { code: 'EPERM' }, 'the driver cannot shrink its DMA window under vhostd');
  t.ok(sealedTarget.alive());
});
