/**
 * Loads the native addon vhostd_native (build/ or prebuilds/, through
 * node-gyp-build), checks that it was compiled with the layout constants this
 * TypeScript expects (bindings/layout.ts) and gives it its types. This is the
 * only place where the addon is untyped.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkLayout, Layout } from './layout';
import type { Native } from './native';

export type { Native, NativeError, FdWatcher } from './native';
export { Layout, LayoutError, checkLayout, layoutMismatches } from './layout';

/** Readiness bits for FdWatcher.start() and its callback (UV_READABLE, UV_WRITABLE, UV_DISCONNECT). */
export const PollEvents = {
  Readable: Layout.POLL_READABLE,
  Writable: Layout.POLL_WRITABLE,
  Disconnect: Layout.POLL_DISCONNECT,
} as const;

/** The addon could not be found or loaded; the message says how to get one. */
export class AddonLoadError extends Error {
  readonly code = 'ERR_NATIVE_ADDON';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AddonLoadError';
  }
}

/** The directory holding binding.gyp: from dist/bindings/ it is two levels up. */
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    if (fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    dir = path.dirname(dir);
  }
  throw new AddonLoadError('vhostd: cannot find the package root (binding.gyp) above ' + __dirname);
}

/**
 * The addon's file: a local build (build/Release, then build/Debug) by name,
 * else the prebuild node-gyp-build picks from prebuilds/<platform>-<arch>/
 * (vhostd_native.napi.node; bench's addon has its own directory,
 * bench/native/, so nothing else lies there).
 */
export function addonPath(root: string = packageRoot()): string {
  for (const type of ['Release', 'Debug']) {
    const file = path.join(root, 'build', type, 'vhostd_native.node');
    if (fs.existsSync(file)) return file;
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('node-gyp-build') as { resolve(dir: string): string }).resolve(root);
  } catch (err) {
    throw new AddonLoadError(
      `vhostd: no native addon: ${path.join(root, 'build', 'Release', 'vhostd_native.node')} does not exist ` +
        `and no prebuild in ${path.join(root, 'prebuilds')} fits ${process.platform}-${process.arch}. ` +
        `Build it from source (needs g++, make, python3): cd ${root} && npx node-gyp rebuild`,
      { cause: err },
    );
  }
}

function loadAddon(): Native {
  const file = addonPath();
  let addon: { layout?: unknown };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    addon = require(file) as { layout?: unknown };
  } catch (err) {
    throw new AddonLoadError(`vhostd: cannot load the native addon ${file}: ${(err as Error).message}`, { cause: err });
  }
  checkLayout(addon.layout, file);
  return addon as unknown as Native;
}

export const native = loadAddon();
