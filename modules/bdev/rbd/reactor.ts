/**
 * The rbd bdev module, reactor half: a Ceph RBD image through librbd
 * (SPDK's module/bdev/rbd), with SPDK's RPC names and parameters:
 * bdev_rbd_register_cluster, bdev_rbd_unregister_cluster,
 * bdev_rbd_get_clusters_info, bdev_rbd_create, bdev_rbd_delete,
 * bdev_rbd_resize.
 *
 * Connections: a cluster registered by name is one librados connection
 * shared by every bdev that names it (`cluster_name`); a bdev created
 * without one gets its own connection from its `user_id` and `config`
 * (SPDK's behaviour), closed with it. Every librados/librbd call that can
 * wait on the network (connect, open, close, resize, shutdown) runs on the
 * libuv thread pool (the addon's Promises), never on this thread's loop nor
 * an engine worker's. The image is opened here once; engine workers submit
 * I/O on it through the addon's image handle.
 *
 * Closing: deleting a bdev closes its image (librbd hands the exclusive lock
 * back) before bdev_rbd_delete answers; at shutdown `settle` waits for those
 * closes and then shuts the connections down, so the next process that
 * opens the image gets the lock at once.
 *
 * save_config: the registered clusters first (bdev_rbd_register_cluster —
 * SPDK does not save them, which leaves a saved config with cluster_name
 * unloadable), then each bdev's bdev_rbd_create.
 *
 * A vhostd built without librbd lists the methods and answers every create
 * or registration with an error that says so. Thread: main (reactor).
 */
import { native, type NativeError } from '../../../bindings';
import type { RbdConnectOptions } from '../../../bindings/native';
import { ErrorCode, VhostdError } from '../../../reactor/errors';
import { logger } from '../../../reactor/log';
import { parseCpumask } from '../../../reactor/placement';
import type { BdevModule, ConfigCall } from '../../../reactor/bdev/module';
import type { Bdev } from '../../../reactor/bdev/registry';
import { defineMethod, paramsSchema, s } from '../../../reactor/rpc/schema';
import { rbdIoTypes, type RbdBdevDesc } from './common';

const log = logger('bdev');
const MIB = 1024 * 1024;

/** A key → value object of strings (SPDK's config / config_param). */
const stringMap = () => ({ type: 'object', additionalProperties: { type: 'string' } });

interface RegisterParams {
  name: string;
  user_id?: string;
  config_param?: Record<string, string>;
  config_file?: string;
  key_file?: string;
  core_mask?: string;
}

interface CreateParams {
  name?: string;
  pool_name: string;
  rbd_name: string;
  block_size: number;
  user_id?: string;
  config?: Record<string, string>;
  cluster_name?: string;
  uuid?: string;
  read_only?: boolean;
}

/** One librados connection. */
interface Connection {
  handle: number;
  /** Open images on it. */
  images: number;
}

interface RegisteredCluster {
  params: RegisterParams;
  conn: Connection;
}

export interface RbdState {
  desc: RbdBdevDesc;
  params: CreateParams;
  /** The registered cluster's name, or null for a private connection. */
  clusterName: string | null;
  conn: Connection;
  /** Set by release: the image close under way (and, for a private connection, its shutdown). */
  closing: Promise<void> | null;
}

const clusters = new Map<string, RegisteredCluster>();
/** Releases under way (image closes, connection shutdowns), awaited by settle(). */
const pending = new Set<Promise<void>>();

function nativeRbd() {
  if (!native.rbdAvailable || native.rbdConnect === undefined || native.rbdOpen === undefined || native.rbdClose === undefined) {
    throw new VhostdError(
      ErrorCode.Invalid,
      'this vhostd was built without librbd (install librbd-dev and librados-dev, then rebuild the addon with `npm run build:native`)',
    );
  }
  return {
    connect: native.rbdConnect.bind(native),
    shutdown: (native.rbdShutdown as (c: number) => Promise<void>).bind(native),
    open: native.rbdOpen.bind(native),
    close: native.rbdClose.bind(native),
    resize: (native.rbdResize as (i: number, b: number) => Promise<void>).bind(native),
  };
}

