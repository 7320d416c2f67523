#!/usr/bin/env node
/**
 * `npm test`: compile, make sure the native addon and the test guest exist,
 * run every compiled test file under tap, and print as the last line
 * `N passed, N failed` (tap's assertion counts, summed over the runs).
 *
 * Steps (each fails fast, still ending with the count line):
 *   1. tsc -p .                          type errors stop the run
 *   2. native addons                     build/Release/vhostd_native.node (rebuilt when its layout
 *                                        constants do not match dist/bindings/layout.js) and
 *                                        bench/native/build/Release/vhostd_perf.node, else node-gyp rebuild
 *   3. scripts/build-guest.sh            kernel + initramfs, cached in .cache/guest/
 *   4. tap over dist/test/** /*.test.js  unit tests in parallel, then integration
 *                                        and e2e one file at a time (they start
 *                                        vhostd, which busy-polls its cores, and QEMU)
 * Only compiled tests whose test/**.test.ts source still exists are run, so a
 * stale dist/ cannot add or hide results.
 *
 * Environment: TEST_FILTER=<substring> runs only matching files;
 * TAP_TIMEOUT_S overrides the per-file timeout (default 600 s).
 */
'use strict';

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const timeoutS = process.env.TAP_TIMEOUT_S || '600';

function say(text) {
  process.stdout.write(`\n=== ${text}\n`);
}

function finish(passed, failed) {
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exitCode = failed > 0 ? 1 : 0;
}

/** Runs a command with inherited stdio; returns true when it exited 0. */
function run(command, args, options = {}) {
  const r = spawnSync(command, args, { cwd: root, stdio: 'inherit', ...options });
  if (r.error) {
    process.stderr.write(`${command}: ${r.error.message}\n`);
    return false;
  }
  return r.status === 0;
}

function compile() {
  say('tsc -p .');
  return run(process.execPath, [require.resolve('typescript/bin/tsc', { paths: [root] }), '-p', '.']);
}

/** Both addons, each from its own gyp file: the target's own and bench's load generator. */
const ADDONS = [
  { dir: '.', file: path.join('build', 'Release', 'vhostd_native.node'), checkLayout: true },
  { dir: path.join('bench', 'native'), file: path.join('bench', 'native', 'build', 'Release', 'vhostd_perf.node') },
];

/**
 * Why the built addon at `file` does not fit the compiled TypeScript (its
 * layout constants differ, or it has none: built from older sources), or null
 * when it fits. Checked in a child process, so this one never maps a file
 * that a rebuild then replaces.
 */
function layoutProblem(file) {
  if (!fs.existsSync(file)) return 'missing';
  const layoutJs = path.join(root, 'dist', 'bindings', 'layout.js');
  const code =
    `const m = require(${JSON.stringify(layoutJs)}).layoutMismatches(require(${JSON.stringify(file)}).layout);` +
    "process.stdout.write(m.join('; '));";
  const r = spawnSync(process.execPath, ['-e', code], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) return `does not load: ${(r.stderr || '').trim().split('\n')[0]}`;
  return r.stdout === '' ? null : r.stdout;
}

function ensureAddon() {
  say('native addons');
  // node-gyp downloads the Node headers unless told where they are; use the
  // installed ones when the distribution ships them (only the npm registry and
  // the Debian mirror may be reachable). npm sets npm_config_node_gyp to its
  // own node-gyp for scripts; tap's dependencies bring another.
  const env = { ...process.env };
  if (!env.npm_config_nodedir && fs.existsSync('/usr/include/node/node_api.h')) env.npm_config_nodedir = '/usr';
  const gyp = env.npm_config_node_gyp || require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] });
  for (const addon of ADDONS) {
    const stale = addon.checkLayout ? layoutProblem(path.join(root, addon.file)) : null;
    if (fs.existsSync(path.join(root, addon.file)) && stale === null) {
      process.stdout.write(`${addon.file} present\n`);
      continue;
    }
    if (stale !== null && fs.existsSync(path.join(root, addon.file))) process.stdout.write(`${addon.file} is stale (${stale}): rebuilding\n`);
    if (!run(process.execPath, [gyp, 'rebuild'], { env, cwd: path.join(root, addon.dir) })) return false;
    if (!fs.existsSync(path.join(root, addon.file))) return false;
  }
  return true;
}

