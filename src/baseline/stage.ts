import { z } from "zod";
import { defineStage } from "../pipeline/stage.js";
import { trainBudget } from "../segmenter/params.js";
import { TRAINING_BACKENDS, backendCapabilities } from "../tfjs/names.js";
import { hashJson } from "../util/hash.js";

// The definition only: the training (TensorFlow.js, sharp, Parquet) lives in ./run.ts and is
// imported when the stage runs.

export const baselineParams = z.strictObject({
  seeds: z
    .number()
    .int()
    .min(1)
    .max(20)
    .default(1)
    .describe("U-Nets to train: the train stage's seed, then seed + 1, ... (evaluate scores the ones its own `seeds` names; give both the same number)."),
  backend: z.enum(TRAINING_BACKENDS).default("auto").describe("TensorFlow.js backend (see the guide stage)."),
});
export type BaselineParams = z.output<typeof baselineParams>;

export const baselineStage = defineStage({
  name: "baseline",
  version: "1",
  description:
    "Trains the image-only U-Net (ProLearn's network without guidance) on the training images and masks with the train stage's network and budget, one model per seed, for evaluate to score beside ProLearn. It reads no report, so a text-availability sweep trains it once.",
  params: baselineParams,
  // images.parquet holds the digests of the image and mask bytes of samples.parquet and no text:
  // the key follows the images and masks the U-Net learns from (the stage reads their bytes from
  // samples.parquet and checks them against it), and not the reports.
  inputs: ["ingest:images.parquet"],
  datasetSettings: ["kind", "layout", "seed"],
  outputs: ["models.json", "weights.bin", "history.json"],
  // The network and budget are the train stage's (segmenter/params.ts: trainBudget), so they are
  // part of the key as a resource: change train's epochs and the baseline retrains too.
  async resources(pipeline) {
    return { "train-budget": hashJson(trainBudget(pipeline)) };
  },
  capabilities: (params) => backendCapabilities(params.backend),
  run: async (ctx) => (await import("./run.js")).runBaseline(ctx),
});
