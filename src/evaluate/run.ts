// The evaluate stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import { Binary, Float32, Int32, Table, Utf8, vectorFromArray } from "apache-arrow";
import path from "node:path";
import { DataError, ModelError } from "../errors.js";
import { writeParquetFile } from "../io/parquet.js";
import { hashJson } from "../util/hash.js";
import { pairedBootstrap } from "../util/bootstrap.js";
import type { StageContext } from "../pipeline/stage.js";
import { checkpointFolderFor, disposeParams, inputFile, loadModel, logResumed, openSeedModels, trainingSummary } from "../segmenter/checkpoints.js";
import { greyPng, loadSamples, makeBatch, pixelsPng, type DecodedSample } from "../segmenter/data.js";
import { psaBatch, psaLookups, readEmbeddings, type PsaLookups, type SampleEmbeddings } from "../segmenter/embeddings.js";
import { loadVerifiedPrototypes } from "../train/prototypes-input.js";
import type { EvaluateParams, Headline, ModelName } from "./stage.js";
import { MODEL_NAMES } from "./stage.js";
import { PrototypeIndex, type BatchGuidance } from "../segmenter/guidance.js";
import { evaluateBatches, trainSegmenter, type TrainSettings } from "../segmenter/loop.js";
import { diceFromCounts, iouFromCounts, overlapCounts, type SegmentationScores } from "../segmenter/metrics.js";
import { initParams, type ModelConfig, type ParamStore } from "../segmenter/model.js";
import { deriveSeed, mulberry32, permutation } from "../segmenter/prng.js";
import { computedOn, initBackend } from "../segmenter/runtime.js";

interface ImageScore {
  id: string;
  model: ModelName;
  seed: number;
  dice: number;
  iou: number;
  intersection: number;
  predicted: number;
  truth: number;
}

/** One model at one seed on the test split. */
interface ModelScore {
  name: ModelName;
  seed: number;
  scores: SegmentationScores;
  /** Per-image Dice in test order (for the paired bootstrap). */
  dice: number[];
}

/** What one trained model reports about its training (resumed epochs show reuse). */
interface TrainingRecord {
  name: ModelName;
  seed: number;
  epochsRun: number;
  bestEpoch: number;
  bestValDice: number | null;
  resumedEpochs: number;
}

function headline(scores: SegmentationScores): Headline {
  return { dice: scores.dice, iou: scores.iou, dicePooled: scores.dicePooled, iouPooled: scores.iouPooled };
}

/** Means of the headline metrics over a model's seeds. */
function seedMean(runs: readonly ModelScore[]): Headline {
  const m = (pick: (s: SegmentationScores) => number) => runs.reduce((sum, r) => sum + pick(r.scores), 0) / runs.length;
  return { dice: m((s) => s.dice), iou: m((s) => s.iou), dicePooled: m((s) => s.dicePooled), iouPooled: m((s) => s.iouPooled) };
}

/** Scores one model on the test samples; keeps per-image rows and, when asked, the first predictions. */
async function scoreModel(
  name: ModelName,
  seed: number,
  config: ModelConfig,
  store: ParamStore,
  test: readonly DecodedSample[],
  batchSize: number,
  guidance: (indices: number[]) => BatchGuidance,
  keep: number,
  perImage: ImageScore[],
): Promise<{ run: ModelScore; predictions: Map<number, Float32Array> }> {
  const predictions = new Map<number, Float32Array>();
  const dice = new Array<number>(test.length).fill(Number.NaN);
  const scores = await evaluateBatches(
    config,
    store,
    test.length,
    batchSize,
    (indices) => makeBatch(test, indices, guidance),
    (i, p) => {
      const counts = overlapCounts(p, test[i]!.mask);
      dice[i] = diceFromCounts(counts);
      perImage.push({
        id: test[i]!.id,
        model: name,
        seed,
        dice: dice[i]!,
        iou: iouFromCounts(counts),
        intersection: counts.intersection,
        predicted: counts.predicted,
        truth: counts.truth,
      });
      if (i < keep) predictions.set(i, Float32Array.from(p));
    },
  );
  return { run: { name, seed, scores, dice }, predictions };
}

