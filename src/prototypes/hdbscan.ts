import { DataError, UsageError } from "../errors.js";
import { l2NormalizeRows, pairwiseDistances, type Metric } from "./distances.js";
import { approximateHdbscan } from "./hdbscan-approximate.js";

/**
 * HDBSCAN (Campello, Moulavi & Sander 2013; McInnes et al.'s hdbscan library):
 * core distances -> mutual-reachability MST (dense Prim, O(n^2), right for high dimensions where
 * space trees do not prune) -> single-linkage hierarchy -> condensed tree -> excess-of-mass (or
 * leaf) selection -> flat labels (-1 = noise) and membership probabilities.
 *
 * Distances are never squared: lambda = 1 / distance, and squaring changes which clusters are
 * stable (the cause of hdbscan-ts's disagreement with reference implementations).
 */
export interface HdbscanOptions {
  /** Smallest group that counts as a cluster (>= 2). */
  minClusterSize: number;
  /** k of the core distance (the point itself counted); default = minClusterSize. */
  minSamples?: number;
  metric?: Metric;
  /** `eom` (excess of mass, the default) or `leaf` (the finest clusters of the condensed tree). */
  clusterSelection?: "eom" | "leaf";
  /** Called while the distance matrix is computed and the MST grows. */
  onProgress?: (task: "distances" | "mst", done: number, total: number) => void;
}

export interface CondensedTree {
  /** Parent cluster id (clusters are numbered from n; n = root). */
  parent: Int32Array;
  /** Child: a point index (< n) or a cluster id (>= n). */
  child: Int32Array;
  /** 1 / distance at which the child left the parent. */
  lambda: Float64Array;
  /** Points in the child. */
  size: Int32Array;
}

export interface HdbscanResult {
  /** Cluster per point, 0..numClusters-1, or -1 for noise. */
  labels: Int32Array;
  /** Strength of each point's membership in its cluster, 0..1 (0 for noise). */
  probabilities: Float32Array;
  numClusters: number;
  /** Stability of each selected cluster, by label. */
  stabilities: Float64Array;
  coreDistances: Float32Array;
  /**
   * Over the distinct points (identical rows collapse into one, `size` = its multiplicity);
   * `distinctOf` maps each input row to its distinct point (absent: rows are the points).
   */
  condensedTree: CondensedTree;
  distinctOf?: Int32Array;
}

type PointsInput = Float32Array | Float64Array | ArrayLike<ArrayLike<number>>;

/** Flattens number[][] (or a flat typed array with `dim`) into row-major float32. */
export function toMatrix(points: PointsInput, dim?: number): { data: Float32Array; n: number; dim: number } {
  if (points instanceof Float32Array || points instanceof Float64Array) {
    if (!dim || dim < 1) throw new UsageError("a flat typed array of points needs options.dim");
    if (points.length % dim !== 0) throw new DataError(`${points.length} values are not a whole number of ${dim}-d points`);
    return { data: points instanceof Float32Array ? points : Float32Array.from(points), n: points.length / dim, dim };
  }
  const n = points.length;
  const d = n > 0 ? points[0]!.length : (dim ?? 0);
  const data = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const row = points[i]!;
    if (row.length !== d) throw new DataError(`point ${i} has ${row.length} values, expected ${d}`, { location: { row: i } });
    for (let k = 0; k < d; k++) {
      const v = row[k]!;
      if (!Number.isFinite(v)) throw new DataError(`point ${i} has a non-finite value at ${k}`, { location: { row: i } });
      data[i * d + k] = v;
    }
  }
  return { data, n, dim: d };
}

function checkOptions(options: HdbscanOptions): { minClusterSize: number; minSamples: number; selection: "eom" | "leaf" } {
  const { minClusterSize } = options;
  const minSamples = options.minSamples ?? minClusterSize;
  if (!Number.isInteger(minClusterSize) || minClusterSize < 2) throw new UsageError(`minClusterSize must be an integer >= 2, got ${minClusterSize}`);
  if (!Number.isInteger(minSamples) || minSamples < 1) throw new UsageError(`minSamples must be an integer >= 1, got ${minSamples}`);
  const selection = options.clusterSelection ?? "eom";
  if (selection !== "eom" && selection !== "leaf") throw new UsageError(`clusterSelection must be eom or leaf, got ${String(selection)}`);
  return { minClusterSize, minSamples, selection };
}

