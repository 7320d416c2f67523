/**
 * Logging: one line per event on stderr, `<ISO time> <level> [<component>] <message> key=value...`,
 * so it can be grepped. Components can be switched on for debug output with
 * `-L <component>` (like SPDK's log flags). Thread: any (each thread writes
 * its own lines; the engine prefixes its component with the core).
 */

export type LogLevel = 'error' | 'warn' | 'notice' | 'info' | 'debug';

const LEVELS: Record<LogLevel, number> = { error: 0, warn: 1, notice: 2, info: 3, debug: 4 };

let printLevel: LogLevel = 'info';
const debugFlags = new Set<string>();

export function setPrintLevel(level: LogLevel): void {
  printLevel = level;
}

export function getPrintLevel(): LogLevel {
  return printLevel;
}

/** Enable debug lines of one component ('all' enables every component). */
export function setLogFlag(component: string): void {
  debugFlags.add(component);
}

export function clearLogFlag(component: string): void {
  debugFlags.delete(component);
}

export function logFlags(): string[] {
  return [...debugFlags].sort();
}

function enabled(level: LogLevel, component: string): boolean {
  if (level === 'debug') return debugFlags.has(component) || debugFlags.has('all');
  return LEVELS[level] <= LEVELS[printLevel];
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v;
  if (typeof v === 'bigint') return '0x' + v.toString(16);
  if (v instanceof Error) return JSON.stringify(v.message);
  return JSON.stringify(v) ?? String(v);
}

export function log(level: LogLevel, component: string, message: string, fields?: Record<string, unknown>): void {
  if (!enabled(level, component)) return;
  let line = `${new Date().toISOString()} ${level} [${component}] ${message}`;
  if (fields) {
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined) line += ` ${k}=${formatValue(v)}`;
    }
  }
  process.stderr.write(line + '\n');
}

/** A logger bound to one component. */
export interface Logger {
  error(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  notice(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  debug(message: string, fields?: Record<string, unknown>): void;
}

export function logger(component: string): Logger {
  return {
    error: (m, f) => log('error', component, m, f),
    warn: (m, f) => log('warn', component, m, f),
    notice: (m, f) => log('notice', component, m, f),
    info: (m, f) => log('info', component, m, f),
    debug: (m, f) => log('debug', component, m, f),
  };
}
