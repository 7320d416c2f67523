/**
 * Unit tests of the native addon (bindings/src/*.cc) through bindings/index.ts:
 * fd passing, FdWatcher (main thread and worker threads), mmap/munmap,
 * eventfd/poll, thread placement, unix sockets and errno errors.
 * Runs on the tap main thread; worker cases use eval'd worker_threads code.
 */
import t from 'tap';
import { AsyncLocalStorage, executionAsyncResource } from 'node:async_hooks';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { Worker } from 'node:worker_threads';
import { native, PollEvents } from '../../bindings';

const bindingsPath = path.resolve(__dirname, '../../bindings/index.js');

function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

function isCloexec(fd: number): boolean {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const m = /^flags:\s*([0-7]+)$/m.exec(info);
  if (m === null) throw new Error(`no flags in fdinfo of ${fd}`);
  return (parseInt(m[1], 8) & 0o2000000) !== 0;
}

function isNonblocking(fd: number): boolean {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const m = /^flags:\s*([0-7]+)$/m.exec(info);
  if (m === null) throw new Error(`no flags in fdinfo of ${fd}`);
  return (parseInt(m[1], 8) & 0o4000) !== 0;
}

/** A memfd of `sizeBytes` whose first byte is `tag`. */
function taggedMemfd(tag: number, sizeBytes = 4096): number {
  const fd = native.memfdCreate(`tag${tag}`, 0);
  native.ftruncate(fd, sizeBytes);
  if (native.write(fd, Uint8Array.of(tag)) !== 1) throw new Error('short write to memfd');
  return fd;
}

/** Reads the first byte of a memfd through a fresh mapping. */
function firstByte(fd: number): number {
  const ab = native.mmap(fd, 0, 1, false);
  const v = new Uint8Array(ab)[0];
  native.munmap(ab);
  return v;
}

/** Runs `code` (CommonJS, `native` and `parentPort` in scope) in a worker; resolves with its messages and exit code. */
function runWorker(code: string, onMessage?: (msg: unknown, worker: Worker) => void): Promise<{ messages: unknown[]; exitCode: number; error?: Error }> {
  const source =
    `const { native, PollEvents } = require(${JSON.stringify(bindingsPath)});\n` +
    `const { parentPort } = require('node:worker_threads');\n` +
    code;
  return new Promise((resolve) => {
    const worker = new Worker(source, { eval: true });
    const messages: unknown[] = [];
    let error: Error | undefined;
    worker.on('message', (msg: unknown) => {
      messages.push(msg);
      onMessage?.(msg, worker);
    });
    worker.on('error', (err: Error) => {
      error = err;
    });
    worker.on('exit', (exitCode) => resolve({ messages, exitCode, error }));
  });
}

t.test('sendMsg/recvMsg carry one fd', async (t) => {
  const [a, b] = native.socketPair();
  t.ok(isNonblocking(a) && isNonblocking(b), 'both ends nonblocking');
  t.ok(isCloexec(a) && isCloexec(b), 'both ends cloexec');
  const memfd = taggedMemfd(0x5a);
  t.equal(native.sendMsg(a, Uint8Array.of(1, 2, 3), [memfd]), 3);
  const buf = new Uint8Array(64);
  const fds = new Int32Array(8).fill(12345);
  t.equal(native.recvMsg(b, buf, fds), 3);
  t.same(Array.from(buf.subarray(0, 3)), [1, 2, 3]);
  t.ok(fds[0] >= 0 && fds[0] !== memfd, 'a new fd arrived');
  t.same(Array.from(fds.subarray(1)), [-1, -1, -1, -1, -1, -1, -1], 'rest of fdsOut is -1');
  t.ok(isCloexec(fds[0]), 'received fd is cloexec (MSG_CMSG_CLOEXEC)');
  t.equal(firstByte(fds[0]), 0x5a, 'received fd is the same file');
  t.equal(native.fstat(fds[0]).type, 'file');
  for (const fd of [fds[0], memfd, a, b]) native.close(fd);
});

