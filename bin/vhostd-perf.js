#!/usr/bin/env node
'use strict';
require('./load')('vhostd-perf', 'dist/bench/perf/cli.js')
  .main(process.argv.slice(2))
  .then((code) => process.exit(code), (err) => {
    process.stderr.write(`vhostd-perf: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  });
