/**
 * The engine device of kind 'nvme': an NvmeController (controller.ts) as the
 * poll loop drives it. The worker maps BAR0's shared memory file itself (the
 * reactor writes registers there, the VMM maps its doorbell page into the
 * guest, this worker polls CC and the doorbells and writes CSTS) and the
 * client's DMA windows as GuestMemory; interrupts are eventfd writes, one per
 * MSI-X vector with pending completions per poll, or INTx while the guest has
 * no MSI-X vectors set up.
 *
 * The virtio-shaped operations (queueStart, queueStop, setCallFd) do not
 * apply: an NVMe guest creates its queues through the admin queue. Model ops
 * (ModelOp) carry what vfio-user changes: interrupt eventfds, namespace hot
 * add/remove, device reset. A DMA table change (memUpdate) waits for the bdev
 * I/O in flight, since that points into the old mapping; commands that only
 * wait for completion-queue room hold no guest memory.
 *
 * Doorbells are memory, not eventfds: the device has no kick fds, and it
 * keeps an adaptive-mode worker from sleeping (setNotification(true) reports
 * work waiting) while it runs.
 *
 * Thread: the engine worker that runs the device.
 */
import type { DeviceDesc, ModelOp, NvmeModelDesc, QueueDesc, QueueStopResult, RegionDesc, StopResult } from '../control';
import type { DeviceEnv, EngineDevice } from '../device';
import { logger } from '../log';
import type { GuestMemory } from '../memory';
import { NvmeController } from './controller';
import { initRegisters } from './pci';
import { Bar0 } from './spec';

class UnsupportedOp extends Error {
  readonly code = 'ERR_NOT_SUPPORTED';
}

export class NvmeEngineDevice implements EngineDevice {
  readonly id: number;
  readonly name: string;
  readonly ctrl: NvmeController;
  private readonly bar: GuestMemory;
  private readonly barBytes: Uint8Array;
  private memory: GuestMemory | null = null;
  private msixFds: number[];
  private intxFd: number;
  private failed = false;
  private lastFatal = '';

  constructor(
    desc: DeviceDesc,
    private readonly env: DeviceEnv,
  ) {
    const model = desc.model;
    if (model.kind !== 'nvme') throw new RangeError(`device ${desc.name} is not an nvme device`);
    if (model.nsids.length !== desc.bdevs.length) throw new RangeError(`nvme ${desc.name}: ${model.nsids.length} nsids for ${desc.bdevs.length} bdevs`);
    this.id = desc.id;
    this.name = desc.name;
    this.msixFds = model.msixFds.slice(0, model.vectors);
    this.intxFd = model.intxFd;
    // BAR0 mapped as a one-region "memory" at offset 0 of its file: the mapping and its unmap come from the same place as guest memory's.
    this.bar = env.mapMemory([{ fd: model.barFd, guestPhysAddr: 0, sizeBytes: Bar0.Size, userAddr: 0, mmapOffset: 0 }]);
    try {
      this.barBytes = this.bar.bytes[0];
      this.ctrl = new NvmeController(controllerDesc(desc, model), this.barBytes, env.bdevs, {
        signal: (vector) => this.signal(vector),
      });
      this.ctrl.pollsLayer = false;
      if (desc.regions.length > 0) this.memory = env.mapMemory(desc.regions);
      this.ctrl.setMemory(this.memory);
      this.ctrl.start(0);
    } catch (err) {
      this.memory?.unmap();
      this.bar.unmap();
      throw err;
    }
  }

  private signal(vector: number): void {
    const fd = vector < this.msixFds.length && this.msixFds[vector] >= 0 ? this.msixFds[vector] : this.intxFd;
    if (fd >= 0) this.env.signal(fd);
  }

  get inflight(): number {
    return this.ctrl.bdevOutstanding();
  }

  get running(): boolean {
    return !this.failed && this.ctrl.running;
  }

  poll(nowMs: number): number {
    const work = this.ctrl.poll(nowMs);
    if (this.ctrl.fatalReason !== this.lastFatal) {
      this.lastFatal = this.ctrl.fatalReason;
      if (this.lastFatal !== '') logger.warn('nvme controller fatal status (CSTS.CFS) set', { device: this.name, reason: this.lastFatal });
    }
    return work;
  }

