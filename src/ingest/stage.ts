import { realpath, stat } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import type { ResolvedPipeline } from "../pipeline/spec.js";
import { defineStage } from "../pipeline/stage.js";
import { listFiles, resolveLayout } from "./layouts.js";
import { listReportFiles } from "./reports.js";
import { IMAGES_TABLE, ORPHANS_TABLE, QUARANTINE_TABLE, SAMPLES_TABLE } from "./tables.js";
import { notARegularFile } from "./file-kind.js";

// The definition and the dataset digest (resources, computed at plan time) only: decoding
// (sharp), Arrow and Parquet live in ./run.ts and are imported when a shard runs.

export const ingestParamsSchema = z
  .strictObject({
    strict: z.boolean().default(false).describe("Fail (exit 1) listing every quarantined input instead of setting it aside."),
    allowNoReports: z
      .boolean()
      .default(false)
      .describe(
        "Go on (every image image-only) when the dataset's report files yield no report at all, instead of failing (exit 1): by default a truncated or unreadable report file stops the run.",
      ),
    concurrency: z.number().int().min(1).max(64).default(4).describe("Images decoded at once within a shard."),
    shardSize: z.number().int().min(1).max(10000).default(256).describe("Images per shard (unit of parallel work and of a Parquet row group)."),
    maskThreshold: z
      .number()
      .int()
      .min(0)
      .max(254)
      .default(127)
      .describe("Mask pixels above this grey level are foreground (masks whose maximum is 1 are taken as 0/1 labels)."),
    maskAmbiguousFraction: z
      .number()
      .min(0)
      .max(1)
      .default(0.01)
      .describe("Quarantine a mask as not binary when more than this fraction of its pixels lie within 64 grey levels of the threshold."),
  })
  .describe("Read a dataset as it lies on disk into samples.parquet, with quarantine, orphan reports and a fingerprint.");

export type IngestParams = z.output<typeof ingestParamsSchema>;

/** The absolute files the ingest stage reads for this pipeline: images, masks, report tables, split/bbox files. */
export async function datasetFiles(pipeline: ResolvedPipeline): Promise<string[]> {
  const dataset = pipeline.dataset;
  const layout = await resolveLayout(dataset.root, dataset.layout, dataset.kind);
  const realRoot = await realpath(dataset.root);
  const files: string[] = [];
  for (const folder of layout.folders) {
    for (const dir of [folder.images, folder.masks])
      files.push(...(await listFiles(dir, dataset.root, realRoot)).files.filter((f) => !f.escapesTo && !f.notRegular).map((f) => f.abs));
  }
  const reportSources = dataset.reports ? [dataset.reports] : layout.textReportFolder ? [] : layout.reports;
  // Report files that are links out of the root are quarantined, not read: nor are they digested.
  const inRoot = async (file: string) =>
    !path.resolve(file).startsWith(path.resolve(dataset.root) + path.sep) || (await realpath(file).catch(() => file)).startsWith(realRoot + path.sep);
  for (const source of reportSources) {
    const info = await stat(source).catch(() => undefined);
    if (!info || !(await inRoot(source))) continue;
    for (const file of info.isDirectory() ? await listReportFiles(source) : [source]) if ((await inRoot(file)) && !notARegularFile(file)) files.push(file);
  }
  if (!dataset.reports && layout.textReportFolder) {
    files.push(
      ...(await listFiles(layout.textReportFolder, dataset.root, realRoot)).files
        .filter((f) => f.name.toLowerCase().endsWith(".txt") && !f.escapesTo && !f.notRegular)
        .map((f) => f.abs),
    );
  }
  // split.json and the bbox file: read only when they are regular files inside the root.
  for (const file of [layout.splitFile, layout.bboxFile]) if (file && (await inRoot(file)) && !notARegularFile(file)) files.push(file);
  return files.sort();
}

export const ingestStage = defineStage({
  name: "ingest",
  version: "3",
  description: "Read a dataset (QaTa-COV19, MosMedData+, Kvasir-SEG) in any public layout into samples.parquet with partial reports.",
  params: ingestParamsSchema,
  inputs: [],
  outputs: ["samples.parquet", "images.parquet", "quarantine.parquet", "orphans.parquet", "fingerprint.json"],
  tables: [SAMPLES_TABLE, IMAGES_TABLE, QUARANTINE_TABLE, ORPHANS_TABLE],
  // allowNoReports only decides whether a run may go on; the outputs it lets through are the same.
  nonKeyParams: ["concurrency", "allowNoReports"],
  async resources(pipeline, _params, { digester }) {
    return { dataset: await digester.digestFiles(await datasetFiles(pipeline), pipeline.dataset.root) };
  },
  sharding: {
    plan: async (ctx) => (await import("./run.js")).planIngestShards(ctx),
    runShard: async (ctx, shard, shardDir) => (await import("./run.js")).runIngestShard(ctx, shard, shardDir),
    merge: async (ctx, shards) => (await import("./run.js")).mergeIngestShards(ctx, shards),
  },
});
