// Training the learned embed encoder (encoder: learned): the trunk on every training image's mask,
// then the head on the paired training rows. Runs once, in the embed stage's plan step; shards load the result.
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { StageError } from "../errors.js";
import { readParquetFile } from "../io/parquet.js";
import type { StageContext } from "../pipeline/stage.js";
import { checkpointFolderFor, resolveChannels, trainingSummary } from "../segmenter/checkpoints.js";
import { loadSamples, makeBatch } from "../segmenter/data.js";
import { trainSegmenter } from "../segmenter/loop.js";
import { channelsAt, disposeParams, initParams, type NetConfig } from "../segmenter/model.js";
import { deriveSeed } from "../segmenter/prng.js";
import { writeJsonAtomic } from "../segmenter/weights.js";
import { computedOn, initBackend, tf } from "../segmenter/runtime.js";
import { hashJson } from "../util/hash.js";
import type { LearnedHead } from "./encoder-kinds.js";
import { centreRows, crossValidatedAuc, fitStandardizer, foldsOf, pickRows, project, ridge, standardize } from "./learned-head.js";
import { BOTTLENECK_GRID, LEARNED_ENCODER_VERSION, LEARNED_RUN_FILE, MASK_GRIDS, saveLearnedEncoder, trunkFeatures, type TextSide } from "./learned.js";
import { ownReportAucPerRow, mean } from "../prototypes/retrieval.js";
import type { EmbedParams } from "./stage.js";

/** The learned encoder's settings with their defaults filled in. */
export interface LearnedSettings {
  imageSize: number;
  channels: 1 | 3;
  baseChannels: number;
  depth: number;
  epochs: number;
  learningRate: number;
  batchSize: number;
  seed: number;
  head: LearnedHead;
  backend: NonNullable<EmbedParams["backend"]>;
}

export function learnedSettings(ctx: StageContext<EmbedParams>): LearnedSettings {
  const p = ctx.params;
  return {
    imageSize: p.imageSize ?? 64,
    channels: resolveChannels(p.channels ?? "auto", ctx.pipeline),
    baseChannels: p.baseChannels ?? 8,
    depth: p.depth ?? 3,
    epochs: p.epochs ?? 12,
    learningRate: p.learningRate ?? 0.003,
    batchSize: p.trainBatchSize ?? 8,
    seed: p.seed ?? ctx.pipeline.dataset.seed,
    head: p.head ?? "ridge",
    backend: p.backend ?? "auto",
  };
}

/** Relative ridge penalties and mask-block weights the head's cross-validation chooses from. */
const LAMBDAS = [0.03, 0.1, 0.3, 1, 3, 10, 30];
const MASK_WEIGHTS = [0.5, 1, 2, 4];
/** Fewer paired rows than this: no cross-validation, the middle of each grid. */
const MIN_ROWS_FOR_CV = 10;
const FOLDS = 5;

/** The trunk depends on the training images and masks only (never on reports, validation or test masks). */
async function trainImageDigest(samplesFile: string): Promise<string> {
  const table = await readParquetFile(samplesFile, { columns: ["id", "split", "image_sha256", "mask_sha256"] });
  const [id, split, image, mask] = ["id", "split", "image_sha256", "mask_sha256"].map((name) => table.getChild(name)!);
  const rows: string[] = [];
  for (let i = 0; i < table.numRows; i++) if (split!.get(i) === "train") rows.push(`${id!.get(i)}\t${image!.get(i)}\t${mask!.get(i)}`);
  return hashJson(rows);
}

export interface PairedTexts {
  ids: string[];
  texts: string[];
}

/**
 * The paired rows the head aligns on: training images whose (filtered) report is available and
 * embeds to a non-zero vector, as trunk features and text embeddings.
 */
async function pairedRowsOf(
  ctx: StageContext<EmbedParams>,
  train: readonly { id: string }[],
  paired: PairedTexts,
  text: TextSide,
  features: Float32Array,
  width: number,
): Promise<{ pairedFeatures: Float32Array; pairedTexts: Float32Array; n: number }> {
  const rowOf = new Map(train.map((s, i) => [s.id, i]));
  const rows: number[] = [];
  const texts: string[] = [];
  paired.ids.forEach((id, i) => {
    const row = rowOf.get(id);
    if (row !== undefined) {
      rows.push(row);
      texts.push(paired.texts[i]!);
    }
  });
  const embedded = texts.length ? await text.embedTexts(texts) : new Float32Array(0);
  const m = text.dim;
  const keep: number[] = [];
  for (let i = 0; i < texts.length; i++) {
    let norm = 0;
    for (let c = 0; c < m; c++) norm += embedded[i * m + c]! ** 2;
    if (norm > 0) keep.push(i);
  }
  const n = keep.length;
  if (n < 2)
    throw new StageError(ctx.stage, `encoder: learned needs at least 2 training rows with an available report to align its head to the text, found ${n}`, {
      hint: "raise dataset.textAvailability",
    });
  const pairedFeatures = new Float32Array(n * width);
  const pairedTexts = new Float32Array(n * m);
  keep.forEach((k, i) => {
    pairedFeatures.set(features.subarray(rows[k]! * width, (rows[k]! + 1) * width), i * width);
    pairedTexts.set(embedded.subarray(k * m, (k + 1) * m), i * m);
  });
  return { pairedFeatures, pairedTexts, n };
}

