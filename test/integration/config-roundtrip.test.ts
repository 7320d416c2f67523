/**
 * save_config → `-c` round trip against real vhostd processes: a target
 * configured over RPC (malloc and null bdevs with UUIDs, controllers with
 * cpumasks and read-only, QoS limits and interrupt coalescing), its config
 * saved with vhostd-rpc save_config, a second target started with `-c` of
 * that file: framework_get_config of every subsystem, bdev_get_bdevs and
 * vhost_get_controllers (but the socket paths) are the same in both.
 * Thread: test main thread.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../lib/repo';
import { startVhostd } from '../lib/vhostd';

t.setTimeout(180_000);

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(repoRoot(), 'bin', 'vhostd-rpc.js'), ...args], (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

t.test('save_config of a running target loads back into an identical target', async (t) => {
  const a = await startVhostd({ cpumask: '0x3' });
  t.teardown(() => a.stop());
  await a.rpc('bdev_malloc_create', { name: 'M0', num_blocks: 4096, block_size: 512, uuid: '6f2a0ae2-3c1b-4b5e-9d1e-0123456789ab' });
  await a.rpc('bdev_malloc_create', { name: 'M1', num_blocks: 1024, block_size: 4096 });
  await a.rpc('bdev_null_create', { name: 'N0', num_blocks: 8192, block_size: 512 });
  await a.rpc('vhost_create_blk_controller', { ctrlr: 'c0', dev_name: 'M0', cpumask: '0x1' });
  await a.rpc('vhost_create_blk_controller', { ctrlr: 'c1', dev_name: 'M1', cpumask: '0x2', readonly: true });
  await a.rpc('vhost_create_blk_controller', { ctrlr: 'c2', dev_name: 'N0' });
  await a.rpc('bdev_null_create', { name: 'S0', num_blocks: 1024, block_size: 4096 });
  await a.rpc('bdev_malloc_create', { name: 'S1', num_blocks: 1024, block_size: 512 });
  await a.rpc('vhost_create_scsi_controller', { ctrlr: 's0', cpumask: '0x2' });
  // In ascending target order: SCSI device ids are handed out in creation order (as SPDK's), and a config replays targets in that order.
  await a.rpc('vhost_scsi_controller_add_target', { ctrlr: 's0', scsi_target_num: -1, bdev_name: 'S1' });
  await a.rpc('vhost_scsi_controller_add_target', { ctrlr: 's0', scsi_target_num: 5, bdev_name: 'S0' });
  // nvmf: a subsystem with two namespaces (no listener: the copy runs beside the original) and a seed-era NVMe controller.
  await a.rpc('bdev_malloc_create', { name: 'M2', num_blocks: 2048, block_size: 512 });
  await a.rpc('bdev_null_create', { name: 'N1', num_blocks: 2048, block_size: 4096 });
  await a.rpc('bdev_malloc_create', { name: 'M3', num_blocks: 2048, block_size: 512 });
  await a.rpc('nvmf_create_transport', { trtype: 'VFIOUSER', max_io_qpairs_per_ctrlr: 9 });
  await a.rpc('nvmf_create_subsystem', { nqn: 'nqn.2026-11.io.vhostd:rt', serial_number: 'RT01', model_number: 'roundtrip', allow_any_host: true, max_namespaces: 8 });
  await a.rpc('nvmf_subsystem_add_ns', { nqn: 'nqn.2026-11.io.vhostd:rt', namespace: { bdev_name: 'M2', nsid: 5, nguid: '00112233445566778899AABBCCDDEEFF' } });
  await a.rpc('nvmf_subsystem_add_ns', { nqn: 'nqn.2026-11.io.vhostd:rt', namespace: { bdev_name: 'N1' } });
  await a.rpc('vhost_create_nvme_controller', { ctrlr: 'n0', io_queues: 3, cpumask: '0x2' });
  await a.rpc('vhost_nvme_controller_add_ns', { ctrlr: 'n0', bdev_name: 'M3' });

  const methods = (await a.rpc('rpc_get_methods')) as string[];
  const hasQos = methods.includes('bdev_set_qos_limit');
  const hasCoalescing = methods.includes('vhost_controller_set_coalescing');
  if (hasQos) {
    await a.rpc('bdev_set_qos_limit', { name: 'M0', rw_ios_per_sec: 20000, rw_mbytes_per_sec: 100 });
    await a.rpc('bdev_set_qos_limit', { name: 'N0', r_mbytes_per_sec: 10, w_mbytes_per_sec: 20 });
  } else {
    t.comment('NOT COVERED: bdev_set_qos_limit is not served by this build');
  }
  if (hasCoalescing) {
    await a.rpc('vhost_controller_set_coalescing', { ctrlr: 'c1', delay_base_us: 80, iops_threshold: 60000 });
  } else {
    t.comment('NOT COVERED: vhost_controller_set_coalescing is not served by this build');
  }

  const saved = await cli(['-s', a.rpcSocket, 'save_config']);
  t.equal(saved.code, 0, saved.stderr);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-roundtrip-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, saved.stdout);
  const text = saved.stdout;
  if (hasQos) t.match(text, /"bdev_set_qos_limit"/, 'QoS is in the saved config');
  if (hasCoalescing) t.match(text, /"vhost_controller_set_coalescing"/, 'coalescing is in the saved config');

  const b = await startVhostd({ cpumask: '0x3', extraArgs: ['-c', file] });
  t.teardown(() => b.stop());

  const subsystems = (await a.rpc('framework_get_subsystems')) as { subsystem: string }[];
  t.same(await b.rpc('framework_get_subsystems'), subsystems);
  for (const { subsystem } of subsystems) {
    const ca = await a.rpc('framework_get_config', { name: subsystem });
    // SPDK's scsi subsystem has no state of its own (its devices are vhost_scsi's targets).
    if (subsystem !== 'scsi') t.ok(Array.isArray(ca) && ca.length > 0, `${subsystem}: something to compare`);
    t.same(await b.rpc('framework_get_config', { name: subsystem }), ca, `${subsystem}: framework_get_config identical`);
  }
  t.same(await b.rpc('bdev_get_bdevs'), await a.rpc('bdev_get_bdevs'), 'bdev_get_bdevs identical (uuids, rate limits included)');
  const ctrlrs = async (h: typeof a): Promise<unknown> =>
    ((await h.rpc('vhost_get_controllers')) as { socket: string }[]).map((c) => ({ ...c, socket: path.basename(c.socket) }));
  t.same(await ctrlrs(b), await ctrlrs(a), 'vhost_get_controllers identical (cpumasks, readonly, coalescing)');
  const subsystemsOf = async (h: typeof a): Promise<unknown> =>
    ((await h.rpc('nvmf_get_subsystems')) as { listen_addresses: { traddr: string }[] }[]).map((s) => ({
      ...s,
      listen_addresses: s.listen_addresses.map((l) => ({ ...l, traddr: path.basename(l.traddr) })),
    }));
  t.same(await subsystemsOf(b), await subsystemsOf(a), 'nvmf_get_subsystems identical (serials, nsids, NGUIDs, UUIDs)');

  // The copy saves to the same text.
  const again = await cli(['-s', b.rpcSocket, 'save_config']);
  t.equal(again.stdout, saved.stdout, 'save_config of the copy is byte for byte the same');
});
