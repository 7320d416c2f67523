/**
 * The vhostd-rpc command line: rpc.py's syntax for each method, as a table
 * (method → positionals, flags, how to build the params, how rpc.py prints
 * the result), parsed with node:util parseArgs. Pure functions, no I/O: cli.ts
 * runs them.
 *
 *   vhostd-rpc [-s SOCK] [-t TIMEOUT_S] [-r N] [-v | --verbose LEVEL] [--dry-run] METHOD [method args]
 *
 * Thread: the CLI process's main thread.
 */

import { parseArgs } from 'node:util';

export const DEFAULT_SOCKET = '/var/tmp/vhostd.sock';
/** rpc.py's default (-t, seconds). */
export const DEFAULT_TIMEOUT_S = 60;

type ValueKind = 'string' | 'int' | 'float';

interface Positional {
  name: string;
  kind: ValueKind;
  help: string;
  /** argparse nargs='?': may be left out (only trailing positionals). */
  optional?: boolean;
}

interface Flag {
  /** Long names; the first is shown in help, the others are accepted too (rpc.py's dashes and the underscore spelling). */
  long: string[];
  short?: string;
  /** 'keyvalue': argparse action='append' of key=value words, sent as an object (rpc.py's --config-param). */
  kind: ValueKind | 'boolean' | 'keyvalue';
  /** Key in Values (and, unless the method says otherwise, in params). */
  dest: string;
  help: string;
}

/** Parsed positionals and flags by dest; booleans are false when absent, others undefined. */
export type Values = Record<string, string | number | boolean | Record<string, string> | undefined>;

/**
 * How rpc.py prints the result: `json` = print_dict (JSON, indent 2),
 * `string` = print_json (JSON, indent 2, a string without its quotes),
 * `none` = nothing.
 */
export type OutputMode = 'json' | 'string' | 'none';

interface CommandSpec {
  help: string;
  positionals: Positional[];
  flags: Flag[];
  /** params from values; default: every value that is not undefined, under its dest name. */
  params?: (v: Values) => Record<string, unknown>;
  output: OutputMode;
}

export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/** total_size (MiB) and block_size → num_blocks, as rpc.py computes it. */
function numBlocksFromMiB(v: Values): number {
  const total = v.total_size as number;
  const blockSize = v.block_size as number;
  if (blockSize <= 0) throw new Error('block_size must be > 0');
  return Math.floor((total * 1024 * 1024) / blockSize);
}

/** argparse's BooleanOptionalAction: --X sets dest true, --no-X false, neither leaves it out (flags on_<dest>/off_<dest>). */
function booleanOptional(v: Values, dests: string[]): Record<string, unknown> {
  const out = defined(v, dests.flatMap((d) => [`on_${d}`, `off_${d}`]));
  for (const d of dests) {
    if (v[`on_${d}`] === true && v[`off_${d}`] === true) throw new Error(`--${d} and its --no- form are exclusive`);
    if (v[`on_${d}`] === true) out[d] = true;
    else if (v[`off_${d}`] === true) out[d] = false;
  }
  return out;
}

/** Copy the values that are set, leaving out `omit`. */
function defined(v: Values, omit: string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (x !== undefined && !omit.includes(k)) out[k] = x;
  return out;
}

