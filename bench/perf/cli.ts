/**
 * vhostd-perf command line: fio-like flags in, a summary (or the JSON report
 * with --json) out. Exit status 0 on success, 1 when a request failed or
 * verification found a mismatch, 2 on bad usage or a failed run.
 * Runs on the main thread; the I/O loop runs on the generator's native thread.
 *
 *   vhostd-perf --socket PATH --rw randread --bs 4k --iodepth 32 --queues 1 \
 *               --runtime 10 --ramp 2 --cpu 0 [--verify] [--json]
 *   vhostd-perf --nvme --socket <traddr>/cntrl [--nsid 1] [--doorbells auto|mmap|region-write] ...
 */
import { parseArgs } from 'node:util';
import {
  type CompletionMode,
  type PerfOptions,
  type PerfReport,
  type RwPattern,
  type VerifyMode,
  PerfError,
  parseDurationSec,
  parseSize,
  runPerf,
} from './perf';
import { type DoorbellMode, runNvmePerf } from './nvme';

const USAGE = `usage: vhostd-perf --socket PATH [options]
  --rw PATTERN         randread | randwrite | read | write | randrw (default randread)
  --rwmixread PCT      reads in percent for randrw (default 50)
  --bs SIZE            I/O size, e.g. 4k, 64k (default 4k)
  --iodepth N          requests in flight per queue (default 32)
  --queues N           virtqueues (--nvme: I/O queue pairs), all on the one generator thread (default 1)
  --queue-size N       virtqueue size (default: power of two >= 3 x iodepth; --nvme: SQ/CQ entries, >= 2 x iodepth)
  --runtime TIME       measured time, e.g. 10, 10s, 500ms (default 10s)
  --ramp TIME          warm-up before measuring (default 0)
  --size SIZE          length of the range (default: to the end of the device)
  --offset SIZE        start of the range (default 0)
  --cpu N              core to pin the generator to, -1 for none (default 0)
  --completion MODE    poll | interrupt (default poll)
  --event-idx          negotiate VIRTIO_F_EVENT_IDX when offered
  --hugepages          front-end memory in 2 MiB hugepages (needed by SPDK's vhost)
  --inflight           negotiate INFLIGHT_SHMFD when offered (the back-end records every request)
  --packed             packed virtqueues (VIRTIO_F_RING_PACKED; fails when not offered; not with --scsi)
  --indirect           each request one descriptor pointing at a table of its three, as Linux guests
                       do (VIRTIO_F_RING_INDIRECT_DESC; fails when not offered; not with --scsi)
  --desc-free-list     split ring: descriptors taken from a free list and written per request, as
                       Linux's virtio_ring does (default: each slot's own, written once; not with
                       --scsi, --packed or --nvme)
  --scsi               the socket is vhost-user-scsi: READ 16 / WRITE 16 to LUN 0 of --scsi-target
  --scsi-target N      target of the LUN in --scsi mode (default 0)
  --nvme               the socket is an NVMe controller over vfio-user (<traddr>/cntrl): Read/Write on --nsid
  --nsid N             namespace in --nvme mode (default 1)
  --doorbells MODE     --nvme: auto (the mapped doorbell page when offered) | mmap | region-write
  --verify             write the range, read it back, check CRC-32C (= --verify-mode write-read)
  --verify-mode MODE   write-read | write | read
  --verify-seed N      seed of the verify pattern (default 1)
  --seed N             seed of offsets and the read/write mix (default 1)
  --timeout-ms N       limit for each back-end reply and the final drain (default 10000)
  --json               print the JSON report
  -h, --help`;

function int(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^-?\d+$/.test(text)) throw new PerfError(`--${name} must be an integer, got ${text}`, 'ERR_PERF_OPTIONS');
  return Number(text);
}

export interface CliOptions extends PerfOptions {
  /** --nvme: run bench/perf/nvme.ts's vfio-user NVMe mode. */
  nvme?: boolean;
  nsid?: number;
  doorbells?: DoorbellMode;
}

