import assert from "node:assert/strict";
import { test } from "node:test";
import { adjustedRandIndex } from "../../src/prototypes/ari.js";
import { pairwiseDistances } from "../../src/prototypes/distances.js";
import { hdbscan, hdbscanFromDistances, KthWeighted, type HdbscanResult } from "../../src/prototypes/hdbscan.js";
import { approximateNeighbours } from "../../src/prototypes/hdbscan-approximate.js";
import { blobs, withRepetition } from "./blobs.js";

/** The same partition: a one-to-one label map, and noise exactly where the other has noise. */
function assertSamePartition(a: Int32Array, b: Int32Array, what: string): void {
  assert.equal(a.length, b.length);
  const forward = new Map<number, number>();
  const backward = new Map<number, number>();
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i]! < 0, b[i]! < 0, `${what}: point ${i} is noise in one labelling only`);
    if (a[i]! < 0) continue;
    const fa = forward.get(a[i]!);
    const fb = backward.get(b[i]!);
    if (fa === undefined && fb === undefined) {
      forward.set(a[i]!, b[i]!);
      backward.set(b[i]!, a[i]!);
    } else {
      assert.equal(fa, b[i], `${what}: point ${i} joins a different cluster`);
      assert.equal(fb, a[i], `${what}: point ${i} joins a different cluster`);
    }
  }
}

function sortedFinite(values: Float64Array): number[] {
  return Array.from(values).sort((x, y) => x - y);
}

test("KthWeighted: a value offered with weight w counts w times", () => {
  const kth = new KthWeighted(5);
  kth.offer(0, 2);
  assert.equal(kth.value(), Infinity);
  kth.offer(3, 1);
  kth.offer(1, 2);
  assert.equal(kth.value(), 3);
  kth.offer(2, 4);
  assert.equal(kth.value(), 2);
  kth.reset();
  kth.offer(0, 7);
  assert.equal(kth.value(), 0);
});

// Weighted exact HDBSCAN against the expanded input run without any collapsing: duplicated
// points in clusters, in noise, and duplicate groups large enough to be clusters of their own.
const cases = [
  { seed: 1, dim: 3, distinct: 160, total: 420, minClusterSize: 5, minSamples: undefined, metric: "euclidean" as const, selection: "eom" as const },
  { seed: 2, dim: 5, distinct: 200, total: 600, minClusterSize: 8, minSamples: 3, metric: "euclidean" as const, selection: "eom" as const },
  { seed: 3, dim: 8, distinct: 150, total: 500, minClusterSize: 4, minSamples: 6, metric: "cosine" as const, selection: "eom" as const },
  { seed: 4, dim: 4, distinct: 180, total: 540, minClusterSize: 6, minSamples: undefined, metric: "euclidean" as const, selection: "leaf" as const },
  { seed: 5, dim: 16, distinct: 120, total: 700, minClusterSize: 10, minSamples: 4, metric: "cosine" as const, selection: "eom" as const },
];
for (const c of cases) {
  test(`weighted exact HDBSCAN = the expanded input (seed ${c.seed}, ${c.metric}, ${c.selection}, minClusterSize ${c.minClusterSize}, minSamples ${c.minSamples ?? "default"})`, async () => {
    const base = blobs({ points: c.distinct, dim: c.dim, blobs: 4, seed: c.seed, noiseShare: 0.15 });
    const { data, groupOf } = withRepetition(base.data, c.dim, c.total, c.seed + 100);
    const options = { minClusterSize: c.minClusterSize, minSamples: c.minSamples, metric: c.metric, clusterSelection: c.selection };
    const n = c.total;
    const expanded = hdbscanFromDistances(await pairwiseDistances(data, n, c.dim, c.metric), n, options);
    const weighted = await hdbscan(data, { ...options, dim: c.dim, method: "exact" });
    // The repetition must matter: some groups reach minClusterSize on their own, some points are noise.
    const counts = new Map<number, number>();
    for (const g of groupOf) counts.set(g, (counts.get(g) ?? 0) + 1);
    assert.ok(
      [...counts.values()].some((w) => w >= c.minClusterSize),
      "no duplicate group reaches minClusterSize",
    );
    assert.ok(expanded.labels.some((l) => l < 0) && expanded.numClusters >= 2, `expected clusters and noise, got ${expanded.numClusters} clusters`);
    assertSamePartition(weighted.labels, expanded.labels, "labels");
    assert.equal(weighted.numClusters, expanded.numClusters);
    for (let i = 0; i < n; i++) assert.ok(Math.abs(weighted.probabilities[i]! - expanded.probabilities[i]!) < 1e-5, `probability of point ${i}`);
    for (let i = 0; i < n; i++)
      assert.ok(Math.abs(weighted.coreDistances[i]! - expanded.coreDistances[i]!) <= 1e-5 * (1 + expanded.coreDistances[i]!), `core distance of point ${i}`);
    // float32 distances of the distinct rows may differ from the expanded matrix's in the last bits
    const ws = sortedFinite(weighted.stabilities);
    const es = sortedFinite(expanded.stabilities);
    ws.forEach((s, i) => assert.ok(s === es[i] || Math.abs(s - es[i]!) <= 1e-4 * Math.abs(es[i]!), `stability ${s} vs ${es[i]}`));
    // The condensed tree holds one row per distinct point, its size the multiplicity.
    assert.ok(weighted.distinctOf);
    let pointWeight = 0;
    for (let r = 0; r < weighted.condensedTree.child.length; r++)
      if (weighted.condensedTree.child[r]! < counts.size) pointWeight += weighted.condensedTree.size[r]!;
    assert.equal(pointWeight, n);
  });
}

