// The train stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import path from "node:path";
import { DataError } from "../errors.js";
import type { StageContext } from "../pipeline/stage.js";
import {
  checkpointFolder,
  disposeParams,
  historyJson,
  inputFile,
  resolveChannels,
  saveModel,
  trainingSummary,
  trainSettings,
  logResumed,
} from "../segmenter/checkpoints.js";
import { loadSamples, makeBatch } from "../segmenter/data.js";
import { psaBatch, psaLookups, readEmbeddings } from "../segmenter/embeddings.js";
import { loadVerifiedPrototypes } from "./prototypes-input.js";
import { PrototypeIndex } from "../segmenter/guidance.js";
import { trainSegmenter } from "../segmenter/loop.js";
import { initParams, type ModelConfig } from "../segmenter/model.js";
import { computedOn, initBackend } from "../segmenter/runtime.js";
import type { TrainParams } from "./stage.js";
import { writeJsonAtomic } from "../segmenter/weights.js";

export async function runTrain(ctx: StageContext<TrainParams>) {
  const params = ctx.params;
  const backend = await initBackend(params.backend, (line) => ctx.log(line));
  const channels = resolveChannels(params.channels, ctx.pipeline);
  const embeddingsFile = inputFile(ctx, "embed", "embeddings.parquet");
  const [samples, embeddings, space] = await Promise.all([
    loadSamples(inputFile(ctx, "ingest", "samples.parquet"), {
      size: params.imageSize,
      channels,
      cache: ctx.rowCache("train-decoded"),
      splits: ["train", "val"],
    }),
    readEmbeddings(embeddingsFile),
    loadVerifiedPrototypes(ctx),
  ]);
  if (space.dim !== embeddings.dim)
    throw new DataError(`prototypes are ${space.dim}-d but image embeddings ${embeddings.dim}-d`, {
      hint: "build prototypes and embeddings with the same encoder",
    });
  const train = samples.filter((s) => s.split === "train");
  const val = samples.filter((s) => s.split === "val");
  if (train.length === 0) throw new DataError("the training split is empty", { location: { file: inputFile(ctx, "ingest", "samples.parquet") } });
  const index = new PrototypeIndex(space.queries, space.dim);
  const topK = Math.min(params.topK, space.count);
  const ownReports = params.guidance === "own-report-when-available";
  const trainLookups = psaLookups(train, embeddings, index, topK, params.temperature, ownReports, embeddingsFile);
  // Validation mirrors inference: image-only, through PSA.
  const valLookups = psaLookups(val, embeddings, index, topK, params.temperature, false, embeddingsFile);
  const config: ModelConfig = {
    net: {
      imageSize: params.imageSize,
      inChannels: channels,
      baseChannels: params.baseChannels,
      depth: params.depth,
      heads: params.heads,
      tokenDim: params.tokenDim,
    },
    guidance: {
      kind: "psa",
      embeddingDim: space.dim,
      prototypes: space.count,
      topK,
      temperature: params.temperature,
      guidanceTokens: params.guidanceTokens,
      tokenDim: params.tokenDim,
    },
  };
  const settings = trainSettings(params, ctx.pipeline);
  const store = initParams(config, settings.seed, { "psa.query": space.queries, "psa.response": space.responses });
  const checkpoint = checkpointFolder(ctx, "prolearn");
  ctx.log(`prototypes: ${space.artifact.name}@${space.artifact.version} (${space.artifact.digest.slice(0, 12)}), verified`);
  ctx.log(
    `${train.length} training images (${train.filter((s) => s.report !== null).length} with reports), ${val.length} validation, ${space.count} prototypes; checkpoints in ${checkpoint.dir}`,
  );
  try {
    const result = await trainSegmenter({
      config,
      store,
      settings,
      trainCount: train.length,
      valCount: val.length,
      trainBatch: (indices) => makeBatch(train, indices, (ix) => psaBatch(trainLookups, topK, space.dim, ix)),
      valBatch: (indices) => makeBatch(val, indices, (ix) => psaBatch(valLookups, topK, space.dim, ix)),
      checkpointDir: checkpoint.dir,
      checkpointKey: checkpoint.key,
      signal: ctx.signal,
      onEpoch: (r) => ctx.log(`epoch ${r.epoch}: loss ${r.loss.toFixed(4)}, val Dice ${Number.isFinite(r.valDice) ? r.valDice.toFixed(4) : "n/a"}`),
      onStep: (done, total) => ctx.emit({ kind: "progress", stage: ctx.stage, task: "training", done, total, unit: "steps" }),
    });
    logResumed(ctx, "prolearn", checkpoint.dir, result);
    const training = {
      ...settings,
      backend: backend.backend,
      bestEpoch: result.bestEpoch,
      bestValDice: result.bestValDice,
      epochsRun: result.epochsRun,
      stoppedEarly: result.stoppedEarly,
    };
    await saveModel(ctx.outDir, "model.json", "weights.bin", "prolearn", config, store, training, { guidance: params.guidance });
    await writeJsonAtomic(
      path.join(ctx.outDir, "history.json"),
      historyJson(result, { trainImages: train.length, valImages: val.length, prototypes: space.count }),
    );
    return {
      trainImages: train.length,
      pairedImages: train.filter((s) => s.report !== null).length,
      valImages: val.length,
      prototypes: space.count,
      guidance: params.guidance,
      ...computedOn(backend),
      ...trainingSummary(result),
      checkpoint: path.basename(checkpoint.dir),
    };
  } finally {
    disposeParams(store);
  }
}
