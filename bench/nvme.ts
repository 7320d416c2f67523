/**
 * vhostd's NVMe controller over vfio-user against its virtio-blk on the same
 * bdev (issue #11's performance goal: NVMe ≥ blk's IOPS at 4k QD32 on null
 * and malloc), both driven by the native load generator on another core —
 * NVMe through vhostd-perf's NVMe mode (bench/perf/nvme.ts: its own
 * vfio-user client, SQ/CQ in a memfd, doorbells in the mapped doorbell
 * page). The runner is bench/compare.ts.
 *
 *   npm run bench -- --nvme [--runs N] [--runtime S] [--ramp S] [--kinds null,malloc] [--qds 32,1]
 *                           [--rws randread,randwrite] [--out DIR]
 *
 * Per run an NVMe-oF subsystem with the bdev as namespace 1 and a VFIOUSER
 * listener is created, driven and deleted (the bdev is claimed by one
 * device at a time). Main thread.
 */
import path from 'node:path';
import { compareMain } from './compare';
import { runNvmePerf } from './perf/nvme';

const NQN = 'nqn.2026-11.io.vhostd:bench';

export function nvmeMain(argv: string[], repo: string): Promise<number> {
  return compareMain(argv, repo, {
    name: 'nvme',
    title: 'vhostd NVMe over vfio-user vs virtio-blk',
    goal: 'nvme ≥ 1.0× blk IOPS at 4k QD32 on null and malloc (issue #11).',
    async prepare(v) {
      await v.rpc('nvmf_create_transport', { trtype: 'VFIOUSER' });
    },
    async attach(v, bdev) {
      const traddr = path.join(v.dir, 'bench.nvme');
      await v.rpc('nvmf_create_subsystem', { nqn: NQN, serial_number: 'BENCH0001', allow_any_host: true });
      try {
        await v.rpc('nvmf_subsystem_add_ns', { nqn: NQN, namespace: { bdev_name: bdev, nsid: 1 } });
        await v.rpc('nvmf_subsystem_add_listener', { nqn: NQN, listen_address: { trtype: 'VFIOUSER', traddr, trsvcid: '0' } });
      } catch (err) {
        await v.rpc('nvmf_delete_subsystem', { nqn: NQN });
        throw err;
      }
      return {
        run: (job) => runNvmePerf({ ...job, socketPath: path.join(traddr, 'cntrl'), nsid: 1 }),
        async detach() {
          await v.rpc('nvmf_delete_subsystem', { nqn: NQN });
        },
      };
    },
  });
}
