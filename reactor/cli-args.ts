/**
 * `vhostd` argv → options, shaped like SPDK's app framework and vhost app:
 * every flag SPDK users have in their scripts is accepted, either with SPDK's
 * meaning or with a note (logged once at start) of what it does here. Pure:
 * no logging, no file access; reactor/cli.ts applies the result.
 * Thread: main (reactor).
 */
import type { PollMode } from '../engine/control';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { LogLevel } from './log';
import { parseCpumask } from './placement';

export const USAGE = `Usage: vhostd [options]

A vhost-user storage target: QEMU connects to one Unix socket per controller.

Options (as SPDK's vhost app):
  -m, --cpumask MASK        cores to poll on: hex (0x3) or list ([0,2-3]); default 0x1
  -S, --vhost-sock-dir DIR  directory for the controllers' vhost-user sockets; default: the current directory
  -r, --rpc-socket PATH     JSON-RPC socket; default /var/tmp/vhostd.sock
  -c, --json, --config FILE JSON config to load at start (SPDK format; save_config output)
      --json-ignore-init-errors
                            a failing call of the -c config is logged and the rest still runs
  -L, --logflag FLAG        enable debug logs of a component (app, bdev, engine, rpc, vhost, vhost_blk,
                            or all); repeatable; sets the print level to debug unless --log-level is given
      --log-level LEVEL     error|warn|notice|info|debug; default info
      --silence-noticelog   print warnings and errors only (as --log-level warn)
      --log-format FORMAT   text (default) or json: one JSON object per line (time, level,
                            component, msg, then the fields), reactor and engine workers alike
      --metrics ADDR        serve Prometheus/OpenMetrics metrics on GET /metrics: HOST:PORT,
                            :PORT or PORT (127.0.0.1), [V6ADDR]:PORT, or a Unix socket path
                            (absolute or ./relative; made 0600)
      --wait-for-rpc        start only the RPC server and wait for framework_start_init before
                            starting the engine and loading the -c config
      --rpcs-allowed LIST   comma-separated RPC methods that may be called; others get
                            -32601 "Method not allowed"
  -f FILE                   write the process id to FILE; removed at exit
      --disable-cpumask-locks
                            do not hold the per-core lock files (/var/tmp/spdk_cpu_lock_NNN) that
                            keep a second target off the same cores
      --interrupt-mode      sleep in epoll/poll whenever idle instead of busy-polling (= --poll-mode interrupt)
  -p, --main-core N         accepted (must be a core of -m); the main thread is not pinned
  -s, --mem-size SIZE       accepted; vhostd reserves no hugepage memory
  -u, --no-pci              accepted; vhostd uses no PCI devices
      --no-huge             malloc bdevs never take huge pages (default: from the default huge page
                            pool when it holds the whole bdev, else 4 KiB pages)
  -e, --tpoint-group-mask MASK
                            accepted; vhostd has no SPDK trace buffers
  -i, --shm-id ID           accepted; vhostd shares no memory with SPDK tools
  -h, --help                this text
  -v, --version             print the version

vhostd's own:
      --default             start with the embedded default: a 256 MiB malloc disk Malloc0
                            behind controller vhost.0 (socket dir /tmp/vhostd unless -S), and
                            print the QEMU flags that attach it
      --poll-mode MODE      poll (busy-poll always, the default), adaptive (busy-poll, sleep on
                            the kick, completion and wake eventfds after --idle-sleep-us of
                            idleness) or interrupt (sleep as soon as idle: --interrupt-mode)
      --idle-sleep-us N     idle time before an adaptive worker sleeps; default 1000
      --socket-mode MODE    octal file mode of the sockets; default 0600
      --socket-group GROUP  give the controller sockets (not the RPC socket) to GROUP (name or gid),
                            readable and writable by it (e.g. libvirt's QEMU user's group)
      --require-sealed-memory
                            refuse guest memory not sealed against shrinking (F_SEAL_SHRINK, as
                            QEMU's memory-backend-memfd seals it): a front-end can then never
                            SIGBUS vhostd; refuses /dev/shm and hugetlbfs file backends
`;

