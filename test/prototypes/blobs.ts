/** Generated clustered points (Gaussian blobs of varying spread plus uniform noise), for HDBSCAN tests and benches. */
import { gaussian, mulberry32 } from "./fixtures.js";

export interface BlobOptions {
  points: number;
  dim: number;
  blobs: number;
  seed: number;
  /** Share of the points drawn uniformly over the blobs' bounding box (noise). */
  noiseShare?: number;
  /** Distance scale between blob centres relative to the blobs' spread. */
  separation?: number;
}

export function blobs(options: BlobOptions): { data: Float32Array; truth: Int32Array } {
  const random = mulberry32(options.seed);
  const normal = gaussian(random);
  const { dim, points } = options;
  const separation = options.separation ?? 6;
  const centres = Array.from({ length: options.blobs }, () => Array.from({ length: dim }, () => separation * normal()));
  const spread = Array.from({ length: options.blobs }, () => 0.5 + random());
  const data = new Float32Array(points * dim);
  const truth = new Int32Array(points);
  const noise = Math.round(points * (options.noiseShare ?? 0.05));
  for (let i = 0; i < points; i++) {
    if (i < noise) {
      truth[i] = -1;
      for (let k = 0; k < dim; k++) data[i * dim + k] = separation * 2.5 * (2 * random() - 1);
    } else {
      const b = i % options.blobs;
      truth[i] = b;
      for (let k = 0; k < dim; k++) data[i * dim + k] = centres[b]![k]! + spread[b]! * normal();
    }
  }
  return { data, truth };
}

/**
 * `distinct` points repeated to `total` rows with skewed multiplicities (a few texts very common,
 * most rare, as templated reports are), shuffled; `groupOf[i]` is row i's distinct point.
 */
export function withRepetition(distinct: Float32Array, dim: number, total: number, seed: number): { data: Float32Array; groupOf: Int32Array } {
  const m = distinct.length / dim;
  const random = mulberry32(seed);
  const groupOf = new Int32Array(total);
  for (let i = 0; i < total; i++) groupOf[i] = i < m ? i : Math.floor(m * random() ** 3);
  for (let i = total - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = groupOf[i]!;
    groupOf[i] = groupOf[j]!;
    groupOf[j] = t;
  }
  const data = new Float32Array(total * dim);
  for (let i = 0; i < total; i++) data.set(distinct.subarray(groupOf[i]! * dim, (groupOf[i]! + 1) * dim), i * dim);
  return { data, groupOf };
}
