// The ingest stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import PQueue from "p-queue";
import { Bool, makeData, RecordBatch, Struct, Table, tableFromIPC, tableToIPC, vectorFromArray } from "apache-arrow";
import { DataError, StageError } from "../errors.js";
import { writeParquetFile, writeParquetIpcStreams } from "../io/parquet.js";
import type { ShardSpec, StageContext, StageSummary } from "../pipeline/stage.js";
import { hashJson, sha256 } from "../util/hash.js";
import { ingestSample, type DecodeParams, type SampleRow } from "./decode.js";
import { FingerprintBuilder, formatFingerprint, type Fingerprint } from "./fingerprint.js";
import type { QuarantineEntry } from "./reasons.js";
import { normalizeReport } from "./reports.js";
import { planDataset, type DatasetPlan, type SampleDescriptor } from "./scan.js";
import { imagesBatch, orphansBatch, quarantineBatch, RowBatchBuilder, SAMPLE_COLUMNS, samplesBatch } from "./schema.js";
import type { IngestParams } from "./stage.js";
import { availableSubset } from "./split.js";

interface ShardPayload {
  index: number;
  planDigest: string;
  samples: SampleDescriptor[];
}

/** What the fingerprint needs of one ingested row (merge never decodes the rows themselves). */
interface FingerprintEntry {
  id: string;
  split: string;
  width: number;
  height: number;
  withReport: boolean;
  available: boolean;
  inBudget: boolean;
  empty: boolean;
  coverage: number;
  format: string;
  /** Digests of the stored image and mask bytes, for images.parquet. */
  imageSha256: string;
  maskPngSha256: string;
}

interface ShardReport {
  problems: QuarantineEntry[];
  cacheHits: number;
  decoded: number;
  /** Rows in rows.arrows, in plan order, with what the fingerprint reads of each. */
  rows: FingerprintEntry[];
}

/** Ingested rows of a shard: one Arrow IPC stream, which merge hands to the Parquet writer as it is. */
const SHARD_ROWS = "rows.arrows";

function planDigest(plan: DatasetPlan): string {
  return hashJson({ samples: plan.samples, quarantine: plan.quarantine, orphans: plan.orphans.length, layout: plan.layout.layout });
}

function decodeParams(params: IngestParams): DecodeParams {
  return { maskThreshold: params.maskThreshold, maskAmbiguousFraction: params.maskAmbiguousFraction };
}

function strictFailure(problems: readonly QuarantineEntry[], root: string): DataError {
  const listed = problems.slice(0, 25).map((q) => `  ${q.source}${q.row !== null ? ` row ${q.row}` : ""}: ${q.reason}: ${q.detail}`);
  const more = problems.length > listed.length ? [`  ... and ${problems.length - listed.length} more`] : [];
  return new DataError(`strict ingest: ${problems.length} input${problems.length === 1 ? "" : "s"} would be quarantined:\n${[...listed, ...more].join("\n")}`, {
    location: { file: root },
    hint: "fix or remove these files, or set stages.ingest.strict: false to quarantine them and go on",
  });
}

/** A shard's Arrow stream with its report_available and report_in_budget columns recomputed row by row; every other column as it was. */
function withAvailability(
  stream: Uint8Array,
  availableOf: (id: string, split: string, old: boolean) => boolean,
  inBudgetOf: (id: string, split: string) => boolean,
): Uint8Array {
  const batches = tableFromIPC(stream).batches.map((batch) => {
    const ids = batch.getChild("id")!;
    const splits = batch.getChild("split")!;
    const old = batch.getChild("report_available")!;
    const available = Array.from({ length: batch.numRows }, (_, i) => availableOf(ids.get(i) as string, splits.get(i) as string, old.get(i) as boolean));
    const inBudget = Array.from({ length: batch.numRows }, (_, i) => inBudgetOf(ids.get(i) as string, splits.get(i) as string));
    const columns = new Map([
      [batch.schema.fields.findIndex((f) => f.name === "report_available"), available],
      [batch.schema.fields.findIndex((f) => f.name === "report_in_budget"), inBudget],
    ]);
    const children = batch.data.children.map((child, j) => (columns.has(j) ? vectorFromArray(columns.get(j)!, new Bool()).data[0]! : child));
    return new RecordBatch(batch.schema, makeData({ type: new Struct(batch.schema.fields), length: batch.numRows, nullCount: 0, children }));
  });
  return tableToIPC(new Table(batches), "stream");
}

