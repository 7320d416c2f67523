/**
 * vhostd-perf's NVMe-over-vfio-user mode: the load generator attaches to a
 * vfio-user NVMe controller (vhostd's `<traddr>/cntrl`) as a client, the way
 * QEMU's vfio-user-pci and a guest's NVMe driver would together, and drives
 * I/O from the same native thread and with the same report as the
 * vhost-user-blk mode.
 *
 * Here, on the JS thread, with the in-repo client (bench/perf/vfio-user-client.ts):
 * VERSION; BAR0's region info (the doorbell page as a sparse-mmap area with
 * its fd, when offered); CAP and VS from BAR0; one memfd laid out as admin
 * queues, an Identify buffer and per I/O queue an SQ, a CQ, PRP list pages
 * and data buffers, given with DMA_MAP; controller enable (AQA/ASQ/ACQ,
 * CC.EN, CSTS.RDY); Identify controller (MDTS) and namespace (NSZE, LBA
 * size); Set Features Number of Queues; Create I/O CQ (physically
 * contiguous, interrupts off: the generator polls) and SQ per queue pair.
 * Then the native job (bench/native/job.cc, NVMe mode) maps the memfd and
 * the doorbell page itself and runs the I/O loop. Afterwards: Delete I/O SQ
 * and CQ, CC.EN = 0, close. Main thread (any JS thread).
 */
import { native as vhostdNative } from '../../bindings';
import { NvmeDriver, VfioUserClient } from './vfio-user-client';
import { type PerfOptions, type PerfReport, PerfError, checkPerfOptions, loadPerfAddon } from './perf';

/** How doorbells are written: the mapped page when offered (`auto`), always it (`mmap`), or REGION_WRITE messages. */
export type DoorbellMode = 'auto' | 'mmap' | 'region-write';

export interface NvmePerfOptions extends Omit<PerfOptions, 'scsi' | 'scsiTarget' | 'eventIdx' | 'inflight' | 'completion' | 'descFreeList'> {
  /** The controller's vfio-user socket (`<traddr>/cntrl`). */
  socketPath: string;
  /** Namespace to drive; default 1. */
  nsid?: number;
  /** Default auto. */
  doorbells?: DoorbellMode;
}

const PAGE = 4096;
const MEM_BASE = 0x100000;
const ADMIN_ENTRIES = 32;
const DOORBELL_BAR_OFFSET = 0x1000;

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

function check(cond: boolean, message: string): void {
  if (!cond) throw new PerfError(`vhostd-perf --nvme: ${message}`, 'ERR_PERF_NVME');
}

interface QueueLayout {
  qid: number;
  size: number;
  sqGpa: number;
  cqGpa: number;
  prpGpa: number;
  dataGpa: number;
}

/** Places admin queues, the Identify buffer and each I/O queue pair's SQ, CQ, PRP pages and data in one region at MEM_BASE. */
function layout(queues: number, size: number, iodepth: number, blockSize: number): { asq: number; acq: number; idbuf: number; queues: QueueLayout[]; bytes: number } {
  let at = MEM_BASE;
  const take = (bytes: number): number => {
    const gpa = at;
    at = alignUp(at + bytes, PAGE);
    return gpa;
  };
  const asq = take(ADMIN_ENTRIES * 64);
  const acq = take(ADMIN_ENTRIES * 16);
  const idbuf = take(PAGE);
  const qs: QueueLayout[] = [];
  for (let i = 0; i < queues; i++) {
    const sqGpa = take(size * 64);
    const cqGpa = take(size * 16);
    // A buffer of more than one page may span three or more pages (PRP list); one list page per slot.
    const prpGpa = blockSize > PAGE ? take(iodepth * PAGE) : 0;
    const dataGpa = take(iodepth * blockSize);
    qs.push({ qid: i + 1, size, sqGpa, cqGpa, prpGpa, dataGpa });
  }
  return { asq, acq, idbuf, queues: qs, bytes: at - MEM_BASE };
}