export interface CliOptions {
  waitForRpc: boolean;
  cores: number[];
  socketDir: string;
  rpcSocket: string;
  config?: string;
  demo: boolean;
  pollMode: PollMode;
  idleSleepUs: number;
  socketMode: number;
  /** --socket-group: a group name or numeric gid (resolved by cli.ts); controller sockets only. */
  socketGroup?: string;
  /** --require-sealed-memory: refuse guest memory regions without F_SEAL_SHRINK (issue #15 item 4). */
  requireSealedMemory: boolean;
  /** --no-huge (SPDK's flag): malloc bdevs use 4 KiB pages only, never the huge page pool. */
  noHuge: boolean;
  /** --log-level, or 'warn' for --silence-noticelog, or 'debug' when -L is given alone. */
  printLevel?: LogLevel;
  /** --metrics: where to serve the metrics endpoint (reactor/metrics.ts). */
  metrics?: MetricsAddress;
  /** --log-format */
  logFormat: 'text' | 'json';
  logFlags: string[];
  /** -f: where to write the pid. */
  pidFile?: string;
  /** false with --disable-cpumask-locks. */
  cpuLocks: boolean;
  /** --rpcs-allowed: the only methods callable over the RPC socket. */
  rpcsAllowed?: string[];
  /** --json-ignore-init-errors. */
  ignoreInitErrors: boolean;
  /** -p */
  mainCore?: number;
  /** What flags accepted for SPDK compatibility do here: logged once at start. */
  notes: string[];
}

/** Where --metrics listens: a TCP address or a Unix socket path. */
export type MetricsAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/**
 * --metrics text → address. A value with a '/' is a Unix socket path;
 * otherwise HOST:PORT, [IPV6]:PORT, :PORT or PORT (host 127.0.0.1: metrics
 * are not exposed beyond the host unless a host is named). Port 0: any free
 * port (the "metrics listening" line names it).
 */
export function parseMetricsAddress(text: string): MetricsAddress {
  if (text.includes('/')) return { kind: 'unix', path: path.resolve(text) };
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):)?(\d+)$/.exec(text);
  if (m === null) throw new UsageError(`--metrics: ${JSON.stringify(text)} is not HOST:PORT, :PORT, PORT or a socket path (with a /)`);
  const port = integer(m[2], '--metrics port', 0, 65535);
  let host = m[1] ?? '';
  if (host.startsWith('[')) host = host.slice(1, -1);
  return { kind: 'tcp', host: host === '' ? '127.0.0.1' : host, port };
}

export class UsageError extends Error {
  readonly code = 'ERR_USAGE';
}

const OPTIONS = {
  cpumask: { type: 'string', short: 'm' },
  'vhost-sock-dir': { type: 'string', short: 'S' },
  'rpc-socket': { type: 'string', short: 'r' },
  json: { type: 'string', short: 'c' },
  config: { type: 'string' },
  'json-ignore-init-errors': { type: 'boolean' },
  logflag: { type: 'string', short: 'L', multiple: true },
  'log-level': { type: 'string' },
  'silence-noticelog': { type: 'boolean' },
  'log-format': { type: 'string' },
  metrics: { type: 'string' },
  'wait-for-rpc': { type: 'boolean' },
  'rpcs-allowed': { type: 'string' },
  'pid-file': { type: 'string', short: 'f' },
  'disable-cpumask-locks': { type: 'boolean' },
  'interrupt-mode': { type: 'boolean' },
  'main-core': { type: 'string', short: 'p' },
  'mem-size': { type: 'string', short: 's' },
  'no-pci': { type: 'boolean', short: 'u' },
  'no-huge': { type: 'boolean' },
  'tpoint-group-mask': { type: 'string', short: 'e' },
  'tpoint-group': { type: 'string' },
  'shm-id': { type: 'string', short: 'i' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
  default: { type: 'boolean' },
  'poll-mode': { type: 'string' },
  'idle-sleep-us': { type: 'string' },
  'socket-mode': { type: 'string' },
  'socket-group': { type: 'string' },
  'require-sealed-memory': { type: 'boolean' },
} as const;

type OptionName = keyof typeof OPTIONS;

/** How an option is spelled for messages: `-m/--cpumask`. */
function spelled(name: OptionName): string {
  const short = (OPTIONS[name] as { short?: string }).short;
  return short ? `-${short}/--${name}` : `--${name}`;
}

type Values = { -readonly [K in OptionName]?: (typeof OPTIONS)[K] extends { multiple: true } ? string[] : (typeof OPTIONS)[K] extends { type: 'string' } ? string : boolean };

/**
 * argv → option values. node:util's parseArgs only splits the tokens; every
 * check is ours, so that the messages are ours (an unknown option, a missing
 * value, a value given to a switch), not node:util's.
 */
function readOptions(argv: string[]): Values {
  const { tokens } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: false, tokens: true });
  const values: Record<string, string | boolean | string[]> = {};
  for (const tok of tokens) {
    if (tok.kind === 'positional') throw new UsageError(`unexpected argument: ${tok.value}`);
    if (tok.kind !== 'option') continue;
    const def = (OPTIONS as Record<string, { type: string; multiple?: boolean }>)[tok.name];
    if (def === undefined) throw new UsageError(`unknown option ${tok.rawName}`);
    if (def.type === 'boolean') {
      if (tok.value !== undefined) throw new UsageError(`option ${tok.rawName} takes no value`);
      values[tok.name] = true;
      continue;
    }
    // `-m -c file`: the value is really the next option (a negative number is a value).
    if (tok.value === undefined || (!tok.inlineValue && /^-[A-Za-z-]/.test(tok.value))) {
      throw new UsageError(`option ${tok.rawName} needs a value`);
    }
    if (def.multiple) values[tok.name] = [...((values[tok.name] as string[] | undefined) ?? []), tok.value];
    else values[tok.name] = tok.value;
  }
  return values as Values;
}