/** Quarantine counts by reason, largest first, with one example each: "160 path-escapes-root (images/a.png: ...)". */
function reasonSummary(problems: readonly QuarantineEntry[]): string {
  const byReason = new Map<string, QuarantineEntry[]>();
  for (const q of problems) byReason.set(q.reason, [...(byReason.get(q.reason) ?? []), q]);
  return [...byReason]
    .sort((a, b) => b[1].length - a[1].length)
    .map(([reason, list]) => `${list.length} ${reason} (e.g. ${list[0]!.source}${list[0]!.row !== null ? ` row ${list[0]!.row}` : ""}: ${list[0]!.detail})`)
    .join("; ");
}

/** Every image found was set aside: a run that would ingest nothing is an error, with the reasons. */
function nothingToIngest(plan: DatasetPlan): DataError {
  const images = plan.quarantine.filter((q) => q.scope === "image" && !q.kept);
  return new DataError(`none of the ${plan.found} images found under ${plan.root} can be ingested: ${reasonSummary(images) || "no image pairs with a mask"}`, {
    location: { file: plan.root },
    hint: images.some((q) => q.reason === "path-escapes-root")
      ? "an image or mask folder (or its files) is a symbolic link out of the dataset root: point dataset.root at a folder that holds the data itself, or move the linked folder inside the root"
      : "see docs/ingest.md for what each reason means and how to fix it",
  });
}

/** The layout's report files were there but not one report came out of them (truncated, wrong format). */
function noReportRead(plan: DatasetPlan): DataError {
  const reportProblems = plan.quarantine.filter((q) => q.scope === "report");
  const files = [...plan.reportFiles, ...plan.reportFilesSetAside].map((f) => path.relative(plan.root, f) || f);
  return new DataError(
    `report file${files.length === 1 ? "" : "s"} ${files.join(", ")} yielded no report at all${reportProblems.length ? `: ${reasonSummary(reportProblems)}` : ""}`,
    {
      location: { file: plan.reportFiles[0] ?? plan.reportFilesSetAside[0]! },
      hint: "repair the report file (a truncated download?), or set stages.ingest.allowNoReports: true to ingest every image without a report",
    },
  );
}

export async function planIngestShards(ctx: StageContext<IngestParams>): Promise<ShardSpec[]> {
  const plan = await planDataset(ctx.pipeline.dataset, (m, level) => ctx.log(m, level));
  const counts = { train: 0, val: 0, test: 0 };
  for (const s of plan.samples) counts[s.split]++;
  ctx.log(`split (${plan.splitRule}): train ${counts.train}, val ${counts.val}, test ${counts.test}`);
  if (plan.found === 0) {
    throw new DataError(`no images found under ${plan.root}`, {
      location: { file: plan.root },
      hint: `the ${plan.layout.layout} layout keeps images in ${plan.layout.folders.map((f) => path.relative(plan.root, f.images)).join(", ")}`,
    });
  }
  const problems = plan.quarantine.filter((q) => !q.kept);
  if (ctx.params.strict && problems.length) throw strictFailure(problems, plan.root);
  if (plan.samples.length === 0) throw nothingToIngest(plan);
  // Report files set aside unread (linked out of the root, not regular files, a reports path that
  // does not exist) count as found: a run that would silently go image-only is an error too.
  if (plan.reportFiles.length + plan.reportFilesSetAside.length > 0 && plan.reportRows === 0 && !ctx.params.allowNoReports) throw noReportRead(plan);
  const digest = planDigest(plan);
  const shards: ShardSpec[] = [];
  for (let i = 0; i * ctx.params.shardSize < plan.samples.length; i++) {
    const payload: ShardPayload = { index: i, planDigest: digest, samples: plan.samples.slice(i * ctx.params.shardSize, (i + 1) * ctx.params.shardSize) };
    shards.push({ id: `ingest-${String(i).padStart(5, "0")}`, payload: payload as unknown as Record<string, unknown> });
  }
  return shards;
}

