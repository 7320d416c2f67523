/**
 * Test guest runner: boots a small Linux guest under QEMU (TCG) with
 * vhost-user-blk / vhost-user-scsi devices attached to the given back-end
 * sockets, runs a shell script inside it and returns what it reported.
 *
 * The kernel and base initramfs come from scripts/build-guest.sh (cached
 * under .cache/guest/). The script rides on top of the base as a second
 * cpio.gz carrying /test.sh; the guest's /init runs it, prints `@@EXIT <rc>`
 * and powers off. Inside the script these helpers exist:
 *
 *   check NAME cmd args...   run cmd, print `@@RESULT NAME <rc>`, return rc
 *   value NAME text...       print `@@VALUE NAME text...`
 *   wait_for PATH [tenths]   wait until PATH exists (default 10 s)
 *
 * Main-thread test helper; every boot is its own QEMU process.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { repoRoot } from './repo';
import { tied } from './tied';

export interface GuestSocket {
  /** Unix socket of the vhost-user back-end (one controller). */
  path: string;
  kind: 'blk' | 'scsi';
  /** Request queues (for scsi: QEMU's num_queues, request queues only). */
  numQueues: number;
  /** QEMU reconnects every second when the back-end goes away, and waits for it at start (`reconnect=1`; `reconnect-ms=1000` from QEMU 9.2, which replaced it). */
  reconnect?: boolean;
  /** Ask for packed virtqueues (`packed=on`, VIRTIO_F_RING_PACKED). */
  packed?: boolean;
}

/** A vfio-user server socket (an NVMe controller's `cntrl`), attached as QEMU's vfio-user-pci (QEMU 10.1+ only). */
export interface GuestVfioUserSocket {
  path: string;
  kind: 'vfio-user';
}

export interface BootOptions {
  sockets: (GuestSocket | GuestVfioUserSocket)[];
  /** The QEMU binary (default: qemu-system-x86_64 from PATH; vfio-user needs qemuVfioUser()). */
  qemu?: string;
  /** More QEMU arguments (e.g. `-trace` patterns when debugging a front-end). */
  extraArgs?: string[];
  /** Shell run inside the guest by busybox sh, with the helpers above. */
  script: string;
  /** More files for the per-test cpio (e.g. a static helper program built at test time), at `/name`. */
  files?: { name: string; mode: number; data: Buffer }[];
  /** Guest RAM (default 512: the initramfs unpacks to about 90 MiB of tmpfs, which needs more than 256). */
  memMiB?: number;
  smp?: number;
  /** Memory hot-plug room: `-m MEM,slots=N,maxmem=MAX` (pc-dimm devices can then be added from the monitor). */
  memSlots?: { slots: number; maxMiB: number };
  /** Kill QEMU after this long. */
  timeoutMs?: number;
  /** QEMU accelerator; default 'tcg' (KVM does not work on the project's machines). */
  accel?: 'tcg' | 'kvm';
  /** Streams the console (for debugging); VHOSTD_GUEST_DEBUG=1 does the same to stderr. */
  onOutput?: (text: string) => void;
  /** Kills QEMU when aborted (a test that failed half-way: its guest must not run on to timeoutMs). */
  signal?: AbortSignal;
}

export interface GuestRun {
  /** Serial console plus QEMU's own output, CRs removed. */
  output: string;
  /** The script's exit status from `@@EXIT`, or null when the guest never got there. */
  exitCode: number | null;
  /** `@@RESULT name rc` lines, last one wins. */
  results: Map<string, number>;
  /** `@@VALUE name text` lines, last one wins. */
  values: Map<string, string>;
  /** True when QEMU was killed at timeoutMs. */
  timedOut: boolean;
  /** QEMU's own exit status and signal. */
  qemuStatus: number | null;
  qemuSignal: NodeJS.Signals | null;
}

export interface GuestImage {
  dir: string;
  kernel: string;
  initramfs: string;
  kernelVersion: string;
}

let imagePromise: Promise<GuestImage> | undefined;

