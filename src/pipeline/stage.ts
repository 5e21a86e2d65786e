import type { z } from "zod";
import type { TableContract } from "../io/columns.js";
import type { FileDigester } from "./file-digest.js";
import type { ResolvedPipeline } from "./spec.js";

/**
 * Progress is data: stages emit events, the CLI decides how to draw them (bars on a TTY,
 * nothing in JSON mode). A stage never writes to the terminal itself.
 */
export type ProgressEvent =
  | { kind: "progress"; stage: string; task: string; done: number; total?: number; unit?: string }
  | { kind: "log"; stage: string; level: "info" | "warn"; message: string };

/** An upstream stage's published output, as a downstream stage sees it. */
export interface InputArtifact {
  stage: string;
  /** Content digest of the published output (hash of its manifest). */
  digest: string;
  /** Absolute folder holding the published files (read-only by convention). */
  dir: string;
  /** Output name -> absolute file path. */
  files: Record<string, string>;
  /** The JSON summary the upstream stage returned. */
  summary: StageSummary;
}

/** JSON-serialisable result of a stage run: metrics, counts, anything a report or `--json` shows. */
export type StageSummary = Record<string, unknown>;

/**
 * A check that did not pass, on a stage that still produced its outputs (the run ends `ok`, the
 * stage shows amber). `code` is stable and machine-readable (`prototypes-not-useful`); `figures`
 * carries the numbers the check compared, so a reader can judge by how much.
 */
export interface StageWarning {
  code: string;
  message: string;
  figures?: Record<string, number | string | boolean | null>;
}

/** What `resources()` may use: the run's file digester (stat-cached, shared by the run). */
export interface ResourceTools {
  digester: FileDigester;
}

/**
 * An input a stage declares: a whole upstream stage (`"ingest"`), or one file of it
 * (`"ingest:samples.parquet"`), so the cache key follows only the bytes the stage reads.
 */
export type InputRef = string;

export function parseInputRef(ref: InputRef): { stage: string; file?: string } {
  const colon = ref.indexOf(":");
  return colon < 0 ? { stage: ref } : { stage: ref.slice(0, colon), file: ref.slice(colon + 1) };
}

/** The upstream stages a stage reads (required, then optional ones), each once. */
export function inputStages(stage: Pick<StageDefinition, "inputs" | "optionalInputs">, which: "required" | "optional" | "all" = "all"): string[] {
  const refs = which === "required" ? stage.inputs : which === "optional" ? (stage.optionalInputs ?? []) : [...stage.inputs, ...(stage.optionalInputs ?? [])];
  return [...new Set(refs.map((ref) => parseInputRef(ref).stage))];
}

/** A small key/value store of per-row results (e.g. decoded image, embedding), keyed by content hash. */
export interface RowCache {
  get(key: string): Buffer | undefined;
  put(key: string, value: Buffer): void;
}

export interface StageContext<Params> {
  stage: string;
  /**
   * The stage's code version (StageDefinition.version). It is part of the cache key; a stage
   * that keeps state outside its outputs (training checkpoints) must key that state on it too,
   * or a rerun after a code change would pick up what the old code left.
   */
  version: string;
  pipeline: ResolvedPipeline;
  params: Params;
  inputs: Record<string, InputArtifact>;
  /** Empty folder the stage writes its declared outputs into; published atomically afterwards. */
  outDir: string;
  /** Folder for scratch files, removed after the stage. */
  tmpDir: string;
  /** Row-level cache namespaced by the given name; survives across runs in the workdir. */
  rowCache(namespace: string): RowCache;
  /** Digests this stage declared as external resources (see StageDefinition.resources). */
  resources: Record<string, string>;
  /**
   * True when the run forced this stage (`--force`): it must start from scratch, so state it keeps
   * outside its outputs (training checkpoints) is discarded instead of resumed.
   */
  fresh?: boolean;
  emit(event: ProgressEvent): void;
  log(message: string, level?: "info" | "warn"): void;
  /**
   * Records a warning: the stage still ends `ok`, but the catalog, `status`, the run summary and
   * the report show it, and cached reruns repeat it. Call it from `run` or a sharded stage's
   * `merge` (what a shard on a queue worker records does not travel back).
   */
  warn(code: string, message: string, figures?: StageWarning["figures"]): void;
  signal: AbortSignal;
}

/** One unit of a sharded stage; the payload travels through job queues, so it stays small JSON. */
export interface ShardSpec {
  id: string;
  payload: Record<string, unknown>;
}

