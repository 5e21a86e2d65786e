import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { runPipeline } from "../../src/pipeline/engine.js";
import { resolvePipeline } from "../../src/pipeline/spec.js";
import { STAGES } from "../../src/stages.js";
import { scratchDir } from "./helpers.js";

test("a text-availability change retrains ProLearn but resumes the image-only baseline from its checkpoint", { timeout: 300_000 }, async () => {
  const dir = await scratchDir("sweep-baseline");
  await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 40, seed: 2, size: 32 });
  const net = { imageSize: 32, baseChannels: 4, depth: 2, heads: 2, epochs: 2, batchSize: 8, learningRate: 0.01, patience: 0, backend: "cpu" };
  const variant = (textAvailability: number) =>
    resolvePipeline(
      {
        name: "sweep-baseline",
        dataset: { kind: "qata-cov19", root: "data", layout: "sgseg", textAvailability, seed: 2 },
        stages: {
          ingest: {},
          embed: { encoder: "builtin", dim: 32 },
          prototypes: { minClusterSize: 2, k: 2 },
          train: net,
          evaluate: { baseline: "unet", examples: 0 },
        },
      },
      STAGES,
      { baseDir: dir },
    );
  const first = await runPipeline(variant(0.5), { registry: STAGES });
  const second = await runPipeline(variant(0.25), { registry: STAGES });
  for (const run of [first, second])
    assert.equal(
      run.status,
      "ok",
      run.stages
        .map((s) => s.error)
        .filter(Boolean)
        .join("\n"),
    );
  const baselineOf = (run: typeof first) =>
    run.stages.find((s) => s.name === "evaluate")!.summary.baselineTraining as { resumedEpochs: number; epochsRun: number };
  assert.equal(baselineOf(first).resumedEpochs, 0);
  assert.equal(second.stages.find((s) => s.name === "train")!.status, "ran", "ProLearn sees other reports, so it retrains");
  assert.equal(baselineOf(second).resumedEpochs, baselineOf(second).epochsRun, "the baseline sees the same images: every epoch comes from its checkpoint");
  const dice = (run: typeof first) => (run.stages.find((s) => s.name === "evaluate")!.summary.baseline as { dice: number }).dice;
  assert.equal(dice(second), dice(first));
});
