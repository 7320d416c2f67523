/**
 * The one log line format, shared by the reactor's logger (reactor/log.ts) and
 * the engine workers' (engine/log.ts): text `<ISO time> <level> [<component>]
 * <message> key=value...` or one JSON object per line (time, level, component,
 * msg, then the fields; bigints as hex strings, errors as their message).
 * Pure functions, no state. Thread: any.
 */

function textValue(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v;
  if (typeof v === 'bigint') return '0x' + v.toString(16);
  if (v instanceof Error) return JSON.stringify(v.message);
  return JSON.stringify(v) ?? String(v);
}

/** One log line without its newline; fields whose value is undefined are left out. */
export function formatLogLine(json: boolean, level: string, component: string, message: string, fields?: Record<string, unknown>): string {
  if (json) {
    const o: Record<string, unknown> = { time: new Date().toISOString(), level, component, msg: message };
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        if (v === undefined || k in o) continue;
        o[k] = typeof v === 'bigint' ? '0x' + v.toString(16) : v instanceof Error ? v.message : v;
      }
    }
    return JSON.stringify(o);
  }
  let line = `${new Date().toISOString()} ${level} [${component}] ${message}`;
  if (fields) {
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined) line += ` ${k}=${textValue(v)}`;
    }
  }
  return line;
}