/** Distinct points above which `auto` leaves the dense matrix (4 bytes a pair: 16,384 -> 1 GiB). */
export const DEFAULT_MAX_EXACT_POINTS = 16_384;

export type HdbscanMethod = "auto" | "exact" | "approximate";

export interface ScalingOptions {
  /** `exact`: dense distance matrix over the distinct points; `approximate`: k-nearest-neighbour graph + MST; `auto` (default): exact up to `maxExactPoints` distinct points. */
  method?: HdbscanMethod;
  maxExactPoints?: number;
  /** Neighbours per point on the approximate path (default max(2 x minSamples, 16)). */
  neighbours?: number;
  /** Seed of the approximate path's index (its cells are k-means centroids of a sample). */
  seed?: number;
  /** One line saying which path ran and why. */
  log?: (message: string) => void;
}

/** HDBSCAN over points (number[][], or a flat Float32Array with options.dim). */
export async function hdbscan(points: PointsInput, options: HdbscanOptions & ScalingOptions & { dim?: number }): Promise<HdbscanResult> {
  checkOptions(options);
  const { data, n, dim } = toMatrix(points, options.dim);
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) throw new DataError(`point ${Math.floor(i / dim)} has a non-finite value`, { location: { row: Math.floor(i / dim) } });
  }
  const metric = options.metric ?? "euclidean";
  if (metric === "cosine") checkNonZeroRows(data, n, dim);
  const groups = groupDuplicates(data, n, dim);
  const m = groups.weights.length;
  const distinct = gatherRows(data, groups.representative, dim);
  const method = options.method ?? "auto";
  const maxExact = options.maxExactPoints ?? DEFAULT_MAX_EXACT_POINTS;
  const approximate = method === "approximate" || (method === "auto" && m > maxExact);
  const gib = (m * m * 4) / 2 ** 30;
  options.log?.(
    approximate
      ? `hdbscan: ${m} distinct of ${n} points; approximate path (k-nearest-neighbour graph + MST)${method === "auto" ? `: a dense matrix would take ${gib.toFixed(1)} GiB, over the ${maxExact}-point limit` : ", as asked"}`
      : `hdbscan: ${m} distinct of ${n} points; exact path (dense ${m} x ${m} matrix, ${gib.toFixed(2)} GiB)`,
  );
  const weighted = approximate
    ? await approximateHdbscan(distinct, m, dim, groups.weights, metric, options)
    : hdbscanFromDistances(
        await pairwiseDistances(distinct, m, dim, metric, {
          weights: groups.weights,
          onProgress: options.onProgress ? (done, total) => options.onProgress!("distances", done, total) : undefined,
        }),
        m,
        { ...options, weights: groups.weights },
      );
  return expandResult(weighted, groups.groupOf);
}

/**
 * Groups bit-identical rows: `groupOf[i]` is row i's distinct point, `representative[g]` the
 * first row of group g, `weights[g]` its multiplicity. Distinct points keep first-seen order.
 */
export function groupDuplicates(data: Float32Array, n: number, dim: number): { groupOf: Int32Array; representative: Int32Array; weights: Int32Array } {
  const words = new Uint32Array(data.buffer, data.byteOffset, n * dim);
  const buckets = new Map<number, number[]>();
  const groupOf = new Int32Array(n);
  const representative: number[] = [];
  const weights: number[] = [];
  for (let i = 0; i < n; i++) {
    let h = 0x811c9dc5;
    for (let k = 0; k < dim; k++) h = Math.imul(h ^ words[i * dim + k]!, 0x01000193);
    let bucket = buckets.get(h);
    if (!bucket) buckets.set(h, (bucket = []));
    let group = -1;
    for (const g of bucket) {
      const j = representative[g]!;
      let same = true;
      for (let k = 0; k < dim && same; k++) same = words[i * dim + k] === words[j * dim + k];
      if (same) {
        group = g;
        break;
      }
    }
    if (group < 0) {
      group = representative.length;
      representative.push(i);
      weights.push(0);
      bucket.push(group);
    }
    groupOf[i] = group;
    weights[group]!++;
  }
  return { groupOf, representative: Int32Array.from(representative), weights: Int32Array.from(weights) };
}

