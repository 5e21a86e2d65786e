import { forEachDistanceBlock, nearestRows } from "./distances.js";
import { mulberry32 } from "../util/random.js";

/**
 * Seeded k-means++ and Lloyd iterations over float32 rows, best of `restarts` by inertia. The
 * assignment step (rows x centroids distances) runs through ORT's MatMul, the update step is one
 * pass over the rows: ~100x ml-kmeans on 1,024-d [image ; text] rows (68 s -> under 1 s for
 * 4,096 rows, k 16, 3 restarts on this 2-core machine), and no number[][] copy of the rows.
 */
export interface KmeansResult {
  /** Centroid of each row, 0..k-1. */
  clusters: Int32Array;
  /** k x width, row-major. */
  centroids: Float32Array;
  /** Sum of squared distances to the assigned centroids. */
  inertia: number;
}

export async function kmeans(
  rows: Float32Array,
  n: number,
  width: number,
  k: number,
  /**
   * `assignment: "centroids"` keeps small sets on the explicit path (distances to centroid
   * vectors through MatMul), which the distance-space path must agree with (a test compares them).
   */
  options: { seed: number; restarts: number; maxIterations?: number; assignment?: "auto" | "centroids" },
): Promise<KmeansResult> {
  let best: KmeansResult | undefined;
  // Small sets (most labels of templated reports): the squared distances between rows, once for
  // all restarts, so seeding reads candidates' distances instead of recomputing n x width each.
  const pairwise = n <= SMALL_SET ? pairwiseSquared(rows, n, width) : undefined;
  const inDistanceSpace = options.assignment !== "centroids";
  for (let r = 0; r < Math.max(1, options.restarts); r++) {
    const result = await lloyd(rows, n, width, Math.min(k, n), options.seed * 1000 + r + 1, options.maxIterations ?? 100, pairwise, inDistanceSpace);
    if (!best || result.inertia < best.inertia) best = result;
  }
  return best!;
}

const SMALL_SET = 128;

function pairwiseSquared(rows: Float32Array, n: number, width: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const d = squaredDistance(rows, i, rows, j, width);
      out[i * n + j] = d;
      out[j * n + i] = d;
    }
  }
  return out;
}

function squaredDistance(rows: Float32Array, i: number, centroids: Float32Array, c: number, width: number): number {
  let sum = 0;
  for (let x = 0; x < width; x++) {
    const d = rows[i * width + x]! - centroids[c * width + x]!;
    sum += d * d;
  }
  return sum;
}

/**
 * Greedy k-means++ seeding (as scikit-learn): each next centre is the best, by the potential it
 * leaves, of 2 + ln k candidates drawn with probability proportional to the squared distance to
 * the nearest centre so far. Plain k-means++ puts two centres in one group often enough (1 run
 * in 7 on five 24-d blobs here) that restarts alone do not cure it.
 */
export async function seedCentroids(
  rows: Float32Array,
  n: number,
  width: number,
  k: number,
  random: () => number,
  pairwise?: Float64Array,
  /** When given, receives the row each centre was taken from. */
  seedRows?: Int32Array,
): Promise<Float32Array> {
  const centroids = new Float32Array(k * width);
  const nearest = new Float64Array(n);
  const candidates = 2 + Math.floor(Math.log(k));
  const trial = new Float64Array(n * candidates);
  const first = Math.floor(random() * n);
  centroids.set(rows.subarray(first * width, (first + 1) * width), 0);
  if (seedRows) seedRows[0] = first;
  let potential = 0;
  for (let i = 0; i < n; i++) potential += nearest[i] = pairwise ? pairwise[i * n + first]! : squaredDistance(rows, i, centroids, 0, width);
  const picks = new Int32Array(candidates);
  const picked = new Float32Array(candidates * width);
  for (let c = 1; c < k; c++) {
    for (let t = 0; t < candidates; t++) {
      let pick = Math.floor(random() * n);
      if (potential > 0) {
        let target = random() * potential;
        pick = n - 1;
        for (let i = 0; i < n; i++) {
          target -= nearest[i]!;
          if (target < 0) {
            pick = i;
            break;
          }
        }
      }
      picks[t] = pick;
      picked.set(rows.subarray(pick * width, (pick + 1) * width), t * width);
    }
    if (pairwise) {
      for (let i = 0; i < n; i++) for (let t = 0; t < candidates; t++) trial[i * candidates + t] = pairwise[i * n + picks[t]!]!;
    } else await squaredDistancesTo(rows, n, picked, candidates, width, trial);
    let best = 0;
    let bestPotential = Infinity;
    for (let t = 0; t < candidates; t++) {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += Math.min(nearest[i]!, trial[i * candidates + t]!);
      if (sum < bestPotential) {
        bestPotential = sum;
        best = t;
      }
    }
    centroids.set(picked.subarray(best * width, (best + 1) * width), c * width);
    if (seedRows) seedRows[c] = picks[best]!;
    for (let i = 0; i < n; i++) nearest[i] = Math.min(nearest[i]!, trial[i * candidates + best]!);
    potential = bestPotential;
  }
  return centroids;
}

