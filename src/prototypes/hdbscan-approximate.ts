import { forEachDistanceBlock, l2NormalizeRows, nearestRows, type Metric } from "./distances.js";
import { checkedOptions, clusterFromMst, KthWeighted, type HdbscanOptions, type HdbscanResult, type Mst, type ScalingOptions } from "./hdbscan.js";
import { mulberry32 } from "../util/random.js";

/**
 * HDBSCAN without the dense matrix, for more distinct points than it can hold (as the fast
 * HDBSCAN libraries do it): an approximate k-nearest-neighbour graph gives the core distances
 * and the candidate edges of the mutual-reachability MST; Kruskal over those edges gives a
 * spanning forest, and Boruvka rounds over sampled members join its components. The rest
 * (single linkage, condensed tree, selection) is the exact path's, weights included.
 *
 * The neighbour search is an inverted file: points are filed under their nearest of ~sqrt(n)
 * k-means centroids, and each point is compared with the members of its `probes` nearest cells
 * through ORT's blocked MatMul. Memory: the points, n x neighbours edges, one block of distances.
 */
export interface NeighbourGraph {
  /** Neighbours per point (rows shorter than this end in -1). */
  k: number;
  /** n x k distinct-point indices, nearest first. */
  index: Int32Array;
  /** n x k distances, ascending; Infinity after the last neighbour. */
  distance: Float32Array;
}

export async function approximateHdbscan(
  points: Float32Array,
  n: number,
  dim: number,
  weights: Int32Array,
  metric: Metric,
  options: HdbscanOptions & ScalingOptions,
): Promise<HdbscanResult & { neighbours: NeighbourGraph }> {
  const { minClusterSize, minSamples, selection } = checkedOptions(options);
  let total = 0;
  for (let i = 0; i < n; i++) total += weights[i]!;
  const k = Math.min(minSamples, total);
  const source = metric === "cosine" ? l2NormalizeRows(points, n, dim) : points;
  const neighbours = await approximateNeighbours(source, n, dim, metric, Math.min(n - 1, options.neighbours ?? Math.max(5 * minSamples, 32)), options);

  const core = new Float32Array(n);
  const kth = new KthWeighted(k);
  for (let i = 0; i < n; i++) {
    kth.reset();
    kth.offer(0, weights[i]!);
    let last = 0;
    for (let r = 0; r < neighbours.k; r++) {
      const j = neighbours.index[i * neighbours.k + r]!;
      if (j < 0) break;
      last = neighbours.distance[i * neighbours.k + r]!;
      kth.offer(last, weights[j]!);
    }
    const value = kth.value();
    // Fewer neighbours found than k weighs: the farthest one found is the best bound there is.
    core[i] = Number.isFinite(value) ? value : last;
  }
  const mst = await spanningTree(source, n, dim, metric, core, neighbours, options);
  return { ...clusterFromMst(mst, n, weights, core, minClusterSize, selection), neighbours };
}

class UnionFind {
  readonly parent: Int32Array;
  constructor(n: number) {
    this.parent = new Int32Array(n);
    for (let i = 0; i < n; i++) this.parent[i] = i;
  }
  find(x: number): number {
    let root = x;
    while (this.parent[root] !== root) root = this.parent[root]!;
    while (this.parent[x] !== root) {
      const next = this.parent[x]!;
      this.parent[x] = root;
      x = next;
    }
    return root;
  }
  union(a: number, b: number): boolean {
    const ra = this.find(a);
    const rb = this.find(b);
    if (ra === rb) return false;
    this.parent[ra] = rb;
    return true;
  }
}

/**
 * Kruskal over the neighbour graph's mutual-reachability edges. Where that leaves several
 * components, every sampled member adds its lightest edge into another component (Boruvka's
 * step, per member rather than per component) and Kruskal runs again over all edges so far: a
 * cross edge can then replace a heavier in-component edge, not only bridge components, so the
 * tree stays closer to the true MST than bridging alone would (as cuML does it).
 */
async function spanningTree(
  source: Float32Array,
  n: number,
  dim: number,
  metric: Metric,
  core: Float32Array,
  graph: NeighbourGraph,
  options: ScalingOptions & HdbscanOptions,
): Promise<Mst> {
  const { k } = graph;
  let count = 0;
  for (let e = 0; e < n * k; e++) if (graph.index[e]! >= 0) count++;
  let from = new Int32Array(count);
  let to = new Int32Array(count);
  let weight = new Float64Array(count);
  let e = 0;
  for (let i = 0; i < n; i++) {
    for (let r = 0; r < k; r++) {
      const j = graph.index[i * k + r]!;
      if (j < 0) break;
      from[e] = i;
      to[e] = j;
      weight[e] = Math.max(core[i]!, core[j]!, graph.distance[i * k + r]!);
      e++;
    }
  }
  const random = mulberry32((options.seed ?? 0) ^ 0xb0b0);
  for (let round = 0; ; round++) {
    const { mst, sets, edges } = kruskal(n, from, to, weight);
    if (edges === n - 1 || n < 2) {
      if (round > 0) options.log?.(`hdbscan: the neighbour graph left components apart; ${round} round(s) of cross edges joined them`);
      return mst;
    }
    const cross = await crossEdges(source, n, dim, metric, core, sets, random);
    from = concatenate(from, Int32Array.from(cross.from));
    to = concatenate(to, Int32Array.from(cross.to));
    weight = concatenate(weight, Float64Array.from(cross.weight));
  }
}

