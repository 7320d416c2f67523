/**
 * What guest memory vhostd accepts from a front-end (issue #15 item 4).
 *
 * A front-end that shrinks the file behind a region after vhostd mapped it
 * makes the next access to the lost pages raise SIGBUS, which kills the
 * process (JavaScript cannot recover from it). SPDK (DPDK's rte_vhost) and
 * libvhost-user map regions the same way and have the same exposure; QEMU
 * protects its own side by sealing: memory-backend-memfd has seal=on by
 * default (F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL), so the guest RAM of a
 * QEMU memfd backend can never shrink. Files on /dev/shm or hugetlbfs
 * (memory-backend-file) cannot carry seals.
 *
 * vhostd's choice: every region is checked against the file's size when it
 * is mapped (always); `--require-sealed-memory` additionally refuses any
 * region whose file is not sealed against shrinking (F_SEAL_SHRINK), which
 * makes the SIGBUS impossible — at the cost of refusing /dev/shm and
 * hugetlbfs file backends. Without the option an unsealed region is
 * accepted, as SPDK accepts it. The option covers every memory a front-end
 * hands vhostd to map: vhost-user memory tables (SET_MEM_TABLE,
 * ADD_MEM_REG) and vfio-user DMA windows (DMA_MAP with an fd); both ask
 * unsealedReason() below.
 * Thread: main (reactor); set once at startup.
 */
import { native } from '../../bindings';

export const F_SEAL_SHRINK = 2;

let requireSealed = false;

export function setRequireSealedMemory(on: boolean): void {
  requireSealed = on;
}

export function requireSealedMemory(): boolean {
  return requireSealed;
}

/**
 * Why `fd` may not be mapped as guest memory under --require-sealed-memory
 * (not sealed against shrinking, or a file that cannot carry seals), or null
 * when it may (always null without the option).
 */
export function unsealedReason(fd: number): string | null {
  if (!requireSealed) return null;
  let seals = -1;
  try {
    seals = native.fdGetSeals(fd);
  } catch {
    seals = -1;
  }
  if (seals >= 0 && (seals & F_SEAL_SHRINK) !== 0) return null;
  return `is not sealed against shrinking (F_SEAL_SHRINK${seals < 0 ? ': the file cannot carry seals' : ''}), and --require-sealed-memory is set`;
}
