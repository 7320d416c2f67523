/**
 * A diagnostic the fuzz runner loads into its vhostd (node --require through
 * NODE_OPTIONS; vhostd's code is unchanged): on request, every isolate of
 * the process — the main thread and each engine worker — runs a full garbage
 * collection and reports the V8 heap it still uses, so the runner can tell
 * objects that stay alive (a leak: Maps not pruned, queued completions, queue
 * state, regions) from what RSS also counts and V8 legitimately grows to a
 * plateau (new-space semispaces expanding up to --max-semi-space-size, old
 * space committed but free, malloc arenas).
 *
 * Protocol, through files in the directory named by VHOSTD_HEAP_PROBE_DIR:
 * the runner writes a sequence number to `request`; each isolate polls it
 * every 100 ms (an unref'd timer, so it never keeps a thread alive) and, on a
 * new number, collects and appends one JSON line to `heap.jsonl`:
 * { seq, tid, usedKiB, totalKiB, externalKiB }. A process that does not run
 * vhostd (the runner itself, which inherits nothing: the runner sets the
 * variable for its child only) never starts the timer.
 * Thread: each thread of the vhostd process it is loaded into.
 */
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { threadId } from 'node:worker_threads';

const dir = process.env.VHOSTD_HEAP_PROBE_DIR;
if (dir) {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const request = path.join(dir, 'request');
  const out = path.join(dir, 'heap.jsonl');
  let seen = -1;
  const poll = (): void => {
    let seq: number;
    try {
      seq = Number(fs.readFileSync(request, 'utf8'));
    } catch {
      return;
    }
    if (!Number.isInteger(seq) || seq === seen) return;
    seen = seq;
    gc();
    const h = v8.getHeapStatistics();
    const line = { seq, tid: threadId, usedKiB: Math.round(h.used_heap_size / 1024), totalKiB: Math.round(h.total_heap_size / 1024), externalKiB: Math.round(h.external_memory / 1024) };
    fs.appendFileSync(out, JSON.stringify(line) + '\n');
  };
  setInterval(poll, 100).unref();
}
