/**
 * No tracked file carries a merge's conflict markers: a `<<<<<<< ` or
 * `>>>>>>> ` line (ARCHITECTURE.md once shipped one from a merge of two
 * branches that both edited its layout block).
 * Runs on the tap main thread; reads the files `git ls-files` lists.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../lib/repo';

t.test('no conflict markers in tracked files', async (t) => {
  const root = repoRoot();
  const files = execFileSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8' }).split('\0').filter((f) => f !== '');
  t.ok(files.length > 100, `${files.length} tracked files`);
  const found: string[] = [];
  for (const f of files) {
    const p = path.join(root, f);
    let text: string;
    try {
      if (!fs.statSync(p).isFile()) continue;
      text = fs.readFileSync(p, 'utf8');
    } catch {
      continue; // deleted in the work tree
    }
    text.split('\n').forEach((line, i) => {
      if (/^(<{7}|>{7}) /.test(line)) found.push(`${f}:${i + 1}: ${line}`);
    });
  }
  t.same(found, [], 'no <<<<<<< / >>>>>>> lines');
});
