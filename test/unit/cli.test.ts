/**
 * Unit tests of the command line (reactor/cli-args.ts): SPDK's app flags and
 * what each one becomes, our messages for bad input, core checks against the
 * online and allowed CPUs; and of the per-core lock files (reactor/cpu-lock.ts)
 * against a lock held by a child process, in a temporary directory.
 * Runs on the tap main thread.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkCores, parseCli, parseCpuList, UsageError, type CliOptions } from '../../reactor/cli-args';
import { cpuLockPath, CpuLockError, CpuLocks, writePidFile } from '../../reactor/cpu-lock';

const FLAGS = ['app', 'bdev', 'engine', 'rpc', 'vhost', 'vhost_blk'];

function parse(argv: string[]): CliOptions {
  const r = parseCli(argv, FLAGS);
  if (typeof r === 'string') throw new Error(`expected options, got ${r}`);
  return r;
}

function usageError(argv: string[]): string {
  try {
    parseCli(argv, FLAGS);
  } catch (err) {
    if (err instanceof UsageError) return err.message;
    throw err;
  }
  throw new Error(`${argv.join(' ')} was accepted`);
}

t.test('defaults', async (t) => {
  const o = parse([]);
  t.same(o.cores, [0]);
  t.equal(o.rpcSocket, '/var/tmp/vhostd.sock');
  t.equal(o.socketDir, process.cwd());
  t.equal(o.pollMode, 'poll');
  t.equal(o.cpuLocks, true, 'per-core locks by default, as SPDK');
  t.equal(o.ignoreInitErrors, false);
  t.equal(o.printLevel, undefined);
  t.equal(o.pidFile, undefined);
  t.equal(o.rpcsAllowed, undefined);
  t.same(o.notes, []);
  t.equal(parseCli(['-h'], FLAGS), 'help');
  t.equal(parseCli(['--version'], FLAGS), 'version');
});

t.test('SPDK flags with SPDK meaning', async (t) => {
  const o = parse([
    '-m', '[0,2-3]', '-S', '/tmp/s', '-r', '/tmp/r.sock', '--config', 'c.json', '--json-ignore-init-errors',
    '--silence-noticelog', '--rpcs-allowed', 'spdk_get_version, bdev_get_bdevs', '-f', 'x.pid', '--disable-cpumask-locks',
    '--wait-for-rpc',
  ]);
  t.same(o.cores, [0, 2, 3]);
  t.equal(o.socketDir, '/tmp/s');
  t.equal(o.config, 'c.json', '--config is --json');
  t.equal(o.ignoreInitErrors, true);
  t.equal(o.printLevel, 'warn', '--silence-noticelog: warnings and errors only');
  t.same(o.rpcsAllowed, ['spdk_get_version', 'bdev_get_bdevs']);
  t.equal(o.pidFile, path.resolve('x.pid'));
  t.equal(o.cpuLocks, false);
  t.equal(o.waitForRpc, true);
  t.equal(parse(['-c', 'a.json']).config, 'a.json');
  t.equal(parse(['--json', 'a.json', '--config', 'a.json']).config, 'a.json');
  t.match(usageError(['--json', 'a.json', '--config', 'b.json']), /two different files/);
  t.equal(parse(['--silence-noticelog', '--log-level', 'debug']).printLevel, 'debug', 'an explicit --log-level wins');
  t.equal(parse(['-L', 'bdev']).printLevel, 'debug', '-L alone prints debug');
  t.same(parse(['-L', 'bdev', '-L', 'all']).logFlags, ['bdev', 'all']);
  t.match(usageError(['--rpcs-allowed', ' , ']), /at least one method/);
});

t.test('flags accepted with a note of what they do here', async (t) => {
  const o = parse(['-m', '0x3', '-s', '2G', '-u', '-e', '0xffff', '-i', '4', '-p', '1', '--interrupt-mode']);
  t.equal(o.pollMode, 'interrupt', '--interrupt-mode is SPDK\'s interrupt mode: sleep whenever idle');
  t.equal(o.mainCore, 1);
  t.equal(o.notes.length, 5, 'one note per flag that does nothing here');
  t.match(o.notes.join('\n'), /-p\/--main-core 1: accepted/);
  t.match(o.notes.join('\n'), /-s\/--mem-size: accepted/);
  t.match(o.notes.join('\n'), /-u\/--no-pci: accepted/);
  t.match(o.notes.join('\n'), /-e 0xffff: accepted/);
  t.match(o.notes.join('\n'), /-i\/--shm-id: accepted/);
  t.equal(parse(['--mem-size', '1024']).notes.length, 1);
  t.equal(parse(['--tpoint-group', 'bdev']).notes.length, 1, 'SPDK newer spelling of -e');
  t.equal(parse(['-i', '-1']).notes.length, 1, 'a negative shm id is a value, not an option');
  t.match(usageError(['-m', '0x3', '-p', '2']), /core 2 is not in the -m mask/);
  t.match(usageError(['-p', 'x']), /-p\/--main-core must be a whole number/);
  t.match(usageError(['-s', 'lots']), /-s\/--mem-size must be a size/);
  t.match(usageError(['--interrupt-mode', '--poll-mode', 'poll']), /contradict/);
  t.match(usageError(['--interrupt-mode', '--poll-mode', 'adaptive']), /contradict/);
  t.equal(parse(['--interrupt-mode', '--poll-mode', 'interrupt']).pollMode, 'interrupt');
  t.equal(parse(['--poll-mode', 'adaptive']).pollMode, 'adaptive');
});

t.test('bad command lines: our messages, not node:util', async (t) => {
  t.equal(usageError(['--bogus']), 'unknown option --bogus');
  t.equal(usageError(['-Z']), 'unknown option -Z');
  t.equal(usageError(['-m']), 'option -m needs a value');
  t.equal(usageError(['-m', '-c', 'x.json']), 'option -m needs a value');
  t.equal(usageError(['--no-pci=yes']), 'option --no-pci takes no value');
  t.equal(usageError(['extra']), 'unexpected argument: extra');
  t.match(usageError(['-m', 'zz']), /^-m: /);
  t.match(usageError(['-L', 'nope']), /unknown log flag nope \(known: app, bdev/);
  t.match(usageError(['--poll-mode', 'spin']), /--poll-mode must be poll, adaptive or interrupt/);
  t.match(usageError(['--socket-mode', '999']), /octal/);
});

t.test('cores must exist and be allowed', async (t) => {
  t.same(parseCpuList('0-3,8,10-11\n'), [0, 1, 2, 3, 8, 10, 11]);
  t.same(parseCpuList('0'), [0]);
  t.throws(() => parseCpuList('0-x'));
  t.equal(checkCores([0, 1], [0, 1], [0, 1]), null);
  t.equal(checkCores([2], [0, 1], [0, 1]), '-m: core 2 does not exist on this host (online CPUs: 0-1)');
  t.equal(checkCores([1], [0, 1, 2, 3], [0, 2, 3]), '-m: core 1 is not allowed to this process (its CPU affinity is 0,2-3)');
});

/** A child process that claims `cores` in `dir`, prints "held", and keeps them until killed. */
function holder(dir: string, cores: number[]): Promise<{ pid: number; kill: () => Promise<void> }> {
  const mod = path.resolve(__dirname, '../../reactor/cpu-lock.js');
  const code =
    `const { CpuLocks } = require(${JSON.stringify(mod)});` +
    `CpuLocks.claim(${JSON.stringify(cores)}, ${JSON.stringify(dir)}); process.stdout.write('held\\n'); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.stdout.once('data', () =>
      resolve({
        pid: child.pid as number,
        kill: async () => {
          child.kill('SIGKILL');
          await exited;
        },
      }),
    );
  });
}

t.test('per-core lock files: a held core is refused, naming the holder', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-cpulock-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  t.equal(cpuLockPath(7), '/var/tmp/spdk_cpu_lock_007', "SPDK's file names");

  const other = await holder(dir, [3]);
  t.teardown(other.kill);
  t.equal(fs.readFileSync(cpuLockPath(3, dir)).readInt32LE(0), other.pid, 'the file holds the pid as SPDK writes it (a 32-bit int)');

  let caught: unknown;
  try {
    CpuLocks.claim([2, 3], dir);
  } catch (err) {
    caught = err;
  }
  t.ok(caught instanceof CpuLockError, 'claiming a held core throws CpuLockError');
  const e = caught as CpuLockError;
  t.equal(e.core, 3);
  t.equal(e.holderPid, other.pid, "the holder's pid from F_GETLK");
  t.match(e.message, new RegExp(`cannot lock core 3: process ${other.pid} has claimed it`));
  t.notOk(fs.existsSync(cpuLockPath(2, dir)), 'all or nothing: core 2 was let go again');

  // A free core, and the held one once its holder is gone.
  await other.kill();
  const mine = CpuLocks.claim([2, 3], dir);
  t.same(mine.cores, [2, 3]);
  t.same(fs.readFileSync(cpuLockPath(3, dir)), Buffer.from(new Int32Array([process.pid]).buffer), 'exactly 4 bytes: the pid');
  mine.release();
  t.notOk(fs.existsSync(cpuLockPath(3, dir)), 'release removes the files');
  mine.release();
});

t.test('pid file: written, removed once, only if still ours', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-pid-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'v.pid');
  const remove = writePidFile(file);
  t.equal(fs.readFileSync(file, 'utf8'), `${process.pid}\n`);
  remove();
  t.notOk(fs.existsSync(file));
  const again = writePidFile(file);
  fs.writeFileSync(file, '1\n');
  again();
  t.equal(fs.readFileSync(file, 'utf8'), '1\n', "a successor's pid file stays");
});
