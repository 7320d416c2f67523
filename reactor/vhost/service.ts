/**
 * The controllers the target has, by name: the vhost subsystems' service.
 * It checks what every controller must satisfy (a name usable as a socket
 * file, a cpumask inside the app's), makes the generic Controller around the
 * device model a create method asks for, and refuses to delete a controller
 * while a front-end is connected. Thread: main (reactor).
 */
import * as path from 'node:path';
import type { ConfigCall } from '../bdev/module';
import type { BdevRegistry } from '../bdev/registry';
import { ErrorCode, VhostdError } from '../errors';
import type { ControllerInfo } from '../info';
import { logger } from '../log';
import { formatCpumask, parseCpumask, type Placement } from '../placement';
import { Controller, type ControllerEngine, type ControllerEvent } from './controller';
import type { DeviceModel } from './model';

const log = logger('vhost');

const CTRLR_NAME_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

export interface VhostServiceOptions {
  socketDir: string;
  socketMode: number;
  /** Group of the controller sockets (--socket-group). */
  socketGid?: number;
  /** The app's cores: a controller's default cpumask. */
  cores: readonly number[];
  bdevs: BdevRegistry;
  engine: ControllerEngine;
  placement: Placement;
  /** Every controller's events (ControllerOptions.onEvent). */
  onControllerEvent?: (event: ControllerEvent) => void;
}

export class VhostService {
  private readonly controllers = new Map<string, Controller>();

  constructor(private readonly opts: VhostServiceOptions) {}

  /**
   * Create controller `name` on <socketDir>/<name> with the model `makeModel`
   * builds (it looks its bdevs up: ERR_NO_BDEV); with `delay` it does not
   * listen yet (Controller.listen()). ERR_INVALID for a bad name,
   * cpumask or socket, ERR_CONTROLLER_EXISTS, ERR_BUSY when a bdev is used.
   */
  async create(name: string, cpumask: string | undefined, makeModel: () => DeviceModel, options: { delay?: boolean; spreadQueues?: boolean } = {}): Promise<Controller> {
    if (!CTRLR_NAME_RE.test(name)) {
      throw new VhostdError(ErrorCode.Invalid, `controller name "${name}" must be 1-64 characters of A-Z a-z 0-9 _ . : -`);
    }
    if (this.controllers.has(name)) throw new VhostdError(ErrorCode.ControllerExists, `controller ${name} already exists`);
    const model = makeModel();
    for (const b of model.bdevs) {
      // A model that shares its bdevs (vhost-blk, as SPDK) may sit beside other sharing controllers.
      const other = model.sharesBdevs === true ? b.claimedBy?.name : (b.claimedBy?.name ?? b.sharedBy[0]?.name);
      if (other !== undefined) throw new VhostdError(ErrorCode.Busy, `bdev ${b.name} is already used by controller ${other}`);
    }
    const cores = cpumask === undefined ? [...this.opts.cores] : parseCpumask(cpumask);
    this.opts.placement.checkInside(cores, cpumask ?? '');
    const socketPath = path.join(this.opts.socketDir, name);
    const controller = new Controller({
      name,
      socketPath,
      socketMode: this.opts.socketMode,
      socketGid: this.opts.socketGid,
      cores,
      model,
      bdevs: this.opts.bdevs,
      engine: this.opts.engine,
      placement: this.opts.placement,
      spreadQueues: options.spreadQueues,
      onEvent: this.opts.onControllerEvent,
    });
    // delay (vhost_create_scsi_controller): the socket listens only once the controller is started.
    controller.open(options.delay !== true);
    this.controllers.set(name, controller);
    log.info('controller created', {
      ctrlr: name,
      model: model.kind,
      bdevs: model.bdevs.map((b) => b.name).join(','),
      cpumask: formatCpumask(cores),
      socket: socketPath,
      spreadQueues: options.spreadQueues === true ? 1 : 0,
    });
    return controller;
  }

  /** The named controller, or ERR_NO_CONTROLLER. */
  require(name: string): Controller {
    const c = this.controllers.get(name);
    if (!c) throw new VhostdError(ErrorCode.NoController, `no controller named ${name}`);
    return c;
  }

  /** vhost_delete_controller: ERR_NO_CONTROLLER, ERR_BUSY while a front-end is connected. */
  async delete(name: string): Promise<void> {
    const c = this.require(name);
    if (c.connected) throw new VhostdError(ErrorCode.Busy, `controller ${name} has a front-end connected; detach it first`);
    this.controllers.delete(name);
    await c.close();
    log.info('controller deleted', { ctrlr: name });
  }

  /** vhost_get_controllers: all, or the one named (ERR_NO_CONTROLLER). */
  infos(name?: string): ControllerInfo[] {
    if (name !== undefined) return [this.require(name).info()];
    return this.list().map((c) => c.info());
  }

  /** vhost_controller_set_coalescing: ERR_NO_CONTROLLER, ERR_INVALID. */
  setCoalescing(name: string, delayBaseUs: number, iopsThreshold: number): void {
    this.require(name).setCoalescing(delayBaseUs, iopsThreshold);
  }

  list(): Controller[] {
    return [...this.controllers.values()];
  }

  /** The calls that recreate the controllers of one subsystem ('vhost_blk'), in creation order. */
  writeConfig(subsystem: string): ConfigCall[] {
    return this.list()
      .filter((c) => c.model.subsystem === subsystem)
      .flatMap((c) => c.writeConfigCalls());
  }

  /** Close every controller (each device drains before its socket closes). */
  async closeAll(): Promise<void> {
    for (const c of this.list()) {
      this.controllers.delete(c.name);
      try {
        await c.close();
      } catch (err) {
        log.error('closing controller failed', { ctrlr: c.name, error: (err as Error).message });
      }
    }
  }
}
