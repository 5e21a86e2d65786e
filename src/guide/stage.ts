import path from "node:path";
import { z } from "zod";
import { biomedclipFolderDigest } from "../embed/biomedclip-manifest.js";
import { backendCapabilities } from "../tfjs/names.js";
import { defineStage } from "../pipeline/stage.js";
import { networkFields, trainingFields } from "../segmenter/params.js";

// The definition only: the training (TensorFlow.js, sharp, Parquet) lives in ./run.ts and
// is imported when the stage runs, so planning a pipeline never loads it.

export const guideParams = z.strictObject({
  ...networkFields,
  ...trainingFields,
  encoder: z
    .enum(["builtin", "biomedclip"])
    .default("builtin")
    .describe(
      "Token features: `builtin` = learned embeddings over the words of the paired training reports; `biomedclip` = the text tower's hidden states (needs `model`).",
    ),
  model: z
    .string()
    .min(1)
    .optional()
    .describe("BiomedCLIP folder with the exported text hidden states (encoder: biomedclip); relative paths resolve from the pipeline file."),
  tokenDim: z.number().int().min(4).max(1024).default(64).describe("Width of the learned word embeddings (encoder: builtin)."),
  maxTokens: z
    .number()
    .int()
    .min(4)
    .max(512)
    .default(256)
    .describe("Report tokens the guide model reads (BiomedCLIP's context is 256); longer reports are cut."),
  minWordCount: z.number().int().min(1).default(1).describe("Words seen fewer times in the paired training reports map to <unk> (encoder: builtin)."),
  imageDropout: z
    .number()
    .min(0)
    .max(0.9)
    .default(0)
    .describe(
      "Share of training images blanked (seeded per epoch and sample) so the guide must segment them from the report alone, pushing its cross-attention onto the words that say where the lesion is. Experimental: it helped on one generated dataset and not on another (docs/training.md). Validation images are never blanked.",
    ),
});
export type GuideParams = z.output<typeof guideParams>;

export const guideStage = defineStage({
  name: "guide",
  version: "4",
  description:
    "Trains the language-guided U-Net with token-level report features on the paired training samples (the model whose cross-attention scores report tokens for filtering).",
  params: guideParams,
  inputs: ["ingest"],
  outputs: ["guide-model.json", "guide-weights.bin", "guide-history.json"],
  // Forced onto a GPU backend, the stage needs a GPU worker on a queue; on auto, any worker.
  capabilities: (params) => backendCapabilities(params.backend),
  async resources(pipeline, params, { digester }): Promise<Record<string, string>> {
    if (params.encoder !== "biomedclip" || !params.model) return {};
    return { model: await biomedclipFolderDigest(path.resolve(pipeline.baseDir, params.model), digester) };
  },
  run: async (ctx) => (await import("./run.js")).runGuide(ctx),
});
