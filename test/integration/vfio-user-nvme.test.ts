/**
 * The real vhostd process serving NVMe over vfio-user to the in-repo client
 * (bench/perf/vfio-user-client.ts): version negotiation, BAR0's region info
 * with the doorbell page as a sparse-mmap area (mapped here and rung
 * directly), DMA_MAP of a memfd, MSI-X eventfds, controller enable, admin
 * Identify, I/O queues, writes and reads through the engine worker, the
 * spec's statuses for bad commands, a namespace hot add raising the async
 * event, DMA_UNMAP/re-map, DEVICE_RESET, malformed messages closing the
 * connection with a logged reason, reconnects, and no fd left behind.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { native } from '../../bindings';
import { attachNvme, type AttachedNvme, Cmd, detachNvme, eventfdCount, sleep, VfioUserClient } from '../../bench/perf/vfio-user-client';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(180_000);

const NQN = 'nqn.2026-11.io.vhostd:int0';
const BASE = 0x100000;
const MEM = 4 << 20;
const ASQ = BASE;
const ACQ = BASE + 0x1000;
const SQ1 = BASE + 0x2000;
const CQ1 = BASE + 0x3000;
const IDBUF = BASE + 0x4000;
const DATA = BASE + 0x10000;
const QSIZE = 32;

function fdCount(v: VhostdHandle): number {
  return fs.readdirSync(`/proc/${v.daemon.child.pid}/fd`).length;
}

/** Connect, negotiate, map BAR0's doorbells and guest memory, give 2 MSI-X eventfds, enable. */
function attach(socket: string): Promise<AttachedNvme> {
  return attachNvme(socket, { memBase: BASE, memSize: MEM, asq: ASQ, acq: ACQ, aqSize: QSIZE, requireDoorbellMmap: true });
}

