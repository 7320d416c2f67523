/**
 * vhostd-rpc's global flags from rpc.py against the real vhostd, each beside
 * SPDK's own rpc.py (../shared/peers/spdk-rpc, or $SPDK_RPC_DIR):
 *   -v            stderr byte for byte as rpc.py's -v (request and response)
 *   --verbose     DEBUG adds the connection steps; ERROR prints nothing extra
 *   --dry-run     the request rpc.py would print, nothing sent (no socket needed)
 *   -r N          a vhostd started after the call began is reached
 *   -t S          a reply that never comes (framework_wait_init under --wait-for-rpc) times out
 * Thread: test main thread.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../lib/repo';
import { runRpcPy, spdkRpcDir } from '../lib/spdk-rpc';
import { Daemon } from '../lib/daemon';
import { startVhostd } from '../lib/vhostd';

t.setTimeout(300_000);

const CLI = path.join(repoRoot(), 'bin', 'vhostd-rpc.js');

function vhostdRpc(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr, ms: Date.now() - started });
    });
  });
}

t.test('-v, --verbose and -t against a running vhostd, beside rpc.py', async (t) => {
  const rpcDir = spdkRpcDir();
  const v = await startVhostd({ cpumask: '0x1' });
  t.teardown(() => v.stop());

  const ours = await vhostdRpc(['-s', v.rpcSocket, '-v', 'spdk_get_version']);
  const theirs = await runRpcPy(rpcDir, ['-s', v.rpcSocket, '-v', 'spdk_get_version']);
  t.equal(ours.code, 0);
  t.equal(theirs.code, 0);
  t.match(ours.stderr, /^INFO: Log level set to 20\nINFO: Requests:\n\{\n {2}"jsonrpc": "2.0",\n {2}"method": "spdk_get_version",\n {2}"id": 1\n\}\n\nINFO: response:\n/);
  t.equal(ours.stderr, theirs.stderr, '-v: stderr as rpc.py prints it');
  t.equal(ours.stdout, theirs.stdout, 'stdout as rpc.py prints it');

  const vv = await vhostdRpc(['-s', v.rpcSocket, '-vv', 'bdev_get_bdevs']);
  t.equal(vv.code, 0);
  t.match(vv.stderr, /^INFO: Log level set to 20\n/, '-vv is INFO, as in rpc.py');

  const debug = await vhostdRpc(['-s', v.rpcSocket, '--verbose', 'DEBUG', 'bdev_get_bdevs', '-b', 'nope']);
  t.equal(debug.code, 1, 'the call fails: no such bdev');
  t.match(debug.stderr, `INFO: Log level set to 10\nDEBUG: Trying to connect to UNIX socket: ${v.rpcSocket}\nDEBUG: call('bdev_get_bdevs')\n`);
  t.match(debug.stderr, 'DEBUG: append request:\n{"jsonrpc": "2.0", "method": "bdev_get_bdevs", "id": 1, "params": {"name": "nope"}}\n');
  t.match(debug.stderr, /INFO: response:\n\{\n {2}"jsonrpc": "2.0",\n {2}"id": 1,\n {2}"error": \{\n {4}"code": -19,/);
  t.match(debug.stderr, /Got JSON-RPC error response/);

  const quiet = await vhostdRpc(['-s', v.rpcSocket, '--verbose', 'ERROR', 'spdk_get_version']);
  t.equal(quiet.stderr, '', '--verbose ERROR: no log lines');

  // -t: no reply comes for framework_wait_init while a --wait-for-rpc target waits for framework_start_init.
  const w = await startVhostd({ cpumask: '0x1', extraArgs: ['--wait-for-rpc'] });
  t.teardown(() => w.stop());
  const late = await vhostdRpc(['-s', w.rpcSocket, '-t', '0.5', 'framework_wait_init']);
  t.equal(late.code, 1, '-t 0.5: gives up');
  t.match(late.stderr, /no reply to framework_wait_init within 500 ms/);
  const inTime = await vhostdRpc(['-s', w.rpcSocket, '-t', '30', 'framework_start_init']);
  t.equal(inTime.code, 0, 'the target still answers the next call');
});

t.test('--dry-run prints the request rpc.py prints and connects to nothing', async (t) => {
  const rpcDir = spdkRpcDir();
  const nowhere = path.join(os.tmpdir(), `vhostd-no-such-socket-${process.pid}`);
  const cases = [
    ['bdev_malloc_create', '-b', 'Malloc9', '64', '512'],
    ['vhost_get_controllers', '-n', 'vhost.0'],
    ['spdk_get_version'],
  ];
  for (const args of cases) {
    const ours = await vhostdRpc(['-s', nowhere, '--dry-run', ...args]);
    const theirs = await runRpcPy(rpcDir, ['-s', nowhere, '--dry-run', ...args]);
    t.equal(ours.code, 0, `${args[0]}: exit 0 without a target`);
    t.equal(theirs.code, 0, `rpc.py ${args[0]}: exit 0`);
    t.equal(ours.stderr, '');
    t.match(ours.stdout, /^Request:\n/);
    const parse = (out: string): { method: string; params: Record<string, unknown> } => JSON.parse(out.replace(/^Request:\n/, ''));
    const a = parse(ours.stdout);
    const b = parse(theirs.stdout);
    t.equal(a.method, b.method, `${args[0]}: method`);
    // rpc.py's python helpers add their defaults (md_interleave...); every param vhostd-rpc sends must be rpc.py's too.
    for (const [k, x] of Object.entries(a.params)) t.same(x, b.params[k], `${args[0]}: params.${k} as rpc.py`);
  }
  t.notOk(fs.existsSync(nowhere));
});

t.test('-r N: a target that comes up while vhostd-rpc retries is reached', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-rpc-retry-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'later.sock');
  const none = await vhostdRpc(['-s', sock, '-r', '2', '--verbose', 'DEBUG', 'spdk_get_version']);
  t.equal(none.code, 1, 'no target: fails after the retries');
  t.match(none.stderr, /Error while connecting to .*later\.sock/);
  t.equal(none.stderr.split('\n').filter((l) => l === `DEBUG: Trying to connect to UNIX socket: ${sock}`).length, 3, '-r 2: two retries and the last attempt');

  // 300 retries = 60 s: the call starts first, vhostd afterwards.
  const pending = vhostdRpc(['-s', sock, '-r', '300', 'spdk_get_version']);
  const daemon = new Daemon('vhostd', process.execPath, [path.join(repoRoot(), 'bin', 'vhostd.js'), '-m', '0x1', '-S', dir, '-r', sock, '--disable-cpumask-locks']);
  t.teardown(() => daemon.stop());
  const got = await pending;
  t.equal(got.code, 0, got.code === 0 ? "reached after retrying" : `not reached: ${got.stderr}\n${daemon.log}`);
  t.match(got.stdout, /"version": "vhostd v/);
});
