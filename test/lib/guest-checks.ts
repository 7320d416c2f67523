/**
 * Assertions shared by the guest end-to-end tests: they judge a GuestRun
 * (markers printed by the scripts in guest-scripts.ts). Test helper, no state.
 */
import 'tap';
import type { GuestRun } from './guest';
import { queueInterrupts } from './guest-scripts';

/** The last lines of the console, attached to failing assertions. */
export function tail(run: GuestRun, lines = 80): string {
  return run.output.split('\n').slice(-lines).join('\n');
}

/** The guest ran its script to the end and it exited 0. */
export function assertCompleted(t: tap.Test, run: GuestRun, what: string): void {
  t.equal(run.timedOut, false, `${what}: guest finished before the timeout`);
  t.equal(run.exitCode, 0, `${what}: guest script exited 0`, { output: tail(run) });
}

/** The disk's geometry as probeDisk() reported it. */
export function assertGeometry(
  t: tap.Test,
  run: GuestRun,
  expect: { sectors: number; ro: 0 | 1; hwq: number },
): void {
  t.equal(run.values.get('size'), String(expect.sectors), `disk has ${expect.sectors} 512-byte sectors`);
  t.equal(run.values.get('ro'), String(expect.ro), expect.ro === 1 ? 'disk is read-only' : 'disk is writable');
  t.equal(run.values.get('hwq'), String(expect.hwq), `disk has ${expect.hwq} hw queues`);
}

/** fioVerify() passed and every request queue completed I/O. */
export function assertFioOverQueues(t: tap.Test, run: GuestRun, queues: number): void {
  t.equal(run.results.get('fio'), 0, 'fio randrw with crc32c verification passed', { output: tail(run) });
  const irqs = queueInterrupts(run.values);
  t.equal(irqs.length, queues, `interrupt counts of ${queues} request queues reported`);
  t.ok(irqs.length === queues && irqs.every((n) => n > 0), `every request queue completed I/O (${irqs.join(', ')})`);
}