t.test('sendMsg/recvMsg carry 8 fds, and buffers with a byte offset', async (t) => {
  const [a, b] = native.socketPair();
  const sent = Array.from({ length: 8 }, (_, i) => taggedMemfd(i + 1));
  const payload = new Uint8Array(32);
  payload.set([9, 8, 7], 10);
  t.equal(native.sendMsg(a, payload.subarray(10, 13), sent), 3);
  const backing = new Uint8Array(64);
  const view = backing.subarray(5, 37);
  const fds = new Int32Array(10).fill(7777);
  t.equal(native.recvMsg(b, view, fds), 3);
  t.same(Array.from(backing.subarray(5, 8)), [9, 8, 7], 'data lands at the view offset');
  t.same(Array.from(fds.subarray(0, 8)).map(firstByte), [1, 2, 3, 4, 5, 6, 7, 8], 'fds arrive in order');
  t.same(Array.from(fds.subarray(8)), [-1, -1], 'fdsOut past 8 is -1');
  for (const fd of [...fds.subarray(0, 8), ...sent, a, b]) native.close(fd);
});

t.test('recvMsg rejects 9 fds (MSG_CTRUNC) and leaks none', async (t) => {
  const [a, b] = native.socketPair();
  const before = openFdCount();
  // sendMsg refuses more than 8 fds, so a python child sends 9 through our socket (its fd 3).
  const script =
    'import os, socket\n' +
    's = socket.socket(fileno=3)\n' +
    "fds = [os.memfd_create('n%d' % i) for i in range(9)]\n" +
    "socket.send_fds(s, [b'hello'], fds)\n";
  const exitCode = await new Promise<number | null>((resolve, reject) => {
    const child = spawn('python3', ['-c', script], { stdio: ['ignore', 'inherit', 'inherit', a] });
    child.on('error', reject);
    child.on('exit', (code) => resolve(code));
  }).catch((err: Error) => err);
  if (exitCode instanceof Error) {
    t.fail(`python3 is needed to send 9 fds (sendMsg refuses to): ${exitCode.message}`);
  } else {
    t.equal(exitCode, 0, 'python sender succeeded');
    const fds = new Int32Array(8);
    t.throws(() => native.recvMsg(b, new Uint8Array(16), fds), { code: 'EMSGSIZE', errno: 90, syscall: 'recvmsg' });
    t.equal(openFdCount(), before, 'no fd leaked');
    t.same(Array.from(fds), [-1, -1, -1, -1, -1, -1, -1, -1], 'fdsOut untouched by the rejected fds');
  }
  native.close(a);
  native.close(b);
});

t.test('recvMsg: would block, EOF, argument checks', async (t) => {
  const [a, b] = native.socketPair();
  const fds = new Int32Array(8).fill(3);
  t.equal(native.recvMsg(b, new Uint8Array(8), fds), -1, 'EAGAIN is -1');
  t.same(Array.from(fds), new Array(8).fill(-1), 'fdsOut cleared on EAGAIN');
  t.throws(() => native.recvMsg(b, new Uint8Array(8), new Int32Array(4)), TypeError, 'fdsOut too short');
  t.throws(() => native.recvMsg(b, new Uint16Array(8) as unknown as Uint8Array, fds), TypeError);
  t.throws(() => native.recvMsg('3' as unknown as number, new Uint8Array(8), fds), TypeError);
  t.throws(() => native.sendMsg(a, new Uint8Array(1), [1, 2, 3, 4, 5, 6, 7, 8, 9]), TypeError, 'at most 8 fds');
  t.throws(() => native.sendMsg(a, new Uint8Array(1), [-2]), TypeError);
  t.throws(() => native.sendMsg(a, new Uint8Array(1), ['x'] as unknown as number[]), TypeError);
  t.equal(native.sendMsg(a, Uint8Array.of(42), null), 1);
  t.equal(native.sendMsg(a, Uint8Array.of(43)), 1);
  const buf = new Uint8Array(8);
  t.equal(native.recvMsg(b, buf, fds), 2);
  t.same(Array.from(buf.subarray(0, 2)), [42, 43]);
  native.close(a);
  t.equal(native.recvMsg(b, buf, fds), 0, 'EOF is 0');
  t.throws(() => native.sendMsg(b, Uint8Array.of(1)), { code: 'EPIPE', syscall: 'sendmsg' }, 'no SIGPIPE: EPIPE');
  native.close(b);
});

