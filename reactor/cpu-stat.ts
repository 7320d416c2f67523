/**
 * Per-core facts framework_get_reactors reports the way SPDK does:
 * user, system and interrupt time of a CPU from /proc/stat (usr = user,
 * sys = system, irq = irq + softirq, in USER_HZ ticks) and the NUMA node of a
 * CPU from sysfs. Readers return undefined when the kernel does not tell, so
 * that callers leave the field out rather than report a made-up value.
 * Thread: main (reactor).
 */
import * as fs from 'node:fs';

export interface CpuTimes {
  usr: number;
  sys: number;
  irq: number;
}

/** Parse /proc/stat text into per-CPU times (the "cpuN" lines; the aggregate "cpu" line is skipped). */
export function parseProcStat(text: string): Map<number, CpuTimes> {
  const out = new Map<number, CpuTimes>();
  for (const line of text.split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const f = m[2].trim().split(/\s+/).map(Number);
    // user nice system idle iowait irq softirq ...
    if (f.length < 7 || f.slice(0, 7).some((x) => !Number.isSafeInteger(x) || x < 0)) continue;
    out.set(Number(m[1]), { usr: f[0], sys: f[2], irq: f[5] + f[6] });
  }
  return out;
}

/** The current per-CPU times, or an empty map when /proc/stat cannot be read. */
export function readCpuTimes(): Map<number, CpuTimes> {
  try {
    return parseProcStat(fs.readFileSync('/proc/stat', 'utf8'));
  } catch {
    return new Map();
  }
}

/** The NUMA node of `cpu` (the nodeN link in its sysfs directory), or undefined. */
export function numaNodeOf(cpu: number): number | undefined {
  try {
    for (const entry of fs.readdirSync(`/sys/devices/system/cpu/cpu${cpu}`)) {
      const m = /^node(\d+)$/.exec(entry);
      if (m) return Number(m[1]);
    }
  } catch {
    // no sysfs: unknown
  }
  return undefined;
}
