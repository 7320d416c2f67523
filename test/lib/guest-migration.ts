/**
 * Live migration of the test guest under fio verify, for the e2e tests that
 * move a VM between vhostd controllers (test/e2e/guest-migrate*.test.ts): a
 * destination QEMU waits (`-incoming unix:...`), the source boots and starts
 * fio random writes with crc32c verification and a verify backlog, `migrate`
 * is sent from the source's HMP monitor mid-fio; fio must finish on the
 * destination, then a full verify pass there: 0 verify errors, no I/O error
 * in the guest kernel. Main-thread test helper.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type tap from 'tap';
import { bootGuest, type GuestRun } from './guest';
import { assertCompleted, tail } from './guest-checks';
import { waitFor } from './wait';

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** One HMP command on QEMU's monitor socket; resolves with its output (up to the next prompt). */
export async function hmp(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(socket);
    let out = '';
    let sent = false;
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`HMP ${command}: no prompt, got ${JSON.stringify(out)}`));
    }, 30_000);
    c.on('data', (d) => {
      out += d.toString('utf8');
      if (!sent && out.includes('(qemu)')) {
        sent = true;
        out = '';
        c.write(`${command}\n`);
      } else if (sent && out.includes('(qemu)')) {
        clearTimeout(timer);
        c.end();
        resolve(out.replace(/\r/g, ''));
      }
    });
    // `quit` gets no prompt: QEMU closes the monitor as it exits.
    c.on('close', () => {
      clearTimeout(timer);
      if (sent) resolve(out.replace(/\r/g, ''));
      else reject(new Error(`HMP ${command}: monitor closed before its prompt`));
    });
    c.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * The guest's script: fio writes with verify backlog (2 jobs of 24 MiB, 48 MiB
 * apart), then a full verify pass. The write phase is held to at most 800
 * writes/s a job (rate_iops), so it takes at least 7.7 s on any machine: the
 * migration (started 1.5 s into it, about 1 s long) ends before it does. An
 * unthrottled phase took 4 s on a quiet machine, and a fast CI machine once
 * finished it on the source during the migration.
 */
export const MIGRATION_SCRIPT = `
wait_for /dev/vda 150 || { echo "no /dev/vda"; exit 10; }
echo "@@MARK fio_start"
check fio_write fio --name=w --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randwrite --bs=4k --size=24M --numjobs=2 --offset_increment=48M --rate_iops=800 \\
  --verify=crc32c --verify_backlog=64 --verify_fatal=1 --do_verify=1 \\
  --cpus_allowed=0-1 --cpus_allowed_policy=split --group_reporting
echo "@@MARK write_done"
check fio_verify fio --name=w --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randwrite --bs=4k --size=24M --numjobs=2 --offset_increment=48M \\
  --verify=crc32c --verify_fatal=1 --verify_only --cpus_allowed=0-1 --cpus_allowed_policy=split --group_reporting
value ioerr $(dmesg | grep -ci 'i/o error')
`;

export interface MigrateOptions {
  /**
   * QEMU's downtime-limit (ms; default 2000): the source stops the guest once
   * the RAM still to send would take this long at the bandwidth QEMU has
   * estimated, and sends it all with the guest stopped — so this bounds the
   * RAM part of the downtime QEMU reports (on a loaded machine the estimate
   * is optimistic and the real pass takes longer).
   */
  downtimeLimitMs?: number;
}

export interface MigrationOutcome {
  source: GuestRun;
  dest: GuestRun;
  status: string;
  /** The console line showing that the destination guest's kernel crashed, if it did. */
  destCrash?: string;
}

/**
 * What a Linux guest prints when its kernel crashes (an oops, a BUG, a panic):
 * a whole line only, so a console read while it streams in never yields half of one.
 */
export const KERNEL_CRASH = /(?:BUG: |Oops: |Kernel panic|general protection fault)[^\n]*(?=\n)/;

/** The line of a guest console that shows its kernel crashed, or undefined. */
export function kernelCrash(guestConsole: string): string | undefined {
  return KERNEL_CRASH.exec(guestConsole)?.[0];
}

/** The first `lines` lines of a guest console from its crash line on (where it faulted, the call trace). */
function crashTrace(guestConsole: string, lines = 24): string {
  const at = KERNEL_CRASH.exec(guestConsole)?.index ?? guestConsole.length;
  return guestConsole.slice(at).split('\n').slice(0, lines).join('\n');
}

