/**
 * Logging: one line per event on stderr, `<ISO time> <level> [<component>] <message> key=value...`,
 * so it can be grepped. Semantics are SPDK's (lib/log):
 *
 * - Every component that logs is a *log flag* (SPDK_LOG_REGISTER_COMPONENT):
 *   `logger(name)` registers it. A flag switches that component's debug lines
 *   on (`-L bdev`, log_set_flag); "all" sets or clears every flag.
 * - The *print level* is the most verbose level written to stderr
 *   (log_set_print_level, `--log-level`); a debug line needs both its flag and
 *   print level DEBUG (as SPDK, `-L` raises the print level to DEBUG unless
 *   `--log-level` says otherwise).
 * - The *log level* (log_set_level) is SPDK's threshold for its second sink,
 *   syslog. vhostd writes no syslog, so the value is kept and reported
 *   (log_get_level) for rpc.py compatibility and filters nothing.
 *
 * The engine workers log through engine/log.ts; they read the print level
 * and their flag ("engine") from `engineLogControl`, a SharedArrayBuffer this
 * module keeps current (see EngineLogWord in engine/control.ts).
 *
 * setLogSink() replaces stderr with a function (the embedding API's logger);
 * while one is set, engine workers post their lines here (logForwarded).
 *
 * Thread: main (reactor). Engine workers never import this module.
 */
import { EngineLogWord } from '../engine/control';
import { formatLogLine } from '../engine/log-line';

export type LogLevel = 'error' | 'warn' | 'notice' | 'info' | 'debug';

const LEVELS: Record<LogLevel, number> = { error: 0, warn: 1, notice: 2, info: 3, debug: 4 };

/** SPDK's names of the levels on the wire (log_get_level, log_set_print_level). */
export const SPDK_LEVEL_NAMES: Record<LogLevel, string> = {
  error: 'ERROR',
  warn: 'WARNING',
  notice: 'NOTICE',
  info: 'INFO',
  debug: 'DEBUG',
};

/** An SPDK level name (case-insensitive, as SPDK's parser) → LogLevel, or undefined. */
export function parseSpdkLevel(name: string): LogLevel | undefined {
  const upper = name.toUpperCase();
  for (const [level, spdk] of Object.entries(SPDK_LEVEL_NAMES) as [LogLevel, string][]) {
    if (spdk === upper) return level;
  }
  return undefined;
}

/** The component name engine workers log under (their debug flag). */
export const ENGINE_COMPONENT = 'engine';

let printLevel: LogLevel = 'info';
/** setLogSink's sink; null: stderr. */
let sink: LogSink | null = null;
/** SPDK's default log (syslog) level. */
let logLevel: LogLevel = 'notice';
/**
 * Registered components → debug enabled. The reactor's components are known
 * up front (some loggers are made per object, after `-L` is parsed); any
 * other component registers itself through logger().
 */
const flags = new Map<string, boolean>(['app', 'bdev', ENGINE_COMPONENT, 'rpc', 'vhost', 'vhost_blk'].map((k) => [k, false]));

/** Shared with every engine worker (WorkerInit.logControl). */
export const engineLogControl = new SharedArrayBuffer(EngineLogWord.Count * 4);
const engineWords = new Int32Array(engineLogControl);

/** --log-format: text lines, or one JSON object per line. */
export type LogFormat = 'text' | 'json';
let logFormat: LogFormat = 'text';

export function setLogFormat(format: LogFormat): void {
  logFormat = format;
  publishToEngine();
}

function publishToEngine(): void {
  Atomics.store(engineWords, EngineLogWord.Json, logFormat === 'json' ? 1 : 0);
  Atomics.store(engineWords, EngineLogWord.PrintLevel, LEVELS[printLevel]);
  Atomics.store(engineWords, EngineLogWord.Debug, flags.get(ENGINE_COMPONENT) === true ? 1 : 0);
  Atomics.store(engineWords, EngineLogWord.Forward, sink !== null ? 1 : 0);
}
publishToEngine();

export function setPrintLevel(level: LogLevel): void {
  printLevel = level;
  publishToEngine();
}

