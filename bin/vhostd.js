#!/usr/bin/env node
'use strict';
const load = require('./load');
// Heap flags first (dist/reactor/heap-flags.js): this either replaces the
// process with one that has them, or returns.
const execError = load('vhostd', 'dist/reactor/heap-flags.js').execWithHeapFlags(__filename, process.argv.slice(2));
if (execError !== null) process.stderr.write(`vhostd: warning: running with V8's default heap sizes: ${execError}\n`);
load('vhostd', 'dist/reactor/cli.js')
  .main(process.argv.slice(2))
  .then((code) => process.exit(code), (err) => {
    process.stderr.write(`vhostd: fatal: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
