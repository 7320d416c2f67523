/**
 * `vhostd` command line, shaped like SPDK's vhost app: argv → App → serve
 * until SIGINT/SIGTERM, then a graceful stop (devices drain, sockets are
 * unlinked, exit 0). Thread: main (reactor).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../bindings';
import { App } from './app';
import { checkCores, parseCli, parseCpuList, USAGE, type CliOptions } from './cli-args';
import { readConfigFile, replayConfig, type ConfigFile } from './config';
import { CpuLocks, writePidFile } from './cpu-lock';
import { Framework } from './framework';
import { allLogFlags, log, logger, setLogFlag, setLogFormat, setPrintLevel } from './log';
import { formatCpumask } from './placement';
import { RpcServer, type RpcServerOptions } from './rpc/server';
import { RpcCode, RpcError } from './rpc/errors';
import { RpcState } from './rpc/schema';
import { probeKvm, type AccelChoice } from './kvm-probe';
import { MetricsServer, type MetricsSource } from './metrics';
import { VERSION } from './version';
import { registerMethods } from './rpc/methods';
import { setRequireSealedMemory } from './vhost-user/memory-policy';
import { setMallocHugepages } from '../modules/bdev/malloc/reactor';
import { sdNotify } from './sd-notify';
import { resolveGroup } from './unix-group';

/** sd_notify, logging (never throwing) when the manager cannot be told. */
function notifyManager(state: string): void {
  try {
    if (sdNotify(state)) appLog.debug('told the service manager', { state: state.replace(/\n/g, ' ') });
  } catch (err) {
    appLog.warn('cannot notify the service manager (NOTIFY_SOCKET)', { error: (err as Error).message });
  }
}

const appLog = logger('app');

/**
 * --rpcs-allowed, as SPDK's spdk_rpc_set_allowlist: a call over the socket to
 * any other method is answered -32601 "Method not allowed". The -c config is
 * replayed through invokeTrusted(), which the list does not restrict.
 */
export class AllowlistRpcServer extends RpcServer {
  private readonly allowedMethods: ReadonlySet<string>;

  constructor(allowed: readonly string[], options: RpcServerOptions = {}) {
    super(options);
    this.allowedMethods = new Set(allowed);
  }

  override async invoke(method: string, params?: unknown): Promise<unknown> {
    if (!this.allowedMethods.has(method)) throw new RpcError(RpcCode.MethodNotFound, 'Method not allowed');
    return super.invoke(method, params);
  }

  invokeTrusted(method: string, params?: unknown): Promise<unknown> {
    return super.invoke(method, params);
  }
}

/** CPUs that exist: /sys/devices/system/cpu/online, else 0..os.cpus()-1. */
export function onlineCpus(): number[] {
  try {
    return parseCpuList(fs.readFileSync('/sys/devices/system/cpu/online', 'utf8'));
  } catch {
    return os.cpus().map((_, i) => i);
  }
}

/** The embedded default: what `vhostd --default` serves. */
export const DEFAULT_CONFIG: ConfigFile = {
  subsystems: [
    {
      subsystem: 'bdev',
      config: [{ method: 'bdev_malloc_create', params: { name: 'Malloc0', num_blocks: 524288, block_size: 512 } }],
    },
    {
      subsystem: 'vhost_blk',
      config: [{ method: 'vhost_create_blk_controller', params: { ctrlr: 'vhost.0', dev_name: 'Malloc0' } }],
    },
  ],
};

/** The test guest's kernel if `npm run guest` / the tests cached one beside this package (.cache/guest/<hash>/vmlinuz). */
function cachedGuestKernel(): string | null {
  const dir = path.resolve(__dirname, '..', '..', '.cache', 'guest');
  try {
    for (const d of fs.readdirSync(dir)) {
      const k = path.join(dir, d, 'vmlinuz');
      if (fs.existsSync(k)) return k;
    }
  } catch {
    // no cache
  }
  return null;
}

/**
 * The accelerator a QEMU line printed here should use: KVM when it works —
 * probed by booting a cached guest kernel under -accel kvm; without one,
 * when /dev/kvm opens (said so) — TCG otherwise. Never `accel=kvm:tcg`:
 * with a broken /dev/kvm QEMU picks KVM and hangs.
 */