test("a point duplicated minClusterSize times is a cluster even far from everything; fewer copies stay noise", async () => {
  const base = blobs({ points: 200, dim: 4, blobs: 3, seed: 11, noiseShare: 0 });
  const rows = [...Array.from({ length: 200 }, (_, i) => Array.from(base.data.subarray(i * 4, i * 4 + 4)))];
  for (let i = 0; i < 6; i++) rows.push([500, 500, 500, 500]);
  for (let i = 0; i < 3; i++) rows.push([-500, 500, -500, 500]);
  const result = await hdbscan(rows, { minClusterSize: 6 });
  const far = Array.from(result.labels.subarray(200, 206));
  assert.ok(far[0]! >= 0 && far.every((l) => l === far[0]), `six copies: ${far}`);
  assert.deepEqual(Array.from(result.labels.subarray(206)), [-1, -1, -1]);
});

test("approximate neighbours find most true neighbours (recall >= 0.9 at k = 16)", async () => {
  const { data } = blobs({ points: 2000, dim: 32, blobs: 8, seed: 21 });
  const graph = await approximateNeighbours(data, 2000, 32, "euclidean", 16);
  const exact = await pairwiseDistances(data, 2000, 32, "euclidean");
  let found = 0;
  for (let i = 0; i < 2000; i++) {
    const row = Array.from(exact.subarray(i * 2000, (i + 1) * 2000))
      .map((d, j) => [d, j] as const)
      .filter(([, j]) => j !== i)
      .sort((x, y) => x[0] - y[0])
      .slice(0, 16)
      .map(([, j]) => j);
    const truth = new Set(row);
    for (let r = 0; r < 16; r++) if (truth.has(graph.index[i * 16 + r]!)) found++;
  }
  assert.ok(found / (2000 * 16) >= 0.9, `recall ${found / (2000 * 16)}`);
});

for (const metric of ["euclidean", "cosine"] as const) {
  test(`approximate HDBSCAN agrees with the exact one at 3,000 points (${metric}, ARI >= 0.95)`, async () => {
    const { data } = blobs({ points: 3000, dim: 24, blobs: 12, seed: metric === "cosine" ? 32 : 31, noiseShare: 0.05 });
    const options = { dim: 24, minClusterSize: 15, metric };
    const exact = await hdbscan(data, { ...options, method: "exact" });
    const approximate = await hdbscan(data, { ...options, method: "approximate" });
    assert.ok(exact.numClusters >= 5, `exact found ${exact.numClusters} clusters`);
    const ari = adjustedRandIndex(exact.labels, approximate.labels);
    assert.ok(ari >= 0.95, `ARI ${ari.toFixed(4)} (${exact.numClusters} vs ${approximate.numClusters} clusters)`);
  });
}

test("auto: exact up to maxExactPoints distinct points, approximate beyond, with a log line; duplicates do not count", async () => {
  const { data } = blobs({ points: 400, dim: 6, blobs: 3, seed: 41 });
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);
  const repeated = withRepetition(data, 6, 1200, 42).data;
  const exact: HdbscanResult = await hdbscan(repeated, { dim: 6, minClusterSize: 10, maxExactPoints: 400, log });
  assert.match(lines[0]!, /400 distinct of 1200 points; exact path/);
  await hdbscan(data, { dim: 6, minClusterSize: 10, maxExactPoints: 399, log });
  assert.match(lines[1]!, /approximate path .*over the 399-point limit/);
  assert.ok(exact.numClusters >= 2);
});

test("labels do not depend on row order, even with exact ties (duplicates, a grid of equal distances)", async () => {
  const rows: number[][] = [];
  for (let x = 0; x < 6; x++) for (let y = 0; y < 6; y++) rows.push([x, y]);
  for (let x = 0; x < 5; x++) for (let y = 0; y < 5; y++) rows.push([20 + x, y]);
  for (let i = 0; i < 8; i++) rows.push([10, 30]);
  for (let i = 0; i < 3; i++) rows.push([40, 40]);
  const base = await hdbscan(rows, { minClusterSize: 5, minSamples: 4 });
  for (const seed of [1, 2, 3]) {
    let s = seed;
    const order = rows.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      s = (s * 1103515245 + 12345) % 2147483648;
      const j = s % (i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const shuffled = await hdbscan(
      order.map((i) => rows[i]!),
      { minClusterSize: 5, minSamples: 4 },
    );
    const back = new Int32Array(rows.length);
    order.forEach((i, r) => (back[i] = shuffled.labels[r]!));
    assertSamePartition(back, base.labels, `shuffle ${seed}`);
  }
  assert.ok(base.numClusters >= 2);
});
