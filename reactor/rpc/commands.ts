/**
 * The vhostd-rpc command line: rpc.py's syntax for each method, as a table
 * (method → positionals, flags, how to build the params, how rpc.py prints
 * the result), parsed with node:util parseArgs. Pure functions, no I/O: cli.ts
 * runs them.
 *
 *   vhostd-rpc [-s SOCK] [-t TIMEOUT_S] METHOD [method args]
 *
 * Thread: the CLI process's main thread.
 */

import { parseArgs } from 'node:util';

export const DEFAULT_SOCKET = '/var/tmp/vhostd.sock';
/** rpc.py's default (-t, seconds). */
export const DEFAULT_TIMEOUT_S = 60;

type ValueKind = 'string' | 'int' | 'float';

interface Positional {
  name: string;
  kind: ValueKind;
  help: string;
}

interface Flag {
  /** Long names; the first is shown in help, the others are accepted too (rpc.py's dashes and the underscore spelling). */
  long: string[];
  short?: string;
  kind: ValueKind | 'boolean';
  /** Key in Values (and, unless the method says otherwise, in params). */
  dest: string;
  help: string;
}

/** Parsed positionals and flags by dest; booleans are false when absent, others undefined. */
export type Values = Record<string, string | number | boolean | undefined>;

/**
 * How rpc.py prints the result: `json` = print_dict (JSON, indent 2),
 * `string` = print_json (JSON, indent 2, a string without its quotes),
 * `none` = nothing.
 */
export type OutputMode = 'json' | 'string' | 'none';

interface CommandSpec {
  help: string;
  positionals: Positional[];
  flags: Flag[];
  /** params from values; default: every value that is not undefined, under its dest name. */
  params?: (v: Values) => Record<string, unknown>;
  output: OutputMode;
}

export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/** total_size (MiB) and block_size → num_blocks, as rpc.py computes it. */
function numBlocksFromMiB(v: Values): number {
  const total = v.total_size as number;
  const blockSize = v.block_size as number;
  if (blockSize <= 0) throw new Error('block_size must be > 0');
  return Math.floor((total * 1024 * 1024) / blockSize);
}

/** Copy the values that are set, leaving out `omit`. */
function defined(v: Values, omit: string[] = []): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (x !== undefined && !omit.includes(k)) out[k] = x;
  return out;
}

export const COMMANDS: Record<string, CommandSpec> = {
  spdk_get_version: {
    help: 'Get the version of the running target',
    positionals: [],
    flags: [],
    output: 'string',
  },
  rpc_get_methods: {
    help: 'Get the list of supported RPC methods',
    positionals: [],
    flags: [
      { long: ['current'], short: 'c', kind: 'boolean', dest: 'current', help: 'Only methods callable in the current state' },
      { long: ['include-aliases', 'include_aliases'], short: 'i', kind: 'boolean', dest: 'include_aliases', help: 'Include deprecated aliases' },
    ],
    output: 'json',
  },
  framework_get_reactors: {
    help: 'Display the list of all reactors',
    positionals: [],
    flags: [],
    output: 'json',
  },
  bdev_malloc_create: {
    help: 'Create a bdev with malloc backend',
    positionals: [
      { name: 'total_size', kind: 'float', help: 'Size of the malloc bdev in MiB (float > 0)' },
      { name: 'block_size', kind: 'int', help: 'Data block size for this bdev' },
    ],
    flags: [
      { long: ['name'], short: 'b', kind: 'string', dest: 'name', help: 'Name of the bdev' },
      { long: ['uuid'], short: 'u', kind: 'string', dest: 'uuid', help: 'UUID of the bdev (optional)' },
    ],
    params: (v) => ({ num_blocks: numBlocksFromMiB(v), ...defined(v, ['total_size']) }),
    output: 'string',
  },
  bdev_malloc_delete: {
    help: 'Delete a malloc bdev',
    positionals: [{ name: 'name', kind: 'string', help: 'malloc bdev name' }],
    flags: [],
    output: 'none',
  },
  bdev_null_create: {
    help: 'Create a bdev with null backend',
    positionals: [
      { name: 'name', kind: 'string', help: 'Block device name' },
      { name: 'total_size', kind: 'int', help: 'Size of the null bdev in MiB (int > 0)' },
      { name: 'block_size', kind: 'int', help: 'Data block size for this bdev' },
    ],
    flags: [{ long: ['uuid'], short: 'u', kind: 'string', dest: 'uuid', help: 'UUID of the bdev (optional)' }],
    params: (v) => ({ num_blocks: numBlocksFromMiB(v), ...defined(v, ['total_size']) }),
    output: 'string',
  },
  bdev_null_delete: {
    help: 'Delete a null bdev',
    positionals: [{ name: 'name', kind: 'string', help: 'null bdev name' }],
    flags: [],
    output: 'none',
  },
  bdev_get_bdevs: {
    help: 'Display the list of bdevs or the one named',
    positionals: [],
    flags: [
      { long: ['name'], short: 'b', kind: 'string', dest: 'name', help: 'Name of the bdev' },
      {
        long: ['timeout-ms', 'timeout_ms'],
        short: 't',
        kind: 'int',
        dest: 'timeout',
        help: 'Time in ms to wait for the named bdev to appear (default 0: do not wait)',
      },
    ],
    output: 'json',
  },
  vhost_create_blk_controller: {
    help: 'Add a new vhost block controller',
    positionals: [
      { name: 'ctrlr', kind: 'string', help: 'Name of the vhost controller' },
      { name: 'dev_name', kind: 'string', help: 'Name of the bdev to expose as the block device' },
    ],
    flags: [
      { long: ['cpumask'], kind: 'string', dest: 'cpumask', help: "CPU mask for the controller's threads" },
      { long: ['transport'], kind: 'string', dest: 'transport', help: 'virtio-blk transport name (default: vhost_user_blk)' },
      { long: ['readonly'], short: 'r', kind: 'boolean', dest: 'readonly', help: 'Expose the block device as read-only' },
      { long: ['packed-ring', 'packed_ring'], short: 'p', kind: 'boolean', dest: 'packed_ring', help: 'Offer packed virtqueues' },
      {
        long: ['packed-ring-recovery', 'packed_ring_recovery'],
        kind: 'boolean',
        dest: 'packed_ring_recovery',
        help: 'Enable packed ring live recovery (sent only when given)',
      },
    ],
    // rpc.py sends readonly and packed_ring always (store_true); packed_ring_recovery is an older release's flag.
    params: (v) => defined(v, v.packed_ring_recovery === true ? [] : ['packed_ring_recovery']),
    output: 'none',
  },
  vhost_get_controllers: {
    help: 'List all or one vhost controller',
    positionals: [],
    flags: [{ long: ['name'], short: 'n', kind: 'string', dest: 'name', help: 'Name of the controller to show' }],
    output: 'json',
  },
  vhost_delete_controller: {
    help: 'Delete a vhost controller',
    positionals: [{ name: 'ctrlr', kind: 'string', help: 'Name of the vhost controller' }],
    flags: [],
    output: 'none',
  },
};

