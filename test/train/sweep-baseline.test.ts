import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { runPipeline, type RunResult } from "../../src/pipeline/engine.js";
import { resolvePipeline } from "../../src/pipeline/spec.js";
import { STAGES, type PipelineStagesInput } from "../../src/stages.js";
import { scratchDir } from "./helpers.js";

const NET = { imageSize: 32, baseChannels: 4, depth: 2, heads: 2, epochs: 2, batchSize: 8, learningRate: 0.01, patience: 0, backend: "cpu" as const };

function stageOf(run: RunResult, name: string) {
  return run.stages.find((s) => s.name === name)!;
}

function assertOk(run: RunResult) {
  assert.equal(
    run.status,
    "ok",
    run.stages
      .map((s) => s.error)
      .filter(Boolean)
      .join("\n"),
  );
}

test("the baseline stage is reused across a text-availability sweep, and retrains when the train stage's budget changes", { timeout: 300_000 }, async () => {
  const dir = await scratchDir("sweep-baseline");
  await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 40, seed: 2, size: 32 });
  const variant = (textAvailability: number, train: Partial<typeof NET> = {}) =>
    resolvePipeline(
      {
        name: "sweep-baseline",
        dataset: { kind: "qata-cov19", root: "data", layout: "sgseg", textAvailability, seed: 2 },
        stages: {
          ingest: {},
          embed: { encoder: "builtin", dim: 32 },
          prototypes: { minClusterSize: 2, k: 2 },
          train: { ...NET, ...train },
          baseline: { backend: "cpu" },
          evaluate: { baseline: "unet", controls: [], examples: 0 },
        } satisfies PipelineStagesInput,
      },
      STAGES,
      { baseDir: dir },
    );
  const first = await runPipeline(variant(0.5), { registry: STAGES });
  const second = await runPipeline(variant(0.25), { registry: STAGES });
  assertOk(first);
  assertOk(second);
  assert.equal(stageOf(first, "baseline").status, "ran");
  assert.equal(stageOf(second, "ingest").status, "ran", "other reports: ingest's samples.parquet changes");
  assert.equal(stageOf(second, "train").status, "ran", "ProLearn sees other reports, so it retrains");
  assert.equal(stageOf(second, "baseline").status, "cached", `the U-Net sees the same images: ${stageOf(second, "baseline").reason}`);
  assert.equal(stageOf(second, "baseline").cacheKey, stageOf(first, "baseline").cacheKey);
  const dice = (run: RunResult) => (stageOf(run, "evaluate").summary.baseline as { dice: number }).dice;
  assert.equal(dice(second), dice(first), "the same U-Net scores the same test images");
  const training = stageOf(second, "evaluate").summary.baselineTraining as { epochsRun: number };
  assert.equal(training.epochsRun, NET.epochs);

  // The baseline trains with the train stage's budget: changing train's epochs retrains it, and says why.
  const third = await runPipeline(variant(0.25, { epochs: 1 }), { registry: STAGES });
  assertOk(third);
  const baseline = stageOf(third, "baseline");
  assert.equal(baseline.status, "ran");
  assert.deepEqual(
    baseline.reasons.map((r) => r.code),
    ["resource-changed"],
    baseline.reason,
  );
  assert.match(baseline.reason, /train-budget/);
  assert.equal((stageOf(third, "evaluate").summary.baselineTraining as { epochsRun: number }).epochsRun, 1);
});

test("evaluate.baseline: unet without a baseline stage fails and says how to add it; auto scores no U-Net", { timeout: 300_000 }, async () => {
  const dir = await scratchDir("baseline-missing");
  await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 24, seed: 3, size: 32 });
  const pipeline = (evaluate: PipelineStagesInput["evaluate"]) =>
    resolvePipeline(
      {
        name: "baseline-missing",
        dataset: { kind: "qata-cov19", root: "data", layout: "sgseg", textAvailability: 0.5, seed: 3 },
        stages: {
          ingest: {},
          embed: { encoder: "builtin", dim: 16 },
          prototypes: { minClusterSize: 2, k: 2 },
          train: { ...NET, imageSize: 16, epochs: 1 },
          evaluate,
        } satisfies PipelineStagesInput,
      },
      STAGES,
      { baseDir: dir },
    );
  const required = await runPipeline(pipeline({ baseline: "unet", controls: [], examples: 0 }), { registry: STAGES });
  assert.equal(required.status, "failed");
  const evaluate = stageOf(required, "evaluate");
  assert.match(evaluate.error ?? "", /no baseline stage/);
  assert.match(evaluate.error ?? "", /baseline: \{\}/);

  const auto = await runPipeline(pipeline({ controls: [], examples: 0 }), { registry: STAGES });
  assertOk(auto);
  const summary = stageOf(auto, "evaluate").summary as { baseline: unknown; models: { name: string }[] };
  assert.equal(summary.baseline, null);
  assert.deepEqual(
    summary.models.map((m) => m.name),
    ["prolearn"],
  );
});
