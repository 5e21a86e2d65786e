import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import type { Table, Vector } from "apache-arrow";
import { ProlearnError } from "../errors.js";
import type { RunResult, StageResult } from "../pipeline/engine.js";
import type { RunRecord } from "../pipeline/catalog.js";
import type { ResolvedPipeline } from "../pipeline/spec.js";
import { LazyParquet, withParquet } from "./parquet-reader.js";
import { fitPca2, project } from "./pca.js";
import { PREDICTION_COLOR, TRUTH_COLOR, thumbnailDataUri } from "./thumbnails.js";
import {
  DEFAULT_REPORT_OPTIONS,
  type DatasetPart,
  type ExamplesPart,
  type FilteringPart,
  type HistoryPart,
  type MetricsPart,
  type OverviewStage,
  type Part,
  type PrototypesPart,
  type ProjectionPart,
  type ReportModel,
  type ReportOptions,
  type TrainingPart,
} from "./model.js";

export interface ReportInput {
  pipeline: ResolvedPipeline;
  result: RunResult;
  /** The catalog's record of the run (start time, trigger), when known. */
  run?: RunRecord;
}

/** Reads what the report needs from the run's stage outputs; reads only the columns it shows. */
export async function gatherReport(input: ReportInput, options: Partial<ReportOptions> = {}): Promise<ReportModel> {
  const opts = { ...DEFAULT_REPORT_OPTIONS, ...options };
  const { pipeline, result, run } = input;
  const outputs = new StageOutputs(pipeline, result);
  return {
    runId: result.runId,
    pipeline: result.pipeline,
    status: result.status,
    seconds: result.seconds,
    startedAt: run?.startedAt ?? null,
    trigger: run?.trigger ?? null,
    executor: run?.executor ?? null,
    generatedAt: new Date().toISOString(),
    workdir: pipeline.workdir,
    dataset: { kind: pipeline.dataset.kind, root: pipeline.dataset.root, layout: pipeline.dataset.layout, textAvailability: pipeline.dataset.textAvailability, seed: pipeline.dataset.seed },
    totals: result.totals,
    stages: overviewStages(pipeline, result),
    warnings: result.stages.flatMap((s) => (s.warnings ?? []).map((w) => ({ stage: s.name, ...w }))),
    sections: {
      dataset: await guarded(() => gatherDataset(outputs, opts)),
      filtering: await guarded(() => gatherFiltering(outputs, opts)),
      prototypes: await guarded(() => gatherPrototypes(outputs, opts)),
      training: await guarded(() => gatherTraining(outputs, opts)),
    },
  };
}

/** A section whose data cannot be read shows the error in place; the rest of the report stands. */
async function guarded<T>(fn: () => Promise<Part<T>>): Promise<Part<T>> {
  try {
    return await fn();
  } catch (error) {
    return { state: "error", message: describeError(error) };
  }
}

function describeError(error: unknown): string {
  if (error instanceof ProlearnError) return error.format();
  return (error as Error)?.message ?? String(error);
}

function overviewStages(pipeline: ResolvedPipeline, result: RunResult): OverviewStage[] {
  const byName = new Map(result.stages.map((s) => [s.name, s]));
  const names = [...Object.keys(pipeline.stages), ...result.stages.map((s) => s.name).filter((n) => !(n in pipeline.stages))];
  return names.map((name) => {
    const s = byName.get(name);
    if (!s) return { name, status: "not run", reason: "not selected in this run (--until / --only)", seconds: null, cacheKey: null, digest: null, summary: [], warnings: [] };
    return { name, status: s.status, reason: s.reason, seconds: s.seconds, cacheKey: s.cacheKey, digest: s.digest, ...(s.error ? { error: s.error } : {}), summary: flattenSummary(s.summary), warnings: s.warnings ?? [] };
  });
}

