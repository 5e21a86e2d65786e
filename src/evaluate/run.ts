// The evaluate stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import { Binary, Float32, Int32, Table, Utf8, vectorFromArray } from "apache-arrow";
import path from "node:path";
import { DataError, ModelError } from "../errors.js";
import { readParquetFile, writeParquetFile } from "../io/parquet.js";
import { hashJson } from "../util/hash.js";
import type { StageContext } from "../pipeline/stage.js";
import { checkpointFolderFor, disposeParams, historyJson, inputFile, loadModel, trainingSummary, logResumed } from "../segmenter/checkpoints.js";
import { writeJsonAtomic } from "../segmenter/weights.js";
import { greyPng, loadSamples, pixelsPng, type DecodedSample } from "../segmenter/data.js";
import { psaBatch, psaLookups, readEmbeddings } from "../segmenter/embeddings.js";
import type { EvaluateParams, Headline } from "./stage.js";
import { makeBatch } from "../segmenter/data.js";
import { PrototypeIndex } from "../segmenter/guidance.js";
import { evaluateBatches, trainSegmenter } from "../segmenter/loop.js";
import { diceFromCounts, iouFromCounts, overlapCounts, type SegmentationScores } from "../segmenter/metrics.js";
import { initParams, type ModelConfig, type ParamStore } from "../segmenter/model.js";
import { computedOn, initBackend } from "../segmenter/runtime.js";

interface ImageScore {
  id: string;
  model: string;
  dice: number;
  iou: number;
  intersection: number;
  predicted: number;
  truth: number;
}

function headline(scores: SegmentationScores): Headline {
  return { dice: scores.dice, iou: scores.iou, dicePooled: scores.dicePooled, iouPooled: scores.iouPooled };
}

/** Scores one model on the test samples; keeps per-image rows and the first predictions. */
async function scoreModel(name: string, config: ModelConfig, store: ParamStore, test: readonly DecodedSample[], batchSize: number, guidance: Parameters<typeof makeBatch>[2], keep: number, perImage: ImageScore[]): Promise<{ scores: SegmentationScores; predictions: Map<number, Float32Array> }> {
  const predictions = new Map<number, Float32Array>();
  const scores = await evaluateBatches(config, store, test.length, batchSize, (indices) => makeBatch(test, indices, guidance), (i, p) => {
    const counts = overlapCounts(p, test[i]!.mask);
    perImage.push({ id: test[i]!.id, model: name, dice: diceFromCounts(counts), iou: iouFromCounts(counts), intersection: counts.intersection, predicted: counts.predicted, truth: counts.truth });
    if (i < keep) predictions.set(i, Float32Array.from(p));
  });
  return { scores, predictions };
}

