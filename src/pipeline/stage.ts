import type { z } from "zod";
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
  emit(event: ProgressEvent): void;
  log(message: string, level?: "info" | "warn"): void;
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
  /** Upstream stage names whose outputs this stage reads (each must be in the pipeline). */
  inputs: readonly string[];
  /** Upstream stages that are used when present in the pipeline, and skipped otherwise. */
  optionalInputs?: readonly string[];
  /** File names this stage writes into outDir. */
  outputs: readonly string[];
  /**
   * Params that change how the work is scheduled but never the bytes of the output
   * (concurrency, shard size): left out of the cache key, so tuning them reuses the cache.
   */
  nonKeyParams?: readonly string[];
  /**
   * External things the result depends on that are not upstream outputs (a dataset folder, a
   * model folder): name -> content digest. Computed before the cache lookup, so keep it cheap.
   */
  resources?(pipeline: ResolvedPipeline, params: z.output<Schema>): Promise<Record<string, string>>;
  /**
   * What a queue worker must offer to run this stage (e.g. "gpu"), fixed or from the params (a
   * training stage forced onto a GPU backend needs a GPU; on `auto` it does not). Such jobs go to
   * their own queue that only `prolearn worker --capabilities gpu` serves. In-process runs ignore it.
   */
  capabilities?: readonly Capability[] | ((params: z.output<Schema>) => readonly Capability[]);
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

/** What a queue worker can offer besides running stages at all. */
export const CAPABILITIES = ["gpu"] as const;
export type Capability = (typeof CAPABILITIES)[number];

/** The capabilities a job of this stage needs with these (resolved) params. */
export function stageCapabilities(stage: StageDefinition, params: unknown): readonly Capability[] {
  const declared = stage.capabilities;
  return typeof declared === "function" ? declared(params) : (declared ?? []);
}

/** Identity helper that keeps the params type attached to the definition. */
export function defineStage<Schema extends z.ZodType>(definition: StageDefinition<Schema>): StageDefinition<Schema> {
  if (!definition.run && !definition.sharding) {
    throw new Error(`stage ${definition.name} defines neither run nor sharding`);
  }
  return definition;
}
