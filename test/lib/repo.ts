/**
 * Locates the repository root from test code, whether it runs from test/ (ts)
 * or from dist/test/ (compiled). Main-thread test helper.
 */
import fs from 'node:fs';
import path from 'node:path';

let cached: string | undefined;

/** The directory holding vhostd's package.json. */
export function repoRoot(): string {
  if (cached !== undefined) return cached;
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      const parsed: unknown = JSON.parse(fs.readFileSync(pkg, 'utf8'));
      if (typeof parsed === 'object' && parsed !== null && (parsed as { name?: unknown }).name === 'vhostd') {
        cached = dir;
        return dir;
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`repository root not found above ${__dirname}`);
    dir = parent;
  }
}
