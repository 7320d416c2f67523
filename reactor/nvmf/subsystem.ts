/**
 * One NVMe subsystem served over vfio-user: what SPDK's nvmf target with the
 * VFIOUSER transport gives a VM — an NVMe controller emulated here, attached
 * to the guest by QEMU's vfio-user-pci. It owns the PCI function (config
 * space and BAR0 in a memfd it maps, engine/nvme/pci.ts), the namespaces
 * (claimed bdevs), the listener at `<traddr>/cntrl` (SPDK's layout) and, while
 * a client is connected, the engine device of kind 'nvme' placed on the
 * least loaded core of its cpumask: started when the client connects, fed
 * the client's DMA windows, interrupt eventfds, resets and namespace changes,
 * stopped when it goes away (then the registers go back to reset values, so a
 * reconnecting client finds a disabled controller).
 *
 * It is the VfioUserBackend of the connection on its socket. The generic
 * pieces are the vhost controllers' (placement, engine workers, the bdev
 * registry); the vhost Controller itself is virtio-shaped and not reused.
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from '../../bindings';
import type { DeviceDesc, ModelOp, NvmeModelDesc, RegionDesc } from '../../engine/control';
import { DeviceStat } from '../../engine/control';
import { NvmePciFunction } from '../../engine/nvme/pci';
import { Bar0 } from '../../engine/nvme/spec';
import type { ConfigCall } from '../bdev/module';
import type { Bdev, BdevRegistry } from '../bdev/registry';
import type { EnginePool } from '../engine-pool';
import { ErrorCode, VhostdError } from '../errors';
import type { Logger } from '../log';
import { formatCpumask, type Placement } from '../placement';
import { VfioUserConnection, type VfioUserBackend } from '../vfio-user/connection';
import { PciIrq } from '../vfio-user/messages';
import type { SessionEffect } from '../vfio-user/session';
import { VfioUserSession } from '../vfio-user/session';
import { UnixListener } from '../vhost-user/listener';

/** DeviceDesc.id for NVMe devices: counted down from 2^31 so that they never meet the vhost controllers' ids (counted up from 1). */
let nextDeviceId = 0x7fff_ffff;

export const VFIOUSER_TRTYPE = 'VFIOUSER';
/** The socket SPDK's VFIOUSER transport creates inside the listen address (a directory). */
export const VFIOUSER_SOCKET_NAME = 'cntrl';

export interface NvmeNamespace {
  nsid: number;
  bdev: Bdev;
  nguid: Uint8Array;
  uuid: Uint8Array;
}

export interface SubsystemOptions {
  nqn: string;
  serial: string;
  modelNumber: string;
  allowAnyHost: boolean;
  maxNamespaces: number;
  maxIoQueues: number;
  cores: number[];
  socketMode: number;
  /** Group of the vfio-user socket (--socket-group). */
  socketGid?: number;
  bdevs: BdevRegistry;
  engine: Pick<EnginePool, 'worker'>;
  placement: Placement;
  log: Logger;
  /** Firmware revision (Identify FR). */
  firmware: string;
  /** Made by the seed-era vhost_create_nvme_controller under this name (save_config writes that call back). */
  vhostName?: string;
}

/** SPDK's nvmf_get_subsystems entry. */
export interface SubsystemInfo {
  nqn: string;
  subtype: 'NVMe';
  listen_addresses: { trtype: string; adrfam: string; traddr: string; trsvcid: string }[];
  allow_any_host: boolean;
  hosts: never[];
  serial_number: string;
  model_number: string;
  max_namespaces: number;
  min_cntlid: number;
  max_cntlid: number;
  namespaces: { nsid: number; bdev_name: string; name: string; nguid: string; uuid: string }[];
}

