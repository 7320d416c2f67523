/**
 * End-to-end NVMe over vfio-user: the real vhostd (`node bin/vhostd.js -m 0x2`)
 * serves an NVMe controller to a Linux guest under upstream QEMU 10.2's
 * vfio-user-pci (TCG), set up with SPDK's own rpc.py (nvmf_create_transport
 * -t VFIOUSER, nvmf_create_subsystem, nvmf_subsystem_add_ns,
 * nvmf_subsystem_add_listener). The guest's nvme driver and nvme-cli check:
 * disk size and LBA size, id-ctrl / id-ns / smart-log fields, fio randrw with
 * crc32c verification over 2 I/O queues, discard, flush, a namespace hot
 * added and hot removed while the guest runs, data that reads back after a
 * guest reboot and after a vhostd restart from its saved config (a file
 * bdev namespace), and the seed-era vhost_create_nvme_controller.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { bootGuest, qemuVfioUser, type GuestRun } from '../lib/guest';
import { assertCompleted, tail } from '../lib/guest-checks';
import { fioVerify, readPattern, trimAndFlush, writePattern } from '../lib/guest-scripts';
import { runRpcPy, spdkRpcDir } from '../lib/spdk-rpc';
import { startVhostd, type VhostdHandle } from '../lib/vhostd';

t.setTimeout(1_200_000);

const NQN = 'nqn.2026-11.io.vhostd:nvme0';
const MALLOC_BLOCKS = 524288; // 256 MiB of 512 B
const FILE_BYTES = 64 << 20;
const HOT_BLOCKS = 32768; // 16 MiB of 512 B

/** Geometry of one namespace's disk, and nvme-cli's view of the controller and namespace. */
function probeNvme(dev: string): string {
  return `
wait_for /dev/${dev} 300 || { echo "no /dev/${dev}; /sys/block: $(ls /sys/block)"; dmesg | grep -i nvme; exit 10; }
value ${dev}_size $(cat /sys/block/${dev}/size)
value ${dev}_lbs $(cat /sys/block/${dev}/queue/logical_block_size)
value ${dev}_hwq $(ls /sys/block/${dev}/mq | wc -l)
value ${dev}_cache $(cat /sys/block/${dev}/queue/write_cache)
value ${dev}_discard_max $(cat /sys/block/${dev}/queue/discard_max_bytes)
`;
}

/** One field of nvme-cli's plain output ("name : value"), trailing blanks dropped. */
function nvmeField(cmd: string, field: string, name: string): string {
  return `value ${name} "$(${cmd} | sed -n 's/^${field}[[:space:]]*: *//p' | head -n 1 | sed 's/[[:space:]]*$//')"\n`;
}

/** Completions per I/O queue from the nvme driver's MSI-X vectors (nvme0q1..), as irq_nvmeN values. */
const NVME_QUEUE_IRQS = `
awk '/nvme0q[1-9][0-9]*/ { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break; print "@@VALUE irq_" $NF " " n }' /proc/interrupts
`;

function queueIrqs(run: GuestRun): number[] {
  const out: number[] = [];
  for (const [k, v] of run.values) {
    const m = /^irq_nvme0q(\d+)$/.exec(k);
    if (m) out[Number(m[1]) - 1] = Number(v);
  }
  return Array.from(out, (n) => n ?? 0);
}

async function rpcPy(t: Test, vhostd: VhostdHandle, args: string[]): Promise<string> {
  const r = await runRpcPy(spdkRpcDir(), ['-s', vhostd.rpcSocket, ...args]);
  t.equal(r.code, 0, `rpc.py ${args.join(' ')}`, { stderr: r.stderr });
  return r.stdout;
}

