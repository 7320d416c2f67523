/**
 * --socket-group: a group name or gid → gid. Names are looked up as the C
 * library does (getent, so NSS sources such as LDAP or sssd count), falling
 * back to /etc/group where getent is missing. Thread: main (reactor), at start.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

/** The gid of `group` (a name or a decimal gid); throws an Error naming it when there is no such group. */
export function resolveGroup(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  let line: string | undefined;
  try {
    line = execFileSync('getent', ['group', group], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0];
  } catch (err) {
    // getent exits 2 for "no such key"; ENOENT when it is not installed: read /etc/group then.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      line = fs
        .readFileSync('/etc/group', 'utf8')
        .split('\n')
        .find((l) => l.split(':')[0] === group);
    }
  }
  const fields = line?.split(':') ?? [];
  if (fields.length < 3 || fields[0] !== group || !/^\d+$/.test(fields[2])) throw new Error(`--socket-group: no group named ${group}`);
  return Number(fields[2]);
}