export async function runEvaluate(ctx: StageContext<EvaluateParams>) {
  const params = ctx.params;
  const backend = await initBackend(params.backend, (line) => ctx.log(line));
  const { file: modelFile, store } = await loadModel(inputFile(ctx, "train", "model.json"));
  const config = modelFile.config;
  if (config.guidance.kind !== "psa") throw new ModelError(`evaluate needs a ProLearn (PSA) model, got ${config.guidance.kind}`);
  const psa = config.guidance;
  const channels = config.net.inChannels as 1 | 3;
  const samplesFile = inputFile(ctx, "ingest", "samples.parquet");
  const embeddingsFile = inputFile(ctx, "embed", "embeddings.parquet");
  const [samples, embeddings] = await Promise.all([
    loadSamples(samplesFile, { size: config.net.imageSize, channels, cache: ctx.rowCache("train-decoded"), splits: ["train", "val", "test"] }),
    readEmbeddings(embeddingsFile),
  ]);
  const test = samples.filter((s) => s.split === "test");
  if (test.length === 0) throw new DataError("the test split is empty", { location: { file: samplesFile } });
  // Inference is image-only: the PSA query uses the model's own (frozen) query prototypes and
  // its learned responses, never the test reports.
  const queries = (await store.get("psa.query")!.variable.data()) as Float32Array;
  const index = new PrototypeIndex(Float32Array.from(queries), psa.embeddingDim);
  const testLookups = psaLookups(test, embeddings, index, psa.topK, psa.temperature, false, embeddingsFile);
  const perImage: ImageScore[] = [];
  const keep = Math.min(params.examples, test.length);
  const metrics: { model: string; scores: SegmentationScores }[] = [];
  let prolearnPredictions: Map<number, Float32Array>;
  try {
    const result = await scoreModel("prolearn", config, store, test, params.batchSize, (ix) => psaBatch(testLookups, psa.topK, psa.embeddingDim, ix), keep, perImage);
    metrics.push({ model: "prolearn", scores: result.scores });
    prolearnPredictions = result.predictions;
  } finally {
    disposeParams(store);
  }

  let baselinePredictions = new Map<number, Float32Array>();
  let baselineTraining: Record<string, unknown> | null = null;
  if (params.baseline === "unet") {
    const baselineConfig: ModelConfig = { net: { ...config.net, tokenDim: null }, guidance: { kind: "none" } };
    const { backend: _backend, bestEpoch: _b, bestValDice: _v, epochsRun: _e, stoppedEarly: _s, ...settings } = modelFile.training;
    const baselineStore = initParams(baselineConfig, settings.seed);
    const train = samples.filter((s) => s.split === "train");
    const val = samples.filter((s) => s.split === "val");
    const none = () => ({ kind: "none" as const });
    // The baseline's training depends on the training and validation images and masks, the
    // network and the budget: not on evaluate's own params, the ProLearn weights, nor on which
    // reports are available, so a text-availability sweep trains it once and resumes it after.
    const images = await imageSetDigest(samplesFile);
    const checkpoint = checkpointFolderFor(ctx, "baseline-unet", { images, net: baselineConfig.net, settings });
    try {
      const trained = await trainSegmenter({
        config: baselineConfig,
        store: baselineStore,
        settings,
        trainCount: train.length,
        valCount: val.length,
        trainBatch: (ix) => makeBatch(train, ix, none),
        valBatch: (ix) => makeBatch(val, ix, none),
        checkpointDir: checkpoint.dir,
        checkpointKey: checkpoint.key,
        signal: ctx.signal,
        onEpoch: (r) => ctx.log(`baseline epoch ${r.epoch}: loss ${r.loss.toFixed(4)}, val Dice ${Number.isFinite(r.valDice) ? r.valDice.toFixed(4) : "n/a"}`),
        onStep: (done, total) => ctx.emit({ kind: "progress", stage: ctx.stage, task: "baseline U-Net training", done, total, unit: "steps" }),
      });
      logResumed(ctx, "baseline-unet", checkpoint.dir, trained);
      // The baseline's learning curves, for the report (undeclared: absent when there is no baseline).
      await writeJsonAtomic(path.join(ctx.outDir, "baseline-history.json"), historyJson(trained, { model: "image-only U-Net" }));
      baselineTraining = { ...trainingSummary(trained), checkpoint: path.basename(checkpoint.dir) };
      const result = await scoreModel("baseline", baselineConfig, baselineStore, test, params.batchSize, none, keep, perImage);
      metrics.push({ model: "baseline", scores: result.scores });
      baselinePredictions = result.predictions;
    } finally {
      disposeParams(baselineStore);
    }
  }

  const availability = ctx.pipeline.dataset.textAvailability;
  await writeParquetFile(
    path.join(ctx.outDir, "metrics.parquet"),
    new Table({
      model: vectorFromArray(metrics.map((m) => m.model), new Utf8()),
      dice: vectorFromArray(metrics.map((m) => m.scores.dice), new Float32()),
      iou: vectorFromArray(metrics.map((m) => m.scores.iou), new Float32()),
      dice_pooled: vectorFromArray(metrics.map((m) => m.scores.dicePooled), new Float32()),
      iou_pooled: vectorFromArray(metrics.map((m) => m.scores.iouPooled), new Float32()),
      images: vectorFromArray(metrics.map((m) => m.scores.images), new Int32()),
      text_availability: vectorFromArray(metrics.map(() => availability), new Float32()),
    }),
  );
  await writeParquetFile(
    path.join(ctx.outDir, "per_image.parquet"),
    new Table({
      id: vectorFromArray(perImage.map((r) => r.id), new Utf8()),
      model: vectorFromArray(perImage.map((r) => r.model), new Utf8()),
      dice: vectorFromArray(perImage.map((r) => r.dice), new Float32()),
      iou: vectorFromArray(perImage.map((r) => r.iou), new Float32()),
      intersection: vectorFromArray(perImage.map((r) => r.intersection), new Int32()),
      predicted_pixels: vectorFromArray(perImage.map((r) => r.predicted), new Int32()),
      truth_pixels: vectorFromArray(perImage.map((r) => r.truth), new Int32()),
    }),
  );
  const size = config.net.imageSize;
  const examples = await Promise.all(
    Array.from({ length: keep }, async (_, i) => ({
      id: test[i]!.id,
      image: await pixelsPng(test[i]!.pixels, size, channels),
      mask: await greyPng(test[i]!.mask, size),
      prediction: await greyPng(prolearnPredictions.get(i)!, size),
      baseline: baselinePredictions.has(i) ? await greyPng(baselinePredictions.get(i)!, size) : null,
    })),
  );
  await writeParquetFile(
    path.join(ctx.outDir, "examples.parquet"),
    new Table({
      id: vectorFromArray(examples.map((e) => e.id), new Utf8()),
      image: vectorFromArray(examples.map((e) => e.image), new Binary()),
      mask: vectorFromArray(examples.map((e) => e.mask), new Binary()),
      prediction: vectorFromArray(examples.map((e) => e.prediction), new Binary()),
      baseline_prediction: vectorFromArray(examples.map((e) => e.baseline), new Binary()),
    }),
  );
  const byModel = new Map(metrics.map((m) => [m.model, m.scores]));
  const prolearn = headline(byModel.get("prolearn")!);
  const baseline = byModel.has("baseline") ? headline(byModel.get("baseline")!) : null;
  return {
    testImages: test.length,
    textAvailability: availability,
    prolearn,
    baseline,
    baselineTraining,
    // What ran inference and trained the baseline.
    ...computedOn(backend),
    // One line for `prolearn run` / `demo` to print under the run (render.ts: formatRunSummary).
    headline: headlineText(test.length, prolearn, baseline),
  };
}