/** Cosine distance is undefined for a zero row: fail naming it, in input order, before any work. */
function checkNonZeroRows(data: Float32Array, n: number, dim: number): void {
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let k = 0; k < dim; k++) sum += data[i * dim + k]! ** 2;
    if (!(sum > 0)) l2NormalizeRows(data.subarray(i * dim, (i + 1) * dim), 1, dim, `point ${i}:`);
  }
}

function gatherRows(data: Float32Array, rows: Int32Array, dim: number): Float32Array {
  const out = new Float32Array(rows.length * dim);
  for (let r = 0; r < rows.length; r++) out.set(data.subarray(rows[r]! * dim, (rows[r]! + 1) * dim), r * dim);
  return out;
}

/** Per-point arrays from per-distinct-point ones; the condensed tree stays over distinct points (`size` = weight). */
function expandResult(result: HdbscanResult, groupOf: Int32Array): HdbscanResult {
  const n = groupOf.length;
  const labels = new Int32Array(n);
  const probabilities = new Float32Array(n);
  const coreDistances = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = groupOf[i]!;
    labels[i] = result.labels[g]!;
    probabilities[i] = result.probabilities[g]!;
    coreDistances[i] = result.coreDistances[g]!;
  }
  return { ...result, labels, probabilities, coreDistances, distinctOf: groupOf };
}

/**
 * HDBSCAN over a precomputed dense n x n distance matrix (row-major, symmetric, zero diagonal).
 * With `weights`, row i stands for weights[i] identical points: labels equal those of the
 * expanded input (every count — core distances, minClusterSize, stabilities — is a weight sum).
 */
export function hdbscanFromDistances(
  distances: Float32Array | Float64Array,
  n: number,
  options: HdbscanOptions & { weights?: ArrayLike<number> },
): HdbscanResult {
  const { minClusterSize, minSamples, selection } = checkOptions(options);
  if (distances.length !== n * n) throw new DataError(`distance matrix has ${distances.length} entries, expected ${n} x ${n}`);
  const weights = checkWeights(options.weights, n);
  const coreDistances = computeCoreDistances(distances, n, Math.min(minSamples, totalWeight(weights)), weights);
  if (totalWeight(weights) < 2) return emptyResult(n, coreDistances);
  const mst = primMutualReachabilityMst(distances, coreDistances, n, options.onProgress);
  return clusterFromMst(mst, n, weights, coreDistances, minClusterSize, selection);
}

/** Single linkage over a mutual-reachability spanning tree of n weighted points -> flat clusters. */
export function clusterFromMst(
  mst: Mst,
  n: number,
  weights: Int32Array,
  coreDistances: Float32Array,
  minClusterSize: number,
  selection: "eom" | "leaf",
): HdbscanResult {
  if (totalWeight(weights) < 2) return emptyResult(n, coreDistances);
  const hierarchy = singleLinkage(mst, n, weights);
  const condensedTree = condenseTree(hierarchy, n, weights, coreDistances, minClusterSize);
  return extractClusters(condensedTree, n, selection, coreDistances);
}

export function checkWeights(weights: ArrayLike<number> | undefined, n: number): Int32Array {
  if (!weights) return new Int32Array(n).fill(1);
  if (weights.length !== n) throw new DataError(`${weights.length} weights for ${n} points`);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const w = weights[i]!;
    if (!Number.isInteger(w) || w < 1) throw new DataError(`point ${i} has weight ${w}; a weight is a multiplicity, an integer >= 1`, { location: { row: i } });
    out[i] = w;
  }
  return out;
}

function totalWeight(weights: Int32Array): number {
  let sum = 0;
  for (let i = 0; i < weights.length; i++) sum += weights[i]!;
  return sum;
}

export function checkedOptions(options: HdbscanOptions) {
  return checkOptions(options);
}

function emptyResult(n: number, coreDistances: Float32Array): HdbscanResult {
  const empty = { parent: new Int32Array(0), child: new Int32Array(0), lambda: new Float64Array(0), size: new Int32Array(0) };
  return {
    labels: new Int32Array(n).fill(-1),
    probabilities: new Float32Array(n),
    numClusters: 0,
    stabilities: new Float64Array(0),
    coreDistances,
    condensedTree: empty,
  };
}