function concatenate<T extends Int32Array | Float64Array>(a: T, b: T): T {
  const out = new (a.constructor as new (length: number) => T)(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function kruskal(n: number, from: Int32Array, to: Int32Array, weight: Float64Array): { mst: Mst; sets: UnionFind; edges: number } {
  const mst: Mst = { a: new Int32Array(Math.max(0, n - 1)), b: new Int32Array(Math.max(0, n - 1)), weight: new Float64Array(Math.max(0, n - 1)) };
  // Sorted by weight, ties by index, through one float64 key sort (a comparator sort of millions of indices is ~10x slower).
  const order = sortedByWeight(weight);
  const sets = new UnionFind(n);
  let edges = 0;
  for (let p = 0; p < order.length && edges < n - 1; p++) {
    const e = order[p]!;
    if (sets.union(from[e]!, to[e]!)) {
      mst.a[edges] = from[e]!;
      mst.b[edges] = to[e]!;
      mst.weight[edges] = weight[e]!;
      edges++;
    }
  }
  return { mst, sets, edges };
}

/**
 * Edge indices by weight, ties by index: a typed sort of the weights, then each edge, in index
 * order, takes the next free slot of its weight's run (found by binary search). Millions of
 * edges sort in a fraction of the time a comparator sort of indices takes.
 */
function sortedByWeight(weight: Float64Array): Uint32Array {
  const m = weight.length;
  const sorted = Float64Array.from(weight).sort();
  const order = new Uint32Array(m);
  const used = new Uint32Array(m);
  for (let e = 0; e < m; e++) {
    const w = weight[e]!;
    let lo = 0;
    let hi = m;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid]! < w) lo = mid + 1;
      else hi = mid;
    }
    order[lo + used[lo]!] = e;
    used[lo]!++;
  }
  return order;
}

/** For up to ~4,096 sampled points (all of a small component), the lightest edge into another component. */
async function crossEdges(
  source: Float32Array,
  n: number,
  dim: number,
  metric: Metric,
  core: Float32Array,
  sets: UnionFind,
  random: () => number,
): Promise<{ from: number[]; to: number[]; weight: number[] }> {
  const byComponent = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const root = sets.find(i);
    let list = byComponent.get(root);
    if (!list) byComponent.set(root, (list = []));
    list.push(i);
  }
  const perComponent = Math.max(1, Math.floor(4096 / byComponent.size));
  const members: number[] = [];
  for (const list of byComponent.values()) {
    if (list.length <= perComponent) members.push(...list);
    else {
      // Partial Fisher-Yates: a seeded sample of the component.
      for (let s = 0; s < perComponent; s++) {
        const t = s + Math.floor(random() * (list.length - s));
        [list[s], list[t]] = [list[t]!, list[s]!];
        members.push(list[s]!);
      }
    }
  }
  const count = members.length;
  const rows = new Float32Array(count * dim);
  const componentOf = new Int32Array(count);
  members.forEach((i, r) => {
    rows.set(source.subarray(i * dim, (i + 1) * dim), r * dim);
    componentOf[r] = sets.find(i);
  });
  const out = { from: [] as number[], to: [] as number[], weight: [] as number[] };
  await forEachDistanceBlock(
    rows,
    count,
    rows,
    count,
    dim,
    metric,
    (start, blockRows, block) => {
      for (let r = 0; r < blockRows; r++) {
        const a = members[start + r]!;
        const ca = componentOf[start + r]!;
        let best = -1;
        let bestWeight = Infinity;
        for (let c = 0; c < count; c++) {
          if (componentOf[c] === ca) continue;
          const w = Math.max(core[a]!, core[members[c]!]!, block[r * count + c]!);
          if (w < bestWeight) {
            bestWeight = w;
            best = members[c]!;
          }
        }
        if (best >= 0) {
          out.from.push(a);
          out.to.push(best);
          out.weight.push(bestWeight);
        }
      }
    },
    { normalized: true },
  );
  return out;
}

