/**
 * Interrupt and adaptive mode on a real vhostd (issue #12 item 1): with
 * `--interrupt-mode` and `--poll-mode adaptive`, I/O through the in-repo
 * front-end (which kicks: its rings run in interrupt mode) on a malloc bdev
 * and on a file bdev served by io_uring in the kernel (so the worker sleeps
 * with I/O in flight and must be woken by the ring's completion eventfd)
 * reads back what it wrote, many times over, with several requests in
 * flight; framework_get_reactors says in_interrupt (true in interrupt mode;
 * in poll mode false). No timing assertions: every wait is a generous poll
 * for a state.
 * Thread: test main thread.
 */
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { VhostUserFrontend } from '../lib/frontend';
import { BlkStatus } from '../lib/frontend-wire';
import { startVhostd } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(180_000);

interface Reactors {
  reactors: { lcore: number; in_interrupt: boolean }[];
}

function pattern(seed: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (seed * 31 + i * 7 + (i >> 9)) & 0xff;
  return b;
}

/** Writes then reads back `rounds` × `depth` blocks of 4 KiB, `depth` requests in flight at a time. */
async function writeReadBack(t: Test, fe: VhostUserFrontend, rounds: number, depth: number): Promise<void> {
  let bad = 0;
  for (let r = 0; r < rounds; r++) {
    const sectors = Array.from({ length: depth }, (_, i) => (r * depth + i) * 8);
    const w = await Promise.all(sectors.map((s) => fe.write(0, s, pattern(s, 4096))));
    if (w.some((x) => x.status !== BlkStatus.OK)) bad++;
    const rd = await Promise.all(sectors.map((s) => fe.read(0, s, 4096)));
    rd.forEach((x, i) => {
      if (x.status !== BlkStatus.OK || Buffer.compare(Buffer.from(x.data), Buffer.from(pattern(sectors[i], 4096))) !== 0) bad++;
    });
  }
  t.equal(bad, 0, `${rounds * depth} blocks written and read back intact, ${depth} in flight`);
}

for (const mode of ['interrupt', 'adaptive'] as const) {
  t.test(`${mode} mode: malloc and io_uring file bdevs serve I/O; in_interrupt`, async (t) => {
    const args = mode === 'interrupt' ? ['--interrupt-mode'] : ['--poll-mode', 'adaptive', '--idle-sleep-us', '200'];
    const vhostd = await startVhostd({ cpumask: '0x2', extraArgs: args, startTimeoutMs: 20_000 });
    t.teardown(() => vhostd.stop());
    const file = path.join('/var/tmp', `vhostd-irq-${process.pid}-${mode}.img`);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 8 << 20);
    t.teardown(() => fs.rmSync(file, { force: true }));

    await vhostd.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 8192, block_size: 512 });
    await vhostd.rpc('bdev_uring_create', { name: 'U0', filename: file, block_size: 512 });
    await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'irq.m', dev_name: 'M0' });
    await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'irq.u', dev_name: 'U0' });

    // Before any device: an idle worker of a sleeping mode is in interrupt mode.
    await waitFor(async () => ((await vhostd.rpc('framework_get_reactors')) as Reactors).reactors[0].in_interrupt, 20_000, 'in_interrupt', 50);
    t.pass('idle worker reports in_interrupt');

    for (const ctrlr of ['irq.m', 'irq.u']) {
      const fe = await VhostUserFrontend.connect(vhostd.socketOf(ctrlr), 5000, { waitAccepted: true });
      t.teardown(() => fe.close());
      await fe.negotiate();
      await fe.setupQueue(0, 64, { completion: 'interrupt' });
      await writeReadBack(t, fe, 8, 16);
      // Idle again, then one more request: it must wake the sleeping worker by its kick.
      await waitFor(async () => ((await vhostd.rpc('framework_get_reactors')) as Reactors).reactors[0].in_interrupt, 20_000, 'in_interrupt after I/O', 50);
      await new Promise((r) => setTimeout(r, 200));
      const r = await fe.read(0, 8, 4096);
      t.equal(r.status, BlkStatus.OK, `${ctrlr}: a kick wakes the sleeping worker`);
      t.same(Buffer.from(r.data), Buffer.from(pattern(8, 4096)));
    }
    const stats = (await vhostd.rpc('thread_get_stats')) as { threads: { name: string; idle: number }[] };
    t.ok(stats.threads.length >= 2, 'thread_get_stats answers');
  });
}

t.test('poll mode reports in_interrupt false', async (t) => {
  const vhostd = await startVhostd({ cpumask: '0x2', startTimeoutMs: 20_000 });
  t.teardown(() => vhostd.stop());
  const info = (await vhostd.rpc('framework_get_reactors')) as Reactors;
  t.equal(info.reactors[0].in_interrupt, false);
});
