// The webgpu training path on a machine without a GPU: Dawn's null adapter runs the whole WebGPU
// API (pipelines, buffers, dispatches, read-backs) but computes nothing, so these tests check that
// every op, gradient and read-back the training stages use works on tfjs-backend-webgpu in Node,
// not what it computes (numbers come from the GPU check, bench/train-gpu.sh). They found that
// synchronous reads (dataSync) need OffscreenCanvas on webgpu, which Node lacks.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { runPipeline } from "../../src/pipeline/engine.js";
import { resolvePipeline } from "../../src/pipeline/spec.js";
import { STAGES } from "../../src/stages.js";
import { initTrainingBackend } from "../../src/tfjs/backends.js";
import { timeReferenceTraining } from "../../src/tfjs/reference-unet.js";
import { tf } from "../../src/segmenter/runtime.js";
import { scratchDir } from "./helpers.js";
import { skipUnless } from "../helpers/skip.js";

process.env.XDG_RUNTIME_DIR ??= "/tmp";
const dawnMissing = await import("webgpu").then(
  () => false,
  () => true,
);
const skip = skipUnless(!dawnMissing, "the optional package `webgpu` (Dawn) is not installed on this platform");

test("webgpu on Dawn's null adapter: forced by toggle, named as such", { skip }, async () => {
  const info = await initTrainingBackend({ backend: "webgpu", dawnToggles: ["backend=null"] });
  assert.equal(info.backend, "webgpu");
  assert.match(info.adapter, /null adapter/);
  assert.equal(info.fastKernels, true, "our filter-gradient kernel replaces the stock one");
  assert.equal(info.softwareAdapter, true, "the null adapter counts as software: auto never picks it");
});

test("webgpu: the reference U-Net trains (forward, every gradient, Adam, async loss read) on the null adapter", { skip, timeout: 120_000 }, async () => {
  await initTrainingBackend({ backend: "webgpu", dawnToggles: ["backend=null"] });
  const timing = await timeReferenceTraining({ size: 32, batch: 2, steps: 2, warmup: 1 });
  assert.equal(timing.params, 481_745);
  assert.equal(timing.losses.length, 2);
  assert.ok(timing.stepsMs.every((ms) => Number.isFinite(ms) && ms > 0));
});

test("webgpu: guide -> filter -> train -> evaluate run through the engine on the null adapter", { skip, timeout: 300_000 }, async () => {
  await initTrainingBackend({ backend: "webgpu", dawnToggles: ["backend=null"] });
  const dir = await scratchDir("webgpu-null");
  const fixture = await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 32, seed: 5, size: 32 });
  const net = { imageSize: 32, baseChannels: 4, depth: 2, heads: 2, backend: "webgpu", batchSize: 8, epochs: 2, patience: 0 };
  const spec = {
    name: "webgpu-null",
    workdir: path.join(dir, "work"),
    dataset: { kind: "qata-cov19", root: fixture.root, layout: "sgseg", textAvailability: 0.5, seed: 5 },
    stages: {
      ingest: {},
      guide: { ...net, tokenDim: 8, maxTokens: 16 },
      filter: { backend: "webgpu" },
      embed: { encoder: "builtin" },
      prototypes: { minClusterSize: 2, k: 2 },
      train: { ...net, tokenDim: 8, guidanceTokens: 2 },
      evaluate: { backend: "webgpu", examples: 1 },
    },
  };
  const tensorsBefore = tf.memory().numTensors;
  const result = await runPipeline(resolvePipeline(spec, STAGES, { baseDir: dir }), { registry: STAGES });
  assert.equal(result.status, "ok", JSON.stringify(result.stages.map((s) => [s.name, s.status, s.error])));
  assert.equal(tf.memory().numTensors - tensorsBefore, 0, "no GPU buffers left behind");
  for (const [stage, file] of [
    ["guide", "guide-model.json"],
    ["train", "model.json"],
  ] as const) {
    const outputs = result.stages.find((s) => s.name === stage)!.outputs;
    const model = JSON.parse(await readFile(outputs[file]!, "utf8"));
    assert.equal(model.training.backend, "webgpu", `${stage} trained on webgpu`);
  }
  const evaluate = result.stages.find((s) => s.name === "evaluate")!;
  assert.ok((evaluate.summary as { testImages: number }).testImages > 0);
});
