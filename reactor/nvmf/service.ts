/**
 * The nvmf subsystem's service: the VFIOUSER transport and the NVMe
 * subsystems by NQN (SPDK's nvmf target, reduced to what serving a VM over
 * vfio-user needs). It checks what SPDK checks (an NQN's form, serial and
 * model lengths, a transport before a listener), and gives save_config the
 * calls that recreate its state. The seed-era vhost-nvme methods
 * (vhost_create_nvme_controller, vhost_nvme_controller_add_ns) make the same
 * subsystems, listening at `<-S dir>/<ctrlr>`.
 * Thread: main (reactor).
 */
import * as path from 'node:path';
import type { ConfigCall } from '../bdev/module';
import type { BdevRegistry } from '../bdev/registry';
import type { EnginePool } from '../engine-pool';
import { ErrorCode, VhostdError } from '../errors';
import { logger } from '../log';
import { parseCpumask, type Placement } from '../placement';
import { VERSION } from '../version';
import { NvmeSubsystem, VFIOUSER_TRTYPE, type SubsystemInfo } from './subsystem';
import { MAX_IO_QUEUES } from '../../engine/nvme/spec';

const log = logger('nvmf');

/** SPDK's defaults (lib/nvmf): serial and model when nvmf_create_subsystem gives none, max_namespaces 32 when 0. */
export const DEFAULT_SERIAL = '00000000000000000000';
export const DEFAULT_MODEL = 'vhostd NVMe controller';
export const DEFAULT_MAX_NAMESPACES = 32;
/** I/O queue pairs per controller unless the transport says otherwise (SPDK's VFIOUSER default, NVMF_VFIO_USER_DEFAULT_MAX_QPAIRS_PER_CTRLR, minus the admin queue). */
export const DEFAULT_MAX_IO_QPAIRS = 127;
/** The NQN prefix the seed-era vhost_create_nvme_controller gives its subsystems. */
export const VHOST_NVME_NQN_PREFIX = 'nqn.2016-06.io.spdk:vhost.';
const DISCOVERY_NQN = 'nqn.2014-08.org.nvmexpress.discovery';

/** NVMe Base 2.0 §4.5: "nqn.yyyy-mm.reverse-domain:..." or "nqn.2014-08.org.nvmexpress:uuid:...", at most 223 bytes. */
const NQN_RE = /^nqn\.\d{4}-\d{2}\.[A-Za-z0-9.-]+(:[\x21-\x7e]+)?$/;

export interface TransportInfo {
  trtype: string;
  max_queue_depth: number;
  max_io_qpairs_per_ctrlr: number;
  max_io_size: number;
}

export interface NvmfServiceOptions {
  socketDir: string;
  socketMode: number;
  /** Group of the vfio-user sockets (--socket-group). */
  socketGid?: number;
  cores: readonly number[];
  bdevs: BdevRegistry;
  engine: Pick<EnginePool, 'worker'>;
  placement: Placement;
}

export class NvmfService {
  private readonly subsystems = new Map<string, NvmeSubsystem>();
  private transport: { maxIoQpairs: number; maxQueueDepth: number } | null = null;
  /** Subsystems made by vhost_create_nvme_controller: ctrlr name → NQN. */
  private readonly vhostNames = new Map<string, string>();

  constructor(private readonly opts: NvmfServiceOptions) {}

  /** nvmf_create_transport: only VFIOUSER (case as SPDK: any). A second create of it is EEXIST, as SPDK. */
  createTransport(trtype: string, maxIoQpairsPerCtrlr?: number, maxQueueDepth?: number): void {
    if (trtype.toUpperCase() !== VFIOUSER_TRTYPE) {
      throw new VhostdError(ErrorCode.Invalid, `transport ${trtype} is not supported (vhostd serves ${VFIOUSER_TRTYPE} only)`);
    }
    if (this.transport !== null) throw new VhostdError(ErrorCode.BdevExists, `transport ${VFIOUSER_TRTYPE} already exists`);
    // SPDK counts the admin queue in max_io_qpairs_per_ctrlr for VFIOUSER: n - 1 I/O queues.
    const io = maxIoQpairsPerCtrlr === undefined ? DEFAULT_MAX_IO_QPAIRS : maxIoQpairsPerCtrlr - 1;
    if (!Number.isInteger(io) || io < 1 || io > MAX_IO_QUEUES) {
      throw new VhostdError(ErrorCode.Invalid, `max_io_qpairs_per_ctrlr must be 2..${MAX_IO_QUEUES + 1}, got ${maxIoQpairsPerCtrlr}`);
    }
    this.transport = { maxIoQpairs: io, maxQueueDepth: maxQueueDepth ?? 256 };
    log.info('transport created', { trtype: VFIOUSER_TRTYPE, maxIoQpairs: io });
  }

