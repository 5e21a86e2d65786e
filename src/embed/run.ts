// The embed stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import { copyFile, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { Bool, type RecordBatch, Table, Utf8, vectorFromArray } from "apache-arrow";
import { DataError, StageError } from "../errors.js";
import { readParquetFile, writeParquetBatches, writeParquetFile } from "../io/parquet.js";
import type { ShardSpec, StageContext } from "../pipeline/stage.js";
import { hashJson, sha256 } from "../util/hash.js";
import { embeddingVector, readEmbeddingColumn, readTable } from "../io/tables.js";
import { FILTERED_TABLE } from "../filter/tables.js";
import { SAMPLES_TABLE } from "../ingest/tables.js";
import { embedInBatches } from "./batches.js";
import type { Encoder } from "./encoder.js";
import { createEncoder } from "./factory.js";
import { modelDir, textEncoderKind, type EmbedParams } from "./stage.js";
import { checkpointFolderFor } from "../segmenter/checkpoints.js";
import {
  hasLearnedEncoder,
  LEARNED_ENCODER_FILE,
  LEARNED_ENCODER_VERSION,
  LEARNED_RUN_FILE,
  LEARNED_WEIGHTS_FILE,
  LearnedEncoder,
  type LearnedEncoderFile,
} from "./learned.js";

const OUTPUT_ROW_GROUP = 1024;

/** What the stage embeds for each sample; a pure function of the input tables. */
interface RowPlan {
  ids: string[];
  splits: string[];
  available: boolean[];
  /** null where no available report */
  texts: (string | null)[];
  imageSha: string[];
  /** The texts the builtin text encoder is fitted on: the training split's available reports. */
  fitTexts: string[];
}

function inputFile(ctx: StageContext<EmbedParams>, stage: string, name: string): string {
  const file = ctx.inputs[stage]?.files[name];
  if (!file) throw new StageError(ctx.stage, `input ${stage}/${name} is missing`, { hint: `the ${stage} stage must publish ${name}` });
  return file;
}

const planMemo = new Map<string, Promise<RowPlan>>();

/** Reads the small columns of samples.parquet (and filtered.parquet) once per process and input digest. */
function loadRowPlan(ctx: StageContext<EmbedParams>): Promise<RowPlan> {
  const key = hashJson({ ingest: ctx.inputs.ingest?.digest, filter: ctx.inputs.filter?.digest ?? null, dir: ctx.inputs.ingest?.dir });
  let memo = planMemo.get(key);
  if (!memo) {
    memo = buildRowPlan(ctx);
    memo.catch(() => planMemo.delete(key));
    if (planMemo.size > 4) planMemo.delete(planMemo.keys().next().value!);
    planMemo.set(key, memo);
  }
  return memo;
}

async function buildRowPlan(ctx: StageContext<EmbedParams>): Promise<RowPlan> {
  const samplesFile = inputFile(ctx, "ingest", "samples.parquet");
  const table = await readTable(SAMPLES_TABLE, samplesFile, ["id", "split", "report_available", "report_normalized", "image_sha256"]);
  const { id: ids, split: splits } = table;
  let filtered: Map<string, string> | undefined;
  if (ctx.inputs.filter) {
    const f = await readTable(FILTERED_TABLE, inputFile(ctx, "filter", "filtered.parquet"), ["id", "filtered_report"]);
    filtered = new Map(f.id.map((id, i) => [id, f.filtered_report[i]!]));
  }
  const plan: RowPlan = { ids: [], splits: [], available: [], texts: [], imageSha: [], fitTexts: [] };
  for (let i = 0; i < table.numRows; i++) {
    const id = ids[i]!;
    const available = table.report_available[i] === true;
    const sha = table.image_sha256[i];
    if (!sha) throw new DataError(`sample ${id} has no image_sha256`, { location: { file: samplesFile, row: i } });
    let text: string | null = null;
    if (available) text = filtered?.get(id) ?? table.report_normalized[i] ?? null;
    // A blank report (or one the filter emptied) carries no text to embed: null, like a missing one.
    if (text !== null && text.trim() === "") text = null;
    plan.ids.push(id);
    plan.splits.push(splits[i]!);
    plan.available.push(available);
    plan.texts.push(text);
    plan.imageSha.push(sha);
    if (text !== null && splits[i] === "train") plan.fitTexts.push(text);
  }
  return plan;
}

