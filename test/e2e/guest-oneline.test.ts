/**
 * `npm run guest` (bench/guest.ts), as a user runs it: builds/finds the test
 * guest, starts a vhostd --default of its own (none serves
 * /tmp/vhostd/vhost.0 here, or it uses that one), probes KVM, boots the
 * guest, which shows the disk and runs fio with verification; exit 0, the
 * vhostd it started is gone afterwards. Also: a --socket nothing serves is
 * exit 1 without booting, and the argument parsing.
 * Thread: test main thread.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseGuestArgs } from '../../bench/guest';
import { repoRoot } from '../lib/repo';

t.setTimeout(900_000);

const GUEST = path.join(repoRoot(), 'dist', 'bench', 'guest.js');

function run(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [GUEST, ...args], { timeout: 800_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, out: stdout + stderr });
    });
  });
}

t.test('argument parsing', async (t) => {
  t.same(parseGuestArgs([]), { socket: undefined, cpumask: '0x1', accel: 'auto', fioSeconds: 5, timeoutS: 600 });
  t.same(parseGuestArgs(['--socket', '/x', '--accel', 'tcg', '--fio-seconds', '2', '--cpumask', '0x2', '--timeout', '90']), { socket: '/x', cpumask: '0x2', accel: 'tcg', fioSeconds: 2, timeoutS: 90 });
  t.equal(parseGuestArgs(['-h']), 'help');
  t.throws(() => parseGuestArgs(['--accel', 'hvf']), /--accel must be auto, kvm or tcg/);
  t.throws(() => parseGuestArgs(['--fio-seconds', '0']), /--fio-seconds must be an integer/);
  t.throws(() => parseGuestArgs(['--bogus']), /Unknown option '--bogus'/);
});

t.test('a --socket nothing serves: exit 1, no boot', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-guest-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const r = await run(['--socket', path.join(dir, 'none')]);
  t.equal(r.code, 1);
  t.match(r.out, /nothing accepts connections on .*none/);
  t.notMatch(r.out, /booting the guest/);
});

t.test('npm run guest: its own vhostd --default, the guest sees the disk and fio verifies', async (t) => {
  const r = await run(['--fio-seconds', '3']);
  t.equal(r.code, 0, r.code === 0 ? 'exit 0' : r.out.slice(-4000));
  t.match(r.out, /\[guest\] accelerator: (kvm|tcg) \(/, 'says which accelerator and why');
  const started = /\[guest\] vhostd \(pid (\d+)\) serves the 256 MiB default disk on (\S+)/.exec(r.out);
  const reused = r.out.includes('using the running vhostd');
  t.ok(started !== null || reused, 'started a vhostd --default, or used the running one');
  t.match(r.out, /@@VALUE size 524288/, 'the guest sees 256 MiB (512-byte sectors)');
  t.match(r.out, /\[guest\] the guest saw \/dev\/vda \(256 MiB, 2 queues\); fio passed with verification/);
  t.match(r.out, /@@RESULT fio 0/);
  if (started) {
    let alive = true;
    try {
      process.kill(Number(started[1]), 0);
    } catch {
      alive = false;
    }
    t.notOk(alive, 'the vhostd it started has exited');
    t.notOk(fs.existsSync(started[2]), 'and its socket is gone');
  }
});