function integer(text: string, what: string, min: number, max: number): number {
  if (!/^-?(0|[1-9]\d*|0x[0-9a-fA-F]+)$/.test(text)) throw new UsageError(`${what} must be a whole number, not ${JSON.stringify(text)}`);
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${what} must be between ${min} and ${max}, not ${text}`);
  return n;
}

/**
 * Parses vhostd's argv. `knownLogFlags` are the -L components; 'all' is
 * always accepted. Throws UsageError with a message meant for the user.
 */
export function parseCli(argv: string[], knownLogFlags: readonly string[]): CliOptions | 'help' | 'version' {
  const values = readOptions(argv);
  if (values.help) return 'help';
  if (values.version) return 'version';
  const notes: string[] = [];

  let cores: number[];
  try {
    cores = parseCpumask(values.cpumask ?? '0x1');
  } catch (err) {
    throw new UsageError(`-m: ${(err as Error).message}`);
  }

  const pollText = values['poll-mode'] ?? 'poll';
  if (pollText !== 'poll' && pollText !== 'adaptive' && pollText !== 'interrupt') throw new UsageError('--poll-mode must be poll, adaptive or interrupt');
  let pollMode: PollMode = pollText;
  if (values['interrupt-mode']) {
    if (values['poll-mode'] !== undefined && values['poll-mode'] !== 'interrupt') {
      throw new UsageError(`--interrupt-mode and --poll-mode ${values['poll-mode']} contradict each other`);
    }
    pollMode = 'interrupt';
  }
  const idleSleepUs = integer(values['idle-sleep-us'] ?? '1000', '--idle-sleep-us', 0, 60_000_000);
  const modeText = values['socket-mode'] ?? '0600';
  if (!/^0?[0-7]{3}$/.test(modeText)) throw new UsageError('--socket-mode must be an octal mode like 0600');

  let printLevel: LogLevel | undefined;
  const level = values['log-level'];
  if (level !== undefined) {
    if (!['error', 'warn', 'notice', 'info', 'debug'].includes(level)) throw new UsageError(`--log-level: unknown level ${level}`);
    printLevel = level as LogLevel;
  } else if (values['silence-noticelog']) {
    // SPDK: the print level becomes WARNING.
    printLevel = 'warn';
  }
  const logFormat = values['log-format'] ?? 'text';
  if (logFormat !== 'text' && logFormat !== 'json') throw new UsageError(`--log-format: ${logFormat} is not text or json`);
  const logFlags = values.logflag ?? [];
  for (const flag of logFlags) {
    if (flag !== 'all' && !knownLogFlags.includes(flag)) {
      throw new UsageError(`-L: unknown log flag ${flag} (known: ${knownLogFlags.join(', ')}, all)`);
    }
  }
  // As SPDK's app: a debug flag is of no use unless debug lines are printed.
  if (logFlags.length > 0 && printLevel === undefined) printLevel = 'debug';

  if (values.json !== undefined && values.config !== undefined && values.json !== values.config) {
    throw new UsageError('-c/--json and --config name two different files');
  }
  const config = values.json ?? values.config;

  let rpcsAllowed: string[] | undefined;
  if (values['rpcs-allowed'] !== undefined) {
    rpcsAllowed = values['rpcs-allowed'].split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (rpcsAllowed.length === 0) throw new UsageError('--rpcs-allowed needs at least one method name');
  }

  let mainCore: number | undefined;
  if (values['main-core'] !== undefined) {
    mainCore = integer(values['main-core'], spelled('main-core'), 0, 1023);
    if (!cores.includes(mainCore)) throw new UsageError(`-p/--main-core: core ${mainCore} is not in the -m mask`);
    notes.push(`-p/--main-core ${mainCore}: accepted; the main (RPC and vhost-user) thread is not pinned, engine workers poll every core of -m`);
  }
  if (values['mem-size'] !== undefined) {
    if (!/^\d+([kKmMgG][bB]?)?$/.test(values['mem-size'])) throw new UsageError(`-s/--mem-size must be a size like 1024 or 2G, not ${values['mem-size']}`);
    notes.push('-s/--mem-size: accepted; vhostd reserves no hugepage memory (guest memory comes from the front-end, bdev memory is allocated per bdev)');
  }
  if (values['no-pci']) notes.push('-u/--no-pci: accepted; vhostd uses no PCI devices');
  const tpoint = values['tpoint-group-mask'] ?? values['tpoint-group'];
  if (tpoint !== undefined) notes.push(`-e ${tpoint}: accepted; vhostd has no SPDK trace buffers (use -L for debug logs)`);
  if (values['shm-id'] !== undefined) {
    integer(values['shm-id'], spelled('shm-id'), -1, 0x7fffffff);
    notes.push('-i/--shm-id: accepted; vhostd shares no memory with SPDK tools');
  }

  const metrics = values.metrics !== undefined ? parseMetricsAddress(values.metrics) : undefined;

  const demo = values.default ?? false;
  return {
    metrics,
    waitForRpc: values['wait-for-rpc'] ?? false,
    cores,
    socketDir: path.resolve(values['vhost-sock-dir'] ?? (demo ? '/tmp/vhostd' : '.')),
    rpcSocket: path.resolve(values['rpc-socket'] ?? '/var/tmp/vhostd.sock'),
    config,
    demo,
    pollMode,
    idleSleepUs,
    socketMode: parseInt(modeText, 8),
    socketGroup: socketGroup(values['socket-group']),
    requireSealedMemory: values['require-sealed-memory'] ?? false,
    noHuge: values['no-huge'] ?? false,
    printLevel,
    logFormat,
    logFlags,
    pidFile: values['pid-file'] !== undefined ? path.resolve(values['pid-file']) : undefined,
    cpuLocks: !(values['disable-cpumask-locks'] ?? false),
    rpcsAllowed,
    ignoreInitErrors: values['json-ignore-init-errors'] ?? false,
    mainCore,
    notes,
  };
}

/** --socket-group: a group name (as useradd accepts it) or a numeric gid. */
function socketGroup(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  if (!/^(\d{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?)$/.test(text)) throw new UsageError(`--socket-group: ${JSON.stringify(text)} is not a group name or gid`);
  if (/^\d+$/.test(text) && Number(text) > 0xfffffffe) throw new UsageError(`--socket-group: gid ${text} is out of range`);
  return text;
}

/** Parses a CPU list as /sys and /proc print it ("0-3,8,10-11"). */
export function parseCpuList(text: string): number[] {
  const out: number[] = [];
  for (const part of text.trim().split(',')) {
    if (part === '') continue;
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (m === null) throw new Error(`bad CPU list ${JSON.stringify(text)}`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    for (let c = lo; c <= hi; c++) out.push(c);
  }
  return out;
}

/**
 * The cores of -m must exist (be online) and be allowed to this process
 * (its affinity: taskset, cgroups cpusets). Returns an error message naming
 * the first bad core, or null.
 */
export function checkCores(cores: readonly number[], online: readonly number[], allowed: readonly number[]): string | null {
  for (const core of cores) {
    if (!online.includes(core)) {
      return `-m: core ${core} does not exist on this host (online CPUs: ${formatList(online)})`;
    }
    if (!allowed.includes(core)) {
      return `-m: core ${core} is not allowed to this process (its CPU affinity is ${formatList(allowed)})`;
    }
  }
  return null;
}

function formatList(cpus: readonly number[]): string {
  const sorted = [...cpus].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.length > 0 ? parts.join(',') : 'none';
}