let encoderMemo: { key: string; encoder: Promise<Encoder> } | undefined;

/**
 * Shards in one process share one encoder (ONNX sessions are expensive to create); a worker in
 * another process builds the same encoder from the same inputs, since the builtin fit is a pure
 * function of the training reports.
 */
async function encoderFor(ctx: StageContext<EmbedParams>, plan: RowPlan, options: { train?: boolean } = {}): Promise<Encoder> {
  const params = ctx.params;
  const textKind = textEncoderKind(params);
  const textKey =
    textKind === "builtin"
      ? hashJson({ kind: "builtin", dim: params.dim ?? 512, fit: sha256(JSON.stringify(plan.fitTexts)) })
      : hashJson({ kind: "biomedclip", dir: modelDir(ctx.pipeline, params), digest: ctx.resources.model ?? null });
  const learned = params.encoder === "learned" ? learnedFolder(ctx) : undefined;
  const key = learned ? hashJson({ kind: "learned", folder: learned.key, text: textKey }) : textKey;
  if (encoderMemo?.key === key) return encoderMemo.encoder;
  const previous = encoderMemo;
  const makeText = () =>
    textKind === "builtin"
      ? createEncoder({ encoder: "builtin", dim: params.dim ?? 512, fitTexts: plan.fitTexts })
      : createEncoder({ encoder: "biomedclip", model: modelDir(ctx.pipeline, params) });
  const encoder = learned ? learnedEncoder(ctx, plan, learned.dir, makeText, options.train === true) : makeText();
  encoderMemo = { key, encoder };
  encoder.catch(() => {
    if (encoderMemo?.key === key) encoderMemo = undefined;
  });
  if (previous) void previous.encoder.then((e) => e.close()).catch(() => undefined);
  return encoder;
}

/**
 * Where the trained learned encoder lives between the plan step that trains it and the shards
 * that use it (and across a killed run): a checkpoint folder keyed on the code version, the
 * params that shape the encoder and the input digests. The stage copies it into its outputs.
 */
function learnedFolder(ctx: StageContext<EmbedParams>): { dir: string; key: string } {
  const { concurrency: _c, shardRows: _s, batchSize: _b, ...shaping } = ctx.params;
  const inputs = Object.fromEntries(Object.entries(ctx.inputs).map(([name, input]) => [name, input.digest]));
  return checkpointFolderFor(ctx, "learned-encoder", { version: LEARNED_ENCODER_VERSION, params: shaping, inputs, resources: ctx.resources });
}

async function learnedEncoder(ctx: StageContext<EmbedParams>, plan: RowPlan, dir: string, makeText: () => Promise<Encoder>, train: boolean): Promise<Encoder> {
  const text = await makeText();
  try {
    if (!hasLearnedEncoder(dir)) {
      if (!train)
        throw new StageError(ctx.stage, `the learned encoder is not trained yet (${dir})`, {
          hint: "the embed stage's plan step trains it before any shard runs; re-run the stage",
        });
      const { trainLearnedEncoder } = await import("./learned-train.js");
      const paired = { ids: [] as string[], texts: [] as string[] };
      plan.ids.forEach((id, i) => {
        const text = plan.texts[i];
        if (plan.splits[i] === "train" && text !== null && text !== undefined) {
          paired.ids.push(id);
          paired.texts.push(text);
        }
      });
      await trainLearnedEncoder(ctx, dir, text, paired);
    } else if (train) {
      ctx.log(`learned encoder: reusing the trained encoder in ${dir}`);
    }
    return await LearnedEncoder.load(dir, text);
  } catch (error) {
    await text.close();
    throw error;
  }
}

/** Releases the encoder kept between shards (ONNX sessions hold hundreds of MB). */
export async function releaseEmbedEncoder(): Promise<void> {
  const memo = encoderMemo;
  encoderMemo = undefined;
  if (memo) await memo.encoder.then((e) => e.close()).catch(() => undefined);
}

