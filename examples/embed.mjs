#!/usr/bin/env node
/**
 * Embedding vhostd: start a target in this process, create a 64 MiB RAM
 * disk and a vhost-user-blk controller on it, print the socket a VM would
 * attach to, then stop.
 *
 *   node examples/embed.mjs [socket-dir]        (default: a new temporary directory)
 *
 * Attach QEMU to the printed socket with
 *   -chardev socket,id=c0,path=<socket> -device vhost-user-blk-pci,chardev=c0
 * (guest memory must be shared: -object memory-backend-memfd,...,share=on).
 * Set EMBED_SERVE=1 to keep serving until Ctrl-C instead of stopping at once.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Vhostd } from 'vhostd';

const socketDir = process.argv[2] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-embed-'));

const vhostd = await Vhostd.start({
  socketDir,
  cpumask: '0x1',
  pollMode: 'interrupt', // sleep when idle: an example should not spin a core
  // Every reactor log record comes here instead of stderr.
  logger: (r) => console.error(`[vhostd ${r.level}] ${r.component}: ${r.message}`, Object.keys(r.fields).length > 0 ? JSON.stringify(r.fields) : ''),
});
vhostd.on('connect', (e) => console.log(`front-end connected to ${e.ctrlr}`));
vhostd.on('disconnect', (e) => console.log(`front-end left ${e.ctrlr}`));
vhostd.on('deviceFailed', (e) => console.log(`device of ${e.ctrlr} failed: ${e.reason}`));

const bdev = await vhostd.createMallocBdev({ name: 'Malloc0', numBlocks: 131072, blockSize: 512 });
const socket = await vhostd.createBlkController({ name: 'vhost.0', bdev });
const [info] = await vhostd.getControllers('vhost.0');
console.log(`bdev ${bdev}: controller ${info.ctrlr} on cpumask ${info.cpumask}`);
console.log(`socket: ${socket}`);

const stop = async () => {
  await vhostd.stop();
  console.log('stopped');
};
if (process.env.EMBED_SERVE === '1') {
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  await stop();
}
