/** Shared fixtures for the embed tests: generated images, a samples.parquet per the ingest contract, and a stage runner. */
import { mkdir, mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Binary, Bool, Int32, Table, Utf8, vectorFromArray } from "apache-arrow";
import sharp from "sharp";
import { writeParquetFile } from "../../src/io/parquet.js";
import type { ResolvedPipeline } from "../../src/pipeline/spec.js";
import { FileDigester } from "../../src/pipeline/file-digest.js";
import type { ProgressEvent, RowCache, StageContext } from "../../src/pipeline/stage.js";
import { embedParams, embedStage, type EmbedParams } from "../../src/embed/stage.js";
import { sha256 } from "../../src/util/hash.js";

export async function scratchDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `prolearn-embed-${prefix}-`));
}

/** A 224 x 224 grey PNG with a bright blob whose position depends on `seed` (a stand-in opacity). */
export async function blobImage(seed: number, size = 224, channels: 1 | 3 = 1): Promise<Uint8Array> {
  const data = Buffer.alloc(size * size * channels);
  const cx = ((seed * 37) % 160) + 32;
  const cy = ((seed * 61) % 160) + 32;
  const r = 12 + (seed % 5) * 4;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      const base = 60 + ((x + y + seed) % 7);
      for (let c = 0; c < channels; c++) data[(y * size + x) * channels + c] = inside ? 200 - c * 30 : base;
    }
  }
  return new Uint8Array(
    await sharp(data, { raw: { width: size, height: size, channels } })
      .png()
      .toBuffer(),
  );
}

export interface SampleRow {
  id: string;
  split: "train" | "val" | "test";
  image: Uint8Array;
  report: string | null;
  available: boolean;
}

/** Writes samples.parquet with every column docs/data-contracts.md lists for ingest. */
export async function writeSamplesParquet(file: string, rows: SampleRow[]): Promise<void> {
  const mask = await sharp(Buffer.alloc(4 * 4), { raw: { width: 4, height: 4, channels: 1 } })
    .png()
    .toBuffer();
  const table = new Table({
    id: vectorFromArray(
      rows.map((r) => r.id),
      new Utf8(),
    ),
    dataset: vectorFromArray(
      rows.map(() => "qata-cov19"),
      new Utf8(),
    ),
    split: vectorFromArray(
      rows.map((r) => r.split),
      new Utf8(),
    ),
    image: vectorFromArray(
      rows.map((r) => r.image),
      new Binary(),
    ),
    mask: vectorFromArray(
      rows.map(() => new Uint8Array(mask)),
      new Binary(),
    ),
    width: vectorFromArray(
      rows.map(() => 224),
      new Int32(),
    ),
    height: vectorFromArray(
      rows.map(() => 224),
      new Int32(),
    ),
    report: vectorFromArray(
      rows.map((r) => r.report),
      new Utf8(),
    ),
    report_normalized: vectorFromArray(
      rows.map((r) => (r.report === null ? null : r.report.replace(/\s+/g, " ").trim())),
      new Utf8(),
    ),
    report_available: vectorFromArray(
      rows.map((r) => r.available),
      new Bool(),
    ),
    image_sha256: vectorFromArray(
      rows.map((r) => sha256(r.image)),
      new Utf8(),
    ),
    mask_sha256: vectorFromArray(
      rows.map(() => sha256(mask)),
      new Utf8(),
    ),
    source_image: vectorFromArray(
      rows.map((r) => `images/${r.id}.png`),
      new Utf8(),
    ),
    source_mask: vectorFromArray(
      rows.map((r) => `masks/${r.id}.png`),
      new Utf8(),
    ),
    mask_empty: vectorFromArray(
      rows.map(() => true),
      new Bool(),
    ),
  });
  await writeParquetFile(file, table);
}

/** An in-memory RowCache that counts hits, misses and writes. */
export function countingRowCache(): { cache: (ns: string) => RowCache; stats: { gets: number; hits: number; puts: number }; store: Map<string, Buffer> } {
  const store = new Map<string, Buffer>();
  const stats = { gets: 0, hits: 0, puts: 0 };
  return {
    store,
    stats,
    cache: (ns) => ({
      get(key) {
        stats.gets++;
        const value = store.get(`${ns}/${key}`);
        if (value) stats.hits++;
        return value;
      },
      put(key, value) {
        stats.puts++;
        store.set(`${ns}/${key}`, Buffer.from(value));
      },
    }),
  };
}

export interface StageRun {
  outDir: string;
  summary: Record<string, unknown>;
  events: ProgressEvent[];
}

/** Runs the embed stage the way the in-process executor does: plan, every shard, merge. */
export async function runEmbed(options: {
  samplesFile: string;
  params: Partial<EmbedParams>;
  rowCache: (ns: string) => RowCache;
  baseDir?: string;
  filterFile?: string;
  digest?: string;
}): Promise<StageRun> {
  const root = await scratchDir("run");
  const outDir = path.join(root, "out");
  const tmpDir = path.join(root, "tmp");
  await mkdir(outDir);
  await mkdir(tmpDir);
  const params = embedParams.parse(options.params);
  const pipeline = {
    name: "t",
    baseDir: options.baseDir ?? root,
    workdir: path.join(root, ".prolearn"),
    dataset: { kind: "qata-cov19", root, layout: "auto", reportKey: "p6", textAvailability: 1, seed: 42 },
    stages: { ingest: {}, embed: params },
  } as unknown as ResolvedPipeline;
  const events: ProgressEvent[] = [];
  const inputs: StageContext<EmbedParams>["inputs"] = {
    ingest: {
      stage: "ingest",
      digest: options.digest ?? sha256(options.samplesFile + Math.random()),
      dir: path.dirname(options.samplesFile),
      files: { "samples.parquet": options.samplesFile },
      summary: {},
    },
  };
  if (options.filterFile)
    inputs.filter = {
      stage: "filter",
      digest: sha256(options.filterFile),
      dir: path.dirname(options.filterFile),
      files: { "filtered.parquet": options.filterFile },
      summary: {},
    };
  const resources = embedStage.resources ? await embedStage.resources(pipeline, params, { digester: new FileDigester() }) : {};
  const ctx: StageContext<EmbedParams> = {
    stage: "embed",
    version: embedStage.version,
    pipeline,
    params,
    inputs,
    outDir,
    tmpDir,
    rowCache: options.rowCache,
    resources,
    emit: (e) => events.push(e),
    log: (message, level = "info") => events.push({ kind: "log", stage: "embed", level, message }),
    warn: (_code, message) => events.push({ kind: "log", stage: "embed", level: "warn", message }),
    signal: new AbortController().signal,
  };
  const sharding = embedStage.sharding!;
  const shards = await sharding.plan(ctx);
  const results = [];
  for (const shard of shards) {
    const dir = path.join(tmpDir, "shards", shard.id);
    await mkdir(dir, { recursive: true });
    await sharding.runShard(ctx, shard, dir);
    results.push({ shard, dir });
  }
  const summary = await sharding.merge(ctx, results);
  return { outDir, summary, events };
}