t.test('vhostd serves NVMe over vfio-user to a Linux guest', async (t) => {
  const qemu = qemuVfioUser();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-nvme-'));
  const traddr = path.join(work, 'nvme0');
  const dataFile = path.join(work, 'ns2.img');
  fs.writeFileSync(dataFile, '');
  fs.truncateSync(dataFile, FILE_BYTES);
  let vhostd: VhostdHandle | null = await startVhostd({ cpumask: '0x2' });
  t.teardown(async () => {
    if (vhostd !== null) await vhostd.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  t.equal(await vhostd.rpc('bdev_malloc_create', { name: 'Malloc0', num_blocks: MALLOC_BLOCKS, block_size: 512 }), 'Malloc0');
  t.equal(await vhostd.rpc('bdev_aio_create', { name: 'Aio0', filename: dataFile }), 'Aio0');
  t.equal(await vhostd.rpc('bdev_malloc_create', { name: 'Malloc1', num_blocks: HOT_BLOCKS, block_size: 512 }), 'Malloc1');
  await rpcPy(t, vhostd, ['nvmf_create_transport', '-t', 'VFIOUSER']);
  await rpcPy(t, vhostd, ['nvmf_create_subsystem', NQN, '-a', '-s', 'VHOSTD0001', '-d', 'vhostd e2e']);
  await rpcPy(t, vhostd, ['nvmf_subsystem_add_ns', NQN, 'Malloc0']);
  await rpcPy(t, vhostd, ['nvmf_subsystem_add_ns', NQN, 'Aio0']);
  await rpcPy(t, vhostd, ['nvmf_subsystem_add_listener', NQN, '-t', 'VFIOUSER', '-a', traddr, '-s', '0']);
  const socket = path.join(traddr, 'cntrl');
  t.ok(fs.existsSync(socket), 'the vfio-user socket is <traddr>/cntrl');
  const subs = JSON.parse(await rpcPy(t, vhostd, ['nvmf_get_subsystems', NQN])) as { namespaces: { nsid: number; bdev_name: string }[]; serial_number: string }[];
  t.same(
    subs[0].namespaces.map((n) => [n.nsid, n.bdev_name]),
    [
      [1, 'Malloc0'],
      [2, 'Aio0'],
    ],
    'nvmf_get_subsystems lists the namespaces',
  );

  let written: string | undefined;
  await t.test('first boot: identify, fio verify over 2 queues, discard, flush, hot add/remove, write a pattern', async (t) => {
    const script =
      probeNvme('nvme0n1') +
      nvmeField('nvme id-ctrl /dev/nvme0', 'sn', 'sn') +
      nvmeField('nvme id-ctrl /dev/nvme0', 'mn', 'mn') +
      nvmeField('nvme id-ctrl /dev/nvme0', 'subnqn', 'subnqn') +
      nvmeField('nvme id-ctrl /dev/nvme0', 'nn', 'nn') +
      nvmeField('nvme id-ns /dev/nvme0n1', 'nsze', 'nsze') +
      nvmeField('nvme id-ns /dev/nvme0n1', 'flbas', 'flbas') +
      `value lbaf0 "$(nvme id-ns /dev/nvme0n1 | grep '^lbaf  0' | sed 's/ *$//')"\n` +
      fioVerify({ dev: 'nvme0n1', jobs: 2, sizeMiB: 32, runtimeS: 15 }) +
      NVME_QUEUE_IRQS +
      trimAndFlush('nvme0n1') +
      nvmeField('nvme smart-log /dev/nvme0', 'critical_warning', 'critical_warning') +
      nvmeField('nvme smart-log /dev/nvme0', 'host_write_commands', 'host_write_commands') +
      nvmeField('nvme smart-log /dev/nvme0', 'host_read_commands', 'host_read_commands') +
      writePattern(4, 'nvme0n2') +
      // Hot add: the test adds namespace 3 once it sees this line; the guest's driver rescans on the event.
      'echo "@@VALUE hotadd_ready 1"\n' +
      'check hotadd wait_for /dev/nvme0n3 300\n' +
      'value n3_size $(cat /sys/block/nvme0n3/size)\n' +
      'echo "@@VALUE hotremove_ready 1"\n' +
      'i=0; while [ -e /dev/nvme0n3 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n' +
      'value n3_gone $([ -e /dev/nvme0n3 ] && echo no || echo yes)\n' +
      'value namespaces "$(ls /sys/block | grep nvme | tr "\\n" " ")"\n';
    let seen = '';
    let added: Promise<unknown> | null = null;
    let removed: Promise<unknown> | null = null;
    const run = await bootGuest({
      qemu,
      sockets: [{ path: socket, kind: 'vfio-user' }],
      script,
      smp: 2,
      timeoutMs: 400_000,
      onOutput: (text) => {
        seen += text;
        if (added === null && seen.includes('@@VALUE hotadd_ready 1')) {
          added = vhostd!.rpc('nvmf_subsystem_add_ns', { nqn: NQN, namespace: { bdev_name: 'Malloc1', nsid: 3 } });
        }
        if (removed === null && seen.includes('@@VALUE hotremove_ready 1')) {
          removed = vhostd!.rpc('nvmf_subsystem_remove_ns', { nqn: NQN, nsid: 3 });
        }
      },
    });
    assertCompleted(t, run, 'first boot');
    t.equal(run.values.get('nvme0n1_size'), String(MALLOC_BLOCKS), 'nvme0n1 is 256 MiB');
    t.equal(run.values.get('nvme0n1_lbs'), '512', 'with 512-byte LBAs');
    t.equal(run.values.get('nvme0n1_hwq'), '2', 'and 2 I/O queues (smp 2)');
    t.equal(run.values.get('nvme0n1_cache'), 'write back', 'volatile write cache reported: flushes are sent');
    t.not(run.values.get('nvme0n1_discard_max'), '0', 'discard offered (Dataset Management)');
    t.equal(run.values.get('sn'), 'VHOSTD0001', 'id-ctrl sn');
    t.equal(run.values.get('mn'), 'vhostd e2e', 'id-ctrl mn');
    t.equal(run.values.get('subnqn'), NQN, 'id-ctrl subnqn');
    t.equal(run.values.get('nn'), '32', 'id-ctrl nn (max_namespaces)');
    t.equal(Number(run.values.get('nsze')), MALLOC_BLOCKS, 'id-ns nsze');
    t.equal(Number(run.values.get('flbas')), 0, 'id-ns flbas: format 0');
    t.match(run.values.get('lbaf0') ?? '', /lbads:9 .*in use/, 'id-ns LBA format 0: 512 bytes, in use');
    t.equal(run.results.get('fio'), 0, 'fio randrw crc32c verify passed', { output: tail(run) });
    const irqs = queueIrqs(run);
    t.equal(irqs.length, 2, 'two I/O queue vectors reported', { irqs });
    t.ok(irqs.length === 2 && irqs.every((n) => n > 0), `every I/O queue completed I/O (${irqs.join(', ')})`);
    t.equal(run.results.get('discard'), 0, 'blkdiscard succeeded');
    t.equal(run.results.get('flush'), 0, 'fio writes with fsync verified');
    t.equal(run.values.get('critical_warning'), '0', 'smart-log critical_warning 0');
    t.ok(Number((run.values.get('host_write_commands') ?? '0').replace(/,/g, '')) > 1000, `smart-log counts writes (${run.values.get('host_write_commands')})`);
    t.ok(Number((run.values.get('host_read_commands') ?? '0').replace(/,/g, '')) > 1000, `smart-log counts reads (${run.values.get('host_read_commands')})`);
    t.equal(run.results.get('write'), 0, 'pattern written to nvme0n2 (the file namespace)');
    written = run.values.get('written');
    t.equal(await added, 3, 'nvmf_subsystem_add_ns while the guest runs returns nsid 3');
    t.equal(run.results.get('hotadd'), 0, 'the guest sees the hot-added namespace', { output: tail(run) });
    t.equal(run.values.get('n3_size'), String(HOT_BLOCKS), 'with its size');
    t.equal(await removed, true, 'nvmf_subsystem_remove_ns while the guest runs');
    t.equal(run.values.get('n3_gone'), 'yes', 'the guest sees the namespace go', { output: tail(run) });
    t.ok(vhostd!.daemon.running, 'vhostd still running');
  });

  await t.test('second boot (a guest reboot) reads the pattern back', async (t) => {
    const run = await bootGuest({ qemu, sockets: [{ path: socket, kind: 'vfio-user' }], script: probeNvme('nvme0n2') + readPattern(4, 'nvme0n2'), smp: 1, timeoutMs: 300_000 });
    assertCompleted(t, run, 'second boot');
    t.equal(run.values.get('nvme0n2_size'), String(FILE_BYTES / 512), 'nvme0n2 is the 64 MiB file');
    t.ok(written !== undefined && run.values.get('read') === written, 'data written in the first boot reads back');
  });

  await t.test('vhostd restarted from its saved config serves the same namespaces and data', async (t) => {
    // SPDK's rpc.py save_config (framework_get_subsystems + framework_get_config per subsystem).
    const saved = await rpcPy(t, vhostd!, ['save_config']);
    const config = JSON.parse(saved) as unknown;
    const configFile = path.join(work, 'config.json');
    fs.writeFileSync(configFile, saved);
    const nvmf = (config as { subsystems: { subsystem: string; config: { method: string }[] }[] }).subsystems.find((s) => s.subsystem === 'nvmf');
    t.same(
      nvmf?.config.map((c) => c.method),
      ['nvmf_create_transport', 'nvmf_create_subsystem', 'nvmf_subsystem_add_ns', 'nvmf_subsystem_add_ns', 'nvmf_subsystem_add_listener'],
      'save_config has the nvmf calls',
    );
    const exit = await vhostd!.stop();
    vhostd = null;
    t.equal(exit.code, 0, 'first vhostd stops cleanly');
    vhostd = await startVhostd({ cpumask: '0x2', extraArgs: ['-c', configFile] });
    const run = await bootGuest({
      qemu,
      sockets: [{ path: socket, kind: 'vfio-user' }],
      script: probeNvme('nvme0n1') + probeNvme('nvme0n2') + readPattern(4, 'nvme0n2'),
      smp: 1,
      timeoutMs: 300_000,
    });
    assertCompleted(t, run, 'boot after restart');
    t.equal(run.values.get('nvme0n1_size'), String(MALLOC_BLOCKS), 'nvme0n1 is back');
    t.ok(written !== undefined && run.values.get('read') === written, 'the file namespace kept its data across the restart');
  });

  await t.test('seed-era vhost_create_nvme_controller serves the same device at -S dir/ctrlr', async (t) => {
    const v = vhostd!;
    t.equal(await v.rpc('bdev_malloc_create', { name: 'Legacy0', num_blocks: 65536, block_size: 4096 }), 'Legacy0');
    t.equal(await v.rpc('vhost_create_nvme_controller', { ctrlr: 'vnvme0', io_queues: 2 }), true);
    t.equal(await v.rpc('vhost_nvme_controller_add_ns', { ctrlr: 'vnvme0', bdev_name: 'Legacy0' }), true);
    const legacy = path.join(v.socketOf('vnvme0'), 'cntrl');
    t.ok(fs.existsSync(legacy), 'socket at <-S>/vnvme0/cntrl');
    const run = await bootGuest({ qemu, sockets: [{ path: legacy, kind: 'vfio-user' }], script: probeNvme('nvme0n1') + fioVerify({ dev: 'nvme0n1', jobs: 1, sizeMiB: 16, runtimeS: 5 }), smp: 1, timeoutMs: 300_000 });
    assertCompleted(t, run, 'legacy boot');
    t.equal(run.values.get('nvme0n1_size'), String((65536 * 4096) / 512), 'a 256 MiB namespace');
    t.equal(run.values.get('nvme0n1_lbs'), '4096', 'with 4096-byte LBAs');
    t.equal(run.results.get('fio'), 0, 'fio verify passed on 4 KiB LBAs');
    t.equal(await v.rpc('nvmf_delete_subsystem', { nqn: 'nqn.2016-06.io.spdk:vhost.vnvme0' }), true, 'deleted like any subsystem');
    t.notOk(fs.existsSync(legacy), 'its socket is gone');
  });

  const exit = await vhostd!.stop();
  vhostd = null;
  t.same({ code: exit.code, signal: exit.signal, killed: exit.killed }, { code: 0, signal: null, killed: false }, 'vhostd stops gracefully');
});