export const COMMANDS: Record<string, CommandSpec> = {
  spdk_get_version: {
    help: 'Get the version of the running target',
    positionals: [],
    flags: [],
    output: 'string',
  },
  rpc_get_methods: {
    help: 'Get the list of supported RPC methods',
    positionals: [],
    flags: [
      { long: ['current'], short: 'c', kind: 'boolean', dest: 'current', help: 'Only methods callable in the current state' },
      { long: ['include-aliases', 'include_aliases'], short: 'i', kind: 'boolean', dest: 'include_aliases', help: 'Include deprecated aliases' },
    ],
    output: 'json',
  },
  framework_set_scheduler: {
    help: 'Select thread scheduler that will be activated and its period (experimental)',
    positionals: [{ name: 'name', kind: 'string', help: 'Scheduler name: static or dynamic' }],
    flags: [
      { long: ['period'], short: 'p', kind: 'int', dest: 'period', help: 'Scheduler period in microseconds' },
      { long: ['load-limit'], kind: 'int', dest: 'load_limit', help: 'Busy % below which a core counts as idle (dynamic)' },
      { long: ['core-limit'], kind: 'int', dest: 'core_limit', help: 'Busy % at which a core is full (dynamic)' },
      { long: ['core-busy'], kind: 'int', dest: 'core_busy', help: 'Busy % above which devices move away (dynamic)' },
    ],
    params: (v) => defined(v),
    output: 'none',
  },
  framework_get_scheduler: {
    help: 'Display currently set scheduler and its properties',
    positionals: [],
    flags: [],
    output: 'json',
  },
  framework_get_reactors: {
    help: 'Display the list of all reactors',
    positionals: [],
    flags: [],
    output: 'json',
  },
  framework_get_subsystems: {
    help: 'Print subsystems array in initialization order, each with the subsystems it depends on',
    positionals: [],
    flags: [],
    output: 'json',
  },
  framework_get_config: {
    help: 'Print subsystem configuration',
    positionals: [{ name: 'name', kind: 'string', help: 'Name of the subsystem to query (bdev, vhost_blk)' }],
    flags: [{ long: ['with-batches', 'with_batches'], kind: 'boolean', dest: 'with_batches', help: 'Keep batch arrays in output (vhostd writes none)' }],
    output: 'json',
  },
  framework_start_init: {
    help: 'Start initialization of subsystems (after vhostd --wait-for-rpc)',
    positionals: [],
    flags: [],
    output: 'none',
  },
  framework_wait_init: {
    help: 'Block until subsystems have been initialized',
    positionals: [],
    flags: [],
    output: 'none',
  },
  spdk_kill_instance: {
    help: 'Send signal to instance',
    positionals: [{ name: 'sig_name', kind: 'string', help: 'Signal to send: SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGKILL (or its number)' }],
    flags: [],
    output: 'none',
  },
  log_set_flag: {
    help: 'set log flag',
    positionals: [{ name: 'flag', kind: 'string', help: 'Log flag name (e.g. "vhost") or "all" to set all flags' }],
    flags: [],
    output: 'none',
  },
  log_clear_flag: {
    help: 'clear log flag',
    positionals: [{ name: 'flag', kind: 'string', help: 'Log flag name (e.g. "vhost") or "all" to clear all flags' }],
    flags: [],
    output: 'none',
  },
  log_get_flags: {
    help: 'get log flags',
    positionals: [],
    flags: [],
    output: 'json',
  },
  log_set_level: {
    help: 'set log level',
    positionals: [{ name: 'level', kind: 'string', help: 'Log level: ERROR, WARNING, NOTICE, INFO or DEBUG' }],
    flags: [],
    output: 'none',
  },
  log_get_level: {
    help: 'get log level',
    positionals: [],
    flags: [],
    output: 'json',
  },
  log_set_print_level: {
    help: 'set log print level',
    positionals: [{ name: 'level', kind: 'string', help: 'Log print level: ERROR, WARNING, NOTICE, INFO or DEBUG' }],
    flags: [],
    output: 'none',
  },
  log_get_print_level: {
    help: 'get log print level',
    positionals: [],
    flags: [],
    output: 'json',
  },
  bdev_malloc_create: {
    help: 'Create a bdev with malloc backend',
    positionals: [
      { name: 'total_size', kind: 'float', help: 'Size of the malloc bdev in MiB (float > 0)' },
      { name: 'block_size', kind: 'int', help: 'Data block size for this bdev' },
    ],
    flags: [
      { long: ['name'], short: 'b', kind: 'string', dest: 'name', help: 'Name of the bdev' },
      { long: ['uuid'], short: 'u', kind: 'string', dest: 'uuid', help: 'UUID of the bdev (optional)' },
    ],
    params: (v) => ({ num_blocks: numBlocksFromMiB(v), ...defined(v, ['total_size']) }),
    output: 'string',
  },
  bdev_malloc_delete: {
    help: 'Delete a malloc bdev',
    positionals: [{ name: 'name', kind: 'string', help: 'malloc bdev name' }],
    flags: [],
    output: 'none',
  },
  bdev_null_create: {
    help: 'Create a bdev with null backend',
    positionals: [
      { name: 'name', kind: 'string', help: 'Block device name' },
      { name: 'total_size', kind: 'int', help: 'Size of the null bdev in MiB (int > 0)' },
      { name: 'block_size', kind: 'int', help: 'Data block size for this bdev' },
    ],
    flags: [{ long: ['uuid'], short: 'u', kind: 'string', dest: 'uuid', help: 'UUID of the bdev (optional)' }],
    params: (v) => ({ num_blocks: numBlocksFromMiB(v), ...defined(v, ['total_size']) }),
    output: 'string',
  },
  bdev_null_delete: {
    help: 'Delete a null bdev',
    positionals: [{ name: 'name', kind: 'string', help: 'null bdev name' }],
    flags: [],
    output: 'none',
  },
  bdev_get_bdevs: {
    help: 'Display the list of bdevs or the one named',
    positionals: [],
    flags: [
      { long: ['name'], short: 'b', kind: 'string', dest: 'name', help: 'Name of the bdev' },
      {
        long: ['timeout-ms', 'timeout_ms'],
        short: 't',
        kind: 'int',
        dest: 'timeout',
        help: 'Time in ms to wait for the named bdev to appear (default 0: do not wait)',
      },
    ],
    output: 'json',
  },
  bdev_aio_create: {
    help: 'Add a bdev with aio backend',
    positionals: [
      { name: 'filename', kind: 'string', help: 'Path to device or file (ex: /dev/sda)' },
      { name: 'name', kind: 'string', help: 'Block device name' },
      { name: 'block_size', kind: 'int', help: 'Block size for this bdev', optional: true },
    ],
    flags: [
      { long: ['readonly'], short: 'r', kind: 'boolean', dest: 'readonly', help: 'Set this bdev as read-only' },
      { long: ['fallocate'], kind: 'boolean', dest: 'fallocate', help: 'Support unmap/writezeros by fallocate' },
      { long: ['uuid'], short: 'u', kind: 'string', dest: 'uuid', help: 'UUID of the bdev (optional)' },
    ],
    output: 'string',
  },
  bdev_aio_delete: {
    help: 'Delete an aio disk',
    positionals: [{ name: 'name', kind: 'string', help: 'aio bdev name' }],
    flags: [],
    output: 'none',
  },
  bdev_uring_create: {
    help: 'Create a bdev with io_uring backend',
    positionals: [
      { name: 'filename', kind: 'string', help: 'Path to device or file (ex: /dev/nvme0n1)' },
      { name: 'name', kind: 'string', help: 'bdev name' },
      { name: 'block_size', kind: 'int', help: 'Block size for this bdev', optional: true },
    ],
    flags: [{ long: ['uuid'], short: 'u', kind: 'string', dest: 'uuid', help: 'UUID of the bdev (optional)' }],
    output: 'string',
  },
  bdev_rbd_register_cluster: {
    help: 'Add a Rados cluster with ceph rbd backend',
    positionals: [{ name: 'name', kind: 'string', help: 'Name of the Rados cluster only known to rbd bdev' }],
    flags: [
      { long: ['user'], kind: 'string', dest: 'user_id', help: 'Ceph user name (i.e. admin, not client.admin)' },
      { long: ['config-param', 'config_param'], kind: 'keyvalue', dest: 'config_param', help: 'adds a key=value configuration option for rados_conf_set' },
      { long: ['config-file', 'config_file'], kind: 'string', dest: 'config_file', help: 'The file path of the Rados configuration file' },
      { long: ['key-file', 'key_file'], kind: 'string', dest: 'key_file', help: 'The file path of the Rados keyring file' },
      { long: ['core-mask', 'core_mask'], kind: 'string', dest: 'core_mask', help: 'Set core mask for librbd IO context threads' },
    ],
    output: 'string',
  },
  bdev_rbd_unregister_cluster: {
    help: 'Unregister a Rados cluster object',
    positionals: [{ name: 'name', kind: 'string', help: 'Name of the Rados Cluster only known to rbd bdev' }],
    flags: [],
    output: 'none',
  },
  bdev_rbd_get_clusters_info: {
    help: 'Display registered Rados Cluster names and related info',
    positionals: [],
    flags: [{ long: ['name'], short: 'b', kind: 'string', dest: 'name', help: 'Name of the registered Rados Cluster Name' }],
    output: 'json',
  },
  bdev_rbd_create: {
    help: 'Add a bdev with ceph rbd backend',
    positionals: [
      { name: 'pool_name', kind: 'string', help: 'rbd pool name' },
      { name: 'rbd_name', kind: 'string', help: 'rbd image name' },
      { name: 'block_size', kind: 'int', help: 'rbd block size' },
    ],
    flags: [
      { long: ['name'], short: 'b', kind: 'string', dest: 'name', help: 'Name of the bdev' },
      { long: ['user'], kind: 'string', dest: 'user_id', help: 'Ceph user name (i.e. admin, not client.admin)' },
      { long: ['config'], kind: 'keyvalue', dest: 'config', help: 'adds a key=value configuration option for rados_conf_set' },
      { long: ['cluster-name', 'cluster_name'], short: 'c', kind: 'string', dest: 'cluster_name', help: 'cluster name to identify the Rados cluster' },
      { long: ['uuid'], short: 'u', kind: 'string', dest: 'uuid', help: 'UUID of the bdev' },
      { long: ['readonly'], short: 'r', kind: 'boolean', dest: 'read_only', help: 'Set this bdev as read-only' },
    ],
    output: 'string',
  },
  bdev_rbd_delete: {
    help: 'Delete a rbd bdev',
    positionals: [{ name: 'name', kind: 'string', help: 'rbd bdev name' }],
    flags: [],
    output: 'none',
  },
  bdev_rbd_resize: {
    help: 'Resize a rbd bdev',
    positionals: [
      { name: 'name', kind: 'string', help: 'rbd bdev name' },
      { name: 'new_size', kind: 'int', help: 'new bdev size for resize operation. The unit is MiB' },
    ],
    flags: [],
    output: 'string',
  },
  bdev_uring_delete: {
    help: 'Delete a uring bdev',
    positionals: [{ name: 'name', kind: 'string', help: 'uring bdev name' }],
    flags: [],
    output: 'none',
  },
  vhost_create_blk_controller: {
    help: 'Add a new vhost block controller',
    positionals: [
      { name: 'ctrlr', kind: 'string', help: 'Name of the vhost controller' },
      { name: 'dev_name', kind: 'string', help: 'Name of the bdev to expose as the block device' },
    ],
    flags: [
      { long: ['cpumask'], kind: 'string', dest: 'cpumask', help: "CPU mask for the controller's threads" },
      { long: ['transport'], kind: 'string', dest: 'transport', help: 'virtio-blk transport name (default: vhost_user_blk)' },
      { long: ['readonly'], short: 'r', kind: 'boolean', dest: 'readonly', help: 'Expose the block device as read-only' },
      { long: ['packed-ring', 'packed_ring'], short: 'p', kind: 'boolean', dest: 'packed_ring', help: 'Offer packed virtqueues' },
      {
        long: ['spread-queues', 'spread_queues'],
        kind: 'boolean',
        dest: 'spread_queues',
        help: 'vhostd: spread the queues over the cores of the cpumask (sent only when given)',
      },
      {
        long: ['packed-ring-recovery', 'packed_ring_recovery'],
        kind: 'boolean',
        dest: 'packed_ring_recovery',
        help: 'Enable packed ring live recovery (sent only when given)',
      },
    ],
    // rpc.py sends readonly and packed_ring always (store_true); packed_ring_recovery is an older release's flag.
    params: (v) => defined(v, [...(v.packed_ring_recovery === true ? [] : ['packed_ring_recovery']), ...(v.spread_queues === true ? [] : ['spread_queues'])]),
    output: 'none',
  },
  vhost_create_scsi_controller: {
    help: 'Add new vhost controller',
    positionals: [{ name: 'ctrlr', kind: 'string', help: 'Name of the vhost controller' }],
    flags: [
      { long: ['cpumask'], kind: 'string', dest: 'cpumask', help: "CPU mask for the controller's threads" },
      { long: ['delay'], kind: 'boolean', dest: 'delay', help: 'Delay controller startup until vhost_start_scsi_controller' },
    ],
    output: 'none',
  },
  vhost_start_scsi_controller: {
    help: 'Start vhost scsi controller',
    positionals: [{ name: 'ctrlr', kind: 'string', help: 'Name of the vhost controller' }],
    flags: [],
    output: 'none',
  },
  vhost_scsi_controller_add_target: {
    help: 'Add lun to vhost controller',
    positionals: [
      { name: 'ctrlr', kind: 'string', help: 'Name of the vhost controller' },
      { name: 'scsi_target_num', kind: 'int', help: 'SCSI target number (0-7), or -1 to pick the first free slot' },
      { name: 'bdev_name', kind: 'string', help: 'Name of the bdev to expose as LUN 0 of the target' },
    ],
    flags: [],
    output: 'string',
  },
  vhost_scsi_controller_remove_target: {
    help: 'Remove target from vhost controller',
    positionals: [
      { name: 'ctrlr', kind: 'string', help: 'Name of the vhost controller' },
      { name: 'scsi_target_num', kind: 'int', help: 'SCSI target number (0-7)' },
    ],
    flags: [],
    output: 'none',
  },
  vhost_get_controllers: {
    help: 'List all or one vhost controller',
    positionals: [],
    flags: [{ long: ['name'], short: 'n', kind: 'string', dest: 'name', help: 'Name of the controller to show' }],
    output: 'json',
  },
  vhost_delete_controller: {
    help: 'Delete a vhost controller',
    positionals: [{ name: 'ctrlr', kind: 'string', help: 'Name of the vhost controller' }],
    flags: [],
    output: 'none',
  },
  bdev_get_iostat: {
    help: 'Display current I/O statistics of all the blockdevs or specified blockdev.',
    positionals: [],
    flags: [
      { long: ['name'], short: 'b', kind: 'string', dest: 'name', help: 'Name of the Blockdev. Example: Nvme0n1' },
      { long: ['names'], kind: 'string', dest: 'names', help: 'Bdev names to obtain I/O statistics from, comma-separated list in quotes' },
      { long: ['per-channel', 'per_channel'], short: 'c', kind: 'boolean', dest: 'per_channel', help: 'Display per channel IO stats for specified device' },
      { long: ['reset-mode', 'reset_mode'], kind: 'string', dest: 'reset_mode', help: 'Mode to reset I/O statistics after getting: all, maxmin, error, none' },
    ],
    // rpc.py sends per_channel always (store_true) and names as a list.
    params: (v) => ({
      ...defined(v, ['names']),
      ...(typeof v.names === 'string' ? { names: v.names.split(',') } : {}),
    }),
    output: 'json',
  },
  bdev_set_qos_limit: {
    help: 'Set QoS rate limit on a blockdev',
    positionals: [{ name: 'name', kind: 'string', help: 'Blockdev name to set QoS. Example: Malloc0' }],
    flags: [
      { long: ['rw-ios-per-sec', 'rw_ios_per_sec'], kind: 'int', dest: 'rw_ios_per_sec', help: 'R/W IOs per second limit (>=1000, example: 20000). 0 means unlimited.' },
      { long: ['rw-mbytes-per-sec', 'rw_mbytes_per_sec'], kind: 'int', dest: 'rw_mbytes_per_sec', help: 'R/W megabytes per second limit (>=1, example: 100). 0 means unlimited.' },
      { long: ['r-mbytes-per-sec', 'r_mbytes_per_sec'], kind: 'int', dest: 'r_mbytes_per_sec', help: 'Read megabytes per second limit (>=1, example: 100). 0 means unlimited.' },
      { long: ['w-mbytes-per-sec', 'w_mbytes_per_sec'], kind: 'int', dest: 'w_mbytes_per_sec', help: 'Write megabytes per second limit (>=1, example: 100). 0 means unlimited.' },
    ],
    output: 'none',
  },
  bdev_null_resize: {
    help: 'Resize a null bdev',
    positionals: [
      { name: 'name', kind: 'string', help: 'null bdev name' },
      { name: 'new_size', kind: 'int', help: 'new bdev size for resize operation. The unit is MiB' },
    ],
    flags: [],
    output: 'string',
  },
  vhost_controller_set_coalescing: {
    help: 'Set vhost controller coalescing',
    positionals: [
      { name: 'ctrlr', kind: 'string', help: 'Name of the vhost controller' },
      { name: 'delay_base_us', kind: 'int', help: 'Base coalescing delay in microseconds' },
      { name: 'iops_threshold', kind: 'int', help: 'IOPS threshold above which coalescing kicks in (at least 100)' },
    ],
    flags: [],
    output: 'none',
  },
  thread_get_stats: {
    help: 'Display current statistics of all the threads',
    positionals: [],
    flags: [],
    output: 'json',
  },
  bdev_reset_iostat: {
    help: 'Reset I/O statistics of all the blockdevs or specified blockdev.',
    positionals: [],
    flags: [
      { long: ['name'], short: 'b', kind: 'string', dest: 'name', help: 'Name of the Blockdev. Example: Nvme0n1' },
      { long: ['mode'], short: 'm', kind: 'string', dest: 'mode', help: 'Mode to reset I/O statistics: all, maxmin, error, none' },
    ],
    output: 'none',
  },
  bdev_enable_histogram: {
    help: 'Enable or disable histogram for specified bdev',
    positionals: [{ name: 'name', kind: 'string', help: 'bdev name' }],
    flags: [
      { long: ['histogram'], kind: 'boolean', dest: 'on', help: 'Enable histograms on specified device' },
      { long: ['no-histogram'], kind: 'boolean', dest: 'off', help: 'Disable histograms on specified device' },
      { long: ['opc'], short: 'o', kind: 'string', dest: 'opc', help: 'Enable histogram for specified io type (read, write, unmap). Defaults to all' },
      { long: ['granularity'], kind: 'int', dest: 'granularity', help: 'Histogram bucket granularity.' },
      { long: ['min-nsec'], kind: 'int', dest: 'min_nsec', help: 'Histogram min value in nanoseconds.' },
      { long: ['max-nsec'], kind: 'int', dest: 'max_nsec', help: 'Histogram max value in nanoseconds.' },
    ],
    params: (v) => {
      if (v.on === v.off) throw new Error('one of the arguments --histogram/--no-histogram is required');
      return { ...defined(v, ['on', 'off']), enable: v.on === true };
    },
    output: 'none',
  },
  bdev_get_histogram: {
    help: 'Get histogram for specified bdev',
    positionals: [{ name: 'name', kind: 'string', help: 'bdev name' }],
    flags: [],
    output: 'json',
  },
  thread_get_pollers: {
    help: 'Display current pollers of all the threads',
    positionals: [],
    flags: [],
    output: 'json',
  },
  thread_get_io_channels: {
    help: 'Display current IO channels of all the threads',
    positionals: [],
    flags: [],
    output: 'json',
  },
  iobuf_set_options: {
    help: 'Set iobuf pool options (vhostd: accepted, changes nothing)',
    positionals: [],
    flags: [
      { long: ['small-pool-count'], kind: 'int', dest: 'small_pool_count', help: 'small_pool_count' },
      { long: ['large-pool-count'], kind: 'int', dest: 'large_pool_count', help: 'large_pool_count' },
      { long: ['small-bufsize'], kind: 'int', dest: 'small_bufsize', help: 'small_bufsize' },
      { long: ['large-bufsize'], kind: 'int', dest: 'large_bufsize', help: 'large_bufsize' },
    ],
    output: 'none',
  },
  sock_impl_set_options: {
    help: 'Set options of socket layer implementation (vhostd: accepted, changes nothing)',
    positionals: [],
    flags: [
      { long: ['impl'], short: 'i', kind: 'string', dest: 'impl_name', help: 'impl_name' },
      { long: ['recv-buf-size'], short: 'r', kind: 'int', dest: 'recv_buf_size', help: 'recv_buf_size' },
      { long: ['send-buf-size'], short: 's', kind: 'int', dest: 'send_buf_size', help: 'send_buf_size' },
      { long: ['enable-placement-id'], short: 'p', kind: 'int', dest: 'enable_placement_id', help: 'enable_placement_id' },
      { long: ['zerocopy-threshold'], kind: 'int', dest: 'zerocopy_threshold', help: 'zerocopy_threshold' },
      { long: ['tls-version'], kind: 'int', dest: 'tls_version', help: 'tls_version' },
      { long: ['recv-pipe'], kind: 'boolean', dest: 'on_enable_recv_pipe', help: 'set enable_recv_pipe' },
      { long: ['no-recv-pipe'], kind: 'boolean', dest: 'off_enable_recv_pipe', help: 'clear enable_recv_pipe' },
      { long: ['quickack'], kind: 'boolean', dest: 'on_enable_quickack', help: 'set enable_quickack' },
      { long: ['no-quickack'], kind: 'boolean', dest: 'off_enable_quickack', help: 'clear enable_quickack' },
      { long: ['zerocopy-send-server'], kind: 'boolean', dest: 'on_enable_zerocopy_send_server', help: 'set enable_zerocopy_send_server' },
      { long: ['no-zerocopy-send-server'], kind: 'boolean', dest: 'off_enable_zerocopy_send_server', help: 'clear enable_zerocopy_send_server' },
      { long: ['zerocopy-send-client'], kind: 'boolean', dest: 'on_enable_zerocopy_send_client', help: 'set enable_zerocopy_send_client' },
      { long: ['no-zerocopy-send-client'], kind: 'boolean', dest: 'off_enable_zerocopy_send_client', help: 'clear enable_zerocopy_send_client' },
      { long: ['ktls'], kind: 'boolean', dest: 'on_enable_ktls', help: 'set enable_ktls' },
      { long: ['no-ktls'], kind: 'boolean', dest: 'off_enable_ktls', help: 'clear enable_ktls' },
    ],
    params: (v) => booleanOptional(v, ['enable_recv_pipe', 'enable_quickack', 'enable_zerocopy_send_server', 'enable_zerocopy_send_client', 'enable_ktls']),
    output: 'none',
  },
  sock_set_default_impl: {
    help: 'Set the default sock implementation (vhostd: accepted, changes nothing)',
    positionals: [],
    flags: [
      { long: ['impl'], short: 'i', kind: 'string', dest: 'impl_name', help: 'impl_name' },
    ],
    output: 'json',
  },
  accel_set_options: {
    help: "Set accel framework's options (vhostd: accepted, changes nothing)",
    positionals: [],
    flags: [
      { long: ['small-cache-size'], kind: 'int', dest: 'small_cache_size', help: 'small_cache_size' },
      { long: ['large-cache-size'], kind: 'int', dest: 'large_cache_size', help: 'large_cache_size' },
      { long: ['task-count'], kind: 'int', dest: 'task_count', help: 'task_count' },
      { long: ['sequence-count'], kind: 'int', dest: 'sequence_count', help: 'sequence_count' },
      { long: ['buf-count'], kind: 'int', dest: 'buf_count', help: 'buf_count' },
    ],
    output: 'none',
  },
  bdev_set_options: {
    help: 'Set options of the bdev subsystem (vhostd: accepted, changes nothing)',
    positionals: [],
    flags: [
      { long: ['bdev-io-pool-size'], short: 'p', kind: 'int', dest: 'bdev_io_pool_size', help: 'bdev_io_pool_size' },
      { long: ['bdev-io-cache-size'], short: 'c', kind: 'int', dest: 'bdev_io_cache_size', help: 'bdev_io_cache_size' },
      { long: ['iobuf-small-cache-size'], kind: 'int', dest: 'iobuf_small_cache_size', help: 'iobuf_small_cache_size' },
      { long: ['iobuf-large-cache-size'], kind: 'int', dest: 'iobuf_large_cache_size', help: 'iobuf_large_cache_size' },
      { long: ['auto-examine'], kind: 'boolean', dest: 'on_bdev_auto_examine', help: 'set bdev_auto_examine' },
      { long: ['no-auto-examine'], kind: 'boolean', dest: 'off_bdev_auto_examine', help: 'clear bdev_auto_examine' },
    ],
    params: (v) => booleanOptional(v, ['bdev_auto_examine']),
    output: 'none',
  },
  bdev_nvme_set_options: {
    help: 'Set options for the bdev nvme type (vhostd: accepted, changes nothing)',
    positionals: [],
    flags: [
      { long: ['action-on-timeout'], short: 'a', kind: 'string', dest: 'action_on_timeout', help: 'action_on_timeout' },
      { long: ['timeout-us'], short: 't', kind: 'int', dest: 'timeout_us', help: 'timeout_us' },
      { long: ['timeout-admin-us'], kind: 'int', dest: 'timeout_admin_us', help: 'timeout_admin_us' },
      { long: ['keep-alive-timeout-ms'], short: 'k', kind: 'int', dest: 'keep_alive_timeout_ms', help: 'keep_alive_timeout_ms' },
      { long: ['nvme-adminq-poll-period-us'], short: 'p', kind: 'int', dest: 'nvme_adminq_poll_period_us', help: 'nvme_adminq_poll_period_us' },
      { long: ['nvme-ioq-poll-period-us'], short: 'i', kind: 'int', dest: 'nvme_ioq_poll_period_us', help: 'nvme_ioq_poll_period_us' },
      { long: ['io-queue-requests'], short: 's', kind: 'int', dest: 'io_queue_requests', help: 'io_queue_requests' },
      { long: ['transport-retry-count'], kind: 'int', dest: 'transport_retry_count', help: 'transport_retry_count' },
      { long: ['bdev-retry-count'], kind: 'int', dest: 'bdev_retry_count', help: 'bdev_retry_count' },
    ],
    output: 'none',
  },
  bdev_nvme_set_hotplug: {
    help: 'Set hotplug options for bdev nvme type (vhostd: accepted, changes nothing)',
    positionals: [],
    flags: [
      { long: ['period-us'], short: 'r', kind: 'int', dest: 'period_us', help: 'period_us' },
      { long: ['hotplug'], kind: 'boolean', dest: 'on_enable', help: 'set enable' },
      { long: ['no-hotplug'], kind: 'boolean', dest: 'off_enable', help: 'clear enable' },
    ],
    params: (v) => booleanOptional(v, ['enable']),
    output: 'none',
  },
  bdev_iscsi_set_options: {
    help: 'Set options for the bdev iscsi type (vhostd: accepted, changes nothing)',
    positionals: [],
    flags: [
      { long: ['timeout-sec'], short: 't', kind: 'int', dest: 'timeout_sec', help: 'timeout_sec' },
    ],
    output: 'none',
  },
  vmd_enable: {
    help: 'Enable VMD enumeration (vhostd: accepted, changes nothing)',
    positionals: [],
    flags: [
    ],
    output: 'json',
  },
  bdev_wait_for_examine: {
    help: 'Report when all bdevs have been examined',
    positionals: [],
    flags: [
    ],
    output: 'none',
  },
  nvmf_create_transport: {
    help: 'Create NVMf transport (VFIOUSER)',
    positionals: [],
    flags: [
      { long: ['trtype'], short: 't', kind: 'string', dest: 'trtype', help: 'Transport type (VFIOUSER)' },
      { long: ['max-queue-depth', 'max_queue_depth'], short: 'q', kind: 'int', dest: 'max_queue_depth', help: 'Max number of outstanding I/O per queue' },
      { long: ['max-io-qpairs-per-ctrlr', 'max_io_qpairs_per_ctrlr'], short: 'm', kind: 'int', dest: 'max_io_qpairs_per_ctrlr', help: 'Max number of qpairs (admin included) per controller' },
    ],
    params: (v) => {
      if (v.trtype === undefined) throw new Error('-t/--trtype is required');
      return defined(v);
    },
    output: 'none',
  },
  nvmf_get_transports: {
    help: 'Display nvmf transports or required transport',
    positionals: [],
    flags: [{ long: ['trtype'], kind: 'string', dest: 'trtype', help: 'Transport type' }],
    output: 'json',
  },
  nvmf_create_subsystem: {
    help: 'Create an NVMe-oF subsystem (served over VFIOUSER)',
    positionals: [{ name: 'nqn', kind: 'string', help: 'Subsystem NQN' }],
    flags: [
      { long: ['serial-number', 'serial_number'], short: 's', kind: 'string', dest: 'serial_number', help: 'Serial number of the virtual NVMe controller' },
      { long: ['model-number', 'model_number'], short: 'd', kind: 'string', dest: 'model_number', help: 'Model number of the virtual NVMe controller' },
      { long: ['allow-any-host', 'allow_any_host'], short: 'a', kind: 'boolean', dest: 'allow_any_host', help: 'Allow any host to connect (no host access control)' },
      { long: ['max-namespaces', 'max_namespaces'], short: 'm', kind: 'int', dest: 'max_namespaces', help: 'Maximum number of namespaces (default 32)' },
    ],
    output: 'none',
  },
  nvmf_delete_subsystem: {
    help: 'Delete a nvmf subsystem',
    positionals: [{ name: 'nqn', kind: 'string', help: 'Subsystem NQN' }],
    flags: [],
    output: 'none',
  },
  nvmf_get_subsystems: {
    help: 'Display nvmf subsystems or required subsystem',
    positionals: [{ name: 'nqn', kind: 'string', help: 'Subsystem NQN', optional: true }],
    flags: [],
    output: 'json',
  },
  nvmf_subsystem_add_ns: {
    help: 'Add a namespace to an NVMe-oF subsystem',
    positionals: [
      { name: 'nqn', kind: 'string', help: 'Subsystem NQN' },
      { name: 'bdev_name', kind: 'string', help: 'Name of the bdev to expose as a namespace' },
    ],
    flags: [
      { long: ['nsid'], short: 'n', kind: 'int', dest: 'nsid', help: 'Namespace ID (default: the lowest free one)' },
      { long: ['nguid'], short: 'g', kind: 'string', dest: 'nguid', help: '16-byte namespace globally unique identifier in hexadecimal' },
      { long: ['uuid'], short: 'u', kind: 'string', dest: 'uuid', help: 'RFC 4122 UUID' },
    ],
    params: (v) => {
      const { nqn, ...namespace } = defined(v);
      return { nqn, namespace };
    },
    output: 'none',
  },
  nvmf_subsystem_remove_ns: {
    help: 'Remove a namespace from an NVMe-oF subsystem',
    positionals: [
      { name: 'nqn', kind: 'string', help: 'Subsystem NQN' },
      { name: 'nsid', kind: 'int', help: 'Namespace ID' },
    ],
    flags: [],
    output: 'none',
  },
  nvmf_subsystem_add_listener: {
    help: 'Add a listener to an NVMe-oF subsystem (VFIOUSER: -a is a directory; the socket is DIR/cntrl)',
    positionals: [{ name: 'nqn', kind: 'string', help: 'Subsystem NQN' }],
    flags: [
      { long: ['trtype'], short: 't', kind: 'string', dest: 'trtype', help: 'Transport type (VFIOUSER)' },
      { long: ['traddr'], short: 'a', kind: 'string', dest: 'traddr', help: 'Transport address (VFIOUSER: a directory)' },
      { long: ['trsvcid'], short: 's', kind: 'string', dest: 'trsvcid', help: 'Transport service id (VFIOUSER: 0)' },
      { long: ['adrfam'], short: 'f', kind: 'string', dest: 'adrfam', help: 'Address family' },
    ],
    params: listenerParams,
    output: 'none',
  },
  nvmf_subsystem_remove_listener: {
    help: 'Remove a listener from an NVMe-oF subsystem',
    positionals: [{ name: 'nqn', kind: 'string', help: 'Subsystem NQN' }],
    flags: [
      { long: ['trtype'], short: 't', kind: 'string', dest: 'trtype', help: 'Transport type (VFIOUSER)' },
      { long: ['traddr'], short: 'a', kind: 'string', dest: 'traddr', help: 'Transport address (VFIOUSER: a directory)' },
      { long: ['trsvcid'], short: 's', kind: 'string', dest: 'trsvcid', help: 'Transport service id' },
      { long: ['adrfam'], short: 'f', kind: 'string', dest: 'adrfam', help: 'Address family' },
    ],
    params: listenerParams,
    output: 'none',
  },
  vhost_create_nvme_controller: {
    help: 'Add a new vhost NVMe controller (served over vfio-user at <-S dir>/<ctrlr>/cntrl)',
    positionals: [
      { name: 'ctrlr', kind: 'string', help: 'Name of the controller' },
      { name: 'io_queues', kind: 'int', help: 'Number of I/O queues' },
    ],
    flags: [{ long: ['cpumask'], kind: 'string', dest: 'cpumask', help: "CPU mask for the controller's threads" }],
    output: 'none',
  },
  vhost_nvme_controller_add_ns: {
    help: 'Add a namespace to a vhost NVMe controller',
    positionals: [
      { name: 'ctrlr', kind: 'string', help: 'Name of the controller' },
      { name: 'bdev_name', kind: 'string', help: 'Name of the bdev' },
    ],
    flags: [],
    output: 'none',
  },
};

