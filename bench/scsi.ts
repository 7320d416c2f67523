/**
 * vhostd virtio-scsi against vhostd virtio-blk on the same bdev (issue #9's
 * performance goal: scsi ≥ 0.9× blk IOPS at QD32 4k on null and malloc),
 * driven by the native load generator (vhostd-perf, --scsi for READ 16 /
 * WRITE 16) on another core; the runner is bench/compare.ts.
 *
 *   npm run bench -- --scsi [--runs N] [--runtime S] [--ramp S] [--kinds null,malloc] [--qds 32,1]
 *                           [--rws randread,randwrite] [--out DIR]
 *
 * Per run a scsi controller with the bdev as target 0 is created, driven
 * (EVENT_IDX) and deleted. Main thread.
 */
import path from 'node:path';
import { compareMain, waitDetached } from './compare';
import { runPerf } from './perf/perf';

export function scsiMain(argv: string[], repo: string): Promise<number> {
  return compareMain(argv, repo, {
    name: 'scsi',
    title: 'vhostd virtio-scsi vs virtio-blk',
    goal: 'scsi ≥ 0.9× blk IOPS at QD32 4k on null and malloc (issue #9).',
    async attach(v, bdev) {
      const ctrlr = 'bench.scsi';
      await v.rpc('vhost_create_scsi_controller', { ctrlr });
      await v.rpc('vhost_scsi_controller_add_target', { ctrlr, scsi_target_num: 0, bdev_name: bdev });
      return {
        run: (job) => runPerf({ ...job, socketPath: path.join(v.dir, ctrlr), eventIdx: true, scsi: true }),
        async detach() {
          await waitDetached(v.rpc, ctrlr);
          await v.rpc('vhost_delete_controller', { ctrlr });
        },
      };
    },
  });
}
