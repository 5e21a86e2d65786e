import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { ProlearnError, StageError, UsageError } from "../errors.js";
import { Catalog } from "./catalog.js";
import { cacheKeyOf, decide, formatReason, formatReasons, type Action, type Decision, type KeyParts, type Reason } from "./decision.js";
import { tryLockFile, unlockFile } from "./file-lock.js";
import { InProcessExecutor, type Executor, type StageTask } from "./executor.js";
import { FileDigester } from "./file-digest.js";
import { RunRecorder } from "./recorder.js";
import type { ResolvedPipeline, StageRegistry } from "./spec.js";
import {
  DATASET_SETTINGS,
  inputStages,
  parseInputRef,
  type DatasetSetting,
  type InputArtifact,
  type ProgressEvent,
  type StageDefinition,
  type StageSummary,
  type StageWarning,
} from "./stage.js";
import { OutputStore, type PublishedOutput } from "./store.js";
import { takeWarnings } from "./warnings.js";
import { pipelinePointerDir, updatePointers } from "./pointers.js";

export { cacheKeyOf, decide, formatReason, formatReasons, type Action, type Decision, type KeyParts, type Reason };

export type StageOutcome = "ran" | "cached" | "failed" | "skipped";

export interface StageResult {
  name: string;
  status: StageOutcome;
  /** Why the stage ran, or why it was cached or skipped, in words (formatReasons of `reasons`). */
  reason: string;
  /** The same, as data (decision.ts). */
  reasons: Reason[];
  seconds: number;
  cacheKey: string | null;
  digest: string | null;
  outputs: Record<string, string>;
  summary: StageSummary;
  /** Checks that did not pass; a cached stage repeats those of the run that produced its output. */
  warnings: StageWarning[];
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
  | { kind: "stage-start"; stage: string; reason: string; reasons: Reason[] }
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
  action: Action;
  /** The reasons in words, exactly as `run` records them. */
  reason: string;
  reasons: Reason[];
  cacheKey: string | null;
  /** What changed since the last execution of this stage in this pipeline, one line each. */
  changes: string[];
}

const CHANGE_CODES: ReadonlySet<Reason["code"]> = new Set(["param-changed", "dataset-changed", "input-changed", "resource-changed", "code-changed"]);

/**
 * The dataset settings that can change a stage's result (all of them unless the stage names
 * fewer, as an image-only stage does); paths are covered by resource digests.
 */
function datasetKeyPart(pipeline: ResolvedPipeline, settings: readonly DatasetSetting[] = DATASET_SETTINGS): Record<string, unknown> {
  return Object.fromEntries(DATASET_SETTINGS.filter((name) => settings.includes(name)).map((name) => [name, pipeline.dataset[name]]));
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
      for (const dep of inputStages(registry.get(name)!)) if (all.includes(dep)) visit(dep);
    };
    visit(options.until);
    return { selected: all.filter((n) => needed.has(n)), all };
  }
  if (Array.isArray(options.force)) for (const name of options.force) check(name, "--force");
  return { selected: all, all };
}

function newRunId(): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
  return `${stamp}-${randomBytes(3).toString("hex")}`;
}

// ---------------------------------------------------------------------------------------------
// State: what the decision needs, gathered the same way for plan and run.

/** Where each upstream stage stands while the engine walks the pipeline. */
type Upstream = { state: "ready"; output: PublishedOutput } | { state: "pending" } | { state: "missing" };

/** One plan or run over one workdir: its catalog, store, per-run digester and selection. */
interface Session {
  pipeline: ResolvedPipeline;
  registry: StageRegistry;
  catalog: Catalog;
  store: OutputStore;
  digester: FileDigester;
  selected: ReadonlySet<string>;
  all: string[];
  options: SelectionOptions;
  upstream: Map<string, Upstream>;
  /** A catalog row whose store folder is gone (deleted by hand): a run forgets it through its recorder; a plan writes nothing. */
  onStaleOutput: (cacheKey: string) => void;
}