/** What the command line asks for. */
export type Command =
  | { kind: 'help'; text: string }
  | { kind: 'call'; socket: string; timeoutMs: number; method: string; params: Record<string, unknown> | undefined; output: OutputMode };

const GLOBAL_USAGE = 'usage: vhostd-rpc [-h] [-s SOCK] [-t TIMEOUT] METHOD [args...]';

export function globalHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((m) => m.length));
  const lines = [
    GLOBAL_USAGE,
    '',
    'vhostd JSON-RPC command line (the syntax of SPDK scripts/rpc.py)',
    '',
    'options:',
    '  -h, --help   show this help (METHOD --help: help of one method)',
    `  -s SOCK      RPC Unix socket path (default ${DEFAULT_SOCKET})`,
    `  -t TIMEOUT   seconds to wait for the reply (float, default ${DEFAULT_TIMEOUT_S})`,
    '',
    'methods:',
    ...Object.entries(COMMANDS).map(([m, c]) => `  ${m.padEnd(width)}  ${c.help}`),
  ];
  return lines.join('\n') + '\n';
}

function flagUsage(f: Flag): string {
  const name = f.short ? `-${f.short}` : `--${f.long[0]}`;
  return f.kind === 'boolean' ? `[${name}]` : `[${name} ${f.dest.toUpperCase()}]`;
}

export function methodUsage(method: string): string {
  const c = COMMANDS[method];
  return `usage: vhostd-rpc [-s SOCK] [-t TIMEOUT] ${method} ${[...c.flags.map(flagUsage), ...c.positionals.map((p) => p.name)].join(' ')}`.trimEnd();
}

export function methodHelp(method: string): string {
  const c = COMMANDS[method];
  const lines = [methodUsage(method), '', c.help];
  if (c.positionals.length > 0) {
    lines.push('', 'positional arguments:');
    for (const p of c.positionals) lines.push(`  ${p.name.padEnd(24)}${p.help}`);
  }
  lines.push('', 'options:', `  ${'-h, --help'.padEnd(24)}show this help`);
  for (const f of c.flags) {
    const names = [...(f.short ? [`-${f.short}`] : []), ...f.long.map((l) => `--${l}`)].join(', ');
    const shown = f.kind === 'boolean' ? names : `${names} ${f.dest.toUpperCase()}`;
    lines.push(`  ${shown.padEnd(24)}${f.help}`);
  }
  return lines.join('\n') + '\n';
}

/** Python's int() and float() on a command-line word, as argparse's type= does. */
function convert(kind: ValueKind, name: string, raw: string): string | number {
  if (kind === 'string') return raw;
  const text = raw.trim().replace(/(\d)_(?=\d)/g, '$1');
  if (kind === 'int') {
    if (!/^[+-]?\d+$/.test(text)) throw new Error(`argument ${name}: invalid int value: '${raw}'`);
    const n = Number(text);
    if (!Number.isSafeInteger(n)) throw new Error(`argument ${name}: int value out of range: '${raw}'`);
    return n;
  }
  const n = text === '' ? NaN : Number(text);
  if (!Number.isFinite(n)) throw new Error(`argument ${name}: invalid float value: '${raw}'`);
  return n;
}

