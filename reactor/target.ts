/**
 * The target's state as the control plane sees it: what the JSON-RPC methods
 * call. Implemented by app.ts (bdev and controller registries, placement,
 * engine pool). Thread: main (reactor).
 *
 * Result shapes follow SPDK's JSON-RPC (doc/jsonrpc.md) so that rpc.py and
 * scripts written for SPDK read them unchanged.
 */

/** JSON-RPC error codes, SPDK's: JSON-RPC's own and negative errno values. */
export const RpcCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** -ENOENT */
  NoEntry: -2,
  /** -EBUSY */
  Busy: -16,
  /** -EEXIST */
  Exists: -17,
  /** -ENODEV */
  NoDevice: -19,
  /** -EINVAL */
  Invalid: -22,
  /** -ENOMEM */
  NoMemory: -12,
  /** -ENOSPC */
  NoSpace: -28,
} as const;

/** An error a method reports to its JSON-RPC caller as {code, message}. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

/** One entry of bdev_get_bdevs' result (SPDK shape, the fields vhostd can fill). */
export interface BdevInfo {
  name: string;
  aliases: string[];
  product_name: string;
  block_size: number;
  num_blocks: number;
  uuid: string;
  assigned_rate_limits: {
    rw_ios_per_sec: number;
    rw_mbytes_per_sec: number;
    r_mbytes_per_sec: number;
    w_mbytes_per_sec: number;
  };
  claimed: boolean;
  zoned: boolean;
  supported_io_types: Record<string, boolean>;
  driver_specific: Record<string, unknown>;
}

/** One entry of vhost_get_controllers' result (SPDK shape). */
export interface ControllerInfo {
  ctrlr: string;
  cpumask: string;
  delay_base_us: number;
  iops_threshold: number;
  socket: string;
  sessions: {
    vid: number;
    id: number;
    name: string;
    started: boolean;
    max_queues: number;
    inflight_task_cnt: number;
  }[];
  backend_specific: {
    block?: { readonly: boolean; bdev: string; transport: string };
  };
}

/** framework_get_reactors' result (SPDK shape). */
export interface ReactorsInfo {
  tick_rate: number;
  pid: number;
  reactors: {
    lcore: number;
    busy: number;
    idle: number;
    in_interrupt: boolean;
    lw_threads: { name: string; id: number; cpumask: string; elapsed: number }[];
  }[];
}

export interface Target {
  /** e.g. "vhostd v0.1.0" */
  readonly version: string;
  /** Every method the RPC server serves (for rpc_get_methods). Filled by the RPC layer. */

  /** bdev_malloc_create: returns the bdev's name (generated "MallocN" when none is given). -17 if the name exists. */
  createMallocBdev(p: { name?: string; numBlocks: number; blockSize: number; uuid?: string }): string;
  /** bdev_null_create: returns the name. */
  createNullBdev(p: { name: string; numBlocks: number; blockSize: number; uuid?: string }): string;
  /** bdev_malloc_delete / bdev_null_delete: -19 if there is no such bdev of that kind, -16 while a controller uses it. */
  deleteBdev(kind: 'malloc' | 'null', name: string): Promise<void>;
  /** bdev_get_bdevs: all, or the one named (-19 if absent). */
  getBdevs(name?: string): BdevInfo[];

  /** vhost_create_blk_controller: creates the socket <socketDir>/<ctrlr>. -17 if it exists, -19 no bdev, -22 bad cpumask. */
  createBlkController(p: { ctrlr: string; devName: string; cpumask?: string; readonly?: boolean }): Promise<void>;
  /** vhost_delete_controller: -19 if absent, -16 while a front-end is connected. */
  deleteController(ctrlr: string): Promise<void>;
  /** vhost_get_controllers: all, or the one named (-19 if absent). */
  getControllers(name?: string): ControllerInfo[];

  /** framework_get_reactors */
  getReactors(): ReactorsInfo;
}
