/**
 * The restart-under-load scenario of issue #10, shared by the blk split and
 * packed ring e2e tests and the scsi one: a Linux guest (blk: QEMU 7.2's
 * vhost-user-blk-pci; scsi: QEMU 10.2's vhost-user-scsi-pci, which reconnects
 * and keeps an in-flight region since 8.2; `-chardev socket,...,reconnect=1`
 * or `reconnect-ms=1000`) runs fio random writes with crc32c verification on
 * a uring file bdev over 2 request queues; during the write phase vhostd is killed
 * with SIGKILL three times and stopped with SIGTERM once, each time started
 * again with the same config and socket paths. QEMU reconnects, hands back
 * the in-flight region (INFLIGHT_SHMFD) and the new process resubmits what
 * the dead one had in flight. fio must finish with 0 verify errors and the
 * guest kernel must log no I/O error.
 *
 * Per kill, the resubmission is checked exactly: the process is stopped
 * (SIGSTOP: nothing completes), what it holds in flight is counted per queue
 * from its memory (inflight-probe.ts: the shared region and the ring words
 * the spec's reconnect steps read), then it gets SIGKILL; the next process's
 * notices ("resubmitting requests in flight ... queue=Q count=N") must give
 * exactly those counts. A stop that finds nothing in flight is let go on
 * (SIGCONT) and taken again, so every kill proves something.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { Daemon } from './daemon';
import { bootFioGuest } from './fio-guest';
import { qemuVfioUser } from './guest';
import { assertCompleted, tail } from './guest-checks';
import { repoRoot } from './repo';
import { rpcCall } from './rpc';
import { countInflight, stopProcess, vhostRings } from './inflight-probe';
import { waitRequestsHeld } from './vhostd';
import { waitFor } from './wait';

const DISK_BYTES = 256 << 20;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Request queues of the device (scsi: after its control and event queues). */
const REQUEST_QUEUES = 2;

/** Requests a process's log says it resubmitted, per queue (its queue starts' notices) of `numQueues`. */
function resubmitted(log: string, numQueues: number): number[] {
  const n = new Array<number>(numQueues).fill(0);
  for (const m of log.matchAll(/resubmitting requests in flight at the previous back-end .*\bqueue=(\d+) count=(\d+)/g)) n[Number(m[1])] += Number(m[2]);
  return n;
}

function sum(a: number[]): number {
  return a.reduce((x, y) => x + y, 0);
}

/**
 * Run the scenario in `t`; `packed`: the controller offers packed rings and
 * QEMU asks for them (`packed=on`; blk only); `scsi`: a vhost-user-scsi
 * controller with the bdev as target 0 (the guest's sda) under QEMU 10.2,
 * instead of blk.
 */
