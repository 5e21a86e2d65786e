import * as ort from "onnxruntime-node";
import { DataError } from "../errors.js";
import type { Metric } from "./metric-names.js";
import { encodeOnnxModel } from "./onnx-graph.js";

export { METRICS, type Metric } from "./metric-names.js";

/**
 * Dense pairwise distances through ONNX Runtime's MatMul (multi-threaded, ~50x a plain JS loop
 * here; see bench/RESULTS.md). Euclidean = sqrt(max(0, |a|^2 + |b|^2 - 2 a.b)), never squared:
 * squared distances change HDBSCAN's lambda values and so which clusters are stable.
 * Cosine distance = max(0, 1 - cos). The graph runs over blocks of rows against the rows from
 * the block on (the upper triangle: half the multiply-adds), so the only large allocation is
 * the n x n result.
 */
const sessions = new Map<Metric, Promise<ort.InferenceSession>>();

function distanceGraph(metric: Metric): Uint8Array {
  if (metric === "cosine") {
    return encodeOnnxModel({
      name: "cosine_distance_block",
      inputs: [
        { name: "A", shape: ["m", "d"] },
        { name: "B", shape: ["n", "d"] },
        { name: "one", shape: [1] },
      ],
      outputs: [{ name: "D", shape: ["m", "n"] }],
      nodes: [
        { op: "Gemm", inputs: ["A", "B"], output: "P", intAttributes: { transB: 1 } },
        { op: "Sub", inputs: ["one", "P"], output: "S" },
        { op: "Relu", inputs: ["S"], output: "D" },
      ],
    });
  }
  return encodeOnnxModel({
    name: "euclidean_distance_block",
    inputs: [
      { name: "A", shape: ["m", "d"] },
      { name: "B", shape: ["n", "d"] },
      { name: "an", shape: ["m", 1] },
      { name: "bn", shape: [1, "n"] },
      { name: "minus_two", shape: [1] },
    ],
    outputs: [{ name: "D", shape: ["m", "n"] }],
    nodes: [
      { op: "Gemm", inputs: ["A", "B"], output: "P", intAttributes: { transB: 1 } },
      { op: "Mul", inputs: ["P", "minus_two"], output: "P2" },
      { op: "Add", inputs: ["P2", "an"], output: "S1" },
      { op: "Add", inputs: ["S1", "bn"], output: "S2" },
      { op: "Relu", inputs: ["S2"], output: "S3" },
      { op: "Sqrt", inputs: ["S3"], output: "D" },
    ],
  });
}

function session(metric: Metric): Promise<ort.InferenceSession> {
  let s = sessions.get(metric);
  if (!s) {
    s = ort.InferenceSession.create(distanceGraph(metric), { graphOptimizationLevel: "all", executionProviders: ["cpu"] });
    sessions.set(metric, s);
  }
  return s;
}

/** Row-wise L2 normalisation into a new array; a zero row has no direction, so cosine is undefined for it. */
export function l2NormalizeRows(points: Float32Array, n: number, dim: number, what = "point"): Float32Array {
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    const base = i * dim;
    for (let k = 0; k < dim; k++) sum += points[base + k]! * points[base + k]!;
    if (!(sum > 0) || !Number.isFinite(sum)) {
      throw new DataError(`${what} ${i} has norm ${Math.sqrt(sum)}: cosine distance is undefined for it`, {
        location: { row: i },
        hint: "drop zero or non-finite vectors, or use metric euclidean",
      });
    }
    const inv = 1 / Math.sqrt(sum);
    for (let k = 0; k < dim; k++) out[base + k] = points[base + k]! * inv;
  }
  return out;
}

/**
 * Euclidean distances do not change under translation, but the float32 expansion
 * |a|^2 + |b|^2 - 2ab loses precision with the size of the norms: centring first keeps the
 * cancellation error small for close points.
 */
