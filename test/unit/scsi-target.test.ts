/**
 * The SCSI target (engine/scsi), which knows no virtio: a table of CDB →
 * status / sense / data / residual run against real bdevs (malloc over a
 * SharedArrayBuffer, null) through a real WorkerBdevLayer, then persistent
 * and SPC-2 reservation sequences, unit attentions, resets and task
 * management, error paths through a recording bdev module.
 */
import t, { type Test } from 'tap';
import { BdevIoType } from '../../engine/bdev/bdev';
import { WorkerBdevLayer } from '../../engine/bdev/layer';
import { BDEV_MODULES } from '../../engine/bdev/modules';
import type { BdevDesc } from '../../engine/control';
import { ScsiLun, type ScsiLunOptions } from '../../engine/scsi/lun';
import { ScsiDataDir, ScsiResidual, ScsiStatus, TmfFunction, TmfResponse } from '../../engine/scsi/spec';
import { ScsiTarget } from '../../engine/scsi/target';
import { cdb, prParams, rd32, rd64, recordingModule, run, TestTask, unmapParams, type RunOptions } from '../lib/scsi';

const MALLOC_BLOCKS = 2048;
const NULL_BLOCKS = 100000;

function mallocDesc(name = 'Malloc0', blocks = MALLOC_BLOCKS, bs = 512): { desc: BdevDesc; storage: Uint8Array } {
  const sab = new SharedArrayBuffer(blocks * bs);
  return { desc: { name, module: 'malloc', blockSize: bs, numBlocks: blocks, params: { storage: sab } }, storage: new Uint8Array(sab) };
}

function nullDesc(name = 'Null0', blocks = NULL_BLOCKS, bs = 4096): BdevDesc {
  return { name, module: 'null', blockSize: bs, numBlocks: blocks, params: undefined };
}

