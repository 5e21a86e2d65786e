import { createHash } from "node:crypto";
import { mulberry32 } from "../util/random.js";

/** Standard normal draws (Box-Muller) from a seeded uniform stream. */
export function seededGaussian(seed: number): () => number {
  const uniform = mulberry32(seed);
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
