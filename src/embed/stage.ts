import path from "node:path";
import { z } from "zod";
import type { ResolvedPipeline } from "../pipeline/spec.js";
import { defineStage } from "../pipeline/stage.js";
import { biomedclipFolderDigest } from "./biomedclip-manifest.js";
import { EMBED_ENCODERS, ENCODER_KINDS, LEARNED_HEADS } from "./encoder-kinds.js";
import { EMBEDDINGS_TABLE } from "./tables.js";
import { TRAINING_BACKENDS, backendCapabilities } from "../tfjs/names.js";

// The definition only: the encoders (ONNX Runtime, sharp, the tokenizer) and the Parquet work
// live in ./run.ts and are imported when a shard runs.

export const embedParams = z
  .strictObject({
    encoder: z
      .enum(EMBED_ENCODERS)
      .default("builtin")
      .describe(
        "`builtin` (offline, deterministic stand-in: TF-IDF text, zone-statistics image), `biomedclip` (an exported ONNX folder, see docs/embed.md) or `learned` (an image encoder trained here from the training images and masks, with a head aligned to the text embeddings of the paired training rows; see docs/embed.md).",
      ),
    textEncoder: z
      .enum(ENCODER_KINDS)
      .optional()
      .describe("With `encoder: learned`: which encoder embeds the reports, whose embeddings the learned head is aligned to (default builtin)."),
    head: z
      .enum(LEARNED_HEADS)
      .optional()
      .describe(
        "With `encoder: learned`: `ridge` (closed form on centred targets, default; measured best on QaTa, docs/embed.md) or `contrastive` (soft-target InfoNCE fine-tuning of the ridge map).",
      ),
    model: z
      .string()
      .min(1)
      .optional()
      .describe(
        "BiomedCLIP model folder exported by tools/export_biomedclip.py; relative paths resolve from the pipeline file. Required for `biomedclip` (as the encoder or as the learned encoder's textEncoder).",
      ),
    imageSize: z.number().int().min(16).max(1024).optional().describe("With `encoder: learned`: square size the trunk sees (default 64)."),
    channels: z
      .union([z.literal(1), z.literal(3), z.literal("auto")])
      .optional()
      .describe("With `encoder: learned`: input channels (default auto: 3 for kvasir-seg, else 1)."),
    baseChannels: z.number().int().min(2).max(256).optional().describe("With `encoder: learned`: channels of the trunk's first stage (default 8)."),
    depth: z.number().int().min(2).max(6).optional().describe("With `encoder: learned`: encoder stages of the trunk U-Net (default 3)."),
    epochs: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe("With `encoder: learned`: trunk training epochs over every training image (default 12; no early stopping: validation masks are never read)."),
    learningRate: z.number().positive().optional().describe("With `encoder: learned`: trunk AdamW peak learning rate (default 0.003, cosine schedule)."),
    trainBatchSize: z.number().int().min(1).optional().describe("With `encoder: learned`: images per trunk training step (default 8)."),
    seed: z.number().int().min(0).optional().describe("With `encoder: learned`: seed for the trunk and the head (default: dataset.seed)."),
    backend: z.enum(TRAINING_BACKENDS).optional().describe("With `encoder: learned`: TensorFlow.js backend for the trunk (default auto, see the guide stage)."),
    batchSize: z.number().int().min(1).max(4096).default(32).describe("Rows per encoder call."),
    concurrency: z.number().int().min(1).max(64).default(2).describe("Encoder calls in flight at once."),
    dim: z
      .number()
      .int()
      .min(8)
      .max(8192)
      .optional()
      .describe("Embedding width of the builtin encoder (default 512); BiomedCLIP's is fixed by the model (512)."),
    shardRows: z.number().int().min(1).default(2048).describe("Rows per shard; shards may run in parallel on workers. The output does not depend on it."),
  })
  .superRefine((value, ctx) => {
    if (value.encoder !== "learned") {
      for (const key of LEARNED_ONLY)
        if (value[key] !== undefined) ctx.addIssue({ code: "custom", path: [key], message: `\`${key}\` applies to encoder: learned only` });
    }
    if (value.encoder === "learned") {
      const text = value.textEncoder ?? "builtin";
      if (text === "biomedclip" && !value.model)
        ctx.addIssue({ code: "custom", path: ["model"], message: "textEncoder: biomedclip needs `model: <exported folder>`" });
      if (text === "builtin" && value.model !== undefined)
        ctx.addIssue({ code: "custom", path: ["model"], message: "`model` applies to a biomedclip encoder only" });
      if (text === "biomedclip" && value.dim !== undefined)
        ctx.addIssue({ code: "custom", path: ["dim"], message: "`dim` applies to the builtin text encoder only" });
      return;
    }
    if (value.encoder === "biomedclip" && !value.model)
      ctx.addIssue({ code: "custom", path: ["model"], message: "the biomedclip encoder needs `model: <exported folder>`" });
    if (value.encoder === "biomedclip" && value.dim !== undefined)
      ctx.addIssue({ code: "custom", path: ["dim"], message: "`dim` applies to the builtin encoder only; BiomedCLIP's width comes from the model" });
    if (value.encoder === "builtin" && value.model !== undefined)
      ctx.addIssue({ code: "custom", path: ["model"], message: "`model` applies to the biomedclip encoder only" });
  })
  .describe("Image and text embeddings per sample (BiomedCLIP, the builtin stand-in, or an image encoder learned from the dataset), cached per row.");
export type EmbedParams = z.output<typeof embedParams>;

/** Params that configure the learned encoder; optional, so builtin and biomedclip params (and cache keys) are as before. */
const LEARNED_ONLY = [
  "textEncoder",
  "head",
  "imageSize",
  "channels",
  "baseChannels",
  "depth",
  "epochs",
  "learningRate",
  "trainBatchSize",
  "seed",
  "backend",
] as const;

/** The encoder that embeds the reports: the encoder itself, or the learned encoder's textEncoder. */
export function textEncoderKind(params: EmbedParams): "builtin" | "biomedclip" {
  return params.encoder === "learned" ? (params.textEncoder ?? "builtin") : params.encoder;
}

export function modelDir(pipeline: ResolvedPipeline, params: EmbedParams): string {
  return path.resolve(pipeline.baseDir, params.model!);
}

export const embedStage = defineStage({
  name: "embed",
  version: "1",
  description: "Image and text embeddings per sample (BiomedCLIP ONNX, the builtin stand-in, or an image encoder learned from the dataset), cached per row.",
  params: embedParams,
  inputs: ["ingest"],
  optionalInputs: ["filter"],
  // With encoder: learned the stage also writes learned-encoder.json and learned-encoder.bin (the trained weights).
  outputs: ["embeddings.parquet", "encoder.json"],
  tables: [EMBEDDINGS_TABLE],
  nonKeyParams: ["concurrency", "shardRows"],
  // Forced onto a GPU backend, the learned encoder's training needs a GPU worker.
  capabilities: (params) => (params.encoder === "learned" ? backendCapabilities(params.backend ?? "auto") : []),
  async resources(pipeline, params, { digester }): Promise<Record<string, string>> {
    if (textEncoderKind(params) === "biomedclip") return { model: await biomedclipFolderDigest(modelDir(pipeline, params), digester) };
    return {};
  },
  sharding: {
    plan: async (ctx) => (await import("./run.js")).planEmbedShards(ctx),
    runShard: async (ctx, shard, shardDir) => (await import("./run.js")).runEmbedShard(ctx, shard, shardDir),
    merge: async (ctx, shards) => (await import("./run.js")).mergeEmbedShards(ctx, shards),
  },
});