export function parseCli(argv: string[]): { options: CliOptions; json: boolean } | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      socket: { type: 'string' },
      rw: { type: 'string' },
      rwmixread: { type: 'string' },
      bs: { type: 'string' },
      iodepth: { type: 'string' },
      queues: { type: 'string' },
      'queue-size': { type: 'string' },
      runtime: { type: 'string' },
      ramp: { type: 'string' },
      size: { type: 'string' },
      offset: { type: 'string' },
      cpu: { type: 'string' },
      completion: { type: 'string' },
      'event-idx': { type: 'boolean' },
      hugepages: { type: 'boolean' },
      inflight: { type: 'boolean' },
      packed: { type: 'boolean' },
      indirect: { type: 'boolean' },
      'desc-free-list': { type: 'boolean' },
      scsi: { type: 'boolean' },
      'scsi-target': { type: 'string' },
      nvme: { type: 'boolean' },
      nsid: { type: 'string' },
      doorbells: { type: 'string' },
      verify: { type: 'boolean' },
      'verify-mode': { type: 'string' },
      'verify-seed': { type: 'string' },
      seed: { type: 'string' },
      'timeout-ms': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) return 'help';
  if (values.socket === undefined) throw new PerfError('--socket is required', 'ERR_PERF_OPTIONS');
  let verify: VerifyMode = 'off';
  if (values.verify === true) verify = 'write-read';
  if (values['verify-mode'] !== undefined) verify = values['verify-mode'] as VerifyMode;
  if (values.nvme !== true && (values.nsid !== undefined || values.doorbells !== undefined)) {
    throw new PerfError('--nsid and --doorbells need --nvme', 'ERR_PERF_OPTIONS');
  }
  const options: CliOptions = {
    socketPath: values.socket,
    rw: (values.rw ?? 'randread') as RwPattern,
    rwmixread: int('rwmixread', values.rwmixread),
    blockSizeBytes: values.bs === undefined ? undefined : parseSize(values.bs),
    iodepth: int('iodepth', values.iodepth),
    queues: int('queues', values.queues),
    queueSize: int('queue-size', values['queue-size']),
    runtimeSec: values.runtime === undefined ? undefined : parseDurationSec(values.runtime),
    rampSec: values.ramp === undefined ? undefined : parseDurationSec(values.ramp),
    sizeBytes: values.size === undefined ? undefined : parseSize(values.size),
    offsetBytes: values.offset === undefined ? undefined : parseSize(values.offset),
    cpu: int('cpu', values.cpu),
    completion: values.completion as CompletionMode | undefined,
    eventIdx: values['event-idx'],
    hugepages: values.hugepages,
    inflight: values.inflight,
    packed: values.packed,
    indirect: values.indirect,
    descFreeList: values['desc-free-list'],
    scsi: values.scsi,
    scsiTarget: int('scsi-target', values['scsi-target']),
    verify,
    verifySeed: int('verify-seed', values['verify-seed']),
    seed: int('seed', values.seed),
    timeoutMs: int('timeout-ms', values['timeout-ms']),
  };
  if (values.nvme === true) {
    options.nvme = true;
    options.nsid = int('nsid', values.nsid);
    options.doorbells = values.doorbells as DoorbellMode | undefined;
  }
  return { options, json: values.json === true };
}

function us(ns: number): string {
  return (ns / 1000).toFixed(2);
}