function isNativeError(err: unknown): err is NativeError {
  return err instanceof Error && typeof (err as Partial<NativeError>).errno === 'number';
}

/** A librados/librbd failure as ERR_SYSTEM with its errno (the RPC answers -errno, as SPDK). */
function rbdError(err: unknown, what: string): VhostdError {
  if (err instanceof VhostdError) return err;
  if (isNativeError(err)) return new VhostdError(ErrorCode.System, `${what}: ${err.message}`, { errno: err.errno, cause: err });
  return new VhostdError(ErrorCode.Internal, `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

function track(p: Promise<void>): Promise<void> {
  const t = p.finally(() => pending.delete(t));
  pending.add(t);
  return t;
}

function shutdownLater(conn: Connection, what: string): Promise<void> {
  const rbd = nativeRbd();
  return track(
    (async () => {
      try {
        await rbd.shutdown(conn.handle);
      } catch (err) {
        log.warn('rbd connection shutdown failed', { connection: what, error: err instanceof Error ? err.message : String(err) });
      }
    })(),
  );
}

async function connect(opts: RbdConnectOptions, what: string): Promise<Connection> {
  const rbd = nativeRbd();
  try {
    return { handle: await rbd.connect(opts), images: 0 };
  } catch (err) {
    throw rbdError(err, `cannot connect to the Ceph cluster (${what})`);
  }
}

function entries(m: Record<string, string> | undefined): [string, string][] {
  return m === undefined ? [] : Object.entries(m);
}

async function registerCluster(p: RegisterParams): Promise<string> {
  if (p.name === '') throw new VhostdError(ErrorCode.Invalid, 'cluster name must not be empty');
  if (clusters.has(p.name)) throw new VhostdError(ErrorCode.System, `cluster ${p.name} is already registered`, { errno: 17 /* EEXIST */ });
  let cpus: number[] | undefined;
  if (p.core_mask !== undefined) {
    try {
      cpus = parseCpumask(p.core_mask);
    } catch (err) {
      throw new VhostdError(ErrorCode.Invalid, `core_mask ${p.core_mask}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  const conn = await connect(
    { userId: p.user_id ?? null, configFile: p.config_file ?? null, configParams: entries(p.config_param), keyFile: p.key_file ?? null, cpus },
    `cluster ${p.name}`,
  );
  if (clusters.has(p.name)) {
    // Registered twice at once: keep the first.
    void shutdownLater(conn, p.name);
    throw new VhostdError(ErrorCode.System, `cluster ${p.name} is already registered`, { errno: 17 });
  }
  clusters.set(p.name, { params: p, conn });
  log.info('rbd cluster registered', { name: p.name, user: p.user_id ?? 'admin', configFile: p.config_file });
  return p.name;
}

async function unregisterCluster(name: string): Promise<boolean> {
  const c = clusters.get(name);
  if (c === undefined) throw new VhostdError(ErrorCode.System, `no registered cluster named ${name}`, { errno: 2 /* ENOENT */ });
  if (c.conn.images > 0) {
    throw new VhostdError(ErrorCode.Busy, `cluster ${name} is still used by ${c.conn.images} rbd bdev(s); delete them first`);
  }
  clusters.delete(name);
  await shutdownLater(c.conn, name);
  log.info('rbd cluster unregistered', { name });
  return true;
}

function clusterInfo(name: string, c: RegisteredCluster): Record<string, unknown> {
  const p = c.params;
  return {
    cluster_name: name,
    ...(p.user_id !== undefined ? { user_id: p.user_id } : {}),
    ...(p.config_param !== undefined ? { config_param: p.config_param } : {}),
    ...(p.config_file !== undefined ? { config_file: p.config_file } : {}),
    ...(p.key_file !== undefined ? { key_file: p.key_file } : {}),
    ...(p.core_mask !== undefined ? { core_mask: p.core_mask } : {}),
  };
}

/** Open the image (on its cluster's connection, or a new private one). */
async function openImage(name: string, p: CreateParams): Promise<{ blockSize: number; numBlocks: number; state: RbdState }> {
  const rbd = nativeRbd();
  let conn: Connection;
  let clusterName: string | null = null;
  if (p.cluster_name !== undefined) {
    const c = clusters.get(p.cluster_name);
    if (c === undefined) throw new VhostdError(ErrorCode.Invalid, `no registered cluster named ${p.cluster_name} (bdev_rbd_register_cluster)`);
    conn = c.conn;
    clusterName = p.cluster_name;
  } else {
    // SPDK: without a cluster, `config` replaces the config file when given.
    const config = entries(p.config);
    conn = await connect({ userId: p.user_id ?? null, configFile: null, configParams: config }, `bdev ${name}`);
  }
  conn.images++;
  let opened;
  try {
    opened = await rbd.open(conn.handle, p.pool_name, p.rbd_name, p.read_only === true);
  } catch (err) {
    conn.images--;
    if (clusterName === null) void shutdownLater(conn, name);
    throw rbdError(err, `cannot open rbd image ${p.pool_name}/${p.rbd_name}`);
  }
  const numBlocks = Math.floor(opened.sizeBytes / p.block_size);
  const state: RbdState = {
    desc: {
      filename: `rbd:${p.pool_name}/${p.rbd_name}`,
      fd: opened.image,
      bufferedFd: -1,
      direct: false,
      blockDevice: false,
      readonly: p.read_only === true,
      unmap: true,
      pool: p.pool_name,
      image: p.rbd_name,
    },
    params: p,
    clusterName,
    conn,
    closing: null,
  };
  if (numBlocks < 1) {
    rbdModule.release?.(state);
    throw new VhostdError(ErrorCode.Invalid, `rbd image ${p.pool_name}/${p.rbd_name} (${opened.sizeBytes} bytes) is smaller than one ${p.block_size}-byte block`);
  }
  return { blockSize: p.block_size, numBlocks, state };
}

function releaseImage(state: RbdState): void {
  if (state.closing !== null) return;
  const rbd = nativeRbd();
  const name = state.desc.filename;
  state.closing = track(
    (async () => {
      try {
        await rbd.close(state.desc.fd);
      } catch (err) {
        log.warn('rbd image close failed', { image: name, error: err instanceof Error ? err.message : String(err) });
      }
      state.conn.images--;
      if (state.clusterName === null) await shutdownLater(state.conn, name);
    })(),
  );
}

export const rbdModule: BdevModule<RbdState> = {
  name: 'rbd',
  productName: 'Ceph Rbd Disk',

  methods(bdevs) {
    return [
      defineMethod<RegisterParams>(
        'bdev_rbd_register_cluster',
        paramsSchema(
          { name: s.string() },
          { user_id: s.string(), config_param: stringMap(), config_file: s.string(), key_file: s.string(), core_mask: s.string() },
        ),
        (p) => registerCluster(p),
      ),
      defineMethod<{ name: string }>('bdev_rbd_unregister_cluster', paramsSchema({ name: s.string() }), (p) => unregisterCluster(p.name)),
      // SPDK: no clusters (or no such cluster) is -ENOENT; one named → its object, none named → an array.
      defineMethod<{ name?: string }>('bdev_rbd_get_clusters_info', paramsSchema({}, { name: s.string() }), (p) => {
        if (p.name !== undefined) {
          const c = clusters.get(p.name);
          if (c === undefined) throw new VhostdError(ErrorCode.System, `no registered cluster named ${p.name}`, { errno: 2 });
          return clusterInfo(p.name, c);
        }
        if (clusters.size === 0) throw new VhostdError(ErrorCode.System, 'no rbd cluster is registered', { errno: 2 });
        return [...clusters].map(([n, c]) => clusterInfo(n, c));
      }),
      defineMethod<CreateParams>(
        'bdev_rbd_create',
        paramsSchema(
          { pool_name: s.string(), rbd_name: s.string(), block_size: s.u32() },
          { name: s.string(), user_id: s.string(), config: stringMap(), cluster_name: s.string(), uuid: s.uuid(), read_only: s.boolean() },
        ),
        async (p) => {
          // SPDK names an unnamed rbd bdev Ceph0, Ceph1, ...
          const name = p.name ?? bdevs.nextName('Ceph');
          const b = await bdevs.createAsync(rbdModule, { name, uuid: p.uuid, blockSize: p.block_size }, () => openImage(name, p));
          return b.name;
        },
      ),
      defineMethod<{ name: string }>('bdev_rbd_delete', paramsSchema({ name: s.string() }), async (p) => {
        const b = bdevs.require(p.name, rbdModule);
        bdevs.delete(rbdModule, p.name);
        await b.state.closing;
        return true;
      }),
      // SPDK (bdev_rbd_resize): new_size in MiB, never smaller than the current size.
      defineMethod<{ name: string; new_size: number }>('bdev_rbd_resize', paramsSchema({ name: s.string(), new_size: s.u64() }), async (p) => {
        const b = bdevs.require(p.name);
        if (b.module !== rbdModule) throw new VhostdError(ErrorCode.Invalid, `bdev ${p.name} is a ${b.module.name} bdev, not an rbd bdev`);
        const rb = b as Bdev<RbdState>;
        const currentMiB = Math.floor((b.blockSize * b.numBlocks) / MIB);
        if (p.new_size < currentMiB) {
          throw new VhostdError(ErrorCode.Invalid, `new size ${p.new_size} MiB is smaller than the current ${currentMiB} MiB: an rbd bdev can only grow`);
        }
        const bytes = p.new_size * MIB;
        const numBlocks = Math.floor(bytes / b.blockSize);
        if (!Number.isSafeInteger(bytes) || numBlocks < 1) throw new VhostdError(ErrorCode.Invalid, `new size ${p.new_size} MiB is out of range`);
        try {
          await nativeRbd().resize(rb.state.desc.fd, bytes);
        } catch (err) {
          throw rbdError(err, `cannot resize rbd image ${rb.state.desc.pool}/${rb.state.desc.image}`);
        }
        await bdevs.resize(b, numBlocks);
        return true;
      }),
    ];
  },

  logFields: (b) => ({ engine: 'librbd', image: b.state.desc.filename, cluster: b.state.clusterName ?? '(own connection)' }),
  ioTypes: (b) => rbdIoTypes(b.state.desc.readonly),
  driverSpecific: (b) => {
    const p = b.state.params;
    const rbd: Record<string, unknown> = { pool_name: p.pool_name, rbd_name: p.rbd_name };
    const c = b.state.clusterName === null ? undefined : clusters.get(b.state.clusterName);
    if (c !== undefined) {
      // SPDK shows the cluster's settings in place of the bdev's own.
      const info = clusterInfo(b.state.clusterName as string, c);
      delete info.cluster_name;
      delete info.core_mask;
      Object.assign(rbd, info);
    } else {
      if (p.user_id !== undefined) rbd.user_id = p.user_id;
      if (p.config !== undefined) rbd.config = p.config;
    }
    return { rbd };
  },
  writeConfig: (b) => {
    const p = b.state.params;
    return {
      method: 'bdev_rbd_create',
      params: {
        name: b.name,
        pool_name: p.pool_name,
        rbd_name: p.rbd_name,
        block_size: b.blockSize,
        ...(p.user_id !== undefined ? { user_id: p.user_id } : {}),
        ...(p.config !== undefined ? { config: p.config } : {}),
        ...(p.cluster_name !== undefined ? { cluster_name: p.cluster_name } : {}),
        ...(p.read_only === true ? { read_only: true } : {}),
        uuid: b.uuid,
      },
    };
  },
  writeModuleConfig: (): ConfigCall[] => [...clusters.values()].map((c) => ({ method: 'bdev_rbd_register_cluster', params: { ...c.params } })),
  describe: (b) => b.state.desc,
  release: (state) => releaseImage(state),
  settle: async () => {
    while (pending.size > 0) await Promise.all([...pending]);
    const all = [...clusters.entries()];
    clusters.clear();
    for (const [name, c] of all) void shutdownLater(c.conn, name);
    while (pending.size > 0) await Promise.all([...pending]);
  },
};