export function getPrintLevel(): LogLevel {
  return printLevel;
}

/** SPDK's log level: kept and reported, see the module comment. */
export function setLogLevel(level: LogLevel): void {
  logLevel = level;
}

export function getLogLevel(): LogLevel {
  return logLevel;
}

/** Make a component known as a log flag (done by logger()). */
export function registerLogFlag(component: string): void {
  if (!flags.has(component)) flags.set(component, false);
}

function changeFlag(component: string, enabled: boolean): boolean {
  if (component === 'all') {
    for (const k of flags.keys()) flags.set(k, enabled);
  } else if (flags.has(component)) {
    flags.set(component, enabled);
  } else {
    return false;
  }
  publishToEngine();
  return true;
}

/** Enable debug lines of one component ('all': every component). False if there is no such flag. */
export function setLogFlag(component: string): boolean {
  return changeFlag(component, true);
}

/** Disable debug lines of one component ('all': every component). False if there is no such flag. */
export function clearLogFlag(component: string): boolean {
  return changeFlag(component, false);
}

/** The enabled flags, sorted. */
export function logFlags(): string[] {
  return [...flags].filter(([, on]) => on).map(([k]) => k).sort();
}

/** Every registered flag and whether it is enabled, sorted by name (log_get_flags). */
export function allLogFlags(): Record<string, boolean> {
  const out: Record<string, boolean> = {};
  for (const k of [...flags.keys()].sort()) out[k] = flags.get(k) === true;
  return out;
}

function enabled(level: LogLevel, component: string): boolean {
  if (LEVELS[level] > LEVELS[printLevel]) return false;
  return level !== 'debug' || flags.get(component) === true;
}

/** One log record as a replaceable sink receives it (setLogSink). */
export interface LogRecord {
  time: Date;
  level: LogLevel;
  /** The log flag of the line: 'app', 'rpc', 'vhost', 'bdev', ... */
  component: string;
  message: string;
  fields: Record<string, unknown>;
}

/** Receives every record that passes the print level and the debug flags, instead of stderr. */
export type LogSink = (record: LogRecord) => void;

/**
 * Send the reactor's log records to `next` instead of stderr (null: back to
 * stderr); returns the sink it replaces. Process-wide, as the print level and
 * flags are. A sink that throws loses that record, never the caller's work.
 * Engine worker lines pass through too: while a sink is set the workers post
 * them (EngineLogWord.Forward) instead of writing fd 2, and logForwarded()
 * hands them to the sink.
 */
export function setLogSink(next: LogSink | null): LogSink | null {
  const previous = sink;
  sink = next;
  publishToEngine();
  return previous;
}

export function log(level: LogLevel, component: string, message: string, fields?: Record<string, unknown>): void {
  if (!enabled(level, component)) return;
  emit(level, component, message, fields);
}

/**
 * An engine worker's line posted to the reactor (EngineLogEvent, while a
 * sink is set): the worker filtered it already. To the sink, or to stderr if
 * the sink was removed while the line was on its way.
 */
export function logForwarded(level: LogLevel, component: string, message: string, fields?: Record<string, unknown>): void {
  emit(level, component, message, fields);
}

function emit(level: LogLevel, component: string, message: string, fields?: Record<string, unknown>): void {
  if (sink !== null) {
    const record: LogRecord = { time: new Date(), level, component, message, fields: {} };
    if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined) record.fields[k] = v;
    try {
      sink(record);
    } catch {
      // the embedder's sink failed: drop the record
    }
    return;
  }
  process.stderr.write(formatLogLine(logFormat === 'json', level, component, message, fields) + '\n');
}

/** A logger bound to one component. */
export interface Logger {
  error(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  notice(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  debug(message: string, fields?: Record<string, unknown>): void;
}

/** A logger for `component`, which becomes a log flag. */
export function logger(component: string): Logger {
  registerLogFlag(component);
  return {
    error: (m, f) => log('error', component, m, f),
    warn: (m, f) => log('warn', component, m, f),
    notice: (m, f) => log('notice', component, m, f),
    info: (m, f) => log('info', component, m, f),
    debug: (m, f) => log('debug', component, m, f),
  };
}