export interface CrashRetryOptions<T> {
  /** Runs in all, at most. */
  attempts: number;
  /**
   * For a case that needs a proof (a stale page): whether a run found it —
   * such a run counts, crash or not — and what to say of one that did not.
   * Without it, a run counts when its destination kernel did not crash.
   */
  proof?: { found: (o: T) => boolean; missing: string };
}

/**
 * Runs a migration case (`once`) again while its destination guest's kernel
 * crashed, up to `attempts` runs in all. At QEMU's default 300 ms downtime
 * limit, QEMU 7.2's TCG migration sometimes leaves memory only the guest CPU
 * writes out of step, and the destination kernel crashes right after the
 * switch-over — with qemu-storage-daemon as the back-end too (README, "Live
 * migration"; test/e2e/guest-migrate-dirtylog.test.ts). Such a run proves
 * nothing about the device either way. Every crash is shown (t.comment) and
 * counted; the caller judges the last run, so a verify or I/O error in a run
 * that did not crash still fails it, and so does a crash in the last run.
 */
export async function migrateAgainOnCrash<T extends { destCrash?: string; dest: GuestRun }>(
  t: tap.Test,
  tag: string,
  opts: CrashRetryOptions<T>,
  once: () => Promise<T>,
): Promise<{ last: T; crashes: number }> {
  let crashes = 0;
  for (let attempt = 1; ; attempt++) {
    const o = await once();
    if (o.destCrash !== undefined) crashes++;
    if (opts.proof ? opts.proof.found(o) : o.destCrash === undefined) return { last: o, crashes };
    const why = o.destCrash !== undefined ? `the destination kernel crashed (${o.destCrash})` : opts.proof?.missing;
    t.comment(`${tag}: attempt ${attempt}: ${why}${attempt < opts.attempts ? '; migrating again' : ''}`);
    if (o.destCrash !== undefined) t.comment(crashTrace(o.dest.output));
    if (attempt >= opts.attempts) return { last: o, crashes };
  }
}

/**
 * Boot the destination (waiting), the source, migrate mid-fio over a unix
 * socket in `dir`, quit the source. Disks: one vhost-user-blk (2 queues) on
 * `srcSocket` / `dstSocket`. `sourceBusy`, when given, is polled after fio
 * started until it says the source has done enough I/O (e.g. a write count
 * from bdev_get_iostat): the migration then surely starts mid-fio, not while
 * fio is still setting up in a slow guest.
 */
export async function migrate(
  t: tap.Test,
  dir: string,
  srcSocket: string,
  dstSocket: string,
  tag: string,
  sourceBusy?: () => Promise<boolean>,
  opts: MigrateOptions = {},
): Promise<MigrationOutcome> {
  const file = tag.replace(/[^a-z0-9]+/gi, '-');
  const migSocket = path.join(dir, `${file}.mig`);
  const srcMon = path.join(dir, `${file}.src.mon`);
  const dstMon = path.join(dir, `${file}.dst.mon`);
  // A case may migrate again under the same tag: no file of an earlier run may pass for this one's.
  for (const f of [migSocket, srcMon, dstMon]) fs.rmSync(f, { force: true });
  const common = { memMiB: 512, smp: 2, timeoutMs: 1_200_000, script: MIGRATION_SCRIPT };
  let destConsole = '';
  let destCrash: string | undefined;
  let stopCrashed: NodeJS.Timeout | undefined;
  const dest = bootGuest({
    ...common,
    sockets: [{ path: dstSocket, kind: 'blk', numQueues: 2 }],
    extraArgs: ['-monitor', `unix:${dstMon},server=on,wait=off`, '-incoming', `unix:${migSocket}`],
    // A crashed kernel may hang instead of panicking (panic=-1 ends QEMU): stop the destination 5 s
    // after the crash shows, time for the rest of the trace to reach the console.
    onOutput: (text) => {
      destConsole += text;
      if (destCrash !== undefined || (destCrash = kernelCrash(destConsole)) === undefined) return;
      stopCrashed = setTimeout(() => void hmp(dstMon, 'quit').catch(() => ''), 5000);
    },
  });
  // Once it has ended by itself (a panic), nothing may reach a later run's monitor at the same path.
  dest.finally(() => clearTimeout(stopCrashed)).catch(() => undefined);
  await waitFor(async () => fs.existsSync(dstMon) && fs.existsSync(migSocket), 60_000, 'destination QEMU listening', 100);

  let console_ = '';
  let started!: () => void;
  const fioStarted = new Promise<void>((r) => (started = r));
  const source = bootGuest({
    ...common,
    sockets: [{ path: srcSocket, kind: 'blk', numQueues: 2 }],
    extraArgs: ['-monitor', `unix:${srcMon},server=on,wait=off`],
    onOutput: (text) => {
      console_ += text;
      if (console_.includes('@@MARK fio_start')) started();
    },
  });
  let srcDone = false;
  void source.finally(() => (srcDone = true));
  // Whatever happens, no QEMU is left behind waiting for its timeout.
  const quitAll = async (): Promise<void> => {
    for (const mon of [srcMon, dstMon]) await hmp(mon, 'quit').catch(() => '');
  };
  try {
    await Promise.race([fioStarted, source]);
    // Let fio get going: the migration then runs while it writes and verifies.
    await sleep(1500);
    if (sourceBusy !== undefined) {
      await waitFor(
        async () => {
          if (srcDone) return true;
          return sourceBusy();
        },
        600_000,
        `${tag}: source I/O before the migration`,
        500,
      );
    }
    if (srcDone) throw new Error(`${tag}: the source QEMU ended before the migration:\n${(await source).output.slice(-4000)}`);
  } catch (err) {
    await quitAll();
    throw err;
  }
  t.notOk(console_.includes('@@MARK write_done'), `${tag}: fio still writing when the migration starts`);
  try {
    await runMigration(srcMon, migSocket, tag, t, opts.downtimeLimitMs ?? 2000);
  } catch (err) {
    await quitAll();
    throw err;
  }
  await hmp(srcMon, 'quit').catch(() => '');
  const src = await source;
  const dst = await dest;
  return { source: src, dest: dst, status: 'completed', destCrash };
}

