/**
 * A guest (2 CPUs, 512 MiB, up to 15 min) running fioWriteThenVerify() and
 * then `scriptTail`, watched for its markers: the e2e tests that disturb
 * vhostd while fio writes (restart, memory hot-plug) act between `started`
 * and the write phase's end. Main-thread test helper.
 */
import { type BootOptions, type GuestRun, bootGuest } from './guest';
import { fioWriteThenVerify } from './guest-scripts';

export interface FioGuest {
  /** The guest's run; settles when QEMU exits. */
  run: Promise<GuestRun>;
  /** Resolves when fio's write phase starts (never if it does not). */
  started: Promise<void>;
  /** The guest has exited. */
  readonly done: boolean;
  /** fio's write phase has ended. */
  readonly writeDone: boolean;
}

export function bootFioGuest(opts: Omit<BootOptions, 'script' | 'memMiB' | 'smp' | 'timeoutMs' | 'onOutput'>, scriptTail: string, dev = 'vda'): FioGuest {
  let started!: () => void;
  const fioStarted = new Promise<void>((r) => (started = r));
  let console_ = '';
  let writeDone = false;
  let done = false;
  const run = bootGuest({
    ...opts,
    script: `${fioWriteThenVerify(dev)}${scriptTail}`,
    memMiB: 512,
    smp: 2,
    timeoutMs: 900_000,
    onOutput: (text) => {
      // Markers may arrive split over chunks: look at the whole console so far.
      console_ += text;
      if (console_.includes('@@MARK fio_start')) started();
      if (console_.includes('@@MARK write_done')) writeDone = true;
    },
  }).finally(() => {
    done = true;
  });
  return {
    run,
    started: fioStarted,
    get done() {
      return done;
    },
    get writeDone() {
      return writeDone;
    },
  };
}