/** LUN 0: malloc (512 B blocks), LUN 1: null (4 KiB blocks), LUN 2: read-only malloc. No power-on unit attention. */
function env(options: ScsiLunOptions = { powerOnUnitAttention: false }) {
  const layer = new WorkerBdevLayer();
  const target = new ScsiTarget(8);
  const m = mallocDesc();
  const ro = mallocDesc('Malloc1', 64);
  const lun0 = new ScsiLun(0, layer, m.desc, { identifier: 'uuid-1234', ...options });
  const lun1 = new ScsiLun(1, layer, nullDesc(), options);
  const lun2 = new ScsiLun(2, layer, ro.desc, { ...options, readonly: true });
  target.addLun(lun0);
  target.addLun(lun1);
  target.addLun(lun2);
  const go = (c: number[], o: RunOptions = {}) => run(target, layer, c, o);
  return { layer, target, storage: m.desc.params && m.storage, lun0, lun1, lun2, go };
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

const ascii = (b: Uint8Array, off: number, len: number) => Buffer.from(b.subarray(off, off + len)).toString('latin1');

interface Case {
  name: string;
  cdb: number[];
  o?: RunOptions;
  status?: ScsiStatus;
  /** [sense key, ASC, ASCQ] */
  sense?: [number, number, number];
  transferred?: number;
  residual?: [ScsiResidual, number];
  check?: (t: Test, data: Uint8Array, task: TestTask) => void;
}

const CC = ScsiStatus.CheckCondition;
const ILLEGAL_CDB: [number, number, number] = [5, 0x24, 0];

const table: Case[] = [
  { name: 'TEST UNIT READY', cdb: cdb.tur(), status: ScsiStatus.Good, transferred: 0, residual: [ScsiResidual.None, 0] },
  {
    name: 'INQUIRY standard, 96-byte buffer: 36 bytes, underflow 60',
    cdb: cdb.inquiry(false, 0, 96),
    o: { inLen: 96 },
    transferred: 36,
    residual: [ScsiResidual.Underflow, 60],
    check: (t, d) => {
      t.equal(d[0], 0x00, 'connected direct-access device');
      t.equal(d[2], 0x06, 'SPC-4');
      t.equal(d[3] & 0x0f, 2, 'response data format 2');
      t.equal(d[4], 31, 'additional length');
      t.equal(d[7] & 0x02, 0x02, 'CMDQUE');
      t.equal(ascii(d, 8, 8), 'VHOSTD  ');
      t.equal(ascii(d, 16, 16), 'Virtual Disk    ');
      t.equal(ascii(d, 32, 4), '0001');
      t.equal(d[36], 0xee, 'nothing written past the data');
    },
  },
  { name: 'INQUIRY allocation 5 with a 5-byte buffer', cdb: cdb.inquiry(false, 0, 5), o: { inLen: 5 }, transferred: 5, residual: [ScsiResidual.None, 0] },
  { name: 'INQUIRY allocation 36 with a 20-byte buffer: overflow 16', cdb: cdb.inquiry(false, 0, 36), o: { inLen: 20 }, transferred: 20, residual: [ScsiResidual.Overflow, 16] },
  { name: 'INQUIRY page code without EVPD', cdb: cdb.inquiry(false, 0x80, 96), o: { inLen: 96 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'INQUIRY CMDDT', cdb: [0x12, 0x02, 0, 0, 96, 0], o: { inLen: 96 }, status: CC, sense: ILLEGAL_CDB },
  {
    name: 'VPD 00 supported pages (malloc: with B2)',
    cdb: cdb.inquiry(true, 0x00, 64),
    o: { inLen: 64 },
    transferred: 10,
    check: (t, d) => t.same([...d.subarray(0, 10)], [0, 0, 0, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]),
  },
  {
    name: 'VPD 00 on a null bdev: no B2 (no unmap)',
    cdb: cdb.inquiry(true, 0x00, 64),
    o: { inLen: 64, lun: 1 },
    transferred: 9,
    check: (t, d) => t.same([...d.subarray(4, 9)], [0x00, 0x80, 0x83, 0xb0, 0xb1]),
  },
  {
    name: 'VPD 80 unit serial number from the identifier',
    cdb: cdb.inquiry(true, 0x80, 64),
    o: { inLen: 64 },
    transferred: 13,
    check: (t, d) => {
      t.equal(d[1], 0x80);
      t.equal(d[3], 9);
      t.equal(ascii(d, 4, 9), 'uuid-1234');
    },
  },
  {
    name: 'VPD 83: NAA locally assigned + T10 vendor ID designators',
    cdb: cdb.inquiry(true, 0x83, 255),
    o: { inLen: 255 },
    check: (t, d) => {
      t.equal(d[1], 0x83);
      const len = (d[2] << 8) | d[3];
      t.equal(len, 12 + 4 + 8 + 9, 'page length');
      t.equal(d[4] & 0x0f, 1, 'binary');
      t.equal(d[5] & 0x3f, 0x03, 'LU association, NAA');
      t.equal(d[7], 8);
      t.equal(d[8] >> 4, 3, 'NAA 3h, locally assigned');
      t.equal(d[16] & 0x0f, 2, 'ASCII');
      t.equal(d[17] & 0x3f, 0x01, 'T10 vendor ID');
      t.equal(ascii(d, 20, 17), 'VHOSTD  uuid-1234');
    },
  },
  {
    name: 'VPD B0 block limits',
    cdb: cdb.inquiry(true, 0xb0, 64),
    o: { inLen: 64 },
    transferred: 64,
    check: (t, d) => {
      t.equal((d[2] << 8) | d[3], 0x3c);
      t.equal(d[4] & 1, 1, 'WSNZ');
      t.equal(d[5], 128, 'MAXIMUM COMPARE AND WRITE LENGTH (64 KiB of 512-byte blocks)');
      t.equal((d[6] << 8) | d[7], 8, 'OPTIMAL TRANSFER LENGTH GRANULARITY 4 KiB');
      t.equal(rd32(d, 8), 8192, 'MAXIMUM TRANSFER LENGTH 4 MiB');
      t.equal(rd32(d, 20), 524288, 'MAXIMUM UNMAP LBA COUNT 256 MiB');
      t.equal(rd32(d, 24), 256, 'MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT');
      t.equal(rd64(d, 36), 524288, 'MAXIMUM WRITE SAME LENGTH');
    },
  },
  { name: 'VPD B1 block device characteristics: non-rotating', cdb: cdb.inquiry(true, 0xb1, 64), o: { inLen: 64 }, check: (t, d) => t.equal((d[4] << 8) | d[5], 1) },
  {
    name: 'VPD B2 logical block provisioning: LBPU, LBPWS, LBPWS10',
    cdb: cdb.inquiry(true, 0xb2, 64),
    o: { inLen: 64 },
    transferred: 8,
    check: (t, d) => t.equal(d[5] & 0xe0, 0xe0),
  },
  { name: 'VPD B2 on a bdev without unmap', cdb: cdb.inquiry(true, 0xb2, 64), o: { inLen: 64, lun: 1 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'VPD page not offered', cdb: cdb.inquiry(true, 0x99, 64), o: { inLen: 64 }, status: CC, sense: ILLEGAL_CDB },
  {
    name: 'READ CAPACITY 10',
    cdb: cdb.readCapacity10(),
    o: { inLen: 8 },
    transferred: 8,
    check: (t, d) => {
      t.equal(rd32(d, 0), MALLOC_BLOCKS - 1);
      t.equal(rd32(d, 4), 512);
    },
  },
  {
    name: 'READ CAPACITY 16 with LBPME (malloc unmaps)',
    cdb: cdb.readCapacity16(32),
    o: { inLen: 32 },
    transferred: 32,
    check: (t, d) => {
      t.equal(rd64(d, 0), MALLOC_BLOCKS - 1);
      t.equal(rd32(d, 8), 512);
      t.equal(d[14] & 0x80, 0x80, 'LBPME');
    },
  },
  {
    name: 'READ CAPACITY 16 on null: 4 KiB blocks, no LBPME',
    cdb: cdb.readCapacity16(32),
    o: { inLen: 32, lun: 1 },
    check: (t, d) => {
      t.equal(rd64(d, 0), NULL_BLOCKS - 1);
      t.equal(rd32(d, 8), 4096);
      t.equal(d[14] & 0x80, 0);
    },
  },
  { name: 'SERVICE ACTION IN(16) other than READ CAPACITY', cdb: cdb.readCapacity16(32, 0x12), o: { inLen: 32 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'READ 10 past the end', cdb: cdb.read10(MALLOC_BLOCKS - 1, 2), o: { inLen: 1024 }, status: CC, sense: [5, 0x21, 0] },
  { name: 'READ 16 at a huge LBA', cdb: cdb.read16(2 ** 40, 1), o: { inLen: 512 }, status: CC, sense: [5, 0x21, 0] },
  { name: 'WRITE 12 past the end', cdb: cdb.write12(MALLOC_BLOCKS, 1), o: { out: new Uint8Array(512) }, status: CC, sense: [5, 0x21, 0] },
  { name: 'READ 10 of 0 blocks at the end: GOOD, nothing moved', cdb: cdb.read10(MALLOC_BLOCKS, 0), status: ScsiStatus.Good, transferred: 0 },
  { name: 'READ 10 longer than MAXIMUM TRANSFER LENGTH', cdb: cdb.read10(0, 1025), o: { inLen: 4096, lun: 1 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'READ 10 with RDPROTECT (no protection information)', cdb: cdb.read10(0, 1, 0x20), o: { inLen: 512 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'READ 10 with buffers shorter than the transfer: overflow', cdb: cdb.read10(0, 4), o: { inLen: 1024 }, status: CC, sense: ILLEGAL_CDB, transferred: 0, residual: [ScsiResidual.Overflow, 1024] },
  { name: 'READ 10 with longer buffers: underflow', cdb: cdb.read10(0, 1), o: { inLen: [256, 512] }, status: ScsiStatus.Good, transferred: 512, residual: [ScsiResidual.Underflow, 256] },
  { name: 'WRITE 10 with data-in buffers (wrong direction)', cdb: cdb.write10(0, 1), o: { inLen: 512 }, status: CC, sense: ILLEGAL_CDB, transferred: 0 },
  { name: 'READ 10 in a 6-byte CDB (short CDB)', cdb: cdb.read10(0, 1), o: { inLen: 512, cdbLength: 6 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'empty CDB', cdb: [], o: { cdbLength: 0 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'FORMAT UNIT: invalid opcode on purpose', cdb: [0x04, 0, 0, 0, 0, 0], status: CC, sense: [5, 0x20, 0] },
  { name: 'LOG SENSE: invalid opcode on purpose', cdb: [0x4d, 0, 0, 0, 0, 0, 0, 0, 0, 0], status: CC, sense: [5, 0x20, 0] },
  { name: 'vendor-specific opcode C0h', cdb: [0xc0, 0, 0, 0, 0, 0], status: CC, sense: [5, 0x20, 0] },
  { name: 'SYNCHRONIZE CACHE 10', cdb: cdb.sync10(0, 0), status: ScsiStatus.Good },
  { name: 'SYNCHRONIZE CACHE 16 of a range', cdb: cdb.sync16(10, 100), status: ScsiStatus.Good },
  { name: 'SYNCHRONIZE CACHE 10 past the end', cdb: cdb.sync10(MALLOC_BLOCKS, 1), status: CC, sense: [5, 0x21, 0] },
  { name: 'SYNCHRONIZE CACHE on null (no flush): GOOD', cdb: cdb.sync10(0, 0), o: { lun: 1 }, status: ScsiStatus.Good },
  { name: 'VERIFY 10 BYTCHK 0: range only', cdb: cdb.verify10(0, 100, 0), status: ScsiStatus.Good },
  { name: 'VERIFY 10 BYTCHK 0 past the end', cdb: cdb.verify10(MALLOC_BLOCKS - 1, 2, 0), status: CC, sense: [5, 0x21, 0] },
  { name: 'VERIFY 16 BYTCHK 2 (reserved)', cdb: cdb.verify16(0, 1, 2), o: { out: new Uint8Array(512) }, status: CC, sense: ILLEGAL_CDB },
  { name: 'START STOP UNIT', cdb: cdb.startStop(), status: ScsiStatus.Good },
  {
    name: 'REQUEST SENSE without a pending condition: NO SENSE',
    cdb: cdb.requestSense(252),
    o: { inLen: 252 },
    transferred: 18,
    residual: [ScsiResidual.Underflow, 234],
    check: (t, d) => {
      t.equal(d[0], 0x70);
      t.equal(d[2], 0);
      t.equal(d[7], 10);
      t.equal(d[12], 0);
    },
  },
  { name: 'REQUEST SENSE with DESC (descriptor format not offered)', cdb: cdb.requestSense(252, true), o: { inLen: 252 }, status: CC, sense: ILLEGAL_CDB },
  {
    name: 'REPORT LUNS',
    cdb: cdb.reportLuns(256),
    o: { inLen: 256 },
    transferred: 32,
    check: (t, d) => {
      t.equal(rd32(d, 0), 24, 'LUN list length');
      t.same([...d.subarray(8, 16)], [0, 0, 0, 0, 0, 0, 0, 0]);
      t.same([...d.subarray(16, 24)], [0, 1, 0, 0, 0, 0, 0, 0]);
      t.same([...d.subarray(24, 32)], [0, 2, 0, 0, 0, 0, 0, 0]);
    },
  },
  { name: 'REPORT LUNS, well-known LUNs only: none', cdb: cdb.reportLuns(256, 1), o: { inLen: 256 }, transferred: 8, check: (t, d) => t.equal(rd32(d, 0), 0) },
  { name: 'REPORT LUNS with allocation length < 16', cdb: cdb.reportLuns(8), o: { inLen: 8 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'REPORT LUNS with SELECT REPORT 0x10', cdb: cdb.reportLuns(256, 0x10), o: { inLen: 256 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'REPORT LUNS addressed to a missing LUN still answers', cdb: cdb.reportLuns(256), o: { inLen: 256, lun: 5 }, transferred: 32 },
  { name: 'a missing LUN: LOGICAL UNIT NOT SUPPORTED', cdb: cdb.tur(), o: { lun: 5 }, status: CC, sense: [5, 0x25, 0] },
  {
    name: 'INQUIRY to a missing LUN: peripheral qualifier 3, type 1Fh',
    cdb: cdb.inquiry(false, 0, 96),
    o: { inLen: 96, lun: 5 },
    status: ScsiStatus.Good,
    transferred: 36,
    check: (t, d) => t.equal(d[0], 0x7f),
  },
  {
    name: 'MODE SENSE 6, all pages',
    cdb: cdb.modeSense6(0x3f, 255),
    o: { inLen: 255 },
    transferred: 56,
    check: (t, d) => {
      t.equal(d[0], 55, 'mode data length');
      t.equal(d[2] & 0x80, 0, 'not write-protected');
      t.equal(d[3], 8, 'block descriptor length');
      t.equal(rd32(d, 4), MALLOC_BLOCKS);
      t.equal(rd32(d, 8) & 0xffffff, 512);
      t.same([d[12], d[13]], [0x08, 0x12], 'caching page');
      t.equal(d[14] & 0x04, 0x04, 'WCE (malloc has a flush)');
      t.same([d[32], d[33]], [0x0a, 0x0a], 'control page');
      t.same([d[44], d[45]], [0x1c, 0x0a], 'informational exceptions page');
      t.equal(d[46] & 0x08, 0x08, 'DEXCPT');
    },
  },
  {
    name: 'MODE SENSE 10 caching, long LBA block descriptor',
    cdb: cdb.modeSense10(0x08, 255, 0, true),
    o: { inLen: 255 },
    transferred: 8 + 16 + 20,
    check: (t, d) => {
      t.equal((d[0] << 8) | d[1], 42);
      t.equal(d[4] & 1, 1, 'LONGLBA');
      t.equal((d[6] << 8) | d[7], 16);
      t.equal(rd64(d, 8), MALLOC_BLOCKS);
      t.equal(rd32(d, 20), 512);
      t.equal(d[24], 0x08);
    },
  },
  { name: 'MODE SENSE caching on null: WCE off (no flush)', cdb: cdb.modeSense6(0x08, 255, 0, true), o: { inLen: 255, lun: 1 }, check: (t, d) => t.equal(d[6] & 0x04, 0) },
  { name: 'MODE SENSE changeable values: WCE only', cdb: cdb.modeSense6(0x08, 255, 1, true), o: { inLen: 255 }, check: (t, d) => t.same([...d.subarray(6, 9)], [0x04, 0, 0]) },
  { name: 'MODE SENSE saved values: not supported', cdb: cdb.modeSense6(0x08, 255, 3), o: { inLen: 255 }, status: CC, sense: [5, 0x39, 0] },
  { name: 'MODE SENSE of a page not offered', cdb: cdb.modeSense6(0x19, 255), o: { inLen: 255 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'MODE SENSE of a subpage', cdb: cdb.modeSense6(0x08, 255, 0, false, 1), o: { inLen: 255 }, status: CC, sense: ILLEGAL_CDB },
  { name: 'MODE SELECT 6 with SP', cdb: cdb.modeSelect6(24, true, true), o: { out: new Uint8Array(24) }, status: CC, sense: ILLEGAL_CDB },
  { name: 'MODE SELECT 6 without PF', cdb: cdb.modeSelect6(24, false), o: { out: new Uint8Array(24) }, status: CC, sense: ILLEGAL_CDB },
  { name: 'MODE SELECT 6 shorter than its header', cdb: cdb.modeSelect6(3), o: { out: new Uint8Array(3) }, status: CC, sense: [5, 0x1a, 0] },
  { name: 'MODE SELECT 10 of a page not offered', cdb: cdb.modeSelect10(8 + 4), o: { out: Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0x19, 2, 0, 0]) }, status: CC, sense: [5, 0x26, 0] },
  { name: 'MODE SELECT 10 with the control page changed', cdb: cdb.modeSelect10(8 + 12), o: { out: Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x0a, 0x04, 0x10, 0, 0, 0, 0, 0, 0, 0, 0]) }, status: CC, sense: [5, 0x26, 0] },
  { name: 'MODE SELECT 10 with an unchanged control page', cdb: cdb.modeSelect10(8 + 12), o: { out: Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x0a, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0]) }, status: ScsiStatus.Good, transferred: 20 },
  { name: 'MODE SELECT with a wrong block length in the descriptor', cdb: cdb.modeSelect6(12), o: { out: Uint8Array.from([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x10, 0]) }, status: CC, sense: [5, 0x26, 0] },
  { name: 'read-only LU: WRITE 10', cdb: cdb.write10(0, 1), o: { out: new Uint8Array(512), lun: 2 }, status: CC, sense: [7, 0x27, 0] },
  { name: 'read-only LU: WRITE SAME 16', cdb: cdb.writeSame16(0, 1), o: { out: new Uint8Array(512), lun: 2 }, status: CC, sense: [7, 0x27, 0] },
  { name: 'read-only LU: UNMAP', cdb: cdb.unmap(24), o: { out: unmapParams([[0, 1]]), lun: 2 }, status: CC, sense: [7, 0x27, 0] },
  { name: 'read-only LU: COMPARE AND WRITE', cdb: cdb.compareAndWrite(0, 1), o: { out: new Uint8Array(1024), lun: 2 }, status: CC, sense: [7, 0x27, 0] },
  { name: 'read-only LU: READ 10 works', cdb: cdb.read10(0, 1), o: { inLen: 512, lun: 2 }, status: ScsiStatus.Good, transferred: 512 },
  { name: 'read-only LU: MODE SENSE has WP', cdb: cdb.modeSense6(0x08, 255), o: { inLen: 255, lun: 2 }, check: (t, d) => t.equal(d[2] & 0x80, 0x80) },
  { name: 'UNMAP with ANCHOR', cdb: cdb.unmap(24, true), o: { out: unmapParams([[0, 1]]) }, status: CC, sense: ILLEGAL_CDB },
  { name: 'UNMAP with a parameter list shorter than its header', cdb: cdb.unmap(4), o: { out: new Uint8Array(4) }, status: CC, sense: [5, 0x1a, 0] },
  { name: 'UNMAP of 0 bytes: nothing to do', cdb: cdb.unmap(0), status: ScsiStatus.Good },
  { name: 'UNMAP past the end', cdb: cdb.unmap(24), o: { out: unmapParams([[MALLOC_BLOCKS - 1, 2]]) }, status: CC, sense: [5, 0x21, 0] },
  { name: 'UNMAP on a bdev that cannot', cdb: cdb.unmap(24), o: { out: unmapParams([[0, 1]]), lun: 1 }, status: CC, sense: [5, 0x20, 0] },
  { name: 'UNMAP with buffers shorter than the parameter list', cdb: cdb.unmap(40), o: { out: unmapParams([[0, 1]]) }, status: CC, sense: ILLEGAL_CDB, residual: [ScsiResidual.Overflow, 16] },
  { name: 'WRITE SAME 10 of 0 blocks (WSNZ)', cdb: cdb.writeSame10(0, 0), o: { out: new Uint8Array(512) }, status: CC, sense: ILLEGAL_CDB },
  { name: 'WRITE SAME 16 with ANCHOR', cdb: cdb.writeSame16(0, 1, 0x10), o: { out: new Uint8Array(512) }, status: CC, sense: ILLEGAL_CDB },
  { name: 'WRITE SAME 16 past the end', cdb: cdb.writeSame16(MALLOC_BLOCKS - 1, 2), o: { out: new Uint8Array(512) }, status: CC, sense: [5, 0x21, 0] },
  { name: 'COMPARE AND WRITE of 0 blocks', cdb: cdb.compareAndWrite(0, 0), status: ScsiStatus.Good },
  { name: 'COMPARE AND WRITE longer than its maximum', cdb: cdb.compareAndWrite(0, 129), o: { out: new Uint8Array(129 * 1024) }, status: CC, sense: ILLEGAL_CDB },
  { name: 'PERSISTENT RESERVE OUT with a parameter list length other than 24', cdb: cdb.prOut(0, 0, 23), o: { out: new Uint8Array(23) }, status: CC, sense: [5, 0x1a, 0] },
  { name: 'PERSISTENT RESERVE OUT REGISTER with APTPL', cdb: cdb.prOut(0), o: { out: prParams(0n, 5n, 0x01) }, status: CC, sense: [5, 0x26, 0] },
  { name: 'PERSISTENT RESERVE OUT REGISTER AND MOVE (not supported, as SPDK)', cdb: cdb.prOut(7, 1), o: { out: prParams(0n, 5n) }, status: CC, sense: ILLEGAL_CDB },
  { name: 'PERSISTENT RESERVE IN unknown service action', cdb: cdb.prIn(9, 64), o: { inLen: 64 }, status: CC, sense: ILLEGAL_CDB },
  {
    name: 'PERSISTENT RESERVE IN REPORT CAPABILITIES',
    cdb: cdb.prIn(2, 64),
    o: { inLen: 64 },
    transferred: 8,
    check: (t, d) => {
      t.equal((d[0] << 8) | d[1], 8);
      t.equal(d[2] & 0x10, 0x10, 'CRH');
      t.equal(d[3] & 0x80, 0x80, 'TMV');
      t.equal(d[4], 0xea, 'WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX');
      t.equal(d[5], 0x01, 'EX_AC_AR');
    },
  },
];

t.test('CDB table', async (t) => {
  const e = env();
  for (const c of table) {
    const { task, data } = e.go(c.cdb, c.o);
    t.equal(task.calls, 1, `${c.name}: completed once`);
    t.equal(task.status, c.status ?? ScsiStatus.Good, `${c.name}: status`);
    if (c.sense) t.same(task.senseTriple, c.sense, `${c.name}: sense`);
    else if ((c.status ?? ScsiStatus.Good) === ScsiStatus.Good) t.equal(task.senseLength, 0, `${c.name}: no sense`);
    if (c.transferred !== undefined) t.equal(task.transferred, c.transferred, `${c.name}: transferred`);
    if (c.residual) t.same([task.residualKind, task.residual], c.residual, `${c.name}: residual`);
    if (c.check) c.check(t, data, task);
  }
  t.equal(e.lun0.outstanding + e.lun1.outstanding + e.lun2.outstanding, 0, 'nothing outstanding');
});

t.test('sense data is fixed format, 18 bytes', async (t) => {
  const e = env();
  const { task } = e.go(cdb.read10(MALLOC_BLOCKS, 1), { inLen: 512 });
  t.equal(task.senseLength, 18);
  t.equal(task.sense[0], 0x70, 'current error, fixed format');
  t.equal(task.sense[7], 10, 'additional sense length');
});

t.test('WRITE then READ 6/10/12/16 move the data through the malloc bdev; no scratch buffer on that path', async (t) => {
  const e = env();
  const storage = e.storage as Uint8Array;
  const task = new TestTask();
  const a = pattern(1024, 1);
  let r = e.go(cdb.write10(10, 2), { out: [a.subarray(0, 100), a.subarray(100)], task });
  t.equal(r.task.status, ScsiStatus.Good);
  t.equal(r.task.transferred, 1024);
  t.same(storage.subarray(10 * 512, 12 * 512), a, 'two buffers written in order');
  r = e.go(cdb.read10(10, 2), { inLen: [512, 512], task });
  t.same(r.data, a);
  const b = pattern(512, 2);
  e.go(cdb.write6(0x1fff & 20, 1), { out: b, task });
  t.same(storage.subarray(20 * 512, 21 * 512), b, 'WRITE 6');
  t.same(e.go(cdb.read6(20, 1), { inLen: 512, task }).data, b, 'READ 6');
  const c = pattern(512 * 3, 3);
  e.go(cdb.write12(100, 3), { out: c, task });
  t.same(e.go(cdb.read12(100, 3), { inLen: c.length, task }).data, c, 'READ/WRITE 12');
  const d = pattern(512, 4);
  e.go(cdb.write16(MALLOC_BLOCKS - 1, 1), { out: d, task });
  t.same(e.go(cdb.read16(MALLOC_BLOCKS - 1, 1), { inLen: 512, task }).data, d, 'READ/WRITE 16 at the last block');
  r = e.go(cdb.read6(0, 0), { inLen: 256 * 512, task });
  t.equal(r.task.transferred, 256 * 512, 'READ 6 with 0 blocks means 256');
  t.equal(task.scratch, null, 'READ/WRITE made no scratch buffer');
});

t.test('WRITE SAME 10/16, with and without UNMAP, NDOB', async (t) => {
  const e = env();
  const storage = e.storage as Uint8Array;
  const blk = pattern(512, 9);
  // More blocks than one 64 KiB scratch chunk holds: several writes.
  let r = e.go(cdb.writeSame10(200, 300), { out: blk });
  t.equal(r.task.status, ScsiStatus.Good);
  t.equal(r.task.transferred, 512);
  let same = true;
  for (let i = 200; i < 500; i++) if (Buffer.compare(storage.subarray(i * 512, (i + 1) * 512), blk) !== 0) same = false;
  t.ok(same, 'every block carries the pattern');
  t.notSame(storage.subarray(500 * 512, 501 * 512), blk, 'and no block after');
  r = e.go(cdb.writeSame16(200, 10, 0x08), { out: new Uint8Array(512) });
  t.equal(r.task.status, ScsiStatus.Good, 'UNMAP bit with a zero block');
  t.ok(storage.subarray(200 * 512, 210 * 512).every((x) => x === 0), 'unmapped blocks read zeros');
  t.same(storage.subarray(210 * 512, 211 * 512), blk, 'the rest untouched');
  r = e.go(cdb.writeSame16(210, 5, 0x08), { out: blk });
  t.equal(r.task.status, ScsiStatus.Good, 'UNMAP bit with data: written, not unmapped');
  t.same(storage.subarray(214 * 512, 215 * 512), blk);
  r = e.go(cdb.writeSame16(210, 5, 0x01));
  t.equal(r.task.status, ScsiStatus.Good, 'NDOB: zeros without a data-out buffer');
  t.equal(r.task.wantBytes, 0);
  t.ok(storage.subarray(210 * 512, 215 * 512).every((x) => x === 0));
  r = e.go(cdb.writeSame10(0, 8), { out: new Uint8Array(4096), lun: 1 });
  t.equal(r.task.status, ScsiStatus.Good, 'null bdev: write zeroes');
});

t.test('UNMAP: every descriptor in order; zero-length ones skipped', async (t) => {
  const rec = recordingModule(() => false);
  const layer = new WorkerBdevLayer(new Map([...BDEV_MODULES, ['recording', rec.module]]));
  const target = new ScsiTarget();
  target.addLun(new ScsiLun(0, layer, { name: 'R', module: 'recording', blockSize: 512, numBlocks: 1000, params: undefined }, { powerOnUnitAttention: false }));
  const r = run(target, layer, cdb.unmap(8 + 48), { out: unmapParams([[10, 5], [50, 0], [900, 100]]) });
  t.equal(r.task.status, ScsiStatus.Good);
  t.equal(r.task.transferred, 56);
  t.same(rec.log, [
    { type: BdevIoType.Unmap, offset: 10, blocks: 5 },
    { type: BdevIoType.Unmap, offset: 900, blocks: 100 },
  ]);

  const e = env();
  const storage = e.storage as Uint8Array;
  storage.fill(0xab, 0, 100 * 512);
  const u = e.go(cdb.unmap(8 + 32), { out: unmapParams([[0, 10], [50, 10]]) });
  t.equal(u.task.status, ScsiStatus.Good);
  t.ok(storage.subarray(0, 10 * 512).every((x) => x === 0) && storage.subarray(50 * 512, 60 * 512).every((x) => x === 0), 'both ranges unmapped');
  t.equal(storage[10 * 512], 0xab, 'the rest kept');
});

t.test('VERIFY with BYTCHK 1 and 3, COMPARE AND WRITE', async (t) => {
  const e = env();
  const storage = e.storage as Uint8Array;
  const a = pattern(2048, 5);
  storage.set(a, 300 * 512);
  let r = e.go(cdb.verify10(300, 4, 1), { out: a });
  t.equal(r.task.status, ScsiStatus.Good, 'equal data verifies');
  const bad = a.slice();
  bad[1500] ^= 1;
  r = e.go(cdb.verify16(300, 4, 1), { out: bad });
  t.same(r.task.senseTriple, [0x0e, 0x1d, 0], 'MISCOMPARE');
  t.equal(r.task.sense[0] & 0x80, 0x80, 'INFORMATION valid');
  t.equal(rd32(r.task.sense, 3), 1500, 'offset of the first difference');
  // A verify longer than the scratch buffer compares chunk by chunk.
  const big = pattern(200 * 512, 6);
  storage.set(big, 1000 * 512);
  r = e.go(cdb.verify16(1000, 200, 1), { out: big });
  t.equal(r.task.status, ScsiStatus.Good, '200 blocks over two chunks');
  storage.fill(0x11, 1500 * 512, 1510 * 512);
  r = e.go(cdb.verify10(1500, 10, 3), { out: new Uint8Array(512).fill(0x11) });
  t.equal(r.task.status, ScsiStatus.Good, 'BYTCHK 3: one block against each');
  storage[1505 * 512 + 7] = 0x12;
  r = e.go(cdb.verify10(1500, 10, 3), { out: new Uint8Array(512).fill(0x11) });
  t.same(r.task.senseTriple, [0x0e, 0x1d, 0]);

  const old = storage.slice(400 * 512, 402 * 512);
  const neu = pattern(1024, 8);
  const both = new Uint8Array(2048);
  both.set(old, 0);
  both.set(neu, 1024);
  r = e.go(cdb.compareAndWrite(400, 2), { out: both });
  t.equal(r.task.status, ScsiStatus.Good, 'COMPARE AND WRITE: equal, written');
  t.equal(r.task.transferred, 2048);
  t.same(storage.subarray(400 * 512, 402 * 512), neu);
  r = e.go(cdb.compareAndWrite(400, 2), { out: both });
  t.same(r.task.senseTriple, [0x0e, 0x1d, 0], 'COMPARE AND WRITE against changed data: MISCOMPARE');
  t.equal(rd32(r.task.sense, 3), [...old].findIndex((x, i) => x !== neu[i]), 'first difference');
  t.same(storage.subarray(400 * 512, 402 * 512), neu, 'nothing written');
  r = e.go(cdb.compareAndWrite(400, 2), { out: both.subarray(0, 1024) });
  t.same([r.task.status, r.task.residualKind, r.task.residual], [ScsiStatus.CheckCondition, ScsiResidual.Overflow, 1024], 'buffers shorter than 2n blocks');
});

t.test('bdev failures: MEDIUM ERROR 11/00 on read, 0C/00 on write and flush; FUA and WCE=0 flush after the write', async (t) => {
  let failing = true;
  const rec = recordingModule(() => failing);
  const layer = new WorkerBdevLayer(new Map([...BDEV_MODULES, ['recording', rec.module]]));
  const target = new ScsiTarget();
  target.addLun(new ScsiLun(0, layer, { name: 'R', module: 'recording', blockSize: 512, numBlocks: 1000, params: undefined }, { powerOnUnitAttention: false }));
  const go = (c: number[], o: RunOptions = {}) => run(target, layer, c, o);
  t.same(go(cdb.read10(0, 1), { inLen: 512 }).task.senseTriple, [3, 0x11, 0], 'read');
  t.same(go(cdb.write16(0, 1), { out: new Uint8Array(512) }).task.senseTriple, [3, 0x0c, 0], 'write');
  t.same(go(cdb.sync10(0, 0)).task.senseTriple, [3, 0x0c, 0], 'flush');
  t.same(go(cdb.unmap(24), { out: unmapParams([[0, 1]]) }).task.senseTriple, [3, 0x0c, 0], 'unmap');
  t.same(go(cdb.verify10(0, 1, 1), { out: new Uint8Array(512) }).task.senseTriple, [3, 0x11, 0], 'verify read');
  const r = go(cdb.read10(0, 1), { inLen: 512 });
  t.equal(r.task.transferred, 0, 'nothing counted as transferred');
  failing = false;
  rec.log.length = 0;
  go(cdb.write10(5, 1, 0x08), { out: new Uint8Array(512) });
  t.same(rec.log.map((l) => l.type), [BdevIoType.Write, BdevIoType.Flush], 'FUA: write, then flush');
  rec.log.length = 0;
  go(cdb.write10(5, 1), { out: new Uint8Array(512) });
  t.same(rec.log.map((l) => l.type), [BdevIoType.Write], 'WCE=1: the write alone');
  // Turn the write cache off with MODE SELECT from the caching page MODE SENSE returns.
  const sense = go(cdb.modeSense6(0x08, 255, 0, true), { inLen: 255 }).data.slice(0, 24);
  sense[0] = 0;
  sense[4 + 2] &= ~0x04;
  t.equal(go(cdb.modeSelect6(24), { out: sense }).task.status, ScsiStatus.Good);
  t.equal(go(cdb.modeSense6(0x08, 255, 0, true), { inLen: 255 }).data[6] & 0x04, 0, 'MODE SENSE shows WCE off');
  rec.log.length = 0;
  go(cdb.write10(5, 1), { out: new Uint8Array(512) });
  t.same(rec.log.map((l) => l.type), [BdevIoType.Write, BdevIoType.Flush], 'WCE=0: every write is flushed');
});

t.test('persistent reservations, as SPDK scsi_pr.c', async (t) => {
  const e = env();
  const A = 0xaaaan;
  const B = 0xbbbbn;
  const C = 0xccccn;
  const pr = (nexus: number, action: number, type: number, key: bigint, sa: bigint, flags = 0) => e.go(cdb.prOut(action, type), { nexus, out: prParams(key, sa, flags) }).task;
  const keys = (nexus = 1) => {
    const d = e.go(cdb.prIn(0, 255), { nexus, inLen: 255 }).data;
    const n = rd32(d, 4) / 8;
    return { generation: rd32(d, 0), keys: Array.from({ length: n }, (_, i) => BigInt(rd64(d, 8 + 8 * i))) };
  };
  const reservation = () => {
    const d = e.go(cdb.prIn(1, 255), { inLen: 255 }).data;
    return rd32(d, 4) === 0 ? null : { key: BigInt(rd64(d, 8)), type: d[21] & 0x0f };
  };
  t.equal(pr(1, 0, 0, 0n, A).status, ScsiStatus.Good, 'nexus 1 registers A');
  t.equal(pr(2, 0, 0, 0n, B).status, ScsiStatus.Good, 'nexus 2 registers B');
  t.same(keys(), { generation: 2, keys: [A, B] });
  t.equal(pr(2, 0, 0, 0n, C).status, ScsiStatus.ReservationConflict, 'REGISTER from a registered nexus with the wrong key');
  t.equal(pr(3, 0, 0, 5n, C).status, ScsiStatus.ReservationConflict, 'REGISTER of an unregistered nexus with a non-zero key');
  t.equal(pr(1, 1, 1, B, 0n).status, ScsiStatus.ReservationConflict, 'RESERVE with a key not its own');
  t.equal(pr(1, 1, 2, A, 0n).status, ScsiStatus.CheckCondition, 'RESERVE of type 2 (reserved)');
  t.equal(pr(1, 1, 1, A, 0n, 0).status, ScsiStatus.Good, 'nexus 1 reserves Write Exclusive');
  t.same(reservation(), { key: A, type: 1 });
  t.equal(pr(1, 1, 1, A, 0n).status, ScsiStatus.Good, 'the holder reserving again the same type: GOOD');
  t.equal(pr(2, 1, 1, B, 0n).status, ScsiStatus.ReservationConflict, 'another nexus cannot reserve');
  t.equal(e.go(cdb.write10(0, 1), { nexus: 2, out: new Uint8Array(512) }).task.status, ScsiStatus.ReservationConflict, 'WE: writes from others conflict');
  t.equal(e.go(cdb.read10(0, 1), { nexus: 2, inLen: 512 }).task.status, ScsiStatus.Good, 'WE: reads from others pass');
  t.equal(e.go(cdb.write10(0, 1), { nexus: 1, out: new Uint8Array(512) }).task.status, ScsiStatus.Good, 'the holder writes');
  t.equal(e.go(cdb.inquiry(false, 0, 36), { nexus: 3, inLen: 36 }).task.status, ScsiStatus.Good, 'INQUIRY always passes');
  t.equal(e.go(cdb.modeSense6(0x08, 255), { nexus: 3, inLen: 255 }).task.status, ScsiStatus.ReservationConflict, 'MODE SENSE from an unregistered nexus conflicts');
  t.equal(e.go(cdb.modeSense6(0x08, 255), { nexus: 2, inLen: 255 }).task.status, ScsiStatus.Good, 'MODE SENSE from a registrant passes');
  t.equal(e.go(cdb.reserve6(), { nexus: 3 }).task.status, ScsiStatus.ReservationConflict, 'SPC-2 RESERVE while registrations exist');
  t.equal(e.go(cdb.reserve6(), { nexus: 1 }).task.status, ScsiStatus.Good, 'SPC-2 RESERVE from the PR holder: GOOD, no effect');
  t.same(reservation(), { key: A, type: 1 }, 'still the persistent reservation');

  t.equal(pr(2, 4, 3, B, A).status, ScsiStatus.Good, 'nexus 2 preempts A with Exclusive Access');
  t.same(reservation(), { key: B, type: 3 });
  t.same(keys(2).keys, [B], "A's registration removed");
  t.equal(e.go(cdb.read10(0, 1), { nexus: 1, inLen: 512 }).task.status, ScsiStatus.ReservationConflict, 'EA: reads from others conflict');
  t.equal(pr(1, 0, 0, 0n, C).status, ScsiStatus.Good, 'nexus 1 registers again, C');
  t.equal(e.go(cdb.read10(0, 1), { nexus: 1, inLen: 512 }).task.status, ScsiStatus.ReservationConflict, 'EA: registrants that do not hold it conflict too');
  t.equal(pr(1, 2, 3, C, 0n).status, ScsiStatus.Good, 'RELEASE from a registrant that does not hold it: GOOD, no effect');
  t.same(reservation(), { key: B, type: 3 });
  t.same(pr(2, 2, 1, B, 0n).senseTriple, [5, 0x26, 0x04], 'RELEASE with the wrong type: INVALID RELEASE OF PERSISTENT RESERVATION');
  t.equal(pr(2, 2, 3, C, 0n).status, ScsiStatus.ReservationConflict, 'RELEASE with a key not its own');
  t.equal(pr(2, 2, 3, B, 0n).status, ScsiStatus.Good, 'the holder releases');
  t.equal(reservation(), null);
  t.equal(pr(2, 0, 0, B, A).status, ScsiStatus.Good, 'REGISTER replaces the key');
  t.equal(pr(1, 6, 0, 999n, B).status, ScsiStatus.Good, 'REGISTER AND IGNORE EXISTING KEY');
  t.same(keys().keys, [A, B]);

  t.equal(pr(1, 1, 7, B, 0n).status, ScsiStatus.Good, 'Write Exclusive – All Registrants');
  t.same(reservation(), { key: 0n, type: 7 }, 'all-registrants types report key 0');
  t.equal(e.go(cdb.write10(0, 1), { nexus: 2, out: new Uint8Array(512) }).task.status, ScsiStatus.Good, 'every registrant is a holder');
  t.equal(e.go(cdb.write10(0, 1), { nexus: 3, out: new Uint8Array(512) }).task.status, ScsiStatus.ReservationConflict, 'an unregistered nexus is not');
  t.equal(pr(1, 0, 0, B, 0n).status, ScsiStatus.Good, 'nexus 1 unregisters: the reservation stays with nexus 2');
  t.same(reservation(), { key: 0n, type: 7 });

  const full = e.go(cdb.prIn(3, 255), { nexus: 2, inLen: 255 }).data;
  t.equal(rd32(full, 4), 24, 'READ FULL STATUS: one descriptor');
  t.equal(BigInt(rd64(full, 8)), A);
  t.equal(full[8 + 12] & 1, 1, 'R_HOLDER');

  t.equal(pr(3, 3, 0, 0n, 0n).status, ScsiStatus.ReservationConflict, 'CLEAR from an unregistered nexus');
  t.equal(pr(2, 3, 0, A, 0n).status, ScsiStatus.Good, 'CLEAR');
  t.equal(reservation(), null);
  t.same(keys().keys, []);
  t.equal(e.go(cdb.write10(0, 1), { nexus: 3, out: new Uint8Array(512) }).task.status, ScsiStatus.Good, 'no reservation: everyone writes');
  const gen = keys().generation;
  t.ok(gen > 2, 'the generation counts changes');
});

t.test('SPC-2 RESERVE / RELEASE', async (t) => {
  const e = env();
  const go = (c: number[], nexus: number, o: RunOptions = {}) => e.go(c, { ...o, nexus }).task.status;
  t.equal(go(cdb.release6(), 2), ScsiStatus.Good, 'RELEASE with no reservation: GOOD');
  t.equal(go(cdb.reserve6(), 1), ScsiStatus.Good);
  t.equal(go(cdb.tur(), 2), ScsiStatus.ReservationConflict, 'another nexus conflicts');
  t.equal(go(cdb.read10(0, 1), 2, { inLen: 512 }), ScsiStatus.ReservationConflict);
  t.equal(go(cdb.inquiry(false, 0, 36), 2, { inLen: 36 }), ScsiStatus.Good, 'INQUIRY passes');
  t.equal(go(cdb.reserve10(), 2), ScsiStatus.ReservationConflict, 'RESERVE from another nexus conflicts');
  t.equal(go(cdb.reserve10(), 1), ScsiStatus.Good, 'the holder may reserve again');
  t.equal(go(cdb.release10(), 2), ScsiStatus.Good, 'RELEASE from a non-holder: GOOD, no effect');
  t.equal(go(cdb.tur(), 2), ScsiStatus.ReservationConflict, 'still reserved');
  t.equal(go(cdb.tur(), 1), ScsiStatus.Good, 'the holder is served');
  t.equal(go(cdb.release6(), 1), ScsiStatus.Good);
  t.equal(go(cdb.tur(), 2), ScsiStatus.Good, 'released');
  t.equal(e.go([0x16, 0x02, 0, 0, 0, 0], { nexus: 1 }).task.status, ScsiStatus.CheckCondition, 'RESERVE(6) with LONGID/extent bits');
  t.equal(e.go(cdb.prOut(0), { nexus: 1, out: prParams(0n, 7n) }).task.status, ScsiStatus.Good, 'a persistent registration');
  t.equal(go(cdb.reserve6(), 2), ScsiStatus.ReservationConflict, 'SPC-2 RESERVE conflicts while registrations exist');
});

t.test('fast path: a shrunk bdev ends where it now ends', async (t) => {
  const layer = new WorkerBdevLayer();
  const target = new ScsiTarget();
  target.addLun(new ScsiLun(0, layer, nullDesc('S', 1000, 512), { powerOnUnitAttention: false }));
  const go = (c: number[]) => run(target, layer, c, { nexus: 1, inLen: 512 }).task;
  t.equal(go(cdb.read10(900, 1)).status, ScsiStatus.Good, 'block 900');
  t.equal(go(cdb.read10(900, 1)).status, ScsiStatus.Good, 'again, on the fast path');
  t.equal(layer.resize('S', 500), 1, 'shrunk to 500 blocks');
  t.same(go(cdb.read10(900, 1)).senseTriple, [6, 0x2a, 0x09], 'CAPACITY DATA HAS CHANGED');
  t.same(go(cdb.read10(900, 1)).senseTriple, [5, 0x21, 0], 'block 900: LBA OUT OF RANGE');
  t.equal(go(cdb.read10(499, 1)).status, ScsiStatus.Good, 'the last block, on the fast path');
  t.same(go(cdb.read10(900, 1)).senseTriple, [5, 0x21, 0], 'block 900 again: the fast path knows the new end');
});

t.test('unit attentions per I_T nexus', async (t) => {
  const layer = new WorkerBdevLayer();
  const target = new ScsiTarget();
  const lun = new ScsiLun(0, layer, nullDesc('N', 1000, 512));
  target.addLun(lun);
  const go = (c: number[], o: RunOptions = {}) => run(target, layer, c, o);
  t.equal(go(cdb.inquiry(false, 0, 36), { nexus: 1, inLen: 36 }).task.status, ScsiStatus.Good, 'INQUIRY is not held up by a unit attention');
  t.same(go(cdb.tur(), { nexus: 1 }).task.senseTriple, [6, 0x29, 0], 'first command: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED');
  t.equal(go(cdb.tur(), { nexus: 1 }).task.status, ScsiStatus.Good, 'reported once');
  t.same(go(cdb.read10(0, 1), { nexus: 2, inLen: 512 }).task.senseTriple, [6, 0x29, 0], 'per nexus');
  t.equal(go(cdb.tur(), { nexus: 2 }).task.status, ScsiStatus.Good);

  t.equal(layer.resize('N', 4000), 1, 'the LU is told of the resize');
  t.same(go(cdb.readCapacity10(), { nexus: 1, inLen: 8 }).task.senseTriple, [6, 0x2a, 0x09], 'CAPACITY DATA HAS CHANGED');
  const rc = go(cdb.readCapacity10(), { nexus: 1, inLen: 8 });
  t.equal(rd32(rc.data, 0), 3999, 'the new size');
  const rs = go(cdb.requestSense(18), { nexus: 2, inLen: 18 });
  t.equal(rs.task.status, ScsiStatus.Good, 'REQUEST SENSE reports the unit attention as data');
  t.same([rs.data[2], rs.data[12], rs.data[13]], [6, 0x2a, 0x09]);
  t.equal(go(cdb.tur(), { nexus: 2 }).task.status, ScsiStatus.Good, 'and clears it');
  t.equal(go(cdb.read10(3500, 1), { nexus: 2, inLen: 512 }).task.status, ScsiStatus.Good, 'I/O past the old end works');
  t.equal(go(cdb.read10(3500, 1), { nexus: 2, inLen: 512 }).task.status, ScsiStatus.Good, 'again, on the fast path (no unit attention pending)');

  // Two pending: reported highest priority first.
  lun.raiseUnitAttention(8 /* ModeChanged */, 1);
  lun.raiseUnitAttention(16 /* CapacityChanged */, 1);
  t.same(go(cdb.tur(), { nexus: 1 }).task.senseTriple, [6, 0x2a, 0x01], 'MODE PARAMETERS CHANGED first');
  t.same(go(cdb.tur(), { nexus: 1 }).task.senseTriple, [6, 0x2a, 0x09], 'then CAPACITY DATA HAS CHANGED');
  t.equal(go(cdb.tur(), { nexus: 1 }).task.status, ScsiStatus.Good);

  const m = mallocDesc('M', 64);
  target.addLun(new ScsiLun(3, layer, m.desc, { powerOnUnitAttention: false }));
  t.same(go(cdb.tur(), { nexus: 1 }).task.senseTriple, [6, 0x3f, 0x0e], 'REPORTED LUNS DATA HAS CHANGED on adding a LU');
  lun.raiseUnitAttention(32 /* LunsChanged */, 2);
  t.equal(go(cdb.reportLuns(64), { nexus: 2, inLen: 64 }).task.transferred, 24, 'REPORT LUNS lists 0 and 3');
  t.equal(go(cdb.tur(), { nexus: 2 }).task.status, ScsiStatus.Good, 'REPORT LUNS cleared it');
});

t.test('MODE SELECT changing WCE raises MODE PARAMETERS CHANGED for the other nexuses', async (t) => {
  const e = env();
  e.go(cdb.tur(), { nexus: 2 });
  const page = e.go(cdb.modeSense10(0x08, 255, 0, false, true), { nexus: 1, inLen: 255 }).data.slice(0, 28);
  page[0] = 0;
  page[1] = 0;
  page[8 + 2] &= ~0x04;
  t.equal(e.go(cdb.modeSelect10(28), { nexus: 1, out: page }).task.status, ScsiStatus.Good, 'MODE SELECT 10 with the caching page');
  t.equal(e.lun0.wce, false);
  t.equal(e.go(cdb.tur(), { nexus: 1 }).task.status, ScsiStatus.Good, 'not for the nexus that changed it');
  t.same(e.go(cdb.tur(), { nexus: 2 }).task.senseTriple, [6, 0x2a, 0x01]);
});

t.test('LOGICAL UNIT RESET waits for outstanding I/O, then resets', async (t) => {
  const e = env();
  e.go(cdb.tur(), { nexus: 2 });
  e.go(cdb.reserve6(), { nexus: 1 });
  const task = new TestTask();
  e.go(cdb.read10(0, 8), { nexus: 1, inLen: 4096, task, noPoll: true });
  t.equal(task.calls, 0, 'the read is in flight');
  t.equal(e.lun0.outstanding, 1);
  const responses: TmfResponse[] = [];
  e.target.taskManagement(TmfFunction.LogicalUnitReset, 0, 1, (r) => responses.push(r));
  t.same(responses, [], 'the reset waits');
  e.layer.poll(0);
  t.equal(task.calls, 1, 'the read completed first');
  t.equal(task.status, ScsiStatus.Good);
  t.same(responses, [TmfResponse.FunctionComplete], 'then the reset');
  t.same(e.go(cdb.tur(), { nexus: 2 }).task.senseTriple, [6, 0x29, 0x03], 'BUS DEVICE RESET FUNCTION OCCURRED (the SPC-2 reservation is gone)');
  t.same(e.go(cdb.tur(), { nexus: 1 }).task.senseTriple, [6, 0x29, 0x03]);
  const idle: TmfResponse[] = [];
  e.target.taskManagement(TmfFunction.LogicalUnitReset, 1, 1, (r) => idle.push(r));
  t.same(idle, [TmfResponse.FunctionComplete], 'an idle LU resets at once');
});

t.test('I_T NEXUS RESET, ABORT TASK and the other functions', async (t) => {
  const e = env();
  e.go(cdb.tur(), { nexus: 2 });
  e.go(cdb.reserve6(), { nexus: 1 });
  const out: TmfResponse[] = [];
  e.target.taskManagement(TmfFunction.ItNexusReset, 0, 1, (r) => out.push(r));
  t.same(out, [TmfResponse.FunctionComplete]);
  t.equal(e.go(cdb.tur(), { nexus: 2 }).task.status, ScsiStatus.Good, "the nexus's SPC-2 reservation is released; other nexuses see no unit attention");
  t.same(e.go(cdb.tur(), { nexus: 1 }).task.senseTriple, [6, 0x29, 0x07], 'I_T NEXUS LOSS OCCURRED');
  t.same(e.go(cdb.tur(), { nexus: 1, lun: 1 }).task.senseTriple, [6, 0x29, 0x07], 'on every LU of the target');
  const r: TmfResponse[] = [];
  e.target.taskManagement(TmfFunction.AbortTask, 0, 1, (x) => r.push(x));
  e.target.taskManagement(TmfFunction.AbortTaskSet, 0, 1, (x) => r.push(x));
  e.target.taskManagement(TmfFunction.ClearTaskSet, 0, 1, (x) => r.push(x));
  e.target.taskManagement(TmfFunction.QueryTask, 0, 1, (x) => r.push(x));
  e.target.taskManagement(TmfFunction.AbortTask, 6, 1, (x) => r.push(x));
  e.target.taskManagement(TmfFunction.LogicalUnitReset, 6, 1, (x) => r.push(x));
  t.same(r, [TmfResponse.FunctionRejected, TmfResponse.FunctionRejected, TmfResponse.FunctionRejected, TmfResponse.FunctionRejected, TmfResponse.IncorrectLun, TmfResponse.IncorrectLun]);
});

t.test('LUN management and options', async (t) => {
  const layer = new WorkerBdevLayer();
  const target = new ScsiTarget(4);
  const a = new ScsiLun(0, layer, nullDesc('N', 100, 512));
  target.addLun(a);
  const dup = new ScsiLun(0, layer, nullDesc('N', 100, 512));
  t.throws(() => target.addLun(dup), /exists/);
  dup.close();
  const far = new ScsiLun(4, layer, nullDesc('N', 100, 512));
  t.throws(() => target.addLun(far), /beyond/);
  far.close();
  t.throws(() => new ScsiLun(0, layer, nullDesc('N', 100, 512), { maxTransferBytes: 100 }), /maxTransferBytes/);
  t.same(target.lunIds, [0]);
  t.equal(target.removeLun(0), a);
  t.equal(target.removeLun(0), null);
  t.same(run(target, layer, cdb.tur(), { lun: 0 }).task.senseTriple, [5, 0x25, 0], 'removed: LOGICAL UNIT NOT SUPPORTED');
  a.close();
  // The designator is a function of the identifier: the same across restarts, different between LUs.
  const vpd83 = (id: string) => {
    const l = new WorkerBdevLayer();
    const tg = new ScsiTarget();
    const lun = new ScsiLun(0, l, nullDesc('X', 10, 512), { identifier: id, powerOnUnitAttention: false });
    tg.addLun(lun);
    const d = run(tg, l, cdb.inquiry(true, 0x83, 255), { inLen: 255 }).data.slice(8, 16);
    lun.close();
    return [...d];
  };
  t.same(vpd83('6f1a0c3e-1111'), vpd83('6f1a0c3e-1111'), 'stable');
  t.notSame(vpd83('6f1a0c3e-1111'), vpd83('6f1a0c3e-2222'), 'distinct');
  t.equal(layer.openCount, 0, 'closed LUs released their bdev');
});

t.test('remove(): outstanding writes complete, new commands are aborted, then the bdev closes', async (t) => {
  const layer = new WorkerBdevLayer();
  const target = new ScsiTarget();
  const m = mallocDesc('M', 64);
  const lun = new ScsiLun(0, layer, m.desc, { powerOnUnitAttention: false });
  target.addLun(lun);
  const w = new TestTask();
  const data = pattern(512, 11);
  run(target, layer, cdb.write10(3, 1), { out: data, task: w, noPoll: true });
  let removed = 0;
  lun.remove(() => removed++);
  t.equal(removed, 0, 'waits for the write');
  const late = run(target, layer, cdb.tur(), { noPoll: true }).task;
  t.same(late.senseTriple, [0x0b, 0, 0], 'a new command: ABORTED COMMAND');
  layer.poll(0);
  t.equal(w.status, ScsiStatus.Good, 'the write completed');
  t.same(m.storage.subarray(3 * 512, 4 * 512), data, 'and reached the bdev');
  t.equal(removed, 1, 'then removal finished');
  t.equal(layer.openCount, 0, 'the bdev is closed');
  t.equal(target.removeLun(0), lun);
});

t.test('a task is reused across commands and completes each exactly once', async (t) => {
  const e = env();
  const task = new TestTask();
  for (let i = 0; i < 50; i++) {
    e.go(i % 2 ? cdb.read16(i, 1) : cdb.write16(i, 1), i % 2 ? { inLen: 512, task } : { out: new Uint8Array(512), task });
    t.equal(task.calls, i + 1);
    if (task.status !== ScsiStatus.Good) t.fail(`command ${i}`);
  }
  t.equal(e.go(cdb.inquiry(false, 0, 36), { task, dir: ScsiDataDir.ToDevice, out: new Uint8Array(36) }).task.status, ScsiStatus.CheckCondition, 'INQUIRY with data-out buffers');
});

/**
 * The READ/WRITE 10/16 fast path (ScsiLun.fastReadWrite) runs for the nexus
 * last seen with no unit attention pending. A nexus's first command takes
 * the generic path, the same command again the fast one: every outcome
 * (status, sense, transfer, residual, data, medium) must be the same.
 */
t.test('fast path: READ/WRITE 10/16 give the generic path\'s outcome, errors included', async (t) => {
  const e = env();
  type Run = { c: number[]; o: () => RunOptions; lun?: number; what: string };
  const runs: Run[] = [];
  const cases: [string, (lba: number, n: number, b1?: number) => number[]][] = [
    ['READ 10', cdb.read10],
    ['READ 16', cdb.read16],
  ];
  for (const [name, mk] of cases) {
    runs.push({ what: `${name} 4 blocks`, c: mk(8, 4), o: () => ({ inLen: 2048 }) });
    runs.push({ what: `${name} FUA`, c: mk(8, 1, 0x08), o: () => ({ inLen: 512 }) });
    runs.push({ what: `${name} larger buffer (underflow)`, c: mk(8, 1), o: () => ({ inLen: 700 }) });
    runs.push({ what: `${name} short buffer`, c: mk(8, 2), o: () => ({ inLen: 600 }) });
    runs.push({ what: `${name} two buffers`, c: mk(9, 2), o: () => ({ inLen: [100, 924] }) });
    runs.push({ what: `${name} data-out buffer`, c: mk(8, 1), o: () => ({ out: new Uint8Array(512) }) });
    runs.push({ what: `${name} no buffer`, c: mk(8, 1), o: () => ({}) });
    runs.push({ what: `${name} 0 blocks`, c: mk(8, 0), o: () => ({ inLen: 512 }) });
    runs.push({ what: `${name} past the end`, c: mk(MALLOC_BLOCKS - 1, 2), o: () => ({ inLen: 1024 }) });
    runs.push({ what: `${name} LBA beyond 2^32`, c: name === 'READ 16' ? cdb.read16(2 ** 32 + 1, 1) : mk(0xffffffff, 1), o: () => ({ inLen: 512 }) });
    runs.push({ what: `${name} RDPROTECT`, c: mk(8, 1, 0x20), o: () => ({ inLen: 512 }) });
    runs.push({ what: `${name} read-only LU`, c: mk(2, 1), o: () => ({ inLen: 512 }), lun: 2 });
    runs.push({ what: `${name} short CDB`, c: mk(8, 1), o: () => ({ inLen: 512, cdbLength: name === 'READ 10' ? 9 : 12 }) });
  }
  const writes: [string, (lba: number, n: number, b1?: number) => number[]][] = [
    ['WRITE 10', cdb.write10],
    ['WRITE 16', cdb.write16],
  ];
  for (const [name, mk] of writes) {
    runs.push({ what: `${name} 2 blocks`, c: mk(20, 2), o: () => ({ out: pattern(1024, 3) }) });
    runs.push({ what: `${name} FUA`, c: mk(30, 1, 0x08), o: () => ({ out: pattern(512, 4) }) });
    runs.push({ what: `${name} larger buffer`, c: mk(40, 1), o: () => ({ out: pattern(900, 5) }) });
    runs.push({ what: `${name} short buffer`, c: mk(50, 2), o: () => ({ out: pattern(600, 6) }) });
    runs.push({ what: `${name} data-in buffer`, c: mk(60, 1), o: () => ({ inLen: 512 }) });
    runs.push({ what: `${name} WRPROTECT`, c: mk(70, 1, 0x40), o: () => ({ out: pattern(512, 7) }) });
    runs.push({ what: `${name} read-only LU`, c: mk(2, 1), o: () => ({ out: pattern(512, 8) }), lun: 2 });
    runs.push({ what: `${name} past the end`, c: mk(MALLOC_BLOCKS, 1), o: () => ({ out: pattern(512, 9) }) });
    runs.push({ what: `${name} on the null LU`, c: mk(5, 1), o: () => ({ out: pattern(4096, 10) }), lun: 1 });
  }
  runs.push({ what: 'READ 16 beyond the transfer limit (null LU: 1024 blocks of 4 KiB)', c: cdb.read16(0, 1025), o: () => ({ inLen: 1025 * 4096 }), lun: 1 });
  let nexus = 100;
  for (const r of runs) {
    nexus++;
    const outcome = () => {
      const { task, data } = e.go(r.c, { ...r.o(), nexus, lun: r.lun ?? 0 });
      return { status: task.status, sense: task.senseTriple, transferred: task.transferred, residual: [task.residualKind, task.residual], data: [...data], medium: Buffer.from(e.storage as Uint8Array).toString('base64') };
    };
    const generic = outcome();
    const fast = outcome();
    t.same(fast, generic, r.what);
  }
});

t.test('fast path: a unit attention, a reservation, a reset or a removal takes the nexus off it', async (t) => {
  const e = env();
  const read = (nexus = 1) => e.go(cdb.read16(0, 1), { inLen: 512, nexus }).task;
  t.equal(read().status, ScsiStatus.Good, 'warm: the nexus has nothing pending');
  t.equal(read().status, ScsiStatus.Good, 'fast');
  e.lun0.bdevResized(MALLOC_BLOCKS);
  t.same(read().senseTriple, [6, 0x2a, 0x09], 'a resize: CAPACITY DATA HAS CHANGED on the next READ');
  t.equal(read().status, ScsiStatus.Good, 'then reads again');
  e.lun0.raiseUnitAttention(8 /* ModeChanged */, 1);
  t.same(read().senseTriple, [6, 0x2a, 0x01], 'a unit attention for this nexus: MODE PARAMETERS CHANGED');
  t.equal(read().status, ScsiStatus.Good);
  // Another nexus takes an SPC-2 reservation: nexus 1 conflicts, fast path or not.
  t.equal(e.go(cdb.reserve6(), { nexus: 2 }).task.status, ScsiStatus.Good, 'nexus 2 reserves');
  t.equal(read().status, ScsiStatus.ReservationConflict, 'nexus 1: RESERVATION CONFLICT');
  t.equal(e.go(cdb.write10(0, 1), { out: new Uint8Array(512), nexus: 1 }).task.status, ScsiStatus.ReservationConflict, 'and for a write');
  t.equal(e.go(cdb.release6(), { nexus: 2 }).task.status, ScsiStatus.Good, 'released');
  t.equal(read().status, ScsiStatus.Good);
  let reset = 0;
  e.lun0.nexusReset(1, () => reset++);
  t.equal(reset, 1);
  t.same(read().senseTriple, [6, 0x29, 0x07], 'I_T NEXUS RESET: I_T NEXUS LOSS OCCURRED');
  t.equal(read().status, ScsiStatus.Good);
  e.lun0.lunReset(() => reset++);
  t.same(read().senseTriple, [6, 0x29, 0x03], 'LOGICAL UNIT RESET: BUS DEVICE RESET FUNCTION OCCURRED');
  t.equal(read().status, ScsiStatus.Good);
  e.lun0.remove(() => reset++);
  t.same(read().senseTriple, [0x0b, 0, 0], 'removed: ABORTED COMMAND');
});