export async function runIngestShard(ctx: StageContext<IngestParams>, shard: ShardSpec, shardDir: string): Promise<void> {
  const payload = shard.payload as unknown as ShardPayload;
  const root = ctx.pipeline.dataset.root;
  const cache = ctx.rowCache("ingest-decode");
  const params = decodeParams(ctx.params);
  const queue = new PQueue({ concurrency: ctx.params.concurrency });
  const total = payload.samples.length;
  const results = new Array<Awaited<ReturnType<typeof ingestSample>> | undefined>(total);
  // Rows join the Arrow batch in plan order as soon as every earlier sample is done, so
  // building it overlaps the decoding of later samples instead of following it.
  const batch = new RowBatchBuilder<SampleRow>(SAMPLE_COLUMNS);
  const fingerprintRows: FingerprintEntry[] = [];
  const problems: QuarantineEntry[] = [];
  let cacheHits = 0;
  let appended = 0;
  const appendReady = () => {
    while (appended < total && results[appended] !== undefined) {
      const r = results[appended]!;
      if (r.row) {
        batch.append(r.row);
        fingerprintRows.push({
          id: r.row.id,
          split: r.row.split,
          width: r.row.width,
          height: r.row.height,
          withReport: r.row.report !== null,
          available: r.row.report_available,
          inBudget: r.row.report_in_budget,
          empty: r.row.mask_empty,
          coverage: r.row.mask_coverage,
          format: r.row.image_format,
          imageSha256: r.row.image_sha256,
          maskPngSha256: sha256(r.row.mask),
        });
      }
      if (r.problem) problems.push(r.problem);
      if (r.cacheHit) cacheHits++;
      // The batch holds a copy of the bytes now; let the sample go.
      results[appended++] = undefined;
    }
  };
  let done = 0;
  await Promise.all(
    payload.samples.map((sample, i) =>
      queue.add(async () => {
        ctx.signal.throwIfAborted();
        results[i] = await ingestSample(root, sample, ctx.pipeline.dataset.kind, params, cache, normalizeReport);
        appendReady();
        done++;
        if (done % 32 === 0 || done === total)
          ctx.emit({ kind: "progress", stage: ctx.stage, task: `decode shard ${payload.index}`, done, total, unit: "images" });
      }),
    ),
  );
  if (appended !== total) throw new StageError(ctx.stage, `shard ${payload.index}: ${total - appended} of ${total} samples were not decoded`);
  await mkdir(shardDir, { recursive: true });
  // Shard rows travel to merge as Arrow IPC: parquet-wasm fails ("Dyn casting error") when a
  // Parquet file is read while another is being streamed out, which merge would do. A stream
  // (not the file format) is what parquet-wasm reads, so merge passes it on untouched.
  await writeFile(path.join(shardDir, SHARD_ROWS), tableToIPC(new Table([batch.finish()]), "stream"));
  const report: ShardReport = { problems, cacheHits, decoded: total - cacheHits, rows: fingerprintRows };
  await writeFile(path.join(shardDir, "quarantine.json"), JSON.stringify(report));
}

/** The shards in plan order, checked against the plan (same dataset, every shard present). */
function shardsInPlanOrder(
  ctx: StageContext<IngestParams>,
  plan: DatasetPlan,
  shards: { shard: ShardSpec; dir: string }[],
): { shard: ShardSpec; dir: string }[] {
  const digest = planDigest(plan);
  const ordered = [...shards].sort((a, b) => (a.shard.payload as unknown as ShardPayload).index - (b.shard.payload as unknown as ShardPayload).index);
  for (const { shard } of ordered) {
    if ((shard.payload as unknown as ShardPayload).planDigest !== digest) {
      throw new StageError(ctx.stage, "the dataset changed while it was being ingested", { location: { file: plan.root }, hint: "run the pipeline again" });
    }
  }
  const expected = Math.ceil(plan.samples.length / ctx.params.shardSize);
  if (ordered.length !== expected) throw new StageError(ctx.stage, `merge received ${ordered.length} shards, the plan has ${expected}`);
  return ordered;
}

/** What each shard reported: its problems, its rows (in plan order) and its decode counts. */
async function readShardReports(ordered: readonly { dir: string }[]) {
  const shardProblems: QuarantineEntry[] = [];
  const shardRows: FingerprintEntry[][] = [];
  let cacheHits = 0;
  let decoded = 0;
  for (const { dir } of ordered) {
    const report = JSON.parse(await readFile(path.join(dir, "quarantine.json"), "utf8")) as ShardReport;
    shardProblems.push(...report.problems);
    cacheHits += report.cacheHits;
    decoded += report.decoded;
    shardRows.push(report.rows);
  }
  return { shardProblems, shardRows, cacheHits, decoded };
}

/**
 * The text budget drawn again from the samples that survived decoding: the plan drew it before
 * decode quarantine, which would realise more than the requested fraction. The training subset
 * (report_available) and the validation share (report_in_budget) are nested and seeded as before.
 */
function redrawTextBudget(shardRows: readonly FingerprintEntry[][], dataset: { seed: number; textAvailability: number }) {
  const withReport = (split: string) => shardRows.flatMap((rows) => rows.filter((r) => r.split === split && r.withReport).map((r) => r.id));
  const available = availableSubset(withReport("train"), dataset.seed, dataset.textAvailability);
  const valInBudget = availableSubset(withReport("val"), dataset.seed, dataset.textAvailability);
  return {
    available,
    availability: (r: FingerprintEntry) => (r.split === "train" ? available.has(r.id) : r.available),
    inBudgetOf: (id: string, split: string) => (split === "train" ? available.has(id) : split === "val" ? valInBudget.has(id) : false),
  };
}