t.test('read/write/dup/fstat', async (t) => {
  const [a, b] = native.socketPair();
  t.equal(native.read(b, new Uint8Array(4)), -1);
  t.equal(native.write(a, Uint8Array.of(1, 2)), 2);
  const d = native.dup(b);
  t.not(d, b);
  t.ok(isCloexec(d), 'dup is cloexec');
  const buf = new Uint8Array(4);
  t.equal(native.read(d, buf), 2);
  t.same(Array.from(buf.subarray(0, 2)), [1, 2]);
  t.equal(native.fstat(a).type, 'socket');
  const m = native.memfdCreate('stat', 0);
  native.ftruncate(m, 12345);
  t.match(native.fstat(m), { sizeBytes: 12345, type: 'file', blockSize: Number });
  t.throws(() => native.ftruncate(m, -1), TypeError);
  t.throws(() => native.ftruncate(m, 1.5), TypeError);
  t.throws(() => native.ftruncate(m, 2 ** 54), TypeError);
  native.close(a);
  t.equal(native.read(d, buf), 0, 'EOF');
  for (const fd of [b, d, m]) native.close(fd);
});

t.test('errors carry code, errno and syscall', async (t) => {
  t.throws(() => native.close(-5), { code: 'EBADF', errno: 9, syscall: 'close' });
  const m = native.memfdCreate('closed', 0);
  native.close(m);
  const err = (() => {
    try {
      native.close(m);
    } catch (e) {
      return e;
    }
    return null;
  })();
  t.ok(err instanceof Error, 'an Error');
  t.match(err, { code: 'EBADF', errno: 9, syscall: 'close' });
  t.doesNotThrow(() => native.close(-1), 'closing -1 is a no-op');
  t.throws(() => native.fstat(m), { code: 'EBADF', syscall: 'fstat' });
  t.throws(() => native.close(undefined as unknown as number), TypeError);
});

t.test('unixListen/unixAccept/unixConnect', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-bindings-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sockPath = path.join(dir, 'vhost.sock');
  const listenFd = native.unixListen(sockPath, 4, 0o600);
  t.equal(fs.statSync(sockPath).mode & 0o777, 0o600, 'chmod applied');
  t.ok(fs.statSync(sockPath).isSocket());
  t.ok(isNonblocking(listenFd) && isCloexec(listenFd));
  t.equal(native.unixAccept(listenFd), -1, 'nothing pending');
  const client = native.unixConnect(sockPath);
  t.ok(isNonblocking(client) && isCloexec(client), 'client nonblocking + cloexec');
  const server = native.unixAccept(listenFd);
  t.ok(server >= 0);
  t.ok(isNonblocking(server) && isCloexec(server), 'accepted fd nonblocking + cloexec');
  t.equal(native.write(client, Uint8Array.of(5)), 1);
  const buf = new Uint8Array(1);
  t.equal(native.read(server, buf), 1);
  t.equal(buf[0], 5);
  t.throws(() => native.unixListen(sockPath, 4, 0o600), { code: 'EADDRINUSE', syscall: 'bind' }, 'no unlink');
  t.throws(() => native.unixListen(path.join(dir, 'x'.repeat(120)), 4, 0o600), { code: 'ENAMETOOLONG' });
  t.throws(() => native.unixConnect(path.join(dir, 'missing.sock')), { code: 'ENOENT', syscall: 'connect' });
  for (const fd of [client, server, listenFd]) native.close(fd);
});

t.test('FdWatcher fires on data through MakeCallback (async context, microtasks)', async (t) => {
  const [a, b] = native.socketPair();
  const order: string[] = [];
  const buf = new Uint8Array(16);
  const als = new AsyncLocalStorage<string>();
  await new Promise<void>((resolve) => {
    const watcher = als.run('context-of-creation', () => new native.FdWatcher(b, (status, events) => {
      t.equal(executionAsyncResource(), watcher, 'runs in the async context of the watcher');
      t.equal(als.getStore(), 'context-of-creation', 'AsyncLocalStorage propagates');
      t.equal(status, 0);
      t.ok(events & PollEvents.Readable, 'readable');
      t.equal(native.read(b, buf), 3);
      order.push('callback');
      void Promise.resolve().then(() => order.push('microtask'));
      setImmediate(() => {
        order.push('immediate');
        resolve();
      });
      watcher.close();
      watcher.close();
    }));
    watcher.start(PollEvents.Readable);
    native.write(a, Uint8Array.of(1, 2, 3));
  });
  t.same(order, ['callback', 'microtask', 'immediate']);
  native.close(a);
  native.close(b);
});