function centerColumns(points: Float32Array, n: number, dim: number, weights?: ArrayLike<number>): Float32Array {
  // Weighted by multiplicity, so distinct points with weights are centred as their expansion is.
  const mean = new Float64Array(dim);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const w = weights ? weights[i]! : 1;
    total += w;
    for (let k = 0; k < dim; k++) mean[k] += w * points[i * dim + k]!;
  }
  for (let k = 0; k < dim; k++) mean[k] /= Math.max(1, total);
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) for (let k = 0; k < dim; k++) out[i * dim + k] = points[i * dim + k]! - mean[k]!;
  return out;
}

function squaredNorms(points: Float32Array, n: number, dim: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let k = 0; k < dim; k++) sum += points[i * dim + k]! * points[i * dim + k]!;
    out[i] = sum;
  }
  return out;
}

export interface DistanceOptions {
  /** Rows per ORT call: bounds ORT's intermediate buffers (MatMul result + elementwise temporaries). */
  blockRows?: number;
  onProgress?: (doneRows: number, totalRows: number) => void;
  /** Multiplicity of each row (distinct points standing for duplicates); only the centring uses it. */
  weights?: ArrayLike<number>;
}

/**
 * The full n x n distance matrix, row-major, float32. The diagonal is set to exactly 0 (the
 * expanded formula leaves rounding noise there), and the matrix is made exactly symmetric
 * (upper triangle copied down) so that tie order cannot depend on float round-off.
 */
export async function pairwiseDistances(points: Float32Array, n: number, dim: number, metric: Metric, options: DistanceOptions = {}): Promise<Float32Array> {
  if (points.length !== n * dim) throw new DataError(`expected ${n} x ${dim} = ${n * dim} values, got ${points.length}`);
  const matrix = new Float32Array(n * n);
  if (n === 0) return matrix;
  const s = await session(metric);
  const source = metric === "cosine" ? l2NormalizeRows(points, n, dim) : centerColumns(points, n, dim, options.weights);
  const norms = metric === "euclidean" ? squaredNorms(source, n, dim) : undefined;
  // ORT's intermediates are a few blocks of m x n floats; ~64 MB of them per call keeps the peak low.
  const blockRows = Math.max(1, Math.min(n, options.blockRows ?? (Math.floor((16 * 1024 * 1024) / n) || 1)));
  const one = new ort.Tensor("float32", Float32Array.of(1), [1]);
  const minusTwo = new ort.Tensor("float32", Float32Array.of(-2), [1]);
  for (let start = 0; start < n; start += blockRows) {
    const m = Math.min(blockRows, n - start);
    const width = n - start;
    const feeds: Record<string, ort.Tensor> = {
      A: new ort.Tensor("float32", source.subarray(start * dim, (start + m) * dim), [m, dim]),
      B: new ort.Tensor("float32", source.subarray(start * dim), [width, dim]),
    };
    if (metric === "cosine") feeds.one = one;
    else {
      feeds.an = new ort.Tensor("float32", norms!.subarray(start, start + m), [m, 1]);
      feeds.bn = new ort.Tensor("float32", norms!.subarray(start), [1, width]);
      feeds.minus_two = minusTwo;
    }
    const out = (await s.run(feeds)).D!;
    const block = out.data as Float32Array;
    for (let r = 0; r < m; r++) matrix.set(block.subarray(r * width + r, (r + 1) * width), (start + r) * n + start + r);
    out.dispose();
    options.onProgress?.(start + m, n);
  }
  symmetrizeFromUpper(matrix, n);
  zeroDuplicatePairs(matrix, points, n, dim);
  return matrix;
}

/**
 * Identical rows (the same report embedded twice: QaTa has ~55 distinct captions per 1,000)
 * must be at distance exactly 0, as a double-precision reference computes them; the float32
 * expansion leaves ~1e-7 (cosine) or ~3e-4 (euclidean, a sqrt of rounding noise) there, and
 * those tiny non-zero distances turn infinite lambdas into huge finite ones, which changes which
 * clusters look stable.
 */