/** n x m squared distances into `out`: plain loops for small work, ORT's MatMul beyond (one call instead of n x m x width JS steps). */
async function squaredDistancesTo(rows: Float32Array, n: number, targets: Float32Array, m: number, width: number, out: Float64Array): Promise<void> {
  if (n * m * width <= 1 << 20) {
    for (let i = 0; i < n; i++) for (let t = 0; t < m; t++) out[i * m + t] = squaredDistance(rows, i, targets, t, width);
    return;
  }
  await forEachDistanceBlock(rows, n, targets, m, width, "euclidean", (start, blockRows, block) => {
    for (let r = 0; r < blockRows * m; r++) out[start * m + r] = block[r]! * block[r]!;
  });
}

/**
 * Lloyd's iterations for a small set, in the space of its pairwise squared distances: the squared
 * distance from row i to the mean of cluster S is (1/|S|) sum_j d(i, j) - (1/(2|S|^2)) sum_{j,l} d(j, l)
 * over j, l in S, so an iteration costs n^2 additions instead of n x k x width and a MatMul call.
 * Most labels of templated reports are small sets, and thousands of them ran through the MatMul
 * path one call per iteration. The same assignments as that path, up to rounding; null when a
 * cluster empties (the caller then runs the explicit path, where an empty centroid stays put).
 * `seedRow[c]` is the row k-means++ took centre c from.
 */
function lloydInDistanceSpace(n: number, k: number, seedRow: Int32Array, pairwise: Float64Array, maxIterations: number): Int32Array | null {
  let clusters = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < k; c++) if (pairwise[i * n + seedRow[c]!]! < pairwise[i * n + seedRow[best]!]!) best = c;
    clusters[i] = best;
  }
  const sizes = new Int32Array(k);
  const within = new Float64Array(k);
  const toCluster = new Float64Array(n * k);
  for (let iteration = 1; iteration < maxIterations; iteration++) {
    sizes.fill(0);
    within.fill(0);
    toCluster.fill(0);
    for (let i = 0; i < n; i++) sizes[clusters[i]!]!++;
    if (sizes.includes(0)) return null;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const d = pairwise[i * n + j]!;
        toCluster[i * k + clusters[j]!] += d;
        if (clusters[i] === clusters[j]) within[clusters[i]!] += d;
      }
    }
    const next = new Int32Array(n);
    let changed = 0;
    for (let i = 0; i < n; i++) {
      let best = 0;
      let bestValue = Infinity;
      for (let c = 0; c < k; c++) {
        const size = sizes[c]!;
        const value = toCluster[i * k + c]! / size - within[c]! / (2 * size * size);
        if (value < bestValue) {
          bestValue = value;
          best = c;
        }
      }
      next[i] = best;
      if (best !== clusters[i]) changed++;
    }
    clusters = next;
    if (changed === 0) break;
  }
  return clusters;
}

/** The result for final assignments: centroids as the clusters' means, and the inertia. */
function withCentroids(rows: Float32Array, n: number, width: number, k: number, clusters: Int32Array): KmeansResult {
  const sums = new Float64Array(k * width);
  const counts = new Int32Array(k);
  for (let i = 0; i < n; i++) {
    const c = clusters[i]!;
    counts[c]!++;
    for (let x = 0; x < width; x++) sums[c * width + x] += rows[i * width + x]!;
  }
  const centroids = new Float32Array(k * width);
  for (let c = 0; c < k; c++) if (counts[c]! > 0) for (let x = 0; x < width; x++) centroids[c * width + x] = sums[c * width + x]! / counts[c]!;
  let inertia = 0;
  for (let i = 0; i < n; i++) inertia += squaredDistance(rows, i, centroids, clusters[i]!, width);
  return { clusters, centroids, inertia };
}

async function lloyd(
  rows: Float32Array,
  n: number,
  width: number,
  k: number,
  seed: number,
  maxIterations: number,
  pairwise?: Float64Array,
  inDistanceSpace = true,
): Promise<KmeansResult> {
  const seedRows = new Int32Array(k);
  const centroids = await seedCentroids(rows, n, width, k, mulberry32(seed), pairwise, seedRows);
  if (pairwise && inDistanceSpace) {
    const clusters = lloydInDistanceSpace(n, k, seedRows, pairwise, maxIterations);
    if (clusters) return withCentroids(rows, n, width, k, clusters);
  }
  let clusters: Int32Array = new Int32Array(n).fill(-1);
  const sums = new Float64Array(k * width);
  const counts = new Int32Array(k);
  for (let iteration = 0; iteration < maxIterations; iteration++) {
    const assigned = (await nearestRows(rows, n, centroids, k, width, "euclidean")).index;
    let changed = 0;
    for (let i = 0; i < n; i++) if (assigned[i] !== clusters[i]) changed++;
    clusters = assigned;
    if (changed === 0) break;
    sums.fill(0);
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const c = clusters[i]!;
      counts[c]!++;
      for (let x = 0; x < width; x++) sums[c * width + x] += rows[i * width + x]!;
    }
    // A centroid that lost all its rows stays where it was.
    for (let c = 0; c < k; c++) if (counts[c]! > 0) for (let x = 0; x < width; x++) centroids[c * width + x] = sums[c * width + x]! / counts[c]!;
  }
  let inertia = 0;
  for (let i = 0; i < n; i++) inertia += squaredDistance(rows, i, centroids, clusters[i]!, width);
  return { clusters, centroids, inertia };
}
