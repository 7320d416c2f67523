/**
 * The command line against real vhostd processes: two targets on one core
 * (the second refuses, naming the core and the first one's pid, from SPDK's
 * per-core lock files), -f pid file, --rpcs-allowed enforced over the socket
 * but not on the -c config, --json-ignore-init-errors, and cores that do not
 * exist or are outside the process's affinity refused before anything starts.
 * Main-thread test; vhostd runs as child processes.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { native } from '../../bindings';
import { Daemon } from '../lib/daemon';
import { waitFor } from '../lib/wait';
import { repoRoot } from '../lib/repo';
import { rpcCall, RpcError } from '../lib/rpc';

const root = repoRoot();
const bin = path.join(root, 'bin', 'vhostd.js');
/** The highest core this process may use: where the targets run. */
const core = Math.max(...native.allowedCpus());
const lockFile = `/var/tmp/spdk_cpu_lock_${String(core).padStart(3, '0')}`;

function tmpdir(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-cli-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function serve(t: Test, args: string[], rpcSocket: string): Promise<Daemon> {
  const d = new Daemon('vhostd', process.execPath, [bin, ...args], { cwd: root });
  t.teardown(() => d.stop().then(() => undefined));
  await d.waitSocket(rpcSocket);
  return d;
}

/** Runs vhostd to its end (for command lines it must refuse). */
function runOnce(args: string[], command = process.execPath, pre: string[] = []): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, [...pre, bin, ...args], { cwd: root, timeout: 60_000 }, (err, _stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stderr });
    });
  });
}

async function rpcError(sock: string, method: string): Promise<RpcError | null> {
  try {
    await rpcCall(sock, method);
    return null;
  } catch (err) {
    if (err instanceof RpcError) return err;
    throw err;
  }
}