/** Builds (or finds cached) the guest kernel and base initramfs. */
export function guestImage(): Promise<GuestImage> {
  if (imagePromise === undefined) {
    imagePromise = new Promise<GuestImage>((resolve, reject) => {
      const script = path.join(repoRoot(), 'scripts', 'build-guest.sh');
      execFile('bash', [script], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`build-guest.sh failed: ${err.message}\n${stderr}`));
          return;
        }
        const lines = stdout.trim().split('\n');
        const dir = lines[lines.length - 1] ?? '';
        const kernel = path.join(dir, 'vmlinuz');
        const initramfs = path.join(dir, 'initramfs.cpio.gz');
        if (!fs.existsSync(kernel) || !fs.existsSync(initramfs)) {
          reject(new Error(`build-guest.sh printed '${dir}', which holds no guest image`));
          return;
        }
        const kernelVersion = fs.readFileSync(path.join(dir, 'kernel-version'), 'utf8').trim();
        resolve({ dir, kernel, initramfs, kernelVersion });
      });
    });
    // A failed build may be retried by a later call.
    imagePromise.catch(() => {
      imagePromise = undefined;
    });
  }
  return imagePromise;
}

/** Helpers prepended to every guest script. */
const PRELUDE = `
check() {
  __name="$1"; shift
  "$@"
  __rc=$?
  echo "@@RESULT $__name $__rc"
  return $__rc
}
value() {
  __name="$1"; shift
  echo "@@VALUE $__name $*"
}
wait_for() {
  __n="\${2:-100}"
  while [ ! -e "$1" ] && [ "$__n" -gt 0 ]; do sleep 0.1; __n=$((__n - 1)); done
  [ -e "$1" ]
}
`;

interface CpioEntry {
  name: string;
  mode: number;
  data: Buffer;
}

/** One newc ("070701") cpio archive with the given regular files, plus the trailer. */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer): void => {
    parts.push(b);
    offset += b.length;
  };
  const pad4 = (): void => {
    const rem = offset % 4;
    if (rem !== 0) push(Buffer.alloc(4 - rem));
  };
  const hex = (n: number): string => n.toString(16).padStart(8, '0');
  let ino = 1;
  const all = [...entries, { name: 'TRAILER!!!', mode: 0, data: Buffer.alloc(0) }];
  for (const e of all) {
    const name = Buffer.from(`${e.name}\0`, 'utf8');
    const isTrailer = e.name === 'TRAILER!!!';
    const header =
      '070701' +
      hex(isTrailer ? 0 : ino++) +
      hex(e.mode) +
      hex(0) + // uid
      hex(0) + // gid
      hex(1) + // nlink
      hex(0) + // mtime
      hex(e.data.length) +
      hex(0) + // devmajor
      hex(0) + // devminor
      hex(0) + // rdevmajor
      hex(0) + // rdevminor
      hex(name.length) +
      hex(0); // check
    push(Buffer.from(header, 'ascii'));
    push(name);
    pad4();
    push(e.data);
    pad4();
  }
  return Buffer.concat(parts);
}

/** Parses the guest's markers out of console text. */
export function parseMarkers(output: string): Pick<GuestRun, 'exitCode' | 'results' | 'values'> {
  const results = new Map<string, number>();
  const values = new Map<string, string>();
  let exitCode: number | null = null;
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    let m = /^@@RESULT (\S+) (-?\d+)$/.exec(line);
    if (m) {
      results.set(m[1]!, Number(m[2]));
      continue;
    }
    m = /^@@VALUE (\S+) ?(.*)$/.exec(line);
    if (m) {
      values.set(m[1]!, m[2]!);
      continue;
    }
    m = /^@@EXIT (-?\d+)$/.exec(line);
    if (m) exitCode = Number(m[1]);
  }
  return { exitCode, results, values };
}

const reconnectOptions = new Map<string, string>();

/**
 * The chardev option that reconnects every second: QEMU 9.2 added
 * `reconnect-ms` and deprecated `reconnect` (seconds), which 10.x refuses
 * ("Invalid parameter 'reconnect'"). Read from the binary's version, once per binary.
 */
function reconnectOption(qemu: string): string {
  let opt = reconnectOptions.get(qemu);
  if (opt === undefined) {
    const m = /version (\d+)\.(\d+)/.exec(execFileSync(qemu, ['--version'], { encoding: 'utf8' }));
    if (m === null) throw new Error(`${qemu} --version: no version`);
    const [major, minor] = [Number(m[1]), Number(m[2])];
    opt = major > 9 || (major === 9 && minor >= 2) ? 'reconnect-ms=1000' : 'reconnect=1';
    reconnectOptions.set(qemu, opt);
  }
  return opt;
}

