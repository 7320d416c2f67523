/**
 * `vhostd-top`: a live terminal view of a running vhostd — its cores,
 * controllers and bdevs — read over the JSON-RPC socket, as SPDK's spdk_top
 * reads an SPDK app. Every `-d` seconds it samples
 *   framework_get_reactors  (per core busy/idle ticks, what runs there),
 *   vhost_get_controllers   (controllers, front-end sessions, in-flight),
 *   bdev_get_iostat         (per bdev ops, bytes, latency ticks),
 * and shows the differences between the last two samples as rates. A
 * controller's rates are those of the bdevs it serves (a bdev is claimed by
 * one controller, so they are its I/O; requests that fail before reaching
 * the bdev are not in them — the metrics endpoint counts those).
 *
 * The frame fits 80x24 (or the terminal's size): sections are cut with a
 * "+N more" line when there are more rows than room. On a terminal it
 * redraws in place until q or Ctrl-C; `-n N` stops after N frames; `--once`
 * prints one plain frame (two samples `-d` apart) and exits — for scripts
 * and tests. Thread: main (a CLI process of its own).
 */
import { parseArgs } from 'node:util';
import { RpcClient } from './rpc/client';

export const TOP_USAGE = `Usage: vhostd-top [options]

A live view of a running vhostd: cores, controllers, bdevs (like SPDK's spdk_top).

Options:
  -r, --rpc-socket PATH   vhostd's JSON-RPC socket; default /var/tmp/vhostd.sock
  -d, --delay SECONDS     time between refreshes; default 1 (at least 0.1)
  -n, --iterations N      stop after N frames; default: until q or Ctrl-C
      --once              print one frame (rates over one -d interval) without
                          terminal control codes, then exit
  -h, --help              this text
`;

type Obj = Record<string, unknown>;

