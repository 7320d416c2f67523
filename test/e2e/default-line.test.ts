/**
 * `vhostd --default` prints a QEMU command line that works as printed: the
 * test runs the printed lines (only the "... your kernel/disk/console flags"
 * placeholder replaced by the test guest's kernel, initramfs and a serial
 * console) and the guest's kernel finds the 256 MiB disk. The line names
 * the accelerator the probe chose (-accel kvm or -accel tcg, never
 * accel=kvm:tcg), so it works on this host with or without working KVM.
 * Thread: test main thread.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Daemon } from '../lib/daemon';
import zlib from 'node:zlib';
import { cpioNewc, guestImage } from '../lib/guest';
import { repoRoot } from '../lib/repo';
import { waitFor } from '../lib/wait';

t.setTimeout(600_000);

t.test('the QEMU line vhostd --default prints boots a guest that sees the disk', async (t) => {
  const image = await guestImage();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-default-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const d = new Daemon('vhostd', process.execPath, [path.join(repoRoot(), 'bin', 'vhostd.js'), '--default', '-m', '0x1', '-S', dir, '-r', path.join(dir, 'rpc.sock'), '--disable-cpumask-locks'], { cwd: repoRoot() });
  t.teardown(() => d.stop());
  await waitFor(() => d.log.includes('Attach a VM with:') && /\.\.\. your kernel/.test(d.log), 60_000, 'the printed QEMU line', 100);

  const printed = d.log.slice(d.log.indexOf('Attach a VM with:'));
  const lines = printed.split('\n').slice(1);
  const cmd: string[] = [];
  for (const line of lines) {
    if (line.startsWith('#') || line.trim() === '') continue;
    if (line.trim().startsWith('...')) break;
    cmd.push(line.replace(/\\$/, '').trim());
  }
  const argv = cmd.join(' ').split(/\s+/);
  t.equal(argv[0], 'qemu-system-x86_64');
  t.match(argv.join(' '), /-accel (kvm|tcg) /, 'one accelerator, chosen by the probe');
  t.notMatch(argv.join(' '), /kvm:tcg/, 'never accel=kvm:tcg');
  t.comment(`accelerator: ${lines.find((l) => l.startsWith('#')) ?? '?'}`);

  // The test guest's /init loads the drivers and runs /test.sh (a second cpio on the base initramfs).
  const initrd = path.join(dir, 'initrd.img');
  fs.copyFileSync(image.initramfs, initrd);
  const script = 'for i in $(seq 100); do [ -e /sys/block/vda ] && break; sleep 0.1; done\necho "@@VALUE vda $(cat /sys/block/vda/size)"\n';
  fs.appendFileSync(initrd, zlib.gzipSync(cpioNewc([{ name: 'test.sh', mode: 0o100755, data: Buffer.from(script, 'utf8') }])));
  const qemu = spawn(argv[0], [...argv.slice(1), '-kernel', image.kernel, '-initrd', initrd, '-append', 'console=ttyS0 panic=-1', '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  qemu.stdout.on('data', (b: Buffer) => (out += b.toString()));
  qemu.stderr.on('data', (b: Buffer) => (out += b.toString()));
  t.teardown(() => {
    if (qemu.exitCode === null) qemu.kill('SIGKILL');
  });
  await waitFor(() => /@@VALUE vda/.test(out) || qemu.exitCode !== null, 400_000, 'the guest to report its disk', 200);
  t.match(out, /@@VALUE vda 524288\b/, `the guest sees the 256 MiB disk (524288 sectors)${qemu.exitCode !== null ? `; QEMU exited ${qemu.exitCode} ${String(qemu.signalCode)}: ${out.slice(-400)}` : ''}`);
  qemu.kill('SIGKILL');
});