function openSession(pipeline: ResolvedPipeline, registry: StageRegistry, options: SelectionOptions): Session {
  const catalog = new Catalog(pipeline.workdir);
  try {
    const { selected, all } = selectStages(pipeline, registry, options);
    // The catalog's stat cache behind this session's digester only: other pipelines running in
    // this process (the scheduler) have their own.
    const digester = new FileDigester(catalog.fileStatCache());
    // The store checks outputs before reuse with the same digester: a published file whose size
    // and mtime are as recorded at publish costs a stat, not a re-hash.
    return {
      pipeline,
      registry,
      catalog,
      store: new OutputStore(pipeline.workdir, digester),
      digester,
      selected: new Set(selected),
      all,
      options,
      upstream: new Map(),
      onStaleOutput: () => {},
    };
  } catch (error) {
    catalog.close();
    throw error;
  }
}

/** A stage's decision with what it was made from: the key parts and a reusable output, if any. */
interface Assessment {
  decision: Decision;
  parts?: KeyParts;
  cacheKey: string | null;
  cached?: PublishedOutput;
}

/** Gathers a stage's state (upstream, key, store, history) and decides. */
async function assess(session: Session, name: string, runFailed: boolean): Promise<Assessment> {
  const { pipeline, catalog, options } = session;
  const stage = session.registry.get(name)!;
  const missingInputs: string[] = [];
  const pendingInputs: string[] = [];
  for (const dep of presentInputStages(stage, pipeline)) {
    const state = session.upstream.get(dep)?.state ?? "missing";
    if (state === "missing") missingInputs.push(dep);
    else if (state === "pending") pendingInputs.push(dep);
  }
  const parts = missingInputs.length || pendingInputs.length ? undefined : await keyParts(session, stage);
  const cacheKey = parts ? cacheKeyOf(parts) : null;
  const { output: cached, damaged } = cacheKey ? await findCached(session, name, cacheKey) : {};
  const last = catalog.lastStageRun(pipeline.name, name);
  const decision = decide({
    selected: session.selected.has(name),
    forced: options.force === "all" || (Array.isArray(options.force) && options.force.includes(name)),
    runFailed,
    missingInputs,
    pendingInputs,
    parts,
    cached: cached !== undefined,
    damaged,
    previous: last?.keyParts ? (JSON.parse(last.keyParts) as KeyParts) : undefined,
    ranBefore: last !== undefined,
    only: options.only !== undefined,
  });
  return { decision, parts, cacheKey, cached };
}

/** The input refs of a stage that apply in this pipeline: required ones, and optional ones whose stage is present. */
function presentInputRefs(stage: StageDefinition, pipeline: ResolvedPipeline): string[] {
  return [...stage.inputs, ...(stage.optionalInputs ?? []).filter((ref) => parseInputRef(ref).stage in pipeline.stages)];
}

function presentInputStages(stage: StageDefinition, pipeline: ResolvedPipeline): string[] {
  return [...new Set(presentInputRefs(stage, pipeline).map((ref) => parseInputRef(ref).stage))];
}

/** The cache key's parts; every upstream output must be ready. A file input keys on that file's bytes. */
async function keyParts(session: Session, stage: StageDefinition): Promise<KeyParts> {
  const { pipeline } = session;
  const inputs: Record<string, string> = {};
  for (const ref of presentInputRefs(stage, pipeline)) {
    const { stage: dep, file } = parseInputRef(ref);
    const upstream = session.upstream.get(dep);
    if (upstream?.state !== "ready") throw new Error(`internal: ${stage.name} keyed before ${dep} is ready`);
    if (!file) {
      inputs[ref] = upstream.output.digest;
      continue;
    }
    const entry = upstream.output.manifest.files[file];
    if (!entry)
      throw new StageError(stage.name, `stage ${stage.name} reads ${file} of stage ${dep}, which ${dep} does not publish`, {
        hint: `${dep} publishes: ${Object.keys(upstream.output.manifest.files).join(", ")}`,
      });
    inputs[ref] = entry.sha256;
  }
  const resources = stage.resources ? await stage.resources(pipeline, pipeline.stages[stage.name] as never, { digester: session.digester }) : {};
  return keyPartsOf(stage, pipeline, inputs, resources);
}

/**
 * A stage's key parts from the digests of what it reads: its name and code version, its key
 * params (non-key ones left out), the dataset settings, its inputs and resources. Pure, so the
 * contract test pins every registered stage's key (golden keys).
 */
export function keyPartsOf(stage: StageDefinition, pipeline: ResolvedPipeline, inputs: Record<string, string>, resources: Record<string, string>): KeyParts {
  return {
    stage: stage.name,
    version: stage.version,
    params: keyedParams(pipeline.stages[stage.name], stage.nonKeyParams),
    dataset: datasetKeyPart(pipeline, stage.datasetSettings),
    inputs,
    resources,
  };
}