/**
 * A derangement of 0..n-1 (no image keeps its own lookup), seeded: a permutation whose fixed
 * points are swapped with their successor.
 */
export function derangement(n: number, seed: number): number[] {
  const order = permutation(mulberry32(seed), n);
  if (n < 2) return order;
  for (let i = 0; i < n; i++) {
    if (order[i] === i) {
      const j = (i + 1) % n;
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
  }
  return order;
}

/** The lookups of `source` rearranged: image i gets the lookup of image order[i]. */
export function shuffledLookups(source: PsaLookups, order: readonly number[], topK: number): PsaLookups {
  const indices = new Int32Array(source.indices.length);
  const weights = new Float32Array(source.weights.length);
  order.forEach((from, to) => {
    indices.set(source.indices.subarray(from * topK, (from + 1) * topK), to * topK);
    weights.set(source.weights.subarray(from * topK, (from + 1) * topK), to * topK);
  });
  return { indices, weights, own: null, useOwn: null };
}

/** `base` with a text vector per image where `text(sample)` gives one (used instead of PSA's t^). */
function withText(
  base: PsaLookups,
  samples: readonly DecodedSample[],
  dim: number,
  text: (sample: DecodedSample) => Float32Array | undefined,
): { lookups: PsaLookups; used: number } {
  const own = new Float32Array(samples.length * dim);
  const useOwn = new Float32Array(samples.length);
  let used = 0;
  samples.forEach((s, i) => {
    const vector = text(s);
    if (!vector) return;
    own.set(vector, i * dim);
    useOwn[i] = 1;
    used++;
  });
  return { lookups: { indices: base.indices, weights: base.weights, own, useOwn }, used };
}

/** Mean text embedding of the training samples with an available report. */
function meanTrainingText(train: readonly DecodedSample[], embeddings: SampleEmbeddings, dim: number): Float32Array | null {
  const mean = new Float32Array(dim);
  let n = 0;
  for (const s of train) {
    const t = s.report !== null ? embeddings.text.get(s.id) : undefined;
    if (!t) continue;
    for (let d = 0; d < dim; d++) mean[d]! += t[d]!;
    n++;
  }
  if (n === 0) return null;
  for (let d = 0; d < dim; d++) mean[d]! /= n;
  return mean;
}

/**
 * The baseline stage's U-Nets, when this run scores them: null for `baseline: none`, and for
 * `auto` in a pipeline without the stage; `unet` without the stage is an error that says how to add it.
 */
async function openBaseline(ctx: StageContext<EvaluateParams>) {
  if (ctx.params.baseline === "none") return null;
  const input = ctx.inputs.baseline;
  if (!input) {
    if (ctx.params.baseline === "unet")
      throw new ModelError("evaluate.baseline is unet, but the pipeline has no baseline stage to train the image-only U-Net", {
        hint: "add `baseline: {}` under stages (it trains the U-Net with the train stage's network and budget), or set evaluate.baseline: auto",
      });
    return null;
  }
  const models = await openSeedModels(inputFile(ctx, "baseline", "models.json"));
  const resumed = new Map(((input.summary.models as { seed: number; resumedEpochs?: number }[] | undefined) ?? []).map((m) => [m.seed, m.resumedEpochs ?? 0]));
  return { ...models, resumed };
}

/**
 * A U-Net trained with another network or budget than ProLearn is not a like-for-like baseline
 * (the baseline stage takes the train stage's; this catches a model from elsewhere or an edited file).
 */
function baselineBudgetDiffers(baseline: ModelConfig, prolearn: ModelConfig, baselineSettings: TrainSettings, prolearnSettings: TrainSettings): string[] {
  const differs: string[] = [];
  for (const key of ["imageSize", "inChannels", "baseChannels", "depth"] as const)
    if (baseline.net[key] !== prolearn.net[key]) differs.push(`${key} ${baseline.net[key]} vs ${prolearn.net[key]}`);
  for (const key of ["epochs", "batchSize", "learningRate", "minLearningRate", "weightDecay", "patience"] as const)
    if (baselineSettings[key] !== prolearnSettings[key]) differs.push(`${key} ${baselineSettings[key]} vs ${prolearnSettings[key]}`);
  return differs;
}

/** What every model evaluate trains shares: the splits, the budget, and where scores and trainings go. */
interface Scoring {
  ctx: StageContext<EvaluateParams>;
  train: readonly DecodedSample[];
  val: readonly DecodedSample[];
  test: readonly DecodedSample[];
  baseSettings: TrainSettings;
  firstSeed: number;
  /** Test images whose predictions the first seed keeps for examples.parquet. */
  keep: number;
  perImage: ImageScore[];
  runs: ModelScore[];
  trainings: TrainingRecord[];
}

type TrainAndScoreArgs = [
  name: ModelName,
  seed: number,
  modelConfig: ModelConfig,
  external: Record<string, Float32Array> | undefined,
  /** What the training depends on besides the network and settings: its checkpoint's key. */
  work: Record<string, unknown>,
  batches: { train: (ix: number[]) => BatchGuidance; val: (ix: number[]) => BatchGuidance; test: (ix: number[]) => BatchGuidance },
  /** ProLearn's further seeds are also scored with shuffled lookups (the shuffled-psa control). */
  shuffledTest?: (ix: number[]) => BatchGuidance,
];

/** Trains one model with the train stage's budget (resuming its checkpoint), scores it on the test split, disposes it. */
async function trainAndScoreModel(
  run: Scoring,
  ...[name, seed, modelConfig, external, work, batches, shuffledTest]: TrainAndScoreArgs
): Promise<{ summary: Record<string, unknown>; predictions: Map<number, Float32Array> }> {
  const { ctx, train, val, test } = run;
  const settings = { ...run.baseSettings, seed };
  const store = initParams(modelConfig, seed, external);
  try {
    const checkpoint = checkpointFolderFor(ctx, `${name}-seed-${seed}`, { ...work, net: modelConfig.net, settings });
    const trained = await trainSegmenter({
      config: modelConfig,
      store,
      settings,
      trainCount: train.length,
      valCount: val.length,
      trainBatch: (ix) => makeBatch(train, ix, batches.train),
      valBatch: (ix) => makeBatch(val, ix, batches.val),
      checkpointDir: checkpoint.dir,
      checkpointKey: checkpoint.key,
      signal: ctx.signal,
      onEpoch: (r) =>
        ctx.log(`${name} seed ${seed} epoch ${r.epoch}: loss ${r.loss.toFixed(4)}, val Dice ${Number.isFinite(r.valDice) ? r.valDice.toFixed(4) : "n/a"}`),
      onStep: (done, total) => ctx.emit({ kind: "progress", stage: ctx.stage, task: `${name} training (seed ${seed})`, done, total, unit: "steps" }),
    });
    logResumed(ctx, `${name} (seed ${seed})`, checkpoint.dir, trained);
    const summary: Record<string, unknown> = { ...trainingSummary(trained), checkpoint: path.basename(checkpoint.dir) };
    run.trainings.push({
      name,
      seed,
      epochsRun: trained.epochsRun,
      bestEpoch: trained.bestEpoch,
      bestValDice: summary.bestValDice as number | null,
      resumedEpochs: trained.resumedEpochs,
    });
    const batchSize = ctx.params.batchSize;
    const scored = await scoreModel(name, seed, modelConfig, store, test, batchSize, batches.test, seed === run.firstSeed ? run.keep : 0, run.perImage);
    run.runs.push(scored.run);
    if (shuffledTest) run.runs.push((await scoreModel("shuffled-psa", seed, modelConfig, store, test, batchSize, shuffledTest, 0, run.perImage)).run);
    return { summary, predictions: scored.predictions };
  } finally {
    disposeParams(store);
  }
}

/**
 * The train stage's model (its variables: the caller disposes them), the decoded splits, the
 * embeddings and the verified prototype space. Fails on a model without PSA or an empty test split.
 */
async function loadEvaluationInputs(ctx: StageContext<EvaluateParams>) {
  const { file: modelFile, store: trainedStore } = await loadModel(inputFile(ctx, "train", "model.json"));
  const config = modelFile.config;
  const samplesFile = inputFile(ctx, "ingest", "samples.parquet");
  const embeddingsFile = inputFile(ctx, "embed", "embeddings.parquet");
  try {
    if (config.guidance.kind !== "psa") throw new ModelError(`evaluate needs a ProLearn (PSA) model, got ${config.guidance.kind}`);
    const [samples, embeddings, space] = await Promise.all([
      loadSamples(samplesFile, {
        size: config.net.imageSize,
        channels: config.net.inChannels as 1 | 3,
        cache: ctx.rowCache("train-decoded"),
        splits: ["train", "val", "test"],
      }),
      readEmbeddings(embeddingsFile),
      // The space ProLearn's further seeds and the controls start from, through the same verified
      // artifact path as the train stage.
      loadVerifiedPrototypes(ctx),
    ]);
    const test = samples.filter((s) => s.split === "test");
    if (test.length === 0) throw new DataError("the test split is empty", { location: { file: samplesFile } });
    const train = samples.filter((s) => s.split === "train");
    const val = samples.filter((s) => s.split === "val");
    return { modelFile, trainedStore, train, val, test, embeddings, space, embeddingsFile };
  } catch (error) {
    disposeParams(trainedStore);
    throw error;
  }
}

export async function runEvaluate(ctx: StageContext<EvaluateParams>) {
  const params = ctx.params;
  const baselineModels = await openBaseline(ctx);
  const backend = await initBackend(params.backend, (line) => ctx.log(line));
  const { modelFile, trainedStore, train, val, test, embeddings, space, embeddingsFile } = await loadEvaluationInputs(ctx);
  const config = modelFile.config;
  const psa = config.guidance as Extract<ModelConfig["guidance"], { kind: "psa" }>;
  const { backend: _backend, bestEpoch: _b, bestValDice: _v, epochsRun: _e, stoppedEarly: _s, ...trainedSettings } = modelFile.training;
  const baseSettings: TrainSettings = trainedSettings;
  const seeds = Array.from({ length: params.seeds }, (_, j) => baseSettings.seed + j);
  const controls = new Set(params.controls);
  const { topK, embeddingDim: dim } = psa;

  // Inference is image-only: the PSA query uses the model's own (frozen) query prototypes and
  // its learned responses, never the test reports. The queries are the same for every seed.
  const index = new PrototypeIndex(space.queries, space.dim);
  const testLookups = psaLookups(test, embeddings, index, topK, psa.temperature, false, embeddingsFile);
  const shuffled = shuffledLookups(testLookups, derangement(test.length, deriveSeed(ctx.pipeline.dataset.seed, "shuffled-psa")), topK);
  const psaOf = (lookups: PsaLookups) => (ix: number[]) => psaBatch(lookups, topK, dim, ix);
  const none = (): BatchGuidance => ({ kind: "none" });

  const perImage: ImageScore[] = [];
  const runs: ModelScore[] = [];
  const trainings: TrainingRecord[] = [];
  const keep = Math.min(params.examples, test.length);
  let prolearnPredictions = new Map<number, Float32Array>();
  let baselinePredictions = new Map<number, Float32Array>();
  const missingBaselineSeeds: number[] = [];

  const scoring: Scoring = { ctx, train, val, test, baseSettings, firstSeed: seeds[0]!, keep, perImage, runs, trainings };
  const trainAndScore = (...args: TrainAndScoreArgs) => trainAndScoreModel(scoring, ...args);

  const psaInit = { "psa.query": space.queries, "psa.response": space.responses };
  const ownReports = modelFile.extra?.guidance === "own-report-when-available";
  const trainPsa = psaLookups(train, embeddings, index, topK, psa.temperature, ownReports, embeddingsFile);
  const valPsa = psaLookups(val, embeddings, index, topK, psa.temperature, false, embeddingsFile);
  const meanText = controls.has("mean-text") ? meanTrainingText(train, embeddings, dim) : null;
  const ownReport = controls.has("own-report")
    ? ownReportGuidance(embeddings, dim, { train, val, test }, { train: trainPsa, val: valPsa, test: testLookups }, psaOf)
    : null;
  const ownReportMissing = ownReport?.missing ?? 0;
  try {
    if (controls.has("mean-text") && !meanText)
      throw new ModelError("control mean-text needs at least one training report with a text embedding", {
        hint: "raise dataset.textAvailability, or drop mean-text from evaluate.controls",
      });
    for (const seed of seeds) {
      // ProLearn: the train stage's model at the first seed; further seeds are trained here with
      // its settings (same PSA lookups, same prototypes), so the seeds differ only in init and order.
      if (seed === seeds[0]) {
        const scored = await scoreModel("prolearn", seed, config, trainedStore, test, params.batchSize, psaOf(testLookups), keep, perImage);
        runs.push(scored.run);
        prolearnPredictions = scored.predictions;
        if (controls.has("shuffled-psa"))
          runs.push((await scoreModel("shuffled-psa", seed, config, trainedStore, test, params.batchSize, psaOf(shuffled), 0, perImage)).run);
      } else {
        await trainAndScore(
          "prolearn",
          seed,
          config,
          psaInit,
          { train: ctx.inputs.train?.digest },
          { train: psaOf(trainPsa), val: psaOf(valPsa), test: psaOf(testLookups) },
          controls.has("shuffled-psa") ? psaOf(shuffled) : undefined,
        );
      }

      if (baselineModels) {
        const store = baselineModels.load(seed);
        if (!store) missingBaselineSeeds.push(seed);
        else {
          try {
            const scored = await scoreModel(
              "unet",
              seed,
              baselineModels.file.config,
              store,
              test,
              params.batchSize,
              none,
              seed === seeds[0] ? keep : 0,
              perImage,
            );
            runs.push(scored.run);
            if (seed === seeds[0]) baselinePredictions = scored.predictions;
          } finally {
            disposeParams(store);
          }
        }
      }

      if (meanText) {
        // One constant text for every image, in training, validation and test: the network and
        // budget of ProLearn with the information of the reports taken out.
        const constant = (samplesOf: readonly DecodedSample[], base: PsaLookups) => psaOf(withText(base, samplesOf, dim, () => meanText).lookups);
        await trainAndScore(
          "mean-text",
          seed,
          config,
          psaInit,
          { meanText: hashJson(Array.from(meanText)), ingest: ctx.inputs.ingest?.digest },
          { train: constant(train, trainPsa), val: constant(val, valPsa), test: constant(test, testLookups) },
        );
      }

      if (controls.has("image-embedding")) {
        // Each image's own image embedding (PSA's query) in place of t^, in training, validation
        // and test: what the image encoder knows of the image, and no report looked up.
        const ownImage = (samplesOf: readonly DecodedSample[], base: PsaLookups) =>
          psaOf(withText(base, samplesOf, dim, (s) => embeddings.image.get(s.id)).lookups);
        await trainAndScore(
          "image-embedding",
          seed,
          config,
          psaInit,
          { ingest: ctx.inputs.ingest?.digest, embed: ctx.inputs.embed?.digest },
          { train: ownImage(train, trainPsa), val: ownImage(val, valPsa), test: ownImage(test, testLookups) },
        );
      }

      if (ownReport)
        await trainAndScore(
          "own-report",
          seed,
          config,
          psaInit,
          { ingest: ctx.inputs.ingest?.digest, embed: ctx.inputs.embed?.digest, prototypes: ctx.inputs.prototypes?.digest },
          ownReport.batches,
        );
    }
  } finally {
    disposeParams(trainedStore);
  }
  const baselineTraining = baselineModels ? noteBaseline(ctx, baselineModels, config, baseSettings, seeds, missingBaselineSeeds, trainings) : null;
  if (ownReportMissing > 0) ctx.log(`own-report: ${ownReportMissing} test images have no report embedding and use PSA's t^ instead`);

  // Runs in a fixed order: models as in MODEL_NAMES, then seeds.
  runs.sort((a, b) => MODEL_NAMES.indexOf(a.name) - MODEL_NAMES.indexOf(b.name) || a.seed - b.seed);
  perImage.sort((a, b) => MODEL_NAMES.indexOf(a.model) - MODEL_NAMES.indexOf(b.model) || a.seed - b.seed);
  const availability = ctx.pipeline.dataset.textAvailability;
  await writeScoreTables(ctx.outDir, runs, perImage, availability);
  await writeExamples(ctx.outDir, test, keep, config, prolearnPredictions, baselinePredictions);

  const byModel = new Map<ModelName, ModelScore[]>();
  for (const r of runs) byModel.set(r.name, [...(byModel.get(r.name) ?? []), r]);
  const paired = pairedComparisons(byModel, test.length, { seed: deriveSeed(ctx.pipeline.dataset.seed, "evaluate-paired"), resamples: params.resamples });
  const prolearn = seedMean(byModel.get("prolearn")!);
  const baseline = byModel.has("unet") ? seedMean(byModel.get("unet")!) : null;
  const controlHeadlines = Object.fromEntries([...byModel].filter(([name]) => name !== "prolearn" && name !== "unet").map(([name, r]) => [name, seedMean(r)]));
  return {
    testImages: test.length,
    textAvailability: availability,
    seeds,
    models: runs.map((r) => ({ name: r.name, seed: r.seed, ...headline(r.scores) })),
    paired,
    // Seed means, for the one-line headline and `prolearn sweep`.
    prolearn,
    baseline,
    controls: controlHeadlines,
    baselineTraining,
    trainings,
    ownReportMissing,
    // What ran inference and trained the baseline.
    ...computedOn(backend),
    // One line for `prolearn run` / `demo` to print under the run (render.ts: formatRunSummary).
    headline: headlineText(test.length, prolearn, baseline, controlHeadlines, seeds.length),
  };
}

/**
 * The own-report control's text: each image's own report where the run may use one (training
 * reports within the budget, PSA's t^ for the others; validation reports within the budget, as
 * early stopping is a choice; every test report: the upper bound, what ProLearn approximates).
 * `missing` counts test images without a report embedding (they keep t^).
 */
function ownReportGuidance(
  embeddings: SampleEmbeddings,
  dim: number,
  splits: Record<"train" | "val" | "test", readonly DecodedSample[]>,
  lookups: Record<"train" | "val" | "test", PsaLookups>,
  psaOf: (lookups: PsaLookups) => (ix: number[]) => BatchGuidance,
) {
  const textOf = (use: (s: DecodedSample) => boolean) => (s: DecodedSample) => (use(s) ? embeddings.text.get(s.id) : undefined);
  const withReport = textOf((s) => s.report !== null);
  const test = withText(lookups.test, splits.test, dim, withReport);
  return {
    missing: splits.test.length - test.used,
    batches: {
      train: psaOf(withText(lookups.train, splits.train, dim, withReport).lookups),
      val: psaOf(
        withText(
          lookups.val,
          splits.val,
          dim,
          textOf((s) => s.inBudget),
        ).lookups,
      ),
      test: psaOf(test.lookups),
    },
  };
}

/**
 * What evaluate says of the baseline stage's U-Nets: their training joins `trainings`; a budget
 * unlike ProLearn's, or seeds evaluate scores that the stage did not train, are warnings. Returns
 * the first seed's training record (the summary's `baselineTraining`).
 */
function noteBaseline(
  ctx: StageContext<EvaluateParams>,
  baseline: NonNullable<Awaited<ReturnType<typeof openBaseline>>>,
  prolearn: ModelConfig,
  prolearnSettings: TrainSettings,
  seeds: readonly number[],
  missingSeeds: readonly number[],
  trainings: TrainingRecord[],
): Record<string, unknown> | null {
  const scored = baseline.file.models.filter((m) => seeds.includes(m.seed));
  for (const m of scored)
    trainings.push({
      name: "unet",
      seed: m.seed,
      epochsRun: m.training.epochsRun,
      bestEpoch: m.training.bestEpoch,
      bestValDice: m.training.bestValDice,
      resumedEpochs: baseline.resumed.get(m.seed) ?? 0,
    });
  if (missingSeeds.length)
    ctx.warn(
      "baseline-seeds",
      `the baseline stage trained the U-Net at seed${baseline.file.models.length === 1 ? "" : "s"} ${baseline.file.models.map((m) => m.seed).join(", ")}; evaluate scores seeds ${seeds.join(", ")}, so model unet lacks seed${missingSeeds.length === 1 ? "" : "s"} ${missingSeeds.join(", ")} (set baseline.seeds: ${seeds.length})`,
      { baselineSeeds: baseline.file.models.length, evaluateSeeds: seeds.length },
    );
  const first = baseline.file.models[0];
  if (first) {
    const differs = baselineBudgetDiffers(baseline.file.config, prolearn, first.training, prolearnSettings);
    if (differs.length)
      ctx.warn("baseline-budget-differs", `the image-only U-Net was trained with another network or budget than ProLearn: ${differs.join(", ")}`, {
        differences: differs.length,
      });
  }
  const firstScored = scored[0];
  if (!firstScored) return null;
  const { epochsRun, bestEpoch, bestValDice, stoppedEarly } = firstScored.training;
  return { seed: firstScored.seed, epochsRun, bestEpoch, bestValDice, stoppedEarly, resumedEpochs: baseline.resumed.get(firstScored.seed) ?? 0 };
}

/** metrics.parquet (one row per model and seed) and per_image.parquet (one row per model, seed and test image). */
async function writeScoreTables(outDir: string, runs: readonly ModelScore[], perImage: readonly ImageScore[], availability: number): Promise<void> {
  await writeParquetFile(
    path.join(outDir, "metrics.parquet"),
    new Table({
      model: vectorFromArray(
        runs.map((m) => m.name),
        new Utf8(),
      ),
      seed: vectorFromArray(
        runs.map((m) => m.seed),
        new Int32(),
      ),
      dice: vectorFromArray(
        runs.map((m) => m.scores.dice),
        new Float32(),
      ),
      iou: vectorFromArray(
        runs.map((m) => m.scores.iou),
        new Float32(),
      ),
      dice_pooled: vectorFromArray(
        runs.map((m) => m.scores.dicePooled),
        new Float32(),
      ),
      iou_pooled: vectorFromArray(
        runs.map((m) => m.scores.iouPooled),
        new Float32(),
      ),
      images: vectorFromArray(
        runs.map((m) => m.scores.images),
        new Int32(),
      ),
      text_availability: vectorFromArray(
        runs.map(() => availability),
        new Float32(),
      ),
    }),
  );
  await writeParquetFile(
    path.join(outDir, "per_image.parquet"),
    new Table({
      id: vectorFromArray(
        perImage.map((r) => r.id),
        new Utf8(),
      ),
      model: vectorFromArray(
        perImage.map((r) => r.model),
        new Utf8(),
      ),
      seed: vectorFromArray(
        perImage.map((r) => r.seed),
        new Int32(),
      ),
      dice: vectorFromArray(
        perImage.map((r) => r.dice),
        new Float32(),
      ),
      iou: vectorFromArray(
        perImage.map((r) => r.iou),
        new Float32(),
      ),
      intersection: vectorFromArray(
        perImage.map((r) => r.intersection),
        new Int32(),
      ),
      predicted_pixels: vectorFromArray(
        perImage.map((r) => r.predicted),
        new Int32(),
      ),
      truth_pixels: vectorFromArray(
        perImage.map((r) => r.truth),
        new Int32(),
      ),
    }),
  );
}

/** examples.parquet: the first test images with ProLearn's (and the U-Net's) prediction at the first seed, as PNG. */
async function writeExamples(
  outDir: string,
  test: readonly DecodedSample[],
  keep: number,
  config: ModelConfig,
  prolearnPredictions: ReadonlyMap<number, Float32Array>,
  baselinePredictions: ReadonlyMap<number, Float32Array>,
): Promise<void> {
  const channels = config.net.inChannels as 1 | 3;
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
    path.join(outDir, "examples.parquet"),
    new Table({
      id: vectorFromArray(
        examples.map((e) => e.id),
        new Utf8(),
      ),
      image: vectorFromArray(
        examples.map((e) => e.image),
        new Binary(),
      ),
      mask: vectorFromArray(
        examples.map((e) => e.mask),
        new Binary(),
      ),
      prediction: vectorFromArray(
        examples.map((e) => e.prediction),
        new Binary(),
      ),
      baseline_prediction: vectorFromArray(
        examples.map((e) => e.baseline),
        new Binary(),
      ),
    }),
  );
}

