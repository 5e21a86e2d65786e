import { mulberry32 } from "../../src/util/random.js";
import assert from "node:assert/strict";
import { test } from "node:test";
import { buildPrototypes, parseLungZones, bestKmeans, KMEANS_FIT_SAMPLE, type BuildOptions } from "../../src/prototypes/build.js";
import { PrototypeSpace } from "../../src/prototypes/psa.js";
import { usefulnessCheck } from "../../src/prototypes/run.js";
import { centredCosinePerRow, ownReportAucPerRow } from "../../src/prototypes/retrieval.js";
import { adjustedRandIndex } from "../../src/prototypes/ari.js";
import { syntheticPairs } from "./fixtures.js";

const base: BuildOptions = { mode: "hdbscan-kmeans", minClusterSize: 5, metric: "cosine", k: 4, noise: "nearest", seed: 7, restarts: 3 };

test("hdbscan-kmeans: surrogate labels follow the groups, K capped by size, prototypes are the members nearest their centroid", async () => {
  const data = syntheticPairs({ groups: 4, perGroup: 30, dim: 32, seed: 1 });
  const result = await buildPrototypes({ ids: data.ids, dim: data.dim, images: data.images, texts: data.texts }, base);
  assert.equal(result.numClusters, 4);
  const labels = result.assignments.map((a) => a.cluster);
  assert.ok(adjustedRandIndex(labels, data.group) > 0.99);
  const p = result.prototypes;
  assert.equal(p.cluster.length, 16);
  for (let j = 0; j < p.cluster.length; j++) {
    const i = p.sampleIndex[j]!;
    assert.ok(i >= 0);
    assert.deepEqual(Array.from(p.queries.subarray(j * 32, (j + 1) * 32)), Array.from(data.images.subarray(i * 32, (i + 1) * 32)));
    assert.deepEqual(Array.from(p.responses.subarray(j * 32, (j + 1) * 32)), Array.from(data.texts.subarray(i * 32, (i + 1) * 32)));
    const members = result.assignments.filter((a) => a.cluster === p.cluster[j] && a.subcluster === p.subcluster[j]);
    assert.equal(members.length, p.size[j]);
    assert.ok(
      members.some((a) => a.sample === i),
      "the prototype sample belongs to its own sub-cluster",
    );
  }
  const capped = await buildPrototypes({ ids: data.ids, dim: data.dim, images: data.images, texts: data.texts }, { ...base, k: 100 });
  for (let c = 0; c < 4; c++) assert.ok(capped.prototypes.cluster.filter((x) => x === c).length <= 30);
});

test("deterministic for a seed; another seed may differ but stays valid", async () => {
  const data = syntheticPairs({ groups: 3, perGroup: 25, dim: 16, seed: 2 });
  const samples = { ids: data.ids, dim: data.dim, images: data.images, texts: data.texts };
  const a = await buildPrototypes(samples, base);
  const b = await buildPrototypes(samples, base);
  assert.deepEqual(a.prototypes, b.prototypes);
  assert.deepEqual(a.assignments, b.assignments);
});

test("best-of-restarts k-means never has higher inertia than a single run", async () => {
  const data = syntheticPairs({ groups: 6, perGroup: 10, dim: 8, seed: 3, noise: 0.6 });
  const rows = Array.from({ length: 60 }, (_, i) => Array.from(data.texts.subarray(i * 8, (i + 1) * 8)));
  const one = await bestKmeans(rows, 6, 5, 1);
  const many = await bestKmeans(rows, 6, 5, 6);
  assert.ok(many.inertia <= one.inertia + 1e-9);
});

