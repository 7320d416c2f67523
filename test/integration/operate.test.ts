/**
 * Running vhostd as a service (issue #14 item 7), against the real process:
 *   --socket-group  controller sockets get the group and mode 0660 before they
 *                   appear; the RPC socket stays 0600 and the process's group.
 *                   A non-root user of the group (made with useradd, removed
 *                   after) speaks vhost-user on the controller socket; the same
 *                   user is refused on the RPC socket, and `nobody` (not in the
 *                   group) on both.
 *   sd_notify       with NOTIFY_SOCKET (a Unix datagram socket a python3
 *                   receiver binds, as systemd does), vhostd sends READY=1 once
 *                   its RPC socket answers and STOPPING=1 when it stops.
 * Thread: test main thread.
 */
import t from 'tap';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Daemon } from '../lib/daemon';
import { repoRoot } from '../lib/repo';
import { rpcCall } from '../lib/rpc';
import { startVhostd } from '../lib/vhostd';
import { canConnect, waitFor } from '../lib/wait';

t.setTimeout(300_000);

/**
 * Run as `user` (its uid and primary gid, no supplementary groups but the
 * ones given): connect to `sock`, send vhost-user GET_FEATURES, print
 * "reply <request> <flags> <size>" or "error <code>".
 */
function connectAs(user: string, groups: string[], sock: string): string {
  const script = `
    const net = require('node:net');
    const s = net.connect(process.argv[1]);
    s.on('error', (e) => { console.log('error ' + e.code); process.exit(0); });
    s.on('connect', () => {
      const h = Buffer.alloc(12);
      h.writeUInt32LE(1, 0); h.writeUInt32LE(1, 4); h.writeUInt32LE(0, 8);
      s.write(h);
    });
    let got = Buffer.alloc(0);
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 12) { console.log('reply ' + got.readUInt32LE(0) + ' ' + got.readUInt32LE(4) + ' ' + got.readUInt32LE(8)); s.destroy(); process.exit(0); }
    });
    setTimeout(() => { console.log('error TIMEOUT'); process.exit(0); }, 20000);
  `;
  const groupArgs = groups.length > 0 ? [`--groups=${groups.join(',')}`] : ['--clear-groups'];
  const primary = execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim();
  return execFileSync('setpriv', [`--reuid=${user}`, `--regid=${primary}`, ...groupArgs, process.execPath, '-e', script, sock], { encoding: 'utf8', timeout: 60_000 }).trim();
}

/** useradd, retried while another process holds /etc/passwd's lock (exit 10). */
function addUser(name: string): void {
  for (let i = 0; ; i++) {
    const r = spawnSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', name], { encoding: 'utf8' });
    if (r.status === 0) return;
    if (i >= 20 || r.status !== 10) throw new Error(`useradd ${name}: exit ${r.status}: ${r.stderr}`);
    execFileSync('sleep', ['0.5']);
  }
}

function userdel(name: string): void {
  for (let i = 0; i < 20; i++) {
    const r = spawnSync('userdel', [name], { encoding: 'utf8' });
    if (r.status === 0 || r.status === 6 /* no such user */) return;
    execFileSync('sleep', ['0.5']);
  }
}

t.test('--socket-group: controller sockets for the group, RPC socket 0600; a non-root user connects', async (t) => {
  const root = process.getuid?.() === 0;
  const user = root ? `vhostd-t${process.pid}` : os.userInfo().username;
  if (root) {
    addUser(user);
    t.teardown(() => userdel(user));
  }
  const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
  const group = execFileSync('id', ['-gn', user], { encoding: 'utf8' }).trim();

  const v = await startVhostd({ cpumask: '0x1', extraArgs: ['--socket-group', group] });
  t.teardown(() => v.stop());
  // The -S directory must let the group through (mkdtemp made it 0700).
  fs.chmodSync(v.dir, 0o711);
  await v.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: 2048, block_size: 512 });
  await v.rpc('vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'Malloc0' });
  const ctrl = fs.statSync(v.socketOf('vhost.0'));
  t.ok(ctrl.isSocket());
  t.equal(ctrl.gid, gid, `controller socket's group is ${group}`);
  t.equal(ctrl.mode & 0o7777, 0o660, 'controller socket 0660');
  const rpcSock = fs.statSync(v.rpcSocket);
  t.equal(rpcSock.mode & 0o7777, 0o600, 'RPC socket stays 0600');
  t.equal(rpcSock.gid, process.getgid?.(), "RPC socket keeps the process's group");
  t.match(v.daemon.log, /controller sockets belong to the --socket-group .*mode=0660/);

  if (!root) {
    t.comment('not root: no second user can be made; the own group is checked above');
    return;
  }
  t.equal(connectAs(user, [], v.socketOf('vhost.0')), 'reply 1 5 8', `${user} (not root) gets GET_FEATURES' reply`);
  t.equal(connectAs(user, [], v.rpcSocket), 'error EACCES', `${user} cannot reach the RPC socket`);
  t.equal(connectAs('nobody', [], v.socketOf('vhost.0')), 'error EACCES', 'nobody (not in the group) cannot connect');
  t.equal(connectAs('nobody', [group], v.socketOf('vhost.0')), 'reply 1 5 8', 'nobody with the group as a supplementary group can');
  // The served front-end's connection closed; the controller still serves the next one.
  await waitFor(async () => ((await v.rpc('vhost_get_controllers', { name: 'vhost.0' })) as unknown[]).length === 1, 10_000, 'controller still listed');
});

