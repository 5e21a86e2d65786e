// The filter stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import { Bool, Field, Float32, List, Table, Utf8, vectorFromArray } from "apache-arrow";
import path from "node:path";
import { writeParquetFile } from "../io/parquet.js";
import type { StageContext } from "../pipeline/stage.js";
import { disposeParams, inputFile, loadModel } from "../segmenter/checkpoints.js";
import { loadSamples, type DecodedSample } from "../segmenter/data.js";
import type { FilterParams } from "./stage.js";
import { guideTextSide } from "../segmenter/text-side.js";
import { makeBatch } from "../segmenter/data.js";
import type { GuideParams } from "../guide/stage.js";
import { segmenterForward, type BatchGuidance } from "../segmenter/guidance.js";
import type { ModelConfig, ParamStore } from "../segmenter/model.js";
import { initBackend, tf } from "../segmenter/runtime.js";

export interface FilteredRow {
  id: string;
  report: string;
  filteredReport: string;
  tokens: string[];
  scores: number[];
  kept: boolean[];
  threshold: number;
}

/**
 * Per-token relevance for each sample: the guide model's cross-attention weights averaged over
 * heads and image positions (all alike, or weighted by the lesion mask) in each guided decoder
 * stage, then over the stages. Scores of a report's tokens sum to 1 (attention is a softmax
 * over its tokens).
 */
export async function scoreTokens(store: ParamStore, config: ModelConfig, samples: readonly DecodedSample[], guidance: (indices: number[]) => BatchGuidance, tokenCounts: readonly number[], batchSize: number, positions: "lesion" | "all" = "all"): Promise<number[][]> {
  const out: number[][] = [];
  const length = config.guidance.kind === "vocab" || config.guidance.kind === "features" ? config.guidance.maxTokens : 0;
  const size = config.net.imageSize;
  for (let start = 0; start < samples.length; start += batchSize) {
    const indices = Array.from({ length: Math.min(batchSize, samples.length - start) }, (_, i) => start + i);
    const batch = makeBatch(samples, indices, guidance);
    const averagedTensor = tf.tidy(() => {
      const attentionFocus = positions === "lesion" ? tf.tensor4d(batch.masks!, [batch.size, size, size, 1]) : undefined;
      const { attention } = segmenterForward(store, config, batch, { attention: true, attentionFocus });
      return tf.mean(tf.stack(attention!), 0);
    });
    const averaged = (await averagedTensor.data()) as Float32Array;
    averagedTensor.dispose();
    indices.forEach((i, b) => out.push(Array.from(averaged.subarray(b * length, b * length + tokenCounts[i]!))));
  }
  return out;
}

/**
 * Applies the threshold. `auto` uses the report's mean score (1/n for n tokens). A report where
 * no token passes keeps its single best token, so no filtered sentence is empty.
 */
export function applyThreshold(tokens: readonly string[], scores: readonly number[], threshold: number | "auto"): { kept: boolean[]; threshold: number; filtered: string } {
  const effective = threshold === "auto" ? (scores.length ? scores.reduce((a, b) => a + b, 0) / scores.length : 0) : threshold;
  const kept = scores.map((s) => s > effective);
  if (tokens.length > 0 && !kept.some(Boolean)) {
    let best = 0;
    scores.forEach((s, i) => (s > scores[best]! ? (best = i) : undefined));
    kept[best] = true;
  }
  return { kept, threshold: effective, filtered: joinTokens(tokens.filter((_, i) => kept[i])) };
}

/** Joins words with spaces; WordPiece continuations ("##ing") attach to the previous piece. */
export function joinTokens(tokens: readonly string[]): string {
  let out = "";
  for (const t of tokens) out += t.startsWith("##") ? t.slice(2) : out ? ` ${t}` : t;
  return out;
}

export function filteredTable(rows: readonly FilteredRow[]): Table {
  const listOf = (type: Utf8 | Float32 | Bool) => new List(new Field("item", type, true));
  return new Table({
    id: vectorFromArray(rows.map((r) => r.id), new Utf8()),
    report: vectorFromArray(rows.map((r) => r.report), new Utf8()),
    filtered_report: vectorFromArray(rows.map((r) => r.filteredReport), new Utf8()),
    tokens: vectorFromArray(rows.map((r) => r.tokens), listOf(new Utf8())),
    scores: vectorFromArray(rows.map((r) => r.scores), listOf(new Float32())),
    kept: vectorFromArray(rows.map((r) => r.kept), listOf(new Bool())),
    threshold: vectorFromArray(rows.map((r) => r.threshold), new Float32()),
  });
}

export async function runFilter(ctx: StageContext<FilterParams>) {
  await initBackend(ctx.params.backend, (line) => ctx.log(line));
  const { file, store } = await loadModel(inputFile(ctx, "guide", "guide-model.json"));
  try {
    const config = file.config;
    const samples = await loadSamples(inputFile(ctx, "ingest", "samples.parquet"), { size: config.net.imageSize, channels: config.net.inChannels as 1 | 3, cache: ctx.rowCache("train-decoded"), splits: ["train"] });
    const paired = samples.filter((s) => s.report !== null && s.report.trim() !== "");
    const guideParamsUsed = (ctx.pipeline.stages.guide ?? {}) as GuideParams;
    const encoderKind = config.guidance.kind === "features" ? "biomedclip" : "builtin";
    const text = await guideTextSide({ ...guideParamsUsed, encoder: encoderKind } as GuideParams, ctx.pipeline.baseDir, [], config.guidance);
    const encoded = await text.encode(paired).finally(() => text.close());
    const scores = await scoreTokens(store, config, paired, encoded.batch, encoded.tokens.map((t) => t.length), ctx.params.batchSize, ctx.params.positions);
    const rows: FilteredRow[] = paired.map((sample, i) => {
      const tokens = encoded.tokens[i]!;
      const decision = applyThreshold(tokens, scores[i]!, ctx.params.threshold);
      return { id: sample.id, report: sample.report!, filteredReport: decision.filtered, tokens, scores: scores[i]!, kept: decision.kept, threshold: decision.threshold };
    });
    await writeParquetFile(path.join(ctx.outDir, "filtered.parquet"), filteredTable(rows));
    const totalTokens = rows.reduce((n, r) => n + r.tokens.length, 0);
    const keptTokens = rows.reduce((n, r) => n + r.kept.filter(Boolean).length, 0);
    return { reports: rows.length, tokens: totalTokens, keptTokens, keptFraction: totalTokens ? keptTokens / totalTokens : 0, threshold: ctx.params.threshold, positions: ctx.params.positions };
  } finally {
    disposeParams(store);
  }
}