test("noise: nearest assigns every sample, drop leaves noise out of the prototypes", async () => {
  const data = syntheticPairs({ groups: 3, perGroup: 20, dim: 16, seed: 4 });
  // Outliers: far-off text embeddings that HDBSCAN calls noise.
  const extra = 4;
  const n = data.ids.length + extra;
  const images = new Float32Array(n * 16);
  const texts = new Float32Array(n * 16);
  images.set(data.images);
  texts.set(data.texts);
  for (let e = 0; e < extra; e++)
    for (let k = 0; k < 16; k++) {
      images[(data.ids.length + e) * 16 + k] = Math.sin(e * 16 + k);
      texts[(data.ids.length + e) * 16 + k] = Math.cos(e * 31 + k * 7) * 3;
    }
  const ids = [...data.ids, ...Array.from({ length: extra }, (_, e) => `noise${e}`)];
  const nearest = await buildPrototypes({ ids, dim: 16, images, texts }, base);
  assert.ok(nearest.noisePoints > 0);
  assert.ok(nearest.assignments.every((a) => a.cluster >= 0 && a.subcluster >= 0));
  const dropped = await buildPrototypes({ ids, dim: 16, images, texts }, { ...base, noise: "drop" });
  assert.equal(dropped.droppedPoints, dropped.noisePoints);
  const droppedSamples = new Set(dropped.assignments.filter((a) => a.cluster < 0).map((a) => a.sample));
  assert.equal(droppedSamples.size, dropped.noisePoints);
  for (const i of dropped.prototypes.sampleIndex) assert.ok(!droppedSamples.has(i));
});

test("lung zones parse the report text, typos included", () => {
  const z = (s: string) => Array.from(parseLungZones(s)).join("");
  assert.equal(z("Bilateral pulmonary infection, two infected areas, all left lung and middle lower right lung."), "111011");
  assert.equal(z("Unilateral pulmonary infection, one infected area, lower left lung."), "001000");
  assert.equal(z("Unilateral pulmonary infection, one infected area, midlle lower right lung"), "000011");
  assert.equal(z("Bilateral pulmonary infection, two infected areas, uppper left lung and upper right lung."), "100100");
  assert.equal(z("No pulmonary infection, zero infected areas."), "000000");
});

test("zones-mean: a sample joins every zone it names; prototypes are member means", async () => {
  const data = syntheticPairs({ groups: 2, perGroup: 10, dim: 8, seed: 5 });
  const reports = data.group.map((g) =>
    g === 0 ? "Unilateral pulmonary infection, lower left lung." : "Bilateral pulmonary infection, lower left lung and upper right lung.",
  );
  const result = await buildPrototypes({ ids: data.ids, dim: 8, images: data.images, texts: data.texts, reports }, { ...base, mode: "zones-mean", k: 1 });
  // lower-left (all 20 samples) and upper-right (group 1 only): one prototype each with k = 1.
  assert.equal(result.prototypes.cluster.length, 2);
  const lowerLeft = Array.from(result.prototypes.cluster).indexOf(2);
  assert.equal(result.prototypes.size[lowerLeft], 20);
  const mean = new Float32Array(8);
  for (let i = 0; i < 20; i++) for (let k = 0; k < 8; k++) mean[k] += data.images[i * 8 + k]! / 20;
  for (let k = 0; k < 8; k++) assert.ok(Math.abs(result.prototypes.queries[lowerLeft * 8 + k]! - mean[k]!) < 1e-5);
  assert.equal(result.assignments.length, 30);
  assert.equal(result.prototypes.sampleIndex[0], -1);
  await assert.rejects(
    buildPrototypes({ ids: data.ids, dim: 8, images: data.images, texts: data.texts }, { ...base, mode: "zones-mean" }),
    /needs the report texts/,
  );
});

