/**
 * The nvmf subsystem's JSON-RPC methods with SPDK's names, parameters and
 * results (lib/nvmf/nvmf_rpc.c), for the VFIOUSER transport only, and the
 * seed-era vhost-nvme methods (vhost_create_nvme_controller,
 * vhost_nvme_controller_add_ns). Options SPDK's rpc.py always sends (its
 * store_true flags as false) are accepted; options of other transports are
 * accepted and have no effect, as SPDK ignores them for VFIOUSER; a VFIOUSER
 * option vhostd does not implement is refused when set.
 * Thread: main (reactor).
 */
import type { BdevRegistry } from '../bdev/registry';
import { ErrorCode, VhostdError } from '../errors';
import { defineMethod, paramsSchema, s, type RpcMethod } from '../rpc/schema';
import type { NvmfService } from './service';
import { uuidBytes } from './subsystem';

const NQN = (): ReturnType<typeof s.string> => ({ type: 'string', minLength: 1, maxLength: 223 });
const HEX16 = { type: 'string', pattern: '^[0-9A-Fa-f]{32}$', title: '16 bytes in hexadecimal' };

interface TransportParams {
  trtype: string;
  max_io_qpairs_per_ctrlr?: number;
  max_queue_depth?: number;
  disable_mappable_bar0?: boolean;
  disable_shadow_doorbells?: boolean;
  [k: string]: unknown;
}

interface CreateSubsystemParams {
  nqn: string;
  serial_number?: string;
  model_number?: string;
  allow_any_host?: boolean;
  max_namespaces?: number;
  ana_reporting?: boolean;
  passthrough?: boolean;
  enable_nssr?: boolean;
  min_cntlid?: number;
  max_cntlid?: number;
}

interface AddNsParams {
  nqn: string;
  namespace: { bdev_name: string; nsid?: number; nguid?: string; uuid?: string; eui64?: string; ptpl_file?: string; anagrpid?: number; no_auto_visible?: boolean; hide_metadata?: boolean };
}

interface ListenerParams {
  nqn: string;
  listen_address: { trtype: string; traddr: string; trsvcid?: string; adrfam?: string };
  secure_channel?: boolean;
}

/** Transport options rpc.py may send: typed, and ignored unless listed in TransportParams. */
const TRANSPORT_OPTIONS = {
  tgt_name: s.string(),
  max_queue_depth: s.u32(),
  max_io_qpairs_per_ctrlr: s.u32(),
  in_capsule_data_size: s.u32(),
  max_io_size: s.u32(),
  io_unit_size: s.u32(),
  max_aq_depth: s.u32(),
  num_shared_buffers: s.u32(),
  buf_cache_size: s.u32(),
  iobuf_small_cache_size: s.u32(),
  iobuf_large_cache_size: s.u32(),
  zcopy: s.boolean(),
  num_cqe: s.u32(),
  max_srq_depth: s.u32(),
  no_srq: s.boolean(),
  c2h_success: s.boolean(),
  dif_insert_or_strip: s.boolean(),
  sock_priority: s.u32(),
  acceptor_backlog: s.u32(),
  abort_timeout_sec: s.u32(),
  no_wr_batching: s.boolean(),
  control_msg_num: s.u32(),
  disable_mappable_bar0: s.boolean(),
  disable_adaptive_irq: s.boolean(),
  disable_shadow_doorbells: s.boolean(),
  acceptor_poll_rate: s.u32(),
  ack_timeout: s.u32(),
  data_wr_pool_size: s.u32(),
  disable_command_passthru: s.boolean(),
  kas: s.u32(),
  min_kato: s.u32(),
  masked_oncs: { type: 'array', items: s.string() },
  masked_fuses: { type: 'array', items: s.string() },
};

