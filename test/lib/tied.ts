/**
 * Ties a child process's life to the test process: the command runs under
 * `setpriv --pdeathsig KILL` (util-linux), which execs it in place, so if the
 * test process dies (a tap timeout, a crash) QEMU or vhostd is killed rather
 * than left running and busy-polling a core. Main-thread test helper.
 */
import fs from 'node:fs';

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));

/** The command and arguments to spawn so that the child gets SIGKILL when this process exits. */
export function tied(command: string, args: string[]): { command: string; args: string[] } {
  if (SETPRIV === undefined) return { command, args };
  return { command: SETPRIV, args: ['--pdeathsig', 'KILL', '--', command, ...args] };
}