/** rpc.py's group_as(params, 'listen_address', [trtype, traddr, trsvcid, adrfam]). */
function listenerParams(v: Values): Record<string, unknown> {
  if (v.trtype === undefined || v.traddr === undefined) throw new Error('-t/--trtype and -a/--traddr are required');
  const { nqn, ...listen_address } = defined(v);
  return { nqn, listen_address };
}

/**
 * Commands rpc.py runs on the client side rather than as one method:
 * save_config (framework_get_subsystems, then framework_get_config per
 * subsystem) and load_config (each call of a config, in the states the
 * target allows). config-commands.ts runs them.
 */
export const CLIENT_COMMANDS: Record<string, CommandSpec> = {
  save_config: {
    help: 'Write current (live) configuration of the target to stdout (SPDK JSON config format)',
    positionals: [],
    flags: [
      { long: ['indent'], short: 'i', kind: 'int', dest: 'indent', help: 'Indent level; less than 0 means compact. Default 2' },
      { long: ['subsystems'], short: 's', kind: 'string', dest: 'subsystems', help: 'Comma-separated list of subsystems (and their dependencies) to save' },
      { long: ['with-batches', 'with_batches'], kind: 'boolean', dest: 'with_batches', help: 'Keep batch arrays in output (vhostd writes none)' },
    ],
    output: 'none',
  },
  load_config: {
    help: 'Configure the target from a JSON config (stdin, or -j FILE): calls each method of it',
    positionals: [],
    flags: [
      { long: ['include-aliases', 'include_aliases'], short: 'i', kind: 'boolean', dest: 'include_aliases', help: 'include RPC aliases' },
      { long: ['json-conf', 'json_conf'], short: 'j', kind: 'string', dest: 'json_conf', help: 'JSON config file (default: stdin)' },
    ],
    output: 'none',
  },
};

