/**
 * End-to-end: the kill -9 / SIGTERM restart test of guest-restart.test.ts on
 * a vhost-user-scsi controller (issue #10: "for scsi as soon as a QEMU that
 * reconnects vhost-user-scsi is available"). QEMU 10.2's vhost-user-scsi-pci
 * (../shared/peers/qemu-10.2; QEMU 7.2's takes a region but cannot start with
 * a reconnecting chardev) asks for the in-flight region over all four queues (control,
 * event, two request queues), reconnects (`reconnect-ms=1000`) and hands it
 * back; each new vhostd resubmits the SCSI commands the dead one held.
 * (No packed-ring variant: QEMU's vhost-user-scsi never negotiates packed
 * rings, so vhostd offers none for scsi.)
 */
import t from 'tap';
import { restartUnderFio } from '../lib/restart-run';

t.setTimeout(1_800_000);

t.test('vhost-user-scsi under QEMU 10.2: kill -9 (three times) and SIGTERM under fio verify, nothing is lost', (t) => restartUnderFio(t, { packed: false, scsi: true }));
