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
 *
 * VHOSTD_DIRTYLOG_BACKEND=qsd runs the same cases against two
 * qemu-storage-daemon exports (QEMU's own back-end) instead of vhostd.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type tap from 'tap';
import { bootGuest, type GuestRun } from '../lib/guest';
import { tail } from '../lib/guest-checks';
import { hmp, kernelCrash, migrateAgainOnCrash } from '../lib/guest-migration';
import { buildStaleCheck, staleCheckScript, writeStop } from '../lib/stale-check';
import { VhostUserProxy, type ProxyMode } from '../lib/vhost-user-proxy';
import { startQsd } from '../lib/qsd';
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

/** VHOSTD_DIRTYLOG_BACKEND=qsd: the same test against qemu-storage-daemon (a comparison, not part of the suite's verdict on vhostd). */
const PEER = process.env.VHOSTD_DIRTYLOG_BACKEND === 'qsd';
let runs = 0;
const tally = { migrations: 0, transparentStale: 0, transparentCrashes: 0, strippedStale: 0, strippedCrashes: 0 };

function count(text: string, re: RegExp): number {
  return (text.match(re) ?? []).length;
}

function timeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer!: NodeJS.Timeout;
  return Promise.race([p, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)))]).finally(() => clearTimeout(timer));
}

interface Outcome {
  /** stale-check reported progress (or a stale page) on the destination. */
  progressOnDest: boolean;
  source: GuestRun;
  dest: GuestRun;
  /** The destination's console (streamed, complete even if the guest had to be stopped). */
  destConsole: string;
  destStopped: boolean;
  /** The console line showing that the destination guest's kernel crashed, if it did. */
  destCrash?: string;
  vhostdLog: string;
  proxies: VhostUserProxy[];
}

/**
 * The source and destination back-ends on the shared disk: two controllers of
 * one vhostd, or (VHOSTD_DIRTYLOG_BACKEND=qsd, to compare) two
 * qemu-storage-daemon exports, QEMU's own vhost-user-blk back-end.
 */
async function backends(t: tap.Test, file: string): Promise<{ src: string; dst: string; log: () => string }> {
  if (PEER) {
    const [src, dst] = ['src', 'dst'].map((s) => path.join(dir, `${file}.${s}.qsd`));
    for (const socketPath of [src, dst]) {
      const d = await startQsd({ image: diskFile, sizeBytes: DISK_BYTES, socketPath, numQueues: 2, shared: true });
      t.teardown(() => d.stop());
    }
    return { src, dst, log: () => '' };
  }
  const vhostd = await startVhostd();
  t.teardown(() => vhostd.stop());
  await vhostd.rpc('bdev_uring_create', { name: 'Uring0', filename: diskFile });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'src.0', dev_name: 'Uring0' });
  await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'dst.0', dev_name: 'Uring0' });
  return { src: vhostd.socketOf('src.0'), dst: vhostd.socketOf('dst.0'), log: () => vhostd.daemon.log };
}