export function duplicateGroups(points: Float32Array, n: number, dim: number): number[][] {
  const words = new Uint32Array(points.buffer, points.byteOffset, n * dim);
  const buckets = new Map<number, number[][]>();
  const groups: number[][] = [];
  for (let i = 0; i < n; i++) {
    let h = 0x811c9dc5;
    for (let k = 0; k < dim; k++) h = Math.imul(h ^ words[i * dim + k]!, 0x01000193);
    let bucket = buckets.get(h);
    if (!bucket) buckets.set(h, (bucket = []));
    let placed = false;
    for (const group of bucket) {
      const j = group[0]!;
      let same = true;
      for (let k = 0; k < dim && same; k++) same = words[i * dim + k] === words[j * dim + k];
      if (same) {
        group.push(i);
        placed = true;
        break;
      }
    }
    if (!placed) {
      const group = [i];
      bucket.push(group);
      groups.push(group);
    }
  }
  return groups.filter((g) => g.length > 1);
}

function zeroDuplicatePairs(matrix: Float32Array, points: Float32Array, n: number, dim: number): void {
  for (const group of duplicateGroups(points, n, dim)) {
    for (const i of group) for (const j of group) matrix[i * n + j] = 0;
  }
}

/** Copies the upper triangle onto the lower one in cache-sized tiles and zeroes the diagonal. */
function symmetrizeFromUpper(matrix: Float32Array, n: number): void {
  const tile = 64;
  for (let bi = 0; bi < n; bi += tile) {
    const iEnd = Math.min(n, bi + tile);
    for (let bj = bi; bj < n; bj += tile) {
      const jEnd = Math.min(n, bj + tile);
      for (let i = bi; i < iEnd; i++) {
        const row = i * n;
        for (let j = Math.max(bj, i + 1); j < jEnd; j++) matrix[j * n + i] = matrix[row + j]!;
      }
    }
    for (let i = bi; i < iEnd; i++) matrix[i * n + i] = 0;
  }
}

/**
 * The same matrix with plain JS loops (one dot product per pair, upper triangle only). Kept as
 * the baseline the benchmark compares ORT against, and as a cross-check in tests.
 */
export function pairwiseDistancesJs(points: Float32Array, n: number, dim: number, metric: Metric): Float32Array {
  const source = metric === "cosine" ? l2NormalizeRows(points, n, dim) : points;
  const norms = squaredNorms(source, n, dim);
  const matrix = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    const a = i * dim;
    for (let j = i + 1; j < n; j++) {
      const b = j * dim;
      let dot = 0;
      for (let k = 0; k < dim; k++) dot += source[a + k]! * source[b + k]!;
      const d = metric === "cosine" ? Math.max(0, 1 - dot) : Math.sqrt(Math.max(0, norms[i]! + norms[j]! - 2 * dot));
      matrix[i * n + j] = d;
      matrix[j * n + i] = d;
    }
  }
  return matrix;
}

/**
 * Distances from each row of `a` (na x dim) to each row of `b` (nb x dim), na x nb row-major,
 * through the same ORT graph (used to find each noise point's nearest clustered neighbour).
 */
