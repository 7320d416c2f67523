#!/usr/bin/env node
'use strict';
require('./load')('vhostd-rpc', 'dist/reactor/rpc/cli.js');
