/**
 * SPDK's subsystems that vhostd has: each has a name, the subsystems it
 * depends on (initialized, and replayed from a config, before it) and writes
 * the calls that recreate its state (save_config, framework_get_config).
 * SUBSYSTEMS is the one list, in initialization order; the app gives each a
 * writer (a subsystem listed without one does not compile).
 * Thread: main (reactor).
 */
import type { ConfigCall } from './bdev/module';
import { ErrorCode, VhostdError } from './errors';
import type { SubsystemInfo } from './info';

/** The subsystems, dependencies first (framework_get_subsystems lists them so). Adding one: a line here, a writer in app.ts. */
export const SUBSYSTEMS = [
  { name: 'bdev', dependsOn: [] },
  { name: 'vhost_blk', dependsOn: ['bdev'] },
  { name: 'scsi', dependsOn: ['bdev'] },
  { name: 'vhost_scsi', dependsOn: ['scsi'] },
  { name: 'nvmf', dependsOn: ['bdev'] },
] as const satisfies readonly { name: string; dependsOn: readonly string[] }[];

export type SubsystemName = (typeof SUBSYSTEMS)[number]['name'];

/** The subsystem names in the order their config calls are replayed. */
export const SUBSYSTEM_ORDER: readonly string[] = SUBSYSTEMS.map((s) => s.name);

export interface Subsystem {
  readonly name: string;
  readonly dependsOn: readonly string[];
  /** The calls that recreate the subsystem's current state. */
  writeConfig(): ConfigCall[];
}

export class SubsystemRegistry {
  private readonly byName = new Map<string, Subsystem>();

  /** `list` in initialization order: each subsystem's dependencies come before it. */
  constructor(list: readonly Subsystem[]) {
    for (const s of list) {
      for (const d of s.dependsOn) {
        if (!this.byName.has(d)) throw new Error(`subsystem ${s.name} depends on ${d}, which is not listed before it`);
      }
      if (this.byName.has(s.name)) throw new Error(`subsystem ${s.name} is listed twice`);
      this.byName.set(s.name, s);
    }
  }

  /** framework_get_subsystems (SPDK shape), in initialization order. */
  list(): SubsystemInfo[] {
    return [...this.byName.values()].map((s) => ({ subsystem: s.name, depends_on: [...s.dependsOn] }));
  }

  /** framework_get_config: the calls that recreate one subsystem (ERR_INVALID_PARAMS for an unknown name, as SPDK's -32602). */
  config(name: string): ConfigCall[] {
    const s = this.byName.get(name);
    if (!s) throw new VhostdError(ErrorCode.InvalidParams, `Subsystem '${name}' not found`);
    return s.writeConfig();
  }
}

/** The registry of SUBSYSTEMS with the app's writers. */
export function subsystemRegistry(writers: Record<SubsystemName, () => ConfigCall[]>): SubsystemRegistry {
  return new SubsystemRegistry(SUBSYSTEMS.map((s) => ({ name: s.name, dependsOn: s.dependsOn, writeConfig: writers[s.name] })));
}