/** A short fio-like summary of a report. */
export function formatReport(r: PerfReport): string {
  const j = r.job;
  const lines = [
    `${r.socket}: rw=${j.rw} bs=${j.blockSizeBytes} iodepth=${j.iodepth} queues=${j.queues} ` +
      `completion=${j.completion} cpu=${j.cpu} eventIdx=${String(r.device.eventIdx)} inflight=${String(r.device.inflight)} packed=${String(r.device.packed)} indirect=${String(r.device.indirect)}`,
    `  ios=${r.ios} (read ${r.reads}, write ${r.writes}) errors=${r.errors} in ${r.elapsedSec.toFixed(3)} s`,
    `  IOPS=${Math.round(r.iops)} BW=${r.mibPerSec.toFixed(1)}MiB/s (${r.mbPerSec.toFixed(1)}MB/s)`,
    `  lat (us): min=${us(r.latencyNs.min)} mean=${us(r.latencyNs.mean)} p50=${us(r.latencyNs.p50)} ` +
      `p90=${us(r.latencyNs.p90)} p99=${us(r.latencyNs.p99)} p99.9=${us(r.latencyNs.p999)} max=${us(r.latencyNs.max)}`,
    `  generator cpu: ${(r.cpu.utilization * 100).toFixed(1)}% (user ${r.cpu.userSec.toFixed(3)} s, ` +
      `sys ${r.cpu.sysSec.toFixed(3)} s), loop busy ${(r.cpu.busyFraction * 100).toFixed(1)}% ` +
      `(${r.cpu.busyNsPerIo.toFixed(0)} ns/io), descheduled ${r.cpu.stallSec.toFixed(3)} s ` +
      `(${r.cpu.stalls} stalls, ${r.cpu.involuntaryContextSwitches} preemptions),\n  kicks/io=${r.kicksPerIo.toFixed(3)}, call wakeups=${r.callWakeups}`,
  ];
  if (r.nvme !== null && r.nvme !== undefined) {
    const n = r.nvme;
    lines.push(
      `  nvme nsid=${n.nsid} lba=${n.lbaSize} doorbells=${n.doorbells}${n.doorbellPageOffered === true ? ' (page offered)' : ''} ` +
        `sq doorbells=${n.sqDoorbells} cq doorbells=${n.cqDoorbells}` +
        (n.firstErrorStatus !== 0 ? ` first error status=0x${n.firstErrorStatus.toString(16)}` : ''),
    );
  }
  if (r.verify !== null) {
    const v = r.verify;
    lines.push(
      `  verify ${v.mode} seed=${v.seed}: written=${v.blocksWritten} checked=${v.blocksChecked} ` +
        `mismatches=${v.mismatches}` +
        (v.firstMismatches.length > 0 ? ` first at byte ${v.firstMismatches[0].offsetBytes}` : ''),
    );
  }
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseCli>;
  try {
    parsed = parseCli(argv);
  } catch (err) {
    process.stderr.write(`vhostd-perf: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (parsed === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let report: PerfReport;
  try {
    const { nvme, nsid, doorbells, ...perf } = parsed.options;
    if (nvme === true) {
      if (perf.scsi === true || perf.eventIdx === true || perf.inflight === true || perf.packed === true || perf.indirect === true || perf.descFreeList === true || perf.completion === 'interrupt') {
        throw new PerfError('--nvme takes none of --scsi, --event-idx, --inflight, --packed, --indirect, --desc-free-list, --completion interrupt', 'ERR_PERF_OPTIONS');
      }
      report = await runNvmePerf({ ...perf, nsid, doorbells });
    } else {
      report = await runPerf(perf);
    }
  } catch (err) {
    const message = (err as Error).message;
    process.stderr.write(`${message.startsWith('vhostd-perf') ? '' : 'vhostd-perf: '}${message}\n`);
    return 2;
  }
  process.stdout.write(parsed.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatReport(report)}\n`);
  if (report.verify !== null && report.verify.mismatches > 0) {
    process.stderr.write(`vhostd-perf: verify FAILED: ${report.verify.mismatches} mismatching blocks\n`);
    return 1;
  }
  if (report.errors > 0) {
    process.stderr.write(`vhostd-perf: ${report.errors} requests completed with an error status\n`);
    return 1;
  }
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`vhostd-perf: ${String(err)}\n`);
      process.exitCode = 2;
    },
  );
}