function ensureGuest() {
  say('test guest (scripts/build-guest.sh)');
  return run('bash', [path.join(root, 'scripts', 'build-guest.sh')]);
}

/** test/**.test.ts sources that have a compiled dist/test/**.test.js, relative to root. */
function testFiles() {
  const out = [];
  const walk = (rel) => {
    for (const ent of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const child = path.join(rel, ent.name);
      if (ent.isDirectory()) walk(child);
      else if (ent.name.endsWith('.test.ts')) {
        const compiled = path.join('dist', child.replace(/\.ts$/, '.js'));
        if (fs.existsSync(path.join(root, compiled))) out.push(compiled);
        else process.stdout.write(`warning: ${child} has no compiled ${compiled}\n`);
      }
    }
  };
  if (fs.existsSync(path.join(root, 'test'))) walk('test');
  const filter = process.env.TEST_FILTER;
  return out.sort().filter((f) => !filter || f.includes(filter));
}

/**
 * Runs tap over `files`, streaming its TAP output, and resolves with the
 * counts from tap's closing `# { total: N, pass: N, fail: N, ... }` line.
 */
function runTap(files, jobs) {
  return new Promise((resolve) => {
    const tapDir = path.join(root, 'node_modules', 'tap');
    const tapBin = path.join(tapDir, JSON.parse(fs.readFileSync(path.join(tapDir, 'package.json'), 'utf8')).bin.tap);
    const args = [
      tapBin,
      '--disable-coverage',
      '--allow-empty-coverage',
      '--reporter=tap',
      '--no-color',
      `--timeout=${timeoutS}`,
      `--jobs=${jobs}`,
      ...files,
    ];
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let summary;
    let pending = '';
    child.stdout.on('data', (chunk) => {
      process.stdout.write(chunk);
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop();
      for (const line of lines) {
        if (/^# \{ total: \d+/.test(line)) summary = line;
      }
    });
    const forward = (sig) => child.kill(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.on('close', (status, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      if (pending && /^# \{ total: \d+/.test(pending)) summary = pending;
      const count = (key) => {
        const m = summary && new RegExp(`\\b${key}: (\\d+)`).exec(summary);
        return m ? Number(m[1]) : 0;
      };
      let passed = count('pass');
      let failed = count('fail');
      if (summary === undefined) {
        process.stdout.write(`tap printed no summary (exit ${status}${signal ? `, ${signal}` : ''})\n`);
        passed = 0;
      }
      // tap exiting non-zero with no failure counted (crash, bail) is still a failure.
      if ((status !== 0 || signal) && failed === 0) failed = 1;
      resolve({ passed, failed, skipped: count('skip'), todo: count('todo') });
    });
  });
}

async function main() {
  if (!compile()) {
    process.stdout.write('tsc reported errors\n');
    return finish(0, 1);
  }
  if (!ensureAddon()) {
    process.stdout.write('the native addon could not be built\n');
    return finish(0, 1);
  }
  if (!ensureGuest()) {
    process.stdout.write('the test guest could not be built\n');
    return finish(0, 1);
  }
  const files = testFiles();
  if (files.length === 0) {
    process.stdout.write('no test files found\n');
    return finish(0, 1);
  }
  const serialDirs = [path.join('dist', 'test', 'integration') + path.sep, path.join('dist', 'test', 'e2e') + path.sep];
  const serial = files.filter((f) => serialDirs.some((d) => f.startsWith(d)));
  const parallel = files.filter((f) => !serial.includes(f));
  const total = { passed: 0, failed: 0, skipped: 0, todo: 0 };
  const phases = [
    { name: 'unit tests', files: parallel, jobs: Math.max(1, os.availableParallelism ? os.availableParallelism() : os.cpus().length) },
    { name: 'integration and end-to-end tests (one file at a time)', files: serial, jobs: 1 },
  ];
  for (const phase of phases) {
    if (phase.files.length === 0) continue;
    say(`${phase.name}: ${phase.files.length} file(s)`);
    const r = await runTap(phase.files, phase.jobs);
    for (const k of Object.keys(total)) total[k] += r[k];
  }
  process.stdout.write(`\n# skipped ${total.skipped}, todo ${total.todo}\n`);
  return finish(total.passed, total.failed);
}

main().catch((err) => {
  process.stderr.write(`scripts/test.js: ${err && err.stack ? err.stack : err}\n`);
  finish(0, 1);
});