function specOf(method: string): CommandSpec {
  if (Object.prototype.hasOwnProperty.call(COMMANDS, method)) return COMMANDS[method];
  return CLIENT_COMMANDS[method];
}

/** What the command line asks for. */
/** rpc.py's log levels (-v is INFO, --verbose names one; ERROR prints nothing extra). */
export type Verbosity = 'ERROR' | 'INFO' | 'DEBUG';

/** The global options every call carries (rpc.py's -s, -t, -r, -v/--verbose, --dry-run). */
export interface GlobalOptions {
  socket: string;
  timeoutMs: number;
  /** -r N: connect attempts after the first failure, 200 ms apart (rpc.py's conn_retries). */
  connRetries: number;
  verbose: Verbosity;
  /** --dry-run: print the request as rpc.py does and send nothing. */
  dryRun: boolean;
}

export type Command =
  | ({ kind: 'client'; command: string; values: Record<string, unknown> } & GlobalOptions)
  | { kind: 'help'; text: string }
  | ({ kind: 'call'; method: string; params: Record<string, unknown> | undefined; output: OutputMode } & GlobalOptions);

const GLOBAL_USAGE = 'usage: vhostd-rpc [-h] [-s SOCK] [-t TIMEOUT] [-r CONN_RETRIES] [-v] [--verbose {DEBUG,INFO,ERROR}] [--dry-run] METHOD [args...]';