/**
 * The head from standardised features `x` to centred texts `y` (paired rows only): ridge with
 * lambda and the mask block's weight chosen by cross-validated own-report AUC, then the
 * contrastive refinement when `head: contrastive`.
 */
async function fitHead(
  x: Float64Array,
  y: Float64Array,
  n: number,
  width: number,
  m: number,
  bottleneckWidth: number,
  settings: LearnedSettings,
): Promise<{
  head: Float64Array;
  best: { lambda: number; maskWeight: number; auc: number };
  selection: Record<string, unknown>;
  grid: { lambda: number; maskWeight: number; auc: number }[];
}> {
  const weighted = (maskWeight: number) => {
    const out = Float64Array.from(x);
    for (let i = 0; i < n; i++) for (let k = bottleneckWidth; k < width; k++) out[i * width + k] *= maskWeight;
    return out;
  };

  // Ridge: lambda and the mask block's weight by cross-validation over the paired rows only.
  const folds = foldsOf(n, Math.min(FOLDS, n), deriveSeed(settings.seed, "learned-head-folds"));
  let best = { lambda: 0.1, maskWeight: 1, auc: Number.NaN };
  const grid: { lambda: number; maskWeight: number; auc: number }[] = [];
  if (n >= MIN_ROWS_FOR_CV) {
    for (const maskWeight of MASK_WEIGHTS) {
      const xw = weighted(maskWeight);
      for (const lambda of LAMBDAS) {
        const auc = crossValidatedAuc(xw, y, n, width, m, folds, (xs, ys, rowsIn) => ridge(xs, ys, rowsIn, width, m, lambda));
        grid.push({ lambda, maskWeight, auc });
        if (!(auc <= best.auc)) best = { lambda, maskWeight, auc };
      }
    }
  }
  const xBest = weighted(best.maskWeight);
  let head = ridge(xBest, y, n, width, m, best.lambda);
  const selection: Record<string, unknown> = {
    pairedRows: n,
    ridge: {
      lambda: best.lambda,
      maskWeight: best.maskWeight,
      crossValidatedAuc: Number.isFinite(best.auc) ? best.auc : null,
      folds: n >= MIN_ROWS_FOR_CV ? Math.min(FOLDS, n) : 0,
    },
  };
  if (settings.head === "contrastive") {
    const result = await fitContrastive(xBest, y, n, width, m, folds, best.lambda, n >= MIN_ROWS_FOR_CV);
    head = result.head;
    selection.contrastive = result.selection;
  }
  return { head, best, selection, grid };
}

/**
 * Trains (or resumes) the trunk, fits the standardisation and the head, and writes
 * learned-encoder.json/.bin into `dir`. `paired` are the training rows with an available
 * (filtered) report; the text encoder embeds them as the embed stage will.
 */