export async function mergeIngestShards(ctx: StageContext<IngestParams>, shards: { shard: ShardSpec; dir: string }[]): Promise<StageSummary> {
  const plan = await planDataset(ctx.pipeline.dataset);
  const ordered = shardsInPlanOrder(ctx, plan, shards);
  const { shardProblems, shardRows, cacheHits, decoded } = await readShardReports(ordered);
  const rowCounts = shardRows.map((rows) => rows.length);
  const { available, availability, inBudgetOf } = redrawTextBudget(shardRows, ctx.pipeline.dataset);
  const redrawn = shardRows.map((rows) => rows.some((r) => availability(r) !== r.available || inBudgetOf(r.id, r.split) !== r.inBudget));
  const fingerprint = new FingerprintBuilder();
  for (const rows of shardRows) {
    for (const r of rows) {
      fingerprint.add({
        split: r.split,
        width: r.width,
        height: r.height,
        report: r.withReport ? "" : null,
        report_available: availability(r),
        mask_empty: r.empty,
        mask_coverage: r.coverage,
        image_format: r.format,
      });
    }
  }
  const problems = [...plan.quarantine, ...shardProblems];
  const blocking = problems.filter((q) => !q.kept);
  if (ctx.params.strict && blocking.length) throw strictFailure(blocking, plan.root);

  // parquet-wasm reports an error thrown by the stream source as "Dyn casting error"; keep the real one.
  let sourceError: unknown;
  async function* shardStreams(): AsyncGenerator<Uint8Array> {
    try {
      let any = false;
      for (const [i, { dir }] of ordered.entries()) {
        if (rowCounts[i] === 0) continue;
        any = true;
        // One shard in memory at a time: merge stays bounded whatever the dataset size.
        const bytes = await readFile(path.join(dir, SHARD_ROWS));
        yield redrawn[i] ? withAvailability(bytes, (id, split, old) => (split === "train" ? available.has(id) : old), inBudgetOf) : bytes;
      }
      if (!any) yield tableToIPC(new Table([samplesBatch([])]), "stream");
    } catch (error) {
      sourceError = error;
      throw error;
    }
  }
  const written = await writeParquetIpcStreams(path.join(ctx.outDir, "samples.parquet"), shardStreams(), { rowGroupSize: ctx.params.shardSize }).catch(
    (error: unknown) => {
      throw sourceError ?? error;
    },
  );
  await writeParquetFile(path.join(ctx.outDir, "quarantine.parquet"), new Table([quarantineBatch(problems)]));
  await writeParquetFile(path.join(ctx.outDir, "orphans.parquet"), new Table([orphansBatch(plan.orphans)]));
  await writeParquetFile(
    path.join(ctx.outDir, "images.parquet"),
    new Table([
      imagesBatch(shardRows.flatMap((rows) => rows.map((r) => ({ id: r.id, split: r.split, image_sha256: r.imageSha256, mask_png_sha256: r.maskPngSha256 })))),
    ]),
  );

  const quarantinedImages = problems.filter((q) => q.scope === "image" && !q.kept).length;
  if (written.rows + quarantinedImages !== plan.found) {
    throw new StageError(ctx.stage, `reconciliation failed: found ${plan.found} images, ingested ${written.rows}, quarantined ${quarantinedImages}`);
  }
  if (written.rows === 0) throw nothingToIngest({ ...plan, quarantine: problems });
  const fp: Fingerprint = fingerprint.build(
    {
      dataset: ctx.pipeline.dataset.kind,
      layout: plan.layout.layout,
      layoutReason: plan.layout.reason,
      splitRule: plan.splitRule,
      textAvailability: ctx.pipeline.dataset.textAvailability,
      seed: ctx.pipeline.dataset.seed,
      found: plan.found,
      imageOnly: plan.imageOnly,
      orphanReports: plan.orphans.length,
      identicalCopies: plan.identicalCopies.length,
    },
    problems,
  );
  await writeFile(path.join(ctx.outDir, "fingerprint.json"), JSON.stringify(fp, null, 2) + "\n");
  for (const line of formatFingerprint(fp).split("\n")) ctx.log(line);
  if (blocking.length) ctx.log(`${blocking.length} input${blocking.length === 1 ? "" : "s"} set aside (quarantine.parquet lists each with its reason)`, "warn");
  return {
    found: plan.found,
    ingested: written.rows,
    quarantined: quarantinedImages,
    problems: blocking.length,
    flagged: problems.length - blocking.length,
    imageOnly: plan.imageOnly,
    orphanReports: plan.orphans.length,
    identicalCopies: plan.identicalCopies.length,
    ignoredFiles: plan.ignoredFiles.length,
    duplicateReports: plan.duplicateReports.length,
    decoded,
    cacheHits,
    layout: plan.layout.layout,
    splits: fp.splits,
    quarantineByReason: fp.quarantineByReason,
  };
}
