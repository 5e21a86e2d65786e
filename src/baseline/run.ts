// The baseline stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import path from "node:path";
import { DataError } from "../errors.js";
import { IMAGES_TABLE } from "../ingest/tables.js";
import { readTable } from "../io/tables.js";
import type { StageContext } from "../pipeline/stage.js";
import {
  checkpointFolderFor,
  disposeParams,
  historyJson,
  inputFile,
  logResumed,
  resolveChannels,
  saveSeedModels,
  trainingSummary,
  trainSettings,
} from "../segmenter/checkpoints.js";
import { loadSamples, makeBatch, type DecodedSample } from "../segmenter/data.js";
import type { BatchGuidance } from "../segmenter/guidance.js";
import { trainSegmenter } from "../segmenter/loop.js";
import { initParams, type ModelConfig } from "../segmenter/model.js";
import { trainBudget } from "../segmenter/params.js";
import { computedOn, initBackend } from "../segmenter/runtime.js";
import { packTensors, writeJsonAtomic } from "../segmenter/weights.js";
import { sha256File } from "../util/hash.js";
import type { BaselineParams } from "./stage.js";

/**
 * The stage's key follows images.parquet, but the pixels come from samples.parquet: the rows it
 * decoded must be the ones images.parquet lists (ids and splits, in order), or the cache key
 * would not describe what was learned.
 */
async function checkImageSet(imagesFile: string, samples: readonly DecodedSample[], samplesFile: string): Promise<void> {
  const images = await readTable(IMAGES_TABLE, imagesFile, ["id", "split"]);
  const listed: string[] = [];
  for (let i = 0; i < images.numRows; i++) if (images.split[i] === "train" || images.split[i] === "val") listed.push(`${images.id[i]}\t${images.split[i]}`);
  const read = samples.map((s) => `${s.id}\t${s.split}`);
  const first = listed.findIndex((entry, i) => entry !== read[i]);
  if (listed.length !== read.length || first >= 0)
    throw new DataError(
      `samples.parquet and images.parquet of the same ingest output disagree${first >= 0 ? ` at training row ${first + 1} (${listed[first]})` : ""}`,
      {
        location: { file: samplesFile },
        hint: "the ingest output was changed after it was published: run `prolearn verify`, then `prolearn run --force ingest`",
      },
    );
}

export async function runBaseline(ctx: StageContext<BaselineParams>) {
  const budget = trainBudget(ctx.pipeline);
  const backend = await initBackend(ctx.params.backend, (line) => ctx.log(line));
  const channels = resolveChannels(budget.channels, ctx.pipeline);
  const samplesFile = inputFile(ctx, "ingest", "samples.parquet");
  const imagesFile = inputFile(ctx, "ingest", "images.parquet");
  const samples = await loadSamples(samplesFile, { size: budget.imageSize, channels, cache: ctx.rowCache("train-decoded"), splits: ["train", "val"] });
  await checkImageSet(imagesFile, samples, samplesFile);
  const train = samples.filter((s) => s.split === "train");
  const val = samples.filter((s) => s.split === "val");
  if (train.length === 0) throw new DataError("the training split is empty", { location: { file: samplesFile } });

  const config: ModelConfig = {
    net: { imageSize: budget.imageSize, inChannels: channels, baseChannels: budget.baseChannels, depth: budget.depth, heads: budget.heads, tokenDim: null },
    guidance: { kind: "none" },
  };
  const base = trainSettings(budget, ctx.pipeline);
  const seeds = Array.from({ length: ctx.params.seeds }, (_, j) => base.seed + j);
  const images = await sha256File(imagesFile);
  const none = (): BatchGuidance => ({ kind: "none" });
  ctx.log(
    `image-only U-Net with the train stage's budget (${base.epochs} epochs, batch ${base.batchSize}, ${budget.imageSize} px) on ${train.length} training and ${val.length} validation images, seed${seeds.length > 1 ? "s" : ""} ${seeds.join(", ")}`,
  );

  const models: Parameters<typeof saveSeedModels>[4][number][] = [];
  const trainings: Record<string, unknown>[] = [];
  for (const seed of seeds) {
    const settings = { ...base, seed };
    const store = initParams(config, seed);
    try {
      const checkpoint = checkpointFolderFor(ctx, `unet-seed-${seed}`, { images, net: config.net, settings });
      const trained = await trainSegmenter({
        config,
        store,
        settings,
        trainCount: train.length,
        valCount: val.length,
        trainBatch: (ix) => makeBatch(train, ix, none),
        valBatch: (ix) => makeBatch(val, ix, none),
        checkpointDir: checkpoint.dir,
        checkpointKey: checkpoint.key,
        signal: ctx.signal,
        onEpoch: (r) =>
          ctx.log(`seed ${seed} epoch ${r.epoch}: loss ${r.loss.toFixed(4)}, val Dice ${Number.isFinite(r.valDice) ? r.valDice.toFixed(4) : "n/a"}`),
        onStep: (done, total) => ctx.emit({ kind: "progress", stage: ctx.stage, task: `U-Net training (seed ${seed})`, done, total, unit: "steps" }),
      });
      logResumed(ctx, `U-Net (seed ${seed})`, checkpoint.dir, trained);
      // The first seed's learning curves, for the report.
      if (seed === seeds[0])
        await writeJsonAtomic(
          path.join(ctx.outDir, "history.json"),
          historyJson(trained, { model: "image-only U-Net", seed, trainImages: train.length, valImages: val.length }),
        );
      const { entries, values } = await packTensors([...store].map(([name, entry]) => [name, entry.variable]));
      const training = {
        ...settings,
        backend: backend.backend,
        bestEpoch: trained.bestEpoch,
        bestValDice: trained.bestValDice,
        epochsRun: trained.epochsRun,
        stoppedEarly: trained.stoppedEarly,
      };
      models.push({ seed, training, entries, values });
      trainings.push({ seed, ...trainingSummary(trained), checkpoint: path.basename(checkpoint.dir) });
    } finally {
      disposeParams(store);
    }
  }
  await saveSeedModels(ctx.outDir, "models.json", "weights.bin", config, models);
  return {
    trainImages: train.length,
    valImages: val.length,
    seeds,
    models: trainings,
    budget: { imageSize: budget.imageSize, epochs: base.epochs, batchSize: base.batchSize, learningRate: base.learningRate },
    ...computedOn(backend),
  };
}
