/** A seeded generator of floats in [0, 1). */
export type Random = () => number;

/**
 * mulberry32: small, fast and good enough for initialisation, shuffling, sampling and synthetic
 * data; the one seeded generator of the project, so a seed means the same stream everywhere.
 */
export function mulberry32(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
