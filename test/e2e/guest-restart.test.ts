/**
 * End-to-end: vhostd restarts under a running guest lose no I/O (issue #10).
 * A Linux guest under QEMU 7.2 (`-chardev socket,...,reconnect=1`) runs fio
 * random writes with crc32c verification on a uring file bdev over 2 queues;
 * during the write phase vhostd is killed with SIGKILL three times and
 * stopped with SIGTERM once, each time started again with the same config
 * and socket paths. QEMU reconnects, hands back the in-flight region
 * (INFLIGHT_SHMFD) and the new process resubmits what the dead one had in
 * flight. fio must finish with 0 verify errors and the guest kernel must
 * log no I/O error.
 */
import t from 'tap';
import { restartUnderFio } from '../lib/restart-run';

t.setTimeout(1_800_000);

t.test('kill -9 (three times) and SIGTERM under fio verify: QEMU reconnects, nothing is lost', (t) => restartUnderFio(t, { packed: false }));