  transports(): TransportInfo[] {
    if (this.transport === null) return [];
    return [
      {
        trtype: VFIOUSER_TRTYPE,
        max_queue_depth: this.transport.maxQueueDepth,
        max_io_qpairs_per_ctrlr: this.transport.maxIoQpairs + 1,
        max_io_size: 131072 * 4,
      },
    ];
  }

  /** nvmf_create_subsystem. */
  createSubsystem(p: { nqn: string; serial?: string; model?: string; allowAnyHost?: boolean; maxNamespaces?: number; maxIoQueues?: number; cpumask?: string; vhostName?: string }): NvmeSubsystem {
    if (p.nqn === DISCOVERY_NQN || !NQN_RE.test(p.nqn) || Buffer.byteLength(p.nqn) > 223) {
      throw new VhostdError(ErrorCode.Invalid, `invalid NQN ${JSON.stringify(p.nqn)} (nqn.yyyy-mm.reverse.domain:name, at most 223 bytes)`);
    }
    if (this.subsystems.has(p.nqn)) throw new VhostdError(ErrorCode.Invalid, `subsystem ${p.nqn} already exists`);
    const serial = p.serial ?? DEFAULT_SERIAL;
    const model = p.model ?? DEFAULT_MODEL;
    if (!/^[\x20-\x7e]{1,20}$/.test(serial)) throw new VhostdError(ErrorCode.Invalid, `serial_number must be 1-20 printable ASCII characters, got ${JSON.stringify(serial)}`);
    if (!/^[\x20-\x7e]{1,40}$/.test(model)) throw new VhostdError(ErrorCode.Invalid, `model_number must be 1-40 printable ASCII characters, got ${JSON.stringify(model)}`);
    const maxNs = p.maxNamespaces === undefined || p.maxNamespaces === 0 ? DEFAULT_MAX_NAMESPACES : p.maxNamespaces;
    if (!Number.isInteger(maxNs) || maxNs < 1 || maxNs > 1024) throw new VhostdError(ErrorCode.Invalid, `max_namespaces must be 1..1024, got ${maxNs}`);
    const cores = p.cpumask === undefined ? [...this.opts.cores] : parseCpumask(p.cpumask);
    this.opts.placement.checkInside(cores, p.cpumask ?? '');
    const maxIo = p.maxIoQueues ?? this.transport?.maxIoQpairs ?? DEFAULT_MAX_IO_QPAIRS;
    const s = new NvmeSubsystem({
      nqn: p.nqn,
      serial,
      modelNumber: model,
      allowAnyHost: p.allowAnyHost ?? false,
      maxNamespaces: maxNs,
      maxIoQueues: maxIo,
      cores,
      socketMode: this.opts.socketMode,
      socketGid: this.opts.socketGid,
      bdevs: this.opts.bdevs,
      engine: this.opts.engine,
      placement: this.opts.placement,
      log,
      firmware: VERSION.slice(0, 8),
      vhostName: p.vhostName,
    });
    this.subsystems.set(p.nqn, s);
    log.info('subsystem created', { nqn: p.nqn, serial, model, maxIoQueues: maxIo });
    return s;
  }

  require(nqn: string): NvmeSubsystem {
    const s = this.subsystems.get(nqn);
    if (!s) throw new VhostdError(ErrorCode.NoController, `no subsystem with NQN ${nqn}`);
    return s;
  }

  /** nvmf_delete_subsystem: the connected client is dropped, the namespaces' bdevs released. */
  async deleteSubsystem(nqn: string): Promise<void> {
    const s = this.require(nqn);
    this.subsystems.delete(nqn);
    for (const [name, n] of this.vhostNames) if (n === nqn) this.vhostNames.delete(name);
    await s.close();
    log.info('subsystem deleted', { nqn });
  }

  /** nvmf_subsystem_add_ns: returns the nsid. */
  async addNamespace(nqn: string, bdevName: string, nsid = 0, nguid: Uint8Array | null = null, uuid: Uint8Array | null = null): Promise<number> {
    const s = this.require(nqn);
    const bdev = this.opts.bdevs.require(bdevName);
    const user = this.opts.bdevs.userOf(bdev);
    if (user !== null) throw new VhostdError(ErrorCode.Busy, `bdev ${bdevName} is already used by ${user}`);
    return s.addNamespace(bdev, nsid, nguid, uuid);
  }

  async removeNamespace(nqn: string, nsid: number): Promise<void> {
    await this.require(nqn).removeNamespace(nsid);
  }