t.test('NVMe over vfio-user against the real process', async (t) => {
  const vhostd = await startVhostd({ cpumask: '0x2' });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-vfu-'));
  t.teardown(async () => {
    await vhostd.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });
  await vhostd.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: 16384, block_size: 512 });
  await vhostd.rpc('bdev_malloc_create', { name: 'Malloc1', num_blocks: 2048, block_size: 4096 });
  t.equal(await vhostd.rpc('nvmf_create_transport', { trtype: 'VFIOUSER' }), true);
  t.equal(await vhostd.rpc('nvmf_create_subsystem', { nqn: NQN, serial_number: 'INT0001', allow_any_host: true }), true);
  t.equal(await vhostd.rpc('nvmf_subsystem_add_ns', { nqn: NQN, namespace: { bdev_name: 'Malloc0' } }), 1, 'nsid 1 returned');
  await vhostd.rpc('bdev_null_create', { name: 'Null0', num_blocks: 2048, block_size: 512 });
  t.equal(await vhostd.rpc('nvmf_subsystem_add_ns', { nqn: NQN, namespace: { bdev_name: 'Null0', nsid: 3 } }), 3, 'nsid 3 (a null bdev) returned');
  const traddr = path.join(work, 'int0');
  t.equal(await vhostd.rpc('nvmf_subsystem_add_listener', { nqn: NQN, listen_address: { trtype: 'VFIOUSER', traddr, trsvcid: '0' } }), true);
  const socket = path.join(traddr, 'cntrl');
  const baseFds = fdCount(vhostd);

  await t.test('negotiation, region info, enable, identify, I/O, statuses, hot add, remap, reset', async (t) => {
    const probe = await VfioUserClient.connect(socket);
    const ver = await probe.version();
    t.equal(ver.major, 0, 'protocol major 0');
    t.match(ver.json, { capabilities: { max_msg_fds: Number, max_data_xfer_size: Number } }, 'JSON capabilities');
    const bar = await probe.regionInfo(0);
    t.equal(bar.size, 0x4000, 'BAR0 is 16 KiB');
    t.equal(bar.flags & 0x7, 0x7, 'BAR0 readable, writable, mappable');
    t.same(bar.areas, [{ offset: 0x1000, size: 0x1000 }], 'the doorbell page is the sparse-mmap area');
    t.ok(bar.fd >= 0, 'the BAR0 fd comes with the region info');
    native.close(bar.fd);
    const cfg = await probe.regionInfo(7);
    t.equal(cfg.size, 256, 'config space region');
    const id = await probe.read32(7, 0);
    t.equal(id & 0xffff, 0x4e58, 'vendor id');
    t.equal((await probe.read32(7, 8)) >>> 8, 0x010802, 'class code NVMe');
    probe.close();
    await sleep(100);

    const a = await attach(socket);
    let detached = false;
    t.teardown(() => {
      if (!detached) detachNvme(a);
    });
    const { drv } = a;
    t.pass('controller enabled (CSTS.RDY)');
    // Identify controller.
    let c = await drv.run(0, 0x06, (v, at) => {
      v.setUint32(at + 24, IDBUF, true);
      v.setUint32(at + 40, 1, true);
    });
    t.equal(c.status, 0, 'Identify controller succeeds');
    const sn = Buffer.from(drv.mem.subarray(drv.off(IDBUF) + 4, drv.off(IDBUF) + 24)).toString('latin1').trim();
    t.equal(sn, 'INT0001', 'serial number');
    t.ok(eventfdCount(a.irqs[0]) > 0, 'admin completions interrupt on MSI-X vector 0');
    // Number of queues, then CQ 1 (vector 1) and SQ 1.
    c = await drv.run(0, 0x09, (v, at) => {
      v.setUint32(at + 40, 0x07, true);
      v.setUint32(at + 44, 0x00010001, true); // 2 SQs, 2 CQs (0's based)
    });
    t.equal(c.status, 0, 'Set Features number of queues');
    c = await drv.run(0, 0x09, (v, at) => {
      v.setUint32(at + 40, 0x0b, true);
      v.setUint32(at + 44, 0x100, true); // namespace attribute notices
    });
    t.equal(c.status, 0, 'Set Features async event configuration');
    c = await drv.run(0, 0x05, (v, at) => {
      v.setUint32(at + 24, CQ1, true);
      v.setUint32(at + 40, 1 | ((QSIZE - 1) << 16), true);
      v.setUint32(at + 44, 0x3 | (1 << 16), true);
    });
    t.equal(c.status, 0, 'Create I/O CQ');
    c = await drv.run(0, 0x01, (v, at) => {
      v.setUint32(at + 24, SQ1, true);
      v.setUint32(at + 40, 1 | ((QSIZE - 1) << 16), true);
      v.setUint32(at + 44, 0x1 | (1 << 16), true);
    });
    t.equal(c.status, 0, 'Create I/O SQ');
    drv.addQueuePair(1, SQ1, CQ1, QSIZE);
    c = await drv.run(0, 0x05, (v, at) => {
      v.setUint32(at + 24, CQ1 + 0x1000, true);
      v.setUint32(at + 40, 2 | (4095 << 16), true);
      v.setUint32(at + 44, 0x3, true);
    });
    t.equal(c.status, 0x102, 'a CQ larger than CAP.MQES: Invalid Queue Size');
    c = await drv.run(0, 0x04, (v, at) => v.setUint32(at + 40, 1, true));
    t.equal(c.status, 0x10c, 'deleting a CQ before its SQ: Invalid Queue Deletion');

    // Write 8 blocks, read them back.
    for (let i = 0; i < 4096; i++) drv.mem[drv.off(DATA) + i] = (i * 7 + 3) & 0xff;
    eventfdCount(a.irqs[1]);
    c = await drv.run(1, 0x01, (v, at) => {
      v.setUint32(at + 4, 1, true);
      v.setUint32(at + 24, DATA, true);
      v.setUint32(at + 40, 100, true);
      v.setUint32(at + 48, 7, true);
    });
    t.equal(c.status, 0, 'Write 8 blocks');
    c = await drv.run(1, 0x02, (v, at) => {
      v.setUint32(at + 4, 1, true);
      v.setUint32(at + 24, DATA + 0x1000, true);
      v.setUint32(at + 40, 100, true);
      v.setUint32(at + 48, 7, true);
    });
    t.equal(c.status, 0, 'Read 8 blocks');
    t.same(drv.mem.subarray(drv.off(DATA) + 0x1000, drv.off(DATA) + 0x2000), drv.mem.subarray(drv.off(DATA), drv.off(DATA) + 0x1000), 'data reads back');
    t.ok(eventfdCount(a.irqs[1]) > 0, 'I/O completions interrupt on the CQ vector');
    c = await drv.run(1, 0x02, (v, at) => {
      v.setUint32(at + 4, 1, true);
      v.setUint32(at + 24, 0x10000000, true); // far outside the DMA window
      v.setUint32(at + 48, 0, true);
    });
    t.equal(c.status, 0x004, 'a PRP outside guest memory: Data Transfer Error');
    t.ok(c.dnr, 'with DNR');
    c = await drv.run(1, 0x02, (v, at) => {
      v.setUint32(at + 4, 1, true);
      v.setUint32(at + 24, DATA, true);
      v.setUint32(at + 40, 16383, true);
      v.setUint32(at + 48, 1, true);
    });
    t.equal(c.status, 0x080, 'past the namespace end: LBA Out of Range');
    c = await drv.run(1, 0x02, (v, at) => v.setUint32(at + 4, 5, true));
    t.equal(c.status, 0x00b, 'unknown namespace: Invalid Namespace');
    c = await drv.run(1, 0x7f, (v, at) => v.setUint32(at + 4, 1, true));
    t.equal(c.status, 0x001, 'unknown opcode: Invalid Opcode');

    // Hot add with an Asynchronous Event Request outstanding.
    const aerCid = drv.submit(0, 0x0c, () => {});
    await sleep(50);
    t.equal(await vhostd.rpc('nvmf_subsystem_add_ns', { nqn: NQN, namespace: { bdev_name: 'Malloc1', nsid: 2 } }), 2, 'hot add nsid 2');
    c = await drv.reap(0);
    t.equal(c.cid, aerCid, 'the AER completes');
    t.equal(c.dw0 & 0xffffff, 0x040002, 'namespace attribute changed, log page 4');
    c = await drv.run(0, 0x06, (v, at) => {
      v.setUint32(at + 4, 2, true);
      v.setUint32(at + 24, IDBUF, true);
      v.setUint32(at + 40, 0, true);
    });
    t.equal(c.status, 0, 'Identify namespace 2');
    t.equal(Number(drv.view.getBigUint64(drv.off(IDBUF), true)), 2048, 'NSZE of the hot-added namespace');
    c = await drv.run(1, 0x01, (v, at) => {
      v.setUint32(at + 4, 2, true);
      v.setUint32(at + 24, DATA, true);
      v.setUint32(at + 40, 0, true);
    });
    t.equal(c.status, 0, 'write to the new namespace (one 4 KiB block)');
    const changedList = async (): Promise<number[]> => {
      const r = await drv.run(0, 0x02, (v, at) => {
        v.setUint32(at + 24, IDBUF, true);
        v.setUint32(at + 40, 0x04 | (1023 << 16), true); // Changed Namespace List, 4 KiB
      });
      t.equal(r.status, 0, 'Get Log Page: changed namespace list');
      const out: number[] = [];
      for (let i = 0; i < 1024; i++) {
        const id = drv.view.getUint32(drv.off(IDBUF) + 4 * i, true);
        if (id === 0) break;
        out.push(id);
      }
      return out;
    };
    t.same(await changedList(), [2], 'the changed list names nsid 2 (reading it re-arms the event)');
    let aer = drv.submit(0, 0x0c, () => {});
    t.equal(await vhostd.rpc('nvmf_subsystem_remove_ns', { nqn: NQN, nsid: 2 }), true, 'hot remove nsid 2');
    c = await drv.reap(0);
    t.same([c.cid, c.dw0 & 0xffffff], [aer, 0x040002], 'hot remove raises the event');
    t.same(await changedList(), [2], 'and lists nsid 2');
    aer = drv.submit(0, 0x0c, () => {});
    t.equal(await vhostd.rpc('bdev_null_resize', { name: 'Null0', new_size: 2 }), true, 'bdev_null_resize of namespace 3');
    c = await drv.reap(0);
    t.same([c.cid, c.dw0 & 0xffffff], [aer, 0x040002], 'a resize raises the event');
    t.same(await changedList(), [3], 'and lists nsid 3');
    c = await drv.run(0, 0x06, (v, at) => {
      v.setUint32(at + 4, 3, true);
      v.setUint32(at + 24, IDBUF, true);
    });
    t.equal(Number(drv.view.getBigUint64(drv.off(IDBUF), true)), 4096, 'Identify namespace 3: the new NSZE');
    c = await drv.run(1, 0x02, (v, at) => {
      v.setUint32(at + 4, 2, true);
      v.setUint32(at + 24, DATA, true);
    });
    t.equal(c.status, 0x00b, 'the removed namespace is gone: Invalid Namespace');

    // DMA table changes while queues exist: unmap all, map again, I/O resumes.
    await a.client.dmaUnmap(BASE, MEM);
    await a.client.dmaMap(drv.memFd, BASE, MEM);
    c = await drv.run(1, 0x02, (v, at) => {
      v.setUint32(at + 4, 1, true);
      v.setUint32(at + 24, DATA + 0x2000, true);
      v.setUint32(at + 40, 100, true);
      v.setUint32(at + 48, 7, true);
    });
    t.equal(c.status, 0, 'I/O after the DMA table was replaced');
    t.same(drv.mem.subarray(drv.off(DATA) + 0x2000, drv.off(DATA) + 0x3000), drv.mem.subarray(drv.off(DATA), drv.off(DATA) + 0x1000), 'same data');

    // A doorbell past the queue size: CSTS.CFS.
    Atomics.store(drv.doorbells as Uint32Array, 2, QSIZE + 5);
    await drv.waitCsts((x) => (x & 2) !== 0);
    t.pass('a doorbell past the queue size sets CSTS.CFS');
    // The worker's log line travels through its stderr pipe: it may arrive after the bit is seen.
    for (let i = 0; i < 100 && !/CSTS\.CFS.*SQ 1 tail doorbell 37/.test(vhostd.daemon.log); i++) await new Promise((r) => setTimeout(r, 50));
    t.match(vhostd.daemon.log, /CSTS\.CFS.*SQ 1 tail doorbell 37/, 'the worker logged why');

    // DEVICE_RESET: registers back to reset values.
    await a.client.ok(Cmd.DEVICE_RESET);
    t.equal(await a.client.read32(0, 0x14), 0, 'CC 0 after DEVICE_RESET');
    await drv.waitCsts((x) => x === 0);
    t.pass('CSTS 0 after DEVICE_RESET');
    // The controller enables again after a reset.
    await drv.enable(ASQ, ACQ, QSIZE);
    c = await drv.run(0, 0x06, (v, at) => {
      v.setUint32(at + 24, IDBUF, true);
      v.setUint32(at + 40, 1, true);
    });
    t.equal(c.status, 0, 'Identify after the reset');
    detachNvme(a);
    detached = true;
    const subs = (await vhostd.rpc('nvmf_get_subsystems', { nqn: NQN })) as { namespaces: unknown[] }[];
    t.same(subs[0].namespaces.map((n) => (n as { nsid: number }).nsid), [1, 3], 'namespaces 1 and 3 left');
  });

  await t.test('malformed messages close the connection with a logged reason; the target serves the next client', async (t) => {
    const bad: [string, Uint8Array, RegExp][] = [
      ['a header whose size is below 16', Uint8Array.from([1, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), /protocol error/],
      ['a command before VERSION', Uint8Array.from([1, 0, 4, 0, 16 + 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, ...new Array(15).fill(0)]), /before VERSION/],
      ['a reply where a command must be', Uint8Array.from([1, 0, 1, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]), /protocol error/],
    ];
    for (const [what, bytes, reason] of bad) {
      const logBefore = vhostd.daemon.log.length;
      const c = await VfioUserClient.connect(socket);
      await c.sendRaw(bytes);
      t.ok(await c.waitClosed(), `${what}: the server closes the connection`);
      c.close();
      await waitFor(() => reason.test(vhostd.daemon.log.slice(logBefore)), 10_000, `log line for ${what}`);
      t.pass(`${what}: reason logged`);
    }
    // A DMA_MAP whose fd is not mappable memory: an error reply or a closed connection, never a crash.
    const c = await VfioUserClient.connect(socket);
    await c.version();
    const pipe = native.eventfd(0, 0);
    try {
      await c.dmaMap(pipe, BASE, MEM);
      t.fail('mapping an eventfd as guest memory must fail');
    } catch (err) {
      t.pass(`DMA_MAP of an eventfd refused (${(err as Error).message})`);
    }
    native.close(pipe);
    c.close();
    await sleep(100);
    const a = await attach(socket);
    t.teardown(() => detachNvme(a));
    const r = await a.drv.run(0, 0x06, (v, at) => {
      v.setUint32(at + 24, IDBUF, true);
      v.setUint32(at + 40, 1, true);
    });
    t.equal(r.status, 0, 'a well-behaved client is served afterwards');
    t.ok(vhostd.daemon.running, 'vhostd still runs');
  });

  await t.test('no fd left behind; delete removes the socket', async (t) => {
    await waitFor(() => fdCount(vhostd) <= baseFds, 10_000, 'fds back to baseline');
    t.pass(`fds back to ${baseFds}`);
    t.equal(await vhostd.rpc('nvmf_delete_subsystem', { nqn: NQN }), true);
    t.notOk(fs.existsSync(socket), 'socket removed');
    t.notOk(fs.existsSync(traddr), 'the listen directory vhostd created is removed');
    const bdevs = (await vhostd.rpc('bdev_get_bdevs', { name: 'Malloc0' })) as { claimed: boolean }[];
    t.equal(bdevs[0].claimed, false, 'the namespace bdev is released');
  });
});

