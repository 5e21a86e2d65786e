// The guide stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import path from "node:path";
import { ModelError } from "../errors.js";
import type { StageContext } from "../pipeline/stage.js";
import {
  checkpointFolder,
  historyJson,
  inputFile,
  resolveChannels,
  saveModel,
  trainingSummary,
  trainSettings,
  disposeParams,
  logResumed,
} from "../segmenter/checkpoints.js";
import { blankedBatches, budgetedPairs, loadSamples, makeBatch } from "../segmenter/data.js";
import { guideTextSide } from "../segmenter/text-side.js";
import type { GuideParams } from "./stage.js";
import { guideChanceWarning } from "./checks.js";
import { trainSegmenter } from "../segmenter/loop.js";
import { initParams, type ModelConfig } from "../segmenter/model.js";
import { computedOn, initBackend } from "../segmenter/runtime.js";
import { writeJsonAtomic } from "../segmenter/weights.js";

export async function runGuide(ctx: StageContext<GuideParams>) {
  const params = ctx.params;
  const backend = await initBackend(params.backend, (line) => ctx.log(line));
  const channels = resolveChannels(params.channels, ctx.pipeline);
  const samples = await loadSamples(inputFile(ctx, "ingest", "samples.parquet"), {
    size: params.imageSize,
    channels,
    cache: ctx.rowCache("train-decoded"),
    splits: ["train", "val"],
  });
  // The text budget (docs/training.md): the guide learns from the available training reports and
  // stops early on the validation reports within the budget, never on the others.
  const paired = budgetedPairs(samples, "train");
  const val = budgetedPairs(samples, "val");
  if (paired.length === 0) {
    throw new ModelError("no training sample has an available report: the guide model has nothing to learn from", {
      hint: "raise dataset.textAvailability above 0",
    });
  }
  const text = await guideTextSide(
    params,
    ctx.pipeline.baseDir,
    paired.map((s) => s.report!),
  );
  let trainText: Awaited<ReturnType<typeof text.encode>>;
  let valText: Awaited<ReturnType<typeof text.encode>>;
  try {
    trainText = await text.encode(paired);
    valText = await text.encode(val);
  } finally {
    await text.close();
  }
  const tokenDim = text.guidance.kind === "vocab" ? text.guidance.tokenDim : text.guidance.kind === "features" ? text.guidance.featureDim : 0;
  const config: ModelConfig = {
    net: { imageSize: params.imageSize, inChannels: channels, baseChannels: params.baseChannels, depth: params.depth, heads: params.heads, tokenDim },
    guidance: text.guidance,
  };
  const settings = trainSettings(params, ctx.pipeline);
  const store = initParams(config, settings.seed);
  const checkpoint = checkpointFolder(ctx, "guide");
  ctx.log(
    `${paired.length} paired training samples, ${val.length} validation samples within the text budget${val.length === 0 ? " (no early stopping: every epoch runs)" : ""}, checkpoints in ${checkpoint.dir}`,
  );
  try {
    const result = await trainSegmenter({
      config,
      store,
      settings,
      trainCount: paired.length,
      valCount: val.length,
      trainBatch: blankedBatches(paired, trainText.batch, params.imageDropout, settings.seed),
      valBatch: (indices) => makeBatch(val, indices, valText.batch),
      checkpointDir: checkpoint.dir,
      checkpointKey: checkpoint.key,
      signal: ctx.signal,
      onEpoch: (r) => ctx.log(`epoch ${r.epoch}: loss ${r.loss.toFixed(4)}, val Dice ${Number.isFinite(r.valDice) ? r.valDice.toFixed(4) : "n/a"}`),
      onStep: (done, total) => ctx.emit({ kind: "progress", stage: ctx.stage, task: "training", done, total, unit: "steps" }),
    });
    logResumed(ctx, "guide", checkpoint.dir, result);
    await saveModel(ctx.outDir, "guide-model.json", "guide-weights.bin", "guide", config, store, {
      ...settings,
      backend: backend.backend,
      bestEpoch: result.bestEpoch,
      bestValDice: result.bestValDice,
      epochsRun: result.epochsRun,
      stoppedEarly: result.stoppedEarly,
    });
    await writeJsonAtomic(path.join(ctx.outDir, "guide-history.json"), historyJson(result, { pairedSamples: paired.length, valSamples: val.length }));
    const chance = guideChanceWarning(
      result.bestValDice,
      val.map((s) => s.mask),
    );
    if (chance) ctx.warn(chance.code, chance.message, chance.figures);
    return {
      pairedSamples: paired.length,
      valSamples: val.length,
      guidance: text.guidance.kind === "vocab" ? { kind: "vocab", words: text.guidance.vocab.length } : { kind: text.guidance.kind },
      // What computed: in the catalog and the report, not in the model files, whose bytes stay
      // the same on any machine that runs the same backend.
      ...computedOn(backend),
      ...trainingSummary(result),
      // For `prolearn gc`: the checkpoint folder this output came from is kept while the output is.
      checkpoint: path.basename(checkpoint.dir),
    };
  } finally {
    disposeParams(store);
  }
}
