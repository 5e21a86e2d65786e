import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { derangement, pairedComparisons, shuffledLookups } from "../../src/evaluate/run.js";
import { readParquetFile } from "../../src/io/parquet.js";
import { runPipeline, type RunResult } from "../../src/pipeline/engine.js";
import { resolvePipeline } from "../../src/pipeline/spec.js";
import { STAGES } from "../../src/stages.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { pairedBootstrap } from "../../src/util/bootstrap.js";
import { scratchDir } from "./helpers.js";

test("paired bootstrap: seeded and deterministic, a constant difference has a zero-width interval, the interval holds the mean", () => {
  const a = [0.9, 0.8, 0.7, 0.95, 0.6, 0.85, 0.75, 0.9];
  const b = [0.7, 0.8, 0.5, 0.9, 0.65, 0.6, 0.7, 0.8];
  const first = pairedBootstrap(a, b, { seed: 1 });
  assert.deepEqual(pairedBootstrap(a, b, { seed: 1 }), first, "same seed, same interval");
  assert.ok(Math.abs(first.meanDiff - 0.1) < 1e-12);
  assert.ok(first.ci95[0] <= first.meanDiff && first.meanDiff <= first.ci95[1] && first.ci95[0] < first.ci95[1]);
  assert.notDeepEqual(pairedBootstrap(a, b, { seed: 2 }).ci95, first.ci95, "another seed draws other resamples");
  const constant = pairedBootstrap([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], { seed: 3 });
  assert.ok(Math.abs(constant.ci95[0] - 0.1) < 1e-12 && Math.abs(constant.ci95[1] - 0.1) < 1e-12);
  assert.equal(pairedBootstrap([1, Number.NaN], [0, 0], { seed: 1 }).pairs, 1, "a pair with a missing side is dropped");
  assert.throws(() => pairedBootstrap([1], [1, 2], { seed: 1 }), RangeError);
});

test("shuffled PSA gives every test image another image's lookup", () => {
  for (const n of [2, 3, 10, 57]) {
    const order = derangement(n, 9);
    assert.deepEqual(
      [...order].sort((x, y) => x - y),
      Array.from({ length: n }, (_, i) => i),
      "a permutation",
    );
    order.forEach((from, to) => assert.notEqual(from, to, `image ${to} keeps its own lookup (n ${n})`));
  }
  const source = { indices: Int32Array.from([0, 1, 2, 3, 4, 5]), weights: Float32Array.from([0.6, 0.4, 0.7, 0.3, 0.9, 0.1]), own: null, useOwn: null };
  const moved = shuffledLookups(source, [2, 0, 1], 2);
  assert.deepEqual([...moved.indices], [4, 5, 0, 1, 2, 3]);
  assert.deepEqual(
    [...moved.weights].map((w) => +w.toFixed(2)),
    [0.9, 0.1, 0.6, 0.4, 0.7, 0.3],
  );
});

test("paired comparisons pool seeds per image before the bootstrap", () => {
  const run = (name: "prolearn" | "unet", seed: number, dice: number[]) => ({
    name,
    seed,
    dice,
    scores: { dice: 0, iou: 0, dicePooled: 0, iouPooled: 0, images: dice.length },
  });
  const byModel = new Map([
    ["prolearn", [run("prolearn", 1, [0.8, 0.6]), run("prolearn", 2, [0.6, 0.8])]],
    ["unet", [run("unet", 1, [0.5, 0.5]), run("unet", 2, [0.7, 0.7])]],
  ] as const);
  const [only] = pairedComparisons(byModel as never, 2, { seed: 1, resamples: 200 });
  assert.equal(only!.a, "prolearn");
  assert.equal(only!.b, "unet");
  assert.ok(Math.abs(only!.meanDiff - 0.1) < 1e-12);
  assert.ok(Math.abs(only!.ci95[0] - 0.1) < 1e-12 && Math.abs(only!.ci95[1] - 0.1) < 1e-12, "per-image seed means differ by 0.1 on both images");
});

