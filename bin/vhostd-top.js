#!/usr/bin/env node
'use strict';
require('./load')('vhostd-top', 'dist/reactor/top-cli.js');