t.test('two targets on one core: the second refuses, naming the core and the holder', async (t) => {
  const dir = tmpdir(t);
  const aSock = path.join(dir, 'a.sock');
  const pidFile = path.join(dir, 'a.pid');
  const config = path.join(dir, 'config.json');
  fs.writeFileSync(
    config,
    JSON.stringify({
      subsystems: [
        {
          subsystem: 'bdev',
          config: [
            { method: 'bdev_malloc_create', params: { name: 'Malloc0', num_blocks: 256, block_size: 512 } },
            { method: 'bdev_malloc_create', params: { name: 'Malloc0', num_blocks: 256, block_size: 512 } },
            { method: 'bdev_malloc_create', params: { name: 'Malloc1', num_blocks: 256, block_size: 512 } },
          ],
        },
      ],
    }),
  );
  const a = await serve(
    t,
    ['-m', `[${core}]`, '-S', dir, '-r', aSock, '-f', pidFile, '-c', config, '--json-ignore-init-errors', '--rpcs-allowed', 'spdk_get_version,bdev_get_bdevs'],
    aSock,
  );
  const pid = a.child.pid as number;

  // -f: written once the start succeeded (just after the RPC socket is up).
  await waitFor(() => fs.existsSync(pidFile), 10_000, 'the pid file', 20);
  t.equal(fs.readFileSync(pidFile, 'utf8').trim(), String(pid), '-f wrote the pid');
  // The lock file, as SPDK's.
  t.equal(fs.readFileSync(lockFile).readInt32LE(0), pid, `${lockFile} names the holder as SPDK writes it`);

  // --json-ignore-init-errors: the duplicate failed, the replay went on; --rpcs-allowed did not stop the config.
  const bdevs = (await rpcCall(aSock, 'bdev_get_bdevs')) as Array<{ name: string }>;
  t.same(bdevs.map((b) => b.name).sort(), ['Malloc0', 'Malloc1'], 'the config replay continued past the failing call');
  t.match(a.log, /config call failed.*bdev_malloc_create/, 'the failing call is logged');

  // --rpcs-allowed over the socket.
  t.match(await rpcCall(aSock, 'spdk_get_version'), { version: /vhostd/ }, 'an allowed method answers');
  const denied = await rpcError(aSock, 'vhost_get_controllers');
  t.ok(denied, 'a method not in --rpcs-allowed is refused');
  t.equal(denied?.code, -32601);
  t.match(denied?.message ?? '', /Method not allowed/);

  // A second target on the same core.
  const bSock = path.join(dir, 'b.sock');
  const b = await runOnce(['-m', `[${core}]`, '-S', dir, '-r', bSock]);
  t.equal(b.code, 1, 'the second target exits 1');
  t.match(b.stderr, new RegExp(`cannot lock core ${core}: process ${pid} has claimed it`), 'naming the core and the holder');
  t.notOk(fs.existsSync(bSock), 'it never served RPC');
  t.match(await rpcCall(aSock, 'spdk_get_version'), { version: /vhostd/ }, 'the first target still serves');

  // --disable-cpumask-locks: a second target may share the core.
  const cSock = path.join(dir, 'c.sock');
  const c = await serve(t, ['-m', `[${core}]`, '-S', dir, '-r', cSock, '--disable-cpumask-locks'], cSock);
  t.match(await rpcCall(cSock, 'spdk_get_version'), { version: /vhostd/ }, '--disable-cpumask-locks starts beside it');
  t.equal((await c.stop()).code, 0);

  // A start that fails (the RPC socket is a live server's) leaves the running target's pid file alone.
  const d = await runOnce(['-m', `[${core}]`, '-S', dir, '-r', aSock, '-f', pidFile, '--disable-cpumask-locks']);
  t.equal(d.code, 1, 'a second target on the same RPC socket exits 1');
  t.match(d.stderr, /another server is listening/, 'saying why');
  t.equal(fs.readFileSync(pidFile, 'utf8').trim(), String(pid), 'the pid file still names the first target');

  const exit = await a.stop();
  t.equal(exit.code, 0, `the first target stops with 0\n${a.log}`);
  t.notOk(fs.existsSync(pidFile), 'the pid file is removed at exit');
  t.notOk(fs.existsSync(lockFile), 'the lock file is removed at exit');

  // Without --json-ignore-init-errors the same config stops the start.
  const strict = await runOnce(['-m', `[${core}]`, '-S', dir, '-r', path.join(dir, 'd.sock'), '-c', config]);
  t.equal(strict.code, 1, 'a failing config call fails the start');
  t.match(strict.stderr, /bdev_malloc_create failed/);
});

t.test('cores that do not exist or are not allowed are refused', async (t) => {
  const dir = tmpdir(t);
  const online = os.cpus().length;
  const missing = await runOnce(['-m', `[${online + 3}]`, '-S', dir, '-r', path.join(dir, 'x.sock')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, new RegExp(`core ${online + 3} does not exist on this host`));

  const taskset = ['/usr/bin/taskset', '/bin/taskset'].find((p) => fs.existsSync(p));
  t.ok(taskset, 'taskset (util-linux) is installed');
  if (taskset === undefined || native.allowedCpus().length < 2) return;
  const [first, second] = native.allowedCpus();
  const outside = await runOnce(['-m', `[${second}]`, '-S', dir, '-r', path.join(dir, 'y.sock')], taskset, ['-c', String(first), process.execPath]);
  t.equal(outside.code, 1);
  t.match(outside.stderr, new RegExp(`core ${second} is not allowed to this process \\(its CPU affinity is ${first}\\)`));
  t.notOk(fs.existsSync(path.join(dir, 'y.sock')), 'nothing was started');
});

t.test('an unknown option: our message and the exit status of a usage error', async (t) => {
  const r = await runOnce(['--no-such-flag']);
  t.equal(r.code, 2);
  t.equal(r.stderr, 'vhostd: unknown option --no-such-flag (see vhostd --help)\n');
});
