/**
 * End-to-end: the dirty log matters (issue #10, Tests: "with logging disabled
 * the same test must be able to fail"). A guest on QEMU 7.2 migrates between
 * two controllers of one vhostd (one uring bdev on a shared file) through a
 * vhost-user proxy (test/lib/vhost-user-proxy.ts) while it runs stale-check
 * (test/guest-bin/stale-check.c: O_DIRECT reads of 16 distinct regions in
 * turn into one buffer the CPU never writes, each iteration re-checking that
 * the buffer still holds the region read last) and a fio write+verify loop.
 *
 * - transparent proxy: the migration carries the pages the device wrote
 *   (vhostd logs them): no stale page, no bad read, fio 0 verify errors —
 *   and the proxy is shown to be neutral.
 * - proxy stripping VHOST_F_LOG_ALL / VHOST_VRING_F_LOG (vhostd sees a
 *   migration without logging; vhostd has no switch for this): the
 *   destination's buffer holds what the device wrote before QEMU sent those
 *   pages, and stale-check reports stale pages there. The test asserts it
 *   does, so the positive case is shown to be able to fail.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type tap from 'tap';
import { bootGuest, type GuestRun } from '../lib/guest';
import { tail } from '../lib/guest-checks';
import { hmp } from '../lib/guest-migration';
import { buildStaleCheck, staleCheckScript, writeStop } from '../lib/stale-check';
import { VhostUserProxy, type ProxyMode } from '../lib/vhost-user-proxy';
import { startVhostd } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(900_000);

const DISK_BYTES = 128 << 20;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-e2e-dirtylog-'));
const diskFile = `/dev/shm/vhostd-e2e-dirtylog-${process.pid}.img`;
const staleCheck = buildStaleCheck(dir);

t.teardown(() => {
  fs.rmSync(diskFile, { force: true });
  fs.rmSync(dir, { recursive: true, force: true });
});

const tally = { migrations: 0, transparentStale: 0, strippedStale: 0, strippedCrashes: 0 };
/** What a Linux guest prints when its kernel crashes (an oops, a BUG, a panic). */
const KERNEL_CRASH = /BUG: [^\n]*|Oops: [^\n]*|Kernel panic[^\n]*|general protection fault[^\n]*/;

function count(text: string, re: RegExp): number {
  return (text.match(re) ?? []).length;
}

function timeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer!: NodeJS.Timeout;
  return Promise.race([p, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)))]).finally(() => clearTimeout(timer));
}

interface Outcome {
  source: GuestRun;
  dest: GuestRun;
  /** The destination's console (streamed, complete even if the guest had to be stopped). */
  destConsole: string;
  destStopped: boolean;
  /** The destination guest's kernel crashed (seen on its console). */
  destCrashed: boolean;
  vhostdLog: string;
  proxies: VhostUserProxy[];
}

