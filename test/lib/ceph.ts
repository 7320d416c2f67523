/**
 * A real single-node Ceph cluster for the rbd tests, started by
 * scripts/ceph-cluster.sh (Debian's ceph-mon, ceph-mgr, ceph-osd: one
 * BlueStore OSD over a file, pools of size 1) in its own temporary
 * directory, and removed by stop(). When the packages are missing the start
 * fails with a message naming them: the tests fail, never skip.
 * Main-thread test helper.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from './repo';

export interface CephCluster {
  dir: string;
  /** ceph.conf (mon host, keyring path for client.admin). */
  conf: string;
  keyring: string;
  /** 127.0.0.1:port of the monitor. */
  monHost: string;
  /** client.admin's secret. */
  key: string;
  pool: string;
  /** How long the start took (ms). */
  startMs: number;
  /** `rbd -c conf ARGS` → stdout. */
  rbd(...args: string[]): Promise<string>;
  /** `ceph -c conf ARGS` → stdout. */
  ceph(...args: string[]): Promise<string>;
  createImage(name: string, sizeMiB: number): Promise<void>;
  osdStop(): Promise<void>;
  osdStart(): Promise<void>;
  stop(): Promise<void>;
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

const SCRIPT = () => path.join(repoRoot(), 'scripts', 'ceph-cluster.sh');

export async function startCephCluster(images: { name: string; sizeMiB: number }[] = [], pool = 'rbd'): Promise<CephCluster> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-ceph-'));
  const t0 = Date.now();
  let out: string;
  try {
    out = await run('bash', [SCRIPT(), 'start', dir, pool, ...images.map((i) => `${i.name}:${i.sizeMiB}`)], 180_000);
  } catch (err) {
    await run('bash', [SCRIPT(), 'stop', dir], 60_000).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const startMs = Date.now() - t0;
  const env = new Map(
    out
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as [string, string]),
  );
  const conf = env.get('CEPH_CONF') as string;
  return {
    dir,
    conf,
    keyring: env.get('CEPH_KEYRING') as string,
    monHost: env.get('CEPH_MON_HOST') as string,
    key: env.get('CEPH_KEY') as string,
    pool,
    startMs,
    rbd: (...args) => run('rbd', ['-c', conf, ...args], 120_000),
    ceph: (...args) => run('ceph', ['-c', conf, ...args], 120_000),
    createImage: async (name, sizeMiB) => {
      await run('bash', [SCRIPT(), 'image', dir, pool, name, String(sizeMiB)], 120_000);
    },
    osdStop: async () => {
      await run('bash', [SCRIPT(), 'osd-stop', dir], 60_000);
    },
    osdStart: async () => {
      await run('bash', [SCRIPT(), 'osd-start', dir], 180_000);
    },
    stop: async () => {
      await run('bash', [SCRIPT(), 'stop', dir], 120_000);
    },
  };
}
