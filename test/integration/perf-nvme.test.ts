/**
 * The load generator's NVMe-over-vfio-user mode (bench/perf/nvme.ts +
 * bench/native/job.cc) against the real vhostd process: data written through
 * NVMe Write reads back (CRC-32C per block, fio verify=crc32c), from another
 * connection too; the generator's counts match the bdev's iostat; 128 KiB
 * I/Os (PRP lists) and 12 KiB ones (PRP lists starting mid-page); doorbells
 * through the mapped page and as REGION_WRITE messages; a read pass with
 * another pattern seed mismatches every block (the check can fail); the
 * controller is usable again after each run and no fd is left behind.
 * No assertion on speed. Tap main thread; the I/O loop runs on the
 * generator's native thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { execFile } from 'node:child_process';
import { runNvmePerf } from '../../bench/perf/nvme';
import { parseCli } from '../../bench/perf/cli';
import { repoRoot } from '../lib/repo';
import { startVhostd } from '../lib/vhostd';
import { waitFor } from '../lib/wait';

t.setTimeout(240_000);

const NQN = 'nqn.2026-11.io.vhostd:perf0';
const MIB = 1 << 20;

interface IoStat {
  bdevs: { name: string; num_read_ops: number; num_write_ops: number; bytes_read: number; bytes_written: number }[];
}

t.test('vhostd-perf --nvme against vhostd', async (t) => {
  const vhostd = await startVhostd({ cpumask: '0x2' });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-perf-nvme-'));
  t.teardown(async () => {
    await vhostd.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });
  await vhostd.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: (16 * MIB) / 512, block_size: 512 });
  await vhostd.rpc('nvmf_create_transport', { trtype: 'VFIOUSER' });
  await vhostd.rpc('nvmf_create_subsystem', { nqn: NQN, serial_number: 'PERF0001', allow_any_host: true });
  t.equal(await vhostd.rpc('nvmf_subsystem_add_ns', { nqn: NQN, namespace: { bdev_name: 'Malloc0' } }), 1);
  const traddr = path.join(work, 'perf0');
  await vhostd.rpc('nvmf_subsystem_add_listener', { nqn: NQN, listen_address: { trtype: 'VFIOUSER', traddr, trsvcid: '0' } });
  const socketPath = path.join(traddr, 'cntrl');
  const iostat = async (): Promise<{ reads: number; writes: number; bytesRead: number; bytesWritten: number }> => {
    const s = (await vhostd.rpc('bdev_get_iostat', { name: 'Malloc0' })) as IoStat;
    const b = s.bdevs[0];
    return { reads: b.num_read_ops, writes: b.num_write_ops, bytesRead: b.bytes_read, bytesWritten: b.bytes_written };
  };
  const fds = (): number => fs.readdirSync(`/proc/${vhostd.daemon.child.pid}/fd`).length;
  const common = { socketPath, cpu: -1, timeoutMs: 30_000 } as const;

  // Warm-up connection, so the fd baseline includes whatever the first attach creates for good.
  await runNvmePerf({ ...common, rw: 'randread', iodepth: 4, runtimeSec: 0.2, sizeBytes: MIB });
  // The warm-up connection's teardown crosses the worker; take the baseline once the count holds still for 1 s.
  let baseFds = fds();
  for (let still = 0; still < 10; ) {
    await new Promise((r) => setTimeout(r, 100));
    const n = fds();
    still = n === baseFds ? still + 1 : 0;
    baseFds = n;
  }

  await t.test('write-read verify, 4 KiB, QD16: every block read back, counts match iostat', async (t) => {
    const before = await iostat();
    const r = await runNvmePerf({ ...common, rw: 'randread', verify: 'write-read', iodepth: 16, sizeBytes: 8 * MIB, verifySeed: 7 });
    const after = await iostat();
    const blocks = (8 * MIB) / 4096;
    t.equal(r.errors, 0, 'no error status');
    t.same(r.verify && { w: r.verify.blocksWritten, c: r.verify.blocksChecked, m: r.verify.mismatches }, { w: blocks, c: blocks, m: 0 }, 'every block written once, read back and matching');
    t.equal(r.writes, blocks, 'the report counts one write per block');
    t.equal(r.reads, blocks, 'and one read per block');
    t.equal(after.writes - before.writes, blocks, 'the bdev saw as many writes');
    t.equal(after.reads - before.reads, blocks, 'and as many reads');
    t.equal(after.bytesWritten - before.bytesWritten, 8 * MIB, 'bytes written match');
    t.equal(r.nvme?.doorbells, 'mmap', 'doorbells through the mapped page vhostd offers');
    t.equal(r.nvme?.doorbellPageOffered, true, 'BAR0 offered the doorbell page');
    t.equal(r.nvme?.lbaSize, 512, 'LBA size from Identify Namespace');
    t.equal(r.device.capacityBytes, 16 * MIB, 'capacity from NSZE');
    t.ok((r.nvme?.sqDoorbells ?? 0) > 0 && (r.nvme?.cqDoorbells ?? 0) > 0, 'SQ tail and CQ head doorbells written');
  });

  await t.test('a second connection reads what the first wrote; another seed mismatches every block', async (t) => {
    const ok = await runNvmePerf({ ...common, rw: 'randread', verify: 'read', iodepth: 8, sizeBytes: 8 * MIB, verifySeed: 7 });
    t.same(ok.verify && { c: ok.verify.blocksChecked, m: ok.verify.mismatches }, { c: 2048, m: 0 }, 'seed 7 matches');
    const bad = await runNvmePerf({ ...common, rw: 'read', verify: 'read', iodepth: 8, sizeBytes: 8 * MIB, verifySeed: 8 });
    t.equal(bad.verify?.mismatches, 2048, 'seed 8 mismatches all 2048 blocks');
    t.equal(bad.verify?.firstMismatches[0]?.block, 0, 'the first mismatch is block 0 (sequential read)');
  });

  await t.test('128 KiB and 12 KiB I/Os (PRP lists), 3 queue pairs, REGION_WRITE doorbells', async (t) => {
    const big = await runNvmePerf({ ...common, rw: 'write', verify: 'write-read', blockSizeBytes: 128 * 1024, iodepth: 4, offsetBytes: 8 * MIB, sizeBytes: 4 * MIB });
    t.same(big.verify && { c: big.verify.blocksChecked, m: big.verify.mismatches }, { c: 32, m: 0 }, '32 blocks of 128 KiB read back');
    const odd = await runNvmePerf({ ...common, rw: 'randrw', verify: 'write-read', blockSizeBytes: 12 * 1024, iodepth: 8, runtimeSec: 0.5, offsetBytes: 12 * MIB, sizeBytes: 3 * MIB });
    t.equal(odd.verify?.mismatches, 0, '12 KiB randrw: no mismatch');
    t.ok((odd.verify?.blocksChecked ?? 0) > 0, '12 KiB randrw: reads of written blocks were checked');
    const multi = await runNvmePerf({ ...common, rw: 'randrw', verify: 'write-read', queues: 3, iodepth: 4, runtimeSec: 0.3, offsetBytes: 15 * MIB, sizeBytes: MIB });
    t.equal(multi.job.queues, 3, 'three I/O queue pairs driven');
    t.ok((multi.nvme?.queuesGranted ?? 0) >= 3, 'the controller granted them');
    t.equal(multi.verify?.mismatches, 0, 'randrw over 3 queues: no mismatch');
    t.equal(multi.errors, 0, 'randrw over 3 queues: no error status');
    const before = await iostat();
    const msg = await runNvmePerf({ ...common, rw: 'randwrite', doorbells: 'region-write', iodepth: 4, runtimeSec: 0.3, sizeBytes: MIB });
    const after = await iostat();
    t.equal(msg.nvme?.doorbells, 'region-write', 'doorbells as REGION_WRITE messages');
    t.equal(msg.errors, 0, 'no error status');
    t.ok(msg.writes > 0, `writes completed (${msg.writes})`);
    t.ok(after.writes - before.writes >= msg.writes, 'the bdev saw at least the writes of the measured window');
  });

  await t.test('refusals', async (t) => {
    await t.rejects(runNvmePerf({ ...common, nsid: 2, runtimeSec: 0.1 }), /namespace 2 is not active/, 'an inactive namespace');
    await t.rejects(runNvmePerf({ ...common, iodepth: 2000, runtimeSec: 0.1 }), /needs a queue of more than 2000 entries/, 'a depth above CAP.MQES');
    const r = await runNvmePerf({ ...common, rw: 'randread', iodepth: 2, runtimeSec: 0.1 });
    t.equal(r.errors, 0, 'the controller serves the next connection');
  });

  await t.test('the command line', async (t) => {
    t.throws(() => parseCli(['--socket', socketPath, '--nsid', '2']), /--nsid and --doorbells need --nvme/);
    t.match(parseCli(['--nvme', '--socket', socketPath, '--doorbells', 'region-write']), { options: { nvme: true, doorbells: 'region-write' } });
    const cli = path.join(repoRoot(), 'dist', 'bench', 'perf', 'cli.js');
    const run = (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        execFile(process.execPath, [cli, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
          resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr });
        });
      });
    const ok = await run(['--nvme', '--socket', socketPath, '--cpu=-1', '--runtime', '200ms', '--iodepth', '4', '--size', '1m']);
    t.equal(ok.code, 0, `exit 0\n${ok.stderr}`);
    t.match(ok.stdout, /nvme nsid=1 lba=512 doorbells=mmap \(page offered\)/, 'the summary has the nvme line');
    const bad = await run(['--nvme', '--socket', socketPath, '--completion', 'interrupt', '--runtime', '200ms']);
    t.equal(bad.code, 2, 'interrupt completion is refused in nvme mode');
    t.match(bad.stderr, /--nvme takes none of/);
  });

  await waitFor(() => fds() === baseFds, 10_000, `vhostd back at ${baseFds} fds`, 50).catch(() => undefined);
  t.equal(fds(), baseFds, 'no fd left behind in vhostd');
});
