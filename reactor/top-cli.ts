/** Entry of the `vhostd-top` bin (bin/vhostd-top.js): see reactor/top.ts. Thread: main. */
import { topMain } from './top';

topMain(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vhostd-top: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
