#!/usr/bin/env node
'use strict';
require('./load')('vhostd', 'dist/reactor/cli.js')
  .main(process.argv.slice(2))
  .then((code) => process.exit(code), (err) => {
    process.stderr.write(`vhostd: fatal: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