test("PSA query = softmax over top-k cosines of the response rows; sync, async (ORT) and into-buffers agree", async () => {
  const dim = 24;
  const P = 10;
  const data = syntheticPairs({ groups: P, perGroup: 1, dim, seed: 6 });
  const space = new PrototypeSpace(data.images, data.texts, dim);
  const queries = syntheticPairs({ groups: 70, perGroup: 1, dim, seed: 8 }).images;
  const n = 70;
  const result = space.query(queries, { topK: 3, temperature: 0.5 });
  for (let i = 0; i < n; i++) {
    const v = queries.subarray(i * dim, (i + 1) * dim);
    const cos = Array.from({ length: P }, (_, p) => {
      const q = data.images.subarray(p * dim, (p + 1) * dim);
      let dot = 0,
        nv = 0,
        nq = 0;
      for (let k = 0; k < dim; k++) {
        dot += v[k]! * q[k]!;
        nv += v[k]! ** 2;
        nq += q[k]! ** 2;
      }
      return dot / Math.sqrt(nv * nq);
    });
    const order = cos
      .map((c, p) => [c, p] as const)
      .sort((a, b) => b[0] - a[0])
      .slice(0, 3);
    assert.deepEqual(
      Array.from(result.ids.subarray(i * 3, i * 3 + 3)),
      order.map((o) => o[1]),
    );
    const exp = order.map((o) => Math.exp((o[0] - order[0]![0]) / 0.5));
    const total = exp.reduce((a, b) => a + b, 0);
    for (let j = 0; j < 3; j++) assert.ok(Math.abs(result.weights[i * 3 + j]! - exp[j]! / total) < 1e-5);
    for (let k = 0; k < dim; k++) {
      let expected = 0;
      for (let j = 0; j < 3; j++) expected += (exp[j]! / total) * data.texts[order[j]![1] * dim + k]!;
      assert.ok(Math.abs(result.embeddings[i * dim + k]! - expected) < 1e-4);
    }
  }
  const viaOrt = await space.queryAsync(queries, { topK: 3, temperature: 0.5 });
  assert.deepEqual(viaOrt.ids, result.ids);
  for (let i = 0; i < result.embeddings.length; i++) assert.ok(Math.abs(viaOrt.embeddings[i]! - result.embeddings[i]!) < 1e-4);
  const out = { embeddings: new Float32Array(n * dim), ids: new Int32Array(n * 3), weights: new Float32Array(n * 3) };
  space.queryInto(queries, out, { topK: 3, temperature: 0.5 });
  assert.deepEqual(out.ids, result.ids);
  assert.throws(() => space.query(new Float32Array(5)), /not a whole number/);
});

test("usefulness: PSA finds held-out images' own reports far better than its shuffled copy", async () => {
  // One draw around shared centres: the first 150 rows train, the last 40 are held out.
  const both = syntheticPairs({ groups: 5, perGroup: 38, dim: 32, seed: 12 });
  const trainIdx = both.ids.map((_, i) => i).filter((i) => i < 150);
  const valIdx = both.ids.map((_, i) => i).filter((i) => i >= 150);
  const pick = (idx: number[], from: Float32Array) => {
    const out = new Float32Array(idx.length * 32);
    idx.forEach((i, r) => out.set(from.subarray(i * 32, (i + 1) * 32), r * 32));
    return out;
  };
  const samples = { ids: trainIdx.map((i) => both.ids[i]!), dim: 32, images: pick(trainIdx, both.images), texts: pick(trainIdx, both.texts) };
  const built = await buildPrototypes(samples, base);
  const space = new PrototypeSpace(built.prototypes.queries, built.prototypes.responses, 32);
  // Turns of the event loop while the check runs: it works in parts, so a queue worker's lock
  // renewal (a timer) is never starved (a synchronous check made BullMQ count jobs as stalled).
  let turns = 0;
  let checking = true;
  const count = () => {
    turns++;
    if (checking) setImmediate(count);
  };
  setImmediate(count);
  const check = await usefulnessCheck(
    space,
    built.prototypes.queries,
    built.prototypes.responses,
    samples.texts,
    { ids: valIdx.map((i) => both.ids[i]!), dim: 32, images: pick(valIdx, both.images), texts: pick(valIdx, both.texts) },
    { topK: 3, temperature: 1, seed: 1 },
  );
  assert.ok(check.passed, JSON.stringify(check));
  assert.ok(check.marginOverMean > 0.2 && check.marginOverRandom > 0.2, JSON.stringify(check));
  assert.equal(check.samples, 40);
  // Five groups: an own report ties with its 7 group mates and beats the 32 others.
  assert.ok(check.ownReportAuc > 0.85 && check.shuffled.ownReportAuc < 0.65, JSON.stringify(check));
  assert.ok(check.centredCosine > 0.5 && check.centredCosine - check.shuffled.centredCosine > 0.4, JSON.stringify(check));
  assert.ok(check.gains.ownReportAuc > 2 * check.gains.ownReportAucSe);
  assert.equal(check.shuffled.permutations, 8);
  checking = false;
  // One part per 256 queried rows and per 128 AUC rows, for the space and each of its 8 shuffled copies: at least 18.
  assert.ok(turns >= 18, `the check yielded ${turns} times`);
});

