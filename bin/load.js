'use strict';
/**
 * Shared by the bin/ scripts: require a compiled module of the package, and
 * turn the failures a user can fix (not built, no fitting native addon, a
 * stale addon) into one line on stderr and exit status 1 instead of a stack.
 */
const path = require('node:path');

const FIXABLE = new Set(['ERR_NATIVE_ADDON', 'ERR_NATIVE_LAYOUT', 'ERR_PERF_ADDON']);

module.exports = function load(prog, rel) {
  const file = path.join(__dirname, '..', rel);
  try {
    return require(file);
  } catch (err) {
    if (err && FIXABLE.has(err.code)) {
      process.stderr.write(`${prog}: ${String(err.message).replace(/^vhostd(-[a-z]+)?: /, '')}\n`);
    } else if (err && err.code === 'MODULE_NOT_FOUND' && String(err.message).includes(file)) {
      process.stderr.write(`${prog}: ${file} is missing: vhostd is not built (run \`npm run build\` in ${path.join(__dirname, '..')})\n`);
    } else {
      process.stderr.write(`${prog}: fatal: ${err && err.stack ? err.stack : err}\n`);
    }
    process.exit(1);
  }
};
