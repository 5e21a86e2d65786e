import path from "node:path";
import { z } from "zod";
import type { ResolvedPipeline } from "../pipeline/spec.js";
import { defineStage } from "../pipeline/stage.js";
import { biomedclipFolderDigest } from "./biomedclip-manifest.js";
import { ENCODER_KINDS } from "./encoder-kinds.js";
import { EMBEDDINGS_TABLE } from "./tables.js";

// The definition only: the encoders (ONNX Runtime, sharp, the tokenizer) and the Parquet work
// live in ./run.ts and are imported when a shard runs.

export const embedParams = z
  .strictObject({
    encoder: z.enum(ENCODER_KINDS).default("builtin").describe("`builtin` (offline, deterministic stand-in: TF-IDF text, zone-statistics image) or `biomedclip` (an exported ONNX folder, see docs/embed.md)."),
    model: z.string().min(1).optional().describe("BiomedCLIP model folder exported by tools/export_biomedclip.py; relative paths resolve from the pipeline file. Required for `biomedclip`."),
    batchSize: z.number().int().min(1).max(4096).default(32).describe("Rows per encoder call."),
    concurrency: z.number().int().min(1).max(64).default(2).describe("Encoder calls in flight at once."),
    dim: z.number().int().min(8).max(8192).optional().describe("Embedding width of the builtin encoder (default 512); BiomedCLIP's is fixed by the model (512)."),
    shardRows: z.number().int().min(1).default(2048).describe("Rows per shard; shards may run in parallel on workers. The output does not depend on it."),
  })
  .superRefine((value, ctx) => {
    if (value.encoder === "biomedclip" && !value.model) ctx.addIssue({ code: "custom", path: ["model"], message: "the biomedclip encoder needs `model: <exported folder>`" });
    if (value.encoder === "biomedclip" && value.dim !== undefined) ctx.addIssue({ code: "custom", path: ["dim"], message: "`dim` applies to the builtin encoder only; BiomedCLIP's width comes from the model" });
    if (value.encoder === "builtin" && value.model !== undefined) ctx.addIssue({ code: "custom", path: ["model"], message: "`model` applies to the biomedclip encoder only" });
  })
  .describe("Image and text embeddings per sample (BiomedCLIP or the builtin stand-in), cached per row.");
export type EmbedParams = z.output<typeof embedParams>;

export function modelDir(pipeline: ResolvedPipeline, params: EmbedParams): string {
  return path.resolve(pipeline.baseDir, params.model!);
}

export const embedStage = defineStage({
  name: "embed",
  version: "1",
  description: "Image and text embeddings per sample (BiomedCLIP ONNX or the builtin stand-in), cached per row.",
  params: embedParams,
  inputs: ["ingest"],
  optionalInputs: ["filter"],
  outputs: ["embeddings.parquet", "encoder.json"],
  tables: [EMBEDDINGS_TABLE],
  nonKeyParams: ["concurrency", "shardRows"],
  async resources(pipeline, params, { digester }): Promise<Record<string, string>> {
    if (params.encoder === "biomedclip") return { model: await biomedclipFolderDigest(modelDir(pipeline, params), digester) };
    return {};
  },
  sharding: {
    plan: async (ctx) => (await import("./run.js")).planEmbedShards(ctx),
    runShard: async (ctx, shard, shardDir) => (await import("./run.js")).runEmbedShard(ctx, shard, shardDir),
    merge: async (ctx, shards) => (await import("./run.js")).mergeEmbedShards(ctx, shards),
  },
});
