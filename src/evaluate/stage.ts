import { z } from "zod";
import { defineStage } from "../pipeline/stage.js";
import { TRAINING_BACKENDS, backendCapabilities } from "../tfjs/names.js";
import { EXAMPLES_TABLE, METRICS_TABLE, PER_IMAGE_TABLE } from "./tables.js";

// The definition only: scoring and the baseline's training (TensorFlow.js, sharp, Parquet) live
// in ./run.ts and are imported when the stage runs.

export const evaluateParams = z.strictObject({
  baseline: z.enum(["unet", "none"]).default("unet").describe("`unet` also trains the image-only U-Net (same network without guidance, same training budget and seed) and scores it; `none` skips it."),
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
  version: "3",
  description: "Scores the ProLearn segmenter on the test split with image-only inference through PSA (Dice and IoU, per-image mean and pooled), next to an image-only U-Net trained with the same budget.",
  params: evaluateParams,
  inputs: ["ingest", "embed", "prototypes", "train"],
  outputs: ["metrics.parquet", "per_image.parquet", "examples.parquet"],
  tables: [METRICS_TABLE, PER_IMAGE_TABLE, EXAMPLES_TABLE],
  // Forced onto a GPU backend, the stage needs a GPU worker on a queue; on auto, any worker.
  capabilities: (params) => backendCapabilities(params.backend),
  run: async (ctx) => (await import("./run.js")).runEvaluate(ctx),
});