export async function trainLearnedEncoder(ctx: StageContext<EmbedParams>, dir: string, text: TextSide, paired: PairedTexts): Promise<void> {
  const settings = learnedSettings(ctx);
  const samplesFile = ctx.inputs.ingest?.files["samples.parquet"];
  if (!samplesFile) throw new StageError(ctx.stage, "input ingest/samples.parquet is missing");
  const backend = await initBackend(settings.backend, (line) => ctx.log(line));
  // Only the training split is decoded: validation and test masks are never read.
  const train = await loadSamples(samplesFile, {
    size: settings.imageSize,
    channels: settings.channels,
    cache: ctx.rowCache("train-decoded"),
    splits: ["train"],
  });
  if (train.length === 0) throw new StageError(ctx.stage, "encoder: learned needs training images with masks; the train split is empty");
  const net: NetConfig = {
    imageSize: settings.imageSize,
    inChannels: settings.channels,
    baseChannels: settings.baseChannels,
    depth: settings.depth,
    heads: 1,
    tokenDim: null,
  };
  const config = { net, guidance: { kind: "none" as const } };
  const trainSettings = {
    epochs: settings.epochs,
    batchSize: settings.batchSize,
    learningRate: settings.learningRate,
    minLearningRate: settings.learningRate / 300,
    weightDecay: 0.01,
    patience: 0,
    seed: settings.seed,
  };
  const store = initParams(config, settings.seed);
  try {
    const checkpoint = checkpointFolderFor(ctx, "learned-trunk", {
      version: LEARNED_ENCODER_VERSION,
      images: await trainImageDigest(samplesFile),
      net,
      settings: trainSettings,
    });
    const none = () => ({ kind: "none" as const });
    const started = performance.now();
    ctx.log(
      `training the learned encoder's trunk on ${train.length} training images and masks (${settings.imageSize} px, ${settings.epochs} epochs, ${backend.backend})`,
    );
    const trained = await trainSegmenter({
      config,
      store,
      settings: trainSettings,
      trainCount: train.length,
      valCount: 0,
      trainBatch: (ix) => makeBatch(train, ix, none),
      valBatch: () => {
        throw new StageError(ctx.stage, "the learned trunk has no validation split");
      },
      checkpointDir: checkpoint.dir,
      checkpointKey: checkpoint.key,
      signal: ctx.signal,
      onEpoch: (r) => ctx.log(`trunk epoch ${r.epoch}: loss ${r.loss.toFixed(4)} (${r.seconds.toFixed(1)} s)`),
      onStep: (done, total) => ctx.emit({ kind: "progress", stage: ctx.stage, task: "learned encoder: trunk training", done, total, unit: "steps" }),
    });
    const trunkSeconds = (performance.now() - started) / 1000;

    const featuresStarted = performance.now();
    const features = await trunkFeatures(
      store,
      net,
      train.map((s) => s.pixels),
    );
    const bottleneckWidth = BOTTLENECK_GRID[0] * BOTTLENECK_GRID[1] * channelsAt(net, net.depth - 1);
    const width = features.length / train.length;
    const standardizer = fitStandardizer(features, train.length, width, bottleneckWidth, 1);

    const m = text.dim;
    const { pairedFeatures, pairedTexts, n } = await pairedRowsOf(ctx, train, paired, text, features, width);
    const x = standardize(pairedFeatures, n, width, standardizer);
    const { centred: y } = centreRows(pairedTexts, n, m);
    const { head, best, selection, grid } = await fitHead(x, y, n, width, m, bottleneckWidth, settings);
    const scale = Float32Array.from(standardizer.scale, (v, k) => (k >= bottleneckWidth ? v * best.maskWeight : v));
    const headSeconds = (performance.now() - featuresStarted) / 1000;
    ctx.log(
      `learned encoder: ${settings.head} head on ${n} paired training rows, ${width} features -> ${m}-d ${text.id} text space; ` +
        `ridge lambda ${best.lambda}, mask weight ${best.maskWeight}, cross-validated own-report AUC ${Number.isFinite(best.auc) ? best.auc.toFixed(4) : "n/a"}` +
        (settings.head === "contrastive"
          ? `, contrastive ${(selection.contrastive as { crossValidatedAuc: number | null }).crossValidatedAuc?.toFixed(4) ?? "n/a"}`
          : ""),
    );
    await mkdir(dir, { recursive: true });
    // learned-encoder.json becomes a store output, so it holds nothing that differs between two
    // runs of the same inputs: times and resumed epochs go to a sidecar the summary reads.
    const { resumedEpochs, ...deterministicSummary } = trainingSummary(trained);
    await writeJsonAtomic(path.join(dir, LEARNED_RUN_FILE), { trunkSeconds, headSeconds, resumedEpochs });
    await saveLearnedEncoder(
      dir,
      {
        net,
        channels: settings.channels,
        grids: { bottleneck: BOTTLENECK_GRID, mask: MASK_GRIDS },
        featureWidth: width,
        featureMean: Array.from(standardizer.mean),
        featureScale: Array.from(scale),
        head: { kind: settings.head, outputDim: m, selection: { ...selection, grid } },
        text: { id: text.id, dim: text.dim, textDigest: text.textDigest },
        training: { ...deterministicSummary, images: train.length, settings: trainSettings, computedOn: computedOn(backend) },
      },
      store,
      Float32Array.from(head),
    );
  } finally {
    disposeParams(store);
  }
}

/** Soft-target InfoNCE: image i's target over reports j is softmax(cos(t_i, t_j) / TEXT_TEMPERATURE), so identical reports share it. */
const TEMPERATURE = 0.1;
const TEXT_TEMPERATURE = 0.05;
const CONTRASTIVE_STEPS = 300;
const CHECK_EVERY = 25;

/**
 * The contrastive head: starts from the ridge map and minimises a symmetric InfoNCE between the
 * projected features and the centred report embeddings, with soft targets (near-identical
 * reports are not negatives of each other) and the ridge penalty as weight decay. The number of
 * steps is chosen by out-of-fold own-report AUC over the paired rows (0 steps = the ridge map).
 */
