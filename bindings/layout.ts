/**
 * Layout constants shared across the C++/TypeScript boundary: the shapes of
 * the typed arrays the addon reads and fills, its slot counts and limits, the
 * FileOp codes and the uv_poll event bits. The addon exports the values it
 * was compiled with (`native.layout`, bindings/src/layout.h); the loader
 * (bindings/index.ts) compares them with these at load and refuses to run on
 * a mismatch, naming each constant, so a stale or foreign build fails loudly
 * instead of corrupting rings.
 *
 * TypeScript code that sizes or indexes these arrays imports the values from
 * here (through bindings/index.ts), never repeats the numbers.
 */
import { FileOp } from './native';

export const Layout = {
  /** Numbers of one FileRing request row: [op, fileSlot, offsetBytes, a, b, tag]. */
  FILE_REQ_WORDS: 6,
  /** Numbers of one iov: [bufferSlot, offsetInBuffer, length]. */
  FILE_IOV_WORDS: 3,
  /** Numbers of one completion reap() writes: [tag, res]. */
  FILE_COMPLETION_WORDS: 2,
  /** Buffer slots of a FileRing (setBuffer). */
  FILE_BUFFER_SLOTS: 64,
  /** File slots of a FileRing (setFile). */
  FILE_SLOTS: 64,
  /** The most iovs one request may carry (Linux IOV_MAX). */
  FILE_MAX_IOV_PER_REQ: 1024,
  FILE_OP_READV: FileOp.Readv,
  FILE_OP_WRITEV: FileOp.Writev,
  FILE_OP_DATASYNC: FileOp.Datasync,
  FILE_OP_FALLOCATE: FileOp.Fallocate,
  FILE_OP_BLK_DISCARD: FileOp.BlkDiscard,
  FILE_OP_BLK_ZEROOUT: FileOp.BlkZeroout,
  FILE_OP_PUNCH_ALLOC: FileOp.PunchAlloc,
  /** Number of FileOp codes: any op >= this completes with -EINVAL. */
  FILE_OP_COUNT: 7,
  /** The most fds recvMsg() accepts and sendMsg() sends with one message (fdsOut must hold this many). */
  MAX_FDS: 8,
  /** CPU ids the affinity calls accept are below this. */
  MAX_CPUS: 8192,
  /** FdWatcher event bits (libuv's UV_READABLE, UV_WRITABLE, UV_DISCONNECT). */
  POLL_READABLE: 1,
  POLL_WRITABLE: 2,
  POLL_DISCONNECT: 4,
} as const;

export type LayoutName = keyof typeof Layout;

/** Thrown when the addon's layout differs from this one; `mismatches` names each constant. */
export class LayoutError extends Error {
  readonly code = 'ERR_NATIVE_LAYOUT';
  constructor(
    readonly file: string,
    readonly mismatches: string[],
  ) {
    super(
      `vhostd: the native addon ${file} does not match this vhostd's TypeScript layout ` +
        `(${mismatches.join('; ')}); rebuild it (npx node-gyp rebuild) or reinstall vhostd`,
    );
    this.name = 'LayoutError';
  }
}

/**
 * Compares the addon's exported `layout` with Layout: every constant must be
 * present with the same value (extra ones in the addon are allowed). Returns
 * the mismatches as "NAME: addon X, vhostd Y"; empty when they agree.
 */
export function layoutMismatches(addonLayout: unknown): string[] {
  if (addonLayout === null || typeof addonLayout !== 'object') {
    return ['the addon exports no layout (built from older sources?)'];
  }
  const got = addonLayout as Record<string, unknown>;
  const out: string[] = [];
  for (const name of Object.keys(Layout) as LayoutName[]) {
    const want = Layout[name];
    const have = got[name];
    if (have !== want) out.push(`${name}: addon ${have === undefined ? 'missing' : String(have)}, vhostd ${want}`);
  }
  return out;
}

/** Throws a LayoutError naming every constant that differs. */
export function checkLayout(addonLayout: unknown, file: string): void {
  const mismatches = layoutMismatches(addonLayout);
  if (mismatches.length > 0) throw new LayoutError(file, mismatches);
}