export function globalHelp(): string {
  const width = Math.max(...[...Object.keys(COMMANDS), ...Object.keys(CLIENT_COMMANDS)].map((m) => m.length));
  const lines = [
    GLOBAL_USAGE,
    '',
    'vhostd JSON-RPC command line (the syntax of SPDK scripts/rpc.py)',
    '',
    'options:',
    '  -h, --help   show this help (METHOD --help: help of one method)',
    `  -s SOCK      RPC Unix socket path (default ${DEFAULT_SOCKET})`,
    `  -t TIMEOUT   seconds to wait for the reply (float, default ${DEFAULT_TIMEOUT_S})`,
    '  -r, --conn-retries N',
    '               retry connecting N times, 0.2 s apart (default 0)',
    '  -v           verbose: print the requests and replies on stderr (--verbose INFO)',
    '  --verbose {DEBUG,INFO,ERROR}',
    '               log level of those messages (DEBUG adds the connection steps)',
    '  --dry-run    print the request and exit; nothing is sent',
    '',
    'methods:',
    ...Object.entries(COMMANDS).map(([m, c]) => `  ${m.padEnd(width)}  ${c.help}`),
    '',
    'client-side commands:',
    ...Object.entries(CLIENT_COMMANDS).map(([m, c]) => `  ${m.padEnd(width)}  ${c.help}`),
  ];
  return lines.join('\n') + '\n';
}

