/**
 * The package as users get it, on a copy of the repository in a temporary
 * directory (no build/, prebuilds/ or dist/, the repository's node_modules
 * linked in as `npm ci` would have made it):
 *
 *   1. `npm run build` compiles and builds no addon (issue #8 bug 6.3: a
 *      script named `prebuild` ran prebuildify before `build`, leaving bench's
 *      addon as the only prebuild, which the loader then took).
 *   2. `npm pack` (prepack: prebuildify of both addons, prepare: tsc) makes a
 *      tarball with both prebuilds, each under its own name and directory,
 *      declarations, LICENSE, and no tests or source maps.
 *   3. The copy, now holding both prebuilds and no local build, starts as
 *      `npm start` starts it and serves RPC.
 *   4. The tarball installs with `npm install --ignore-scripts --prefer-offline`
 *      (dependencies from npm's cache, else the registry); `npx vhostd
 *      --version`, `vhostd` serving, `npx vhostd-rpc`, `require('vhostd')` and
 *      `require('vhostd/rpc')`
 *      work from it with no compiler involved.
 *   5. With the prebuilds removed, `vhostd` says what to do in one line, not
 *      a stack trace.
 * Main-thread test; npm, the copies and vhostd are child processes.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Daemon } from '../lib/daemon';
import { repoRoot } from '../lib/repo';
import { rpcCall } from '../lib/rpc';

const root = repoRoot();

/** Directories a fresh clone does not have (at any depth). */
const NOT_IN_A_CLONE = new Set(['node_modules', 'dist', 'build', 'prebuilds', '.cache', '.git', '.tap', 'results']);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function env(): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };
  // node-gyp: the installed Node headers rather than a download (as .ci/run).
  if (!e.npm_config_nodedir && fs.existsSync('/usr/include/node/node_api.h')) e.npm_config_nodedir = '/usr';
  // npm test runs us as a script: its lifecycle variables must not leak into the npm we run.
  for (const k of Object.keys(e)) if (k.startsWith('npm_lifecycle_') || k === 'npm_package_json') delete e[k];
  return e;
}

