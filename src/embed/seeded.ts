import { createHash } from "node:crypto";

/** mulberry32: a tiny seeded PRNG; the same seed gives the same stream on every platform. */
export function seededUniform(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal draws (Box-Muller) from a seeded uniform stream. */
export function seededGaussian(seed: number): () => number {
  const uniform = seededUniform(seed);
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const value = spare;
      spare = undefined;
      return value;
    }
    const u = 1 - uniform();
    const v = uniform();
    const radius = Math.sqrt(-2 * Math.log(u));
    spare = radius * Math.sin(2 * Math.PI * v);
    return radius * Math.cos(2 * Math.PI * v);
  };
}

/**
 * `count` signed buckets in [0, dim) for a string, from SHA-256 of (seed, text): the same term
 * always lands in the same places, independently of any vocabulary.
 */
export function hashedBuckets(text: string, seed: number, dim: number, count: number): { index: number; sign: number }[] {
  const digest = createHash("sha256").update(`${seed}\u0000${text}`).digest();
  const out: { index: number; sign: number }[] = [];
  for (let i = 0; i < count; i++) {
    const word = digest.readUInt32LE((i * 4) % 28);
    out.push({ index: (word >>> 1) % dim, sign: word & 1 ? 1 : -1 });
  }
  return out;
}