t.test('vhostd stops cleanly while a vfio-user client is attached', async (t) => {
  const vhostd = await startVhostd({ cpumask: '0x2' });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-vfu-'));
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await vhostd.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });
  await vhostd.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: 16384, block_size: 512 });
  // The seed-era method: the socket is <-S dir>/<ctrlr>/cntrl.
  t.equal(await vhostd.rpc('vhost_create_nvme_controller', { ctrlr: 'vnvme.0', io_queues: 2 }), true);
  t.equal(await vhostd.rpc('vhost_nvme_controller_add_ns', { ctrlr: 'vnvme.0', bdev_name: 'Malloc0' }), true);
  const a = await attach(path.join(vhostd.socketOf('vnvme.0'), 'cntrl'));
  t.teardown(() => detachNvme(a));
  const c = await a.drv.run(0, 0x06, (v, at) => {
    v.setUint32(at + 24, IDBUF, true);
    v.setUint32(at + 40, 1, true);
  });
  t.equal(c.status, 0, 'Identify through the seed-era controller');
  const exit = await vhostd.stop();
  stopped = true;
  t.same({ code: exit.code, signal: exit.signal, killed: exit.killed }, { code: 0, signal: null, killed: false }, 'SIGTERM with a client attached: exit 0');
  t.ok(await a.client.waitClosed(), 'the client sees the connection close');
});