test("own-report AUC in parts equals the whole", () => {
  const n = 50;
  const dim = 6;
  const random = mulberry32(4);
  const predicted = Float32Array.from({ length: n * dim }, () => random() - 0.5);
  const reports = Float32Array.from({ length: n * dim }, () => Math.round((random() - 0.5) * 4));
  const whole = ownReportAucPerRow(predicted, reports, n, dim);
  const out = new Float64Array(n);
  for (let from = 0; from < n; from += 7) ownReportAucPerRow(predicted, reports, n, dim, { from, to: Math.min(n, from + 7), out });
  assert.deepEqual(Array.from(out), Array.from(whole));
});

test("own-report AUC: ties count half, a perfect prediction of distinct reports scores 1, a constant one 0.5", () => {
  const reports = Float32Array.from([1, 0, 0, 1, 1, 0, -1, 0]); // rows 0 and 2 are the same report
  assert.deepEqual([...ownReportAucPerRow(reports, reports, 4, 2)], [(2 + 0.5) / 3, 1, (2 + 0.5) / 3, 1]);
  const constant = new Float32Array(8).fill(1);
  const flat = ownReportAucPerRow(constant, Float32Array.from([1, 0, 1, 0, 1, 0, 1, 0]), 4, 2);
  assert.deepEqual([...flat], [0.5, 0.5, 0.5, 0.5]);
  const centred = centredCosinePerRow(Float32Array.from([2, 1]), Float32Array.from([0, 3]), Float32Array.from([1, 1]), 1, 2);
  assert.ok(Math.abs(centred[0]! + 1 / Math.sqrt(5)) < 1e-12, String(centred[0])); // (1, 0) against (-1, 2)
});

test("a label beyond the K-means fit sample: every member joins its nearest centroid; a repeated text is one weighted point", async () => {
  // 4,400 samples with distinct images: 4,200 share one report text (a templated report, over
  // the fit sample), 200 have distinct texts around another centre.
  const dim = 8;
  const texts200 = syntheticPairs({ groups: 2, perGroup: 200, dim, seed: 9 });
  const images = syntheticPairs({ groups: 2, perGroup: 2200, dim, seed: 10, noise: 0.6 });
  const n = 4400;
  const texts = new Float32Array(n * dim);
  const group = Array.from({ length: n }, (_, i) => (i < 4200 ? 0 : 1));
  for (let i = 0; i < n; i++) {
    const source = i < 4200 ? 0 : 2 * (i - 4200) + 1; // row 0 is group 0's text, odd rows group 1's
    texts.set(texts200.texts.subarray(source * dim, (source + 1) * dim), i * dim);
  }
  assert.ok(4200 > KMEANS_FIT_SAMPLE);
  const samples = { ids: Array.from({ length: n }, (_, i) => `s${i}`), dim, images: images.images, texts };
  const logs: string[] = [];
  const result = await buildPrototypes(samples, { ...base, k: 6, restarts: 1, log: (l) => logs.push(l) });
  assert.ok(
    logs.some((l) => /^hdbscan: 201 distinct of 4400 points; exact path/.test(l)),
    logs.join("\n"),
  );
  assert.ok(
    adjustedRandIndex(
      result.assignments.map((a) => a.cluster),
      group,
    ) > 0.99,
  );
  const p = result.prototypes;
  let total = 0;
  for (let j = 0; j < p.cluster.length; j++) {
    total += p.size[j]!;
    const own = result.assignments[p.sampleIndex[j]!]!;
    assert.equal(own.cluster, p.cluster[j]);
    assert.equal(own.subcluster, p.subcluster[j], "the prototype sample belongs to its own sub-cluster");
  }
  assert.equal(total, n);
  assert.ok(result.assignments.every((a) => a.subcluster >= 0 && a.subcluster < 6));
  const big = result.assignments[0]!.cluster;
  assert.equal(p.cluster.filter((c) => c === big).length, 6);
  const again = await buildPrototypes(samples, { ...base, k: 6, restarts: 1 });
  assert.deepEqual(again.prototypes, result.prototypes);
});