function keyedParams(params: unknown, excluded: readonly string[] | undefined): unknown {
  if (!excluded?.length || !params || typeof params !== "object") return params;
  const kept: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(params)) if (!excluded.includes(key)) kept[key] = value;
  return kept;
}

/**
 * The store's entry for a key, checked (sizes, and hashes through the size+mtime stat cache): a
 * damaged entry is a cache miss that names its problems, never a crash and never reused.
 */
async function findCached(session: Session, stage: string, cacheKey: string): Promise<{ output?: PublishedOutput; damaged?: string[] }> {
  const entry = await session.store.check(stage, cacheKey);
  if (entry.state === "intact") return { output: entry.output };
  // A catalog row without its folder (deleted by hand, or damaged) is a miss, never a crash.
  if (session.catalog.getOutput(cacheKey)) session.onStaleOutput(cacheKey);
  return entry.state === "damaged" ? { damaged: entry.problems } : {};
}

function inputArtifacts(session: Session, stage: StageDefinition): Record<string, InputArtifact> {
  const inputs: Record<string, InputArtifact> = {};
  for (const dep of presentInputStages(stage, session.pipeline)) {
    const upstream = session.upstream.get(dep);
    if (upstream?.state === "ready") inputs[dep] = artifactOf(dep, upstream.output);
  }
  return inputs;
}

function artifactOf(stage: string, output: PublishedOutput): InputArtifact {
  return { stage, digest: output.digest, dir: output.dir, files: output.files, summary: output.manifest.summary };
}

// ---------------------------------------------------------------------------------------------
// Plan: decide every stage, execute nothing.

/**
 * Computes what `run` would do and why, without running anything. A stage whose inputs will be
 * recomputed cannot know its key yet; it is reported as running because of that upstream stage.
 */
