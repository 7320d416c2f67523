/**
 * Guest fio runner (issue #5 part 3): starts vhostd with one bdev behind a
 * vhost-user-blk controller, boots the test guest (test/lib/guest.ts) with
 * that disk as /dev/vda, runs a fio job file inside it and prints fio's
 * output. Uses KVM when /dev/kvm works — a 1 s probe boots the guest kernel
 * under `-accel kvm` and checks it printed — and TCG otherwise, and says which;
 * if a KVM guest still never reaches the job, it boots again under TCG.
 *
 *   node dist/bench/guest-fio.js [--job FILE] [--bdev malloc|null|uring] [--size MIB]
 *        [--queues N] [--smp N] [--mem MIB] [--accel auto|kvm|tcg] [--cpumask MASK] [--timeout S]
 *
 * The job file must name the disk (`filename=/dev/vda`); the default job is
 * bench/jobs/randread-4k.fio. Exit status: fio's inside the guest (0 ok), 2
 * on bad usage or when the guest never ran the job. Main thread.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { bootGuest, guestImage } from '../test/lib/guest';
import { startVhostd } from '../test/lib/vhostd';
import { BLOCK_SIZE, createShmFile } from './lib/targets';

const USAGE = `usage: node dist/bench/guest-fio.js [options]
  --job FILE        fio job file run inside the guest (default bench/jobs/randread-4k.fio);
                    it must name the disk: filename=/dev/vda
  --bdev KIND       malloc | null | uring (a file on /dev/shm) (default malloc)
  --size MIB        bdev size (default 256)
  --queues N        virtqueues of the vhost-user-blk device (default: --smp)
  --smp N           guest vCPUs (default 1)
  --mem MIB         guest RAM (default 512)
  --accel MODE      auto | kvm | tcg (default auto: KVM when a 1 s probe shows it works)
  --cpumask MASK    vhostd -m (default 0x2: its engine worker on core 1)
  --timeout S       give up on the guest after this long (default 900)
  -h, --help`;

class UsageError extends Error {}

import { probeKvm, type AccelChoice } from '../reactor/kvm-probe';
import { exitWhenDone } from '../reactor/cli-exit';

export { probeKvm, type AccelChoice };

function intOption(name: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (!Number.isSafeInteger(v) || v < min || v > max) throw new UsageError(`--${name} must be a whole number in [${min}, ${max}]`);
  return v;
}

/** fio's summary lines (IOPS/bandwidth and the mean completion latency) out of its normal output. */
export function fioSummary(output: string): string[] {
  return output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^(read|write|trim): IOPS=/.test(l) || /^clat \([nu]sec\):.*avg=/.test(l) || /^(READ|WRITE): bw=/.test(l));
}

function parseCli(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      job: { type: 'string' },
      bdev: { type: 'string' },
      size: { type: 'string' },
      queues: { type: 'string' },
      smp: { type: 'string' },
      mem: { type: 'string' },
      accel: { type: 'string' },
      cpumask: { type: 'string' },
      timeout: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}

