/**
 * A stand-alone vfio-user NVMe server for probing a real client (QEMU's
 * vfio-user-pci): one socket, one connection at a time, the NVMe PCI
 * function as the session's model and the NVMe controller polled on this
 * same thread every millisecond over a 64 MiB malloc namespace. Every
 * command is logged, so a run shows what the client negotiated and did.
 * Not part of the daemon: the daemon runs the controller in an engine worker.
 *
 *   node dist/reactor/vfio-user/probe.js /tmp/nvme.sock
 *
 * Thread: main (this process only).
 */
import * as fs from 'node:fs';
import { native } from '../../bindings';
import { WorkerBdevLayer } from '../../engine/bdev/layer';
import type { RegionDesc } from '../../engine/control';
import { GuestMemory } from '../../engine/memory';
import { NvmeController } from '../../engine/nvme/controller';
import { NvmePciFunction } from '../../engine/nvme/pci';
import { Bar0 } from '../../engine/nvme/spec';
import { logger } from '../log';
import { VfioUserConnection, type VfioUserBackend } from './connection';
import { commandName } from './messages';
import type { SessionEffect } from './session';
import { VfioUserSession } from './session';

const log = logger('vfio-user');
const sockPath = process.argv[2];
if (!sockPath) {
  process.stderr.write('usage: probe.js SOCKET\n');
  process.exit(2);
}

const barFd = native.memfdCreate('nvme-bar0', 0);
native.ftruncate(barFd, Bar0.Size);
const bar = new Uint8Array(native.mmap(barFd, 0, Bar0.Size, true));
const pci = new NvmePciFunction({ bar, barFd, msixVectors: 8 });
const layer = new WorkerBdevLayer();
const msix: number[] = new Array<number>(8).fill(-1);
let intx = -1;
let irqCount = 0;
const ctrl = new NvmeController(
  {
    name: 'nvme0',
    serial: 'VHOSTD0001',
    model: 'vhostd NVMe controller',
    firmware: '0.1',
    subnqn: 'nqn.2026-11.io.vhostd:nvme0',
    maxIoQueues: 4,
    vectors: 8,
    namespaces: [{ nsid: 1, bdev: { name: 'Malloc0', module: 'malloc', blockSize: 512, numBlocks: 131072, params: { storage: new SharedArrayBuffer(64 << 20) } } }],
  },
  bar,
  layer,
  {
    signal(v: number): void {
      const fd = msix[v] >= 0 ? msix[v] : intx;
      if (fd >= 0) {
        native.eventfdWrite(fd, 1);
        irqCount++;
      }
    },
  },
);
ctrl.start(performance.now());
let memory: GuestMemory | null = null;
let lastCsts = -1;

function quiesce(): void {
  for (let i = 0; i < 1000 && ctrl.bdevOutstanding() > 0; i++) ctrl.poll(performance.now());
}

const backend: VfioUserBackend = {
  name: 'nvme0',
  async apply(effects: readonly SessionEffect[]): Promise<void> {
    for (const e of effects) {
      if (e.kind === 'memory') {
        quiesce();
        ctrl.setMemory(null);
        memory?.unmap();
        memory = null;
        const regions: RegionDesc[] = e.windows
          .filter((w) => w.fd >= 0)
          .map((w) => ({ fd: w.fd, guestPhysAddr: w.address, sizeBytes: w.sizeBytes, userAddr: w.address, mmapOffset: w.offset }));
        if (regions.length > 0) {
          memory = GuestMemory.map(regions, native);
          ctrl.setMemory(memory);
        }
        log.info('DMA table', { windows: e.windows.map((w) => `${w.address.toString(16)}+${w.sizeBytes.toString(16)}${w.fd < 0 ? '(no fd)' : ''}`).join(' ') });
      } else if (e.kind === 'irqs') {
        if (e.index === 2) e.fds.forEach((fd, i) => (msix[i] = fd));
        if (e.index === 0) intx = e.fds[0];
        log.info('irqs', { index: e.index, fds: e.fds.join(',') });
      } else if (e.kind === 'reset') {
        quiesce();
        pci.resetRegisters();
        log.info('device reset');
      } else {
        log.info('irq effect', { ...e });
      }
    }
  },
  async connectionChanged(connected: boolean): Promise<void> {
    log.info(connected ? 'client connected' : 'client gone', { irqs: irqCount });
    if (!connected) {
      quiesce();
      ctrl.setMemory(null);
      memory?.unmap();
      memory = null;
      msix.fill(-1);
      intx = -1;
    }
  },
};

class LoggingSession extends VfioUserSession {
  override handle(msg: Parameters<VfioUserSession['handle']>[0]): ReturnType<VfioUserSession['handle']> {
    const fields: Record<string, unknown> = { id: msg.id };
    for (const k of ['index', 'region', 'offset', 'count', 'address', 'size', 'flags', 'start'] as const) {
      if (k in msg) fields[k] = (msg as unknown as Record<string, number>)[k];
    }
    if (msg.command === 10 /* REGION_WRITE */) fields.data = Buffer.from(msg.data).toString('hex');
    const r = super.handle(msg);
    if (msg.command === 9 /* REGION_READ */ && r.reply) fields.data = Buffer.from(r.reply.subarray(32)).toString('hex');
    if (r.reply && (new DataView(r.reply.buffer, r.reply.byteOffset).getUint32(8, true) & 0x20) !== 0) fields.error = new DataView(r.reply.buffer, r.reply.byteOffset).getUint32(12, true);
    log.info(commandName(msg.command), fields);
    return r;
  }
}

try {
  fs.unlinkSync(sockPath);
} catch {
  /* not there */
}
const listenFd = native.unixListen(sockPath, 1, 0o600);
const watcher = new native.FdWatcher(listenFd, () => {
  const fd = native.unixAccept(listenFd);
  if (fd < 0) return;
  const conn = new VfioUserConnection(fd, new LoggingSession(pci), backend, log);
  void conn.done.then(() => log.info('connection done'));
});
watcher.start(1);
setInterval(() => {
  ctrl.poll(performance.now());
  const csts = new DataView(bar.buffer).getUint32(0x1c, true);
  if (csts !== lastCsts) {
    log.info('CSTS', { csts: `0x${csts.toString(16)}`, cc: `0x${new DataView(bar.buffer).getUint32(0x14, true).toString(16)}`, fatal: ctrl.fatalReason || undefined });
    lastCsts = csts;
  }
}, 1);
log.info('listening', { sock: sockPath });