t.test('FdWatcher stop/start/close', async (t) => {
  const [a, b] = native.socketPair();
  let calls = 0;
  const watcher = new native.FdWatcher(b, () => {
    calls++;
    native.read(b, new Uint8Array(16));
  });
  watcher.start(PollEvents.Readable);
  watcher.stop();
  native.write(a, Uint8Array.of(1));
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(calls, 0, 'no callback while stopped');
  await new Promise<void>((resolve) => {
    const poll = new native.FdWatcher(a, () => {
      poll.close();
      resolve();
    });
    poll.start(PollEvents.Writable);
  });
  watcher.start(PollEvents.Readable);
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (calls > 0) resolve();
      else setImmediate(check);
    };
    check();
  });
  t.equal(calls, 1, 'callback after restart');
  watcher.close();
  watcher.close();
  t.throws(() => watcher.start(PollEvents.Readable), { code: 'EBADF' }, 'start after close');
  t.doesNotThrow(() => watcher.stop());
  t.throws(() => new native.FdWatcher(b, 'x' as unknown as () => void), TypeError);
  t.throws(() => new native.FdWatcher(b, () => undefined).start(64), TypeError);
  const first = new native.FdWatcher(a, () => undefined);
  first.start(PollEvents.Readable);
  t.throws(() => new native.FdWatcher(a, () => undefined), { code: 'EEXIST', syscall: 'uv_poll_init' }, 'one watcher per fd');
  first.close();
  native.close(a);
  native.close(b);
});

t.test('FdWatcher inside worker threads', async (t) => {
  const setup =
    'const [a, b] = native.socketPair();\n' +
    'const w = new native.FdWatcher(b, (status, events) => {\n' +
    '  const buf = new Uint8Array(8);\n' +
    '  const n = native.read(b, buf);\n' +
    '  Promise.resolve().then(() => parentPort.postMessage({ status, events, n, first: buf[0], tid: native.threadId() }));\n' +
    '  AFTER\n' +
    '});\n' +
    'w.start(PollEvents.Readable);\n' +
    'native.write(a, Uint8Array.of(77));\n';

  await t.test('callback fires, worker closes the watcher and exits by itself', async (t) => {
    const r = await runWorker(setup.replace('AFTER', 'setImmediate(() => { w.close(); native.close(a); native.close(b); });'));
    t.equal(r.exitCode, 0);
    t.equal(r.error, undefined);
    t.match(r.messages, [{ status: 0, events: PollEvents.Readable, n: 1, first: 77 }]);
    t.not((r.messages[0] as { tid: number }).tid, native.threadId(), 'ran on another OS thread');
  });

  await t.test('terminate() with a started watcher does not crash', async (t) => {
    const r = await runWorker(setup.replace('AFTER', ''), (_msg, worker) => void worker.terminate());
    t.equal(r.messages.length, 1);
    t.equal(r.exitCode, 1, 'terminated');
  });

  await t.test('process.exit() inside the callback with the watcher open', async (t) => {
    const r = await runWorker(setup.replace('AFTER', 'setImmediate(() => process.exit(3));'));
    t.equal(r.messages.length, 1);
    t.equal(r.exitCode, 3);
  });

  await t.test('a throwing callback becomes an uncaught exception', async (t) => {
    const r = await runWorker(setup.replace('AFTER', "throw new Error('boom from callback');"));
    t.match(r.error, { message: 'boom from callback' });
    t.equal(r.exitCode, 1);
  });
});

t.test('mmap: two mappings of one memfd at offsets see the same bytes', async (t) => {
  const page = 4096;
  const fd = native.memfdCreate('guest', 0);
  native.ftruncate(fd, 4 * page);
  const w = native.mmap(fd, page + 10, 100, true);
  t.equal(w.byteLength, 100, 'exactly the requested length');
  const wv = new Uint8Array(w);
  for (let i = 0; i < 100; i++) wv[i] = i + 1;
  const r = native.mmap(fd, page, 2 * page, false);
  t.equal(r.byteLength, 2 * page);
  const rv = new Uint8Array(r);
  t.equal(rv[9], 0);
  t.same(Array.from(rv.subarray(10, 110)), Array.from({ length: 100 }, (_, i) => i + 1), 'same bytes at the offset');
  t.equal(rv[110], 0);
  // An unaligned start far into the file, ending exactly at EOF.
  const tail = native.mmap(fd, 4 * page - 3, 3, true);
  new Uint8Array(tail).set([7, 8, 9]);
  const whole = native.mmap(fd, 0, 4 * page, false);
  t.same(Array.from(new Uint8Array(whole).subarray(4 * page - 3)), [7, 8, 9]);
  for (const ab of [w, r, tail, whole]) native.munmap(ab);
  native.close(fd);
});