export interface PairedComparison {
  a: ModelName;
  b: ModelName;
  meanDiff: number;
  ci95: [number, number];
}

/**
 * ProLearn against every other model: per test image, each model's Dice averaged over its seeds
 * (seeds pooled), then the paired bootstrap of the difference over test images.
 */
export function pairedComparisons(
  byModel: ReadonlyMap<ModelName, readonly ModelScore[]>,
  images: number,
  options: { seed: number; resamples: number },
): PairedComparison[] {
  const perImageMean = (runs: readonly ModelScore[]) => Array.from({ length: images }, (_, i) => runs.reduce((s, r) => s + r.dice[i]!, 0) / runs.length);
  const a = byModel.get("prolearn");
  if (!a) return [];
  const aDice = perImageMean(a);
  return MODEL_NAMES.filter((name) => name !== "prolearn" && byModel.has(name)).map((b) => {
    const result = pairedBootstrap(aDice, perImageMean(byModel.get(b)!), { seed: deriveSeed(options.seed, b), resamples: options.resamples });
    return { a: "prolearn", b, meanDiff: result.meanDiff, ci95: result.ci95 };
  });
}

const LABELS: Record<ModelName, string> = {
  prolearn: "ProLearn",
  unet: "image-only U-Net",
  "shuffled-psa": "shuffled PSA",
  "image-embedding": "own image embedding",
  "mean-text": "mean text",
  "own-report": "own report",
};

/** "test Dice / IoU on 23 images, per-image mean: ProLearn 0.834 / 0.725 (pooled ...); image-only U-Net ...; own report ..." */
function headlineText(images: number, prolearn: Headline, baseline: Headline | null, controls: Record<string, Headline>, seeds: number): string {
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : "n/a");
  const part = (label: string, s: Headline) => `${label} ${f(s.dice)} / ${f(s.iou)} (pooled ${f(s.dicePooled)} / ${f(s.iouPooled)})`;
  const parts = [
    part("ProLearn", prolearn),
    ...(baseline ? [part("image-only U-Net", baseline)] : []),
    ...Object.entries(controls).map(([name, s]) => part(LABELS[name as ModelName], s)),
  ];
  return `test Dice / IoU on ${images} images, per-image mean${seeds > 1 ? ` over ${seeds} seeds` : ""}: ${parts.join("; ")}`;
}