/** One reading of the three RPC methods. */
export interface TopSample {
  atMs: number;
  version: string;
  reactors: Obj;
  controllers: Obj[];
  iostat: Obj;
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

function pad(text: string, width: number, right = false): string {
  const t = text.length > width ? text.slice(0, Math.max(0, width - 1)) + '…' : text;
  return right ? t.padStart(width) : t.padEnd(width);
}

/** A rate with an SI suffix in at most 6 characters (e.g. "12.3k"). */
function rate(v: number): string {
  if (!Number.isFinite(v) || v <= 0) return '0';
  if (v < 1000) return v < 10 ? v.toFixed(1) : v.toFixed(0);
  if (v < 1e6) return `${(v / 1e3).toFixed(v < 1e4 ? 2 : 1)}k`;
  return `${(v / 1e6).toFixed(v < 1e7 ? 2 : 1)}M`;
}

function mib(bytesPerSec: number): string {
  const m = bytesPerSec / (1024 * 1024);
  return m <= 0 ? '0' : m < 10 ? m.toFixed(2) : m < 1000 ? m.toFixed(1) : m.toFixed(0);
}

/** Mean latency in µs of the ops between two samples ('-' when none). */
function latencyUs(dTicks: number, dOps: number, tickRate: number): string {
  if (dOps <= 0 || tickRate <= 0) return '-';
  const us = dTicks / dOps / (tickRate / 1e6);
  return us < 10 ? us.toFixed(1) : us.toFixed(0);
}

/** The table rows of one section, cut to `room` lines (the last says how many more). */
function fit(rows: string[], room: number): string[] {
  if (rows.length <= room) return rows;
  if (room <= 0) return [];
  const shown = rows.slice(0, room - 1);
  shown.push(`  … +${rows.length - shown.length} more`);
  return shown;
}

function byName(list: unknown, key: string): Map<string, Obj> {
  const m = new Map<string, Obj>();
  if (Array.isArray(list)) for (const o of list as Obj[]) m.set(String(o[key]), o);
  return m;
}

/** The bdevs a controller serves, from its vhost_get_controllers backend_specific. */
function controllerBdevs(c: Obj): { type: string; bdevs: string[] } {
  const bs = (c.backend_specific ?? {}) as Obj;
  if (bs.block !== undefined) return { type: 'blk', bdevs: [String((bs.block as Obj).bdev)] };
  if (Array.isArray(bs.scsi)) {
    const bdevs: string[] = [];
    for (const t of bs.scsi as Obj[]) for (const l of (t.luns ?? []) as Obj[]) bdevs.push(String(l.bdev_name));
    return { type: 'scsi', bdevs };
  }
  return { type: Object.keys(bs)[0] ?? '?', bdevs: [] };
}

/**
 * One frame from two samples, as lines of at most `width` characters, at
 * most `height` lines. Pure (tested without a target).
 */
export function renderFrame(prev: TopSample, cur: TopSample, width = 80, height = 24): string[] {
  const secs = Math.max(1e-3, (cur.atMs - prev.atMs) / 1000);
  const tickRate = num(cur.iostat.tick_rate) || 1e9;
  const reactors = (Array.isArray(cur.reactors.reactors) ? cur.reactors.reactors : []) as Obj[];
  const prevReactors = new Map<number, Obj>((Array.isArray(prev.reactors.reactors) ? (prev.reactors.reactors as Obj[]) : []).map((r) => [num(r.lcore), r]));
  const bdevs = (Array.isArray(cur.iostat.bdevs) ? cur.iostat.bdevs : []) as Obj[];
  const prevBdevs = byName(prev.iostat.bdevs, 'name');

  // Per bdev rates, also summed per controller below.
  interface BdevRate {
    rIops: number;
    wIops: number;
    rBps: number;
    wBps: number;
    rLat: string;
    wLat: string;
    failed: number;
  }
  const bdevRates = new Map<string, BdevRate>();
  for (const b of bdevs) {
    const p = prevBdevs.get(String(b.name)) ?? {};
    const d = (k: string): number => Math.max(0, num(b[k]) - num(p[k]));
    bdevRates.set(String(b.name), {
      rIops: d('num_read_ops') / secs,
      wIops: d('num_write_ops') / secs,
      rBps: d('bytes_read') / secs,
      wBps: d('bytes_written') / secs,
      rLat: latencyUs(d('read_latency_ticks'), d('num_read_ops'), tickRate),
      wLat: latencyUs(d('write_latency_ticks'), d('num_write_ops'), tickRate),
      failed: num((b.io_error as Obj | undefined)?.failed),
    });
  }

  // Where each controller runs: the core whose lw_threads name it.
  const coreOf = new Map<string, number>();
  for (const r of reactors) for (const t of (r.lw_threads ?? []) as Obj[]) coreOf.set(String(t.name).replace(/^vhost\./, ''), num(r.lcore));

  const coreRows = reactors.map((r) => {
    const p = prevReactors.get(num(r.lcore)) ?? {};
    const busy = Math.max(0, num(r.busy) - num(p.busy));
    const idle = Math.max(0, num(r.idle) - num(p.idle));
    const pct = busy + idle > 0 ? (100 * busy) / (busy + idle) : 0;
    const threads = ((r.lw_threads ?? []) as Obj[]).map((t) => String(t.name).replace(/^vhost\./, ''));
    return [pad(String(r.lcore), 5, true), pad(pct.toFixed(1), 6, true), pad((100 - (busy + idle > 0 ? pct : 100)).toFixed(1), 6, true), pad(r.in_interrupt === true ? 'intr' : 'poll', 5, true), '  ', threads.length > 0 ? threads.join(',') : '-'].join(' ');
  });

  const ctrlRows = cur.controllers.map((c) => {
    const name = String(c.ctrlr);
    const { type, bdevs: served } = controllerBdevs(c);
    const sessions = (Array.isArray(c.sessions) ? c.sessions : []) as Obj[];
    const inflight = sessions.reduce((n, s) => n + num(s.inflight_task_cnt), 0);
    let rIops = 0;
    let wIops = 0;
    let bps = 0;
    for (const b of served) {
      const r = bdevRates.get(b);
      if (r) {
        rIops += r.rIops;
        wIops += r.wIops;
        bps += r.rBps + r.wBps;
      }
    }
    const core = coreOf.get(name);
    return [
      pad(name, 14),
      pad(type, 4),
      pad(core === undefined ? '-' : String(core), 4, true),
      pad(sessions.length > 0 ? 'yes' : 'no', 4, true),
      pad(String(inflight), 5, true),
      pad(rate(rIops), 7, true),
      pad(rate(wIops), 7, true),
      pad(mib(bps), 7, true),
      ' ' + served.join(','),
    ].join(' ');
  });

  const bdevRows = bdevs.map((b) => {
    const r = bdevRates.get(String(b.name)) as BdevRate;
    return [
      pad(String(b.name), 14),
      pad(rate(r.rIops), 7, true),
      pad(rate(r.wIops), 7, true),
      pad(mib(r.rBps), 7, true),
      pad(mib(r.wBps), 7, true),
      pad(r.rLat, 8, true),
      pad(r.wLat, 8, true),
      pad(String(r.failed), 6, true),
    ].join(' ');
  });

  const time = new Date(cur.atMs).toISOString().slice(11, 19);
  const header = [`vhostd-top  ${cur.version}  pid ${num(cur.reactors.pid)}  ${time} UTC  every ${secs.toFixed(1)} s`, ''];
  const coreHead = ' CORE  BUSY%  IDLE%  MODE    CONTROLLERS';
  const ctrlHead = 'CONTROLLER     TYPE CORE CONN  INFL  R IOPS  W IOPS   MiB/s  BDEVS';
  const bdevHead = 'BDEV            R IOPS  W IOPS  R MiB/s W MiB/s  R LAT us W LAT us  ERRORS';
  // Room: header, three section heads, two blank separators, one footer line.
  const fixed = header.length + 3 + 2 + 1;
  let room = Math.max(3, height - fixed);
  // Cores first (few), then controllers and bdevs share the rest.
  const cores = fit(coreRows, Math.min(coreRows.length, Math.max(1, Math.floor(room / 3))));
  room -= cores.length;
  const half = Math.ceil(room / 2);
  const ctrls = fit(ctrlRows, Math.max(1, Math.min(ctrlRows.length, bdevRows.length <= room - half ? room - bdevRows.length : half)));
  room -= ctrls.length;
  const bds = fit(bdevRows, Math.max(1, room));
  const lines = [
    ...header,
    coreHead,
    ...(cores.length > 0 ? cores : ['  (engine not started)']),
    '',
    ctrlHead,
    ...(ctrls.length > 0 ? ctrls : ['  (no controllers)']),
    '',
    bdevHead,
    ...(bds.length > 0 ? bds : ['  (no bdevs)']),
    'controller rates are those of its bdevs; LAT: mean per I/O over the interval',
  ];
  return lines.slice(0, height).map((l) => (l.length > width ? l.slice(0, width) : l));
}

/** Read the three methods once. */
export async function takeSample(client: RpcClient): Promise<TopSample> {
  const [version, reactors, controllers, iostat] = await Promise.all([
    client.call('spdk_get_version'),
    client.call('framework_get_reactors'),
    client.call('vhost_get_controllers'),
    client.call('bdev_get_iostat'),
  ]);
  return { atMs: Date.now(), version: String((version as Obj).version ?? ''), reactors: reactors as Obj, controllers: controllers as Obj[], iostat: iostat as Obj };
}

interface TopOptions {
  socket: string;
  delayMs: number;
  iterations: number;
  once: boolean;
}

class TopUsageError extends Error {}

export function parseTopArgs(argv: string[]): TopOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'rpc-socket': { type: 'string', short: 'r' },
        delay: { type: 'string', short: 'd' },
        iterations: { type: 'string', short: 'n' },
        once: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    // node:util's wording names the option; keep the first sentence.
    throw new TopUsageError((err as Error).message.split('. ')[0]);
  }
  if (values.help) return 'help';
  const delay = values.delay === undefined ? 1 : Number(values.delay);
  if (!Number.isFinite(delay) || delay < 0.1 || delay > 3600) throw new TopUsageError(`-d must be a number of seconds from 0.1 to 3600, not ${values.delay}`);
  let iterations = Infinity;
  if (values.iterations !== undefined) {
    if (!/^[1-9]\d*$/.test(values.iterations)) throw new TopUsageError(`-n must be a positive whole number, not ${values.iterations}`);
    iterations = Number(values.iterations);
  }
  return { socket: values['rpc-socket'] ?? '/var/tmp/vhostd.sock', delayMs: Math.round(delay * 1000), iterations, once: values.once === true };
}

