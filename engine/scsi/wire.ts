/**
 * Big-endian field access for CDBs and SCSI data (every multi-byte SCSI
 * field is big-endian), numbers only (a 64-bit LBA beyond 2^53 is larger
 * than any bdev, so the loss of precision there only ever fails a range
 * check, as it should). Thread: any.
 */

export function be16(b: Uint8Array, off: number): number {
  return (b[off] << 8) | b[off + 1];
}

export function be24(b: Uint8Array, off: number): number {
  return (b[off] << 16) | (b[off + 1] << 8) | b[off + 2];
}

export function be32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

export function be64(b: Uint8Array, off: number): number {
  return be32(b, off) * 0x1_0000_0000 + be32(b, off + 4);
}

export function putBe16(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 8) & 0xff;
  b[off + 1] = v & 0xff;
}

export function putBe32(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

export function putBe64(b: Uint8Array, off: number, v: number): void {
  putBe32(b, off, Math.floor(v / 0x1_0000_0000));
  putBe32(b, off + 4, v % 0x1_0000_0000);
}

/** `s` as printable ASCII (anything else becomes '_'), space-padded or cut to `len` bytes at `off`. */
export function putAscii(b: Uint8Array, off: number, len: number, s: string): void {
  for (let i = 0; i < len; i++) {
    if (i < s.length) {
      const c = s.charCodeAt(i);
      b[off + i] = c >= 0x20 && c <= 0x7e ? c : 0x5f;
    } else {
      b[off + i] = 0x20;
    }
  }
}

/**
 * The 8-byte LUN field of REPORT LUNS for a single-level LUN (SAM-5 §4.7):
 * peripheral device addressing below 256, flat space addressing up to 16383.
 */
export function putLun(b: Uint8Array, off: number, lun: number): void {
  b.fill(0, off, off + 8);
  if (lun < 256) {
    b[off + 1] = lun;
  } else {
    b[off] = 0x40 | ((lun >> 8) & 0x3f);
    b[off + 1] = lun & 0xff;
  }
}

/** 64-bit FNV-1a of the UTF-16 code units of `s` (for a stable designator from an identifier), as [hi, lo]. */
export function fnv1a64(s: string): [number, number] {
  let h = 0xcbf29ce484222325n;
  const prime = 0x100000001b3n;
  const mask = 0xffffffffffffffffn;
  for (let i = 0; i < s.length; i++) {
    h ^= BigInt(s.charCodeAt(i));
    h = (h * prime) & mask;
  }
  return [Number(h >> 32n), Number(h & 0xffffffffn)];
}
