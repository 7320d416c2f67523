/**
 * The piscina task module of an engine worker: one never-ending task per
 * core. It pins its thread to init.core, then runs the poll loop until the
 * reactor sends `exit`, turning the thread's event loop once between slices
 * of it. Thread: that worker.
 *
 * Export: TypeScript emits `exports.default` with `__esModule` set; piscina 4
 * loads a task file with `require()`, and when the module is not itself a
 * function it takes the export named by the `name` option, 'default' unless
 * told otherwise. So the pool needs no `name`; `module.exports = fn` is not
 * required.
 */
import { native } from '../bindings';
import { WorkerBdevLayer } from './bdev/layer';
import type { WorkerInit } from './control';
import { WorkerStat } from './control';
import { logger, setLogControl, setLogCore, setLogPort } from './log';
import { Poller } from './poller';

export default async function engineWorker(init: WorkerInit): Promise<void> {
  setLogCore(init.core);
  if (init.logControl) setLogControl(init.logControl);
  setLogPort(init.port);
  new Float64Array(init.stats)[WorkerStat.Tid] = native.threadId();
  native.pinThread(init.core);
  logger.info('engine worker running', { core: init.core, cpu: native.currentCpu(), mode: init.pollMode });
  // One bdev layer per worker: every device placed here shares its handles and channels.
  const poller = new Poller(init, native, new WorkerBdevLayer());
  // Between slices this thread's event loop turns once: node runs the native
  // finalizers and V8 tasks it queued there (see Poller.runSlice).
  while (poller.runSlice()) await new Promise<void>((resolve) => setImmediate(resolve));
  logger.info('engine worker exiting', { core: init.core });
}