function flagUsage(f: Flag): string {
  const name = f.short ? `-${f.short}` : `--${f.long[0]}`;
  return f.kind === 'boolean' ? `[${name}]` : `[${name} ${f.dest.toUpperCase()}]`;
}

export function methodUsage(method: string): string {
  const c = specOf(method);
  const positionals = c.positionals.map((p) => (p.optional ? `[${p.name}]` : p.name));
  return `usage: vhostd-rpc [-s SOCK] [-t TIMEOUT] ${method} ${[...c.flags.map(flagUsage), ...positionals].join(' ')}`.trimEnd();
}

export function methodHelp(method: string): string {
  const c = specOf(method);
  const lines = [methodUsage(method), '', c.help];
  if (c.positionals.length > 0) {
    lines.push('', 'positional arguments:');
    for (const p of c.positionals) lines.push(`  ${p.name.padEnd(24)}${p.help}`);
  }
  lines.push('', 'options:', `  ${'-h, --help'.padEnd(24)}show this help`);
  for (const f of c.flags) {
    const names = [...(f.short ? [`-${f.short}`] : []), ...f.long.map((l) => `--${l}`)].join(', ');
    const shown = f.kind === 'boolean' ? names : `${names} ${f.dest.toUpperCase()}`;
    lines.push(`  ${shown.padEnd(24)}${f.help}`);
  }
  return lines.join('\n') + '\n';
}