t.test('--socket-group: an unknown group refuses to start, naming it', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-grp-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'vhostd.js'), '-m', '0x1', '-S', dir, '-r', path.join(dir, 'rpc.sock'), '--disable-cpumask-locks', '--socket-group', 'no-such-group-xyz'], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, /no group named no-such-group-xyz/);
  const bad = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'vhostd.js'), '--socket-group', 'a b'], { encoding: 'utf8', timeout: 60_000 });
  t.equal(bad.status, 2, 'a malformed name is a usage error');
});

t.test('sd_notify: READY=1 once the RPC socket answers, STOPPING=1 at stop', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-notify-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const notify = path.join(dir, 'notify');
  const rpcSocket = path.join(dir, 'rpc.sock');
  // The service manager's end: a datagram socket that prints each message as one JSON line.
  const receiver = spawn('python3', [
    '-c',
    'import socket,sys,json\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("bound",flush=True)\nwhile True:\n  m=s.recv(4096).decode()\n  print(json.dumps(m),flush=True)\n',
    notify,
  ]);
  t.teardown(() => receiver.kill('SIGKILL'));
  const messages: string[] = [];
  let buf = '';
  receiver.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line !== 'bound') messages.push(JSON.parse(line) as string);
      else messages.push('');
    }
  });
  await waitFor(async () => messages.length > 0, 30_000, 'receiver bound');
  messages.length = 0;

  const daemon = new Daemon('vhostd', process.execPath, [path.join(repoRoot(), 'bin', 'vhostd.js'), '-m', '0x1', '-S', dir, '-r', rpcSocket, '--disable-cpumask-locks'], {
    env: { ...process.env, NOTIFY_SOCKET: notify },
  });
  t.teardown(() => daemon.stop());
  await waitFor(async () => messages.length > 0, 60_000, 'READY=1');
  const ready = messages[0].split('\n');
  t.equal(ready[0], 'READY=1');
  t.ok(ready.includes(`MAINPID=${daemon.child.pid}`), 'MAINPID is the vhostd process (not a wrapper)');
  t.match(messages[0], new RegExp(`STATUS=serving on ${rpcSocket}`));
  // Ready means ready: the RPC socket answers as soon as the manager is told.
  t.ok(await canConnect(rpcSocket));
  t.match(await rpcCall(rpcSocket, 'spdk_get_version'), { version: /vhostd/ });
  const exit = await daemon.stop();
  t.equal(exit.code, 0);
  await waitFor(async () => messages.length > 1, 10_000, 'STOPPING=1');
  t.equal(messages[1], 'STOPPING=1');
});

t.test('packaging/systemd/vhostd.service passes systemd-analyze verify (ExecStart pointed at this checkout)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-unit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const unit = fs.readFileSync(path.join(repoRoot(), 'packaging', 'systemd', 'vhostd.service'), 'utf8');
  t.match(unit, /^Type=notify$/m, 'Type=notify (vhostd speaks sd_notify)');
  t.match(unit, /--socket-group /, 'controller sockets for the QEMU group');
  const file = path.join(dir, 'vhostd.service');
  fs.writeFileSync(file, unit.replaceAll('/usr/local/bin/vhostd', path.join(repoRoot(), 'bin', 'vhostd.js')));
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', file], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.error, undefined, 'systemd-analyze runs (Debian: systemd)');
  t.equal(r.status, 0, `verify: ${r.stderr}`);
  t.equal(r.stderr.trim(), '', 'no warnings');
});