export class NvmeSubsystem implements VfioUserBackend {
  readonly nqn: string;
  readonly name: string;
  readonly serial: string;
  readonly modelNumber: string;
  readonly allowAnyHost: boolean;
  readonly maxNamespaces: number;
  readonly maxIoQueues: number;
  readonly cores: number[];
  readonly namespaces = new Map<number, NvmeNamespace>();
  /** Per-device counters (DeviceDesc.stats). */
  readonly stats = new SharedArrayBuffer(DeviceStat.Count * 8);
  private readonly log: Logger;
  private readonly barFd: number;
  private readonly barBuffer: ArrayBuffer;
  readonly pci: NvmePciFunction;
  private listener: UnixListener<VfioUserBackend> | null = null;
  /** The listen address (a directory) and whether this subsystem created it. */
  traddr: string | null = null;
  private createdDir = false;
  connected = false;
  /** The core the running device is placed on, or -1. */
  core = -1;
  private deviceId = 0;
  private regions: RegionDesc[] = [];
  private msixFds: number[];
  private intxFd = -1;
  /** Control-plane operations run one at a time (connection effects, namespace changes). */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: SubsystemOptions) {
    this.nqn = opts.nqn;
    this.name = opts.nqn;
    this.serial = opts.serial;
    this.modelNumber = opts.modelNumber;
    this.allowAnyHost = opts.allowAnyHost;
    this.maxNamespaces = opts.maxNamespaces;
    this.maxIoQueues = opts.maxIoQueues;
    this.cores = opts.cores;
    this.log = opts.log;
    this.barFd = native.memfdCreate('vhostd-nvme-bar0', 0);
    try {
      native.ftruncate(this.barFd, Bar0.Size);
      this.barBuffer = native.mmap(this.barFd, 0, Bar0.Size, true);
    } catch (err) {
      native.close(this.barFd);
      throw err;
    }
    this.pci = new NvmePciFunction({ bar: new Uint8Array(this.barBuffer), barFd: this.barFd, msixVectors: this.vectors });
    this.msixFds = new Array<number>(this.vectors).fill(-1);
  }

  /** MSI-X vectors: one for the admin queue and one per I/O queue, at most the 256 BAR0's table page holds. */
  get vectors(): number {
    return Math.min(this.maxIoQueues + 1, 256);
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  // --- namespaces ---------------------------------------------------------------

  /** nvmf_subsystem_add_ns: claim the bdev, pick the nsid (lowest free when 0), tell a running device. Returns the nsid. */
  addNamespace(bdev: Bdev, nsid: number, nguid: Uint8Array | null, uuid: Uint8Array | null): Promise<number> {
    return this.serialize(async () => {
      if (nsid === 0) {
        for (let i = 1; i <= this.maxNamespaces; i++) {
          if (!this.namespaces.has(i)) {
            nsid = i;
            break;
          }
        }
        if (nsid === 0) throw new VhostdError(ErrorCode.Invalid, `subsystem ${this.nqn} has no free namespace id (max_namespaces ${this.maxNamespaces})`);
      }
      if (nsid > this.maxNamespaces) throw new VhostdError(ErrorCode.Invalid, `nsid ${nsid} is above max_namespaces ${this.maxNamespaces}`);
      if (this.namespaces.has(nsid)) throw new VhostdError(ErrorCode.Invalid, `subsystem ${this.nqn} already has namespace ${nsid}`);
      this.opts.bdevs.claim(bdev, this);
      const u = uuid ?? uuidBytes(bdev.uuid);
      const ns: NvmeNamespace = { nsid, bdev, uuid: u, nguid: nguid ?? u.slice() };
      this.namespaces.set(nsid, ns);
      if (this.core >= 0) {
        try {
          await this.modelOp({ kind: 'nvmeNsAdd', nsid, bdev: this.opts.bdevs.describe(bdev, this.core), nguid: ns.nguid, uuid: ns.uuid });
        } catch (err) {
          this.namespaces.delete(nsid);
          this.opts.bdevs.release(bdev, this);
          throw err;
        }
      }
      this.log.info('namespace added', { nqn: this.nqn, nsid, bdev: bdev.name, running: this.core >= 0 });
      return nsid;
    });
  }

  /** nvmf_subsystem_remove_ns: the running device lets its I/O complete first; the bdev is released. */
  removeNamespace(nsid: number): Promise<void> {
    return this.serialize(async () => {
      const ns = this.namespaces.get(nsid);
      if (ns === undefined) throw new VhostdError(ErrorCode.Invalid, `subsystem ${this.nqn} has no namespace ${nsid}`);
      if (this.core >= 0) await this.modelOp({ kind: 'nvmeNsRemove', nsid });
      this.namespaces.delete(nsid);
      this.opts.bdevs.release(ns.bdev, this);
      this.log.info('namespace removed', { nqn: this.nqn, nsid, bdev: ns.bdev.name });
    });
  }

  // --- listener -----------------------------------------------------------------------

  /** nvmf_subsystem_add_listener -t VFIOUSER -a DIR: listen on DIR/cntrl (DIR is created when missing). */
  listen(traddr: string): void {
    if (this.listener !== null) throw new VhostdError(ErrorCode.Invalid, `subsystem ${this.nqn} already listens at ${this.traddr}`);
    if (!path.isAbsolute(traddr)) throw new VhostdError(ErrorCode.Invalid, `traddr must be an absolute directory path, got ${JSON.stringify(traddr)}`);
    let created = false;
    try {
      if (!fs.existsSync(traddr)) {
        fs.mkdirSync(traddr, { recursive: true, mode: 0o755 });
        created = true;
      } else if (!fs.statSync(traddr).isDirectory()) {
        throw new Error('not a directory');
      }
    } catch (err) {
      throw new VhostdError(ErrorCode.Invalid, `cannot use ${traddr} as a vfio-user listen directory: ${(err as Error).message}`, { cause: err });
    }
    const listener = new UnixListener<VfioUserBackend>(path.join(traddr, VFIOUSER_SOCKET_NAME), { mode: this.opts.socketMode, gid: this.opts.socketGid }, this, (fd, backend, log) => new VfioUserConnection(fd, new VfioUserSession(this.pci), backend, log));
    try {
      listener.listen();
    } catch (err) {
      if (created) fs.rmSync(traddr, { recursive: true, force: true });
      throw new VhostdError(ErrorCode.Invalid, `cannot listen on ${listener.path}: ${(err as Error).message}`, { cause: err });
    }
    this.listener = listener;
    this.traddr = traddr;
    this.createdDir = created;
    this.log.info('vfio-user listener added', { nqn: this.nqn, socket: listener.path });
  }

  /** nvmf_subsystem_remove_listener: the connected client (if any) is dropped, the socket removed. */
  async unlisten(): Promise<void> {
    const listener = this.listener;
    const dir = this.traddr;
    this.listener = null;
    this.traddr = null;
    if (listener) await listener.close();
    if (dir !== null && this.createdDir) {
      try {
        fs.rmdirSync(dir);
      } catch {
        // Something else lives there now: leave it.
      }
    }
    this.createdDir = false;
  }

  /** Close the listener (the device drains and stops), release the bdevs, unmap BAR0. */
  async close(): Promise<void> {
    await this.unlisten();
    await this.queue;
    for (const ns of this.namespaces.values()) this.opts.bdevs.release(ns.bdev, this);
    native.munmap(this.barBuffer);
    native.close(this.barFd);
  }

  // --- VfioUserBackend ----------------------------------------------------------------

  connectionChanged(connected: boolean): Promise<void> {
    return this.serialize(async () => {
      this.connected = connected;
      if (connected) {
        await this.startDevice();
        return;
      }
      await this.stopDevice();
      this.regions = [];
      this.msixFds.fill(-1);
      this.intxFd = -1;
      // A client that comes back finds a controller fresh out of reset (registers only; config space is the PCI function's).
      this.pci.resetRegisters();
    });
  }

  apply(effects: readonly SessionEffect[]): Promise<void> {
    if (effects.length === 0) return Promise.resolve();
    return this.serialize(async () => {
      for (const e of effects) {
        switch (e.kind) {
          case 'memory':
            this.regions = e.windows
              .filter((w) => w.fd >= 0)
              .map((w) => ({ fd: w.fd, guestPhysAddr: w.address, sizeBytes: w.sizeBytes, userAddr: w.address, mmapOffset: w.offset }));
            if (this.core >= 0) await this.opts.engine.worker(this.core).memUpdate(this.deviceId, this.regions);
            this.log.debug('DMA windows', { nqn: this.nqn, windows: e.windows.length, mapped: this.regions.length });
            break;
          case 'irqs':
            if (e.index === PciIrq.Msix) this.msixFds = e.fds.slice(0, this.vectors);
            else if (e.index === PciIrq.Intx) this.intxFd = e.fds[0] ?? -1;
            else break;
            if (this.core >= 0) await this.modelOp({ kind: 'nvmeIrqs', msixFds: this.msixFds, intxFd: this.intxFd });
            break;
          case 'irqTrigger': {
            const fds = e.index === PciIrq.Msix ? this.msixFds : e.index === PciIrq.Intx ? [this.intxFd] : [];
            for (let i = e.start; i < e.start + e.count && i < fds.length; i++) if (fds[i] >= 0) native.eventfdWrite(fds[i], 1);
            break;
          }
          case 'irqMask':
            // INTx is automasked by the client's side (QEMU unmasks on EOI); the device interrupts per completion batch either way.
            break;
          case 'reset':
            if (this.core >= 0) await this.modelOp({ kind: 'nvmeReset' });
            else this.pci.resetRegisters();
            this.log.info('device reset', { nqn: this.nqn });
            break;
        }
      }
    });
  }

  private async modelOp(op: ModelOp): Promise<void> {
    await this.opts.engine.worker(this.core).modelOp(this.deviceId, op);
  }

  private payload(): NvmeModelDesc {
    const list = [...this.namespaces.values()];
    return {
      kind: 'nvme',
      barFd: this.barFd,
      serial: this.serial,
      modelNumber: this.modelNumber,
      firmware: this.opts.firmware,
      subnqn: this.nqn,
      maxIoQueues: this.maxIoQueues,
      vectors: this.vectors,
      maxNamespaces: this.maxNamespaces,
      nsids: list.map((n) => n.nsid),
      nguids: list.map((n) => n.nguid),
      uuids: list.map((n) => n.uuid),
      msixFds: this.msixFds.slice(),
      intxFd: this.intxFd,
    };
  }

  private async startDevice(): Promise<void> {
    if (this.core >= 0) return;
    const core = this.opts.placement.acquire(this.cores);
    const id = nextDeviceId--;
    const list = [...this.namespaces.values()];
    const device: DeviceDesc = {
      id,
      name: this.nqn,
      features: 0n,
      model: this.payload(),
      bdevs: list.map((n) => this.opts.bdevs.describe(n.bdev, core)),
      regions: this.regions,
      queues: [],
      stats: this.stats,
    };
    try {
      await this.opts.engine.worker(core).start(device);
    } catch (err) {
      this.opts.placement.release(core);
      throw err;
    }
    this.core = core;
    this.deviceId = id;
    this.log.info('device started', { nqn: this.nqn, core, namespaces: list.length });
  }

  private async stopDevice(): Promise<void> {
    const core = this.core;
    if (core < 0) return;
    try {
      await this.opts.engine.worker(core).stop(this.deviceId);
      this.log.info('device stopped', { nqn: this.nqn, core });
    } finally {
      this.opts.placement.release(core);
      this.core = -1;
    }
  }

  // --- BdevUser -------------------------------------------------------------------------

  /** A namespace's bdev changed size: the worker already raised the namespace-attribute event. */
  bdevResized(bdev: Bdev): void {
    this.log.info('namespace resized', { nqn: this.nqn, bdev: bdev.name, numBlocks: bdev.numBlocks });
  }

  // --- control plane --------------------------------------------------------------------

  info(): SubsystemInfo {
    return {
      nqn: this.nqn,
      subtype: 'NVMe',
      listen_addresses: this.traddr === null ? [] : [{ trtype: VFIOUSER_TRTYPE, adrfam: 'IPv4', traddr: this.traddr, trsvcid: '0' }],
      allow_any_host: this.allowAnyHost,
      hosts: [],
      serial_number: this.serial,
      model_number: this.modelNumber,
      max_namespaces: this.maxNamespaces,
      min_cntlid: 1,
      max_cntlid: 0xffef,
      namespaces: [...this.namespaces.values()]
        .sort((a, b) => a.nsid - b.nsid)
        .map((n) => ({ nsid: n.nsid, bdev_name: n.bdev.name, name: n.bdev.name, nguid: hex(n.nguid).toUpperCase(), uuid: uuidString(n.uuid) })),
    };
  }

  /** The calls that recreate this subsystem (save_config), in SPDK's shapes. */
  writeConfigCalls(): ConfigCall[] {
    const vhostName = this.opts.vhostName;
    if (vhostName !== undefined) {
      return [
        { method: 'vhost_create_nvme_controller', params: { ctrlr: vhostName, io_queues: this.maxIoQueues, cpumask: this.cpumask } },
        ...[...this.namespaces.values()]
          .sort((a, b) => a.nsid - b.nsid)
          .map((n) => ({ method: 'vhost_nvme_controller_add_ns', params: { ctrlr: vhostName, bdev_name: n.bdev.name } })),
      ];
    }
    const calls: ConfigCall[] = [
      {
        method: 'nvmf_create_subsystem',
        params: {
          nqn: this.nqn,
          allow_any_host: this.allowAnyHost,
          serial_number: this.serial,
          model_number: this.modelNumber,
          max_namespaces: this.maxNamespaces,
          min_cntlid: 1,
          max_cntlid: 0xffef,
          ana_reporting: false,
        },
      },
    ];
    for (const n of [...this.namespaces.values()].sort((a, b) => a.nsid - b.nsid)) {
      calls.push({
        method: 'nvmf_subsystem_add_ns',
        params: { nqn: this.nqn, namespace: { nsid: n.nsid, bdev_name: n.bdev.name, nguid: hex(n.nguid).toUpperCase(), uuid: uuidString(n.uuid) } },
      });
    }
    if (this.traddr !== null) {
      calls.push({
        method: 'nvmf_subsystem_add_listener',
        params: { nqn: this.nqn, listen_address: { trtype: VFIOUSER_TRTYPE, adrfam: 'IPv4', traddr: this.traddr, trsvcid: '0' } },
      });
    }
    return calls;
  }

  get cpumask(): string {
    return formatCpumask(this.cores);
  }

  get socketPath(): string | null {
    return this.listener?.path ?? null;
  }
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

/** "xxxxxxxx-xxxx-..." → 16 bytes (the string was checked by the caller's schema or is a bdev's UUID). */
export function uuidBytes(uuid: string): Uint8Array {
  return Uint8Array.from(Buffer.from(uuid.replace(/-/g, ''), 'hex'));
}

export function uuidString(b: Uint8Array): string {
  const h = hex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
