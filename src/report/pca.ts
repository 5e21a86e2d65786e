/**
 * Two-component PCA by power iteration on the centred data, never forming the d x d covariance:
 * each step costs two passes over the n x d rows, so 5,000 x 512 takes milliseconds. The start
 * vector is fixed, so the same embeddings always give the same picture (up to nothing: the sign
 * of each component is normalised so its largest loading is positive).
 */
export interface Pca2 {
  dim: number;
  mean: Float64Array;
  components: [Float64Array, Float64Array];
  /** Fraction of the total variance along each component. */
  explained: [number, number];
}

export function fitPca2(rows: readonly ArrayLike<number>[], dim: number): Pca2 {
  const n = rows.length;
  if (n < 2) throw new RangeError(`PCA needs at least 2 points, got ${n}`);
  const mean = new Float64Array(dim);
  for (const r of rows) for (let j = 0; j < dim; j++) mean[j]! += r[j]! / n;
  let total = 0;
  for (const r of rows) for (let j = 0; j < dim; j++) total += (r[j]! - mean[j]!) ** 2;
  total /= n - 1;
  const found: Float64Array[] = [];
  const variances: number[] = [];
  for (let c = 0; c < 2; c++) {
    let v: Float64Array = new Float64Array(dim);
    for (let j = 0; j < dim; j++) v[j] = 1 + ((j * 7919 + c * 104729) % 13) / 13;
    orthonormalise(v, found);
    let lambda = 0;
    for (let iter = 0; iter < 300; iter++) {
      const next = covarianceTimes(rows, mean, v);
      orthonormalise(next, found);
      const nextLambda = rayleigh(rows, mean, next);
      const delta = Math.abs(nextLambda - lambda);
      v = next;
      lambda = nextLambda;
      if (iter > 3 && delta <= 1e-10 * Math.max(1, Math.abs(lambda))) break;
    }
    let largest = 0;
    for (let j = 0; j < dim; j++) if (Math.abs(v[j]!) > Math.abs(v[largest]!)) largest = j;
    if (v[largest]! < 0) for (let j = 0; j < dim; j++) v[j] = -v[j]!;
    found.push(v);
    variances.push(lambda);
  }
  return {
    dim,
    mean,
    components: [found[0]!, found[1]!],
    explained: [total > 0 ? variances[0]! / total : 0, total > 0 ? variances[1]! / total : 0],
  };
}

export function project(pca: Pca2, row: ArrayLike<number>): [number, number] {
  let a = 0;
  let b = 0;
  for (let j = 0; j < pca.dim; j++) {
    const centred = row[j]! - pca.mean[j]!;
    a += centred * pca.components[0][j]!;
    b += centred * pca.components[1][j]!;
  }
  return [a, b];
}

function covarianceTimes(rows: readonly ArrayLike<number>[], mean: Float64Array, v: Float64Array): Float64Array {
  const dim = v.length;
  const out = new Float64Array(dim);
  for (const r of rows) {
    let dot = 0;
    for (let j = 0; j < dim; j++) dot += (r[j]! - mean[j]!) * v[j]!;
    for (let j = 0; j < dim; j++) out[j]! += dot * (r[j]! - mean[j]!);
  }
  for (let j = 0; j < dim; j++) out[j]! /= rows.length - 1;
  return out;
}

function rayleigh(rows: readonly ArrayLike<number>[], mean: Float64Array, v: Float64Array): number {
  let sum = 0;
  for (const r of rows) {
    let dot = 0;
    for (let j = 0; j < v.length; j++) dot += (r[j]! - mean[j]!) * v[j]!;
    sum += dot * dot;
  }
  return sum / (rows.length - 1);
}

function orthonormalise(v: Float64Array, basis: readonly Float64Array[]): void {
  for (const b of basis) {
    let dot = 0;
    for (let j = 0; j < v.length; j++) dot += v[j]! * b[j]!;
    for (let j = 0; j < v.length; j++) v[j]! -= dot * b[j]!;
  }
  let norm = 0;
  for (let j = 0; j < v.length; j++) norm += v[j]! ** 2;
  norm = Math.sqrt(norm);
  if (norm === 0) return;
  for (let j = 0; j < v.length; j++) v[j]! /= norm;
}
