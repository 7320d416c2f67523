/**
 * Unit tests of the layout constants shared across the C++/TypeScript
 * boundary (bindings/layout.ts, bindings/src/layout.h): the built addon
 * agrees with the TypeScript copy; a mismatch names each constant; and the
 * loader (bindings/index.ts) refuses an addon with the wrong layout or no
 * layout, and says how to get one when there is no addon at all. Loader cases
 * run in child processes over a copy of dist/bindings in a temporary package
 * root. Runs on the tap main thread.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkLayout, Layout, LayoutError, layoutMismatches, native, PollEvents } from '../../bindings';
import { FileOp } from '../../bindings/native';
import { repoRoot } from '../lib/repo';

t.test('the built addon has this layout', async (t) => {
  t.same(layoutMismatches(native.layout), [], 'no mismatch');
  for (const name of Object.keys(Layout) as (keyof typeof Layout)[]) {
    t.equal(native.layout[name], Layout[name], name);
  }
  t.same(PollEvents, { Readable: Layout.POLL_READABLE, Writable: Layout.POLL_WRITABLE, Disconnect: Layout.POLL_DISCONNECT });
  t.equal(Layout.FILE_OP_PUNCH_ALLOC, FileOp.PunchAlloc);
  t.equal(Layout.FILE_OP_COUNT, FileOp.PunchAlloc + 1, 'FileOp codes are 0..FILE_OP_COUNT-1');
  t.ok(Object.isFrozen(native.layout), 'frozen');
});

t.test('a mismatch names each constant', async (t) => {
  const bad = { ...native.layout, FILE_REQ_WORDS: 7, MAX_FDS: 16 } as Record<string, number>;
  delete bad.POLL_WRITABLE;
  t.same(layoutMismatches(bad), [
    'FILE_REQ_WORDS: addon 7, vhostd 6',
    'MAX_FDS: addon 16, vhostd 8',
    'POLL_WRITABLE: addon missing, vhostd 2',
  ]);
  t.same(layoutMismatches(undefined), ['the addon exports no layout (built from older sources?)']);
  t.same(layoutMismatches({ ...native.layout, EXTRA: 1 }), [], 'constants the TypeScript does not know are allowed');
  const err = t.throws(() => checkLayout(bad, '/x/vhostd_native.node')) as LayoutError;
  t.ok(err instanceof LayoutError);
  t.equal(err.code, 'ERR_NATIVE_LAYOUT');
  t.match(err.message, /\/x\/vhostd_native\.node does not match .*FILE_REQ_WORDS: addon 7, vhostd 6; MAX_FDS: addon 16, vhostd 8; POLL_WRITABLE: addon missing/);
  t.match(err.message, /rebuild it/);
});

/** A package root holding a copy of dist/bindings, node_modules linked; `addon` (if any) is the build/Release/vhostd_native.node file's content. */
function fakeRoot(t: Test, addon: string | null): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-layout-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'binding.gyp'), '{}');
  fs.symlinkSync(fs.realpathSync(path.join(repoRoot(), 'node_modules')), path.join(dir, 'node_modules'));
  fs.cpSync(path.join(repoRoot(), 'dist', 'bindings'), path.join(dir, 'dist', 'bindings'), { recursive: true });
  if (addon !== null) {
    fs.mkdirSync(path.join(dir, 'build', 'Release'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'build', 'Release', 'vhostd_native.node'), addon);
  }
  return dir;
}

/** Loads `root`'s dist/bindings in a child where a .node file is a JSON module (a stand-in addon). */
function load(root: string): Promise<{ code: number | null; stderr: string }> {
  const code =
    "require.extensions['.node'] = (m, f) => { m.exports = JSON.parse(require('fs').readFileSync(f, 'utf8')); };" +
    `try { require(${JSON.stringify(path.join(root, 'dist', 'bindings', 'index.js'))}); } ` +
    "catch (e) { process.stderr.write(e.code + ' ' + e.message); process.exit(3); }";
  return new Promise((resolve) => {
    execFile(process.execPath, ['-e', code], { cwd: root }, (err, _stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stderr });
    });
  });
}

t.test('the loader refuses a wrong layout, naming the constants', async (t) => {
  const good = fakeRoot(t, JSON.stringify({ layout: Layout }));
  t.equal((await load(good)).code, 0, 'the stand-in with the right layout loads');
  const wrong = fakeRoot(t, JSON.stringify({ layout: { ...Layout, FILE_IOV_WORDS: 4 } }));
  const r = await load(wrong);
  t.equal(r.code, 3, 'a wrong layout throws at load');
  t.match(r.stderr, /^ERR_NATIVE_LAYOUT vhostd: the native addon .*vhostd_native\.node does not match .*\(FILE_IOV_WORDS: addon 4, vhostd 3\)/);
  const old = await load(fakeRoot(t, JSON.stringify({ eventfd: 1 })));
  t.match(old.stderr, /^ERR_NATIVE_LAYOUT .*the addon exports no layout/, 'an addon from older sources too');
});

t.test('no addon: the loader says how to build one', async (t) => {
  const r = await load(fakeRoot(t, null));
  t.equal(r.code, 3);
  t.match(r.stderr, /^ERR_NATIVE_ADDON vhostd: no native addon: .*build\/Release\/vhostd_native\.node does not exist and no prebuild in .*prebuilds fits linux-x64\. Build it from source/);
});