/** Python's int() and float() on a command-line word, as argparse's type= does. */
function convert(kind: ValueKind, name: string, raw: string): string | number {
  if (kind === 'string') return raw;
  const text = raw.trim().replace(/(\d)_(?=\d)/g, '$1');
  if (kind === 'int') {
    if (!/^[+-]?\d+$/.test(text)) throw new Error(`argument ${name}: invalid int value: '${raw}'`);
    const n = Number(text);
    if (!Number.isSafeInteger(n)) throw new Error(`argument ${name}: int value out of range: '${raw}'`);
    return n;
  }
  const n = text === '' ? NaN : Number(text);
  if (!Number.isFinite(n)) throw new Error(`argument ${name}: invalid float value: '${raw}'`);
  return n;
}

type ParseArgsOptions = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

/** Parse one method's arguments (everything after METHOD) into its params. */
export function parseMethodArgs(method: string, args: string[]): { help: true } | { help: false; params: Record<string, unknown> | undefined } {
  const spec = specOf(method);
  const usage = methodUsage(method);
  const options: ParseArgsOptions = { help: { type: 'boolean', short: 'h' } };
  for (const f of spec.flags) {
    f.long.forEach((l, i) => {
      options[l] = {
        type: f.kind === 'boolean' ? 'boolean' : 'string',
        ...(f.kind === 'keyvalue' ? { multiple: true } : {}),
        ...(i === 0 && f.short ? { short: f.short } : {}),
      };
    });
  }
  // argparse takes a negative number (`-1`) as a value, not an option, when no option looks like one
  // (vhost_scsi_controller_add_target CTRLR -1 BDEV); parseArgs does not: such arguments are
  // hidden behind placeholders while parsing, then put back.
  const negatives: string[] = [];
  const hidden = args.map((a) => {
    if (!/^-\d+(\.\d+)?$/.test(a)) return a;
    negatives.push(a);
    return `\u0000${negatives.length - 1}`;
  });
  const unhide = (v: string): string => (v.startsWith('\u0000') ? (negatives[Number(v.slice(1))] ?? v) : v);
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: hidden, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err), usage);
  }
  parsed.positionals = parsed.positionals.map(unhide);
  for (const [k, v] of Object.entries(parsed.values)) if (typeof v === 'string') parsed.values[k] = unhide(v);
  if (parsed.values.help === true) return { help: true };
  const values: Values = {};
  try {
    const pos = parsed.positionals;
    const required = spec.positionals.filter((p) => !p.optional).length;
    if (pos.length < required) {
      const missing = spec.positionals.slice(pos.length, required).map((p) => p.name);
      throw new Error(`the following arguments are required: ${missing.join(', ')}`);
    }
    if (pos.length > spec.positionals.length) {
      throw new Error(`unrecognized arguments: ${pos.slice(spec.positionals.length).join(' ')}`);
    }
    spec.positionals.forEach((p, i) => {
      if (i < pos.length) values[p.name] = convert(p.kind, p.name, pos[i]);
    });
    for (const f of spec.flags) {
      if (f.kind === 'keyvalue') {
        // Every occurrence, each key=value (split at the first '='), as rpc.py.
        let map: Record<string, string> | undefined;
        for (const l of f.long) {
          const v = parsed.values[l];
          if (!Array.isArray(v)) continue;
          for (const entry of v) {
            const text = String(entry);
            const eq = text.indexOf('=');
            if (eq < 0) throw new Error(`--${f.long[0]} ${text} not in key=value form`);
            map ??= {};
            map[text.slice(0, eq)] = text.slice(eq + 1);
          }
        }
        values[f.dest] = map;
        continue;
      }
      // The last spelling given wins, like argparse with a repeated option.
      let raw: string | boolean | undefined;
      for (const l of f.long) {
        const v = parsed.values[l];
        if (typeof v === 'string' || typeof v === 'boolean') raw = v;
      }
      if (f.kind === 'boolean') values[f.dest] = raw === true;
      else values[f.dest] = raw === undefined ? undefined : convert(f.kind, `--${f.long[0]}`, String(raw));
    }
    const params = spec.params ? spec.params(values) : defined(values);
    // Like rpc.py's client: an empty params object is not sent.
    return { help: false, params: Object.keys(params).length > 0 ? params : undefined };
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(err instanceof Error ? err.message : String(err), usage);
  }
}

