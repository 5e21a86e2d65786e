import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ProgressEvent, RowCache, StageContext, StageSummary } from "../../src/pipeline/stage.js";
import type { ResolvedPipeline, DatasetKind, DatasetLayout } from "../../src/pipeline/spec.js";
import { ingestParamsSchema, ingestStage, type IngestParams } from "../../src/ingest/stage.js";
import { sha256 } from "../../src/util/hash.js";

/** Where the real subsets live: $PROLEARN_REAL_DATA or ../shared/data beside the repo. */
export const REAL_DATA = process.env.PROLEARN_REAL_DATA ?? path.resolve(import.meta.dirname, "../../../shared/data");

export function realDataPath(...parts: string[]): string | undefined {
  const p = path.join(REAL_DATA, ...parts);
  return existsSync(p) ? p : undefined;
}

export function scratchDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `prolearn-${prefix}-`));
}

/** A file-per-key row cache like the engine's, counting hits and writes. */
export function fileRowCache(dir: string): RowCache & { hits: number; puts: number } {
  const cache = {
    hits: 0,
    puts: 0,
    get(key: string) {
      const file = path.join(dir, sha256(key));
      if (!existsSync(file)) return undefined;
      cache.hits++;
      return readFileSync(file);
    },
    put(key: string, value: Buffer) {
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, sha256(key)), value);
      cache.puts++;
    },
  };
  return cache;
}

export interface DatasetOptions {
  kind: DatasetKind;
  root: string;
  layout?: DatasetLayout;
  reports?: string;
  reportKey?: string;
  textAvailability?: number;
  seed?: number;
}

export function pipelineFor(options: DatasetOptions, workdir: string): ResolvedPipeline {
  return {
    name: "ingest-test",
    baseDir: workdir,
    workdir,
    dataset: {
      kind: options.kind,
      root: path.resolve(options.root),
      layout: options.layout ?? "auto",
      reports: options.reports ? path.resolve(options.reports) : undefined,
      reportKey: options.reportKey ?? "p6",
      textAvailability: options.textAvailability ?? 1,
      seed: options.seed ?? 42,
    },
    stages: { ingest: {} },
  };
}

/**
 * Runs the ingest stage through its sharding functions with a hand-made context, as an
 * in-process executor would: plan, every shard, merge. Returns the summary, the output folder
 * and the log lines.
 */
export async function runIngest(
  options: DatasetOptions,
  params: Partial<IngestParams> = {},
  extra: { workdir?: string; cache?: RowCache } = {},
): Promise<{ summary: StageSummary; outDir: string; logs: string[]; events: ProgressEvent[]; workdir: string }> {
  const workdir = extra.workdir ?? scratchDir("ingest");
  const outDir = mkdtempSync(path.join(workdir, "out-"));
  const tmpDir = mkdtempSync(path.join(workdir, "tmp-"));
  const logs: string[] = [];
  const events: ProgressEvent[] = [];
  const cache = extra.cache ?? fileRowCache(path.join(workdir, "rows"));
  const pipeline = pipelineFor(options, workdir);
  const ctx: StageContext<IngestParams> = {
    stage: "ingest",
    version: ingestStage.version,
    pipeline,
    params: ingestParamsSchema.parse(params),
    inputs: {},
    outDir,
    tmpDir,
    rowCache: () => cache,
    resources: {},
    emit: (e) => events.push(e),
    log: (message) => logs.push(message),
    warn: (_code, message) => logs.push(message),
    signal: new AbortController().signal,
  };
  const sharding = ingestStage.sharding!;
  const shards = await sharding.plan(ctx);
  // Shards travel through a queue as JSON: make sure they survive that.
  const travelled = shards.map((s) => JSON.parse(JSON.stringify(s)) as typeof s);
  const done: { shard: (typeof shards)[number]; dir: string }[] = [];
  for (const shard of [...travelled].reverse()) {
    const dir = path.join(tmpDir, shard.id);
    mkdirSync(dir, { recursive: true });
    await sharding.runShard(ctx, shard, dir);
    done.push({ shard, dir });
  }
  const summary = await sharding.merge(ctx, done.reverse());
  return { summary, outDir, logs, events, workdir };
}
