import type { RunRecord } from "../pipeline/catalog.js";
import type { RunResult } from "../pipeline/engine.js";
import type { ResolvedPipeline } from "../pipeline/spec.js";
import { gatherDataset } from "./dataset.js";
import { gatherFiltering } from "./filtering.js";
import { DEFAULT_REPORT_OPTIONS, type OverviewStage, type ReportModel, type ReportOptions } from "./model.js";
import { StageOutputs, flattenSummary, guarded } from "./outputs.js";
import { gatherPrototypes } from "./prototypes.js";
import { gatherTraining } from "./training.js";

export { shareOut } from "./dataset.js";
export { spread } from "./outputs.js";
export { parseHistory } from "./training.js";

export interface ReportInput {
  pipeline: ResolvedPipeline;
  result: RunResult;
  /** The catalog's record of the run (start time, trigger), when known. */
  run?: RunRecord;
}

/**
 * Reads what the report needs from the run's stage outputs, through each stage's declared tables
 * (src/<stage>/tables.ts); reads only the columns and rows it shows. One module per section.
 */
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
    dataset: {
      kind: pipeline.dataset.kind,
      root: pipeline.dataset.root,
      layout: pipeline.dataset.layout,
      textAvailability: pipeline.dataset.textAvailability,
      seed: pipeline.dataset.seed,
    },
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

function overviewStages(pipeline: ResolvedPipeline, result: RunResult): OverviewStage[] {
  const byName = new Map(result.stages.map((s) => [s.name, s]));
  const names = [...Object.keys(pipeline.stages), ...result.stages.map((s) => s.name).filter((n) => !(n in pipeline.stages))];
  return names.map((name) => {
    const s = byName.get(name);
    if (!s)
      return {
        name,
        status: "not run",
        reason: "not selected in this run (--until / --only)",
        seconds: null,
        cacheKey: null,
        digest: null,
        summary: [],
        warnings: [],
      };
    return {
      name,
      status: s.status,
      reason: s.reason,
      seconds: s.seconds,
      cacheKey: s.cacheKey,
      digest: s.digest,
      ...(s.error ? { error: s.error } : {}),
      summary: flattenSummary(s.summary),
      warnings: s.warnings ?? [],
    };
  });
}
