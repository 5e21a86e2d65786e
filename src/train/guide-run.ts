// The guide stage's implementation; its definition (./guide-stage.ts) imports this module when the stage runs.
import path from "node:path";
import { ModelError } from "../errors.js";
import type { StageContext } from "../pipeline/stage.js";
import { checkpointFolder, historyJson, inputFile, resolveChannels, saveModel, trainingSummary, trainSettings, disposeParams } from "./common.js";
import { loadSamples, stackBatch, type DecodedSample } from "./data.js";
import type { Batch, BatchGuidance } from "./guidance.js";
import type { GuideParams } from "./guide-stage.js";
import { trainSegmenter } from "./loop.js";
import { deriveSeed, mulberry32 } from "./prng.js";
import { initParams, type ModelConfig } from "./model.js";
import { computedOn, initBackend } from "./runtime.js";
import { buildVocabulary, encodeReport, vocabularyIndex } from "./text.js";
import { writeJsonAtomic } from "./weights.js";

export interface GuideTextSide {
  guidance: ModelConfig["guidance"];
  /** Guidance of the given samples (same order as `samples`). */
  encode(samples: readonly DecodedSample[]): Promise<{ batch: (indices: number[]) => BatchGuidance; tokens: string[][] }>;
  /** Releases the encoder (ONNX sessions) once every encode call is done. */
  close(): Promise<void>;
}

/** The text side of the guide model: word vocabulary (builtin) or encoder hidden states (biomedclip). */
export async function guideTextSide(params: GuideParams, baseDir: string, pairedReports: readonly string[], existing?: ModelConfig["guidance"]): Promise<GuideTextSide> {
  if (params.encoder === "builtin") {
    const guidance = existing && existing.kind === "vocab" ? existing : { kind: "vocab" as const, vocab: buildVocabulary(pairedReports, { minCount: params.minWordCount }), tokenDim: params.tokenDim, maxTokens: params.maxTokens };
    if (guidance.kind !== "vocab") throw new ModelError("guide model kind mismatch");
    const index = vocabularyIndex(guidance.vocab);
    return {
      guidance,
      close: async () => {},
      async encode(samples) {
        const encoded = samples.map((s) => encodeReport(s.report ?? "", index, guidance.maxTokens));
        const batch = (indices: number[]): BatchGuidance => {
          const ids = new Int32Array(indices.length * guidance.maxTokens);
          indices.forEach((i, b) => ids.set(encoded[i]!.ids, b * guidance.maxTokens));
          return { kind: "vocab", ids };
        };
        return { batch, tokens: encoded.map((e) => e.words) };
      },
    };
  }
  if (!params.model) throw new ModelError("guide encoder biomedclip needs `model` (the exported BiomedCLIP folder)", { location: { keyPath: "stages.guide.model" } });
  const { createEncoder } = await import("../embed/factory.js");
  const encoder = await createEncoder({ encoder: "biomedclip", model: path.resolve(baseDir, params.model) });
  if (!encoder.tokenFeatures) {
    await encoder.close();
    throw new ModelError(`encoder ${encoder.id} exposes no token features`, { hint: "export the text hidden states with tools/export_biomedclip.py, or use encoder: builtin" });
  }
  const probe = await encoder.tokenFeatures(["probe"]);
  const guidance = { kind: "features" as const, featureDim: probe.width, maxTokens: Math.min(params.maxTokens, probe.length), encoder: encoder.id };
  return {
    guidance,
    close: () => encoder.close(),
    async encode(samples) {
      const features = await encoder.tokenFeatures!(samples.map((s) => s.report ?? ""));
      const { length, width } = features;
      const L = guidance.maxTokens;
      const batch = (indices: number[]): BatchGuidance => {
        const values = new Float32Array(indices.length * L * width);
        const mask = new Float32Array(indices.length * L);
        indices.forEach((i, b) => {
          values.set(features.features.subarray(i * length * width, i * length * width + L * width), b * L * width);
          for (let t = 0; t < L; t++) mask[b * L + t] = features.mask[i * length + t]!;
        });
        return { kind: "features", values, mask };
      };
      return { batch, tokens: features.tokens.map((t) => t.slice(0, L)) };
    },
  };
}

/**
 * Training batches of the guide with a seeded share of images blanked (all zeros). Which images
 * are blanked depends on (seed, epoch, sample), so a resumed run blanks the same ones as an
 * uninterrupted run.
 */
export function blankedBatches(samples: readonly DecodedSample[], guidance: (indices: number[]) => BatchGuidance, share: number, seed: number): (indices: number[], epoch: number) => Batch {
  return (indices, epoch) => {
    const batch = makeBatch(samples, indices, guidance);
    if (share <= 0) return batch;
    const pixels = batch.images.length / batch.size;
    indices.forEach((sample, b) => {
      if (mulberry32(deriveSeed(seed, "image-dropout", epoch, sample))() < share) batch.images.fill(0, b * pixels, (b + 1) * pixels);
    });
    return batch;
  };
}

export function makeBatch(samples: readonly DecodedSample[], indices: number[], guidance: (indices: number[]) => BatchGuidance): Batch {
  const { images, masks } = stackBatch(indices.map((i) => samples[i]!));
  return { size: indices.length, images, masks, guidance: guidance(indices) };
}

export async function runGuide(ctx: StageContext<GuideParams>) {
  const params = ctx.params;
  const backend = await initBackend(params.backend, (line) => ctx.log(line));
  const channels = resolveChannels(params.channels, ctx.pipeline);
  const samples = await loadSamples(inputFile(ctx, "ingest", "samples.parquet"), { size: params.imageSize, channels, cache: ctx.rowCache("train-decoded"), splits: ["train", "val"] });
  const paired = samples.filter((s) => s.split === "train" && s.report !== null && s.report.trim() !== "");
  const val = samples.filter((s) => s.split === "val" && s.report !== null && s.report.trim() !== "");
  if (paired.length === 0) {
    throw new ModelError("no training sample has an available report: the guide model has nothing to learn from", { hint: "raise dataset.textAvailability above 0" });
  }
  const text = await guideTextSide(params, ctx.pipeline.baseDir, paired.map((s) => s.report!));
  let trainText, valText;
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
  ctx.log(`guide: ${paired.length} paired training samples, ${val.length} validation samples, checkpoints in ${checkpoint.dir}`);
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
      onEpoch: (r) => ctx.log(`guide epoch ${r.epoch}: loss ${r.loss.toFixed(4)}, val Dice ${Number.isFinite(r.valDice) ? r.valDice.toFixed(4) : "n/a"}`),
      onStep: (done, total) => ctx.emit({ kind: "progress", stage: ctx.stage, task: "guide training", done, total, unit: "steps" }),
    });
    await saveModel(ctx.outDir, "guide-model.json", "guide-weights.bin", "guide", config, store, { ...settings, backend: backend.backend, bestEpoch: result.bestEpoch, bestValDice: result.bestValDice, epochsRun: result.epochsRun, stoppedEarly: result.stoppedEarly });
    await writeJsonAtomic(path.join(ctx.outDir, "guide-history.json"), historyJson(result, { pairedSamples: paired.length, valSamples: val.length }));
    return {
      pairedSamples: paired.length,
      valSamples: val.length,
      guidance: text.guidance.kind === "vocab" ? { kind: "vocab", words: text.guidance.vocab.length } : { kind: text.guidance.kind },
      // What computed: in the catalog and the report, not in the model files, whose bytes stay
      // the same on any machine that runs the same backend.
      ...computedOn(backend),
      ...trainingSummary(result),
    };
  } finally {
    disposeParams(store);
  }
}
