#!/usr/bin/env node
/**
 * npm's install step (package.json "install"), for a clone (`npm ci`) and for
 * an installed tarball alike: for each of the two addons, use what is there
 * (a local build, or the prebuild node-gyp-build picks for this platform) if
 * it loads, else build it from source with node-gyp.
 *
 *   vhostd_native  binding.gyp               build/ or prebuilds/            required
 *   vhostd_perf    bench/native/binding.gyp  bench/native/{build,prebuilds}/ optional (the bench's load generator)
 *
 * Each addon has its own gyp file and directory: node-gyp-build loads the
 * first .node file of a directory, so two addons must never share one.
 * npm_config_build_from_source=true forces a build. With --ignore-scripts this
 * does not run: the prebuilds in the tarball must then fit.
 */
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

const ADDONS = [
  { name: 'vhostd_native', dir: root, required: true },
  { name: 'vhostd_perf', dir: path.join(root, 'bench', 'native'), required: false },
];

/** The file node-gyp-build would load for `dir`, if it loads; else null. */
function loadable(addon) {
  const local = path.join(addon.dir, 'build', 'Release', `${addon.name}.node`);
  let file = fs.existsSync(local) ? local : null;
  if (file === null) {
    try {
      file = require('node-gyp-build').resolve(addon.dir);
    } catch {
      return null;
    }
  }
  try {
    require(file);
    return file;
  } catch (err) {
    process.stderr.write(`vhostd: ${file} does not load (${err.message}); building from source\n`);
    return null;
  }
}

function nodeGyp() {
  if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
  try {
    return require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] });
  } catch {
    return null;
  }
}

function build(addon) {
  const gyp = nodeGyp();
  const env = { ...process.env };
  // Use the installed Node headers when the distribution ships them, not a download.
  if (!env.npm_config_nodedir && fs.existsSync('/usr/include/node/node_api.h')) env.npm_config_nodedir = '/usr';
  const r = gyp
    ? spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: addon.dir, env, stdio: 'inherit' })
    : spawnSync('node-gyp', ['rebuild'], { cwd: addon.dir, env, stdio: 'inherit' });
  return r.status === 0 && fs.existsSync(path.join(addon.dir, 'build', 'Release', `${addon.name}.node`));
}

function main() {
  const fromSource = process.env.npm_config_build_from_source === 'true';
  for (const addon of ADDONS) {
    if (!fromSource && loadable(addon) !== null) continue;
    if (build(addon)) continue;
    if (addon.required) {
      process.stderr.write(`vhostd: the native addon ${addon.name} could not be built (needs g++, make, python3)\n`);
      return 1;
    }
    process.stderr.write(`vhostd: warning: ${addon.name} (bench's load generator, vhostd-perf) could not be built; vhostd itself works\n`);
  }
  return 0;
}

process.exitCode = main();
