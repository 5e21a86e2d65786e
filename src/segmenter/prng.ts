/**
 * Seeded randomness for training. Everything random in src/train (weight init, shuffling) comes
 * from here, keyed by (seed, purpose, counter), so a resumed run can rebuild the exact stream of
 * a given epoch without storing generator state.
 */
import { mulberry32, type Random } from "../util/random.js";

export { mulberry32, type Random };

/** Derives an independent 32-bit seed from a base seed and a list of labels (FNV-1a over the text). */
export function deriveSeed(seed: number, ...labels: (string | number)[]): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  const text = labels.join("\u0000");
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // One extra avalanche round so neighbouring labels do not give neighbouring seeds.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  return h >>> 0;
}

/** Standard normal samples (Box-Muller). */
export function normalArray(random: Random, length: number, std = 1): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i += 2) {
    const u1 = Math.max(random(), 1e-12);
    const u2 = random();
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < length) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/** Fisher-Yates permutation of 0..n-1. */
export function permutation(random: Random, n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}