export function nvmfMethods(nvmf: NvmfService, _bdevs: BdevRegistry): RpcMethod[] {
  return [
    defineMethod<TransportParams>('nvmf_create_transport', paramsSchema({ trtype: s.string() }, TRANSPORT_OPTIONS), (p) => {
      if (p.disable_mappable_bar0 === true) throw new VhostdError(ErrorCode.Invalid, 'disable_mappable_bar0: vhostd always offers the doorbell page for mmap');
      if (p.disable_shadow_doorbells === true) throw new VhostdError(ErrorCode.Invalid, 'disable_shadow_doorbells: vhostd always supports Doorbell Buffer Config');
      nvmf.createTransport(p.trtype, p.max_io_qpairs_per_ctrlr, p.max_queue_depth);
      return true;
    }),

    defineMethod<{ trtype?: string; tgt_name?: string }>('nvmf_get_transports', paramsSchema({}, { trtype: s.string(), tgt_name: s.string() }), (p) =>
      nvmf.transports().filter((t) => p.trtype === undefined || t.trtype === p.trtype.toUpperCase()),
    ),

    defineMethod<CreateSubsystemParams>(
      'nvmf_create_subsystem',
      paramsSchema(
        { nqn: NQN() },
        {
          tgt_name: s.string(),
          serial_number: s.string(),
          model_number: s.string(),
          allow_any_host: s.boolean(),
          max_namespaces: s.u32(),
          ana_reporting: s.boolean(),
          min_cntlid: s.u16(),
          max_cntlid: s.u16(),
          dmrsl: s.u32(),
          wzsl: s.u32(),
          passthrough: s.boolean(),
          enable_nssr: s.boolean(),
          admin_label: s.string(),
        },
      ),
      (p) => {
        if (p.ana_reporting === true) throw new VhostdError(ErrorCode.Invalid, 'ana_reporting is not supported');
        if (p.passthrough === true) throw new VhostdError(ErrorCode.Invalid, 'passthrough is not supported');
        if (p.enable_nssr === true) throw new VhostdError(ErrorCode.Invalid, 'enable_nssr is not supported (CAP.NSSRS is 0)');
        nvmf.createSubsystem({ nqn: p.nqn, serial: p.serial_number, model: p.model_number, allowAnyHost: p.allow_any_host, maxNamespaces: p.max_namespaces });
        return true;
      },
    ),

    defineMethod<{ nqn: string }>('nvmf_delete_subsystem', paramsSchema({ nqn: NQN() }, { tgt_name: s.string() }), async (p) => {
      await nvmf.deleteSubsystem(p.nqn);
      return true;
    }),

    defineMethod<{ nqn?: string }>('nvmf_get_subsystems', paramsSchema({}, { nqn: s.string(), tgt_name: s.string() }), (p) => nvmf.infos(p.nqn)),

    defineMethod<AddNsParams>(
      'nvmf_subsystem_add_ns',
      paramsSchema(
        {
          nqn: NQN(),
          namespace: paramsSchema(
            { bdev_name: s.string() },
            {
              nsid: { type: 'integer', minimum: 0, maximum: 0xfffffffe },
              nguid: HEX16,
              uuid: s.uuid(),
              eui64: s.string(),
              ptpl_file: s.string(),
              anagrpid: s.u32(),
              no_auto_visible: s.boolean(),
              hide_metadata: s.boolean(),
            },
          ),
        },
        { tgt_name: s.string() },
      ),
      async (p) => {
        const ns = p.namespace;
        if (ns.eui64 !== undefined || ns.ptpl_file !== undefined || ns.no_auto_visible === true || ns.anagrpid !== undefined) {
          throw new VhostdError(ErrorCode.Invalid, 'eui64, ptpl_file, anagrpid and no_auto_visible are not supported');
        }
        const nguid = ns.nguid === undefined ? null : Uint8Array.from(Buffer.from(ns.nguid, 'hex'));
        const uuid = ns.uuid === undefined ? null : uuidBytes(ns.uuid);
        return nvmf.addNamespace(p.nqn, ns.bdev_name, ns.nsid ?? 0, nguid, uuid);
      },
    ),

    defineMethod<{ nqn: string; nsid: number }>('nvmf_subsystem_remove_ns', paramsSchema({ nqn: NQN(), nsid: s.u32() }, { tgt_name: s.string() }), async (p) => {
      await nvmf.removeNamespace(p.nqn, p.nsid);
      return true;
    }),

    ...(['nvmf_subsystem_add_listener', 'nvmf_subsystem_remove_listener'] as const).map((name) =>
      defineMethod<ListenerParams>(
        name,
        paramsSchema(
          {
            nqn: NQN(),
            listen_address: paramsSchema({ trtype: s.string(), traddr: s.string() }, { trsvcid: s.string(), adrfam: s.string() }),
          },
          { tgt_name: s.string(), secure_channel: s.boolean(), ana_state: s.string(), sock_impl: s.string(), numa_id: s.i32() },
        ),
        async (p) => {
          if (p.secure_channel === true) throw new VhostdError(ErrorCode.Invalid, 'secure_channel is not supported over VFIOUSER');
          if (name === 'nvmf_subsystem_add_listener') nvmf.addListener(p.nqn, p.listen_address.trtype, p.listen_address.traddr);
          else await nvmf.removeListener(p.nqn, p.listen_address.traddr);
          return true;
        },
      ),
    ),

    defineMethod<{ ctrlr: string; io_queues: number; cpumask?: string }>(
      'vhost_create_nvme_controller',
      paramsSchema({ ctrlr: s.fileName(), io_queues: s.u32() }, { cpumask: s.string() }),
      (p) => {
        nvmf.createVhostController(p.ctrlr, p.io_queues, p.cpumask);
        return true;
      },
    ),

    defineMethod<{ ctrlr: string; bdev_name: string }>('vhost_nvme_controller_add_ns', paramsSchema({ ctrlr: s.string(), bdev_name: s.string() }), async (p) => {
      await nvmf.vhostAddNamespace(p.ctrlr, p.bdev_name);
      return true;
    }),
  ];
}