t.test('mmap refuses ranges outside the file and bad arguments', async (t) => {
  const fd = native.memfdCreate('short', 0);
  native.ftruncate(fd, 8192);
  t.throws(() => native.mmap(fd, 0, 8193, true), { code: 'EINVAL', errno: 22, syscall: 'mmap' });
  t.throws(() => native.mmap(fd, 8192, 1, true), { code: 'EINVAL', syscall: 'mmap' });
  t.throws(() => native.mmap(fd, 4096, 4097, true), { code: 'EINVAL', syscall: 'mmap' });
  t.throws(() => native.mmap(fd, 2 ** 53, 2 ** 53, true), { code: 'EINVAL', syscall: 'mmap' }, 'no overflow');
  t.throws(() => native.mmap(fd, 0, 0, true), { code: 'EINVAL', syscall: 'mmap' }, 'zero length');
  t.throws(() => native.mmap(fd, -1, 10, true), TypeError);
  t.throws(() => native.mmap(fd, 0.5, 10, true), TypeError);
  t.throws(() => native.mmap(fd, 2 ** 54, 10, true), TypeError);
  t.throws(() => native.mmap(fd, 0, NaN, true), TypeError);
  t.throws(() => native.mmap(fd, 0, 10, 1 as unknown as boolean), TypeError);
  t.throws(() => native.mmap(-3, 0, 10, true), { code: 'EBADF', syscall: 'fstat' });
  const [a, b] = native.socketPair();
  t.throws(() => native.mmap(a, 0, 10, true), { code: 'EINVAL', syscall: 'mmap' }, 'a socket has no size');
  native.close(a);
  native.close(b);
  native.close(fd);
});

t.test('mmap of 4 GiB, and the 4 GiB ArrayBuffer cap of node < 22', async (t) => {
  const fd = native.memfdCreate('big', 0);
  native.ftruncate(fd, 2 ** 32 + 2 * 4096); // sparse: no memory is used
  const ab = native.mmap(fd, 4096, 2 ** 32, true);
  t.equal(ab.byteLength, 2 ** 32);
  new Uint8Array(ab, 2 ** 32 - 1, 1)[0] = 0xee;
  const check = native.mmap(fd, 2 ** 32 + 4095, 1, false);
  t.equal(new Uint8Array(check)[0], 0xee, 'last byte of the 4 GiB mapping');
  native.munmap(check);
  native.munmap(ab);
  if (Number(process.versions.node.split('.')[0]) < 22) {
    t.throws(() => native.mmap(fd, 0, 2 ** 32 + 1, true), { code: 'EFBIG', syscall: 'mmap' });
  }
  native.close(fd);
});

t.test('munmap detaches, is idempotent, and refuses foreign buffers', async (t) => {
  const fd = native.memfdCreate('unmap', 0);
  native.ftruncate(fd, 4096);
  const ab = native.mmap(fd, 0, 4096, true);
  const view = new Uint8Array(ab);
  view[0] = 1;
  native.munmap(ab);
  t.equal(ab.byteLength, 0, 'ArrayBuffer detached');
  t.equal(view.length, 0, 'views become empty');
  t.equal(view[0], undefined, 'no access to the old memory');
  t.doesNotThrow(() => native.munmap(ab), 'second munmap is a no-op');
  t.throws(() => native.munmap(new ArrayBuffer(8)), TypeError);
  t.throws(() => native.munmap(view as unknown as ArrayBuffer), TypeError);
  const ro = native.mmap(fd, 0, 4096, false);
  t.equal(new Uint8Array(ro)[0], 1, 'the write reached the file');
  native.munmap(ro);
  native.close(fd);
});

function mappingCount(name: string): number {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((line) => line.includes(`/memfd:${name} `)).length;
}

t.test('a collected mapping is unmapped by the finalizer', async (t) => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const fd = native.memfdCreate('vhostd-gc-map', 0);
  native.ftruncate(fd, 3 * 4096);
  (() => {
    const ab = native.mmap(fd, 5, 4096, true);
    new Uint8Array(ab)[0] = 1;
  })();
  t.equal(mappingCount('vhostd-gc-map'), 1, 'mapped');
  // Finalizers run from the event loop after the collection.
  for (let i = 0; i < 20 && mappingCount('vhostd-gc-map') > 0; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.equal(mappingCount('vhostd-gc-map'), 0, 'unmapped after GC');
  native.close(fd);
});

