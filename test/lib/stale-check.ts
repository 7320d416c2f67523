/**
 * The guest side of the dirty-log e2e test: builds test/guest-bin/stale-check.c
 * with the host's `gcc -static` (the guest is x86-64 Linux like the host) and
 * gives the guest script that runs it next to a fio verify loop.
 * Main-thread test helper.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './repo';

/** Regions the program reads in turn, their size, and the control block (after them). */
export const STALE_REGIONS = 16;
export const STALE_REGION_KIB = 1024;
export const STALE_CTRL_OFFSET = 24 << 20;
/** fio's area: after the control block. */
export const FIO_OFFSET_MIB = 32;

/** The static binary, as a file for the guest's per-test cpio (at /stale-check). */
export function buildStaleCheck(dir: string): { name: string; mode: number; data: Buffer } {
  const out = path.join(dir, 'stale-check');
  const src = path.join(repoRoot(), 'test', 'guest-bin', 'stale-check.c');
  execFileSync('gcc', ['-static', '-O2', '-Wall', '-Werror', '-o', out, src], { stdio: ['ignore', 'pipe', 'pipe'] });
  return { name: 'stale-check', mode: 0o100755, data: fs.readFileSync(out) };
}

/**
 * Writes the regions, marks `@@MARK load_start`, then runs stale-check until
 * the host writes "STOPSTOP" at STALE_CTRL_OFFSET (result `stale_check`),
 * while fio write+verify passes (crc32c, verify backlog) loop on their own
 * area until the checker ends: values fio_runs / fio_failed / ioerr.
 */
export function staleCheckScript(dev = 'vda'): string {
  const args = `/dev/${dev} ${STALE_REGIONS} ${STALE_REGION_KIB}`;
  return `
wait_for /dev/${dev} 150 || { echo "no /dev/${dev}"; exit 10; }
check stale_prep /stale-check prep ${args} || exit 11
echo "@@MARK load_start"
( check stale_check /stale-check run ${args} ${STALE_CTRL_OFFSET}; touch /tmp/stop ) &
n=0; f=0
while [ ! -e /tmp/stop ]; do
  if ! fio --name=v --filename=/dev/${dev} --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite --bs=4k \\
      --offset=${FIO_OFFSET_MIB}M --size=4M --verify=crc32c --verify_backlog=32 --verify_fatal=1 --do_verify=1 >/tmp/fio.log 2>&1; then
    f=$((f + 1)); tail -20 /tmp/fio.log
  fi
  n=$((n + 1))
done
wait
value fio_runs $n
value fio_failed $f
value ioerr $(dmesg | grep -ci 'i/o error')
`;
}

/** Tell the running stale-check to stop: "STOPSTOP" in its control block of the disk file. */
export function writeStop(diskFile: string): void {
  const block = Buffer.alloc(4096);
  block.write('STOPSTOP', 0, 'ascii');
  const fd = fs.openSync(diskFile, 'r+');
  try {
    fs.writeSync(fd, block, 0, block.length, STALE_CTRL_OFFSET);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
