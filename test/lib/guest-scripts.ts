/**
 * Shell scripts run inside the test guest (see guest.ts for the helpers
 * `check`, `value`, `wait_for`), shared by the vhostd end-to-end tests and
 * the harness self-test against qemu-storage-daemon. Test helper, no state.
 */

/** Waits for the disk and reports its geometry: size, ro, hwq, discard limits. */
export function probeDisk(dev = 'vda'): string {
  return `
wait_for /dev/${dev} 150 || { echo "no /dev/${dev}; /sys/block: $(ls /sys/block)"; exit 10; }
value size $(cat /sys/block/${dev}/size)
value ro $(cat /sys/block/${dev}/ro)
value hwq $(ls /sys/block/${dev}/mq | wc -l)
value lbs $(cat /sys/block/${dev}/queue/logical_block_size)
value discard_max $(cat /sys/block/${dev}/queue/discard_max_bytes)
value cache $(cat /sys/block/${dev}/queue/write_cache)
`;
}

/**
 * fio random read/write with crc32c verification, one job per CPU, each job
 * on its own `sizeMiB` region and pinned to its CPU (so each hw queue carries
 * I/O). Also reports each request queue's interrupt count as `irq_virtioN-req.Q`.
 */
export function fioVerify(opts: { dev?: string; jobs: number; sizeMiB: number; runtimeS: number }): string {
  const dev = opts.dev ?? 'vda';
  return `
check fio fio --name=verify --filename=/dev/${dev} --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randrw --bs=4k --size=${opts.sizeMiB}M --numjobs=${opts.jobs} --offset_increment=${opts.sizeMiB}M \\
  --verify=crc32c --verify_fatal=1 --runtime=${opts.runtimeS} \\
  --cpus_allowed=0-${opts.jobs - 1} --cpus_allowed_policy=split --group_reporting
# Completions per request queue, from the MSI-X vectors' counts (all CPUs summed).
awk '/virtio[0-9]+-req\.[0-9]+/ { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break; print "@@VALUE irq_" $NF " " n }' /proc/interrupts
`;
}

/**
 * fio random writes with crc32c verification headers over 2 jobs (24 MiB each,
 * 48 MiB apart, one per CPU), marked `@@MARK fio_start` before and
 * `@@MARK write_done` after, then a verify-only pass over what was written:
 * the scripts of the e2e tests that disturb vhostd during the write phase
 * (restart, memory hot-plug) and then check nothing was lost.
 */
export function fioWriteThenVerify(dev = 'vda'): string {
  return `
wait_for /dev/${dev} 150 || { echo "no /dev/${dev}"; exit 10; }
echo "@@MARK fio_start"
check fio_write fio --name=w --filename=/dev/${dev} --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randwrite --bs=4k --size=24M --numjobs=2 --offset_increment=48M \\
  --verify=crc32c --verify_fatal=1 --do_verify=0 --cpus_allowed=0-1 --cpus_allowed_policy=split --group_reporting
echo "@@MARK write_done"
check fio_verify fio --name=w --filename=/dev/${dev} --direct=1 --ioengine=libaio --iodepth=16 \\
  --rw=randwrite --bs=4k --size=24M --numjobs=2 --offset_increment=48M \\
  --verify=crc32c --verify_fatal=1 --verify_only --cpus_allowed=0-1 --cpus_allowed_policy=split --group_reporting
`;
}

/** Discard (blkdiscard) and flush (fio with fsync, verified). */
export function trimAndFlush(dev = 'vda'): string {
  return `
check discard blkdiscard -o 1048576 -l 4194304 /dev/${dev}
check flush fio --name=flush --filename=/dev/${dev} --ioengine=psync --rw=write --bs=64k \\
  --offset=8M --size=4M --fsync=4 --verify=crc32c --verify_fatal=1
`;
}

/** Tries to write to a (read-only) disk: `rowrite` is the dd exit status. */
export function tryWrite(dev = 'vda'): string {
  return `
check rowrite dd if=/dev/zero of=/dev/${dev} bs=4096 count=1
check roread dd if=/dev/${dev} of=/dev/null bs=4096 count=16
`;
}

/** Writes `sizeMiB` of random data at offset 0 and reports its sha256 as `written`. */
export function writePattern(sizeMiB: number, dev = 'vda'): string {
  return `
dd if=/dev/urandom of=/tmp/pattern bs=1048576 count=${sizeMiB} 2>/dev/null
value written $(sha256sum /tmp/pattern | cut -d' ' -f1)
check write dd if=/tmp/pattern of=/dev/${dev} bs=1048576 count=${sizeMiB} conv=fsync
`;
}

/** Reads `sizeMiB` at offset 0 and reports its sha256 as `read`. */
export function readPattern(sizeMiB: number, dev = 'vda'): string {
  return `
dd if=/dev/${dev} of=/tmp/readback bs=1048576 count=${sizeMiB} 2>/dev/null
value read $(sha256sum /tmp/readback | cut -d' ' -f1)
`;
}

/** Interrupt counts per request queue of the first virtio device reporting them (from fioVerify), by queue index. */
export function queueInterrupts(values: Map<string, string>): number[] {
  const counts: number[] = [];
  for (const [name, text] of values) {
    const m = /^irq_virtio\d+-req\.(\d+)$/.exec(name);
    if (m) counts[Number(m[1])] = Number(text);
  }
  return Array.from(counts, (n) => n ?? 0);
}