t.test('a worker exiting with live mappings unmaps them', async (t) => {
  const r = await runWorker(
    "const fd = native.memfdCreate('vhostd-worker-map', 0);\n" +
      'native.ftruncate(fd, 8192);\n' +
      'globalThis.keep = [native.mmap(fd, 0, 8192, true), native.mmap(fd, 4096, 10, false)];\n' +
      "const maps = require('node:fs').readFileSync('/proc/self/maps', 'utf8');\n" +
      "parentPort.postMessage({ fd, count: maps.split('vhostd-worker-map').length - 1 });\n",
  );
  t.equal(r.exitCode, 0);
  t.match(r.messages, [{ count: 2 }], 'two mappings while the worker ran');
  native.close((r.messages[0] as { fd: number }).fd); // fds are process-wide
  t.equal(mappingCount('vhostd-worker-map'), 0, 'none after it exited');
});

t.test('eventfd read/write and pollReadable', async (t) => {
  const e = native.eventfd(0, 0);
  t.ok(isNonblocking(e) && isCloexec(e));
  t.equal(native.eventfdRead(e), -1, 'empty counter would block');
  t.equal(native.pollReadable(Int32Array.of(e), 1, 0), 0, 'not readable');
  native.eventfdWrite(e, 3);
  native.eventfdWrite(e, 4);
  t.equal(native.pollReadable(Int32Array.of(-1, e, 99999), 2, 0), 1, 'one readable of two (negative fd ignored)');
  t.equal(native.eventfdRead(e), 7, 'counter summed');
  t.equal(native.eventfdRead(e), -1, 'reset by read');
  t.throws(() => native.pollReadable(Int32Array.of(e), 2, 0), TypeError, 'count > length');
  t.throws(() => native.eventfdWrite(e, -1), TypeError);
  const e2 = native.eventfd(2, 0);
  t.equal(native.eventfdRead(e2), 2, 'initval');
  const [a, b] = native.socketPair();
  native.write(a, Uint8Array.of(1));
  t.equal(native.pollReadable(Int32Array.of(e, e2, b), 3, 0), 1, 'socket readable');
  // `ready`: which fds polled readable, every entry written (1 or 0).
  native.eventfdWrite(e2, 1);
  const ready = Uint8Array.of(9, 9, 9, 9);
  t.equal(native.pollReadable(Int32Array.of(e, e2, b), 3, 0, ready), 2, 'two readable');
  t.same([...ready], [0, 1, 1, 9], 'ready marks them; entries past count untouched');
  native.eventfdRead(e2);
  t.equal(native.pollReadable(Int32Array.of(e, e2), 2, 0, ready), 0, 'none readable');
  t.same([...ready.subarray(0, 2)], [0, 0], 'ready cleared when nothing fired');
  t.throws(() => native.pollReadable(Int32Array.of(e, e2), 2, 0, new Uint8Array(1)), TypeError, 'ready shorter than count');
  t.throws(() => native.pollReadable(Int32Array.of(e), 1, 0, new Int32Array(1) as unknown as Uint8Array), TypeError, 'ready not a Uint8Array');
  for (const fd of [e, e2, a, b]) native.close(fd);
});

t.test('threads: pinThread/currentCpu/threadId/allowedCpus', async (t) => {
  const cpus = native.allowedCpus();
  t.ok(cpus.length >= 1);
  t.ok(cpus.every((c) => Number.isInteger(c) && c >= 0));
  t.equal(native.threadId(), process.pid, 'main thread id is the pid');
  t.ok(cpus.includes(native.currentCpu()));
  const target = cpus[cpus.length - 1];
  const r = await runWorker(
    `native.pinThread(${target});\n` +
      'parentPort.postMessage({ cpu: native.currentCpu(), cpus: native.allowedCpus(), tid: native.threadId() });\n',
  );
  t.equal(r.exitCode, 0);
  t.match(r.messages, [{ cpu: target, cpus }], 'pinned worker runs on its CPU; allowedCpus is the process set');
  t.not((r.messages[0] as { tid: number }).tid, process.pid);
  t.throws(() => native.pinThread(-1), TypeError);
  t.throws(() => native.pinThread(1e6), TypeError);
});
