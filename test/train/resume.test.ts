import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { makeBatch } from "../../src/segmenter/data.js";
import { loadSamples } from "../../src/segmenter/data.js";
import { trainSegmenter, type TrainSettings } from "../../src/segmenter/loop.js";
import { disposeParams, initParams, type ModelConfig } from "../../src/segmenter/model.js";
import { initBackend } from "../../src/segmenter/runtime.js";
import { makeFixture, scratchDir, writeSamples } from "./helpers.js";
import { checkpointFolder, checkpointFolderFor } from "../../src/segmenter/checkpoints.js";
import type { StageContext } from "../../src/pipeline/stage.js";

const config: ModelConfig = { net: { imageSize: 16, inChannels: 1, baseChannels: 4, depth: 3, heads: 4, tokenDim: null }, guidance: { kind: "none" } };
const settings: TrainSettings = { epochs: 4, batchSize: 4, learningRate: 3e-3, minLearningRate: 1e-4, weightDecay: 0.01, patience: 0, seed: 3 };

async function data() {
  const work = await scratchDir("resume-data");
  const ingest = await writeSamples(path.join(work, "ingest"), await makeFixture({ counts: { train: 12, val: 4, test: 0 }, seed: 2 }));
  const samples = await loadSamples(ingest.files["samples.parquet"]!, { size: 16, channels: 1 });
  return { train: samples.filter((s) => s.split === "train"), val: samples.filter((s) => s.split === "val") };
}

function weightsOf(store: ReturnType<typeof initParams>): number[] {
  return [...store.values()].flatMap((e) => Array.from(e.variable.dataSync()));
}

test("a run killed after epoch 2 resumes from its checkpoint and ends where an uninterrupted run ends", { timeout: 300_000 }, async () => {
  await initBackend("cpu");
  const { train, val } = await data();
  const none = () => ({ kind: "none" as const });
  const job = (store: ReturnType<typeof initParams>, checkpointDir: string, signal?: AbortSignal, onEpoch?: (epoch: number) => void) =>
    trainSegmenter({
      config,
      store,
      settings,
      trainCount: train.length,
      valCount: val.length,
      trainBatch: (ix) => makeBatch(train, ix, none),
      valBatch: (ix) => makeBatch(val, ix, none),
      checkpointDir,
      checkpointKey: "same-work",
      signal,
      onEpoch: (r) => onEpoch?.(r.epoch),
    });

  const straight = initParams(config, settings.seed);
  const straightResult = await job(straight, path.join(await scratchDir("ckpt-a"), "ck"));
  assert.equal(straightResult.epochsRun, 4);
  assert.equal(straightResult.resumedEpochs, 0);

  const dir = path.join(await scratchDir("ckpt-b"), "ck");
  const killed = initParams(config, settings.seed);
  const controller = new AbortController();
  await assert.rejects(
    job(killed, dir, controller.signal, (epoch) => epoch === 2 && controller.abort()),
    /interrupted after epoch 2/,
  );
  disposeParams(killed);
  const state = JSON.parse(await readFile(path.join(dir, "state.json"), "utf8"));
  assert.equal(state.epochsDone, 2);

  // A fresh process would start from new random weights: the checkpoint must override them.
  const resumed = initParams(config, 999);
  const resumedResult = await job(resumed, dir);
  assert.equal(resumedResult.resumedEpochs, 2);
  assert.equal(resumedResult.epochsRun, 4);
  const a = weightsOf(straight);
  const b = weightsOf(resumed);
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  assert.ok(worst < 1e-5, `largest weight difference ${worst}`);
  assert.deepEqual(
    resumedResult.history.map((h) => h.loss),
    straightResult.history.map((h) => h.loss),
  );

  // A finished checkpoint is reused without training.
  const again = initParams(config, 5);
  const againResult = await job(again, dir);
  assert.equal(againResult.resumedEpochs, 4);
  assert.deepEqual(weightsOf(again), b);
  [straight, resumed, again].forEach(disposeParams);
});

test("a checkpoint made for other work is ignored", { timeout: 300_000 }, async () => {
  await initBackend("cpu");
  const { train, val } = await data();
  const none = () => ({ kind: "none" as const });
  const dir = path.join(await scratchDir("ckpt-c"), "ck");
  const run = (key: string, epochs: number) =>
    trainSegmenter({
      config,
      store: initParams(config, 1),
      settings: { ...settings, epochs },
      trainCount: train.length,
      valCount: val.length,
      trainBatch: (ix) => makeBatch(train, ix, none),
      valBatch: (ix) => makeBatch(val, ix, none),
      checkpointDir: dir,
      checkpointKey: key,
    });
  await run("first", 1);
  const other = await run("second", 1);
  assert.equal(other.resumedEpochs, 0);
});

test("early stopping ends training after `patience` epochs without a better validation Dice", { timeout: 300_000 }, async () => {
  await initBackend("cpu");
  const { train, val } = await data();
  const none = () => ({ kind: "none" as const });
  // lr 0 => weights never change => validation Dice never improves after epoch 1.
  const result = await trainSegmenter({
    config,
    store: initParams(config, 1),
    settings: { ...settings, epochs: 10, learningRate: 0, minLearningRate: 0, patience: 2 },
    trainCount: train.length,
    valCount: val.length,
    trainBatch: (ix) => makeBatch(train, ix, none),
    valBatch: (ix) => makeBatch(val, ix, none),
  });
  assert.equal(result.epochsRun, 3);
  assert.equal(result.stoppedEarly, true);
  assert.equal(result.bestEpoch, 1);
});

test("checkpoint folders are keyed on the stage's code version, so new stage code never resumes old training", () => {
  const context = (version: string) =>
    ({
      stage: "train",
      version,
      params: { epochs: 3 },
      inputs: { ingest: { digest: "d1" } },
      pipeline: { workdir: "/w", dataset: { seed: 7 } },
    }) as unknown as StageContext<unknown>;
  for (const folder of [(v: string) => checkpointFolder(context(v), "prolearn"), (v: string) => checkpointFolderFor(context(v), "baseline", { net: "unet" })]) {
    assert.deepEqual(folder("2"), folder("2"), "the same work finds the same folder");
    assert.notEqual(folder("2").key, folder("3").key);
    assert.notEqual(folder("2").dir, folder("3").dir);
  }
});
