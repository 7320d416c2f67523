/**
 * A closed loop of 4 KiB writes and reads through queue 0 of a connected
 * virtio-blk front-end, for the tests that look at vhostd while I/O runs
 * (metrics, vhostd-top). Main-thread test helper.
 */
import { randomBytes } from 'node:crypto';
import type { VhostUserFrontend } from './frontend';
import { BlkStatus } from './frontend-wire';

export interface BlkLoad {
  /** Requests completed so far. */
  readonly done: number;
  /** Ends the loop after the requests in flight; rejects if any failed. */
  stop(): Promise<void>;
}

/**
 * `workers` writers, each writing random data to 64 4-KiB blocks of its own
 * in turn (within the first `sectors` sectors) and reading each back.
 */
export function startBlkLoad(fe: VhostUserFrontend, workers: number, sectors: number): BlkLoad {
  let running = true;
  let done = 0;
  const load = Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      const data = randomBytes(4096);
      for (let i = 0; running; i++) {
        const sector = ((w * 64 + (i % 64)) * 8) % sectors;
        if ((await fe.write(0, sector, data)).status !== BlkStatus.OK) throw new Error('write failed');
        if ((await fe.read(0, sector, 4096)).status !== BlkStatus.OK) throw new Error('read failed');
        done += 2;
      }
    }),
  );
  return {
    get done() {
      return done;
    },
    async stop() {
      running = false;
      await load;
    },
  };
}