function flattenSummary(summary: Record<string, unknown>, limit = 8): [string, string][] {
  const out: [string, string][] = [];
  const add = (key: string, value: unknown, depth: number) => {
    if (out.length >= limit) return;
    if (typeof value === "number") out.push([key, Number.isInteger(value) ? String(value) : value.toPrecision(4).replace(/\.?0+$/, "")]);
    else if (typeof value === "string") out.push([key, value.length > 60 ? `${value.slice(0, 57)}...` : value]);
    else if (typeof value === "boolean") out.push([key, String(value)]);
    else if (value && typeof value === "object" && !Array.isArray(value) && depth === 0) for (const [k, v] of Object.entries(value)) add(`${key}.${k}`, v, 1);
  };
  for (const [key, value] of Object.entries(summary ?? {})) add(key, value, 0);
  return out;
}

/** Finds stage output files of this run and explains, in words, why one is not there. */
class StageOutputs {
  private readonly byName: Map<string, StageResult>;
  constructor(readonly pipeline: ResolvedPipeline, readonly result: RunResult) {
    this.byName = new Map(result.stages.map((s) => [s.name, s]));
  }

  /** In the pipeline file, or in the run's record (a report rebuilt with a pipeline file edited since). */
  inPipeline(stage: string): boolean {
    return stage in this.pipeline.stages || this.byName.has(stage);
  }

  /** Why the stage's outputs are unavailable, or undefined when they are there. */
  missing(stage: string): string | undefined {
    if (!this.inPipeline(stage)) return `This pipeline has no \`${stage}\` stage.`;
    const s = this.byName.get(stage);
    if (!s) return `The \`${stage}\` stage was not selected in this run (--until / --only).`;
    if (s.status === "failed") return sentence(`The \`${stage}\` stage failed in this run: ${(s.error ?? s.reason).split("\n")[0]!.replace(new RegExp(`^stage ${stage} failed: `), "")}`);
    if (s.status === "skipped") return sentence(`The \`${stage}\` stage was skipped: ${s.reason}`);
    return undefined;
  }

  /** Absolute path of an output file; throws when the stage ran but the file is gone. */
  file(stage: string, name: string): string {
    const s = this.byName.get(stage);
    const file = s?.outputs[name];
    if (!file) throw new Error(`the \`${stage}\` stage published no ${name} (outputs: ${Object.keys(s?.outputs ?? {}).join(", ") || "none"})`);
    if (!existsSync(file)) throw new Error(`${file} no longer exists (the store was cleaned?); rerun the pipeline to rebuild it`);
    return file;
  }

  optionalFile(stage: string, name: string): string | undefined {
    const file = this.byName.get(stage)?.outputs[name];
    return file && existsSync(file) ? file : undefined;
  }
}