  publish(): void {
    this.ctrl.flushInterrupts();
  }

  beginStop(): void {
    this.ctrl.drain();
  }

  finishStop(): StopResult {
    this.ctrl.stop();
    this.memory?.unmap();
    this.memory = null;
    this.bar.unmap();
    return { queues: [] };
  }

  queueStart(_queue: QueueDesc): void {
    throw new UnsupportedOp(`nvme ${this.name}: queues are created by the guest's admin commands`);
  }

  beginQueueStop(_index: number): void {
    throw new UnsupportedOp(`nvme ${this.name}: queues are deleted by the guest's admin commands`);
  }

  queueInflight(_index: number): number {
    return 0;
  }

  finishQueueStop(index: number): QueueStopResult {
    throw new UnsupportedOp(`nvme ${this.name}: no virtqueue ${index}`);
  }

  setCallFd(_index: number, _callFd: number): void {
    throw new UnsupportedOp(`nvme ${this.name}: interrupts are set with the nvmeIrqs model op`);
  }

  beginMemUpdate(): void {
    this.ctrl.drain();
  }

  finishMemUpdate(regions: readonly RegionDesc[]): void {
    let next: GuestMemory | null = null;
    try {
      if (regions.length > 0) next = this.env.mapMemory(regions);
    } catch (err) {
      this.ctrl.resume();
      throw err;
    }
    this.ctrl.setMemory(next);
    this.memory?.unmap();
    this.memory = next;
    this.ctrl.resume();
  }

  fail(err: unknown): void {
    this.failed = true;
    this.ctrl.drain();
    logger.error('nvme device failed', { device: this.name, err: String((err as Error)?.stack ?? err) });
  }

  setNotification(enabled: boolean): boolean {
    // Doorbells are shared memory with no eventfd behind them: never let the worker sleep while the controller runs.
    return enabled && this.running;
  }

  kickFds(): readonly number[] {
    return [];
  }

  beginModelOp(op: ModelOp): void {
    switch (op.kind) {
      case 'nvmeIrqs':
        this.msixFds = op.msixFds.slice();
        this.intxFd = op.intxFd;
        return;
      case 'nvmeNsAdd':
        this.ctrl.addNamespace({ nsid: op.nsid, bdev: op.bdev, nguid: op.nguid, uuid: op.uuid });
        return;
      case 'nvmeNsRemove':
        this.ctrl.beginRemoveNamespace(op.nsid);
        return;
      case 'nvmeReset':
        this.ctrl.beginDeviceReset();
        return;
      default:
        throw new UnsupportedOp(`nvme ${this.name}: unknown model op ${(op as { kind: string }).kind}`);
    }
  }

  modelOpReady(op: ModelOp): boolean {
    if (op.kind === 'nvmeNsRemove') return this.ctrl.namespaceOutstanding(op.nsid) === 0;
    if (op.kind === 'nvmeReset') return this.ctrl.resetDone && this.ctrl.bdevOutstanding() === 0;
    return true;
  }

  finishModelOp(op: ModelOp): void {
    if (op.kind === 'nvmeNsRemove') this.ctrl.removeNamespace(op.nsid);
    else if (op.kind === 'nvmeReset') {
      initRegisters(new DataView(this.barBytes.buffer, this.barBytes.byteOffset, Bar0.Size));
      this.barBytes.fill(0, Bar0.DoorbellOffset, Bar0.MsixTableOffset);
    }
  }
}

function controllerDesc(desc: DeviceDesc, model: NvmeModelDesc): ConstructorParameters<typeof NvmeController>[0] {
  return {
    name: desc.name,
    serial: model.serial,
    model: model.modelNumber,
    firmware: model.firmware,
    subnqn: model.subnqn,
    maxIoQueues: model.maxIoQueues,
    vectors: model.vectors,
    maxNamespaces: model.maxNamespaces,
    namespaces: desc.bdevs.map((bdev, i) => ({ nsid: model.nsids[i], bdev, nguid: model.nguids[i], uuid: model.uuids[i] })),
  };
}

/** The factory of engine/devices.ts. */
export function createNvmeDevice(desc: DeviceDesc, env: DeviceEnv): EngineDevice {
  return new NvmeEngineDevice(desc, env);
}
