import { ownReportAucPerRow, mean } from "../prototypes/retrieval.js";
import { mulberry32 } from "../util/random.js";

/**
 * The learned encoder's pure core: pooling the trunk's outputs into a feature vector that keeps
 * location, standardising it, and the ridge head that maps it onto the text embeddings.
 *
 * Why these features: QaTa's captions are templated from which lung zones hold infection and how
 * many regions there are. Upper/middle/lower x left/right is a 3x2 grid; the trunk's predicted
 * mask, pooled as area fractions on a few grids, says where the lesion is almost as directly as
 * the true mask does, and the bottleneck pooled on the same 3x2 grid adds what the mask misses
 * (opacity, extent). A global pool would keep none of the location the captions are about.
 */

/** [rows, cols] of the grids the predicted mask is pooled on (area fractions). */
export const MASK_GRIDS: readonly [number, number][] = [
  [1, 1],
  [2, 2],
  [3, 2],
  [4, 4],
];
/** [rows, cols] of the grid the bottleneck is average-pooled on: the six lung zones. */
export const BOTTLENECK_GRID: readonly [number, number] = [3, 2];

export function maskFeatureCount(): number {
  return MASK_GRIDS.reduce((sum, [r, c]) => sum + r * c, 0);
}

export function featureCount(bottleneckChannels: number): number {
  return BOTTLENECK_GRID[0] * BOTTLENECK_GRID[1] * bottleneckChannels + maskFeatureCount();
}

/**
 * Average-pools one image's [h, w, c] map (channels last) on a rows x cols grid into out[offset..]:
 * cell (r, q) covers rows floor(r*h/rows)..floor((r+1)*h/rows)-1 (and the same for columns), so
 * grids that do not divide the map still cover every pixel once. Output order: cell-major, channel-minor.
 */
export function poolGrid(
  map: Float32Array,
  base: number,
  h: number,
  w: number,
  c: number,
  rows: number,
  cols: number,
  out: Float32Array,
  offset: number,
): number {
  let o = offset;
  for (let r = 0; r < rows; r++) {
    const y0 = Math.floor((r * h) / rows);
    const y1 = Math.max(y0 + 1, Math.floor(((r + 1) * h) / rows));
    for (let q = 0; q < cols; q++) {
      const x0 = Math.floor((q * w) / cols);
      const x1 = Math.max(x0 + 1, Math.floor(((q + 1) * w) / cols));
      const count = (y1 - y0) * (x1 - x0);
      for (let ch = 0; ch < c; ch++) {
        let s = 0;
        for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) s += map[base + (y * w + x) * c + ch]!;
        out[o++] = s / count;
      }
    }
  }
  return o;
}

/** Feature rows [b, featureCount] from bottleneck maps [b, h, w, c] and mask probabilities [b, H, W]. */
export function poolFeatures(bottleneck: Float32Array, h: number, w: number, c: number, probabilities: Float32Array, size: number, b: number): Float32Array {
  const width = featureCount(c);
  const out = new Float32Array(b * width);
  for (let i = 0; i < b; i++) {
    let o = poolGrid(bottleneck, i * h * w * c, h, w, c, BOTTLENECK_GRID[0], BOTTLENECK_GRID[1], out, i * width);
    for (const [rows, cols] of MASK_GRIDS) o = poolGrid(probabilities, i * size * size, size, size, 1, rows, cols, out, o);
  }
  return out;
}

/**
 * Per-feature standardisation (fitted on the training split's images) with the two blocks
 * balanced: each block's features are divided by sqrt(block width), so the 27 mask fractions
 * weigh as much as the hundreds of bottleneck channels, times `maskWeight` for the mask block.
 */
export interface Standardizer {
  mean: Float32Array;
  /** Multiplier per feature after centring (1 / std, times the block weight). */
  scale: Float32Array;
}

export function fitStandardizer(features: Float32Array, n: number, width: number, bottleneckWidth: number, maskWeight: number): Standardizer {
  const meanValues = new Float32Array(width);
  const scale = new Float32Array(width);
  for (let k = 0; k < width; k++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += features[i * width + k]!;
    const m = s / n;
    let v = 0;
    for (let i = 0; i < n; i++) v += (features[i * width + k]! - m) ** 2;
    const std = Math.sqrt(v / Math.max(1, n - 1));
    const block = k < bottleneckWidth ? 1 / Math.sqrt(bottleneckWidth) : maskWeight / Math.sqrt(width - bottleneckWidth);
    meanValues[k] = m;
    // A constant feature (e.g. a channel the ReLU never opens) carries nothing: weight 0.
    scale[k] = std > 1e-8 ? block / std : 0;
  }
  return { mean: meanValues, scale };
}

export function standardize(features: Float32Array, n: number, width: number, s: Standardizer): Float64Array {
  const out = new Float64Array(n * width);
  for (let i = 0; i < n; i++) for (let k = 0; k < width; k++) out[i * width + k] = (features[i * width + k]! - s.mean[k]!) * s.scale[k]!;
  return out;
}