function sentence(text: string): string {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

function column(table: Table, name: string): Vector {
  const vector = table.getChild(name);
  if (!vector) throw new Error(`column ${name} missing from the table read`);
  return vector;
}

/** `count` row indices spread evenly over `rows` (all of them when there are fewer). */
export function spread<T>(rows: readonly T[], count: number): T[] {
  if (rows.length <= count) return [...rows];
  const out: T[] = [];
  for (let i = 0; i < count; i++) out.push(rows[Math.floor(((i + 0.5) * rows.length) / count)]!);
  return out;
}

const SPLIT_ORDER = ["train", "val", "test"];

async function gatherDataset(outputs: StageOutputs, opts: ReportOptions): Promise<Part<DatasetPart>> {
  const why = outputs.missing("ingest");
  if (why) return { state: "absent", message: why };
  const samplesFile = outputs.file("ingest", "samples.parquet");
  return withParquet(samplesFile, async (samples) => {
    samples.require(["id", "split", "report_available", "image", "mask"]);
    const hasReport = samples.has("report");
    const hasEmpty = samples.has("mask_empty");
    const stats = new Map<string, { samples: number; withReport: number; reportAvailable: number; emptyMasks: number }>();
    const rowsBySplit = new Map<string, number[]>();
    const columns = ["split", "report_available", ...(hasReport ? ["report"] : []), ...(hasEmpty ? ["mask_empty"] : [])];
    for await (const { offset, table } of samples.slices(columns)) {
      const split = column(table, "split");
      const available = column(table, "report_available");
      const report = hasReport ? column(table, "report") : undefined;
      const empty = hasEmpty ? column(table, "mask_empty") : undefined;
      for (let i = 0; i < table.numRows; i++) {
        const name = String(split.get(i));
        let s = stats.get(name);
        if (!s) stats.set(name, (s = { samples: 0, withReport: 0, reportAvailable: 0, emptyMasks: 0 }));
        s.samples++;
        if (report ? report.get(i) !== null : available.get(i)) s.withReport++;
        if (available.get(i)) s.reportAvailable++;
        if (empty?.get(i)) s.emptyMasks++;
        let list = rowsBySplit.get(name);
        if (!list) rowsBySplit.set(name, (list = []));
        list.push(offset + i);
      }
    }
    const splitNames = [...stats.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    const quota = shareOut(splitNames.map((split) => rowsBySplit.get(split)!.length), opts.maxThumbnails);
    const thumbnails: DatasetPart["thumbnails"] = [];
    for (const [index, split] of splitNames.entries()) {
      for (const row of spread(rowsBySplit.get(split)!, quota[index]!)) {
        const table = await samples.read(["id", "image", "mask", ...(hasEmpty ? ["mask_empty"] : [])], { offset: row, limit: 1 });
        const image = column(table, "image").get(0) as Uint8Array;
        const mask = column(table, "mask").get(0) as Uint8Array;
        const thumb = await thumbnailDataUri(image, [{ mask, color: TRUTH_COLOR }], opts.thumbnailSize);
        thumbnails.push({ ...thumb, id: String(column(table, "id").get(0)), split, maskEmpty: hasEmpty ? Boolean(column(table, "mask_empty").get(0)) : false });
      }
    }
    const quarantineFile = outputs.optionalFile("ingest", "quarantine.parquet");
    const quarantine: DatasetPart["quarantine"] = quarantineFile
      ? await guarded(() => gatherQuarantine(quarantineFile))
      : { state: "absent", message: "ingest published no quarantine.parquet" };
    const fingerprintFile = outputs.optionalFile("ingest", "fingerprint.json");
    return {
      state: "ok",
      data: {
        rows: samples.numRows,
        splits: splitNames.map((split) => ({ split, ...stats.get(split)!, emptyMasks: hasEmpty ? stats.get(split)!.emptyMasks : null })),
        quarantine,
        fingerprint: fingerprintFile ? flattenSummary(JSON.parse(readFileSync(fingerprintFile, "utf8")) as Record<string, unknown>, 16) : null,
        thumbnails,
      },
    };
  });
}

/** Splits `total` as evenly as the sizes allow: a small split gives its unused share to the others. */
export function shareOut(sizes: readonly number[], total: number): number[] {
  const quota = sizes.map(() => 0);
  let left = total;
  for (;;) {
    const open = sizes.map((_size, i) => i).filter((i) => quota[i]! < sizes[i]!);
    if (!open.length || left <= 0) return quota;
    const each = Math.max(1, Math.floor(left / open.length));
    for (const i of open) {
      const take = Math.min(each, sizes[i]! - quota[i]!, left);
      quota[i]! += take;
      left -= take;
    }
  }
}

function rank(split: string): number {
  const i = SPLIT_ORDER.indexOf(split);
  return i < 0 ? SPLIT_ORDER.length : i;
}

async function gatherQuarantine(file: string): Promise<Part<{ total: number; reasons: { reason: string; count: number; kept: number; examples: string[] }[] }>> {
  return withParquet(file, async (reader) => {
    reader.require(["reason", "source"]);
    const hasKept = reader.has("kept");
    const reasons = new Map<string, { count: number; kept: number; examples: string[] }>();
    for await (const { table } of reader.slices(["reason", "source", ...(hasKept ? ["kept"] : [])])) {
      const reason = column(table, "reason");
      const source = column(table, "source");
      const kept = hasKept ? column(table, "kept") : undefined;
      for (let i = 0; i < table.numRows; i++) {
        const name = String(reason.get(i));
        let r = reasons.get(name);
        if (!r) reasons.set(name, (r = { count: 0, kept: 0, examples: [] }));
        r.count++;
        if (kept?.get(i)) r.kept++;
        if (r.examples.length < 3) r.examples.push(String(source.get(i)));
      }
    }
    return {
      state: "ok",
      data: { total: reader.numRows, reasons: [...reasons.entries()].map(([reason, r]) => ({ reason, ...r })).sort((a, b) => b.count - a.count || a.reason.localeCompare(b.reason)) },
    };
  });
}

async function gatherFiltering(outputs: StageOutputs, opts: ReportOptions): Promise<Part<FilteringPart>> {
  const why = outputs.missing("filter");
  if (why) return { state: "absent", message: `${why} Token filtering shows each report's tokens shaded by their cross-attention score; without the stage there are no scores.` };
  return withParquet(outputs.file("filter", "filtered.parquet"), async (reader) => {
    reader.require(["id", "tokens", "scores", "kept", "filtered_report"]);
    let tokens = 0;
    let keptTokens = 0;
    let threshold: number | null = null;
    for await (const { table } of reader.slices(["kept", ...(reader.has("threshold") ? ["threshold"] : [])])) {
      const kept = column(table, "kept");
      const thresholds = table.getChild("threshold");
      for (let i = 0; i < table.numRows; i++) {
        const flags = kept.get(i) as Vector | null;
        if (!flags) continue;
        for (const flag of flags) {
          tokens++;
          if (flag) keptTokens++;
        }
        if (threshold === null && thresholds && thresholds.get(i) !== null) threshold = Number(thresholds.get(i));
      }
    }
    const examples: FilteringPart["examples"] = [];
    for (const row of spread([...Array(reader.numRows).keys()], opts.maxTokenExamples)) {
      const table = await reader.read(["id", "tokens", "scores", "kept", "filtered_report"], { offset: row, limit: 1 });
      const words = [...((column(table, "tokens").get(0) as Vector | null) ?? [])].map(String);
      const scores = [...((column(table, "scores").get(0) as Vector | null) ?? [])].map(Number);
      const kept = [...((column(table, "kept").get(0) as Vector | null) ?? [])].map(Boolean);
      examples.push({ id: String(column(table, "id").get(0)), filtered: String(column(table, "filtered_report").get(0) ?? ""), tokens: words.map((text, i) => ({ text, score: scores[i] ?? Number.NaN, kept: kept[i] ?? false })) });
    }
    return { state: "ok", data: { reports: reader.numRows, tokens, keptTokens, threshold, examples } };
  });
}

async function gatherPrototypes(outputs: StageOutputs, opts: ReportOptions): Promise<Part<PrototypesPart>> {
  const why = outputs.missing("prototypes");
  if (why) return { state: "absent", message: `${why} There is no prototype space to show.` };
  const protoTable = await withParquet(outputs.file("prototypes", "prototypes.parquet"), async (reader) => {
    reader.require(["prototype_id", "cluster", "subcluster", "sample_id", "size", "response"]);
    return reader.read(["prototype_id", "cluster", "subcluster", "sample_id", "size", "response"]);
  });
  const prototypes = [...Array(protoTable.numRows).keys()].map((i) => ({
    prototypeId: Number(column(protoTable, "prototype_id").get(i)),
    cluster: Number(column(protoTable, "cluster").get(i)),
    subcluster: Number(column(protoTable, "subcluster").get(i)),
    sampleId: (column(protoTable, "sample_id").get(i) as string | null) ?? null,
    size: Number(column(protoTable, "size").get(i)),
    response: (column(protoTable, "response").get(i) as Vector).toArray() as Float32Array,
  }));
  const assignment = new Map<string, number>();
  await withParquet(outputs.file("prototypes", "assignments.parquet"), async (reader) => {
    reader.require(["id", "cluster"]);
    for await (const { table } of reader.slices(["id", "cluster"])) {
      const ids = column(table, "id");
      const clusters = column(table, "cluster");
      for (let i = 0; i < table.numRows; i++) assignment.set(String(ids.get(i)), Number(clusters.get(i)));
    }
  });
  const members = new Map<number, number>();
  for (const cluster of assignment.values()) members.set(cluster, (members.get(cluster) ?? 0) + 1);
  const protoCount = new Map<number, number>();
  for (const p of prototypes) protoCount.set(p.cluster, (protoCount.get(p.cluster) ?? 0) + 1);
  const clusterIds = [...new Set([...members.keys(), ...protoCount.keys()])].filter((c) => c >= 0).sort((a, b) => a - b);
  return {
    state: "ok",
    data: {
      prototypes: prototypes.length,
      clusters: clusterIds.map((cluster) => ({ cluster, members: members.get(cluster) ?? 0, prototypes: protoCount.get(cluster) ?? 0 })),
      ...noiseCounts(outputs.result.stages.find((s) => s.name === "prototypes")?.summary ?? {}, members.get(-1) ?? 0),
      assigned: assignment.size,
      projection: await guarded(() => gatherProjection(outputs, opts, assignment, prototypes)),
      gallery: await guarded(() => gatherGallery(outputs, opts, prototypes)),
    },
  };
}

/** The stage's own noise count (HDBSCAN's); noise given the nearest label is not -1 in assignments.parquet. */
function noiseCounts(summary: Record<string, unknown>, unassigned: number): { noise: number; noiseReassigned: number } {
  const counted = typeof summary.noise === "number" ? summary.noise : undefined;
  if (counted === undefined || counted < unassigned) return { noise: unassigned, noiseReassigned: 0 };
  // Dropped noise stays -1 in assignments.parquet; the rest was given the nearest label.
  return { noise: counted, noiseReassigned: counted - unassigned };
}

async function gatherProjection(
  outputs: StageOutputs,
  opts: ReportOptions,
  assignment: Map<string, number>,
  prototypes: { prototypeId: number; cluster: number; response: Float32Array }[],
): Promise<Part<ProjectionPart>> {
  const why = outputs.missing("embed");
  if (why) return { state: "absent", message: `${why} The projection needs the text embeddings.` };
  return withParquet(outputs.file("embed", "embeddings.parquet"), async (reader) => {
    reader.require(["id", "text_embedding"]);
    // Identical reports embed identically and would hide under one dot: one point per distinct
    // (embedding, label), counting the reports it stands for; sampling, if any, is over those points.
    const distinct = new Map<string, { id: string; cluster: number; row: Float32Array; count: number }>();
    let population = 0;
    for await (const { table } of reader.slices(["id", "text_embedding"], 1024)) {
      const idColumn = column(table, "id");
      const embedding = column(table, "text_embedding");
      for (let i = 0; i < table.numRows; i++) {
        const vector = embedding.get(i) as Vector | null;
        const id = String(idColumn.get(i));
        if (!vector || !assignment.has(id)) continue;
        population++;
        const row = Float32Array.from(vector.toArray() as ArrayLike<number>);
        const cluster = assignment.get(id)!;
        const key = `${cluster}:${createHash("sha1").update(new Uint8Array(row.buffer)).digest("base64")}`;
        const seen = distinct.get(key);
        if (seen) seen.count++;
        else distinct.set(key, { id, cluster, row, count: 1 });
      }
    }
    const all = [...distinct.values()];
    const stride = Math.max(1, Math.ceil(all.length / opts.maxPoints));
    const kept = all.filter((_, i) => i % stride === 0);
    if (population < 2) return { state: "absent", message: `Only ${population} clustered report${population === 1 ? " has" : "s have"} a text embedding; a projection needs at least 2.` };
    if (kept.length < 2) return { state: "absent", message: `All ${population} clustered reports have the same text embedding; there is nothing to project.` };
    const rows = kept.map((k) => k.row);
    const pca = fitPca2(rows, rows[0]!.length);
    const points = kept.map((k) => {
      const [x, y] = project(pca, k.row);
      return { x, y, cluster: k.cluster, id: k.id, count: k.count };
    });
    const projected = prototypes.filter((p) => p.response.length === pca.dim).map((p) => {
      const [x, y] = project(pca, p.response);
      return { x, y, cluster: p.cluster, id: p.prototypeId };
    });
    return { state: "ok", data: { points, prototypes: projected, explained: pca.explained, population } };
  });
}

async function gatherGallery(
  outputs: StageOutputs,
  opts: ReportOptions,
  prototypes: { prototypeId: number; cluster: number; subcluster: number; sampleId: string | null; size: number }[],
): Promise<PrototypesPart["gallery"]> {
  const ordered = roundRobin(prototypes, opts.maxGallery).sort((a, b) => a.cluster - b.cluster || a.subcluster - b.subcluster || a.prototypeId - b.prototypeId);
  const why = outputs.missing("ingest");
  const wanted = new Set(ordered.map((p) => p.sampleId).filter((id): id is string => id !== null));
  const filtered = new Map<string, string>();
  const filterFile = outputs.missing("filter") ? undefined : outputs.optionalFile("filter", "filtered.parquet");
  if (filterFile) {
    await withParquet(filterFile, async (reader) => {
      reader.require(["id", "filtered_report"]);
      for await (const { table } of reader.slices(["id", "filtered_report"])) {
        for (let i = 0; i < table.numRows; i++) {
          const id = String(column(table, "id").get(i));
          if (wanted.has(id)) filtered.set(id, String(column(table, "filtered_report").get(i) ?? ""));
        }
      }
    });
  }
  const rowOf = new Map<string, number>();
  let samples: LazyParquet | undefined;
  if (!why) {
    samples = await LazyParquet.open(outputs.file("ingest", "samples.parquet"));
    for await (const { offset, table } of samples.slices(["id"])) {
      const ids = column(table, "id");
      for (let i = 0; i < table.numRows; i++) if (wanted.has(String(ids.get(i)))) rowOf.set(String(ids.get(i)), offset + i);
    }
  }
  try {
    const cards: Extract<PrototypesPart["gallery"], { state: "ok" }>["data"]["cards"] = [];
    for (const p of ordered) {
      let thumbnail = null;
      let report: string | null = p.sampleId ? filtered.get(p.sampleId) ?? null : null;
      const row = p.sampleId ? rowOf.get(p.sampleId) : undefined;
      if (samples && row !== undefined) {
        const table = await samples.read(["image", "mask", "report_normalized", "report_available"], { offset: row, limit: 1 });
        thumbnail = await thumbnailDataUri(column(table, "image").get(0) as Uint8Array, [{ mask: column(table, "mask").get(0) as Uint8Array, color: TRUTH_COLOR }], opts.thumbnailSize);
        // Only a report the run was allowed to use is shown (report_available); others stay hidden.
        if (report === null && column(table, "report_available").get(0)) report = (column(table, "report_normalized").get(0) as string | null) ?? null;
      }
      cards.push({ prototypeId: p.prototypeId, cluster: p.cluster, subcluster: p.subcluster, size: p.size, sampleId: p.sampleId, thumbnail, report });
    }
    return { state: "ok", data: { total: prototypes.length, cards } };
  } finally {
    samples?.close();
  }
}

/** Up to `limit` items taking one per cluster in turn, so every cluster shows in the gallery. */
function roundRobin<T extends { cluster: number; subcluster: number }>(items: readonly T[], limit: number): T[] {
  const byCluster = new Map<number, T[]>();
  for (const item of [...items].sort((a, b) => a.subcluster - b.subcluster)) {
    let list = byCluster.get(item.cluster);
    if (!list) byCluster.set(item.cluster, (list = []));
    list.push(item);
  }
  const queues = [...byCluster.entries()].sort((a, b) => a[0] - b[0]).map(([, list]) => list);
  const out: T[] = [];
  for (let round = 0; out.length < limit && queues.some((q) => q.length > round); round++) {
    for (const q of queues) if (q[round] && out.length < limit) out.push(q[round]!);
  }
  return out;
}

async function baselineHistory(outputs: StageOutputs, evalMissing: string | undefined): Promise<Part<HistoryPart>> {
  if (evalMissing) return { state: "absent", message: evalMissing };
  const file = outputs.optionalFile("evaluate", "baseline-history.json");
  if (!file) return { state: "absent", message: "This evaluate output has no baseline-history.json: no baseline was trained (baseline: none), or it was written by an evaluate before version 3." };
  return guarded(async () => ({ state: "ok" as const, data: parseHistory(JSON.parse(readFileSync(file, "utf8"))) }));
}

async function gatherTraining(outputs: StageOutputs, opts: ReportOptions): Promise<Part<TrainingPart>> {
  if (!outputs.inPipeline("train") && !outputs.inPipeline("evaluate")) {
    return { state: "absent", message: "This pipeline has no `train` or `evaluate` stage, so there are no loss curves, test metrics or predictions to show." };
  }
  const trainMissing = outputs.missing("train");
  const evalMissing = outputs.missing("evaluate");
  return {
    state: "ok",
    data: {
      history: trainMissing ? { state: "absent", message: trainMissing } : await guarded(async () => ({ state: "ok" as const, data: parseHistory(JSON.parse(readFileSync(outputs.file("train", "history.json"), "utf8"))) })),
      baselineHistory: await baselineHistory(outputs, evalMissing),
      metrics: evalMissing ? { state: "absent", message: evalMissing } : await guarded(() => gatherMetrics(outputs.file("evaluate", "metrics.parquet"))),
      examples: evalMissing ? { state: "absent", message: evalMissing } : await guarded(() => gatherExamples(outputs.file("evaluate", "examples.parquet"), opts)),
    },
  };
}

/**
 * history.json: a list of per-epoch records (`[{epoch, loss, val_dice, ...}]`, or that list under
 * `epochs`/`history`), or columns of equal length (`{epoch: [...], loss: [...]}`). Every numeric
 * field becomes a series; `bestEpoch`/`best_epoch` marks the early-stopping choice.
 */
export function parseHistory(json: unknown): HistoryPart {
  const doc = json as Record<string, unknown>;
  let records: Record<string, unknown>[] | undefined;
  if (Array.isArray(json)) records = json as Record<string, unknown>[];
  else if (doc && typeof doc === "object") {
    const list = doc.epochs ?? doc.history;
    if (Array.isArray(list)) records = list as Record<string, unknown>[];
    else {
      const source = list && typeof list === "object" ? (list as Record<string, unknown>) : doc;
      const columns = Object.entries(source).filter(([, v]) => Array.isArray(v) && v.every((x) => typeof x === "number" || x === null)) as [string, (number | null)[]][];
      if (columns.length) {
        const length = Math.max(...columns.map(([, v]) => v.length));
        records = [...Array(length).keys()].map((i) => Object.fromEntries(columns.map(([k, v]) => [k, v[i]])));
      }
    }
  }
  if (!records?.length) throw new Error("history.json holds no per-epoch records (expected a list of {epoch, loss, ...} or columns of numbers)");
  const names: string[] = [];
  for (const r of records) for (const [k, v] of Object.entries(r)) if (k !== "epoch" && typeof v === "number" && !names.includes(k)) names.push(k);
  const series = names.map((name) => ({
    name,
    points: records!.map((r, i) => ({ x: typeof r.epoch === "number" ? r.epoch : i + 1, y: r[name] as number })).filter((p) => typeof p.y === "number" && Number.isFinite(p.y)),
  }));
  const best = doc && !Array.isArray(json) ? (doc.bestEpoch ?? doc.best_epoch) : undefined;
  return { epochs: records.length, series, bestEpoch: typeof best === "number" ? best : null };
}

async function gatherMetrics(file: string): Promise<Part<MetricsPart>> {
  return withParquet(file, async (reader) => {
    const table = await reader.read(reader.columns);
    const columns = [...reader.columns];
    const rows = [...Array(table.numRows).keys()].map((i) =>
      columns.map((name) => {
        const value = column(table, name).get(i);
        if (value === null || value === undefined) return null;
        if (typeof value === "bigint") return Number(value);
        if (typeof value === "number" || typeof value === "boolean" || typeof value === "string") return value;
        return String(value);
      }),
    );
    const baselineRow = rows.findIndex((row) => row.some((cell) => typeof cell === "string" && /baseline|image[-_ ]only/i.test(cell)));
    return { state: "ok", data: { columns, rows, baselineRow: baselineRow >= 0 ? baselineRow : null } };
  });
}

const IMAGE_COLUMNS = ["image"];
const TRUTH_COLUMNS = ["mask", "truth", "ground_truth", "gt"];
const PREDICTION_COLUMNS = ["prediction", "pred", "predicted", "probability"];
const BASELINE_COLUMNS = ["baseline_prediction", "baseline"];

async function gatherExamples(file: string, opts: ReportOptions): Promise<Part<ExamplesPart>> {
  return withParquet(file, async (reader) => {
    const pick = (candidates: string[], what: string) => {
      const found = candidates.find((c) => reader.has(c));
      if (!found) throw new Error(`${file}: no ${what} column (looked for ${candidates.join(", ")}; columns: ${reader.columns.join(", ")})`);
      return found;
    };
    const imageColumn = pick(IMAGE_COLUMNS, "image");
    const truthColumn = pick(TRUTH_COLUMNS, "ground-truth mask");
    const predictionColumn = pick(PREDICTION_COLUMNS, "prediction");
    const baselineColumn = BASELINE_COLUMNS.find((c) => reader.has(c));
    const idColumn = ["id", "sample_id"].find((c) => reader.has(c));
    const items: ExamplesPart["items"] = [];
    for (const row of spread([...Array(reader.numRows).keys()], opts.maxExamples)) {
      const table = await reader.read(reader.columns, { offset: row, limit: 1 });
      const image = column(table, imageColumn).get(0) as Uint8Array;
      const truth = column(table, truthColumn).get(0) as Uint8Array;
      const prediction = column(table, predictionColumn).get(0) as Uint8Array;
      const baseline = baselineColumn ? (column(table, baselineColumn).get(0) as Uint8Array | null) : null;
      const scores: [string, number][] = [];
      for (const field of table.schema.fields) {
        const value = column(table, field.name).get(0);
        if (typeof value === "number" && !/^(width|height|row|index)$/.test(field.name)) scores.push([field.name, value]);
      }
      items.push({
        id: idColumn ? String(column(table, idColumn).get(0)) : `row ${row + 1}`,
        image: await thumbnailDataUri(image, [], Math.round(opts.thumbnailSize * 4 / 3)),
        truth: await thumbnailDataUri(image, [{ mask: truth, color: TRUTH_COLOR }], Math.round(opts.thumbnailSize * 4 / 3)),
        prediction: await thumbnailDataUri(image, [{ mask: prediction, color: PREDICTION_COLOR }], Math.round(opts.thumbnailSize * 4 / 3)),
        baseline: baseline ? await thumbnailDataUri(image, [{ mask: baseline, color: PREDICTION_COLOR }], Math.round(opts.thumbnailSize * 4 / 3)) : null,
        scores,
      });
    }
    return { state: "ok", data: { total: reader.numRows, items } };
  });
}
