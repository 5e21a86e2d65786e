import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { ProlearnError, StageError, UsageError } from "../errors.js";
import { canonicalJson, hashJson } from "../util/hash.js";
import { Catalog } from "./catalog.js";
import { tryLockFile, unlockFile } from "./file-lock.js";
import { InProcessExecutor, type Executor, type StageTask } from "./executor.js";
import { setFileStatCache } from "./file-digest.js";
import type { ResolvedPipeline, StageRegistry } from "./spec.js";
import type { InputArtifact, ProgressEvent, StageSummary } from "./stage.js";
import { OutputStore } from "./store.js";

export type StageOutcome = "ran" | "cached" | "failed" | "skipped";

export interface StageResult {
  name: string;
  status: StageOutcome;
  /** Why the stage ran, or why it was cached or skipped, in words. */
  reason: string;
  seconds: number;
  cacheKey: string | null;
  digest: string | null;
  outputs: Record<string, string>;
  summary: StageSummary;
  error?: string;
}

export interface RunResult {
  runId: string;
  pipeline: string;
  status: "ok" | "failed";
  seconds: number;
  stages: StageResult[];
  totals: { ran: number; cached: number; failed: number; skipped: number };
  report?: string;
}

export type EngineEvent =
  | ProgressEvent
  | { kind: "run-start"; runId: string; pipeline: string; stages: string[] }
  | { kind: "stage-start"; stage: string; reason: string }
  | { kind: "stage-end"; result: StageResult }
  | { kind: "run-end"; result: RunResult };

export interface SelectionOptions {
  /** Run this stage and everything it depends on. */
  until?: string;
  /** Run only this stage; its inputs must already be cached. */
  only?: string;
  /** Stage names to run even when cached, or "all". */
  force?: string[] | "all";
}

export interface RunOptions extends SelectionOptions {
  registry: StageRegistry;
  executor?: Executor;
  onEvent?: (event: EngineEvent) => void;
  trigger?: string;
  signal?: AbortSignal;
  /** Called after the stages finish, to write the run's report; its path lands in the result. */
  writeReport?: (context: { pipeline: ResolvedPipeline; result: RunResult; catalog: Catalog }) => Promise<string | undefined>;
}

export interface PlannedStage {
  name: string;
  action: "run" | "cached" | "skip";
  reason: string;
  cacheKey: string | null;
  /** What changed since the last execution of this stage in this pipeline, one line each. */
  changes: string[];
}

interface KeyParts {
  stage: string;
  version: string;
  params: unknown;
  dataset: Record<string, unknown>;
  inputs: Record<string, string>;
  resources: Record<string, string>;
}

/** The dataset settings that can change any stage's result; paths are covered by resource digests. */
function datasetKeyPart(pipeline: ResolvedPipeline): Record<string, unknown> {
  const { kind, layout, reportKey, textAvailability, seed } = pipeline.dataset;
  return { kind, layout, reportKey, textAvailability, seed };
}

export function cacheKeyOf(parts: KeyParts): string {
  return hashJson(parts).slice(0, 32);
}

/** Stages of the pipeline, in registry order, restricted by --until / --only. */
export function selectStages(pipeline: ResolvedPipeline, registry: StageRegistry, options: SelectionOptions): { selected: string[]; all: string[] } {
  const all = [...registry.keys()].filter((name) => name in pipeline.stages);
  const check = (name: string, flag: string) => {
    if (!all.includes(name)) {
      throw new UsageError(`${flag} ${name}: no such stage in pipeline ${pipeline.name}`, { hint: `stages in this pipeline: ${all.join(", ")}` });
    }
  };
  if (options.only) {
    check(options.only, "--only");
    return { selected: [options.only], all };
  }
  if (options.until) {
    check(options.until, "--until");
    const needed = new Set<string>();
    const visit = (name: string) => {
      if (needed.has(name)) return;
      needed.add(name);
      const stage = registry.get(name)!;
      for (const dep of [...stage.inputs, ...(stage.optionalInputs ?? [])]) if (all.includes(dep)) visit(dep);
    };
    visit(options.until);
    return { selected: all.filter((n) => needed.has(n)), all };
  }
  if (Array.isArray(options.force)) for (const name of options.force) check(name, "--force");
  return { selected: all, all };
}

