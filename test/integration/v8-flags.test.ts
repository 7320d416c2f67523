/**
 * vhostd runs with its V8 flags (reactor/v8-flags.ts): bin/vhostd.js
 * re-executes node with --max-semi-space-size=1, --heap-growing-percent=30
 * and --max-inlined-bytecode-size-cumulative=3000
 * in the same process (same pid, stdout and stderr kept, exit status passed
 * through; the engine workers inherit the flags), an operator's own values
 * (command line or NODE_OPTIONS) are left alone, and a failed execve leaves
 * stdio as it was.
 * The flag-name matching is a unit table.
 * Thread: test main thread.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../../bindings';
import { V8_FLAGS, missingV8Flags } from '../../reactor/v8-flags';
import { repoRoot } from '../lib/repo';
import { startVhostd } from '../lib/vhostd';

t.setTimeout(120_000);

const cmdline = (pid: number): string[] => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');

t.test('missingV8Flags: by name, any value, from argv or NODE_OPTIONS', async (t) => {
  const SEMI = '--max-semi-space-size=1';
  const GROW = '--heap-growing-percent=30';
  const INLINE = '--max-inlined-bytecode-size-cumulative=3000';
  t.same(V8_FLAGS, [SEMI, GROW, INLINE]);
  t.same(missingV8Flags([], undefined), [SEMI, GROW, INLINE]);
  t.same(missingV8Flags(['--require', 'x.js'], ''), [SEMI, GROW, INLINE]);
  t.same(missingV8Flags(['--max-semi-space-size=8'], undefined), [GROW, INLINE], 'an operator value on the command line wins');
  t.same(missingV8Flags(['--max-inlined-bytecode-size-cumulative=920'], undefined), [SEMI, GROW], 'V8 default given back explicitly');
  t.same(
    missingV8Flags(['--max_semi_space_size=8', '--heap_growing_percent=50', '--max_inlined_bytecode_size_cumulative=500'], undefined),
    [],
    'V8 spells them with underscores too',
  );
  t.same(missingV8Flags([], '--require y.js --max-semi-space-size=4'), [GROW, INLINE], 'or in NODE_OPTIONS');
  t.same(missingV8Flags(['--max-old-space-size=100', '--max-inlined-bytecode-size=100'], '--max-semi-space-size-x'), [SEMI, GROW, INLINE], 'other flags do not count');
});

t.test('the running vhostd has the flags, in the pid it was started as', async (t) => {
  const h = await startVhostd();
  t.teardown(() => h.stop());
  const pid = h.daemon.child.pid!;
  const args = cmdline(pid);
  for (const flag of V8_FLAGS) {
    t.ok(args.includes(flag), `${flag} in cmdline: ${args.join(' ')}`);
    t.equal(args.filter((a) => a.startsWith(flag.split('=')[0]!)).length, 1, `${flag} added once`);
  }
  t.ok(args.some((a) => a.endsWith(path.join('bin', 'vhostd.js'))), 'same script');
  await h.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 256, block_size: 512 });
  t.same(((await h.rpc('bdev_get_bdevs', { name: 'M0' })) as { name: string }[]).map((b) => b.name), ['M0'], 'and serves RPC');
  const exit = await h.stop();
  t.equal(exit.code, 0, 'exit 0 on SIGTERM');
});

t.test('stdout, stderr and the exit status pass through the exec', async (t) => {
  const bin = path.join(repoRoot(), 'bin', 'vhostd.js');
  const v = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8' });
  t.equal(v.status, 0);
  t.match(v.stdout, /^vhostd v\d+\.\d+\.\d+\n$/, 'stdout kept');
  const bad = spawnSync(process.execPath, [bin, '--bogus'], { encoding: 'utf8' });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /unknown option --bogus/, 'stderr kept');
  const own = spawnSync(process.execPath, ['--max-semi-space-size=4', '--heap-growing-percent=50', '--max-inlined-bytecode-size-cumulative=920', bin, '--version'], { encoding: 'utf8' });
  t.equal(own.status, 0);
  t.match(own.stdout, /^vhostd v/, 'runs with all three given on the command line');
  const env = spawnSync(process.execPath, ['--heap-growing-percent=50', bin, '--version'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '--max-semi-space-size=4' } });
  t.equal(env.status, 0);
  t.match(env.stdout, /^vhostd v/, 'and with the semi-space size in NODE_OPTIONS');
});

t.test('a failed execve throws the errno and keeps stdio', async (t) => {
  // /proc/self/fdinfo/N `flags:` (octal) has O_CLOEXEC (02000000) when the fd is close-on-exec.
  const fdFlags = (): string[] => [0, 1, 2].map((fd) => /^flags:\s+(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!);
  const before = fdFlags();
  t.throws(() => native.execve('/nonexistent/node', ['node'], []), { code: 'ENOENT' });
  t.throws(() => native.execve('/bin/true', ['a\0b'], []), /NUL/);
  t.throws(() => native.execve('/bin/true', 'x' as unknown as string[], []), TypeError);
  t.same(fdFlags(), before, 'stdio close-on-exec flags as before');
});