/** Approximate k nearest neighbours (self excluded) through an inverted file of k-means cells. */
export async function approximateNeighbours(
  source: Float32Array,
  n: number,
  dim: number,
  metric: Metric,
  k: number,
  options: ScalingOptions & HdbscanOptions = {} as HdbscanOptions,
): Promise<NeighbourGraph> {
  const graph: NeighbourGraph = { k, index: new Int32Array(n * k).fill(-1), distance: new Float32Array(n * k).fill(Infinity) };
  if (k < 1) return graph;
  const cells = Math.max(1, Math.min(2048, Math.round(Math.sqrt(n))));
  const probes = Math.min(cells, 12);
  const centroids = await kmeansCentroids(source, n, dim, metric, cells, options.seed ?? 0);
  // Each point's `probes` nearest centroids, nearest first.
  const probe = new Int32Array(n * probes);
  const probeDistance = new Float32Array(probes);
  await forEachDistanceBlock(
    source,
    n,
    centroids,
    cells,
    dim,
    metric,
    (start, rows, block) => {
      for (let r = 0; r < rows; r++) {
        const i = start + r;
        let length = 0;
        for (let c = 0; c < cells; c++) {
          const d = block[r * cells + c]!;
          if (length === probes && d >= probeDistance[probes - 1]!) continue;
          let p = length < probes ? length++ : probes - 1;
          while (p > 0 && probeDistance[p - 1]! > d) {
            probeDistance[p] = probeDistance[p - 1]!;
            probe[i * probes + p] = probe[i * probes + p - 1]!;
            p--;
          }
          probeDistance[p] = d;
          probe[i * probes + p] = c;
        }
      }
    },
    { normalized: true },
  );
  const members = invert(n, cells, (i, visit) => visit(probe[i * probes]!));
  const queries = invert(n, cells, (i, visit) => {
    for (let p = 0; p < probes; p++) visit(probe[i * probes + p]!);
  });
  const { index, distance } = graph;
  for (let c = 0; c < cells; c++) {
    const memberIds = members.items.subarray(members.start[c]!, members.start[c + 1]!);
    const queryIds = queries.items.subarray(queries.start[c]!, queries.start[c + 1]!);
    if (memberIds.length === 0 || queryIds.length === 0) continue;
    const memberRows = gather(source, memberIds, dim);
    const queryRows = gather(source, queryIds, dim);
    const width = memberIds.length;
    await forEachDistanceBlock(
      queryRows,
      queryIds.length,
      memberRows,
      width,
      dim,
      metric,
      (start, rows, block) => {
        for (let r = 0; r < rows; r++) {
          const i = queryIds[start + r]!;
          const base = i * k;
          for (let col = 0; col < width; col++) {
            const j = memberIds[col]!;
            if (j === i) continue;
            const d = block[r * width + col]!;
            if (d >= distance[base + k - 1]!) continue;
            let p = k - 1;
            while (p > 0 && distance[base + p - 1]! > d) {
              distance[base + p] = distance[base + p - 1]!;
              index[base + p] = index[base + p - 1]!;
              p--;
            }
            distance[base + p] = d;
            index[base + p] = j;
          }
        }
      },
      { normalized: true },
    );
    options.onProgress?.("distances", c + 1, cells);
  }
  return graph;
}

function gather(source: Float32Array, ids: Int32Array, dim: number): Float32Array {
  const out = new Float32Array(ids.length * dim);
  for (let r = 0; r < ids.length; r++) out.set(source.subarray(ids[r]! * dim, (ids[r]! + 1) * dim), r * dim);
  return out;
}

/** Compressed lists: the items filed under each of `lists` keys (counting pass, then filling pass). */
function invert(n: number, lists: number, each: (i: number, visit: (list: number) => void) => void): { start: Int32Array; items: Int32Array } {
  const start = new Int32Array(lists + 1);
  for (let i = 0; i < n; i++) each(i, (l) => start[l + 1]!++);
  for (let l = 0; l < lists; l++) start[l + 1]! += start[l]!;
  const fill = start.slice(0, lists);
  const items = new Int32Array(start[lists]!);
  for (let i = 0; i < n; i++) each(i, (l) => (items[fill[l]!++] = i));
  return { start, items };
}

/** Lloyd's k-means on a seeded sample (40 points a cell), distances through ORT; centroids of cosine data stay unit length. */
async function kmeansCentroids(source: Float32Array, n: number, dim: number, metric: Metric, cells: number, seed: number): Promise<Float32Array> {
  const random = mulberry32(seed ^ 0x1f1e);
  const sampleSize = Math.min(n, cells * 40);
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let s = 0; s < sampleSize; s++) {
    const t = s + Math.floor(random() * (n - s));
    const tmp = order[s]!;
    order[s] = order[t]!;
    order[t] = tmp;
  }
  const sample = gather(source, order.subarray(0, sampleSize), dim);
  const centroids = sample.slice(0, cells * dim);
  for (let iteration = 0; iteration < 8; iteration++) {
    const { index } = await nearestRows(sample, sampleSize, centroids, cells, dim, metric);
    const sums = new Float64Array(cells * dim);
    const counts = new Int32Array(cells);
    for (let s = 0; s < sampleSize; s++) {
      const c = index[s]!;
      counts[c]!++;
      for (let d = 0; d < dim; d++) sums[c * dim + d] += sample[s * dim + d]!;
    }
    for (let c = 0; c < cells; c++) {
      if (counts[c] === 0) continue; // an empty cell keeps its centroid
      let norm = 0;
      for (let d = 0; d < dim; d++) norm += (sums[c * dim + d]! / counts[c]!) ** 2;
      const scale = metric === "cosine" && norm > 0 ? 1 / Math.sqrt(norm) : 1;
      for (let d = 0; d < dim; d++) centroids[c * dim + d] = (sums[c * dim + d]! / counts[c]!) * scale;
    }
  }
  return centroids;
}