export async function restartUnderFio(t: Test, opts: { packed: boolean; scsi?: boolean }): Promise<void> {
  const scsi = opts.scsi === true;
  // QEMU's vhost-user-scsi never negotiates packed rings (README, virtio-scsi support), so vhostd offers none for scsi.
  if (scsi && opts.packed) throw new RangeError('restartUnderFio: no packed rings for scsi');
  const tag = `restart${scsi ? '-scsi' : ''}${opts.packed ? '-packed' : ''}`;
  // Every queue of the device holds in-flight entries: scsi's control (0) and event (1) queues too.
  const numQueues = scsi ? 2 + REQUEST_QUEUES : REQUEST_QUEUES;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vhostd-e2e-${tag}-`));
  const diskFile = `/dev/shm/vhostd-e2e-${tag}-${process.pid}.img`;
  const rpcSocket = path.join(dir, 'rpc.sock');
  const monitor = path.join(dir, 'hmp.sock');
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
        scsi
          ? {
              subsystem: 'vhost_scsi',
              config: [
                { method: 'vhost_create_scsi_controller', params: { ctrlr: 'vhost.0', cpumask: '0x2' } },
                { method: 'vhost_scsi_controller_add_target', params: { ctrlr: 'vhost.0', scsi_target_num: 0, bdev_name: 'Uring0' } },
              ],
            }
          : { subsystem: 'vhost_blk', config: [{ method: 'vhost_create_blk_controller', params: { ctrlr: 'vhost.0', dev_name: 'Uring0', cpumask: '0x2', ...(opts.packed ? { packed_ring: true } : {}) } }] },
      ],
    }),
  );
  let target = await startTarget();
  const logs: string[] = [];
  t.teardown(async () => {
    await target.stop();
  });

  const events: string[] = [];
  const dev = scsi ? 'sda' : 'vda';
  // A scenario that fails half-way (a probe that throws) must not leave its guest running to the 15-minute timeout.
  const guestLife = new AbortController();
  t.teardown(() => guestLife.abort());
  const g = bootFioGuest(
    {
      signal: guestLife.signal,
      ...(scsi ? { qemu: qemuVfioUser() } : {}),
      sockets: [{ path: path.join(dir, 'vhost.0'), kind: scsi ? 'scsi' : 'blk', numQueues: REQUEST_QUEUES, reconnect: true, packed: opts.packed }],
      extraArgs: ['-monitor', `unix:${monitor},server=on,wait=off`],
    },
    `value features $(cat ${scsi ? '/sys/bus/virtio/drivers/virtio_scsi/virtio*/features' : '/sys/block/vda/device/features'})
value ioerr $(dmesg | grep -ci 'i/o error')
value ua $(dmesg | grep -ci 'power-on or device reset')
`,
    dev,
  );
  await Promise.race([g.started, g.run]);
  let kills = 0;
  /** Per kill: what the stopped process held in flight, per queue (counted from its memory), and the repair a restart applies. */
  const atKill: { perQueue: number[]; repair: string[]; tries: number }[] = [];
  for (const how of ['SIGKILL', 'SIGKILL', 'SIGKILL', 'SIGTERM'] as const) {
    if (g.done) break;
    await sleep(500 + Math.floor(Math.random() * 2500));
    if (g.done || g.writeDone) break;
    const old = target;
    const pid = old.child.pid as number;
    if (how === 'SIGKILL') {
      // Stop the process (nothing completes while it is stopped) and count what it holds; a moment
      // with nothing in flight would prove nothing: let it run on and stop it again.
      let counted: { perQueue: number[]; repair: string[] } | null = null;
      let tries = 0;
      while (counted === null && !g.done && !g.writeDone && tries < 50) {
        tries++;
        await waitRequestsHeld((m, p) => rpcCall(rpcSocket, m, p), () => g.done);
        const rings = await vhostRings(monitor, scsi ? 'scsi' : 'blk', numQueues);
        await stopProcess(pid);
        const c = countInflight(pid, rings, opts.packed);
        if (sum(c.perQueue) > 0) counted = c;
        else process.kill(pid, 'SIGCONT');
      }
      if (counted === null) break;
      atKill.push({ ...counted, tries });
      old.child.kill('SIGKILL');
    } else {
      // The moment to stop: while the device holds requests (it nearly always does: QoS keeps them waiting).
      await waitRequestsHeld((m, p) => rpcCall(rpcSocket, m, p), () => g.done);
      old.child.kill('SIGTERM');
    }
    const exit = await old.wait();
    logs.push(old.log);
    events.push(how === 'SIGKILL' ? `SIGKILL with ${atKill[atKill.length - 1].perQueue.join('+')} in flight` : `SIGTERM, exit=${JSON.stringify(exit)}`);
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
  // scsi: each new process's LU reports the power-on unit attention once (Linux logs it and retries the command).
  if (scsi) t.comment(`guest log lines "Power-on or device reset occurred": ${run.values.get('ua') ?? '?'}`);
  assertCompleted(t, run, 'guest');
  t.equal((run.values.get('features') ?? '')[34], opts.packed ? '1' : '0', `RING_PACKED ${opts.packed ? '' : 'not '}negotiated`);
  t.equal(kills, 3, 'three kills landed in the write phase');
  t.equal(events.length, 4, 'the SIGTERM landed in the write phase too');
  t.equal(run.results.get('fio_write'), 0, 'fio random writes completed without an error', { output: tail(run) });
  t.equal(run.results.get('fio_verify'), 0, 'fio crc32c verify: 0 errors', { output: tail(run) });
  t.equal(run.values.get('ioerr'), '0', 'the guest kernel logged no I/O error');
  t.notMatch(run.output, /I\/O error|blk_update_request|Buffer I\/O error/, 'no I/O error on the console');
  // logs[i] is the process started after event i-1 (logs[0]: the first one).
  const again = logs.map((l) => resubmitted(l, numQueues));
  t.comment(`requests resubmitted by each process, per queue: ${again.map((a) => a.join('+')).join(', ')}`);
  // Per kill, exactly what the stopped process held: counted from its memory (inflight-probe.ts) before SIGKILL.
  for (let k = 0; k < atKill.length; k++) {
    const held = atKill[k];
    t.ok(sum(held.perQueue) > 0, `kill ${k + 1}: the stopped process held requests (${held.perQueue.join('+')}, repair ${held.repair.join('/')}, stop ${held.tries})`);
    t.same(again[k + 1], held.perQueue, `kill ${k + 1}: the next process resubmitted exactly what was in flight, per queue`);
  }
  t.same(again[4], new Array<number>(numQueues).fill(0), 'after SIGTERM nothing was in flight: a graceful stop completes every request first');
  t.match(all, /in-flight region set/, 'QEMU handed the in-flight region back');
  t.match(all, opts.packed ? /in-flight region offered.*layout=packed/ : /in-flight region offered.*layout=split/, 'the region in the layout of the ring');
}
