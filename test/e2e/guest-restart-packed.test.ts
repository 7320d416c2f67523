/**
 * End-to-end: the kill -9 / SIGTERM restart test of guest-restart.test.ts on
 * a packed ring (issue #10): the controller is created with packed_ring and
 * QEMU 7.2 asks for `vhost-user-blk-pci,...,packed=on`. The in-flight region
 * is in the packed layout (engine/virtio/inflight-packed.ts); after each
 * kill the new process takes the ring position from it (QEMU only knows the
 * one it last read) and resubmits the chains in flight from their copies.
 */
import t from 'tap';
import { restartUnderFio } from '../lib/restart-run';

t.setTimeout(1_800_000);

t.test('packed ring: kill -9 (three times) and SIGTERM under fio verify, nothing is lost', (t) => restartUnderFio(t, { packed: true }));
