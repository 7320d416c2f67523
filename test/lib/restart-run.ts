/**
 * The restart-under-load scenario of issue #10, shared by the split and the
 * packed ring e2e tests: a Linux guest under QEMU 7.2 (`-chardev
 * socket,...,reconnect=1`) runs fio random writes with crc32c verification on
 * a uring file bdev over 2 queues; during the write phase vhostd is killed
 * with SIGKILL three times and stopped with SIGTERM once, each time started
 * again with the same config and socket paths. QEMU reconnects, hands back
 * the in-flight region (INFLIGHT_SHMFD) and the new process resubmits what
 * the dead one had in flight. fio must finish with 0 verify errors and the
 * guest kernel must log no I/O error.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { Daemon } from './daemon';
import { bootFioGuest } from './fio-guest';
import { assertCompleted, tail } from './guest-checks';
import { repoRoot } from './repo';
import { rpcCall } from './rpc';
import { waitRequestsHeld } from './vhostd';
import { waitFor } from './wait';

const DISK_BYTES = 256 << 20;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Requests the log says were resubmitted (per queue start). */
function resubmitted(log: string): number {
  let n = 0;
  for (const m of log.matchAll(/resubmitting requests in flight at the previous back-end .*count=(\d+)/g)) n += Number(m[1]);
  return n;
}

/** Run the scenario in `t`; `packed`: the controller offers packed rings and QEMU asks for them (`packed=on`). */
export async function restartUnderFio(t: Test, opts: { packed: boolean }): Promise<void> {
  const tag = opts.packed ? 'restart-packed' : 'restart';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vhostd-e2e-${tag}-`));
  const diskFile = `/dev/shm/vhostd-e2e-${tag}-${process.pid}.img`;
  const rpcSocket = path.join(dir, 'rpc.sock');
  const configFile = path.join(dir, 'vhostd.json');
  t.teardown(() => {
    fs.rmSync(diskFile, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** vhostd as an operator runs it: the same -S directory, RPC socket and config every time. */
  async function startTarget(): Promise<Daemon> {
    const d = new Daemon('vhostd', process.execPath, [
      path.join(repoRoot(), 'bin', 'vhostd.js'),
      '-m', '0x2',
      '-S', dir,
      '-r', rpcSocket,
      '-c', configFile,
      '--disable-cpumask-locks',
    ], { cwd: repoRoot() });
    await d.waitSocket(rpcSocket);
    return d;
  }


  fs.writeFileSync(diskFile, '');
  fs.truncateSync(diskFile, DISK_BYTES);
  fs.writeFileSync(
    configFile,
    JSON.stringify({
      subsystems: [
        {
          subsystem: 'bdev',
          config: [
            { method: 'bdev_uring_create', params: { name: 'Uring0', filename: diskFile } },
            // 1000 IOPS, below what the guest asks for: its requests wait inside vhostd, so every kill finds some in flight.
            { method: 'bdev_set_qos_limit', params: { name: 'Uring0', rw_ios_per_sec: 1000 } },
          ],
        },
        { subsystem: 'vhost_blk', config: [{ method: 'vhost_create_blk_controller', params: { ctrlr: 'vhost.0', dev_name: 'Uring0', cpumask: '0x2', ...(opts.packed ? { packed_ring: true } : {}) } }] },
      ],
    }),
  );
  let target = await startTarget();
  const logs: string[] = [];
  t.teardown(async () => {
    await target.stop();
  });

  const events: string[] = [];
  const g = bootFioGuest(
    { sockets: [{ path: path.join(dir, 'vhost.0'), kind: 'blk', numQueues: 2, reconnect: true, packed: opts.packed }] },
    `value features $(cat /sys/block/vda/device/features)
value ioerr $(dmesg | grep -ci 'i/o error')
`,
  );
  await Promise.race([g.started, g.run]);
  let kills = 0;
  for (const how of ['SIGKILL', 'SIGKILL', 'SIGKILL', 'SIGTERM'] as const) {
    if (g.done) break;
    await sleep(500 + Math.floor(Math.random() * 2500));
    if (g.done || g.writeDone) break;
    // The moment to kill: while the device holds requests (it nearly always does: QoS keeps them waiting).
    const held = await waitRequestsHeld((m, p) => rpcCall(rpcSocket, m, p), () => g.done);
    const old = target;
    if (how === 'SIGKILL') old.child.kill('SIGKILL');
    else old.child.kill('SIGTERM');
    const exit = await old.wait();
    logs.push(old.log);
    events.push(`${how} with ${held} in flight, exit=${JSON.stringify(exit)}`);
    if (how === 'SIGKILL') {
      kills++;
      t.equal(exit.signal, 'SIGKILL', `kill ${kills}: vhostd died`);
    } else {
      t.equal(exit.code, 0, 'SIGTERM: vhostd stopped gracefully');
    }
    target = await startTarget();
    // QEMU reconnects within a second and starts the device again.
    await waitFor(async () => target.log.includes('device started') || g.done, 60_000, 'QEMU reconnected', 100);
  }
  const run = await g.run;
  logs.push(target.log);
  const all = logs.join('\n');
  if (process.env.VHOSTD_RESTART_LOG) fs.writeFileSync(process.env.VHOSTD_RESTART_LOG, all);
  t.comment(`events: ${events.join(', ')}`);
  assertCompleted(t, run, 'guest');
  t.equal((run.values.get('features') ?? '')[34], opts.packed ? '1' : '0', `RING_PACKED ${opts.packed ? '' : 'not '}negotiated`);
  t.equal(kills, 3, 'three kills landed in the write phase');
  t.equal(events.length, 4, 'the SIGTERM landed in the write phase too');
  t.equal(run.results.get('fio_write'), 0, 'fio random writes completed without an error', { output: tail(run) });
  t.equal(run.results.get('fio_verify'), 0, 'fio crc32c verify: 0 errors', { output: tail(run) });
  t.equal(run.values.get('ioerr'), '0', 'the guest kernel logged no I/O error');
  t.notMatch(run.output, /I\/O error|blk_update_request|Buffer I\/O error/, 'no I/O error on the console');
  // logs[i] is the process started after event i-1 (logs[0]: the first one).
  const again = logs.map(resubmitted);
  t.comment(`requests resubmitted by each process: ${again.join(', ')}`);
  // The in-flight count is sampled over RPC just before the kill; requests can complete in
  // between (seen: 14 held, 0 left at the kill), so one kill may find none. The mechanism must
  // have worked for the kills together; fio's verify above is what proves nothing was lost.
  const resubmittedAfterKills = again.slice(1, 4).reduce((a, b) => a + b, 0);
  t.ok(resubmittedAfterKills > 0, `the kills caught requests in flight and the next processes resubmitted them (${again.slice(1, 4).join(' + ')})`);
  t.equal(again[4], 0, 'after SIGTERM nothing was in flight: a graceful stop completes every request first');
  t.match(all, /in-flight region set/, 'QEMU handed the in-flight region back');
  t.match(all, opts.packed ? /in-flight region offered.*layout=packed/ : /in-flight region offered.*layout=split/, 'the region in the layout of the ring');
}
