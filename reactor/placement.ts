/**
 * CPU masks and device placement. A mask is written the way SPDK takes it:
 * a hex number ("0x3", "3") or a list ("[0,2-3]"). Thread: main (reactor).
 */
import { ErrorCode, VhostdError } from './errors';

/** The most cores a mask may name (SPDK's default SPDK_CPUSET_SIZE is 1024). */
export const MAX_CORES = 1024;

/** Parse a cpumask into a sorted list of core numbers. Throws VhostdError ERR_INVALID with the reason. */
export function parseCpumask(text: string): number[] {
  const s = text.trim();
  const cores = new Set<number>();
  if (s.startsWith('[')) {
    if (!s.endsWith(']')) throw invalid(text, 'a core list must end with "]"');
    const body = s.slice(1, -1).trim();
    if (body === '') throw invalid(text, 'the core list is empty');
    for (const part of body.split(',')) {
      const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
      if (!m) throw invalid(text, `"${part.trim()}" is not a core or a range`);
      const lo = Number(m[1]);
      const hi = m[2] === undefined ? lo : Number(m[2]);
      if (hi < lo) throw invalid(text, `range ${lo}-${hi} is backwards`);
      if (hi >= MAX_CORES) throw invalid(text, `core ${hi} is beyond ${MAX_CORES - 1}`);
      for (let c = lo; c <= hi; c++) cores.add(c);
    }
  } else {
    const hex = s.replace(/^0x/i, '');
    if (!/^[0-9a-f]+$/i.test(hex)) throw invalid(text, 'expected a hex mask like 0x3 or a list like [0,2-3]');
    if (hex.replace(/^0+/, '').length * 4 > MAX_CORES) throw invalid(text, `mask names a core beyond ${MAX_CORES - 1}`);
    let bits = BigInt('0x' + hex);
    for (let c = 0; bits > 0n; c++, bits >>= 1n) if (bits & 1n) cores.add(c);
  }
  if (cores.size === 0) throw invalid(text, 'the mask names no core');
  return [...cores].sort((a, b) => a - b);
}

function invalid(text: string, why: string): VhostdError {
  return new VhostdError(ErrorCode.Invalid, `invalid cpumask "${text}": ${why}`);
}

/** Format cores as SPDK prints a mask: "0x3". */
export function formatCpumask(cores: Iterable<number>): string {
  let bits = 0n;
  for (const c of cores) bits |= 1n << BigInt(c);
  return '0x' + bits.toString(16);
}

/**
 * Counts the devices running on each core of the app mask and picks the core
 * for the next one: among the cores of the device's mask, the one carrying the
 * fewest devices, the lowest on a tie.
 */
export class Placement {
  private readonly load = new Map<number, number>();

  constructor(readonly appCores: readonly number[]) {
    for (const c of appCores) this.load.set(c, 0);
  }

  /** Throws VhostdError ERR_INVALID unless every core of `cores` lies in the app mask. */
  checkInside(cores: readonly number[], maskText: string): void {
    const outside = cores.filter((c) => !this.load.has(c));
    if (outside.length > 0) {
      throw new VhostdError(
        ErrorCode.Invalid,
        `cpumask ${maskText} is not a subset of the app's cpumask ${formatCpumask(this.appCores)} (core ${outside.join(', ')} outside)`,
      );
    }
  }

  /** Choose a core for a starting device and count it there. */
  acquire(cores: readonly number[]): number {
    let best = -1;
    let bestLoad = Infinity;
    for (const c of cores) {
      const n = this.load.get(c);
      if (n !== undefined && n < bestLoad) {
        best = c;
        bestLoad = n;
      }
    }
    if (best < 0) throw new VhostdError(ErrorCode.Invalid, 'no core of the mask lies in the app mask');
    this.load.set(best, bestLoad + 1);
    return best;
  }

  /** Count a device (a shard of spread queues) on `core`, which the caller chose. */
  acquireOn(core: number): void {
    const n = this.load.get(core);
    if (n === undefined) throw new VhostdError(ErrorCode.Invalid, `core ${core} is not in the app mask`);
    this.load.set(core, n + 1);
  }

  /** A device stopped on `core`. */
  release(core: number): void {
    const n = this.load.get(core);
    if (n !== undefined && n > 0) this.load.set(core, n - 1);
  }

  devicesOn(core: number): number {
    return this.load.get(core) ?? 0;
  }
}