/**
 * Weighted k-th smallest distance in each row: the smallest d such that the points within d
 * (the point itself, weights[i] of them at 0, counted) weigh at least k. k = 1 gives 0, and so
 * does any point duplicated k times or more.
 */
export function computeCoreDistances(distances: Float32Array | Float64Array, n: number, k: number, weights?: Int32Array): Float32Array {
  const core = new Float32Array(n);
  const best = new KthWeighted(k);
  for (let i = 0; i < n; i++) {
    best.reset();
    const base = i * n;
    for (let j = 0; j < n; j++) best.offer(i === j ? 0 : distances[base + j]!, weights ? weights[j]! : 1);
    core[i] = best.value();
  }
  return core;
}

/** The k-th smallest of a stream of (value, weight) pairs, each pair counting `weight` times; O(k) memory. */
export class KthWeighted {
  private readonly values: Float64Array;
  private readonly counts: Float64Array;
  private length = 0;
  private weight = 0;
  constructor(private readonly k: number) {
    this.values = new Float64Array(k + 1);
    this.counts = new Float64Array(k + 1);
  }
  reset(): void {
    this.length = 0;
    this.weight = 0;
  }
  offer(value: number, count: number): void {
    if (this.weight >= this.k && value >= this.values[this.length - 1]!) return;
    let p = this.length;
    while (p > 0 && this.values[p - 1]! > value) {
      this.values[p] = this.values[p - 1]!;
      this.counts[p] = this.counts[p - 1]!;
      p--;
    }
    this.values[p] = value;
    this.counts[p] = count;
    this.length++;
    this.weight += count;
    // Drop the largest entries the k-th no longer needs.
    while (this.length > 1 && this.weight - this.counts[this.length - 1]! >= this.k) {
      this.weight -= this.counts[this.length - 1]!;
      this.length--;
    }
  }
  /** Infinity while fewer than k have been offered. */
  value(): number {
    return this.weight >= this.k ? this.values[this.length - 1]! : Infinity;
  }
}

export interface Mst {
  a: Int32Array;
  b: Int32Array;
  weight: Float64Array;
}

/**
 * Prim's algorithm on the implicit complete graph of mutual-reachability distances
 * max(core_a, core_b, d(a, b)); each row of the distance matrix is read once, when its vertex
 * joins the tree, so nothing beyond the distance matrix is materialised.
 */
function primMutualReachabilityMst(distances: Float32Array | Float64Array, core: Float32Array, n: number, onProgress?: HdbscanOptions["onProgress"]): Mst {
  const edges: Mst = { a: new Int32Array(Math.max(0, n - 1)), b: new Int32Array(Math.max(0, n - 1)), weight: new Float64Array(Math.max(0, n - 1)) };
  if (n < 2) return edges;
  // Vertices not yet in the tree, with their best known edge, kept compact (swap-remove) and in
  // parallel arrays, so the O(n^2) loop reads one gathered distance and three sequential values.
  const vertex = new Int32Array(n - 1);
  const vertexCore = new Float64Array(n - 1);
  const best = new Float64Array(n - 1).fill(Infinity);
  const from = new Int32Array(n - 1);
  for (let i = 0; i < n - 1; i++) {
    vertex[i] = i + 1;
    vertexCore[i] = core[i + 1]!;
  }
  let count = n - 1;
  let current = 0;
  const progressEvery = Math.max(1, Math.floor(n / 100));
  for (let e = 0; e < n - 1; e++) {
    const base = current * n;
    const coreCurrent = core[current]!;
    let bestValue = Infinity;
    let bestPosition = -1;
    for (let p = 0; p < count; p++) {
      let d: number = distances[base + vertex[p]!]!;
      if (coreCurrent > d) d = coreCurrent;
      const coreJ = vertexCore[p]!;
      if (coreJ > d) d = coreJ;
      let bj = best[p]!;
      if (d < bj) {
        best[p] = d;
        from[p] = current;
        bj = d;
      }
      if (bj < bestValue) {
        bestValue = bj;
        bestPosition = p;
      }
    }
    const next = vertex[bestPosition]!;
    edges.a[e] = from[bestPosition]!;
    edges.b[e] = next;
    edges.weight[e] = bestValue;
    count--;
    vertex[bestPosition] = vertex[count]!;
    vertexCore[bestPosition] = vertexCore[count]!;
    best[bestPosition] = best[count]!;
    from[bestPosition] = from[count]!;
    current = next;
    if (onProgress && (e + 1) % progressEvery === 0) onProgress("mst", e + 1, n - 1);
  }
  return edges;
}

