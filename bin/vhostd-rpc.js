#!/usr/bin/env node
require('../dist/reactor/rpc/cli.js');