export function imageCacheKey(encoder: Encoder, contentSha256: string): string {
  return hashJson({ kind: "image", content: contentSha256, encoder: encoder.imageDigest, preprocessing: encoder.preprocessing.image });
}

export function textCacheKey(encoder: Encoder, text: string): string {
  return hashJson({ kind: "text", content: sha256(text), encoder: encoder.textDigest, preprocessing: encoder.preprocessing.text });
}

interface ShardStats {
  rows: number;
  imagesEmbedded: number;
  imagesCached: number;
  textsEmbedded: number;
  textsCached: number;
  encoderCalls: number;
}

function encoderInfo(encoder: Encoder) {
  return {
    id: encoder.id,
    dim: encoder.dim,
    digest: encoder.digest,
    imageDigest: encoder.imageDigest,
    textDigest: encoder.textDigest,
    preprocessing: encoder.preprocessing,
  };
}

export async function runEmbedShard(ctx: StageContext<EmbedParams>, shard: ShardSpec, shardDir: string): Promise<void> {
  const start = shard.payload.start as number;
  const count = shard.payload.count as number;
  const plan = await loadRowPlan(ctx);
  const encoder = await encoderFor(ctx, plan);
  const dim = encoder.dim;
  const cache = ctx.rowCache("embed");
  const stats: ShardStats = { rows: count, imagesEmbedded: 0, imagesCached: 0, textsEmbedded: 0, textsCached: 0, encoderCalls: 0 };
  const images = new Float32Array(count * dim);
  const texts = new Float32Array(count * dim);
  const textValid = new Uint8Array(count);

  const fromCache = (key: string, target: Float32Array, row: number): boolean => {
    const hit = cache.get(key);
    if (!hit || hit.byteLength !== dim * 4) return false;
    target.set(new Float32Array(hit.buffer.slice(hit.byteOffset, hit.byteOffset + hit.byteLength)), row * dim);
    return true;
  };

  const imageMisses: number[] = [];
  for (let r = 0; r < count; r++) {
    if (fromCache(imageCacheKey(encoder, plan.imageSha[start + r]!), images, r)) stats.imagesCached++;
    else imageMisses.push(r);
  }
  const textMisses: number[] = [];
  for (let r = 0; r < count; r++) {
    const text = plan.texts[start + r];
    if (text === null || text === undefined) continue;
    textValid[r] = 1;
    if (fromCache(textCacheKey(encoder, text), texts, r)) stats.textsCached++;
    else textMisses.push(r);
  }

  const total = imageMisses.length + textMisses.length;
  let done = 0;
  const progress = () => ctx.emit({ kind: "progress", stage: ctx.stage, task: `rows ${start}-${start + count - 1}`, done, total, unit: "rows" });
  const options = { batchSize: ctx.params.batchSize, concurrency: ctx.params.concurrency, signal: ctx.signal };

  if (imageMisses.length) {
    // Image bytes are read only when some row misses the cache, and only for this shard's rows.
    const samplesFile = inputFile(ctx, "ingest", "samples.parquet");
    const { image: column } = await readTable(SAMPLES_TABLE, samplesFile, ["image"], { offset: start, limit: count });
    const embedded = await embedInBatches(
      imageMisses.length,
      dim,
      {
        ...options,
        onProgress: (n) => {
          done = n;
          progress();
        },
      },
      (s, e) => {
        stats.encoderCalls++;
        return encoder.embedImages(
          imageMisses.slice(s, e).map((r) => {
            const bytes = column[r];
            if (!bytes) throw new DataError(`sample ${plan.ids[start + r]} has no image bytes`, { location: { file: samplesFile, row: start + r } });
            return bytes;
          }),
        );
      },
    );
    imageMisses.forEach((r, i) => {
      const row = embedded.subarray(i * dim, (i + 1) * dim);
      images.set(row, r * dim);
      cache.put(imageCacheKey(encoder, plan.imageSha[start + r]!), Buffer.from(row.buffer, row.byteOffset, row.byteLength));
    });
    stats.imagesEmbedded = imageMisses.length;
  }
  if (textMisses.length) {
    const base = imageMisses.length;
    const embedded = await embedInBatches(
      textMisses.length,
      dim,
      {
        ...options,
        onProgress: (n) => {
          done = base + n;
          progress();
        },
      },
      (s, e) => {
        stats.encoderCalls++;
        return encoder.embedTexts(textMisses.slice(s, e).map((r) => plan.texts[start + r]!));
      },
    );
    textMisses.forEach((r, i) => {
      const row = embedded.subarray(i * dim, (i + 1) * dim);
      texts.set(row, r * dim);
      cache.put(textCacheKey(encoder, plan.texts[start + r]!), Buffer.from(row.buffer, row.byteOffset, row.byteLength));
    });
    stats.textsEmbedded = textMisses.length;
  }

  const table = new Table({
    image_embedding: embeddingVector(images, dim),
    text_embedding: embeddingVector(texts, dim, textValid),
  });
  await writeParquetFile(path.join(shardDir, "embeddings.parquet"), table);
  await writeFile(path.join(shardDir, "shard.json"), JSON.stringify({ start, count, stats, encoder: encoderInfo(encoder) }));
}