const NET = {
  imageSize: 16,
  baseChannels: 4,
  depth: 2,
  heads: 2,
  epochs: 2,
  batchSize: 8,
  learningRate: 1e-2,
  minLearningRate: 1e-4,
  patience: 0,
  backend: "cpu",
  tokenDim: 8,
  guidanceTokens: 2,
};

function evaluateOf(result: RunResult) {
  assert.equal(
    result.status,
    "ok",
    result.stages
      .map((s) => s.error)
      .filter(Boolean)
      .join("\n"),
  );
  return result.stages.find((s) => s.name === "evaluate")!;
}

test("evaluate with seeds: 2 scores every model (the baseline stage's U-Net, the four controls) at both seeds, writes model/seed rows, and resumes every training on a rerun", {
  timeout: 300_000,
}, async () => {
  const dir = await scratchDir("controls-seeds");
  await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 40, seed: 2, size: 32 });
  const spec = (examples: number) => ({
    name: "controls",
    dataset: { kind: "qata-cov19", root: "data", layout: "sgseg", textAvailability: 0.5, seed: 2 },
    stages: {
      ingest: {},
      embed: { encoder: "builtin", dim: 32 },
      prototypes: { minClusterSize: 2, k: 2 },
      train: NET,
      baseline: { seeds: 2 },
      evaluate: { seeds: 2, examples, resamples: 500, controls: ["shuffled-psa", "mean-text", "image-embedding", "own-report"] },
    },
  });
  const first = evaluateOf(await runPipeline(resolvePipeline(spec(2), STAGES, { baseDir: dir }), { registry: STAGES }));
  const summary = first.summary as {
    seeds: number[];
    testImages: number;
    models: { name: string; seed: number; dice: number; iou: number; dicePooled: number }[];
    paired: { a: string; b: string; meanDiff: number; ci95: [number, number] }[];
    prolearn: { dice: number };
    controls: Record<string, { dice: number }>;
    trainings: { name: string; seed: number; epochsRun: number; resumedEpochs: number }[];
  };
  assert.deepEqual(summary.seeds, [2, 3], "the train stage's seed (the dataset's), then the next");
  const names = ["prolearn", "unet", "shuffled-psa", "mean-text", "image-embedding", "own-report"];
  assert.deepEqual(
    summary.models.map((m) => `${m.name}@${m.seed}`),
    names.flatMap((n) => [`${n}@2`, `${n}@3`]),
  );
  for (const m of summary.models) for (const key of ["dice", "iou", "dicePooled"] as const) assert.ok(m[key] >= 0 && m[key] <= 1, `${m.name}@${m.seed} ${key}`);
  const prolearnMean = (summary.models[0]!.dice + summary.models[1]!.dice) / 2;
  assert.ok(Math.abs(summary.prolearn.dice - prolearnMean) < 1e-9, "the headline is the seed mean");
  assert.deepEqual(Object.keys(summary.controls), ["shuffled-psa", "mean-text", "image-embedding", "own-report"]);
  assert.deepEqual(
    summary.paired.map((p) => `${p.a}-${p.b}`),
    ["prolearn-unet", "prolearn-shuffled-psa", "prolearn-mean-text", "prolearn-image-embedding", "prolearn-own-report"],
  );
  for (const p of summary.paired) assert.ok(p.ci95[0] <= p.meanDiff + 1e-12 && p.meanDiff <= p.ci95[1] + 1e-12, `${p.b}: interval holds the mean`);
  // Trained here: prolearn's second seed, both seeds of mean-text, image-embedding and own-report; unet's two by the baseline stage.
  assert.deepEqual(summary.trainings.map((t) => `${t.name}@${t.seed}`).sort(), [
    "image-embedding@2",
    "image-embedding@3",
    "mean-text@2",
    "mean-text@3",
    "own-report@2",
    "own-report@3",
    "prolearn@3",
    "unet@2",
    "unet@3",
  ]);

  const metrics = await readParquetFile(first.outputs["metrics.parquet"]!);
  assert.deepEqual(metrics.schema.fields.map((f) => f.name).slice(0, 3), ["model", "seed", "dice"]);
  assert.deepEqual(
    [...metrics.getChild("model")!].map(String),
    names.flatMap((n) => [n, n]),
  );
  assert.deepEqual(
    [...metrics.getChild("seed")!].map(Number),
    names.flatMap(() => [2, 3]),
  );
  const perImage = await readParquetFile(first.outputs["per_image.parquet"]!);
  assert.equal(perImage.numRows, 12 * summary.testImages);
  // Per-image rows average to the model's Dice at that seed.
  const rows = perImage.toArray() as { model: string; seed: number; dice: number }[];
  for (const m of summary.models) {
    const own = rows.filter((r) => r.model === m.name && r.seed === m.seed);
    assert.ok(Math.abs(own.reduce((s, r) => s + r.dice, 0) / own.length - m.dice) < 1e-5, `${m.name}@${m.seed}`);
  }

  // Another examples count: every model comes back from its checkpoint, with the same scores
  // and the same (seeded) intervals.
  const again = evaluateOf(await runPipeline(resolvePipeline(spec(1), STAGES, { baseDir: dir }), { registry: STAGES }));
  assert.equal(again.status, "ran");
  const rerun = again.summary as typeof summary;
  // (unet's records are the baseline stage's, which the engine reused whole: nothing to resume.)
  for (const t of rerun.trainings.filter((t) => t.name !== "unet")) assert.equal(t.resumedEpochs, t.epochsRun, `${t.name}@${t.seed} resumed`);
  assert.deepEqual(rerun.models, summary.models);
  assert.deepEqual(rerun.paired, summary.paired);
});

