/**
 * `vhostd` command line, shaped like SPDK's vhost app: argv → App → serve
 * until SIGINT/SIGTERM, then a graceful stop (devices drain, sockets are
 * unlinked, exit 0). Thread: main (reactor).
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { App } from './app';
import { readConfigFile, replayConfig, type ConfigFile } from './config';
import { Framework } from './framework';
import { allLogFlags, log, logger, setLogFlag, setPrintLevel, type LogLevel } from './log';
import { formatCpumask, parseCpumask } from './placement';
import { RpcServer } from './rpc/server';
import { VERSION } from './version';
import { registerMethods } from './rpc/methods';

const appLog = logger('app');

const USAGE = `Usage: vhostd [options]

A vhost-user storage target: QEMU connects to one Unix socket per controller.

Options (as SPDK's vhost app):
  -m, --cpumask MASK        cores to poll on: hex (0x3) or list ([0,2-3]); default 0x1
  -S, --vhost-sock-dir DIR  directory for the controllers' vhost-user sockets; default: the current directory
  -r, --rpc-socket PATH     JSON-RPC socket; default /var/tmp/vhostd.sock
  -c, --json FILE           JSON config to load at start (SPDK format; save_config output)
  -L, --logflag FLAG        enable debug logs of a component (app, bdev, engine, rpc, vhost, vhost_blk,
                            or all); repeatable; sets the print level to debug unless --log-level is given
      --log-level LEVEL     error|warn|notice|info|debug; default info
      --wait-for-rpc        start only the RPC server and wait for framework_start_init before
                            starting the engine and loading the -c config
  -h, --help                this text
  -v, --version             print the version

vhostd's own:
      --default             start with the embedded default: a 256 MiB malloc disk Malloc0
                            behind controller vhost.0 (socket dir /tmp/vhostd unless -S), and
                            print the QEMU flags that attach it
      --poll-mode MODE      poll (busy-poll always, the default) or adaptive (sleep on the
                            kick eventfds after --idle-sleep-us of idleness)
      --idle-sleep-us N     idle time before an adaptive worker sleeps; default 1000
      --socket-mode MODE    octal file mode of the sockets; default 0600
`;

interface CliOptions {
  waitForRpc: boolean;
  cores: number[];
  socketDir: string;
  rpcSocket: string;
  config?: string;
  demo: boolean;
  pollMode: 'poll' | 'adaptive';
  idleSleepUs: number;
  socketMode: number;
}

class UsageError extends Error {}

function parseCli(argv: string[]): CliOptions | 'help' | 'version' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      cpumask: { type: 'string', short: 'm' },
      'vhost-sock-dir': { type: 'string', short: 'S' },
      'rpc-socket': { type: 'string', short: 'r' },
      json: { type: 'string', short: 'c' },
      logflag: { type: 'string', short: 'L', multiple: true },
      'log-level': { type: 'string' },
      'wait-for-rpc': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
      default: { type: 'boolean' },
      'poll-mode': { type: 'string' },
      'idle-sleep-us': { type: 'string' },
      'socket-mode': { type: 'string' },
    },
  });
  if (values.help) return 'help';
  if (values.version) return 'version';
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  let cores: number[];
  try {
    cores = parseCpumask(values.cpumask ?? '0x1');
  } catch (err) {
    throw new UsageError(`-m: ${(err as Error).message}`);
  }
  const pollMode = values['poll-mode'] ?? 'poll';
  if (pollMode !== 'poll' && pollMode !== 'adaptive') throw new UsageError('--poll-mode must be poll or adaptive');
  const idleSleepUs = Number(values['idle-sleep-us'] ?? '1000');
  if (!Number.isSafeInteger(idleSleepUs) || idleSleepUs < 0) throw new UsageError('--idle-sleep-us must be a whole number');
  const modeText = values['socket-mode'] ?? '0600';
  if (!/^0?[0-7]{3}$/.test(modeText)) throw new UsageError('--socket-mode must be an octal mode like 0600');
  const level = values['log-level'];
  if (level !== undefined) {
    if (!['error', 'warn', 'notice', 'info', 'debug'].includes(level)) throw new UsageError(`--log-level: unknown level ${level}`);
    setPrintLevel(level as LogLevel);
  }
  for (const flag of values.logflag ?? []) {
    if (!setLogFlag(flag)) throw new UsageError(`-L: unknown log flag ${flag} (known: ${Object.keys(allLogFlags()).join(', ')}, all)`);
  }
  // As SPDK's app: a debug flag is of no use unless debug lines are printed.
  if ((values.logflag ?? []).length > 0 && level === undefined) setPrintLevel('debug');
  const demo = values.default ?? false;
  return {
    waitForRpc: values['wait-for-rpc'] ?? false,
    cores,
    socketDir: path.resolve(values['vhost-sock-dir'] ?? (demo ? '/tmp/vhostd' : '.')),
    rpcSocket: path.resolve(values['rpc-socket'] ?? '/var/tmp/vhostd.sock'),
    config: values.json,
    demo,
    pollMode,
    idleSleepUs,
    socketMode: parseInt(modeText, 8),
  };
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

function qemuFlags(socketPath: string): string {
  return [
    'qemu-system-x86_64 -machine q35,accel=kvm:tcg -cpu max -smp 2 -m 1G \\',
    '  -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem \\',
    `  -chardev socket,id=vhost0,path=${socketPath} \\`,
    '  -device vhost-user-blk-pci,chardev=vhost0,num-queues=2 \\',
    '  ... your kernel/disk/console flags',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  let opts: CliOptions | 'help' | 'version';
  try {
    opts = parseCli(argv);
  } catch (err) {
    process.stderr.write(`vhostd: ${(err as Error).message}\n\n${USAGE}`);
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
  const app = new App({
    cores: opts.cores,
    socketDir: opts.socketDir,
    rpcSocket: opts.rpcSocket,
    pollMode: opts.pollMode,
    idleSleepUs: opts.idleSleepUs,
    socketMode: opts.socketMode,
  });
  log('notice', 'app', `${app.version} starting`, { cpumask: formatCpumask(opts.cores), pid: process.pid });

  const rpc = new RpcServer({ socketMode: opts.socketMode });

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
    stopping = (async () => {
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
  const framework = new Framework(rpc, {
    waitForRpc: opts.waitForRpc,
    init: async () => {
      app.start();
      await app.engine.ready();
    },
    afterRuntime: async () => {
      if (config) await replayConfig(config, (method, params) => rpc.invoke(method, params));
    },
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
  } catch (err) {
    appLog.error('start failed', { error: (err as Error).message });
    await stop('start failed');
    return 1;
  }
  if (opts.waitForRpc) appLog.notice('waiting for framework_start_init', { rpcSocket: opts.rpcSocket });
  appLog.notice('ready', { rpcSocket: opts.rpcSocket, socketDir: opts.socketDir });
  if (opts.demo) {
    const sock = path.join(opts.socketDir, 'vhost.0');
    process.stdout.write(
      `vhostd is serving a 256 MiB malloc disk (Malloc0) on ${sock}.\nAttach a VM with:\n\n${qemuFlags(sock)}\n\n` +
        `Control it with: npx vhostd-rpc -s ${opts.rpcSocket} vhost_get_controllers\n`,
    );
  }
  return exitCode;
}