interface Hierarchy {
  /** Row i merges left[i] and right[i] (points < n, merged nodes n + row) at distance[i]. */
  left: Int32Array;
  right: Int32Array;
  distance: Float64Array;
  size: Int32Array;
}

function singleLinkage(mst: Mst, n: number, weights: Int32Array): Hierarchy {
  const m = n - 1;
  const order = Array.from({ length: m }, (_, i) => i).sort((x, y) => mst.weight[x]! - mst.weight[y]! || x - y);
  const parent = new Int32Array(2 * n - 1);
  for (let i = 0; i < parent.length; i++) parent[i] = i;
  const size = new Int32Array(2 * n - 1);
  size.set(weights);
  const find = (x: number) => {
    let root = x;
    while (parent[root] !== root) root = parent[root]!;
    while (parent[x] !== root) {
      const next = parent[x]!;
      parent[x] = root;
      x = next;
    }
    return root;
  };
  const h: Hierarchy = { left: new Int32Array(m), right: new Int32Array(m), distance: new Float64Array(m), size: new Int32Array(m) };
  for (let row = 0; row < m; row++) {
    const e = order[row]!;
    const ra = find(mst.a[e]!);
    const rb = find(mst.b[e]!);
    const node = n + row;
    h.left[row] = ra;
    h.right[row] = rb;
    h.distance[row] = mst.weight[e]!;
    size[node] = size[ra]! + size[rb]!;
    h.size[row] = size[node]!;
    parent[ra] = node;
    parent[rb] = node;
  }
  return h;
}

/**
 * The condensed tree, top down. Merges at the same distance happen at once: at a node's distance
 * D its children are the parts connected below D, whatever order the tied merges were recorded
 * in, so the tree does not depend on how ties were processed (neither zero distances between
 * duplicates nor a point's copies joining at its core distance). A leaf is a distinct point of
 * weight w whose copies are joined at its core distance: below that it is one part of w points,
 * at it w single points.
 */
function condenseTree(h: Hierarchy, n: number, weights: Int32Array, core: Float32Array, minClusterSize: number): CondensedTree {
  const parents: number[] = [];
  const children: number[] = [];
  const lambdas: number[] = [];
  const sizes: number[] = [];
  const root = n === 1 ? 0 : 2 * n - 2;
  const relabel = new Int32Array(2 * n - 1);
  relabel[root] = n;
  let nextLabel = n + 1;
  const nodeSize = (node: number) => (node < n ? weights[node]! : h.size[node - n]!);
  const nodeDistance = (node: number) => (node < n ? core[node]! : h.distance[node - n]!);
  const fallOut = (subtree: number, clusterLabel: number, lambda: number) => {
    const stack = [subtree];
    while (stack.length) {
      const node = stack.pop()!;
      if (node < n) {
        parents.push(clusterLabel);
        children.push(node);
        lambdas.push(lambda);
        sizes.push(weights[node]!);
      } else {
        stack.push(h.right[node - n]!, h.left[node - n]!);
      }
    }
  };
  const levelChildren = (node: number, distance: number, out: number[]) => {
    const stack = [h.right[node - n]!, h.left[node - n]!];
    while (stack.length) {
      const child = stack.pop()!;
      if (child >= n && h.distance[child - n] === distance) stack.push(h.right[child - n]!, h.left[child - n]!);
      else out.push(child);
    }
  };
  const queue = [root];
  const level: number[] = [];
  for (let head = 0; head < queue.length; head++) {
    const node = queue[head]!;
    const distance = nodeDistance(node);
    const lambda = distance > 0 ? 1 / distance : Infinity;
    const label = relabel[node]!;
    if (node < n) {
      // A distinct point reached as a cluster of its own copies: they part at its core distance.
      fallOut(node, label, lambda);
      continue;
    }
    level.length = 0;
    levelChildren(node, distance, level);
    // A point whose core distance is this level's is w single points here, never a part.
    const isPart = (child: number) => child >= n || core[child]! < distance;
    let big = 0;
    for (const child of level) if (isPart(child) && nodeSize(child) >= minClusterSize) big++;
    for (const child of level) {
      const count = nodeSize(child);
      if (!isPart(child) || count < minClusterSize) fallOut(child, label, lambda);
      else if (big >= 2) {
        relabel[child] = nextLabel++;
        parents.push(label);
        children.push(relabel[child]!);
        lambdas.push(lambda);
        sizes.push(count);
        queue.push(child);
      } else {
        relabel[child] = label;
        queue.push(child);
      }
    }
  }
  return { parent: Int32Array.from(parents), child: Int32Array.from(children), lambda: Float64Array.from(lambdas), size: Int32Array.from(sizes) };
}