test("on decoy images, where only the report tells the lesion from the decoy: own-report > prolearn > shuffled-psa", { timeout: 600_000 }, async () => {
  const dir = await scratchDir("controls-decoys");
  await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 120, seed: 3, size: 64, decoys: true });
  // The ProLearn model learns to read text from the images' own reports (every one available),
  // so at test time PSA's t^ carries into the mask whatever of the report it recovers.
  const train = {
    imageSize: 32,
    baseChannels: 8,
    depth: 3,
    heads: 2,
    epochs: 15,
    batchSize: 8,
    learningRate: 1e-2,
    minLearningRate: 1e-4,
    patience: 0,
    backend: "cpu",
    tokenDim: 16,
    guidanceTokens: 4,
    guidance: "own-report-when-available",
  };
  const spec = {
    name: "decoys",
    dataset: { kind: "qata-cov19", root: "data", layout: "sgseg", textAvailability: 1, seed: 3 },
    stages: {
      ingest: {},
      embed: { encoder: "builtin" },
      prototypes: { minClusterSize: 4, k: 4 },
      train,
      evaluate: { baseline: "none", controls: ["shuffled-psa", "own-report"], examples: 0 },
    },
  };
  const started = performance.now();
  const evaluate = evaluateOf(await runPipeline(resolvePipeline(spec, STAGES, { baseDir: dir }), { registry: STAGES }));
  const summary = evaluate.summary as {
    testImages: number;
    models: { name: string; dice: number }[];
    paired: { b: string; meanDiff: number; ci95: [number, number] }[];
  };
  const dice = Object.fromEntries(summary.models.map((m) => [m.name, m.dice]));
  const vs = Object.fromEntries(summary.paired.map((p) => [p.b, p]));
  console.log(
    `decoys, ${summary.testImages} test images: own-report ${dice["own-report"]!.toFixed(3)}, prolearn ${dice.prolearn!.toFixed(3)}, shuffled-psa ${dice["shuffled-psa"]!.toFixed(3)}; prolearn - shuffled ${vs["shuffled-psa"]!.meanDiff.toFixed(3)} [${vs["shuffled-psa"]!.ci95.map((x) => x.toFixed(3)).join(", ")}], prolearn - own ${vs["own-report"]!.meanDiff.toFixed(3)} [${vs["own-report"]!.ci95.map((x) => x.toFixed(3)).join(", ")}]; ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  assert.ok(dice["own-report"]! > dice.prolearn!, "the own report is the upper bound");
  assert.ok(vs["own-report"]!.ci95[1] < 0, "and clearly so: the interval of prolearn - own-report lies below 0");
  assert.ok(dice.prolearn! > dice["shuffled-psa"]!, "another image's lookup does worse than the image's own");
});