function describeChanges(previous: KeyParts | undefined, current: KeyParts): string[] {
  if (!previous) return [];
  const changes: string[] = [];
  if (previous.version !== current.version) changes.push(`code version ${previous.version} -> ${current.version}`);
  diffValues("params", previous.params, current.params, changes);
  diffValues("dataset", previous.dataset, current.dataset, changes);
  for (const name of new Set([...Object.keys(previous.inputs), ...Object.keys(current.inputs)])) {
    if (previous.inputs[name] !== current.inputs[name]) changes.push(`input ${name} changed (${short(previous.inputs[name])} -> ${short(current.inputs[name])})`);
  }
  for (const name of new Set([...Object.keys(previous.resources), ...Object.keys(current.resources)])) {
    if (previous.resources[name] !== current.resources[name]) changes.push(`resource ${name} changed (${short(previous.resources[name])} -> ${short(current.resources[name])})`);
  }
  return changes;
}

function diffValues(prefix: string, a: unknown, b: unknown, out: string[]): void {
  if (canonicalJson(a) === canonicalJson(b)) return;
  if (a && b && typeof a === "object" && typeof b === "object" && !Array.isArray(a) && !Array.isArray(b)) {
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
      diffValues(`${prefix}.${key}`, (a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], out);
    }
    return;
  }
  out.push(`${prefix}: ${a === undefined ? "(unset)" : JSON.stringify(a)} -> ${b === undefined ? "(unset)" : JSON.stringify(b)}`);
}

function short(digest: string | undefined): string {
  return digest ? digest.slice(0, 8) : "none";
}

function newRunId(): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
  return `${stamp}-${randomBytes(3).toString("hex")}`;
}

/**
 * Computes what `run` would do and why, without running anything. A stage whose inputs will be
 * recomputed cannot know its key yet; it is reported as running because of that upstream stage.
 */
export async function planPipeline(pipeline: ResolvedPipeline, options: SelectionOptions & { registry: StageRegistry }): Promise<PlannedStage[]> {
  const catalog = new Catalog(pipeline.workdir);
  setFileStatCache({ get: (f) => catalog.fileStat(f), put: (e) => catalog.putFileStats(e) });
  try {
    const store = new OutputStore(pipeline.workdir);
    const { selected, all } = selectStages(pipeline, options.registry, options);
    const digests = new Map<string, string | null>();
    const planned: PlannedStage[] = [];
    for (const name of all) {
      const stage = options.registry.get(name)!;
      if (!selected.includes(name)) {
        const parts = await keyParts(pipeline, options.registry, name, digests);
        const cached = parts ? findCached(catalog, store, name, cacheKeyOf(parts)) : undefined;
        digests.set(name, cached?.digest ?? null);
        planned.push({ name, action: "skip", reason: "not selected", cacheKey: parts ? cacheKeyOf(parts) : null, changes: [] });
        continue;
      }
      const parts = await keyParts(pipeline, options.registry, name, digests);
      if (!parts) {
        const upstream = [...stage.inputs, ...(stage.optionalInputs ?? [])].filter((d) => digests.has(d) && digests.get(d) === null);
        digests.set(name, null);
        planned.push({ name, action: "run", reason: `upstream ${upstream.join(", ")} will run`, cacheKey: null, changes: [] });
        continue;
      }
      const cacheKey = cacheKeyOf(parts);
      const previous = lastKeyParts(catalog, pipeline.name, name);
      const forced = options.force === "all" || (Array.isArray(options.force) && options.force.includes(name));
      const cached = findCached(catalog, store, name, cacheKey);
      if (cached && !forced) {
        digests.set(name, cached.digest);
        planned.push({ name, action: "cached", reason: "cached: inputs, params and code unchanged", cacheKey, changes: [] });
      } else {
        digests.set(name, null);
        const changes = describeChanges(previous, parts);
        const reason = forced ? "forced" : changes.length ? changes.join("; ") : previous ? "output missing from the store" : "never ran";
        planned.push({ name, action: "run", reason, cacheKey, changes });
      }
    }
    return planned;
  } finally {
    setFileStatCache(undefined);
    catalog.close();
  }
}

async function keyParts(pipeline: ResolvedPipeline, registry: StageRegistry, name: string, digests: Map<string, string | null>): Promise<KeyParts | undefined> {
  const stage = registry.get(name)!;
  const params = pipeline.stages[name];
  const inputs: Record<string, string> = {};
  for (const dep of stage.inputs) {
    const digest = digests.get(dep);
    if (!digest) return undefined;
    inputs[dep] = digest;
  }
  for (const dep of stage.optionalInputs ?? []) {
    if (!(dep in pipeline.stages)) continue;
    const digest = digests.get(dep);
    if (!digest) return undefined;
    inputs[dep] = digest;
  }
  const resources = stage.resources ? await stage.resources(pipeline, params as never) : {};
  return { stage: name, version: stage.version, params: keyedParams(params, stage.nonKeyParams), dataset: datasetKeyPart(pipeline), inputs, resources };
}