async function fitContrastive(
  x: Float64Array,
  y: Float64Array,
  n: number,
  d: number,
  m: number,
  folds: Int32Array,
  lambda: number,
  crossValidate: boolean,
): Promise<{ head: Float64Array; selection: Record<string, unknown> }> {
  const checks = Array.from({ length: CONTRASTIVE_STEPS / CHECK_EVERY + 1 }, (_, i) => i * CHECK_EVERY);
  let bestSteps = CONTRASTIVE_STEPS / 2;
  const curve: { steps: number; auc: number }[] = [];
  if (crossValidate) {
    const predictions = checks.map(() => new Float64Array(n * m));
    const k = Math.max(...folds) + 1;
    for (let f = 0; f < k; f++) {
      const trainRows: number[] = [];
      const heldRows: number[] = [];
      for (let i = 0; i < n; i++) (folds[i] === f ? heldRows : trainRows).push(i);
      if (!heldRows.length || !trainRows.length) continue;
      const xs = pickRows(x, trainRows, d);
      const ys = pickRows(y, trainRows, m);
      const xh = pickRows(x, heldRows, d);
      await contrastiveSteps(xs, ys, trainRows.length, d, m, ridge(xs, ys, trainRows.length, d, m, lambda), lambda, CONTRASTIVE_STEPS, (steps, w) => {
        const c = checks.indexOf(steps);
        if (c < 0) return;
        const p = project(xh, w, heldRows.length, d, m);
        heldRows.forEach((row, i) => predictions[c]!.set(p.subarray(i * m, (i + 1) * m), row * m));
      });
    }
    let bestAuc = -Infinity;
    checks.forEach((steps, c) => {
      const auc = mean(ownReportAucPerRow(predictions[c]!, y, n, m));
      curve.push({ steps, auc });
      if (auc > bestAuc) {
        bestAuc = auc;
        bestSteps = steps;
      }
    });
  }
  const head = await contrastiveSteps(x, y, n, d, m, ridge(x, y, n, d, m, lambda), lambda, bestSteps);
  const chosen = curve.find((c) => c.steps === bestSteps);
  return { head, selection: { steps: bestSteps, temperature: TEMPERATURE, textTemperature: TEXT_TEMPERATURE, crossValidatedAuc: chosen?.auc ?? null, curve } };
}

/** [n, 1] L2 norms from ops whose gradients src/segmenter registers (tf.norm's Pow has none here). */
function rowNorms(t: tf.Tensor): tf.Tensor2D {
  return tf.sqrt(tf.sum(tf.square(t), 1, true)) as tf.Tensor2D;
}

/** Full-batch Adam from the ridge map: nothing random, so no seed. */
async function contrastiveSteps(
  x: Float64Array,
  y: Float64Array,
  n: number,
  d: number,
  m: number,
  start: Float64Array,
  lambda: number,
  steps: number,
  onCheck?: (steps: number, w: Float64Array) => void,
): Promise<Float64Array> {
  let trace = 0;
  for (let i = 0; i < n * d; i++) trace += x[i]! * x[i]!;
  const decay = (lambda * trace) / d / n;
  const xt = tf.tensor2d(Float32Array.from(x), [n, d]);
  const yt = tf.tidy(() => {
    const t = tf.tensor2d(Float32Array.from(y), [n, m]);
    return tf.div(t, tf.add(rowNorms(t), 1e-8));
  });
  const targets = tf.tidy(() => tf.softmax(tf.div(tf.matMul(yt, yt, false, true), TEXT_TEMPERATURE)));
  const w = tf.variable(tf.tensor2d(Float32Array.from(start), [d, m]));
  const optimizer = tf.train.adam(1e-3);
  const read = async () => Float64Array.from((await w.data()) as Float32Array);
  try {
    if (onCheck) onCheck(0, await read());
    for (let step = 1; step <= steps; step++) {
      optimizer.minimize(() =>
        tf.tidy(() => {
          const p = tf.matMul(xt, w as tf.Tensor2D);
          const pn = tf.div(p, tf.add(rowNorms(p), 1e-8));
          const logits = tf.div(tf.matMul(pn, yt, false, true), TEMPERATURE);
          const imageToText = tf.neg(tf.mean(tf.sum(tf.mul(targets, tf.logSoftmax(logits, 1)), 1)));
          const textToImage = tf.neg(tf.mean(tf.sum(tf.mul(tf.transpose(targets), tf.logSoftmax(tf.transpose(logits), 1)), 1)));
          return tf.add(tf.mul(tf.add(imageToText, textToImage), 0.5), tf.mul(tf.sum(tf.square(w)), decay)) as tf.Scalar;
        }),
      );
      if (onCheck && step % CHECK_EVERY === 0) onCheck(step, await read());
    }
    return await read();
  } finally {
    optimizer.dispose();
    w.dispose();
    xt.dispose();
    yt.dispose();
    targets.dispose();
  }
}