test("k-means (float32 rows, ORT assignment) recovers separated blobs, deterministically for a seed", async () => {
  const { kmeans } = await import("../../src/prototypes/kmeans.js");
  const data = syntheticPairs({ groups: 5, perGroup: 60, dim: 24, seed: 12, noise: 0.2 });
  const a = await kmeans(data.texts, 300, 24, 5, { seed: 3, restarts: 2 });
  assert.ok(adjustedRandIndex(Array.from(a.clusters), data.group) > 0.99);
  const b = await kmeans(data.texts, 300, 24, 5, { seed: 3, restarts: 2 });
  assert.deepEqual(b, a);
  const one = await kmeans(data.texts, 3, 24, 5, { seed: 3, restarts: 1 });
  assert.equal(new Set(one.clusters).size, 3, "k is capped by the rows");
});

test("k-means on a small set: the distance-space iterations give the explicit centroid path's clusters and inertia", async () => {
  const { kmeans } = await import("../../src/prototypes/kmeans.js");
  // 120 rows (under the small-set size) of 48-d: four loose blobs and some spread, k 6, 3 restarts.
  const width = 48;
  const n = 120;
  const random = mulberry32(11);
  const rows = new Float32Array(n * width);
  for (let i = 0; i < n; i++) for (let x = 0; x < width; x++) rows[i * width + x] = (i % 4 === x % 4 ? 2 : 0) + (random() - 0.5) * (i < 100 ? 1 : 6);
  for (const seed of [1, 2, 3]) {
    const fast = await kmeans(rows, n, width, 6, { seed, restarts: 3 });
    const explicit = await kmeans(rows, n, width, 6, { seed, restarts: 3, assignment: "centroids" });
    assert.deepEqual(Array.from(fast.clusters), Array.from(explicit.clusters), `seed ${seed}: same clusters`);
    assert.ok(Math.abs(fast.inertia - explicit.inertia) <= 1e-6 * explicit.inertia, `seed ${seed}: inertia ${fast.inertia} vs ${explicit.inertia}`);
    for (let v = 0; v < fast.centroids.length; v++) assert.ok(Math.abs(fast.centroids[v]! - explicit.centroids[v]!) < 1e-5);
  }
});

test("usefulness check rows: beyond usefulnessSamples a seeded sample in table order, rows intact; fewer rows are kept whole", async () => {
  const { sampleRows } = await import("../../src/prototypes/run.js");
  const dim = 3;
  const n = 500;
  const rows = {
    ids: Array.from({ length: n }, (_, i) => `v${i}`),
    dim,
    images: Float32Array.from({ length: n * dim }, (_, v) => v),
    texts: Float32Array.from({ length: n * dim }, (_, v) => -v),
  };
  const a = sampleRows(rows, 60, 9);
  assert.equal(a.ids.length, 60);
  const indices = a.ids.map((id) => Number(id.slice(1)));
  assert.deepEqual(
    indices,
    [...indices].sort((x, y) => x - y),
    "table order",
  );
  assert.equal(new Set(indices).size, 60, "no row twice");
  indices.forEach((row, i) => {
    assert.deepEqual(Array.from(a.images.subarray(i * dim, (i + 1) * dim)), [row * dim, row * dim + 1, row * dim + 2]);
    assert.equal(a.texts[i * dim], -row * dim);
  });
  assert.deepEqual(sampleRows(rows, 60, 9).ids, a.ids, "seeded");
  assert.notDeepEqual(sampleRows(rows, 60, 10).ids, a.ids);
  assert.equal(sampleRows(rows, n, 9), rows);
});