type ParseArgsOptions = Record<string, { type: 'string' | 'boolean'; short?: string }>;

/** Parse one method's arguments (everything after METHOD) into its params. */
export function parseMethodArgs(method: string, args: string[]): { help: true } | { help: false; params: Record<string, unknown> | undefined } {
  const spec = COMMANDS[method];
  const usage = methodUsage(method);
  const options: ParseArgsOptions = { help: { type: 'boolean', short: 'h' } };
  for (const f of spec.flags) {
    f.long.forEach((l, i) => {
      options[l] = { type: f.kind === 'boolean' ? 'boolean' : 'string', ...(i === 0 && f.short ? { short: f.short } : {}) };
    });
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err), usage);
  }
  if (parsed.values.help === true) return { help: true };
  const values: Values = {};
  try {
    const pos = parsed.positionals;
    if (pos.length < spec.positionals.length) {
      const missing = spec.positionals.slice(pos.length).map((p) => p.name);
      throw new Error(`the following arguments are required: ${missing.join(', ')}`);
    }
    if (pos.length > spec.positionals.length) {
      throw new Error(`unrecognized arguments: ${pos.slice(spec.positionals.length).join(' ')}`);
    }
    spec.positionals.forEach((p, i) => {
      values[p.name] = convert(p.kind, p.name, pos[i]);
    });
    for (const f of spec.flags) {
      // The last spelling given wins, like argparse with a repeated option.
      let raw: string | boolean | undefined;
      for (const l of f.long) {
        const v = parsed.values[l];
        if (typeof v === 'string' || typeof v === 'boolean') raw = v;
      }
      if (f.kind === 'boolean') values[f.dest] = raw === true;
      else values[f.dest] = raw === undefined ? undefined : convert(f.kind, `--${f.long[0]}`, String(raw));
    }
    const params = spec.params ? spec.params(values) : defined(values);
    // Like rpc.py's client: an empty params object is not sent.
    return { help: false, params: Object.keys(params).length > 0 ? params : undefined };
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(err instanceof Error ? err.message : String(err), usage);
  }
}

/** The whole command line (process.argv.slice(2)) → what to do. Throws UsageError. */
export function parseCommandLine(argv: string[]): Command {
  const globalOptions: ParseArgsOptions = {
    help: { type: 'boolean', short: 'h' },
    socket: { type: 'string', short: 's' },
    timeout: { type: 'string', short: 't' },
  };
  // The method is the first positional; options before it are global, after it the method's.
  const { tokens } = parseArgs({ args: argv, options: globalOptions, allowPositionals: true, strict: false, tokens: true });
  const first = tokens.find((t) => t.kind === 'positional' || t.kind === 'option-terminator');
  const methodIndex = first && first.kind === 'positional' ? first.index : -1;
  const globalArgs = methodIndex < 0 ? argv : argv.slice(0, methodIndex);
  let g: ReturnType<typeof parseArgs>;
  try {
    g = parseArgs({ args: globalArgs, options: globalOptions, strict: true, allowPositionals: false });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err), GLOBAL_USAGE);
  }
  if (g.values.help === true) return { kind: 'help', text: globalHelp() };
  if (methodIndex < 0) throw new UsageError('a METHOD is required', GLOBAL_USAGE);
  const method = argv[methodIndex];
  if (!Object.prototype.hasOwnProperty.call(COMMANDS, method)) {
    throw new UsageError(`unknown method '${method}' (vhostd-rpc --help lists them)`, GLOBAL_USAGE);
  }
  let timeoutS = DEFAULT_TIMEOUT_S;
  if (typeof g.values.timeout === 'string') {
    const t = Number(g.values.timeout);
    if (g.values.timeout.trim() === '' || !Number.isFinite(t) || t <= 0) {
      throw new UsageError(`argument -t: invalid timeout: '${g.values.timeout}'`, GLOBAL_USAGE);
    }
    timeoutS = t;
  }
  const parsed = parseMethodArgs(method, argv.slice(methodIndex + 1));
  if (parsed.help) return { kind: 'help', text: methodHelp(method) };
  return {
    kind: 'call',
    socket: typeof g.values.socket === 'string' ? g.values.socket : DEFAULT_SOCKET,
    timeoutMs: Math.ceil(timeoutS * 1000),
    method,
    params: parsed.params,
    output: COMMANDS[method].output,
  };
}

/** Format a result the way rpc.py prints it (without the trailing newline); null = print nothing. */
export function formatResult(result: unknown, mode: OutputMode): string | null {
  if (mode === 'none') return null;
  const text = JSON.stringify(result, null, 2) ?? 'null';
  // print_json: json.dumps(s, indent=2).strip('"')
  return mode === 'string' ? text.replace(/^"+|"+$/g, '') : text;
}
