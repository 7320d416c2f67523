/**
 * Engine logging: the reactor's line format (`<ISO time> <level>
 * [engine:<core>] <message> key=value...`) written straight to fd 2 with a
 * synchronous write. Thread: each engine worker (module state is per worker).
 *
 * Why not process.stderr: inside a worker thread process.stderr is a stream
 * forwarded to the main thread and flow-controlled through the worker's event
 * loop, which a busy-polling worker never returns to; after the first line,
 * later lines would sit in the stream's buffer. One write(2) per line keeps
 * lines whole and in order with the reactor's (a line under PIPE_BUF is atomic).
 *
 * Exception: while an embedder's log sink is set (EngineLogWord.Forward), each
 * line is posted on the worker's control port instead (EngineLogEvent) and
 * the reactor hands it to the sink.
 */
import * as fs from 'node:fs';
import type { MessagePort } from 'node:worker_threads';
import { EngineLogWord, type EngineLogEvent } from './control';
import { formatLogLine } from './log-line';

export type EngineLogLevel = 'error' | 'warn' | 'notice' | 'info' | 'debug';

const LEVELS: Record<EngineLogLevel, number> = { error: 0, warn: 1, notice: 2, info: 3, debug: 4 };

let printLevel = LEVELS.info;
let component = 'engine';
/** The reactor's live settings (EngineLogWord slots), once setLogControl has been called. */
let control: Int32Array | null = null;

/** The port to the reactor: lines go there while EngineLogWord.Forward is 1. */
let port: MessagePort | null = null;

export function setLogPort(p: MessagePort): void {
  port = p;
}

/**
 * Post the line to the reactor (its log sink); false if it cannot be (no
 * port, a field that cannot be cloned), then the caller writes it to fd 2.
 * postMessage does not need this thread's event loop to turn.
 */
function forward(level: EngineLogLevel, message: string, fields?: Record<string, unknown>): boolean {
  if (port === null || control === null || Atomics.load(control, EngineLogWord.Forward) !== 1) return false;
  const out: Record<string, unknown> = {};
  if (fields) {
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined) out[k] = v instanceof Error ? v.message : v;
    }
  }
  try {
    port.postMessage({ event: 'log', level, component, message, fields: out } satisfies EngineLogEvent);
    return true;
  } catch {
    return false;
  }
}

/** Name the component after the core this worker runs on. */
export function setLogCore(core: number): void {
  component = `engine:${core}`;
}

export function setEngineLogLevel(level: EngineLogLevel): void {
  printLevel = LEVELS[level];
}

/**
 * Follow the reactor's print level and "engine" debug flag (log_set_print_level,
 * log_set_flag) from the shared words of WorkerInit.logControl from now on.
 */
export function setLogControl(words: SharedArrayBuffer): void {
  control = new Int32Array(words, 0, EngineLogWord.Count);
}

function wanted(level: EngineLogLevel): boolean {
  const n = LEVELS[level];
  if (control === null) return n <= printLevel;
  if (n > Atomics.load(control, EngineLogWord.PrintLevel)) return false;
  return level !== 'debug' || Atomics.load(control, EngineLogWord.Debug) === 1;
}

export function log(level: EngineLogLevel, message: string, fields?: Record<string, unknown>): void {
  if (!wanted(level)) return;
  if (forward(level, message, fields)) return;
  const line = formatLogLine(control !== null && Atomics.load(control, EngineLogWord.Json) === 1, level, component, message, fields);
  try {
    fs.writeSync(2, line + '\n');
  } catch {
    // stderr full (EAGAIN on a nonblocking pipe) or closed: drop the line
    // rather than stall or kill the poll loop.
  }
}

export const logger = {
  error: (m: string, f?: Record<string, unknown>): void => log('error', m, f),
  warn: (m: string, f?: Record<string, unknown>): void => log('warn', m, f),
  notice: (m: string, f?: Record<string, unknown>): void => log('notice', m, f),
  info: (m: string, f?: Record<string, unknown>): void => log('info', m, f),
  debug: (m: string, f?: Record<string, unknown>): void => log('debug', m, f),
};
