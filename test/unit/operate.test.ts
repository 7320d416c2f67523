/**
 * Operating pieces without a running target: --socket-group's parsing and
 * group lookup, the native listener's group (set before the socket appears),
 * and sd_notify's datagram to a path or an abstract address (a python3
 * receiver plays systemd).
 * Thread: test main thread.
 */
import t, { type Test } from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../../bindings';
import { parseCli, type CliOptions } from '../../reactor/cli-args';
import { sdNotify } from '../../reactor/sd-notify';
import { resolveGroup } from '../../reactor/unix-group';

const FLAGS = ['app'];

t.test('--socket-group parsing', async (t) => {
  const parse = (argv: string[]): CliOptions => parseCli(argv, FLAGS) as CliOptions;
  t.equal(parse([]).socketGroup, undefined);
  t.equal(parse(['--socket-group', 'kvm']).socketGroup, 'kvm');
  t.equal(parse(['--socket-group', 'libvirt-qemu']).socketGroup, 'libvirt-qemu');
  t.equal(parse(['--socket-group', '107']).socketGroup, '107');
  for (const bad of ['', 'a b', '../x', '-x', '99999999999', 'a:b']) {
    t.throws(() => parseCli(['--socket-group', bad], FLAGS), { code: 'ERR_USAGE' }, `--socket-group ${JSON.stringify(bad)} refused`);
  }
});

t.test('resolveGroup', async (t) => {
  const gid = process.getgid?.() ?? 0;
  const name = execFileSync('id', ['-gn'], { encoding: 'utf8' }).trim();
  t.equal(resolveGroup(name), gid, `${name} → ${gid}`);
  t.equal(resolveGroup(String(gid)), gid);
  t.equal(resolveGroup('4242'), 4242, 'a numeric gid needs no group entry (as chown)');
  t.throws(() => resolveGroup('no-such-group-xyz'), /no group named no-such-group-xyz/);
});

t.test('unixListen with a group: chown before the rename', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-listen-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const gid = process.getuid?.() === 0 ? 65534 : (process.getgid?.() ?? 0);
  const sock = path.join(dir, 's');
  const fd = native.unixListen(sock, 4, 0o660, gid);
  t.teardown(() => native.close(fd));
  const st = fs.statSync(sock);
  t.equal(st.gid, gid, 'group set');
  t.equal(st.mode & 0o7777, 0o660);
  t.same(fs.readdirSync(dir), ['s'], 'nothing left beside it');
  const plain = native.unixListen(path.join(dir, 'p'), 4, 0o600, -1);
  t.teardown(() => native.close(plain));
  t.equal(fs.statSync(path.join(dir, 'p')).gid, process.getgid?.(), '-1: the process group');
  t.throws(() => native.unixListen(path.join(dir, 'q'), 4, 0o600, -2), /gid must be an integer/);
  if (process.getuid?.() !== 0) {
    t.throws(() => native.unixListen(path.join(dir, 'r'), 4, 0o600, 0), { code: 'EPERM', syscall: 'chown' });
    t.notOk(fs.existsSync(path.join(dir, 'r')), 'a failed chown leaves no socket');
  }
});

/** A python3 datagram receiver bound at `addr` ('\0' prefix: abstract); resolves with the first message. */
function receiver(t: Test, addr: string): Promise<{ message: Promise<string> }> {
  const py = spawn('python3', ['-c', 'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\na=sys.argv[1]\ns.bind("\\0"+a[1:] if a.startswith("@") else a)\nprint("bound",flush=True)\nsys.stdout.write(s.recv(4096).decode()+"\\n--end--\\n")\nsys.stdout.flush()\n', addr]);
  t.teardown(() => py.kill('SIGKILL'));
  let out = '';
  return new Promise((resolveBound, reject) => {
    let resolveMessage: (m: string) => void = () => undefined;
    const message = new Promise<string>((r) => (resolveMessage = r));
    py.once('error', reject);
    py.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.startsWith('bound\n')) resolveBound({ message });
      const end = out.indexOf('\n--end--\n');
      if (end >= 0) resolveMessage(out.slice('bound\n'.length, end));
    });
  });
}

t.test('sdNotify: path and abstract NOTIFY_SOCKET, none, a bad one', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-notify-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'n');
  const r1 = await receiver(t, file);
  t.equal(sdNotify('READY=1\nSTATUS=x', { NOTIFY_SOCKET: file }), true);
  t.equal(await r1.message, 'READY=1\nSTATUS=x');
  const abstract = `@vhostd-test-${process.pid}`;
  const r2 = await receiver(t, abstract);
  t.equal(sdNotify('STOPPING=1', { NOTIFY_SOCKET: abstract }), true);
  t.equal(await r2.message, 'STOPPING=1');
  t.equal(sdNotify('READY=1', {}), false, 'no NOTIFY_SOCKET: nothing sent');
  t.throws(() => sdNotify('READY=1', { NOTIFY_SOCKET: 'relative' }), /neither an absolute path/);
  t.throws(() => sdNotify('READY=1', { NOTIFY_SOCKET: path.join(dir, 'absent') }), { code: 'ENOENT', syscall: 'sendto' });
});
