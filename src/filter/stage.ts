import { z } from "zod";
import { defineStage } from "../pipeline/stage.js";
import { TRAINING_BACKENDS, backendCapabilities } from "../tfjs/names.js";
import { FILTERED_TABLE } from "./tables.js";

// The definition only: the scoring (TensorFlow.js, Parquet) lives in ./run.ts and is
// imported when the stage runs.

export const filterParams = z.strictObject({
  threshold: z
    .union([z.number().min(0).max(1), z.literal("auto")])
    .default("auto")
    .describe(
      "Keep tokens whose relevance (attention averaged over heads, image positions and decoder stages) exceeds this; `auto` = the report's mean relevance, i.e. 1 / (number of tokens): a token is kept when it draws more than a uniform share of attention.",
    ),
  positions: z
    .enum(["lesion", "all"])
    .default("all")
    .describe(
      "Which image positions the attention is averaged over: `all` (default, METHOD.md §2) = every position alike; `lesion` = positions weighted by the sample's ground-truth mask, pooled to each decoder stage's grid (an empty mask counts every position alike): the words the lesion itself reads.",
    ),
  trust: z
    .enum(["check", "always"])
    .default("check")
    .describe(
      "`check` (default): before filtering, measure on the validation pairs within the text budget whether the guide's kept tokens segment as well as the whole report and better than trivial rankings of the same count (most frequent words, rarest words); when they do not, or too few pairs are in the budget, keep every token and say so in the summary (`trust`, `decision`). `always`: apply the threshold whatever the check finds (figures still measured).",
    ),
  tolerance: z
    .number()
    .min(0)
    .max(1)
    .default(0.02)
    .describe("How much validation Dice the kept tokens may lose against the whole report and still be trusted (trust: check)."),
  minValidationPairs: z
    .number()
    .int()
    .min(1)
    .default(8)
    .describe("Fewest validation pairs within the text budget the trust check needs; with fewer the filter keeps every token (trust: check)."),
  batchSize: z.number().int().min(1).default(16).describe("Images per forward pass."),
  backend: z.enum(TRAINING_BACKENDS).default("auto").describe("TensorFlow.js backend (see the guide stage)."),
});
export type FilterParams = z.output<typeof filterParams>;

export const filterStage = defineStage({
  name: "filter",
  version: "3",
  description:
    "Scores each report token by the guide model's cross-attention and keeps the relevant ones (METHOD.md §2 step 2); writes the filtered sentences with per-token scores. Keeps every token when the guide's choice does not beat trivial rankings on the validation pairs within the text budget.",
  params: filterParams,
  inputs: ["ingest", "guide"],
  outputs: ["filtered.parquet"],
  tables: [FILTERED_TABLE],
  // Forced onto a GPU backend, the stage needs a GPU worker on a queue; on auto, any worker.
  capabilities: (params) => backendCapabilities(params.backend),
  run: async (ctx) => (await import("./run.js")).runFilter(ctx),
});
