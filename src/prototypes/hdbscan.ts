import { DataError, UsageError } from "../errors.js";
import { pairwiseDistances, type Metric } from "./distances.js";

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
  condensedTree: CondensedTree;
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

/** HDBSCAN over points (number[][], or a flat Float32Array with options.dim). */
export async function hdbscan(points: PointsInput, options: HdbscanOptions & { dim?: number }): Promise<HdbscanResult> {
  checkOptions(options);
  const { data, n, dim } = toMatrix(points, options.dim);
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) throw new DataError(`point ${Math.floor(i / dim)} has a non-finite value`, { location: { row: Math.floor(i / dim) } });
  }
  const distances = await pairwiseDistances(data, n, dim, options.metric ?? "euclidean", {
    onProgress: options.onProgress ? (done, total) => options.onProgress!("distances", done, total) : undefined,
  });
  return hdbscanFromDistances(distances, n, options);
}

/** HDBSCAN over a precomputed dense n x n distance matrix (row-major, symmetric, zero diagonal). */
export function hdbscanFromDistances(distances: Float32Array | Float64Array, n: number, options: HdbscanOptions): HdbscanResult {
  const { minClusterSize, minSamples, selection } = checkOptions(options);
  if (distances.length !== n * n) throw new DataError(`distance matrix has ${distances.length} entries, expected ${n} x ${n}`);
  const coreDistances = computeCoreDistances(distances, n, Math.min(minSamples, n));
  if (n < 2) return emptyResult(n, coreDistances);
  const mst = primMutualReachabilityMst(distances, coreDistances, n, options.onProgress);
  const hierarchy = singleLinkage(mst, n);
  const condensedTree = condenseTree(hierarchy, n, minClusterSize);
  return extractClusters(condensedTree, n, selection, coreDistances);
}

function emptyResult(n: number, coreDistances: Float32Array): HdbscanResult {
  const empty = { parent: new Int32Array(0), child: new Int32Array(0), lambda: new Float64Array(0), size: new Int32Array(0) };
  return { labels: new Int32Array(n).fill(-1), probabilities: new Float32Array(n), numClusters: 0, stabilities: new Float64Array(0), coreDistances, condensedTree: empty };
}

/** k-th smallest distance in each row, the zero self-distance counted (k = 1 gives 0). */
export function computeCoreDistances(distances: Float32Array | Float64Array, n: number, k: number): Float32Array {
  const core = new Float32Array(n);
  const best = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    best.fill(Infinity);
    const base = i * n;
    let worst = Infinity;
    for (let j = 0; j < n; j++) {
      const d = distances[base + j]!;
      if (d < worst) {
        let p = k - 1;
        while (p > 0 && best[p - 1]! > d) {
          best[p] = best[p - 1]!;
          p--;
        }
        best[p] = d;
        worst = best[k - 1]!;
      }
    }
    core[i] = best[k - 1]!;
  }
  return core;
}

interface Mst {
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
  const edges: Mst = { a: new Int32Array(n - 1), b: new Int32Array(n - 1), weight: new Float64Array(n - 1) };
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

function singleLinkage(mst: Mst, n: number): Hierarchy {
  const m = n - 1;
  const order = Array.from({ length: m }, (_, i) => i).sort((x, y) => mst.weight[x]! - mst.weight[y]! || x - y);
  const parent = new Int32Array(2 * n - 1);
  for (let i = 0; i < parent.length; i++) parent[i] = i;
  const size = new Int32Array(2 * n - 1).fill(1);
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

function condenseTree(h: Hierarchy, n: number, minClusterSize: number): CondensedTree {
  const parents: number[] = [];
  const children: number[] = [];
  const lambdas: number[] = [];
  const sizes: number[] = [];
  const root = 2 * n - 2;
  const relabel = new Int32Array(2 * n - 1);
  relabel[root] = n;
  let nextLabel = n + 1;
  const nodeSize = (node: number) => (node < n ? 1 : h.size[node - n]!);
  const fallOut = (subtree: number, clusterLabel: number, lambda: number) => {
    const stack = [subtree];
    while (stack.length) {
      const node = stack.pop()!;
      if (node < n) {
        parents.push(clusterLabel);
        children.push(node);
        lambdas.push(lambda);
        sizes.push(1);
      } else {
        stack.push(h.right[node - n]!, h.left[node - n]!);
      }
    }
  };
  // Merges at distance 0 (duplicated reports) happen at once: points at the same place cannot be
  // split, so zero-distance children are expanded into one level instead of binary splits whose
  // shape depends on the order the ties were processed. Positive ties stay binary, as in the
  // reference implementations.
  const levelChildren = (node: number, distance: number, out: number[]) => {
    const stack = [h.right[node - n]!, h.left[node - n]!];
    while (stack.length) {
      const child = stack.pop()!;
      if (child >= n && distance === 0 && h.distance[child - n] === 0) stack.push(h.right[child - n]!, h.left[child - n]!);
      else out.push(child);
    }
  };
  const queue = [root];
  const level: number[] = [];
  for (let head = 0; head < queue.length; head++) {
    const node = queue[head]!;
    const distance = h.distance[node - n]!;
    const lambda = distance > 0 ? 1 / distance : Infinity;
    const label = relabel[node]!;
    level.length = 0;
    levelChildren(node, distance, level);
    let big = 0;
    for (const child of level) if (nodeSize(child) >= minClusterSize) big++;
    for (const child of level) {
      const count = nodeSize(child);
      if (count < minClusterSize) fallOut(child, label, lambda);
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
