import { mulberry32 } from "./random.js";

export interface PairedDifference {
  /** Mean of a - b over the paired items. */
  meanDiff: number;
  /** 2.5th and 97.5th percentiles of the resampled means (NaN when there are no pairs). */
  ci95: [number, number];
  pairs: number;
}

/**
 * Paired bootstrap of the mean difference a[i] - b[i]: `resamples` draws of n items with
 * replacement (mulberry32 seeded by `seed`, so the same inputs give the same interval), the
 * percentile interval of the resampled means. Pairs where either side is not finite are dropped.
 */
export function pairedBootstrap(a: readonly number[], b: readonly number[], options: { seed: number; resamples?: number }): PairedDifference {
  if (a.length !== b.length) throw new RangeError(`paired bootstrap needs equal lengths, got ${a.length} and ${b.length}`);
  const diffs: number[] = [];
  for (let i = 0; i < a.length; i++) if (Number.isFinite(a[i]!) && Number.isFinite(b[i]!)) diffs.push(a[i]! - b[i]!);
  const n = diffs.length;
  if (n === 0) return { meanDiff: Number.NaN, ci95: [Number.NaN, Number.NaN], pairs: 0 };
  const mean = diffs.reduce((s, d) => s + d, 0) / n;
  const resamples = options.resamples ?? 2000;
  const random = mulberry32(options.seed);
  const means = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    let sum = 0;
    for (let k = 0; k < n; k++) sum += diffs[Math.floor(random() * n)]!;
    means[r] = sum / n;
  }
  means.sort();
  const at = (q: number) => means[Math.min(resamples - 1, Math.max(0, Math.round(q * (resamples - 1))))]!;
  return { meanDiff: mean, ci95: [at(0.025), at(0.975)], pairs: n };
}