function extractClusters(tree: CondensedTree, n: number, selection: "eom" | "leaf", coreDistances: Float32Array): HdbscanResult {
  const rows = tree.parent.length;
  let maxCluster = n;
  for (let r = 0; r < rows; r++) if (tree.child[r]! > maxCluster) maxCluster = tree.child[r]!;
  const clusters = maxCluster - n + 1;
  const birth = new Float64Array(clusters);
  const clusterParent = new Int32Array(clusters).fill(-1);
  const death = new Float64Array(clusters);
  const pointLambdaOf = new Float64Array(n);
  const pointCluster = new Int32Array(n).fill(-1);
  for (let r = 0; r < rows; r++) {
    const child = tree.child[r]!;
    const p = tree.parent[r]! - n;
    if (child >= n) {
      birth[child - n] = tree.lambda[r]!;
      clusterParent[child - n] = p;
    } else {
      pointLambdaOf[child] = tree.lambda[r]!;
      pointCluster[child] = p;
    }
    if (tree.lambda[r]! > death[p]!) death[p] = tree.lambda[r]!;
  }
  const stability = new Float64Array(clusters);
  for (let r = 0; r < rows; r++) {
    const p = tree.parent[r]! - n;
    stability[p] += (tree.lambda[r]! - birth[p]!) * tree.size[r]!;
  }
  const childClusters: number[][] = Array.from({ length: clusters }, () => []);
  for (let c = 1; c < clusters; c++) childClusters[clusterParent[c]!]!.push(c);
  const selected = new Uint8Array(clusters);
  // The root is never a candidate: a single all-encompassing cluster is not a clustering.
  if (selection === "leaf") {
    for (let c = 1; c < clusters; c++) if (childClusters[c]!.length === 0) selected[c] = 1;
  } else {
    const subtreeStability = Float64Array.from(stability);
    for (let c = clusters - 1; c >= 1; c--) {
      let childSum = 0;
      for (const child of childClusters[c]!) childSum += subtreeStability[child]!;
      if (childClusters[c]!.length > 0 && childSum > subtreeStability[c]!) {
        subtreeStability[c] = childSum;
      } else {
        selected[c] = 1;
        const stack = [...childClusters[c]!];
        while (stack.length) {
          const d = stack.pop()!;
          selected[d] = 0;
          stack.push(...childClusters[d]!);
        }
      }
    }
  }
  // Children have larger ids than parents, so one forward pass resolves each cluster's selected ancestor.
  const selectedOf = new Int32Array(clusters).fill(-1);
  const labelOf = new Int32Array(clusters).fill(-1);
  let numClusters = 0;
  for (let c = 0; c < clusters; c++) {
    if (selected[c]) {
      selectedOf[c] = c;
      labelOf[c] = numClusters++;
    } else if (c > 0) selectedOf[c] = selectedOf[clusterParent[c]!]!;
  }
  const labels = new Int32Array(n).fill(-1);
  const probabilities = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const own = pointCluster[i]!;
    if (own < 0) continue;
    const s = selectedOf[own]!;
    if (s < 0) continue;
    labels[i] = labelOf[s]!;
    const maxLambda = death[s]!;
    const lambda = pointLambdaOf[i]!;
    probabilities[i] = maxLambda === 0 || !Number.isFinite(lambda) ? 1 : Math.min(lambda, maxLambda) / maxLambda;
  }
  const stabilities = new Float64Array(numClusters);
  for (let c = 0; c < clusters; c++) if (selected[c]) stabilities[labelOf[c]!] = stability[c]!;
  return { labels, probabilities, numClusters, stabilities, coreDistances, condensedTree: tree };
}