export async function crossDistances(a: Float32Array, na: number, b: Float32Array, nb: number, dim: number, metric: Metric): Promise<Float32Array> {
  const result = new Float32Array(na * nb);
  if (na === 0 || nb === 0) return result;
  const s = await session(metric);
  const left = metric === "cosine" ? l2NormalizeRows(a, na, dim) : a;
  const right = metric === "cosine" ? l2NormalizeRows(b, nb, dim) : b;
  const blockRows = Math.max(1, Math.floor((16 * 1024 * 1024) / nb) || 1);
  const rightNorms = metric === "euclidean" ? squaredNorms(right, nb, dim) : undefined;
  const leftNorms = metric === "euclidean" ? squaredNorms(left, na, dim) : undefined;
  for (let start = 0; start < na; start += blockRows) {
    const m = Math.min(blockRows, na - start);
    const feeds: Record<string, ort.Tensor> = {
      A: new ort.Tensor("float32", left.subarray(start * dim, (start + m) * dim), [m, dim]),
      B: new ort.Tensor("float32", right, [nb, dim]),
    };
    if (metric === "cosine") feeds.one = new ort.Tensor("float32", Float32Array.of(1), [1]);
    else {
      feeds.an = new ort.Tensor("float32", leftNorms!.subarray(start, start + m), [m, 1]);
      feeds.bn = new ort.Tensor("float32", rightNorms!, [1, nb]);
      feeds.minus_two = new ort.Tensor("float32", Float32Array.of(-2), [1]);
    }
    const out = (await s.run(feeds)).D!;
    result.set(out.data as Float32Array, start * nb);
    out.dispose();
  }
  return result;
}

/**
 * Distances from the rows of `a` to the rows of `b` in blocks of rows of `a`, handed to `visit`
 * one block at a time (m x nb, row-major, valid until the next call), so a large query set never
 * needs its full na x nb matrix: memory stays at about `maxBlockValues` floats.
 */
export async function forEachDistanceBlock(
  a: Float32Array,
  na: number,
  b: Float32Array,
  nb: number,
  dim: number,
  metric: Metric,
  visit: (start: number, rows: number, block: Float32Array) => void,
  options: { maxBlockValues?: number; normalized?: boolean } = {},
): Promise<void> {
  if (na === 0 || nb === 0) return;
  const s = await session(metric);
  const left = metric === "cosine" && !options.normalized ? l2NormalizeRows(a, na, dim) : a;
  const right = metric === "cosine" && !options.normalized ? l2NormalizeRows(b, nb, dim) : b;
  const blockRows = Math.max(1, Math.floor((options.maxBlockValues ?? 16 * 1024 * 1024) / nb) || 1);
  const rightNorms = metric === "euclidean" ? squaredNorms(right, nb, dim) : undefined;
  const rightTensor = new ort.Tensor("float32", right, [nb, dim]);
  const one = new ort.Tensor("float32", Float32Array.of(1), [1]);
  const minusTwo = new ort.Tensor("float32", Float32Array.of(-2), [1]);
  for (let start = 0; start < na; start += blockRows) {
    const m = Math.min(blockRows, na - start);
    const slice = left.subarray(start * dim, (start + m) * dim);
    const feeds: Record<string, ort.Tensor> = { A: new ort.Tensor("float32", slice, [m, dim]), B: rightTensor };
    if (metric === "cosine") feeds.one = one;
    else {
      feeds.an = new ort.Tensor("float32", squaredNorms(slice, m, dim), [m, 1]);
      feeds.bn = new ort.Tensor("float32", rightNorms!, [1, nb]);
      feeds.minus_two = minusTwo;
    }
    const out = (await s.run(feeds)).D!;
    visit(start, m, out.data as Float32Array);
    out.dispose();
  }
}

/** Index of (and distance to) the nearest row of `b` for each row of `a`, in bounded blocks. */
export async function nearestRows(
  a: Float32Array,
  na: number,
  b: Float32Array,
  nb: number,
  dim: number,
  metric: Metric,
): Promise<{ index: Int32Array; distance: Float32Array }> {
  const index = new Int32Array(na).fill(-1);
  const distance = new Float32Array(na).fill(Infinity);
  await forEachDistanceBlock(a, na, b, nb, dim, metric, (start, rows, block) => {
    for (let r = 0; r < rows; r++) {
      let best = 0;
      let bestValue = block[r * nb]!;
      for (let c = 1; c < nb; c++) {
        const d = block[r * nb + c]!;
        if (d < bestValue) {
          bestValue = d;
          best = c;
        }
      }
      index[start + r] = best;
      distance[start + r] = bestValue;
    }
  });
  return { index, distance };
}