export interface StageDefinition<Schema extends z.ZodType = z.ZodType> {
  /** Registered name; also the key under `stages:` in a pipeline file. */
  name: string;
  /** Bump when the implementation changes its output for the same inputs: part of the cache key. */
  version: string;
  description: string;
  params: Schema;
  /**
   * Upstream outputs this stage reads (each stage must be in the pipeline): a stage name, or
   * `stage:file` for one of its files, so the cache key follows that file's bytes only.
   * `ctx.inputs` is keyed by stage name either way.
   */
  inputs: readonly InputRef[];
  /** Upstream inputs that are used when their stage is in the pipeline, and skipped otherwise. */
  optionalInputs?: readonly InputRef[];
  /** File names this stage writes into outDir. */
  outputs: readonly string[];
  /**
   * The columns of its Parquet outputs (each file among `outputs`), declared once: the engine
   * checks the written files against them before publishing, and readers decode through them.
   */
  tables?: readonly TableContract[];
  /**
   * The dataset settings the outputs depend on (default: all of DATASET_SETTINGS). A stage that
   * reads no report leaves out `textAvailability` and `reportKey`, so a text-availability sweep
   * reuses its output; its inputs must then be files whose bytes do not change with them either.
   */
  datasetSettings?: readonly DatasetSetting[];
  /**
   * Params that change how the work is scheduled but never the bytes of the output
   * (concurrency, shard size): left out of the cache key, so tuning them reuses the cache.
   */
  nonKeyParams?: readonly string[];
  /**
   * External things the result depends on that are not upstream outputs (a dataset folder, a
   * model folder): name -> content digest. Computed before the cache lookup, so keep it cheap.
   */
  resources?(pipeline: ResolvedPipeline, params: z.output<Schema>, tools: ResourceTools): Promise<Record<string, string>>;
  /**
   * What a queue worker must offer to run this stage (e.g. "gpu"), fixed or from the params (a
   * training stage forced onto a GPU backend needs a GPU; on `auto` it does not). Such jobs go to
   * their own queue that only `prolearn worker --capabilities gpu` serves. In-process runs ignore it.
   */
  capabilities?: readonly Capability[] | ((params: z.output<Schema>) => readonly Capability[]);
  /** Writes the outputs; the summary may carry `warnings: StageWarning[]` (or call ctx.warn). */
  run?(ctx: StageContext<z.output<Schema>>): Promise<StageSummary>;
  /**
   * Sharded stages split rows into shards that an executor may run in parallel (in-process or on
   * queue workers), then merge them deterministically into outDir.
   */
  sharding?: {
    plan(ctx: StageContext<z.output<Schema>>): Promise<ShardSpec[]>;
    runShard(ctx: StageContext<z.output<Schema>>, shard: ShardSpec, shardDir: string): Promise<void>;
    merge(ctx: StageContext<z.output<Schema>>, shards: { shard: ShardSpec; dir: string }[]): Promise<StageSummary>;
  };
}

/** The dataset settings that are part of a stage's cache key (paths are covered by resource digests). */
export const DATASET_SETTINGS = ["kind", "layout", "reportKey", "textAvailability", "seed"] as const;
export type DatasetSetting = (typeof DATASET_SETTINGS)[number];

/** What a queue worker can offer besides running stages at all. */
export const CAPABILITIES = ["gpu"] as const;
export type Capability = (typeof CAPABILITIES)[number];

/** The capabilities a job of this stage needs with these (resolved) params. */
export function stageCapabilities(stage: StageDefinition, params: unknown): readonly Capability[] {
  const declared = stage.capabilities;
  return typeof declared === "function" ? declared(params) : (declared ?? []);
}

/**
 * Identity helper that keeps the params type and the literal name attached to the definition,
 * so the registry (src/stages.ts) can derive `StageName` and the pipeline's typed input.
 */
export function defineStage<Schema extends z.ZodType, const Name extends string>(
  definition: StageDefinition<Schema> & { name: Name },
): StageDefinition<Schema> & { name: Name } {
  if (!definition.run && !definition.sharding) {
    throw new Error(`stage ${definition.name} defines neither run nor sharding`);
  }
  for (const table of definition.tables ?? []) {
    if (table.stage !== definition.name || !definition.outputs.includes(table.file))
      throw new Error(`stage ${definition.name} declares table ${table.stage}/${table.file}, which is not one of its outputs`);
  }
  return definition;
}
