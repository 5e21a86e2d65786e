/**
 * How well predicted text embeddings find their own reports: pure functions over row-major
 * [n, dim] arrays, shared by the prototypes stage's usefulness check and the learned embed
 * encoder's head selection.
 */

export function norms(values: Float32Array | Float64Array, n: number, dim: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < dim; k++) s += values[i * dim + k]! ** 2;
    out[i] = Math.sqrt(s);
  }
  return out;
}

/**
 * Per row i: the fraction of the other rows j whose report embedding is less cosine-similar to
 * prediction i than row i's own report is (ties count half). 0.5 = chance, 1 = the own report
 * always ranks first. Identical reports tie, so many images sharing one templated caption keep
 * even a perfect prediction below 1.
 */
export function ownReportAucPerRow(
  predicted: Float32Array | Float64Array,
  reports: Float32Array | Float64Array,
  n: number,
  dim: number,
  /** Only rows from..to-1 of `out` are computed (so a caller can split the n^2 work and yield between parts). */
  range: { from: number; to: number; out?: Float64Array; reportNorms?: Float64Array } = { from: 0, to: n },
): Float64Array {
  const out = range.out ?? new Float64Array(n);
  if (n < 2) return out.fill(0.5);
  const reportNorms = range.reportNorms ?? norms(reports, n, dim);
  const similarities = new Float64Array(n);
  for (let i = range.from; i < range.to; i++) {
    for (let j = 0; j < n; j++) {
      let dot = 0;
      for (let k = 0; k < dim; k++) dot += predicted[i * dim + k]! * reports[j * dim + k]!;
      // The prediction's own norm scales every j alike, so it cannot change the ranking.
      similarities[j] = reportNorms[j]! > 0 ? dot / reportNorms[j]! : 0;
    }
    const own = similarities[i]!;
    let below = 0;
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      const s = similarities[j]!;
      // Ties within float rounding count half: identical reports embed to identical vectors.
      if (Math.abs(s - own) <= 1e-9 * Math.max(1, Math.abs(own))) below += 0.5;
      else if (s < own) below += 1;
    }
    out[i] = below / (n - 1);
  }
  return out;
}

/** Per row: cos(predicted - mean, report - mean); 0 where either side is zero after centring. */
export function centredCosinePerRow(
  predicted: Float32Array | Float64Array,
  reports: Float32Array | Float64Array,
  mean: Float32Array | Float64Array,
  n: number,
  dim: number,
): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let dot = 0;
    let np = 0;
    let nr = 0;
    for (let k = 0; k < dim; k++) {
      const p = predicted[i * dim + k]! - mean[k]!;
      const r = reports[i * dim + k]! - mean[k]!;
      dot += p * r;
      np += p * p;
      nr += r * r;
    }
    out[i] = np > 0 && nr > 0 ? dot / Math.sqrt(np * nr) : 0;
  }
  return out;
}

export function mean(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i]!;
  return values.length ? s / values.length : Number.NaN;
}

/** Standard error of the mean of `values` (sample standard deviation / sqrt(n)). */
export function standardError(values: ArrayLike<number>): number {
  const n = values.length;
  if (n < 2) return Number.POSITIVE_INFINITY;
  const m = mean(values);
  let s = 0;
  for (let i = 0; i < n; i++) s += (values[i]! - m) ** 2;
  return Math.sqrt(s / (n - 1) / n);
}