  /** nvmf_subsystem_add_listener -t VFIOUSER -a DIR: needs the transport first, as SPDK. */
  addListener(nqn: string, trtype: string, traddr: string): void {
    const s = this.require(nqn);
    if (trtype.toUpperCase() !== VFIOUSER_TRTYPE) throw new VhostdError(ErrorCode.Invalid, `transport ${trtype} is not supported (${VFIOUSER_TRTYPE} only)`);
    if (this.transport === null) throw new VhostdError(ErrorCode.Invalid, `create the ${VFIOUSER_TRTYPE} transport first (nvmf_create_transport -t ${VFIOUSER_TRTYPE})`);
    for (const other of this.subsystems.values()) {
      if (other !== s && other.traddr !== null && path.resolve(other.traddr) === path.resolve(traddr)) {
        throw new VhostdError(ErrorCode.Invalid, `${traddr} is already the listen address of ${other.nqn}`);
      }
    }
    s.listen(traddr);
  }

  async removeListener(nqn: string, traddr: string): Promise<void> {
    const s = this.require(nqn);
    if (s.traddr === null || path.resolve(s.traddr) !== path.resolve(traddr)) throw new VhostdError(ErrorCode.Invalid, `subsystem ${nqn} does not listen at ${traddr}`);
    await s.unlisten();
  }

  /** vhost_create_nvme_controller (SPDK before 20.10): a subsystem listening at <socketDir>/<ctrlr>. */
  createVhostController(ctrlr: string, ioQueues: number, cpumask: string | undefined): void {
    if (this.vhostNames.has(ctrlr)) throw new VhostdError(ErrorCode.ControllerExists, `controller ${ctrlr} already exists`);
    if (!Number.isInteger(ioQueues) || ioQueues < 1 || ioQueues > MAX_IO_QUEUES) {
      throw new VhostdError(ErrorCode.Invalid, `io_queues must be 1..${MAX_IO_QUEUES}, got ${ioQueues}`);
    }
    const nqn = VHOST_NVME_NQN_PREFIX + ctrlr;
    const s = this.createSubsystem({ nqn, serial: ctrlr.slice(0, 20), allowAnyHost: true, maxIoQueues: ioQueues, cpumask, vhostName: ctrlr });
    if (this.transport === null) this.transport = { maxIoQpairs: DEFAULT_MAX_IO_QPAIRS, maxQueueDepth: 256 };
    try {
      s.listen(path.join(this.opts.socketDir, ctrlr));
    } catch (err) {
      this.subsystems.delete(nqn);
      void s.close();
      throw err;
    }
    this.vhostNames.set(ctrlr, nqn);
  }

  /** vhost_nvme_controller_add_ns. */
  async vhostAddNamespace(ctrlr: string, bdevName: string): Promise<void> {
    const nqn = this.vhostNames.get(ctrlr);
    if (nqn === undefined) throw new VhostdError(ErrorCode.NoController, `no NVMe controller named ${ctrlr}`);
    await this.addNamespace(nqn, bdevName);
  }

  /** nvmf_get_subsystems (SPDK shape): the discovery subsystem first, then every NVMe subsystem; or the one named. */
  infos(nqn?: string): (SubsystemInfo | { nqn: string; subtype: 'Discovery'; listen_addresses: never[]; allow_any_host: true; hosts: never[] })[] {
    const discovery = { nqn: DISCOVERY_NQN, subtype: 'Discovery' as const, listen_addresses: [] as never[], allow_any_host: true as const, hosts: [] as never[] };
    if (nqn !== undefined) return nqn === DISCOVERY_NQN ? [discovery] : [this.require(nqn).info()];
    return [discovery, ...[...this.subsystems.values()].map((s) => s.info())];
  }

  list(): NvmeSubsystem[] {
    return [...this.subsystems.values()];
  }

  /** save_config's nvmf section: the transport, then each subsystem's calls. */
  writeConfig(): ConfigCall[] {
    const calls: ConfigCall[] = [];
    if (this.transport !== null) {
      calls.push({ method: 'nvmf_create_transport', params: { trtype: VFIOUSER_TRTYPE, max_io_qpairs_per_ctrlr: this.transport.maxIoQpairs + 1, max_queue_depth: this.transport.maxQueueDepth } });
    }
    for (const s of this.subsystems.values()) calls.push(...s.writeConfigCalls());
    return calls;
  }

  async closeAll(): Promise<void> {
    for (const s of this.list()) {
      this.subsystems.delete(s.nqn);
      try {
        await s.close();
      } catch (err) {
        log.error('closing subsystem failed', { nqn: s.nqn, error: (err as Error).message });
      }
    }
  }
}