export async function planPipeline(pipeline: ResolvedPipeline, options: SelectionOptions & { registry: StageRegistry }): Promise<PlannedStage[]> {
  const session = openSession(pipeline, options.registry, options);
  try {
    const planned: PlannedStage[] = [];
    for (const name of session.all) {
      const { decision, cacheKey, cached } = await assess(session, name, false);
      session.upstream.set(name, decision.action === "run" ? { state: "pending" } : cached ? { state: "ready", output: cached } : { state: "missing" });
      const changes = decision.reasons.filter((r) => CHANGE_CODES.has(r.code)).map(formatReason);
      planned.push({ name, action: decision.action, reason: formatReasons(decision.reasons), reasons: decision.reasons, cacheKey, changes });
    }
    return planned;
  } finally {
    session.catalog.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Run: decide -> execute -> record, stage by stage.

interface RunContext {
  session: Session;
  recorder: RunRecorder;
  executor: Executor;
  emit: (event: EngineEvent) => void;
  signal: AbortSignal;
}

/** Runs the pipeline: each selected stage is reused from the store or executed and published. */
export async function runPipeline(pipeline: ResolvedPipeline, options: RunOptions): Promise<RunResult> {
  const started = performance.now();
  mkdirSync(pipeline.workdir, { recursive: true });
  const session = openSession(pipeline, options.registry, options);
  const executor = options.executor ?? new InProcessExecutor(options.registry);
  const recorder = new RunRecorder(session.catalog, newRunId(), pipeline.name);
  session.onStaleOutput = (cacheKey) => recorder.forgetOutput(cacheKey);
  const run: RunContext = {
    session,
    recorder,
    executor,
    emit: options.onEvent ?? (() => {}),
    signal: options.signal ?? new AbortController().signal,
  };
  try {
    sweepAbandonedStaging(session);
    run.recorder.start({ pipelineFile: pipeline.file, trigger: options.trigger, executor: executor.name });
    run.emit({ kind: "run-start", runId: run.recorder.runId, pipeline: pipeline.name, stages: session.all.filter((n) => session.selected.has(n)) });
    const stages = await runStages(run);
    return await finishRun(run, stages, started, options.writeReport);
  } catch (error) {
    run.recorder.finish("failed", undefined, error instanceof ProlearnError ? error.format() : ((error as Error)?.message ?? String(error)));
    throw error;
  } finally {
    session.catalog.close();
  }
}

/** Staging folders of runs that are no longer running (killed mid-stage) are never trusted: remove them. */
function sweepAbandonedStaging(session: Session): void {
  const liveRuns = new Set(
    session.catalog
      .runs({ limit: 1000 })
      .filter((r) => r.status === "running")
      .map((r) => r.id),
  );
  session.store.sweepStaging((id) => liveRuns.has(id));
}

/** Walks the stages in order: decide, then reuse, execute or skip; results of selected stages only. */
async function runStages(run: RunContext): Promise<StageResult[]> {
  const { session } = run;
  const results: StageResult[] = [];
  let failed = false;
  for (const name of session.all) {
    const stageStart = performance.now();
    const assessment = await assess(session, name, failed);
    const { decision } = assessment;
    if (decision.action === "skip") {
      if (!session.selected.has(name)) {
        // Not selected (--until / --only): reuse what is there so later selected stages can read it.
        session.upstream.set(name, assessment.cached ? { state: "ready", output: assessment.cached } : { state: "missing" });
        continue;
      }
      if (decision.reasons[0]?.code === "input-has-no-output") throw new UsageError(`cannot run ${name}: ${formatReasons(decision.reasons)}`);
      session.upstream.set(name, { state: "missing" });
      results.push({
        name,
        status: "skipped",
        reason: formatReasons(decision.reasons),
        reasons: decision.reasons,
        seconds: 0,
        cacheKey: null,
        digest: null,
        outputs: {},
        summary: {},
        warnings: [],
      });
      continue;
    }
    const result = decision.action === "cached" ? reuseStage(run, name, assessment, stageStart) : await executeStage(run, name, assessment, stageStart);
    if (result.status === "failed") failed = true;
    results.push(result);
    run.emit({ kind: "stage-end", result });
  }
  return results;
}

/** A cached stage: its published output, and the warnings of the execution that produced it. */
function reuseStage(run: RunContext, name: string, assessment: Assessment, stageStart: number): StageResult {
  const { session } = run;
  const output = assessment.cached!;
  const startedAt = new Date().toISOString();
  const warnings = session.catalog.producerWarnings(name, assessment.cacheKey!);
  const result = outputResult(name, "cached", assessment.decision.reasons, assessment.cacheKey!, output, warnings, stageStart);
  session.upstream.set(name, { state: "ready", output });
  run.recorder.stageFinished({
    stage: name,
    status: "cached",
    reasons: result.reasons,
    cacheKey: assessment.cacheKey!,
    parts: assessment.parts!,
    startedAt,
    seconds: result.seconds,
    output,
    warnings,
  });
  return result;
}

/** Executes a stage under its key lock and publishes its output; a failure becomes a failed result. */
async function executeStage(run: RunContext, name: string, assessment: Assessment, stageStart: number): Promise<StageResult> {
  const { session, recorder } = run;
  const { decision, parts } = assessment;
  const cacheKey = assessment.cacheKey!;
  const startedAt = new Date().toISOString();
  recorder.stageStarted(name, cacheKey, decision.reasons, parts!, startedAt);
  run.emit({ kind: "stage-start", stage: name, reason: formatReasons(decision.reasons), reasons: decision.reasons });
  let result: StageResult;
  try {
    const produced = await withKeyLock(session.pipeline.workdir, cacheKey, () => produce(run, name, assessment));
    // Another run published this key while we waited for the lock: we reused its work, so this
    // run records the stage as cached (with that run's warnings), not as ran.
    const status = produced.reused ? "cached" : "ran";
    const reasons: Reason[] = produced.reused ? [{ code: "published-while-waiting" }] : decision.reasons;
    const warnings = produced.reused ? session.catalog.producerWarnings(name, cacheKey) : produced.warnings;
    result = outputResult(name, status, reasons, cacheKey, produced.output, warnings, stageStart);
    session.upstream.set(name, { state: "ready", output: produced.output });
    recorder.stageFinished({ stage: name, status, reasons, cacheKey, parts: parts!, startedAt, seconds: result.seconds, output: produced.output, warnings });
  } catch (error) {
    const message = StageError.of(name, error).format();
    result = {
      name,
      status: "failed",
      reason: formatReasons(decision.reasons),
      reasons: decision.reasons,
      seconds: (performance.now() - stageStart) / 1000,
      cacheKey,
      digest: null,
      outputs: {},
      summary: {},
      warnings: [],
      error: message,
    };
    session.upstream.set(name, { state: "missing" });
    recorder.stageFinished({
      stage: name,
      status: "failed",
      reasons: decision.reasons,
      cacheKey,
      parts: parts!,
      startedAt,
      seconds: result.seconds,
      warnings: [],
      error: message,
    });
  }
  return result;
}

/** Inside the key lock: reuse what another run just published, or execute into staging and publish. */
async function produce(run: RunContext, name: string, assessment: Assessment): Promise<{ output: PublishedOutput; reused: boolean; warnings: StageWarning[] }> {
  const { session } = run;
  const { store, pipeline } = session;
  const stage = session.registry.get(name)!;
  const cacheKey = assessment.cacheKey!;
  const forced = assessment.decision.reasons.some((r) => r.code === "forced");
  const existing = await store.check(name, cacheKey);
  if (existing.state === "intact" && !forced) return { output: existing.output, reused: true, warnings: [] };
  // A damaged entry (a file deleted, truncated or changed by hand) must not wedge the publish:
  // it is moved to damaged/store/ for inspection, and this execution takes its place.
  if (existing.state === "damaged") store.setAside(name, cacheKey);
  const staging = store.makeStaging(run.recorder.runId, name);
  try {
    const task: StageTask = {
      runId: run.recorder.runId,
      stage: name,
      cacheKey,
      pipeline,
      params: pipeline.stages[name],
      inputs: inputArtifacts(session, stage),
      resources: assessment.parts!.resources,
      outDir: staging.outDir,
      tmpDir: staging.tmpDir,
      fresh: forced,
    };
    const { summary, warnings } = takeWarnings(name, await run.executor.execute(task, run.emit, run.signal));
    if (stage.tables?.length) await (await import("../io/tables.js")).checkOutputTables(stage.tables, staging.outDir);
    if (forced) rmSync(store.outputDir(name, cacheKey), { recursive: true, force: true });
    return { output: await store.publish(name, cacheKey, staging.outDir, stage.outputs, summary), reused: false, warnings };
  } finally {
    rmSync(staging.root, { recursive: true, force: true });
  }
}

function outputResult(
  name: string,
  status: "ran" | "cached",
  reasons: Reason[],
  cacheKey: string,
  output: PublishedOutput,
  warnings: StageWarning[],
  stageStart: number,
): StageResult {
  return {
    name,
    status,
    reason: formatReasons(reasons),
    reasons,
    seconds: (performance.now() - stageStart) / 1000,
    cacheKey,
    digest: output.digest,
    outputs: output.files,
    summary: output.manifest.summary,
    warnings,
  };
}

/** Totals, the report, the run's final record and its end event. */
async function finishRun(run: RunContext, stages: StageResult[], started: number, writeReport: RunOptions["writeReport"]): Promise<RunResult> {
  const totals = { ran: 0, cached: 0, failed: 0, skipped: 0 };
  for (const r of stages) totals[r.status]++;
  const result: RunResult = {
    runId: run.recorder.runId,
    pipeline: run.session.pipeline.name,
    status: totals.failed ? "failed" : "ok",
    seconds: (performance.now() - started) / 1000,
    stages,
    totals,
  };
  if (writeReport) {
    try {
      result.report = await writeReport({ pipeline: run.session.pipeline, result, catalog: run.session.catalog });
    } catch (error) {
      run.emit({ kind: "log", stage: "report", level: "warn", message: `could not write the run report: ${(error as Error).message}` });
    }
  }
  // result.seconds stays the time before the report: the report's header shows it, and the CLI's
  // summary line prints the same number.
  run.recorder.finish(result.status, result.report);
  if (result.status === "ok") {
    const { pipeline } = run.session;
    try {
      updatePointers(
        pipeline.workdir,
        pipeline.name,
        result.runId,
        stages.filter((r) => r.status === "ran" || r.status === "cached"),
      );
    } catch (error) {
      run.emit({
        kind: "log",
        stage: "outputs",
        level: "warn",
        message: `could not refresh ${pipelinePointerDir(pipeline.workdir, pipeline.name)}: ${(error as Error).message}`,
      });
    }
  }
  run.emit({ kind: "run-end", result });
  return result;
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