export async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseCli>;
  try {
    parsed = parseCli(argv);
  } catch (err) {
    process.stderr.write(`guest-fio: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let jobText: string;
  let jobFile: string;
  let opts: { bdev: string; sizeMiB: number; smp: number; queues: number; memMiB: number; accel: string; timeoutS: number };
  try {
    if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
    jobFile = path.resolve(values.job ?? path.join(__dirname, '..', '..', 'bench', 'jobs', 'randread-4k.fio'));
    if (!fs.existsSync(jobFile)) throw new UsageError(`--job: ${jobFile} does not exist`);
    jobText = fs.readFileSync(jobFile, 'utf8');
    const bdev = values.bdev ?? 'malloc';
    if (!['malloc', 'null', 'uring'].includes(bdev)) throw new UsageError('--bdev must be malloc, null or uring');
    const smp = intOption('smp', values.smp, 1, 1, 8);
    const accel = values.accel ?? 'auto';
    if (!['auto', 'kvm', 'tcg'].includes(accel)) throw new UsageError('--accel must be auto, kvm or tcg');
    opts = {
      bdev,
      sizeMiB: intOption('size', values.size, 256, 1, 65536),
      smp,
      queues: intOption('queues', values.queues, smp, 1, 16),
      memMiB: intOption('mem', values.mem, 512, 128, 16384),
      accel,
      timeoutS: intOption('timeout', values.timeout, 900, 10, 86400),
    };
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`guest-fio: ${(err as Error).message}\n${USAGE}\n`);
      return 2;
    }
    throw err;
  }

  const choice: AccelChoice =
    opts.accel === 'tcg' ? { accel: 'tcg', why: '--accel tcg' } : opts.accel === 'kvm' ? { accel: 'kvm', why: '--accel kvm' } : await probeKvm((await guestImage()).kernel);
  process.stdout.write(`guest-fio: accelerator ${choice.accel.toUpperCase()} (${choice.why})\n`);
  if (choice.accel === 'tcg') {
    process.stdout.write('guest-fio: under TCG the guest is emulated: fio figures measure QEMU\'s emulator far more than the target\n');
  }

  const vhostd = await startVhostd({ cpumask: values.cpumask ?? '0x2' });
  const shmFile = path.join('/dev/shm', `vhostd-guest-fio-${process.pid}.img`);
  try {
    const sizeBytes = opts.sizeMiB * 2 ** 20;
    const numBlocks = sizeBytes / BLOCK_SIZE;
    if (opts.bdev === 'null') await vhostd.rpc('bdev_null_create', { name: 'Disk0', num_blocks: numBlocks, block_size: BLOCK_SIZE });
    else if (opts.bdev === 'malloc') await vhostd.rpc('bdev_malloc_create', { name: 'Disk0', num_blocks: numBlocks, block_size: BLOCK_SIZE });
    else {
      createShmFile(shmFile, sizeBytes);
      await vhostd.rpc('bdev_uring_create', { name: 'Disk0', filename: shmFile, block_size: BLOCK_SIZE });
    }
    await vhostd.rpc('vhost_create_blk_controller', { ctrlr: 'fio0', dev_name: 'Disk0' });
    process.stdout.write(
      `guest-fio: vhostd -m ${values.cpumask ?? '0x2'}, ${opts.bdev} bdev ${opts.sizeMiB} MiB, ${opts.queues} queue(s); guest ${opts.smp} vCPU, ${opts.memMiB} MiB; job ${jobFile}\n`,
    );
    const eof = `FIO_JOB_${crypto.randomBytes(8).toString('hex')}`;
    const script = `
wait_for /dev/vda 300 || { echo "no /dev/vda"; exit 10; }
cat > /tmp/job.fio <<'${eof}'
${jobText}
${eof}
echo @@FIO-BEGIN
fio /tmp/job.fio
rc=$?
echo @@FIO-END
exit $rc
`;
    const boot = async (accel: 'kvm' | 'tcg'): ReturnType<typeof bootGuest> =>
      bootGuest({
        sockets: [{ path: vhostd.socketOf('fio0'), kind: 'blk', numQueues: opts.queues }],
        script,
        memMiB: opts.memMiB,
        smp: opts.smp,
        timeoutMs: opts.timeoutS * 1000,
        accel,
      });
    let accel = choice.accel;
    let run = await boot(accel);
    if (accel === 'kvm' && run.exitCode === null && !run.output.includes('@@FIO-BEGIN')) {
      process.stdout.write('guest-fio: the KVM guest never reached the job; booting again under TCG\n');
      accel = 'tcg';
      run = await boot(accel);
    }
    const begin = run.output.indexOf('@@FIO-BEGIN');
    const end = run.output.indexOf('@@FIO-END');
    if (begin < 0) {
      process.stderr.write(`guest-fio: the guest never ran the job (timed out: ${run.timedOut}); console:\n${run.output.slice(-4000)}\n`);
      return 2;
    }
    const fioOut = run.output.slice(begin + '@@FIO-BEGIN'.length, end > begin ? end : undefined).replace(/^\n/, '');
    process.stdout.write(fioOut.endsWith('\n') ? fioOut : `${fioOut}\n`);
    process.stdout.write(`guest-fio: summary (${accel.toUpperCase()}):\n${fioSummary(fioOut).map((l) => `  ${l}`).join('\n')}\n`);
    process.stdout.write(`guest-fio: fio exit status ${String(run.exitCode)}, accelerator ${accel.toUpperCase()}\n`);
    return run.exitCode === null ? 2 : run.exitCode;
  } finally {
    await vhostd.stop();
    fs.rmSync(shmFile, { force: true });
  }
}

if (require.main === module) {
  exitWhenDone('guest-fio', main(process.argv.slice(2)), 2);
}
