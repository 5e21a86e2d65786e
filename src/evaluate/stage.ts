import { z } from "zod";
import { defineStage } from "../pipeline/stage.js";
import { TRAINING_BACKENDS, backendCapabilities } from "../tfjs/names.js";
import { EXAMPLES_TABLE, METRICS_TABLE, PER_IMAGE_TABLE } from "./tables.js";

// The definition only: scoring and the baseline's training (TensorFlow.js, sharp, Parquet) live
// in ./run.ts and are imported when the stage runs.

/** The controls evaluate can score beside ProLearn (docs/training.md, "Controls"). */
export const CONTROLS = ["shuffled-psa", "mean-text", "image-embedding", "own-report"] as const;
export type ControlName = (typeof CONTROLS)[number];
/** The controls scored unless `controls` says otherwise (image-embedding is asked for by name). */
export const DEFAULT_CONTROLS: readonly ControlName[] = ["shuffled-psa", "mean-text", "own-report"];
/** Every model a summary can list, in the order the stage scores them. */
export const MODEL_NAMES = ["prolearn", "unet", ...CONTROLS] as const;
export type ModelName = (typeof MODEL_NAMES)[number];

export const evaluateParams = z.strictObject({
  baseline: z
    .enum(["auto", "unet", "none"])
    .default("auto")
    .describe(
      "The image-only U-Net, model `unet`, is trained by the `baseline` stage (same network without guidance, the train stage's budget and seeds) and scored here: `auto` scores it when the pipeline has that stage; `unet` requires the stage (and says how to add it); `none` never scores it.",
    ),
  controls: z
    .array(z.enum(CONTROLS))
    .default([...DEFAULT_CONTROLS])
    .describe(
      "Controls scored beside ProLearn: `shuffled-psa` = the ProLearn model with each test image given another test image's PSA lookup (no training); `mean-text` = the same network trained and tested with one constant text, the mean embedding of the available training reports; `image-embedding` (not in the default list) = the same network trained and tested with each image's own image embedding (PSA's query) in place of t^: what the image encoder knows of the image, with no report looked up, which separates a learned encoder's own knowledge from the text's; `own-report` = the same network trained with each image's own report where available (PSA elsewhere) and tested with each test image's own report, the upper bound.",
    ),
  seeds: z
    .number()
    .int()
    .min(1)
    .max(20)
    .default(1)
    .describe(
      "Train and score every model with this many seeds (the train stage's seed, then seed + 1, ...); ProLearn's extra seeds are trained here with the train stage's settings.",
    ),
  resamples: z.number().int().min(100).max(100000).default(2000).describe("Paired bootstrap resamples over test images for the `paired` confidence intervals."),
  examples: z.number().int().min(0).max(64).default(4).describe("Test samples written to examples.parquet with their predictions."),
  batchSize: z.number().int().min(1).default(16).describe("Images per forward pass."),
  backend: z.enum(TRAINING_BACKENDS).default("auto").describe("TensorFlow.js backend (see the guide stage)."),
});
export type EvaluateParams = z.output<typeof evaluateParams>;

export interface Headline {
  dice: number;
  iou: number;
  dicePooled: number;
  iouPooled: number;
}

export const evaluateStage = defineStage({
  name: "evaluate",
  version: "5",
  description:
    "Scores the ProLearn segmenter on the test split with image-only inference through PSA (Dice and IoU, per-image mean and pooled), next to the baseline stage's image-only U-Net and text controls (shuffled PSA, mean text, own report) trained with the same budget, over seeds, with paired bootstrap intervals.",
  params: evaluateParams,
  inputs: ["ingest", "embed", "prototypes", "train"],
  optionalInputs: ["baseline"],
  outputs: ["metrics.parquet", "per_image.parquet", "examples.parquet"],
  tables: [METRICS_TABLE, PER_IMAGE_TABLE, EXAMPLES_TABLE],
  // Forced onto a GPU backend, the stage needs a GPU worker on a queue; on auto, any worker.
  capabilities: (params) => backendCapabilities(params.backend),
  run: async (ctx) => (await import("./run.js")).runEvaluate(ctx),
});
