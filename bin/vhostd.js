#!/usr/bin/env node
'use strict';
const load = require('./load');
// V8 flags first (dist/reactor/v8-flags.js): this either replaces the
// process with one that has them, or returns.
const execError = load('vhostd', 'dist/reactor/v8-flags.js').execWithV8Flags(__filename, process.argv.slice(2));
if (execError !== null) process.stderr.write(`vhostd: warning: running with V8's defaults: ${execError}\n`);
load('vhostd', 'dist/reactor/cli.js')
  .main(process.argv.slice(2))
  .then((code) => process.exit(code), (err) => {
    process.stderr.write(`vhostd: fatal: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
