import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import PQueue from "p-queue";
import { StageError } from "../errors.js";
import type { StageRegistry, ResolvedPipeline } from "./spec.js";
import type { InputArtifact, ProgressEvent, ShardSpec, StageContext, StageSummary } from "./stage.js";
import { OutputStore } from "./store.js";
import { warningCollector, withCollectedWarnings } from "./warnings.js";

/**
 * Everything an executor needs to run one stage, as plain JSON: it can cross a process or a
 * queue. Stages are named, never shipped as code; paths point into the workdir.
 */
export interface StageTask {
  runId: string;
  stage: string;
  cacheKey: string;
  pipeline: ResolvedPipeline;
  params: unknown;
  inputs: Record<string, InputArtifact>;
  resources: Record<string, string>;
  /** Staging folder the outputs must end up in. */
  outDir: string;
  /** Scratch folder; shard outputs go below it. */
  tmpDir: string;
  /** Forced (`run --force`): state kept outside the outputs (training checkpoints) is discarded, not resumed. */
  fresh?: boolean;
}

export interface Executor {
  readonly name: string;
  /** Runs the stage so that its declared outputs are in task.outDir; returns its summary. */
  execute(task: StageTask, emit: (event: ProgressEvent) => void, signal: AbortSignal): Promise<StageSummary>;
  close?(): Promise<void>;
}

export function makeStageContext(task: StageTask, registry: StageRegistry, emit: (event: ProgressEvent) => void, signal: AbortSignal): StageContext<unknown> {
  const definition = registry.get(task.stage);
  if (!definition) throw new StageError(task.stage, `no stage named ${task.stage} is registered`);
  const store = new OutputStore(task.pipeline.workdir);
  const warnings = warningCollector();
  const ctx: StageContext<unknown> = {
    stage: task.stage,
    version: definition.version,
    pipeline: task.pipeline,
    params: task.params,
    inputs: task.inputs,
    outDir: task.outDir,
    tmpDir: task.tmpDir,
    resources: task.resources,
    fresh: task.fresh ?? false,
    rowCache: (namespace) => store.rowCache(namespace),
    emit,
    log: (message, level = "info") => emit({ kind: "log", stage: task.stage, level, message }),
    warn: warnings.warn,
    signal,
  };
  warnings.bind(ctx);
  return ctx;
}

/** Folder for one shard's output, below the stage's scratch folder. */
export function shardDir(task: StageTask, shard: ShardSpec): string {
  const dir = path.join(task.tmpDir, "shards", shard.id.replace(/[^A-Za-z0-9._-]/g, "_"));
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Runs a stage in this process; sharded stages run their shards on a bounded p-queue. */
export class InProcessExecutor implements Executor {
  readonly name = "in-process";
  constructor(
    private readonly registry: StageRegistry,
    private readonly shardConcurrency = 1,
  ) {}

  async execute(task: StageTask, emit: (event: ProgressEvent) => void, signal: AbortSignal): Promise<StageSummary> {
    const stage = this.registry.get(task.stage);
    const ctx = makeStageContext(task, this.registry, emit, signal);
    try {
      if (stage?.sharding) {
        const shards = await stage.sharding.plan(ctx);
        const queue = new PQueue({ concurrency: this.shardConcurrency });
        const results = await Promise.all(
          shards.map((shard) =>
            queue.add(async () => {
              signal.throwIfAborted();
              const dir = shardDir(task, shard);
              await stage.sharding!.runShard(ctx, shard, dir);
              return { shard, dir };
            }),
          ),
        );
        return withCollectedWarnings(ctx, await stage.sharding.merge(ctx, results as { shard: ShardSpec; dir: string }[]));
      }
      return withCollectedWarnings(ctx, await stage!.run!(ctx));
    } catch (error) {
      throw StageError.of(task.stage, error);
    }
  }
}
