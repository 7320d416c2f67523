/**
 * The bdevs the target knows, by name: the bdev subsystem's service. Generic
 * over the bdev modules (module.ts): it checks what every bdev must satisfy
 * (a free name, a UUID, a block size that is a power of two in 512..65536 —
 * the one place this is checked), keeps QoS limits, I/O statistics and the
 * claim of the controller that uses a bdev, and delivers bdev events: a
 * resize goes to every engine worker (`bdevResize`, by name) and then to the
 * user of the bdev. What is specific to a module (its storage, its backing
 * file, its RPC methods) is the module's.
 * Thread: main (reactor); workers see a bdev only as a BdevDesc.
 */
import { randomUUID } from 'node:crypto';
import type { BdevDesc } from '../../engine/control';
import { ErrorCode, VhostdError } from '../errors';
import type { BdevInfo, IostatInfo, PerChannelIostatInfo, QosLimitsInfo } from '../info';
import { logger } from '../log';
import { BdevIoStats, type HistogramSettings, type ResetMode } from './iostat';
import type { BdevModule, ConfigCall } from './module';
import { BdevQosLimits } from './qos';

const log = logger('bdev');

export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 65536;

/** Ticks of every statistic vhostd reports are nanoseconds. */
const TICK_RATE = 1_000_000_000;

/** Who uses a bdev (a controller): told of the bdev's events. */
export interface BdevUser {
  readonly name: string;
  /** The bdev changed size; the engine workers already know. */
  bdevResized(bdev: Bdev): void;
  /**
   * Optional: the bdev is being deleted; let go of it (resolves once no
   * engine worker uses it any more) or throw ERR_BUSY. Absent: ERR_BUSY.
   */
  hotRemoveBdev?(bdev: Bdev): Promise<void>;
}

export interface Bdev<S = unknown> {
  readonly name: string;
  readonly module: BdevModule<S>;
  readonly blockSize: number;
  /** Changes only through resize(). */
  numBlocks: number;
  readonly uuid: string;
  /** What the module keeps for this bdev (malloc's storage, a file's fds). */
  readonly state: S;
  /** bdev_set_qos_limit's limits, shared with the engine that enforces them. */
  readonly qos: BdevQosLimits;
  /** Per-worker I/O statistics (bdev_get_iostat). */
  readonly iostat: BdevIoStats;
  /** The controller that uses this bdev alone (vhost-scsi, nvmf), if any. */
  claimedBy: BdevUser | null;
  /**
   * Controllers that use this bdev side by side (vhost-blk: SPDK opens a
   * bdev for every blk controller without claiming it, so two controllers
   * may serve one bdev — what a live migration between two controllers of
   * one vhostd needs). Never together with claimedBy.
   */
  sharedBy: BdevUser[];
}

/** What a module's create asks the registry for. */
export interface CreateRequest {
  name: string;
  uuid?: string;
  /** The block size asked for, checked before the module opens anything (absent: the module chooses). */
  blockSize?: number;
}

/** What a module opened: the bdev's geometry and its own state. */
export interface Opened<S> {
  blockSize: number;
  numBlocks: number;
  state: S;
}

/** What the registry needs of the engine: bdev events to every worker. */
export interface BdevEngine {
  bdevResize(name: string, numBlocks: number): Promise<void>;
}