async function run(t: tap.Test, mode: ProxyMode): Promise<Outcome> {
  fs.writeFileSync(diskFile, '');
  fs.truncateSync(diskFile, DISK_BYTES);
  const vhostd = await startVhostd();
  t.teardown(() => vhostd.stop());
  await vhostd.rpc('bdev_uring_create', { name: 'Uring0', filename: diskFile });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'src.0', dev_name: 'Uring0' });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'dst.0', dev_name: 'Uring0' });
  const srcProxy = new VhostUserProxy(path.join(dir, `${mode}.src.sock`), vhostd.socketOf('src.0'), mode);
  const dstProxy = new VhostUserProxy(path.join(dir, `${mode}.dst.sock`), vhostd.socketOf('dst.0'), mode);
  t.teardown(() => {
    srcProxy.close();
    dstProxy.close();
  });

  const migSocket = path.join(dir, `${mode}.mig`);
  const srcMon = path.join(dir, `${mode}.src.mon`);
  const dstMon = path.join(dir, `${mode}.dst.mon`);
  const common = { memMiB: 512, smp: 2, timeoutMs: 600_000, script: staleCheckScript(), files: [staleCheck] };
  let destConsole = '';
  const t0 = Date.now();
  const phases: string[] = [];
  const dest = bootGuest({
    ...common,
    sockets: [{ path: dstProxy.path, kind: 'blk', numQueues: 2 }],
    extraArgs: ['-monitor', `unix:${dstMon},server=on,wait=off`, '-incoming', `unix:${migSocket}`],
    onOutput: (text) => (destConsole += text),
  });
  await waitFor(async () => fs.existsSync(dstMon) && fs.existsSync(migSocket), 60_000, 'destination QEMU listening', 100);
  let srcConsole = '';
  const source = bootGuest({
    ...common,
    sockets: [{ path: srcProxy.path, kind: 'blk', numQueues: 2 }],
    extraArgs: ['-monitor', `unix:${srcMon},server=on,wait=off`],
    onOutput: (text) => (srcConsole += text),
  });
  let srcDone = false;
  void source.finally(() => (srcDone = true));
  const quitAll = async (): Promise<void> => {
    for (const mon of [srcMon, dstMon]) await hmp(mon, 'quit').catch(() => '');
  };
  try {
    // stale-check has run a few hundred iterations and fio is going: the migration runs under both.
    await waitFor(() => srcDone || count(srcConsole, /@@PROGRESS/g) >= 3, 300_000, `${mode}: stale-check running on the source`, 200);
    if (srcDone) throw new Error(`${mode}: the source QEMU ended before the migration:\n${(await source).output.slice(-4000)}`);
    const migrateAt = Date.now();
    phases.push(`source running ${((migrateAt - t0) / 1000).toFixed(0)} s`);
    // QEMU's default downtime limit (300 ms): it iterates, so most of the RAM goes in the
    // live passes — the pages the device rewrites after that are the ones the log must carry.
    // Should a slow TCG guest not converge in 60 s, the limit is raised.
    await hmp(srcMon, 'migrate_set_parameter max-bandwidth 2G');
    await hmp(srcMon, 'migrate_set_parameter downtime-limit 300');
    await hmp(srcMon, `migrate -d unix:${migSocket}`);
    let raised = false;
    await waitFor(
      async () => {
        const info = await hmp(srcMon, 'info migrate');
        const status = /Migration status: (\S+)/.exec(info)?.[1] ?? '';
        if (status === 'failed' || status === 'cancelled') throw new Error(`${mode}: migration ${status}:\n${info}`);
        if (!raised && Date.now() - migrateAt > 60_000) {
          raised = true;
          t.comment(`${mode}: no convergence within 60 s, downtime limit raised to 2000 ms`);
          await hmp(srcMon, 'migrate_set_parameter downtime-limit 2000');
        }
        return status === 'completed';
      },
      300_000,
      `${mode}: migration completed`,
      500,
    );
    const info = await hmp(srcMon, 'info migrate');
    t.comment(`${mode}: ${info.split('\n').filter((l) => /total time|downtime|transferred ram|dirty sync count/i.test(l)).join('; ')}`);
    tally.migrations++;
    phases.push(`migration ${((Date.now() - migrateAt) / 1000).toFixed(0)} s`);
  } catch (err) {
    await quitAll();
    throw err;
  }
  await hmp(srcMon, 'quit').catch(() => '');
  const src = await source;
  phases.push(`source quit ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  // Let the program run on the destination (or report what it found there), then stop it.
  // Without the log the destination may also find stale pages the kernel itself relies on (the used
  // ring, completed requests' memory): its kernel can then crash before stale-check reports anything.
  const crashed = (): boolean => KERNEL_CRASH.test(destConsole);
  const progressOnDest = await waitFor(() => /@@PROGRESS|@@STALE/.test(destConsole) || crashed(), 120_000, 'stale-check on the destination', 200).then(
    () => /@@PROGRESS|@@STALE/.test(destConsole),
    () => false,
  );
  const destCrashed = crashed();
  phases.push(`stale-check ${progressOnDest ? 'seen' : 'not seen'}${destCrashed ? ', guest kernel crashed,' : ''} on the destination ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  if (mode === 'transparent') t.ok(progressOnDest && !destCrashed, `${mode}: stale-check ran on the destination`, { console: destConsole.slice(-3000) });
  else t.ok(progressOnDest || destCrashed, `${mode}: stale-check ran on the destination, or its kernel crashed`, { console: destConsole.slice(-3000) });
  writeStop(diskFile);
  let dst = destCrashed ? ('timeout' as const) : await timeout(dest, 180_000);
  let destStopped = false;
  if (dst === 'timeout') {
    destStopped = true;
    await hmp(dstMon, 'quit').catch(() => '');
    dst = await dest;
  }
  phases.push(`destination done ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  t.comment(`${mode}: ${phases.join(', ')}`);
  return { source: src, dest: dst, destConsole, destStopped, destCrashed, vhostdLog: vhostd.daemon.log, proxies: [srcProxy, dstProxy] };
}

t.test('transparent proxy: the dirty log carries the device writes, nothing goes stale', async (t) => {
  const o = await run(t, 'transparent');
  const [src, dst] = o.proxies as [VhostUserProxy, VhostUserProxy];
  t.same(src.errors, [], 'the proxy forwarded every message');
  t.ok(src.counts.logAllSeen >= 1 && src.counts.vringLogSeen >= 1, 'QEMU asked the source for logging (LOG_ALL, VRING_F_LOG)', { counts: src.counts });
  t.equal(src.counts.stripped + dst.counts.stripped, 0, 'transparent: nothing changed on the way');
  t.match(o.vhostdLog, /dirty logging on/, 'vhostd logged into the dirty log');
  const staleEvents = count(o.destConsole, /@@STALE/g);
  tally.transparentStale += staleEvents;
  t.equal(o.destStopped, false, 'the destination guest finished by itself');
  t.equal(o.dest.exitCode, 0, 'destination guest script exited 0', { output: tail(o.dest) });
  t.equal(o.dest.results.get('stale_check'), 0, 'stale-check: 0 stale and 0 bad pages', { output: tail(o.dest) });
  t.equal(o.dest.values.get('stale_pages'), '0', 'no stale page on the destination');
  t.equal(o.dest.values.get('bad_pages'), '0', 'no bad read on the destination');
  t.notMatch(o.source.output, /@@STALE|@@BAD/, 'nothing stale or bad on the source either');
  t.ok(Number(o.dest.values.get('fio_runs') ?? 0) >= 1, `fio write+verify passes: ${o.dest.values.get('fio_runs')}`);
  t.equal(o.dest.values.get('fio_failed'), '0', 'fio: 0 verify errors', { output: tail(o.dest) });
  t.equal(o.dest.values.get('ioerr'), '0', 'the guest kernel logged no I/O error');
  t.comment(`transparent: ${o.dest.values.get('iterations')} stale-check iterations, ${o.dest.values.get('fio_runs')} fio passes`);
});

t.test('proxy stripping LOG_ALL and VRING_F_LOG: pages the device wrote go stale', async (t) => {
  const o = await run(t, 'strip-log');
  const [src] = o.proxies as [VhostUserProxy, VhostUserProxy];
  t.same(src.errors, [], 'the proxy forwarded every message');
  t.ok(src.counts.logAllSeen >= 1 && src.counts.stripped >= 2, 'the proxy stripped the logging bits QEMU sent', { counts: src.counts });
  t.notMatch(o.vhostdLog, /dirty logging on/, 'vhostd saw no logging request');
  t.notMatch(o.source.output, /@@STALE|@@BAD/, 'nothing stale on the source: the buffer only changes in the migration');
  const stale = o.destConsole.split('\n').filter((l) => l.startsWith('@@STALE'));
  tally.strippedStale += stale.length;
  const crash = KERNEL_CRASH.exec(o.destConsole)?.[0];
  t.ok(
    stale.length >= 1 || crash !== undefined,
    `the destination went wrong: ${stale[0] ?? (crash !== undefined ? `its kernel crashed (${crash})` : 'nothing stale, no crash')}`,
    { console: o.destConsole.slice(-3000) },
  );
  if (crash !== undefined) tally.strippedCrashes++;
  t.comment(
    `strip-log: ${stale.length} stale events${o.destCrashed ? ', destination kernel crashed' : ''}; stale_pages ${o.dest.values.get('stale_pages')}; fio failed passes ${o.dest.values.get('fio_failed')}` +
      ` of ${o.dest.values.get('fio_runs')}; destination ${o.destStopped ? 'had to be stopped' : `exited ${o.dest.exitCode}`}`,
  );
});

t.teardown(() => {
  console.log(`# migrations: ${tally.migrations}; stale events with the log: ${tally.transparentStale}, without: ${tally.strippedStale} (destination kernel crashes without: ${tally.strippedCrashes})`);
});