function run(command: string, args: string[], cwd: string, timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd, env: env(), timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Shown by tap only when the assertion fails. */
function output(r: Run): { stdout: string; stderr: string } {
  return { stdout: r.stdout.slice(-3000), stderr: r.stderr.slice(-3000) };
}

/** Starts `args` (a vhostd command line) and waits until its RPC socket accepts. */
async function startServing(t: Test, command: string, args: string[], cwd: string, rpcSocket: string): Promise<Daemon> {
  const d = new Daemon('vhostd', command, args, { cwd, env: env() });
  t.teardown(() => d.stop().then(() => undefined));
  await d.waitSocket(rpcSocket);
  return d;
}

t.test('build, pack, install and run the package', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-package-'));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const npm = 'npm';

  // A fresh clone: sources only.
  const clone = path.join(tmp, 'clone');
  fs.cpSync(root, clone, {
    recursive: true,
    filter: (src) => !NOT_IN_A_CLONE.has(path.basename(src)) || src === root,
  });
  fs.symlinkSync(fs.realpathSync(path.join(root, 'node_modules')), path.join(clone, 'node_modules'));

  // 1. npm run build: TypeScript only.
  const build = await run(npm, ['run', 'build'], clone);
  t.equal(build.code, 0, 'npm run build exits 0', output(build));
  t.notOk(fs.existsSync(path.join(clone, 'prebuilds')), 'npm run build made no prebuilds/ (bug 6.3)');
  t.notOk(fs.existsSync(path.join(clone, 'build')), 'npm run build built no addon');
  t.ok(fs.existsSync(path.join(clone, 'dist', 'reactor', 'app.d.ts')), 'declarations are emitted');

  // 2. npm pack.
  const packDir = path.join(tmp, 'pack');
  fs.mkdirSync(packDir);
  const pack = await run(npm, ['pack', '--pack-destination', packDir], clone);
  t.equal(pack.code, 0, 'npm pack exits 0', output(pack));
  const tarballs = fs.readdirSync(packDir).filter((f) => f.endsWith('.tgz'));
  t.equal(tarballs.length, 1, 'one tarball');
  if (tarballs.length !== 1) return;
  const tarball = path.join(packDir, tarballs[0]);
  const list = await run('tar', ['tzf', tarball], tmp);
  t.equal(list.code, 0, 'the tarball lists');
  const files = list.stdout.split('\n').filter((l) => l !== '').map((l) => l.replace(/^package\//, ''));
  for (const want of [
    'package.json',
    'LICENSE',
    'README.md',
    'bin/vhostd.js',
    'bin/vhostd-rpc.js',
    'scripts/install.js',
    'binding.gyp',
    'bindings/src/addon.cc',
    'bench/native/binding.gyp',
    'dist/reactor/cli.js',
    'dist/reactor/app.d.ts',
    'dist/reactor/index.d.ts',
    'examples/embed.mjs',
    'dist/bench/perf/cli.js',
    'prebuilds/linux-x64/vhostd_native.napi.glibc.node',
    'bench/native/prebuilds/linux-x64/vhostd_perf.napi.glibc.node',
  ]) {
    t.ok(files.includes(want), `the tarball holds ${want}`);
  }
  t.same(
    files.filter((f) => f.startsWith('test/') || f.startsWith('dist/test/')),
    [],
    'no tests in the tarball',
  );
  t.same(files.filter((f) => f.endsWith('.map') || (f.endsWith('.ts') && !f.endsWith('.d.ts'))), [], 'no source maps or TypeScript sources');
  t.same(
    files.filter((f) => f.endsWith('.node')).sort(),
    ['bench/native/prebuilds/linux-x64/vhostd_perf.napi.glibc.node', 'prebuilds/linux-x64/vhostd_native.napi.glibc.node'],
    'each prebuild in its own directory, named after its addon',
  );
  const license = fs.readFileSync(path.join(clone, 'LICENSE'), 'utf8');
  t.match(license, /BSD 3-Clause License/, 'LICENSE is BSD-3-Clause');
  t.match(license, /Copyright \(c\) 2026 the vhostd authors/, 'LICENSE names the copyright holders');

  // 3. The clone with both prebuilds and no local build: what `npm start` runs.
  t.notOk(fs.existsSync(path.join(clone, 'build', 'Release', 'vhostd_native.node')), 'the clone has no local build of the addon');
  const cloneSocks = path.join(tmp, 'clone-socks');
  const startArgs = JSON.parse(fs.readFileSync(path.join(clone, 'package.json'), 'utf8')).scripts.start.split(' ') as string[];
  t.same(startArgs.slice(0, 2), ['node', 'bin/vhostd.js'], 'npm start runs bin/vhostd.js');
  const cloneRpc = path.join(cloneSocks, 'rpc.sock');
  const fromClone = await startServing(
    t,
    process.execPath,
    [...startArgs.slice(1), '-S', cloneSocks, '-r', cloneRpc, '--disable-cpumask-locks'],
    clone,
    cloneRpc,
  );
  const ctrlrs = (await rpcCall(cloneRpc, 'vhost_get_controllers')) as Array<{ ctrlr: string }>;
  t.same(
    ctrlrs.map((c) => c.ctrlr),
    ['vhost.0'],
    'the clone serves the default controller',
  );
  const cloneExit = await fromClone.stop();
  t.same({ code: cloneExit.code, killed: cloneExit.killed }, { code: 0, killed: false }, "the clone's vhostd stops with 0", { log: fromClone.log });

  // 4. Install the tarball without running any script: the prebuilds must do.
  const app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  const install = await run(npm, ['install', '--ignore-scripts', '--prefer-offline', '--no-save', tarball], app);
  t.equal(install.code, 0, 'npm install of the tarball exits 0', output(install));
  const installed = path.join(app, 'node_modules', 'vhostd');
  t.notOk(fs.existsSync(path.join(installed, 'build')), 'nothing was compiled at install');

  const version = await run(npm, ['exec', '--no', '--', 'vhostd', '--version'], app);
  t.equal(version.code, 0, 'npx vhostd --version exits 0', output(version));
  const pkgVersion = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version as string;
  t.equal(version.stdout.trim(), `vhostd v${pkgVersion}`, 'npx vhostd --version prints the version');

  const appSocks = path.join(tmp, 'app-socks');
  const appRpc = path.join(appSocks, 'rpc.sock');
  const fromApp = await startServing(
    t,
    process.execPath,
    [path.join(app, 'node_modules', '.bin', 'vhostd'), '-S', appSocks, '-r', appRpc, '--disable-cpumask-locks'],
    app,
    appRpc,
  );
  const rpc = await run(npm, ['exec', '--no', '--', 'vhostd-rpc', '-s', appRpc, 'spdk_get_version'], app);
  t.equal(rpc.code, 0, 'npx vhostd-rpc spdk_get_version exits 0', output(rpc));
  t.match(rpc.stdout, new RegExp(`"version": "vhostd v${pkgVersion.replace(/\./g, '\\.')}"`), 'vhostd-rpc reaches the installed vhostd');
  const appExit = await fromApp.stop();
  t.same({ code: appExit.code, killed: appExit.killed }, { code: 0, killed: false }, 'the installed vhostd stops with 0', { log: fromApp.log });

  const req = await run(process.execPath, ['-e', "const v = require('vhostd'); process.stdout.write(typeof v.App + ' ' + typeof v.Vhostd + ' ' + require.resolve('vhostd'))"], app);
  t.equal(req.code, 0, "require('vhostd') works", output(req));
  t.equal(req.stdout, `function function ${path.join(fs.realpathSync(installed), 'dist', 'reactor', 'index.js')}`, "require('vhostd') gives Vhostd and the App through exports");
  t.ok(fs.existsSync(path.join(installed, 'dist', 'reactor', 'index.d.ts')), 'the root export has its declarations');
  const client = await run(process.execPath, ['-e', "process.stdout.write(typeof require('vhostd/rpc').RpcClient)"], app);
  t.equal(client.stdout, 'function', "require('vhostd/rpc') gives the RPC client", output(client));
  const deep = await run(process.execPath, ['-e', "require('vhostd/dist/reactor/cli.js')"], app);
  t.match(deep.stderr, /ERR_PACKAGE_PATH_NOT_EXPORTED/, 'files outside exports are not reachable', output(deep));
  // bench's load generator (vhostd-perf) from its own prebuild directory.
  const perfJs = path.join(installed, 'dist', 'bench', 'perf', 'perf.js');
  const perf = await run(process.execPath, ['-e', `const p = require(${JSON.stringify(perfJs)}); process.stdout.write(p.perfAddonPath() + ' ' + p.crc32c(Buffer.from('123456789')))`], app);
  t.equal(perf.code, 0, 'the load generator addon loads', output(perf));
  t.equal(
    perf.stdout,
    `${path.join(fs.realpathSync(installed), 'bench', 'native', 'prebuilds', 'linux-x64', 'vhostd_perf.napi.glibc.node')} ${0xe3069283}`,
    'vhostd-perf uses its own prebuild (CRC-32C check value of "123456789")',
  );
  const pkg = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8')) as { types: string };
  t.ok(fs.existsSync(path.join(installed, pkg.types)), `the types entry (${pkg.types}) exists`);

  // 5. No addon at all: one line saying how to build it, exit 1, no stack.
  fs.rmSync(path.join(installed, 'prebuilds'), { recursive: true, force: true });
  const bare = await run(process.execPath, [path.join(app, 'node_modules', '.bin', 'vhostd'), '--version'], app);
  t.equal(bare.code, 1, 'vhostd without an addon exits 1');
  t.match(bare.stderr, /^vhostd: no native addon: .* no prebuild .* fits linux-x64\. Build it from source/, 'and says what to do');
  t.notMatch(bare.stderr, /\n\s+at /, 'without a stack trace');
});
