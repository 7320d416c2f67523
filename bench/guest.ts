/**
 * `npm run guest`: a guest in one line. Builds (or finds cached) the small
 * test guest with scripts/build-guest.sh, finds the default disk — a vhostd
 * --default already serving /tmp/vhostd/vhost.0, or else starts one in a
 * fresh directory for the run — chooses the accelerator (KVM when a 2 s probe
 * boots the guest kernel under -accel kvm, TCG otherwise, as bench/guest-fio)
 * and boots the guest under QEMU against the disk, streaming its console: the
 * guest shows the disk it sees (/dev/vda, size, queues) and runs a short fio
 * with crc32c verification. Exit status 0 when the guest saw the disk and fio
 * passed, 1 otherwise, 2 for a bad command line.
 *
 *   npm run guest [-- [--socket PATH] [--cpumask MASK] [--accel auto|kvm|tcg]
 *                     [--fio-seconds N] [--timeout S]]
 *
 * Works from a clone (the guest image recipe and the QEMU runner live in the
 * repository, not in the npm package). Thread: main.
 */
import fs from 'node:fs';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { probeKvm, type AccelChoice } from '../reactor/kvm-probe';
import { bootGuest, guestImage } from '../test/lib/guest';
import { probeDisk } from '../test/lib/guest-scripts';
import { startVhostd, type VhostdHandle } from '../test/lib/vhostd';

export const USAGE = `usage: npm run guest -- [options]

Boots the small test guest (built and cached by scripts/build-guest.sh) under
QEMU against vhostd's default disk and shows it: the disk the guest sees and
a short fio with verification.

  --socket PATH      a vhost-user-blk socket to use (default: /tmp/vhostd/vhost.0 when
                     a vhostd --default serves it; else a vhostd --default is started)
  --cpumask MASK     cores of the vhostd this starts (default 0x1)
  --accel MODE       auto (default: KVM when a 2 s probe boots the kernel under KVM),
                     kvm or tcg
  --fio-seconds N    length of the fio run in the guest (default 5)
  --timeout S        give up on the guest after S seconds (default 600)
  -h, --help         this text
`;

/** Where `vhostd --default` puts its disk (README's quick start). */
export const DEFAULT_SOCKET = '/tmp/vhostd/vhost.0';

export interface GuestOptions {
  socket?: string;
  cpumask: string;
  accel: 'auto' | 'kvm' | 'tcg';
  fioSeconds: number;
  timeoutS: number;
}

export class UsageError extends Error {}

export function parseGuestArgs(argv: string[]): GuestOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        cpumask: { type: 'string' },
        accel: { type: 'string' },
        'fio-seconds': { type: 'string' },
        timeout: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return 'help';
  const accel = values.accel ?? 'auto';
  if (accel !== 'auto' && accel !== 'kvm' && accel !== 'tcg') throw new UsageError('--accel must be auto, kvm or tcg');
  const int = (text: string | undefined, name: string, dflt: number, max: number): number => {
    if (text === undefined) return dflt;
    if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > max) throw new UsageError(`${name} must be an integer from 1 to ${max}`);
    return Number(text);
  };
  return {
    socket: values.socket,
    cpumask: values.cpumask ?? '0x1',
    accel,
    fioSeconds: int(values['fio-seconds'], '--fio-seconds', 5, 3600),
    timeoutS: int(values.timeout, '--timeout', 600, 86_400),
  };
}

/** Does a vhost-user back-end accept connections on `path`? (Connects and closes at once.) */
function serving(path: string): Promise<boolean> {
  try {
    if (!fs.statSync(path).isSocket()) return Promise.resolve(false);
  } catch {
    return Promise.resolve(false);
  }
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** The script the guest runs: the disk it sees, then fio with crc32c verification. */
export function guestScript(fioSeconds: number): string {
  return `
echo "=== the guest sees:"
${probeDisk('vda')}
ls -l /dev/vd* 2>/dev/null
echo "/dev/vda: $(( $(cat /sys/block/vda/size) / 2048 )) MiB, $(ls /sys/block/vda/mq | wc -l) queue(s), vendor virtio-blk (vhost-user)"
echo "=== fio: 4 KiB random read/write, queue depth 16, crc32c verified, ${fioSeconds} s"
check fio fio --name=guest --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randrw --bs=4k --size=64M --verify=crc32c --verify_fatal=1 \\
  --runtime=${fioSeconds} --group_reporting
`;
}

export async function runGuest(opts: GuestOptions, say: (line: string) => void, console: (text: string) => void): Promise<number> {
  say('building or finding the test guest (scripts/build-guest.sh; the first build takes a few minutes)');
  const image = await guestImage();
  say(`guest: kernel ${image.kernelVersion} in ${image.dir}`);

  let socket = opts.socket;
  let started: VhostdHandle | null = null;
  if (socket === undefined && (await serving(DEFAULT_SOCKET))) {
    socket = DEFAULT_SOCKET;
    say(`using the running vhostd's default disk: ${socket}`);
  }
  try {
    if (socket === undefined) {
      say(`starting vhostd --default -m ${opts.cpumask}`);
      started = await startVhostd({ cpumask: opts.cpumask, extraArgs: ['--default'], startTimeoutMs: 60_000 });
      socket = started.socketOf('vhost.0');
      say(`vhostd (pid ${started.daemon.child.pid}) serves the 256 MiB default disk on ${socket}`);
    } else if (!(await serving(socket))) {
      say(`nothing accepts connections on ${socket}`);
      return 1;
    }

    let accel: AccelChoice;
    if (opts.accel === 'auto') accel = await probeKvm(image.kernel, 2000);
    else accel = { accel: opts.accel, why: 'chosen with --accel' };
    say(`accelerator: ${accel.accel} (${accel.why})`);
    say('booting the guest; its console follows');
    const run = await bootGuest({
      sockets: [{ path: socket, kind: 'blk', numQueues: 2 }],
      script: guestScript(opts.fioSeconds),
      smp: 2,
      accel: accel.accel,
      timeoutMs: opts.timeoutS * 1000,
      onOutput: console,
    });
    const size = run.values.get('size');
    const fio = run.results.get('fio');
    if (run.timedOut) say(`the guest did not finish within ${opts.timeoutS} s`);
    if (size === undefined) {
      say('the guest did not see the disk');
      return 1;
    }
    say(`the guest saw /dev/vda (${Number(size) / 2048} MiB, ${run.values.get('hwq') ?? '?'} queues); fio ${fio === 0 ? 'passed with verification' : `failed (exit ${String(fio)})`}`);
    return fio === 0 && run.exitCode === 0 ? 0 : 1;
  } finally {
    if (started) {
      say('stopping the vhostd this started');
      await started.stop();
    }
  }
}

if (require.main === module) {
  let opts: GuestOptions | 'help';
  try {
    opts = parseGuestArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${USAGE}\nnpm run guest: ${(err as Error).message}\n`);
    process.exit(2);
  }
  if (opts === 'help') {
    process.stdout.write(USAGE);
  } else {
    runGuest(
      opts,
      (line) => process.stdout.write(`[guest] ${line}\n`),
      (text) => process.stdout.write(text),
    ).then(
      (code) => {
        process.exitCode = code;
      },
      (err: unknown) => {
        process.stderr.write(`npm run guest: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exitCode = 1;
      },
    );
  }
}