async function run(t: tap.Test, mode: ProxyMode): Promise<Outcome> {
  fs.writeFileSync(diskFile, '');
  fs.truncateSync(diskFile, DISK_BYTES);
  // Each run its own socket and monitor files (a case may migrate more than once).
  const file = `${mode}-${++runs}`;
  const b = await backends(t, file);
  const srcProxy = new VhostUserProxy(path.join(dir, `${file}.src.sock`), b.src, mode);
  const dstProxy = new VhostUserProxy(path.join(dir, `${file}.dst.sock`), b.dst, mode);
  t.teardown(() => {
    srcProxy.close();
    dstProxy.close();
  });

  const migSocket = path.join(dir, `${file}.mig`);
  const srcMon = path.join(dir, `${file}.src.mon`);
  const dstMon = path.join(dir, `${file}.dst.mon`);
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
  const crashed = (): boolean => kernelCrash(destConsole) !== undefined;
  const progressed = (): boolean => /@@PROGRESS|@@STALE/.test(destConsole);
  const progressOnDest = await waitFor(() => progressed() || crashed(), 120_000, 'stale-check on the destination', 200).then(progressed, () => false);
  const destCrash = kernelCrash(destConsole);
  phases.push(`stale-check ${progressOnDest ? 'seen' : 'not seen'}${destCrash !== undefined ? ', guest kernel crashed,' : ''} on the destination ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  writeStop(diskFile);
  let dst = destCrash !== undefined ? ('timeout' as const) : await timeout(dest, 180_000);
  let destStopped = false;
  if (dst === 'timeout') {
    destStopped = true;
    await hmp(dstMon, 'quit').catch(() => '');
    dst = await dest;
  }
  phases.push(`destination done ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  t.comment(`${mode}: ${phases.join(', ')}`);
  return { progressOnDest, source: src, dest: dst, destConsole, destStopped, destCrash, vhostdLog: b.log(), proxies: [srcProxy, dstProxy] };
}

/**
 * A destination kernel crash in blk-mq's completion path (a used entry for a
 * request the guest had already freed) follows some migrations at this
 * downtime limit with vhostd (1 of 33 logged ones on 2026-11-30), and more
 * often with QEMU's own qemu-storage-daemon as the back-end (4 crashes and 3
 * hangs in 28): a fault of QEMU 7.2's TCG migration, not of the device (see
 * README, "Live migration"). Such a run proves nothing either way, so a case
 * migrates again (migrateAgainOnCrash), up to ATTEMPTS times in all; every
 * crash is counted and shown.
 */
const ATTEMPTS = 3;
const STRIP_ATTEMPTS = 5;

t.test('transparent proxy: the dirty log carries the device writes, nothing goes stale', async (t) => {
  const { last: o, crashes } = await migrateAgainOnCrash(t, 'transparent', { attempts: ATTEMPTS }, () => run(t, 'transparent'));
  tally.transparentCrashes += crashes;
  t.ok(o.progressOnDest && o.destCrash === undefined, 'transparent: stale-check ran on the destination', { console: o.destConsole.slice(-3000) });
  const [src, dst] = o.proxies as [VhostUserProxy, VhostUserProxy];
  t.same(src.errors, [], 'the proxy forwarded every message');
  t.ok(src.counts.logAllSeen >= 1 && src.counts.vringLogSeen >= 1, 'QEMU asked the source for logging (LOG_ALL, VRING_F_LOG)', { counts: src.counts });
  t.equal(src.counts.stripped + dst.counts.stripped, 0, 'transparent: nothing changed on the way');
  if (!PEER) t.match(o.vhostdLog, /dirty logging on/, 'vhostd logged into the dirty log');
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
  // The proof is a stale page. Whether one the device rewrote after QEMU sent it is still stale at
  // the end depends on when the last pass ran (about one migration in five finds nothing), and a
  // destination crash proves nothing (it happens with the log too): migrate again, up to
  // STRIP_ATTEMPTS times in all.
  const proof = { found: (o: Outcome) => /^@@STALE/m.test(o.destConsole), missing: 'nothing stale' };
  const { last: o, crashes } = await migrateAgainOnCrash(t, 'strip-log', { attempts: STRIP_ATTEMPTS, proof }, () => run(t, 'strip-log'));
  tally.strippedCrashes += crashes;
  const [src] = o.proxies as [VhostUserProxy, VhostUserProxy];
  t.same(src.errors, [], 'the proxy forwarded every message');
  t.ok(src.counts.logAllSeen >= 1 && src.counts.stripped >= 2, 'the proxy stripped the logging bits QEMU sent', { counts: src.counts });
  t.notMatch(o.vhostdLog, /dirty logging on/, 'vhostd saw no logging request');
  t.notMatch(o.source.output, /@@STALE|@@BAD/, 'nothing stale on the source: the buffer only changes in the migration');
  const stale = o.destConsole.split('\n').filter((l) => l.startsWith('@@STALE'));
  tally.strippedStale += stale.length;
  t.ok(stale.length >= 1, `the destination found a page the device wrote stale: ${stale[0] ?? 'nothing stale'}`, { console: o.destConsole.slice(-3000) });
  t.comment(
    `strip-log: ${stale.length} stale events; stale_pages ${o.dest.values.get('stale_pages')}; fio failed passes ${o.dest.values.get('fio_failed')}` +
      ` of ${o.dest.values.get('fio_runs')}; destination ${o.destStopped ? 'had to be stopped' : `exited ${o.dest.exitCode}`}`,
  );
});

t.teardown(() => {
  console.log(
    `# migrations: ${tally.migrations}; stale events with the log: ${tally.transparentStale}, without: ${tally.strippedStale}; destination kernel crashes with the log: ${tally.transparentCrashes}, without: ${tally.strippedCrashes}`,
  );
});