/** Runs one job against an NVMe controller over vfio-user and resolves with the generator's report. */
export async function runNvmePerf(options: NvmePerfOptions): Promise<PerfReport> {
  const checked = checkPerfOptions(options);
  const nsid = options.nsid ?? 1;
  const mode = options.doorbells ?? 'auto';
  check(Number.isSafeInteger(nsid) && nsid >= 1 && nsid <= 0xfffffffe, 'nsid must be in [1, 0xfffffffe]');
  check(mode === 'auto' || mode === 'mmap' || mode === 'region-write', 'doorbells must be auto, mmap or region-write');
  const queues = options.queues ?? 1;
  const iodepth = options.iodepth ?? 32;
  const blockSize = options.blockSizeBytes ?? 4096;
  const addon = loadPerfAddon();

  const client = await VfioUserClient.connect(options.socketPath, options.timeoutMs ?? 10_000);
  let drv: NvmeDriver | null = null;
  let barFd = -1;
  let created = 0;
  let enabled = false;
  try {
    await client.version();
    const bar = await client.regionInfo(0);
    barFd = bar.fd;
    const area = bar.areas.find((a) => a.offset <= DOORBELL_BAR_OFFSET && a.offset + a.size > DOORBELL_BAR_OFFSET);
    const offered = bar.fd >= 0 && area !== undefined;
    check(mode !== 'mmap' || offered, 'the controller offers no mappable doorbell page (BAR0 sparse-mmap area)');
    const useMmap = offered && mode !== 'region-write';

    // CAP (NVMe Base 2.0 §3.1.4.1): MQES, DSTRD, MPSMIN.
    const capLo = await client.read32(0, 0x00);
    const capHi = await client.read32(0, 0x04);
    const vs = await client.read32(0, 0x08);
    const mqes = (capLo & 0xffff) + 1;
    const stride = 4 << (capHi & 0xf);
    check(((capHi >>> 16) & 0xf) === 0, 'the controller does not take 4 KiB pages (CAP.MPSMIN)');
    let size = options.queueSize ?? 0;
    if (size === 0) {
      size = 16;
      while (size < 2 * iodepth) size *= 2;
      size = Math.min(size, mqes);
    }
    check(size >= 2 && size <= mqes, `queue size ${size} is outside [2, CAP.MQES + 1 = ${mqes}]`);
    check(iodepth < size, `iodepth ${iodepth} needs a queue of more than ${iodepth} entries (queue size ${size}, CAP.MQES + 1 = ${mqes})`);

    const lay = layout(queues, size, iodepth, blockSize);
    drv = new NvmeDriver(client, MEM_BASE, lay.bytes);
    drv.doorbellStride = stride;
    if (useMmap && area !== undefined) {
      drv.mapDoorbells(bar.fd, bar.offset, area);
    }
    await client.dmaMap(drv.memFd, MEM_BASE, lay.bytes);
    await drv.enable(lay.asq, lay.acq, ADMIN_ENTRIES);
    enabled = true;
    const admin = async (what: string, opcode: number, fill: (v: DataView, at: number) => void): Promise<number> => {
      const c = await (drv as NvmeDriver).run(0, opcode, fill);
      check(c.status === 0, `${what} failed with status 0x${c.status.toString(16)}`);
      return c.dw0;
    };
    // Identify controller: MDTS (byte 77) in units of CAP.MPSMIN (4 KiB).
    await admin('Identify controller', 0x06, (v, at) => {
      v.setUint32(at + 24, lay.idbuf, true);
      v.setUint32(at + 40, 1, true);
    });
    const mdts = drv.mem[drv.off(lay.idbuf) + 77];
    const maxTransfer = mdts === 0 ? 0 : PAGE * 2 ** mdts;
    check(maxTransfer === 0 || blockSize <= maxTransfer, `block size ${blockSize} exceeds the controller's MDTS (${maxTransfer} bytes)`);
    // Identify namespace: NSZE (bytes 0-7), FLBAS (26), LBAF[n].LBADS (128 + 4n + 2).
    await admin(`Identify namespace ${nsid}`, 0x06, (v, at) => {
      v.setUint32(at + 4, nsid, true);
      v.setUint32(at + 24, lay.idbuf, true);
      v.setUint32(at + 40, 0, true);
    });
    const idv = new DataView(drv.mem.buffer, drv.off(lay.idbuf), PAGE);
    const nsze = Number(idv.getBigUint64(0, true));
    check(nsze > 0, `namespace ${nsid} is not active (NSZE 0)`);
    const lbads = idv.getUint8(128 + 4 * (idv.getUint8(26) & 0xf) + 2);
    check(lbads >= 9 && lbads <= 16, `namespace ${nsid} has LBADS ${lbads}`);
    const lbaSize = 2 ** lbads;
    // Number of Queues (Feature 07h): NSQR/NCQR 0's based; granted in dw0.
    const granted = await admin('Set Features Number of Queues', 0x09, (v, at) => {
      v.setUint32(at + 40, 0x07, true);
      v.setUint32(at + 44, (queues - 1) | ((queues - 1) << 16), true);
    });
    const queuesGranted = Math.min((granted & 0xffff) + 1, (granted >>> 16) + 1);
    check(queuesGranted >= queues, `the controller grants ${queuesGranted} I/O queue pairs, ${queues} asked`);
    for (const q of lay.queues) {
      drv.mem.fill(0, drv.off(q.cqGpa), drv.off(q.cqGpa) + q.size * 16);
      await admin(`Create I/O CQ ${q.qid}`, 0x05, (v, at) => {
        v.setUint32(at + 24, q.cqGpa, true);
        v.setUint32(at + 40, q.qid | ((q.size - 1) << 16), true);
        v.setUint32(at + 44, 0x1, true); // PC, interrupts off (polled)
      });
      await admin(`Create I/O SQ ${q.qid}`, 0x01, (v, at) => {
        v.setUint32(at + 24, q.sqGpa, true);
        v.setUint32(at + 40, q.qid | ((q.size - 1) << 16), true);
        v.setUint32(at + 44, 0x1 | (q.qid << 16), true); // PC, CQID
      });
      created++;
    }
    const json = await addon.run({
      ...checked,
      queues,
      nvme: {
        memFd: drv.memFd,
        memBase: MEM_BASE,
        memSize: lay.bytes,
        doorbellFd: useMmap ? bar.fd : -1,
        doorbellOffset: useMmap ? bar.offset + DOORBELL_BAR_OFFSET : 0,
        doorbellSize: useMmap && area !== undefined ? area.size - (DOORBELL_BAR_OFFSET - area.offset) : 0,
        doorbellBarOffset: DOORBELL_BAR_OFFSET,
        doorbellStride: stride,
        socketFd: client.fd,
        nsid,
        lbaSize,
        nsze,
        queues: lay.queues,
      },
    });
    const report = JSON.parse(json) as PerfReport;
    if (report.nvme !== null) {
      report.nvme.doorbellPageOffered = offered;
      report.nvme.queuesGranted = queuesGranted;
      report.nvme.maxTransferBytes = maxTransfer;
      report.nvme.version = `${vs >>> 16}.${(vs >>> 8) & 0xff}.${vs & 0xff}`;
    }
    return report;
  } finally {
    try {
      if (drv !== null && enabled) {
        for (let qid = created; qid >= 1; qid--) {
          await drv.run(0, 0x00, (v, at) => v.setUint32(at + 40, qid, true)); // Delete I/O SQ
          await drv.run(0, 0x04, (v, at) => v.setUint32(at + 40, qid, true)); // Delete I/O CQ
        }
        await drv.disable();
      }
    } finally {
      client.close();
      drv?.release();
      if (barFd >= 0) vhostdNative.close(barFd);
    }
  }
}
