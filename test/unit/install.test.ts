/**
 * Unit tests of npm's install step (scripts/install.js) in a temporary
 * package root, with a stand-in node-gyp (npm_config_node_gyp) that records
 * where it was asked to build and "builds" by copying the real addon: a
 * prebuild that loads is used as is; no prebuild, or one that does not load,
 * is built from source, for each addon in its own directory; a failed build
 * of the required addon fails the install, of bench's addon only warns.
 * Runs on the tap main thread; install.js runs as a child process.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addonPath } from '../../bindings';
import { repoRoot } from '../lib/repo';

const root = repoRoot();
const realAddon = addonPath(root);

/** The stand-in: logs its cwd; "builds" build/Release/<target>.node unless the cwd is listed in FAIL_IN. */
const FAKE_GYP = `
const fs = require('fs'), path = require('path');
fs.appendFileSync(process.env.GYP_LOG, process.cwd() + ' ' + process.argv.slice(2).join(' ') + '\\n');
if ((process.env.FAIL_IN || '').split(':').includes(process.cwd())) process.exit(1);
const target = /"target_name": "([^"]+)"/.exec(fs.readFileSync('binding.gyp', 'utf8'))[1];
fs.mkdirSync('build/Release', { recursive: true });
fs.copyFileSync(process.env.REAL_ADDON, path.join('build/Release', target + '.node'));
`;

interface Pkg {
  dir: string;
  bench: string;
  log: string;
  gyp: string;
}

function pkg(t: Test): Pkg {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-install-')));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'scripts'));
  fs.copyFileSync(path.join(root, 'scripts', 'install.js'), path.join(dir, 'scripts', 'install.js'));
  fs.copyFileSync(path.join(root, 'binding.gyp'), path.join(dir, 'binding.gyp'));
  const bench = path.join(dir, 'bench', 'native');
  fs.mkdirSync(bench, { recursive: true });
  fs.copyFileSync(path.join(root, 'bench', 'native', 'binding.gyp'), path.join(bench, 'binding.gyp'));
  fs.symlinkSync(fs.realpathSync(path.join(root, 'node_modules')), path.join(dir, 'node_modules'));
  const gyp = path.join(dir, 'fake-node-gyp.js');
  fs.writeFileSync(gyp, FAKE_GYP);
  return { dir, bench, log: path.join(dir, 'gyp.log'), gyp };
}

function install(p: Pkg, env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string; builds: string[] }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(p.dir, 'scripts', 'install.js')],
      { cwd: p.dir, env: { ...process.env, npm_config_node_gyp: p.gyp, GYP_LOG: p.log, REAL_ADDON: realAddon, npm_config_build_from_source: '', ...env } },
      (err, _stdout, stderr) => {
        const builds = fs.existsSync(p.log) ? fs.readFileSync(p.log, 'utf8').trim().split('\n') : [];
        fs.rmSync(p.log, { force: true });
        resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stderr, builds });
      },
    );
  });
}

function prebuild(dir: string, name: string, content?: string): void {
  const d = path.join(dir, 'prebuilds', `${process.platform}-${process.arch}`);
  fs.mkdirSync(d, { recursive: true });
  const file = path.join(d, `${name}.napi.glibc.node`);
  if (content === undefined) fs.copyFileSync(realAddon, file);
  else fs.writeFileSync(file, content);
}

t.test('no prebuilds: both addons are built from source, each in its directory', async (t) => {
  const p = pkg(t);
  const r = await install(p);
  t.equal(r.code, 0, 'install exits 0', { stderr: r.stderr });
  t.same(r.builds, [`${p.dir} rebuild`, `${p.bench} rebuild`]);
  t.ok(fs.existsSync(path.join(p.dir, 'build', 'Release', 'vhostd_native.node')), 'build/Release/vhostd_native.node');
  t.ok(fs.existsSync(path.join(p.bench, 'build', 'Release', 'vhostd_perf.node')), 'bench/native/build/Release/vhostd_perf.node');
  t.same((await install(p)).builds, [], 'a second run finds both built');
});

t.test('prebuilds that load are used; one that does not is replaced by a build', async (t) => {
  const p = pkg(t);
  prebuild(p.dir, 'vhostd_native');
  prebuild(p.bench, 'vhostd_perf');
  const r = await install(p);
  t.equal(r.code, 0, 'install exits 0', { stderr: r.stderr });
  t.same(r.builds, [], 'nothing built');
  t.same((await install(p, { npm_config_build_from_source: 'true' })).builds, [`${p.dir} rebuild`, `${p.bench} rebuild`], 'npm_config_build_from_source=true builds anyway');

  const q = pkg(t);
  prebuild(q.dir, 'vhostd_native', 'not an ELF file');
  prebuild(q.bench, 'vhostd_perf');
  const r2 = await install(q);
  t.equal(r2.code, 0, 'install exits 0', { stderr: r2.stderr });
  t.same(r2.builds, [`${q.dir} rebuild`], 'only the addon whose prebuild does not load');
  t.match(r2.stderr, /vhostd_native\.napi\.glibc\.node does not load .*building from source/);
});

t.test('a failed build: fatal for vhostd_native, a warning for bench', async (t) => {
  const p = pkg(t);
  const bench = await install(p, { FAIL_IN: p.bench });
  t.equal(bench.code, 0, 'the install succeeds without the load generator');
  t.match(bench.stderr, /warning: vhostd_perf .* could not be built; vhostd itself works/);
  const q = pkg(t);
  const main = await install(q, { FAIL_IN: q.dir });
  t.equal(main.code, 1, 'the install fails without the addon');
  t.match(main.stderr, /the native addon vhostd_native could not be built/);
});