/** Solves (A) X = B in place for symmetric positive definite A [k, k] and B [k, m] (Cholesky); returns X in B. */
export function choleskySolve(a: Float64Array, b: Float64Array, k: number, m: number): Float64Array {
  const l = new Float64Array(k * k);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * k + j]!;
      for (let p = 0; p < j; p++) s -= l[i * k + p]! * l[j * k + p]!;
      if (i === j) {
        if (!(s > 0)) throw new Error(`matrix is not positive definite (pivot ${i}: ${s})`);
        l[i * k + i] = Math.sqrt(s);
      } else {
        l[i * k + j] = s / l[j * k + j]!;
      }
    }
  }
  // Forward: L Y = B; backward: L^T X = Y; column blocks of B in place.
  for (let i = 0; i < k; i++) {
    for (let p = 0; p < i; p++) {
      const f = l[i * k + p]!;
      if (f === 0) continue;
      for (let c = 0; c < m; c++) b[i * m + c] -= f * b[p * m + c]!;
    }
    const d = l[i * k + i]!;
    for (let c = 0; c < m; c++) b[i * m + c] /= d;
  }
  for (let i = k - 1; i >= 0; i--) {
    for (let p = i + 1; p < k; p++) {
      const f = l[p * k + i]!;
      if (f === 0) continue;
      for (let c = 0; c < m; c++) b[i * m + c] -= f * b[p * m + c]!;
    }
    const d = l[i * k + i]!;
    for (let c = 0; c < m; c++) b[i * m + c] /= d;
  }
  return b;
}

/**
 * Ridge regression W [d, m] of centred targets Y [n, m] on X [n, d]: (X^T X + lambda I)^-1 X^T Y,
 * through the n x n dual (X^T (X X^T + lambda I)^-1 Y) when there are fewer rows than features.
 * lambda is relative: times the mean diagonal of X^T X, so one grid suits any feature scale.
 */
export function ridge(x: Float64Array, y: Float64Array, n: number, d: number, m: number, relativeLambda: number): Float64Array {
  let trace = 0;
  for (let i = 0; i < n * d; i++) trace += x[i]! * x[i]!;
  const lambda = relativeLambda * Math.max(trace / d, 1e-12);
  const w = new Float64Array(d * m);
  if (d <= n) {
    const a = new Float64Array(d * d);
    const b = new Float64Array(d * m);
    for (let i = 0; i < n; i++) {
      for (let p = 0; p < d; p++) {
        const xp = x[i * d + p]!;
        if (xp === 0) continue;
        for (let q = p; q < d; q++) a[p * d + q] += xp * x[i * d + q]!;
        for (let c = 0; c < m; c++) b[p * m + c] += xp * y[i * m + c]!;
      }
    }
    for (let p = 0; p < d; p++) {
      for (let q = 0; q < p; q++) a[p * d + q] = a[q * d + p]!;
      a[p * d + p] += lambda;
    }
    return choleskySolve(a, b, d, m);
  }
  const kernel = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let p = 0; p < d; p++) s += x[i * d + p]! * x[j * d + p]!;
      kernel[i * n + j] = s;
      kernel[j * n + i] = s;
    }
    kernel[i * n + i] += lambda;
  }
  const alpha = choleskySolve(kernel, Float64Array.from(y), n, m);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < d; p++) {
      const xp = x[i * d + p]!;
      if (xp === 0) continue;
      for (let c = 0; c < m; c++) w[p * m + c] += xp * alpha[i * m + c]!;
    }
  }
  return w;
}

/** X [n, d] times W [d, m]. */
export function project(x: Float64Array, w: Float64Array | Float32Array, n: number, d: number, m: number): Float64Array {
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < d; p++) {
      const xp = x[i * d + p]!;
      if (xp === 0) continue;
      for (let c = 0; c < m; c++) out[i * m + c] += xp * w[p * m + c]!;
    }
  }
  return out;
}

/** Centred targets: each text embedding minus the mean over the rows. */
export function centreRows(y: Float32Array, n: number, m: number): { centred: Float64Array; mean: Float64Array } {
  const meanValues = new Float64Array(m);
  for (let i = 0; i < n; i++) for (let c = 0; c < m; c++) meanValues[c] += y[i * m + c]! / n;
  const centred = new Float64Array(n * m);
  for (let i = 0; i < n; i++) for (let c = 0; c < m; c++) centred[i * m + c] = y[i * m + c]! - meanValues[c]!;
  return { centred, mean: meanValues };
}

/** Seeded fold of each row (0..folds-1), balanced. */
export function foldsOf(n: number, folds: number, seed: number): Int32Array {
  const order = Array.from({ length: n }, (_, i) => i);
  const random = mulberry32(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const out = new Int32Array(n);
  order.forEach((row, position) => (out[row] = position % folds));
  return out;
}

export function pickRows(values: Float64Array, rows: readonly number[], width: number): Float64Array {
  const out = new Float64Array(rows.length * width);
  rows.forEach((r, i) => out.set(values.subarray(r * width, (r + 1) * width), i * width));
  return out;
}

/**
 * Out-of-fold own-report AUC of a head: every paired row is predicted by a head fitted on the
 * other folds, then each prediction ranks all rows' (centred) reports.
 */
export function crossValidatedAuc(
  x: Float64Array,
  y: Float64Array,
  n: number,
  d: number,
  m: number,
  folds: Int32Array,
  fit: (x: Float64Array, y: Float64Array, n: number) => Float64Array,
): number {
  const predicted = new Float64Array(n * m);
  const k = Math.max(...folds) + 1;
  for (let f = 0; f < k; f++) {
    const trainRows: number[] = [];
    const heldRows: number[] = [];
    for (let i = 0; i < n; i++) (folds[i] === f ? heldRows : trainRows).push(i);
    if (heldRows.length === 0 || trainRows.length === 0) continue;
    const w = fit(pickRows(x, trainRows, d), pickRows(y, trainRows, m), trainRows.length);
    const p = project(pickRows(x, heldRows, d), w, heldRows.length, d, m);
    heldRows.forEach((row, i) => predicted.set(p.subarray(i * m, (i + 1) * m), row * m));
  }
  return mean(ownReportAucPerRow(predicted, y, n, m));
}