export async function topMain(argv: string[]): Promise<number> {
  let opts: TopOptions | 'help';
  try {
    opts = parseTopArgs(argv);
  } catch (err) {
    process.stderr.write(`vhostd-top: ${(err as Error).message} (see vhostd-top --help)\n`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(TOP_USAGE);
    return 0;
  }
  let client: RpcClient;
  try {
    client = await RpcClient.connect(opts.socket);
  } catch (err) {
    process.stderr.write(`vhostd-top: cannot connect to ${opts.socket}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (is vhostd running? -r names its RPC socket)\n`);
    return 1;
  }
  const tty = !opts.once && process.stdout.isTTY === true;
  const frames = opts.once ? 1 : opts.iterations;
  let quit = false;
  let wake: (() => void) | null = null;
  const stopNow = (): void => {
    quit = true;
    wake?.();
  };
  const onKey = (d: Buffer): void => {
    if (d.includes(0x71) || d.includes(0x51) || d.includes(0x03)) stopNow(); // q, Q, Ctrl-C
  };
  if (tty && process.stdin.isTTY) {
    process.stdin.setRawMode(true);
    process.stdin.on('data', onKey);
  }
  process.on('SIGINT', stopNow);
  process.on('SIGTERM', stopNow);
  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => {
        wake = null;
        resolve();
      }, ms);
      wake = () => {
        clearTimeout(timer);
        wake = null;
        resolve();
      };
    });
  try {
    let prev = await takeSample(client);
    for (let shown = 0; shown < frames && !quit; ) {
      await sleep(opts.delayMs);
      if (quit) break;
      const cur = await takeSample(client);
      const width = tty ? Math.max(40, process.stdout.columns ?? 80) : 80;
      const height = tty ? Math.max(12, process.stdout.rows ?? 24) : 24;
      const lines = renderFrame(prev, cur, width, height);
      // Home, clear: redraw in place.
      process.stdout.write((tty ? '\x1b[H\x1b[2J' : shown > 0 ? '\n' : '') + lines.join('\n') + '\n');
      prev = cur;
      shown++;
    }
  } catch (err) {
    process.stderr.write(`vhostd-top: ${(err as Error).message}\n`);
    return 1;
  } finally {
    client.close();
    if (tty && process.stdin.isTTY) {
      process.stdin.setRawMode(false);
      process.stdin.off('data', onKey);
      process.stdin.pause();
    }
  }
  return 0;
}
