import { canonicalJson } from "../util/hash.js";
import type { Catalog } from "./catalog.js";
import { formatReasons, type KeyParts, type Reason } from "./decision.js";
import type { StageSummary, StageWarning } from "./stage.js";
import type { PublishedOutput } from "./store.js";

/** What the engine tells the recorder about one stage once it is done. */
export interface StageRecord {
  stage: string;
  status: "ran" | "cached" | "failed";
  reasons: Reason[];
  cacheKey: string;
  parts: KeyParts;
  startedAt: string;
  seconds: number;
  /** The published output the stage produced or reused (absent when it failed). */
  output?: PublishedOutput;
  summary?: StageSummary;
  warnings: StageWarning[];
  error?: string;
}

/**
 * The one writer of a run into the catalog: the run row, each stage's execution (why, how it
 * ended, its warnings) and the outputs it published or reused. The engine decides and executes;
 * everything the catalog learns about a run goes through here.
 */
export class RunRecorder {
  constructor(
    private readonly catalog: Catalog,
    readonly runId: string,
    private readonly pipeline: string,
  ) {}

  start(run: { pipelineFile?: string; trigger?: string; executor: string }): void {
    this.catalog.startRun({ id: this.runId, pipeline: this.pipeline, pipelineFile: run.pipelineFile, trigger: run.trigger, executor: run.executor });
  }

  /** A stage is about to execute: visible as `running` in `status` while it works. */
  stageStarted(stage: string, cacheKey: string, reasons: Reason[], parts: KeyParts, startedAt: string): void {
    this.catalog.recordStage({
      runId: this.runId,
      stage,
      status: "running",
      cacheKey,
      reason: formatReasons(reasons),
      reasons,
      startedAt,
      seconds: null,
      error: null,
      outputDigest: null,
      keyParts: canonicalJson(parts),
      warnings: [],
    });
  }

  stageFinished(record: StageRecord): void {
    const { output } = record;
    this.catalog.db.transaction(() => {
      if (output) {
        this.catalog.recordOutput({
          cacheKey: record.cacheKey,
          stage: record.stage,
          pipeline: this.pipeline,
          digest: output.digest,
          dir: output.dir,
          files: output.files,
          summary: output.manifest.summary,
          createdAt: new Date().toISOString(),
        });
      }
      this.catalog.recordStage({
        runId: this.runId,
        stage: record.stage,
        status: record.status,
        cacheKey: record.cacheKey,
        reason: formatReasons(record.reasons),
        reasons: record.reasons,
        startedAt: record.startedAt,
        seconds: record.seconds,
        error: record.error ?? null,
        outputDigest: output?.digest ?? null,
        keyParts: canonicalJson(record.parts),
        warnings: record.warnings,
      });
    })();
  }

  /** The store no longer holds this output (its folder was deleted): drop the catalog's row for it. */
  forgetOutput(cacheKey: string): void {
    this.catalog.forgetOutput(cacheKey);
  }

  /** `error`: why the run stopped when no stage failed (kept for `status`). */
  finish(status: "ok" | "failed", report?: string, error?: string): void {
    this.catalog.finishRun(this.runId, status, report, error);
  }
}