export async function chooseAccel(): Promise<AccelChoice> {
  const kernel = cachedGuestKernel();
  if (kernel) return probeKvm(kernel, 2000);
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch (err) {
    return { accel: 'tcg', why: `/dev/kvm is not usable (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  return { accel: 'kvm', why: '/dev/kvm opens (not probed: no guest kernel cached; if QEMU hangs, use -accel tcg)' };
}

export function qemuFlags(socketPath: string, accel: AccelChoice): string {
  return [
    `# ${accel.accel === 'kvm' ? 'KVM' : 'TCG (no KVM)'}: ${accel.why}`,
    `qemu-system-x86_64 -accel ${accel.accel} -machine q35 -cpu max -smp 2 -m 1G \\`,
    '  -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem \\',
    `  -chardev socket,id=vhost0,path=${socketPath} \\`,
    '  -device vhost-user-blk-pci,chardev=vhost0,num-queues=2 \\',
    '  ... your kernel/disk/console flags   (or: npm run guest, which boots a small test guest against this disk)',
  ].join('\n');
}

/** What the metrics endpoint reads from the app (see reactor/metrics.ts). */
export function appMetricsSource(app: App): MetricsSource {
  return {
    cores: app.options.cores,
    core(core) {
      let w;
      try {
        w = app.engine.worker(core);
      } catch {
        return null; // the engine has not started (--wait-for-rpc)
      }
      const { busyNs, idleNs } = w.ticks();
      const { run, busy } = w.iterations();
      const { inInterrupt, sleeps } = w.interruptState();
      return { busyNs, idleNs, iterations: run, busyIterations: busy, devices: w.deviceCount(), inInterrupt, sleeps };
    },
    bdevs: () => app.bdevs.list().map((b) => ({ name: b.name, module: b.module.name, blockSize: b.blockSize, numBlocks: b.numBlocks, iostat: b.iostat })),
    controllers: () => app.vhost.list().map((c) => ({ name: c.name, kind: c.model.kind, connected: c.connected, counters: c.counters() })),
  };
}

export async function main(argv: string[]): Promise<number> {
  let opts: CliOptions | 'help' | 'version';
  try {
    opts = parseCli(argv, Object.keys(allLogFlags()));
  } catch (err) {
    process.stderr.write(`vhostd: ${(err as Error).message} (see vhostd --help)\n`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (opts === 'version') {
    process.stdout.write(`vhostd v${VERSION}\n`);
    return 0;
  }
  if (opts.printLevel !== undefined) setPrintLevel(opts.printLevel);
  setLogFormat(opts.logFormat);
  for (const flag of opts.logFlags) setLogFlag(flag);
  for (const note of opts.notes) appLog.notice(note);

  // A core that does not exist or that this process may not run on would take no work, silently.
  const coreError = checkCores(opts.cores, onlineCpus(), native.allowedCpus());
  if (coreError !== null) {
    appLog.error(coreError);
    return 1;
  }
  let locks: CpuLocks | null = null;
  if (opts.cpuLocks) {
    try {
      locks = CpuLocks.claim(opts.cores);
    } catch (err) {
      appLog.error((err as Error).message);
      return 1;
    }
  }
  // -f: written once the start succeeded (below), so a start that fails (another vhostd on the
  // same RPC socket, say) never replaces, then removes, the pid file of the one that runs.
  let removePidFile: (() => void) | null = null;
  // Whatever way the process ends from here (main's result, process.exit on a second signal).
  process.on('exit', () => {
    removePidFile?.();
    locks?.release();
  });

  let socketGid: number | undefined;
  if (opts.socketGroup !== undefined) {
    try {
      socketGid = resolveGroup(opts.socketGroup);
    } catch (err) {
      locks?.release();
      appLog.error((err as Error).message);
      return 1;
    }
  }
  setRequireSealedMemory(opts.requireSealedMemory);
  if (opts.noHuge) setMallocHugepages(false);
  if (opts.requireSealedMemory) log('notice', 'app', 'guest memory must be sealed against shrinking (--require-sealed-memory)');
  const app = new App({
    cores: opts.cores,
    socketDir: opts.socketDir,
    rpcSocket: opts.rpcSocket,
    pollMode: opts.pollMode,
    idleSleepUs: opts.idleSleepUs,
    // --socket-group: the group may read and write the controller sockets (connect needs write); the RPC socket keeps socketMode.
    socketMode: socketGid === undefined ? opts.socketMode : opts.socketMode | 0o060,
    socketGid,
  });
  if (socketGid !== undefined) appLog.notice('controller sockets belong to the --socket-group', { group: opts.socketGroup, gid: socketGid, mode: (opts.socketMode | 0o060).toString(8).padStart(4, '0') });
  log('notice', 'app', `${app.version} starting`, { cpumask: formatCpumask(opts.cores), pid: process.pid, cpuLocks: locks !== null });

  const rpcsAllowed = opts.rpcsAllowed;
  const rpc = rpcsAllowed ? new AllowlistRpcServer(rpcsAllowed, { socketMode: opts.socketMode }) : new RpcServer({ socketMode: opts.socketMode });
  const invokeLocal = (method: string, params: unknown): Promise<unknown> =>
    rpc instanceof AllowlistRpcServer ? rpc.invokeTrusted(method, params) : rpc.invoke(method, params);
  if (rpcsAllowed) appLog.notice('only the --rpcs-allowed methods are callable over RPC', { methods: rpcsAllowed });

  const metrics = opts.metrics !== undefined ? new MetricsServer(appMetricsSource(app)) : null;

  let finish: (code: number) => void = () => undefined;
  const exitCode = new Promise<number>((resolve) => {
    finish = resolve;
  });
  let stopping: Promise<void> | null = null;
  /**
   * Graceful stop: stop taking work (no new RPC connections or requests, no
   * new front-ends), stop every device (its worker finishes the I/O in
   * flight and pushes the completions before the front-end's socket is
   * closed), end the workers, unlink every socket file.
   */
  const stop = (why: string): Promise<void> => {
    if (stopping) return stopping;
    appLog.notice('stopping', { reason: why });
    notifyManager('STOPPING=1');
    stopping = (async () => {
      await metrics?.close();
      await rpc.close();
      await app.stop();
      appLog.notice('stopped', { reason: why });
    })();
    return stopping;
  };
  const stopAndExit = (why: string, code: number): void => {
    stop(why).then(
      () => finish(code),
      (err: unknown) => {
        appLog.error('stop failed', { error: (err as Error).message });
        finish(1);
      },
    );
  };

  let config: ConfigFile | null = null;
  /** A config call replayed in SPDK's STARTUP pass: its method may be called in STARTUP. */
  const startupCall = (call: { method: string }): boolean => ((rpc.statesOf(call.method) ?? 0) & RpcState.Startup) !== 0;
  const replay = async (pass: 'startup' | 'runtime'): Promise<void> => {
    if (!config) return;
    const ignoreErrors = (opts as CliOptions).ignoreInitErrors;
    await replayConfig(
      config,
      async (method, params) => {
        try {
          return await invokeLocal(method, params);
        } catch (err) {
          // --json-ignore-init-errors: log the failing call and go on with the next one.
          if (!ignoreErrors) throw err;
          appLog.error('config call failed (--json-ignore-init-errors: continuing)', { method, error: (err as Error).message });
          return null;
        }
      },
      pass === 'startup' ? startupCall : (call) => !startupCall(call),
    );
  };
  const framework = new Framework(rpc, {
    waitForRpc: opts.waitForRpc,
    init: async () => {
      // SPDK's first pass: the calls allowed before the subsystems start (options, scheduler), in STARTUP.
      const state = rpc.state;
      rpc.state = RpcState.Startup;
      try {
        await replay('startup');
      } finally {
        rpc.state = state;
      }
      app.start();
      await app.engine.ready();
    },
    afterRuntime: () => replay('runtime'),
    // Through framework_start_init, as SPDK: the error is the reply, then the target stops.
    onInitFailed: opts.waitForRpc
      ? (err) => {
          appLog.error('initialization failed', { error: err.message });
          setImmediate(() => stopAndExit('initialization failed', 1));
        }
      : undefined,
  });
  registerMethods(rpc, app, framework);

  let firstSignalAt = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) {
      // timeout(1) and shells signal the child and its process group: a repeat within a second is the same request.
      if (Date.now() - firstSignalAt < 1000) return;
      appLog.warn('second signal: exiting at once', { signal: sig });
      process.exit(1);
    }
    firstSignalAt = Date.now();
    stopAndExit(sig, 0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    config = opts.demo ? DEFAULT_CONFIG : opts.config ? readConfigFile(opts.config) : null;
    if (!opts.waitForRpc) await framework.startInit();
    await rpc.listen(opts.rpcSocket);
    if (metrics !== null && opts.metrics !== undefined) await metrics.listen(opts.metrics);
    if (opts.pidFile !== undefined) {
      try {
        removePidFile = writePidFile(opts.pidFile);
      } catch (err) {
        throw new Error(`-f: cannot write the pid file: ${(err as Error).message}`);
      }
    }
  } catch (err) {
    // A signal during start-up stops the start (rpc.listen refuses to finish): that stop's exit status.
    if (stopping) return exitCode;
    appLog.error('start failed', { error: (err as Error).message });
    await stop('start failed');
    return 1;
  }
  if (opts.waitForRpc) appLog.notice('waiting for framework_start_init', { rpcSocket: opts.rpcSocket });
  appLog.notice('ready', { rpcSocket: opts.rpcSocket, socketDir: opts.socketDir });
  // Type=notify units: the RPC socket accepts calls from here on (with --wait-for-rpc, framework_start_init).
  notifyManager(`READY=1\nSTATUS=${opts.waitForRpc ? 'waiting for framework_start_init' : 'serving'} on ${opts.rpcSocket}\nMAINPID=${process.pid}`);
  if (opts.demo) {
    const sock = path.join(opts.socketDir, 'vhost.0');
    process.stdout.write(
      `vhostd is serving a 256 MiB malloc disk (Malloc0) on ${sock}.\nAttach a VM with:\n\n${qemuFlags(sock, await chooseAccel())}\n\n` +
        `Control it with: npx vhostd-rpc -s ${opts.rpcSocket} vhost_get_controllers\n`,
    );
  }
  return exitCode;
}