/** "test Dice / IoU on 23 images, per-image mean: ProLearn 0.834 / 0.725 (pooled ...); image-only U-Net ..." */
function headlineText(images: number, prolearn: Headline, baseline: Headline | null): string {
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : "n/a");
  const part = (label: string, s: Headline) => `${label} ${f(s.dice)} / ${f(s.iou)} (pooled ${f(s.dicePooled)} / ${f(s.iouPooled)})`;
  const parts = [part("ProLearn", prolearn), ...(baseline ? [part("image-only U-Net", baseline)] : [])];
  return `test Dice / IoU on ${images} images, per-image mean: ${parts.join("; ")}`;
}

/** Digest of the images and masks of the train and val splits, in table order (what an image-only model learns from). */
async function imageSetDigest(samplesFile: string): Promise<string> {
  const table = await readParquetFile(samplesFile, { columns: ["id", "split", "image_sha256", "mask_sha256"] });
  const rows: string[] = [];
  const [id, split, image, mask] = ["id", "split", "image_sha256", "mask_sha256"].map((name) => table.getChild(name)!);
  for (let i = 0; i < table.numRows; i++) {
    const s = split!.get(i) as string;
    if (s === "train" || s === "val") rows.push(`${id!.get(i)}\t${s}\t${image!.get(i)}\t${mask!.get(i)}`);
  }
  return hashJson(rows);
}