async function runMigration(srcMon: string, migSocket: string, tag: string, t: tap.Test, downtimeLimitMs: number): Promise<void> {
  await hmp(srcMon, 'migrate_set_parameter max-bandwidth 2G');
  await hmp(srcMon, `migrate_set_parameter downtime-limit ${downtimeLimitMs}`);
  await hmp(srcMon, `migrate -d unix:${migSocket}`);
  let status = '';
  await waitFor(
    async () => {
      const info = await hmp(srcMon, 'info migrate');
      status = /Migration status: (\S+)/.exec(info)?.[1] ?? '';
      if (status === 'failed' || status === 'cancelled') throw new Error(`${tag}: migration ${status}:\n${info}`);
      return status === 'completed';
    },
    900_000,
    'migration completed',
    1000,
  );
  const srcInfo = await hmp(srcMon, 'info migrate');
  t.comment(`${tag}: ${srcInfo.split('\n').filter((l) => /status|total time|downtime|transferred ram|dirty sync count/i.test(l)).join('; ')}`);
}

/** Migrations done and runs with verify errors, for a test file's summary line. */
export interface MigrationTally {
  done: number;
  verifyErrors: number;
}

/** Check a run's outcome and count it in `tally`. */
export function checkOutcome(t: tap.Test, o: MigrationOutcome, tag: string, tally: MigrationTally): void {
  if (o.status === 'completed') tally.done++;
  if (o.dest.results.get('fio_verify') !== 0 || o.dest.results.get('fio_write') !== 0) tally.verifyErrors++;
  t.equal(o.status, 'completed', `${tag}: migration completed`);
  t.notOk(o.source.output.includes('@@MARK write_done'), `${tag}: the write phase did not end on the source`);
  t.ok(o.dest.output.includes('@@MARK write_done'), `${tag}: the write phase ended on the destination`);
  t.equal(o.destCrash, undefined, `${tag}: the destination guest's kernel did not crash`, { output: tail(o.dest) });
  assertCompleted(t, o.dest, `${tag} destination guest`);
  t.equal(o.dest.results.get('fio_write'), 0, `${tag}: fio write with verify backlog: 0 errors`, { output: tail(o.dest) });
  t.equal(o.dest.results.get('fio_verify'), 0, `${tag}: fio crc32c verify on the destination: 0 errors`, { output: tail(o.dest) });
  t.equal(o.dest.values.get('ioerr'), '0', `${tag}: the guest kernel logged no I/O error`);
  t.notMatch(o.dest.output, /I\/O error|blk_update_request|Buffer I\/O error|verify:/, `${tag}: no I/O or verify error on the console`);
}