function keyedParams(params: unknown, excluded: readonly string[] | undefined): unknown {
  if (!excluded?.length || !params || typeof params !== "object") return params;
  const kept: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(params)) if (!excluded.includes(key)) kept[key] = value;
  return kept;
}

function lastKeyParts(catalog: Catalog, pipeline: string, stage: string): KeyParts | undefined {
  const last = catalog.lastStageRun(pipeline, stage);
  return last?.keyParts ? (JSON.parse(last.keyParts) as KeyParts) : undefined;
}

function findCached(catalog: Catalog, store: OutputStore, stage: string, cacheKey: string) {
  const published = store.read(stage, cacheKey);
  if (!published) {
    // A catalog row without its folder (deleted by hand) is a miss, never a crash.
    if (catalog.getOutput(cacheKey)) catalog.forgetOutput(cacheKey);
    return undefined;
  }
  return published;
}

/** Runs the pipeline: each selected stage is reused from the store or executed and published. */
export async function runPipeline(pipeline: ResolvedPipeline, options: RunOptions): Promise<RunResult> {
  const started = performance.now();
  const emit = options.onEvent ?? (() => {});
  const registry = options.registry;
  const executor = options.executor ?? new InProcessExecutor(registry);
  const signal = options.signal ?? new AbortController().signal;
  mkdirSync(pipeline.workdir, { recursive: true });
  const catalog = new Catalog(pipeline.workdir);
  setFileStatCache({ get: (f) => catalog.fileStat(f), put: (e) => catalog.putFileStats(e) });
  const store = new OutputStore(pipeline.workdir);
  const runId = newRunId();
  try {
    const liveRuns = new Set(catalog.runs({ limit: 1000 }).filter((r) => r.status === "running").map((r) => r.id));
    store.sweepStaging((id) => liveRuns.has(id));
    const { selected, all } = selectStages(pipeline, registry, options);
    catalog.startRun({ id: runId, pipeline: pipeline.name, pipelineFile: pipeline.file, trigger: options.trigger, executor: executor.name });
    emit({ kind: "run-start", runId, pipeline: pipeline.name, stages: selected });

    const digests = new Map<string, string | null>();
    const artifacts = new Map<string, InputArtifact>();
    const results: StageResult[] = [];
    let failed = false;

    for (const name of all) {
      const stage = registry.get(name)!;
      const stageStart = performance.now();
      const startedAt = new Date().toISOString();
      const isSelected = selected.includes(name);
      const blocked = [...stage.inputs, ...(stage.optionalInputs ?? []).filter((d) => d in pipeline.stages)].filter((d) => !digests.get(d));
      if (failed || blocked.length) {
        const reason = failed ? "an earlier stage failed" : `input ${blocked.join(", ")} has no output${options.only ? " (run it first, without --only)" : ""}`;
        if (isSelected && !failed) {
          throw new UsageError(`cannot run ${name}: ${reason}`);
        }
        digests.set(name, null);
        if (isSelected) results.push({ name, status: "skipped", reason, seconds: 0, cacheKey: null, digest: null, outputs: {}, summary: {} });
        continue;
      }
      const parts = (await keyParts(pipeline, registry, name, digests))!;
      const cacheKey = cacheKeyOf(parts);
      const inputs: Record<string, InputArtifact> = {};
      for (const dep of Object.keys(parts.inputs)) inputs[dep] = artifacts.get(dep)!;

      const cached = findCached(catalog, store, name, cacheKey);
      if (!isSelected) {
        // Not selected (--until / --only): reuse what is there so later selected stages can read it.
        digests.set(name, cached?.digest ?? null);
        if (cached) artifacts.set(name, { stage: name, digest: cached.digest, dir: cached.dir, files: cached.files, summary: cached.manifest.summary });
        continue;
      }
      const forced = options.force === "all" || (Array.isArray(options.force) && options.force.includes(name));
      if (cached && !forced) {
        const result: StageResult = { name, status: "cached", reason: "inputs, params and code unchanged", seconds: (performance.now() - stageStart) / 1000, cacheKey, digest: cached.digest, outputs: cached.files, summary: cached.manifest.summary };
        digests.set(name, cached.digest);
        artifacts.set(name, { stage: name, digest: cached.digest, dir: cached.dir, files: cached.files, summary: cached.manifest.summary });
        catalog.recordOutput({ cacheKey, stage: name, pipeline: pipeline.name, digest: cached.digest, dir: cached.dir, files: cached.files, summary: cached.manifest.summary, createdAt: startedAt });
        catalog.recordStage({ runId, stage: name, status: "cached", cacheKey, reason: result.reason, startedAt, seconds: result.seconds, error: null, outputDigest: cached.digest, keyParts: canonicalJson(parts) });
        results.push(result);
        emit({ kind: "stage-end", result });
        continue;
      }
      const changes = describeChanges(lastKeyParts(catalog, pipeline.name, name), parts);
      const reason = forced ? "forced" : changes.length ? changes.join("; ") : catalog.lastStageRun(pipeline.name, name) ? "output missing from the store" : "never ran";
      catalog.recordStage({ runId, stage: name, status: "running", cacheKey, reason, startedAt, seconds: null, error: null, outputDigest: null, keyParts: canonicalJson(parts) });
      emit({ kind: "stage-start", stage: name, reason });

      let result: StageResult;
      try {
        const published = await withKeyLock(pipeline.workdir, cacheKey, async () => {
          // Another process may have published this key while we waited for the lock.
          const raced = !forced ? store.read(name, cacheKey) : undefined;
          if (raced) return raced;
          const staging = store.makeStaging(runId, name);
          try {
            const task: StageTask = { runId, stage: name, cacheKey, pipeline, params: pipeline.stages[name], inputs, resources: parts.resources, outDir: staging.outDir, tmpDir: staging.tmpDir };
            const summary = await executor.execute(task, emit, signal);
            if (forced) rmSync(store.outputDir(name, cacheKey), { recursive: true, force: true });
            return await store.publish(name, cacheKey, staging.outDir, stage.outputs, summary);
          } finally {
            rmSync(staging.root, { recursive: true, force: true });
          }
        });
        catalog.recordOutput({ cacheKey, stage: name, pipeline: pipeline.name, digest: published.digest, dir: published.dir, files: published.files, summary: published.manifest.summary, createdAt: new Date().toISOString() });
        result = { name, status: "ran", reason, seconds: (performance.now() - stageStart) / 1000, cacheKey, digest: published.digest, outputs: published.files, summary: published.manifest.summary };
        digests.set(name, published.digest);
        artifacts.set(name, { stage: name, digest: published.digest, dir: published.dir, files: published.files, summary: published.manifest.summary });
      } catch (error) {
        failed = true;
        const message = error instanceof ProlearnError ? error.format() : (error as Error)?.message ?? String(error);
        result = { name, status: "failed", reason, seconds: (performance.now() - stageStart) / 1000, cacheKey, digest: null, outputs: {}, summary: {}, error: message };
        digests.set(name, null);
      }
      catalog.recordStage({ runId, stage: name, status: result.status, cacheKey, reason, startedAt, seconds: result.seconds, error: result.error ?? null, outputDigest: result.digest, keyParts: canonicalJson(parts) });
      results.push(result);
      emit({ kind: "stage-end", result });
    }

    const totals = { ran: 0, cached: 0, failed: 0, skipped: 0 };
    for (const r of results) totals[r.status]++;
    const result: RunResult = { runId, pipeline: pipeline.name, status: failed ? "failed" : "ok", seconds: (performance.now() - started) / 1000, stages: results, totals };
    if (options.writeReport) {
      try {
        result.report = await options.writeReport({ pipeline, result, catalog });
      } catch (error) {
        emit({ kind: "log", stage: "report", level: "warn", message: `could not write the run report: ${(error as Error).message}` });
      }
    }
    result.seconds = (performance.now() - started) / 1000;
    catalog.finishRun(runId, result.status, result.report);
    emit({ kind: "run-end", result });
    return result;
  } catch (error) {
    catalog.finishRun(runId, "failed");
    throw error;
  } finally {
    setFileStatCache(undefined);
    catalog.close();
  }
}

/**
 * Cross-process lock on one cache key, so two runs sharing a workdir never compute the same
 * stage output at once. A lock whose holder died (kill -9) is taken over.
 */
export async function withKeyLock<T>(workdir: string, cacheKey: string, fn: () => Promise<T>): Promise<T> {
  const file = path.join(workdir, "locks", `${cacheKey}.lock`);
  while (!tryLockFile(file)) await sleep(200);
  try {
    return await fn();
  } finally {
    unlockFile(file);
  }
}

export { StageError };
