/**
 * End-to-end: a guest memory table change during I/O (issue #10; SPDK
 * #3132). QEMU 7.2 starts with `-m 512,slots=2,maxmem=1G`; while the Linux
 * guest runs fio random writes with crc32c verification on a uring file bdev
 * over 2 queues, the test plugs a DIMM from the human monitor
 * (`object_add memory-backend-memfd,...,share=on` + `device_add pc-dimm`).
 * QEMU sends vhostd the new memory table (ADD_MEM_REG or SET_MEM_TABLE) while
 * requests are in flight (a QoS limit keeps some waiting inside vhostd);
 * vhostd quiesces, remaps and resumes. fio must
 * finish with 0 verify errors and the guest kernel must log no I/O error.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { bootFioGuest } from '../lib/fio-guest';
import { assertCompleted, tail } from '../lib/guest-checks';
import { startVhostd, waitRequestsHeld } from '../lib/vhostd';
import { hmpCommands } from '../lib/hmp';
import { waitFor } from '../lib/wait';

t.setTimeout(1_200_000);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-e2e-memhp-'));
const diskFile = `/dev/shm/vhostd-e2e-memhp-${process.pid}.img`;
const monitor = path.join(dir, 'hmp.sock');
t.teardown(() => {
  fs.rmSync(diskFile, { force: true });
  fs.rmSync(dir, { recursive: true, force: true });
});

const memoryUpdates = (log: string): number => (log.match(/memory updated/g) ?? []).length;

t.test('a DIMM plugged while fio verify writes: vhostd follows the new memory table, nothing is lost', async (t) => {
  fs.writeFileSync(diskFile, '');
  fs.truncateSync(diskFile, 256 << 20);
  const v = await startVhostd({ cpumask: '0x2' });
  t.teardown(() => v.stop());
  await v.rpc('bdev_uring_create', { name: 'Uring0', filename: diskFile });
  // 1000 IOPS, below what the guest asks for: its requests wait inside vhostd, so the table changes under requests in flight.
  await v.rpc('bdev_set_qos_limit', { name: 'Uring0', rw_ios_per_sec: 1000 });
  t.equal(await v.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.m', dev_name: 'Uring0' }), true);

  const g = bootFioGuest(
    {
      sockets: [{ path: v.socketOf('vhost.m'), kind: 'blk', numQueues: 2 }],
      memSlots: { slots: 2, maxMiB: 1024 },
      extraArgs: ['-monitor', `unix:${monitor},server=on,wait=off`],
    },
    "value ioerr $(dmesg | grep -ci 'i/o error')\n",
  );
  await Promise.race([g.started, g.run]);
  await new Promise((r) => setTimeout(r, 1500));
  const before = memoryUpdates(v.daemon.log);
  let inflightAtPlug = 0;
  let duringWrites = false;
  if (!g.done && !g.writeDone) {
    inflightAtPlug = await waitRequestsHeld(v.rpc, () => g.done, 'vhost.m');
    const outs = await hmpCommands(monitor, ['object_add memory-backend-memfd,id=m1,size=128M,share=on', 'device_add pc-dimm,id=d1,memdev=m1']);
    t.same(outs.map((o) => o.replace(/^.*\r?\n/, '').trim()), ['', ''], 'HMP accepted the backend and the DIMM');
    await waitFor(() => memoryUpdates(v.daemon.log) > before || g.done, 60_000, 'vhostd memory update', 100);
    duringWrites = !g.writeDone;
  }
  const run = await g.run;
  t.comment(`requests in flight when the DIMM was plugged: ${inflightAtPlug}`);
  assertCompleted(t, run, 'guest');
  t.ok(duringWrites, 'the memory table changed during the write phase');
  t.ok(inflightAtPlug > 0, `requests were in flight in vhostd just before the DIMM went in (${inflightAtPlug})`);
  t.ok(memoryUpdates(v.daemon.log) > before, 'vhostd remapped the running device');
  t.match(v.daemon.log, /memory updated.*regions=[2-9]/, 'with the DIMM as another region');
  t.equal(run.results.get('fio_write'), 0, 'fio random writes completed without an error', { output: tail(run) });
  t.equal(run.results.get('fio_verify'), 0, 'fio crc32c verify: 0 errors', { output: tail(run) });
  t.equal(run.values.get('ioerr'), '0', 'the guest kernel logged no I/O error');
  t.notMatch(run.output, /I\/O error|blk_update_request|Buffer I\/O error/, 'no I/O error on the console');
});
