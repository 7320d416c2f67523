/** Entry of the `vhostd-top` bin (bin/vhostd-top.js): see reactor/top.ts. Thread: main. */
import { topMain } from './top';
import { exitWhenDone } from './cli-exit';

exitWhenDone('vhostd-top', topMain(process.argv.slice(2)), 1);