function qemuDeviceArgs(sockets: (GuestSocket | GuestVfioUserSocket)[], qemu: string): string[] {
  const args: string[] = [];
  sockets.forEach((s, i) => {
    if (s.kind === 'vfio-user') {
      args.push('-device', JSON.stringify({ driver: 'vfio-user-pci', socket: { type: 'unix', path: s.path } }));
      return;
    }
    if (!Number.isInteger(s.numQueues) || s.numQueues < 1) {
      throw new RangeError(`sockets[${i}].numQueues must be a positive integer`);
    }
    args.push('-chardev', `socket,id=c${i},path=${s.path}${s.reconnect === true ? `,${reconnectOption(qemu)}` : ''}`);
    if (s.kind === 'blk') {
      args.push('-device', `vhost-user-blk-pci,chardev=c${i},num-queues=${s.numQueues}${s.packed === true ? ',packed=on' : ''}`);
    } else {
      args.push('-device', `vhost-user-scsi-pci,chardev=c${i},num_queues=${s.numQueues}`);
    }
  });
  return args;
}

let qemuVfioUserPath: string | undefined;

/**
 * The QEMU with the vfio-user client (upstream 10.2 from ../shared/peers/qemu-10.2,
 * unpacked once into the repo's .cache/qemu-10.2; QEMU_VFIO_USER_DIR names another peer directory). Throws when it is absent.
 */
export function qemuVfioUser(): string {
  if (qemuVfioUserPath !== undefined) return qemuVfioUserPath;
  const unpack = path.join(repoRoot(), '..', 'shared', 'peers', 'qemu-10.2', 'unpack.sh');
  const peer = process.env.QEMU_VFIO_USER_DIR ? path.join(process.env.QEMU_VFIO_USER_DIR, 'unpack.sh') : unpack;
  const out = execFileSync('bash', [peer, path.join(repoRoot(), '.cache', 'qemu-10.2')], { encoding: 'utf8' }).trim();
  qemuVfioUserPath = out.split('\n').pop() ?? '';
  return qemuVfioUserPath;
}

/** Boots one guest, runs `script` in it and resolves when QEMU has exited. */
export async function bootGuest(opts: BootOptions): Promise<GuestRun> {
  const memMiB = opts.memMiB ?? 512;
  const smp = opts.smp ?? 1;
  const timeoutMs = opts.timeoutMs ?? 180_000;
  const image = await guestImage();
  const deviceArgs = qemuDeviceArgs(opts.sockets, opts.qemu ?? 'qemu-system-x86_64');

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-boot-'));
  try {
    const initrd = path.join(tmp, 'initrd.img');
    const testCpio = zlib.gzipSync(
      cpioNewc([
        { name: 'test.sh', mode: 0o100755, data: Buffer.from(`${PRELUDE}\n${opts.script}\n`, 'utf8') },
        ...(opts.files ?? []),
      ]),
    );
    fs.copyFileSync(image.initramfs, initrd);
    fs.appendFileSync(initrd, testCpio);

    const args = [
      '-accel', opts.accel === 'kvm' ? 'kvm' : 'tcg,thread=multi',
      '-cpu', 'max',
      '-m', opts.memSlots ? `${memMiB},slots=${opts.memSlots.slots},maxmem=${opts.memSlots.maxMiB}M` : String(memMiB),
      '-smp', String(smp),
      '-object', `memory-backend-memfd,id=mem,size=${memMiB}M,share=on`,
      '-machine', 'q35,memory-backend=mem',
      ...deviceArgs,
      '-kernel', image.kernel,
      '-initrd', initrd,
      // no_timer_check: on an overloaded host TCG's timer can miss the IO-APIC check and the kernel panics at boot.
      '-append', 'console=ttyS0 quiet panic=-1 no_timer_check',
      '-nographic',
      '-no-reboot',
      '-nodefaults',
      '-serial', 'stdio',
      ...(opts.extraArgs ?? []),
    ];
    const debug = process.env.VHOSTD_GUEST_DEBUG === '1';
    return await new Promise<GuestRun>((resolve, reject) => {
      const qemu = tied(opts.qemu ?? 'qemu-system-x86_64', args);
      const child = spawn(qemu.command, qemu.args, { stdio: ['pipe', 'pipe', 'pipe'] });
      let output = '';
      let timedOut = false;
      const onData = (chunk: Buffer): void => {
        const text = chunk.toString('utf8').replace(/\r/g, '');
        output += text;
        if (opts.onOutput) opts.onOutput(text);
        if (debug) process.stderr.write(text);
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      const onAbort = (): void => {
        child.kill('SIGKILL');
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      child.on('error', (err) => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        reject(err);
      });
      child.on('close', (status, signal) => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        const markers = parseMarkers(output);
        resolve({ output, ...markers, timedOut, qemuStatus: status, qemuSignal: signal });
      });
    });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
