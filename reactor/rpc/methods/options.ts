/**
 * The option methods SPDK's save_config writes for a vhost app (v23.05:
 * iobuf, sock, accel, bdev with bdev_nvme, vmd), so that config loads here
 * unchanged. Each tunes a part of SPDK vhostd does not have (DPDK mempools,
 * socket implementations, the accel framework, the NVMe driver, PCI); its
 * values change nothing here. Each is accepted — its params type-checked
 * against SPDK's names, options newer SPDKs added accepted too — and logged
 * once per method with what it does here. bdev_wait_for_examine has a
 * meaning: it returns once every bdev is examined, which here is at once
 * (a bdev is usable when its create call returns). Thread: main (reactor).
 */
import type { SchemaObject } from 'ajv';
import { logger } from '../../log';
import { defineMethod, NO_PARAMS, RpcState, s, type RpcMethod } from '../schema';
import type { MethodContext } from './context';

const log = logger('app');

/** Methods already logged (once each per process). */
const logged = new Set<string>();

/** SPDK's params of the method, typed; other members (a newer SPDK's options) are accepted. */
function optionsSchema(props: Record<string, SchemaObject>, required: string[] = []): SchemaObject {
  return { type: 'object', properties: props, additionalProperties: true, ...(required.length ? { required } : {}) };
}

interface OptionMethod {
  name: string;
  /** What the options tune in SPDK, and so why they change nothing here. */
  why: string;
  props: Record<string, SchemaObject>;
  required?: string[];
  /** SPDK_RPC_STARTUP and/or RUNTIME, as SPDK registers it. */
  states: number;
}

const BOTH = RpcState.Startup | RpcState.Runtime;
const u32 = s.u32;
const u64 = s.u64;
const bool = s.boolean;
const str = s.string;

const OPTION_METHODS: OptionMethod[] = [
  {
    name: 'iobuf_set_options',
    why: 'sizes SPDK\'s DPDK buffer pools; vhostd does I/O straight into guest memory and needs no buffer pool',
    props: { small_pool_count: u64(), large_pool_count: u64(), small_bufsize: u32(), large_bufsize: u32(), enable_numa: bool() },
    states: RpcState.Startup,
  },
  {
    name: 'sock_impl_set_options',
    why: 'tunes an SPDK socket implementation (posix, ssl, uring) for NVMe-oF/iSCSI; vhostd serves no network transport',
    props: {
      impl_name: str(),
      recv_buf_size: u32(),
      send_buf_size: u32(),
      enable_recv_pipe: bool(),
      enable_quickack: bool(),
      enable_placement_id: u32(),
      enable_zerocopy_send_server: bool(),
      enable_zerocopy_send_client: bool(),
      zerocopy_threshold: u32(),
      tls_version: u32(),
      enable_ktls: bool(),
    },
    required: ['impl_name'],
    states: RpcState.Startup,
  },
  {
    name: 'sock_set_default_impl',
    why: 'chooses SPDK\'s default socket implementation; vhostd serves no network transport',
    props: { impl_name: str() },
    required: ['impl_name'],
    states: RpcState.Startup,
  },
  {
    name: 'accel_set_options',
    why: 'sizes SPDK\'s accel framework caches; vhostd has no accel framework (no crypto, compression or copy offload)',
    props: { small_cache_size: u32(), large_cache_size: u32(), task_count: u32(), sequence_count: u32(), buf_count: u32() },
    states: RpcState.Startup,
  },
  {
    name: 'bdev_set_options',
    why: 'sizes SPDK\'s bdev_io pool and caches; vhostd\'s requests come from per-queue pools sized to each virtqueue, and examine always runs',
    props: {
      bdev_io_pool_size: u32(),
      bdev_io_cache_size: u32(),
      bdev_auto_examine: bool(),
      iobuf_small_cache_size: u32(),
      iobuf_large_cache_size: u32(),
    },
    states: RpcState.Startup,
  },
  {
    name: 'bdev_nvme_set_options',
    why: 'tunes SPDK\'s NVMe bdev driver; vhostd has no NVMe bdev module (use bdev_uring_create or bdev_aio_create on the kernel\'s /dev/nvmeXnY)',
    props: {
      action_on_timeout: str(),
      timeout_us: u64(),
      timeout_admin_us: u64(),
      keep_alive_timeout_ms: u32(),
      retry_count: u32(),
      arbitration_burst: u32(),
      low_priority_weight: u32(),
      medium_priority_weight: u32(),
      high_priority_weight: u32(),
      nvme_adminq_poll_period_us: u64(),
      nvme_ioq_poll_period_us: u64(),
      io_queue_requests: u32(),
      delay_cmd_submit: bool(),
      transport_retry_count: u32(),
      bdev_retry_count: s.i32(),
      transport_ack_timeout: u32(),
      ctrlr_loss_timeout_sec: s.i32(),
      reconnect_delay_sec: u32(),
      fast_io_fail_timeout_sec: u32(),
      disable_auto_failback: bool(),
      generate_uuids: bool(),
      transport_tos: u32(),
      nvme_error_stat: bool(),
      rdma_srq_size: u32(),
      io_path_stat: bool(),
    },
    states: BOTH,
  },
  {
    name: 'bdev_nvme_set_hotplug',
    why: 'turns PCIe NVMe hotplug probing on or off; vhostd drives no PCI devices',
    props: { enable: bool(), period_us: u64() },
    required: ['enable'],
    states: RpcState.Runtime,
  },
  {
    name: 'bdev_iscsi_set_options',
    why: 'tunes SPDK\'s iSCSI initiator bdev; vhostd has no iSCSI bdev module',
    props: { timeout_sec: u64() },
    states: RpcState.Startup,
  },
  {
    name: 'vmd_enable',
    why: 'enumerates Intel VMD PCI domains for the NVMe driver; vhostd drives no PCI devices',
    props: {},
    states: RpcState.Runtime,
  },
];

export function optionMethods(_ctx: MethodContext): RpcMethod[] {
  return [
    ...OPTION_METHODS.map((m) =>
      defineMethod<Record<string, unknown>>(
        m.name,
        optionsSchema(m.props, m.required),
        (p) => {
          if (!logged.has(m.name)) {
            logged.add(m.name);
            const extra = Object.keys(p).filter((k) => !(k in m.props));
            log.notice(`${m.name}: accepted, changes nothing here`, { why: m.why, ...(extra.length ? { unknownOptions: extra.join(',') } : {}) });
          }
          return true;
        },
        { states: m.states },
      ),
    ),
    // bdev_wait_for_examine: every bdev is examined (usable) once its create call has returned.
    defineMethod<Record<string, never>>('bdev_wait_for_examine', NO_PARAMS, () => true),
  ];
}
