/**
 * Loads the native addon (prebuilds/ or build/, through node-gyp-build) and
 * gives it its types. This is the only place where the addon is untyped.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Native } from './native';

export type { Native, NativeError, FdWatcher } from './native';

/** Readiness bits for FdWatcher.start() and its callback (UV_READABLE, UV_WRITABLE, UV_DISCONNECT). */
export const PollEvents = { Readable: 1, Writable: 2, Disconnect: 4 } as const;

/** The directory holding binding.gyp: from dist/bindings/ it is two levels up. */
function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    if (fs.existsSync(path.join(dir, 'binding.gyp'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error('vhostd: cannot find the package root (binding.gyp) above ' + __dirname);
}

/**
 * binding.gyp builds two addons (this one and bench's vhostd_perf), and
 * node-gyp-build takes whichever .node file build/Release lists first; so a
 * local build is loaded by name, and node-gyp-build is left the prebuilds.
 */
function loadAddon(): unknown {
  const root = packageRoot();
  for (const type of ['Release', 'Debug']) {
    const file = path.join(root, 'build', type, 'vhostd_native.node');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    if (fs.existsSync(file)) return require(file);
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('node-gyp-build') as (dir: string) => unknown)(root);
}

export const native = loadAddon() as Native;
