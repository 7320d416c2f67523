/**
 * A small seeded PRNG for the fuzzers (sfc32 seeded through splitmix32), so a
 * run is reproducible from its seed, and a case from (seed, case number):
 * every case draws from its own generator, `Rng.forCase(seed, n)`, so it can
 * be replayed alone without running the cases before it.
 * Thread: any (no shared state).
 */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = (): number => {
      // splitmix32
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** The generator of case `n` of the run seeded `seed`. */
  static forCase(seed: number, n: number): Rng {
    return new Rng((Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(n >>> 0, 0x85ebca77) ^ ((n / 0x1_0000_0000) >>> 0)) >>> 0);
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** An integer in [0, n) for n ≤ 2^32. */
  int(n: number): number {
    if (n <= 0) return 0;
    if (n <= 0x1_0000_0000) return Math.floor((this.u32() / 0x1_0000_0000) * n);
    return Math.floor((this.u32() * 0x1_0000_0000 + this.u32()) / 2 ** 64 * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      out[i] = v & 0xff;
      if (i + 1 < n) out[i + 1] = (v >>> 8) & 0xff;
      if (i + 2 < n) out[i + 2] = (v >>> 16) & 0xff;
      if (i + 3 < n) out[i + 3] = v >>> 24;
    }
    return out;
  }

  /** A u32 that is often a boundary value (0, 1, powers of two and their neighbours, all ones). */
  edgyU32(): number {
    switch (this.int(6)) {
      case 0:
        return this.pick([0, 1, 2, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff]);
      case 1: {
        const p = 2 ** this.int(32);
        return (p + this.range(-1, 1)) >>> 0;
      }
      case 2:
        return this.int(256);
      default:
        return this.u32();
    }
  }

  /** A u64 that is often a boundary value. */
  edgyU64(): bigint {
    switch (this.int(5)) {
      case 0:
        return this.pick([0n, 1n, 0xffffffffn, 0x100000000n, 0x7fffffffffffffffn, 0x8000000000000000n, 0xffffffffffffffffn, 0xfffffffffffff000n]);
      case 1:
        return BigInt.asUintN(64, (1n << BigInt(this.int(64))) + BigInt(this.range(-1, 1)));
      case 2:
        return BigInt(this.edgyU32());
      default:
        return this.u64();
    }
  }

  /** Flip, set or clear a few random bits/bytes of `b` in place. */
  mutate(b: Uint8Array, edits = 1 + this.int(4)): Uint8Array {
    if (b.byteLength === 0) return b;
    for (let i = 0; i < edits; i++) {
      const at = this.int(b.byteLength);
      switch (this.int(4)) {
        case 0:
          b[at] ^= 1 << this.int(8);
          break;
        case 1:
          b[at] = this.pick([0, 0xff, 0x7f, 0x80, 1]);
          break;
        case 2:
          b[at] = this.int(256);
          break;
        default: {
          // a u32 field set to a boundary value
          const off = at & ~3;
          if (off + 4 <= b.byteLength) new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(off, this.edgyU32(), true);
        }
      }
    }
    return b;
  }
}