export interface BdevRegistryOptions {
  /** Engine workers to tell of bdev events (absent: none, e.g. in tests). */
  engine?: BdevEngine;
  /** The thread id per-channel iostat reports for an engine core. */
  threadIdOf?: (core: number) => number;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A block size every module and every device can honour: a power of two in 512..65536. Throws ERR_INVALID. */
export function checkBlockSize(blockSize: number): void {
  if (!Number.isSafeInteger(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw new VhostdError(ErrorCode.Invalid, `block_size ${blockSize} must be a power of 2 between ${MIN_BLOCK_SIZE} and ${MAX_BLOCK_SIZE}`);
  }
}

function checkGeometry(blockSize: number, numBlocks: number): void {
  checkBlockSize(blockSize);
  if (!Number.isSafeInteger(numBlocks) || numBlocks < 1) {
    throw new VhostdError(ErrorCode.Invalid, `num_blocks ${numBlocks} must be a positive integer`);
  }
  if (!Number.isSafeInteger(numBlocks * blockSize)) {
    throw new VhostdError(ErrorCode.Invalid, `bdev of ${numBlocks} blocks of ${blockSize} bytes is too large`);
  }
}

export class BdevRegistry {
  private readonly bdevs = new Map<string, Bdev>();
  private readonly byModule = new Map<string, BdevModule>();
  private readonly seq = new Map<string, number>();
  /** Names of bdevs whose module is still opening them (createAsync). */
  private readonly opening = new Set<string>();

  constructor(
    readonly modules: readonly BdevModule[],
    private readonly options: BdevRegistryOptions = {},
  ) {
    for (const m of modules) {
      if (this.byModule.has(m.name)) throw new Error(`bdev module ${m.name} is listed twice`);
      this.byModule.set(m.name, m);
    }
  }

  /** The module named so, if listed. */
  module(name: string): BdevModule | undefined {
    return this.byModule.get(name);
  }

  /** A free "<prefix>N" name, as SPDK generates for bdev_malloc_create without a name. */
  nextName(prefix: string): string {
    let n = this.seq.get(prefix) ?? 0;
    while (this.bdevs.has(`${prefix}${n}`)) n++;
    this.seq.set(prefix, n + 1);
    return `${prefix}${n}`;
  }

  /**
   * Create a bdev of `module`: the name, UUID and requested block size are
   * checked first, then `open` makes the module's state, then the geometry it
   * reports is checked; if that fails the module releases what it opened.
   */
  create<S>(module: BdevModule<S>, req: CreateRequest, open: () => Opened<S>): Bdev<S> {
    this.checkRequest(module, req);
    return this.insert(module, req, open());
  }

  /**
   * create() for a module whose open waits (a network store: bdev_rbd_create).
   * The name is reserved while `open` runs, so a second create of the same
   * name fails at once rather than after both have opened.
   */
  async createAsync<S>(module: BdevModule<S>, req: CreateRequest, open: () => Promise<Opened<S>>): Promise<Bdev<S>> {
    this.checkRequest(module, req);
    this.opening.add(req.name);
    let opened: Opened<S>;
    try {
      opened = await open();
    } finally {
      this.opening.delete(req.name);
    }
    return this.insert(module, req, opened);
  }

  private checkRequest<S>(module: BdevModule<S>, req: CreateRequest): void {
    if (this.byModule.get(module.name) !== module) throw new VhostdError(ErrorCode.Internal, `bdev module ${module.name} is not registered`);
    if (req.name === '') throw new VhostdError(ErrorCode.Invalid, 'bdev name must not be empty');
    if (this.bdevs.has(req.name) || this.opening.has(req.name)) throw new VhostdError(ErrorCode.BdevExists, `bdev ${req.name} already exists`);
    if (req.uuid !== undefined) {
      if (!UUID_RE.test(req.uuid)) throw new VhostdError(ErrorCode.Invalid, `uuid "${req.uuid}" is not a UUID`);
      const uuid = req.uuid.toLowerCase();
      for (const b of this.bdevs.values()) {
        if (b.uuid === uuid) throw new VhostdError(ErrorCode.BdevExists, `a bdev with uuid ${req.uuid} already exists (${b.name})`);
      }
    }
    if (req.blockSize !== undefined) checkBlockSize(req.blockSize);
  }

  /** Check what the module opened and list the bdev; if the check fails the module releases what it opened. */
  private insert<S>(module: BdevModule<S>, req: CreateRequest, opened: Opened<S>): Bdev<S> {
    try {
      checkGeometry(opened.blockSize, opened.numBlocks);
      if (this.bdevs.has(req.name)) throw new VhostdError(ErrorCode.BdevExists, `bdev ${req.name} already exists`);
      const uuid = req.uuid?.toLowerCase();
      if (uuid !== undefined) {
        for (const b of this.bdevs.values()) {
          if (b.uuid === uuid) throw new VhostdError(ErrorCode.BdevExists, `a bdev with uuid ${req.uuid} already exists (${b.name})`);
        }
      }
    } catch (err) {
      module.release?.(opened.state);
      throw err;
    }
    const bdev: Bdev<S> = {
      name: req.name,
      module,
      blockSize: opened.blockSize,
      numBlocks: opened.numBlocks,
      uuid: (req.uuid ?? randomUUID()).toLowerCase(),
      state: opened.state,
      qos: new BdevQosLimits(),
      iostat: new BdevIoStats(),
      claimedBy: null,
      sharedBy: [],
    };
    this.bdevs.set(bdev.name, bdev as Bdev);
    log.info('bdev created', {
      name: bdev.name,
      module: module.name,
      blockSize: bdev.blockSize,
      numBlocks: bdev.numBlocks,
      ...module.logFields?.(bdev),
    });
    return bdev;
  }

  get(name: string): Bdev | undefined {
    return this.bdevs.get(name);
  }

  /** The named bdev (of that module, when given), or ERR_NO_BDEV. */
  require<S = unknown>(name: string, module?: BdevModule<S>): Bdev<S> {
    const b = this.bdevs.get(name);
    if (!b || (module !== undefined && b.module !== module)) {
      throw new VhostdError(ErrorCode.NoBdev, `no ${module ? module.name + ' ' : ''}bdev named ${name}`);
    }
    return b as Bdev<S>;
  }

  /** Delete a bdev of `module`: ERR_NO_BDEV when there is none, ERR_BUSY while a controller uses it. */
  delete(module: BdevModule, name: string): void {
    const b = this.require(name, module);
    const user = this.userOf(b);
    if (user !== null) {
      throw new VhostdError(ErrorCode.Busy, `bdev ${name} is used by controller ${user}; delete the controller first`);
    }
    this.bdevs.delete(name);
    module.release?.(b.state);
    log.info('bdev deleted', { name, module: module.name });
  }

  /**
   * The delete methods' entry: a bdev its user can let go of (a virtio-scsi
   * target: SPDK hot-removes it) is taken from that user first, then
   * deleted; otherwise as delete().
   */
  async remove(module: BdevModule, name: string): Promise<void> {
    const b = this.require(name, module);
    for (const user of [...(b.claimedBy ? [b.claimedBy] : []), ...b.sharedBy]) {
      if (user.hotRemoveBdev === undefined) continue;
      await user.hotRemoveBdev(b);
      log.info('bdev hot-removed from its user', { name, user: user.name });
    }
    this.delete(module, name);
  }

  /**
   * `user` uses the bdev from now on: alone (ERR_BUSY when another user has
   * it), or `shared` beside other shared users (ERR_BUSY when one has it
   * alone).
   */
  claim(bdev: Bdev, user: BdevUser, shared = false): void {
    if (bdev.claimedBy !== null && bdev.claimedBy !== user) {
      throw new VhostdError(ErrorCode.Busy, `bdev ${bdev.name} is already used by controller ${bdev.claimedBy.name}`);
    }
    if (shared) {
      if (!bdev.sharedBy.includes(user)) bdev.sharedBy.push(user);
      return;
    }
    const other = bdev.sharedBy.find((u) => u !== user);
    if (other !== undefined) throw new VhostdError(ErrorCode.Busy, `bdev ${bdev.name} is already used by controller ${other.name}`);
    bdev.claimedBy = user;
  }

  release(bdev: Bdev, user: BdevUser): void {
    if (bdev.claimedBy === user) bdev.claimedBy = null;
    const i = bdev.sharedBy.indexOf(user);
    if (i >= 0) bdev.sharedBy.splice(i, 1);
  }

  /** The name of a controller that uses the bdev (alone or shared), or null. */
  userOf(bdev: Bdev): string | null {
    return bdev.claimedBy?.name ?? bdev.sharedBy[0]?.name ?? null;
  }

  /**
   * The bdev now has numBlocks blocks: every engine worker is told (by name)
   * before the user of the bdev, so that a front-end that reads the new
   * capacity finds the device already checking against it.
   */
  async resize(bdev: Bdev, numBlocks: number): Promise<void> {
    checkGeometry(bdev.blockSize, numBlocks);
    const old = bdev.numBlocks;
    if (numBlocks === old) return;
    bdev.numBlocks = numBlocks;
    log.info('bdev resized', { name: bdev.name, numBlocks, oldNumBlocks: old });
    await this.options.engine?.bdevResize(bdev.name, numBlocks);
    bdev.claimedBy?.bdevResized(bdev);
    for (const u of bdev.sharedBy) u.bdevResized(bdev);
  }

  /** Release every module's state (at shutdown, after the workers are gone). */
  closeAll(): void {
    for (const b of this.bdevs.values()) b.module.release?.(b.state);
    this.bdevs.clear();
  }

  /** Wait for the releases modules finish in the background (an RBD image's close hands its lock back), then let modules close what they share (cluster connections). */
  async settle(): Promise<void> {
    await Promise.all(this.modules.map((m) => m.settle?.()));
  }

  list(): Bdev[] {
    return [...this.bdevs.values()];
  }

  /** The BdevDesc a worker on `core` opens the bdev with. */
  describe(b: Bdev, core: number): BdevDesc {
    return {
      name: b.name,
      module: b.module.name,
      blockSize: b.blockSize,
      numBlocks: b.numBlocks,
      params: b.module.describe(b),
      stats: b.iostat.channel(core),
      qos: b.qos.buffer,
    };
  }

  /** bdev_get_bdevs: all, or the one named (ERR_NO_BDEV). */
  infos(name?: string): BdevInfo[] {
    if (name !== undefined) return [this.info(this.require(name))];
    return this.list().map((b) => this.info(b));
  }

  info(b: Bdev): BdevInfo {
    const io = b.module.ioTypes(b);
    return {
      name: b.name,
      aliases: [],
      product_name: b.module.productName,
      block_size: b.blockSize,
      num_blocks: b.numBlocks,
      uuid: b.uuid,
      assigned_rate_limits: b.qos.assigned(),
      claimed: b.claimedBy !== null || b.sharedBy.length > 0,
      zoned: false,
      supported_io_types: {
        read: io.read,
        write: io.write,
        unmap: io.unmap,
        write_zeroes: io.write_zeroes,
        flush: io.flush,
        reset: true,
        compare: false,
        compare_and_write: false,
        abort: false,
        nvme_admin: false,
        nvme_io: false,
      },
      driver_specific: b.module.driverSpecific(b),
    };
  }

  /** bdev_set_qos_limit: limits not given stay as they are; 0 = unlimited. */
  setQosLimit(name: string, limits: QosLimitsInfo): void {
    this.require(name).qos.set(name, limits);
  }

  /** bdev_get_iostat: all bdevs or the named ones (ERR_NO_BDEV); perChannel needs exactly one name. */
  iostat(p: { names?: string[]; perChannel: boolean; resetMode?: ResetMode }): IostatInfo | PerChannelIostatInfo {
    const ticks = Number(process.hrtime.bigint());
    const bdevs = p.names === undefined ? this.list() : p.names.map((n) => this.require(n));
    let result: IostatInfo | PerChannelIostatInfo;
    if (p.perChannel) {
      if (bdevs.length !== 1) throw new VhostdError(ErrorCode.Invalid, 'per_channel needs exactly one bdev name');
      const b = bdevs[0];
      const threadIdOf = this.options.threadIdOf ?? ((core: number) => core);
      result = {
        tick_rate: TICK_RATE,
        ticks,
        name: b.name,
        channels: b.iostat.cores().map((core) => ({ thread_id: threadIdOf(core), ...b.iostat.ofCore(core) })),
      };
    } else {
      result = { tick_rate: TICK_RATE, ticks, bdevs: bdevs.map((b) => ({ name: b.name, ...b.iostat.total() })) };
    }
    // As SPDK's reset_mode: the statistics are read, then reset.
    if (p.resetMode !== undefined) for (const b of bdevs) b.iostat.reset(p.resetMode);
    return result;
  }

  /** bdev_reset_iostat: one bdev (ERR_NO_BDEV) or all. */
  resetIostat(name: string | undefined, mode: ResetMode): void {
    const bdevs = name === undefined ? this.list() : [this.require(name)];
    for (const b of bdevs) b.iostat.reset(mode);
  }

  /** bdev_enable_histogram: start a fresh latency histogram (null: stop it). */
  setHistogram(name: string, settings: HistogramSettings | null): void {
    const b = this.require(name);
    b.iostat.setHistogram(settings);
    log.info(settings ? 'histogram enabled' : 'histogram disabled', { bdev: name, ...(settings ?? {}) });
  }

  /** The calls that recreate every bdev, then their QoS limits — as SPDK writes them (save_config). */
  writeConfig(): ConfigCall[] {
    const bdevs = this.list();
    return [
      ...this.modules.flatMap((m) => m.writeModuleConfig?.() ?? []),
      ...bdevs.map((b) => b.module.writeConfig(b)),
      ...bdevs.flatMap((b) => b.qos.writeConfig(b.name) ?? []),
    ];
  }
}
