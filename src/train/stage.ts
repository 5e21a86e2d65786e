import { z } from "zod";
import { backendCapabilities } from "../tfjs/names.js";
import { defineStage } from "../pipeline/stage.js";
import { networkFields, trainingFields } from "../segmenter/params.js";

// The definition only: the training (TensorFlow.js, sharp, Parquet) lives in ./run.ts and
// is imported when the stage runs.

export const trainParams = z.strictObject({
  ...networkFields,
  ...trainingFields,
  guidance: z
    .enum(["psa", "own-report-when-available"])
    .default("psa")
    .describe(
      "Text during training: `psa` = every image uses its PSA-approximated text (the reference code); `own-report-when-available` = images with an available report use its embedding instead. Inference always uses PSA.",
    ),
  topK: z.number().int().min(1).default(3).describe("Prototypes mixed per query (METHOD.md §3)."),
  temperature: z.number().positive().default(1).describe("Softmax temperature T over the top-k cosine similarities."),
  guidanceTokens: z
    .number()
    .int()
    .min(1)
    .max(64)
    .default(4)
    .describe("Guidance tokens a linear layer makes from the approximated text embedding t^ (the decoder attends to these)."),
  tokenDim: z.number().int().min(4).max(1024).default(64).describe("Width of each guidance token."),
});
export type TrainParams = z.output<typeof trainParams>;

export const trainStage = defineStage({
  name: "train",
  version: "2",
  description:
    "Trains the ProLearn segmenter on all training images, with text only through the PSA module (query prototypes frozen, responses learnable); early stopping on validation Dice, resumable checkpoints.",
  params: trainParams,
  inputs: ["ingest", "embed", "prototypes"],
  outputs: ["model.json", "weights.bin", "history.json"],
  // Forced onto a GPU backend, the stage needs a GPU worker on a queue; on auto, any worker.
  capabilities: (params) => backendCapabilities(params.backend),
  run: async (ctx) => (await import("./run.js")).runTrain(ctx),
});