function outputBatch(plan: RowPlan, start: number, images: Float32Array, texts: Float32Array, textValid: Uint8Array, dim: number): RecordBatch {
  const end = start + textValid.length;
  const table = new Table({
    id: vectorFromArray(plan.ids.slice(start, end), new Utf8()),
    split: vectorFromArray(plan.splits.slice(start, end), new Utf8()),
    report_available: vectorFromArray(plan.available.slice(start, end), new Bool()),
    image_embedding: embeddingVector(images, dim),
    text_embedding: embeddingVector(texts, dim, textValid),
  });
  if (table.batches.length !== 1) throw new Error(`expected one record batch, got ${table.batches.length}`);
  return table.batches[0]!;
}

export async function mergeEmbedShards(ctx: StageContext<EmbedParams>, shards: { shard: ShardSpec; dir: string }[]): Promise<Record<string, unknown>> {
  const plan = await loadRowPlan(ctx);
  const ordered = [...shards].sort((a, b) => (a.shard.payload.start as number) - (b.shard.payload.start as number));
  const totals: ShardStats = { rows: 0, imagesEmbedded: 0, imagesCached: 0, textsEmbedded: 0, textsCached: 0, encoderCalls: 0 };
  let info: ReturnType<typeof encoderInfo> | undefined;
  let expectedStart = 0;
  for (const { shard, dir } of ordered) {
    const meta = JSON.parse(await readFile(path.join(dir, "shard.json"), "utf8")) as {
      start: number;
      count: number;
      stats: ShardStats;
      encoder: ReturnType<typeof encoderInfo>;
    };
    if (meta.start !== expectedStart) throw new StageError(ctx.stage, `shard ${shard.id} starts at row ${meta.start}, expected ${expectedStart}`);
    expectedStart += meta.count;
    if (info && info.digest !== meta.encoder.digest) {
      throw new StageError(ctx.stage, `shards used different encoders (${info.digest.slice(0, 12)} vs ${meta.encoder.digest.slice(0, 12)})`, {
        hint: "every worker must see the same model folder and inputs",
      });
    }
    info = meta.encoder;
    for (const k of Object.keys(totals) as (keyof ShardStats)[]) totals[k] += meta.stats[k];
  }
  if (expectedStart !== plan.ids.length) throw new StageError(ctx.stage, `shards cover ${expectedStart} rows, samples.parquet has ${plan.ids.length}`);
  if (!info) throw new StageError(ctx.stage, "no shard ran");
  const dim = info.dim;

  // Re-chunk into fixed-size row groups so the bytes do not depend on how rows were sharded.
  async function* batches(): AsyncGenerator<RecordBatch> {
    let images = new Float32Array(OUTPUT_ROW_GROUP * dim);
    let texts = new Float32Array(OUTPUT_ROW_GROUP * dim);
    let valid = new Uint8Array(OUTPUT_ROW_GROUP);
    let filled = 0;
    let emitted = 0;
    for (const { dir } of ordered) {
      const table = await readParquetFile(path.join(dir, "embeddings.parquet"));
      const img = readEmbeddingColumn(table, "image_embedding");
      const txt = readEmbeddingColumn(table, "text_embedding");
      let row = 0;
      while (row < table.numRows) {
        const take = Math.min(OUTPUT_ROW_GROUP - filled, table.numRows - row);
        images.set(img.values.subarray(row * dim, (row + take) * dim), filled * dim);
        texts.set(txt.values.subarray(row * dim, (row + take) * dim), filled * dim);
        valid.set(txt.valid.subarray(row, row + take), filled);
        filled += take;
        row += take;
        if (filled === OUTPUT_ROW_GROUP) {
          yield outputBatch(plan, emitted, images, texts, valid, dim);
          emitted += filled;
          filled = 0;
          images = new Float32Array(OUTPUT_ROW_GROUP * dim);
          texts = new Float32Array(OUTPUT_ROW_GROUP * dim);
          valid = new Uint8Array(OUTPUT_ROW_GROUP);
        }
      }
    }
    if (filled > 0 || emitted === 0)
      yield outputBatch(plan, emitted, images.subarray(0, filled * dim), texts.subarray(0, filled * dim), valid.subarray(0, filled), dim);
  }
  await writeParquetBatches(path.join(ctx.outDir, "embeddings.parquet"), batches(), { rowGroupSize: OUTPUT_ROW_GROUP });
  const encoderJson = { id: info.id, dim: info.dim, digest: info.digest, preprocessing: info.preprocessing };
  await writeFile(path.join(ctx.outDir, "encoder.json"), `${JSON.stringify(encoderJson, null, 2)}\n`);
  let learned: Record<string, unknown> | undefined;
  if (ctx.params.encoder === "learned") {
    // The trained weights are part of the stage's outputs (and so of its digest).
    const { dir } = learnedFolder(ctx);
    await copyFile(path.join(dir, LEARNED_WEIGHTS_FILE), path.join(ctx.outDir, LEARNED_WEIGHTS_FILE));
    await copyFile(path.join(dir, LEARNED_ENCODER_FILE), path.join(ctx.outDir, LEARNED_ENCODER_FILE));
    const file = JSON.parse(await readFile(path.join(dir, LEARNED_ENCODER_FILE), "utf8")) as LearnedEncoderFile;
    const { grid: _grid, ...selection } = file.head.selection;
    const { settings: _settings, ...training } = file.training;
    const run = await readFile(path.join(dir, LEARNED_RUN_FILE), "utf8").then(
      (text) => JSON.parse(text) as Record<string, unknown>,
      () => ({}),
    );
    learned = { head: file.head.kind, text: file.text.id, featureWidth: file.featureWidth, selection, trunk: { ...training, ...run } };
  }
  await releaseEmbedEncoder();
  return {
    rows: totals.rows,
    withText: plan.texts.filter((t) => t !== null).length,
    encoder: { id: info.id, dim: info.dim, digest: info.digest },
    images: { embedded: totals.imagesEmbedded, cached: totals.imagesCached },
    texts: { embedded: totals.textsEmbedded, cached: totals.textsCached },
    encoderCalls: totals.encoderCalls,
    ...(learned ? { learned } : {}),
  };
}

export async function planEmbedShards(ctx: StageContext<EmbedParams>): Promise<ShardSpec[]> {
  const plan = await loadRowPlan(ctx);
  // Fail before any shard runs when the model folder is unusable; a learned encoder trains here, once, for every shard.
  const encoder = await encoderFor(ctx, plan, { train: true });
  ctx.log(
    `embedding ${plan.ids.length} samples (${plan.texts.filter((t) => t !== null).length} with text) with ${encoder.id} (${encoder.digest.slice(0, 12)})`,
  );
  const shards: ShardSpec[] = [];
  const size = ctx.params.shardRows;
  for (let start = 0; start < plan.ids.length || shards.length === 0; start += size) {
    const count = Math.max(0, Math.min(size, plan.ids.length - start));
    shards.push({ id: `rows-${String(start).padStart(9, "0")}`, payload: { start, count } });
  }
  return shards;
}