/** The whole command line (process.argv.slice(2)) → what to do. Throws UsageError. */
export function parseCommandLine(argv: string[]): Command {
  const globalOptions: ParseArgsOptions = {
    help: { type: 'boolean', short: 'h' },
    socket: { type: 'string', short: 's' },
    timeout: { type: 'string', short: 't' },
    'conn-retries': { type: 'string', short: 'r' },
    // rpc.py: -v is store_const INFO (so -vv is INFO too), --verbose LEVEL chooses; the last one given wins.
    v: { type: 'boolean', multiple: true },
    verbose: { type: 'string' },
    'dry-run': { type: 'boolean' },
  };
  // The method is the first positional; options before it are global, after it the method's.
  const { tokens } = parseArgs({ args: argv, options: globalOptions, allowPositionals: true, strict: false, tokens: true });
  const first = tokens.find((t) => t.kind === 'positional' || t.kind === 'option-terminator');
  const methodIndex = first && first.kind === 'positional' ? first.index : -1;
  const globalArgs = methodIndex < 0 ? argv : argv.slice(0, methodIndex);
  let g: ReturnType<typeof parseArgs>;
  try {
    g = parseArgs({ args: globalArgs, options: globalOptions, strict: true, allowPositionals: false, tokens: true });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err), GLOBAL_USAGE);
  }
  if (g.values.help === true) return { kind: 'help', text: globalHelp() };
  if (methodIndex < 0) throw new UsageError('a METHOD is required', GLOBAL_USAGE);
  const method = argv[methodIndex];
  if (!Object.prototype.hasOwnProperty.call(COMMANDS, method) && !Object.prototype.hasOwnProperty.call(CLIENT_COMMANDS, method)) {
    throw new UsageError(`unknown method '${method}' (vhostd-rpc --help lists them)`, GLOBAL_USAGE);
  }
  let timeoutS = DEFAULT_TIMEOUT_S;
  if (typeof g.values.timeout === 'string') {
    const t = Number(g.values.timeout);
    if (g.values.timeout.trim() === '' || !Number.isFinite(t) || t <= 0) {
      throw new UsageError(`argument -t: invalid timeout: '${g.values.timeout}'`, GLOBAL_USAGE);
    }
    timeoutS = t;
  }
  let connRetries = 0;
  const retriesText = g.values['conn-retries'];
  if (typeof retriesText === 'string') {
    if (!/^\s*[+-]?\d+\s*$/.test(retriesText)) throw new UsageError(`argument -r: invalid int value: '${retriesText}'`, GLOBAL_USAGE);
    // As rpc.py's range(N): a negative count means no retry.
    connRetries = Math.max(0, Math.min(Number(retriesText), 1_000_000));
  }
  let verbose: Verbosity = 'ERROR';
  for (const tok of g.tokens ?? []) {
    if (tok.kind !== 'option') continue;
    if (tok.name === 'v') verbose = 'INFO';
    else if (tok.name === 'verbose') {
      const level = tok.value ?? '';
      if (level !== 'DEBUG' && level !== 'INFO' && level !== 'ERROR') {
        throw new UsageError(`argument --verbose: invalid choice: '${level}' (choose from 'DEBUG', 'INFO', 'ERROR')`, GLOBAL_USAGE);
      }
      verbose = level;
    }
  }
  const globals: GlobalOptions = {
    socket: typeof g.values.socket === 'string' ? g.values.socket : DEFAULT_SOCKET,
    timeoutMs: Math.ceil(timeoutS * 1000),
    connRetries,
    verbose,
    dryRun: g.values['dry-run'] === true,
  };
  const parsed = parseMethodArgs(method, argv.slice(methodIndex + 1));
  if (parsed.help) return { kind: 'help', text: methodHelp(method) };
  if (!Object.prototype.hasOwnProperty.call(COMMANDS, method)) {
    if (globals.dryRun) throw new UsageError(`--dry-run: ${method} is a client-side command of several calls; it cannot be shown as one request`, GLOBAL_USAGE);
    return {
      kind: 'client',
      ...globals,
      command: method,
      values: parsed.params ?? {},
    };
  }
  return {
    kind: 'call',
    ...globals,
    method,
    params: parsed.params,
    output: COMMANDS[method].output,
  };
}

/** Format a result the way rpc.py prints it (without the trailing newline); null = print nothing. */
export function formatResult(result: unknown, mode: OutputMode): string | null {
  if (mode === 'none') return null;
  const text = JSON.stringify(result, null, 2) ?? 'null';
  // print_json: json.dumps(s, indent=2).strip('"')
  return mode === 'string' ? text.replace(/^"+|"+$/g, '') : text;
}

/** Python's json.dumps(value) (no indent): ', ' and ': ' separators, as rpc.py's DEBUG lines print a request. */
export function pyDumps(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => pyDumps(v)).join(', ')}]`;
  if (typeof value === 'object' && value !== null) {
    return `{${Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${JSON.stringify(k)}: ${pyDumps(v)}`)
      .join(', ')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** rpc.py --dry-run's output for one call: "Request:" and {method, params} (params {} when there are none). */
export function formatDryRun(method: string, params: Record<string, unknown> | undefined): string {
  return 'Request:\n' + JSON.stringify({ method, params: params ?? {} }, null, 2);
}
