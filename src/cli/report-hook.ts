import { existsSync } from "node:fs";
import type { Catalog } from "../pipeline/catalog.js";
import type { RunOptions, RunResult } from "../pipeline/engine.js";

/**
 * The run report writer the `run` command passes to the engine: `<workdir>/reports/<runId>.html`.
 * The report module (Parquet, thumbnails through sharp) is imported when a report is written,
 * after the stages, not when the command loads. A run that reused every output of the previous
 * run unchanged gets that run's report (0.8-1.6 MB each, identical figures), not a new copy.
 */
export function reportWriter(): RunOptions["writeReport"] {
  return async (context) => unchangedReport(context.catalog, context.result) ?? (await import("../report/write.js")).writeRunReport(context);
}

/** The previous run's report when this run is all cached and used exactly the same outputs. */
export function unchangedReport(catalog: Catalog, result: RunResult): string | undefined {
  if (result.status !== "ok" || result.totals.ran > 0 || result.totals.failed > 0 || result.totals.skipped > 0 || !result.stages.length) return undefined;
  const previous = catalog.runs({ pipeline: result.pipeline, limit: 2 }).find((r) => r.id !== result.runId);
  if (previous?.status !== "ok" || !previous.report || !existsSync(previous.report)) return undefined;
  const before = catalog.stageRuns(previous.id).map((s) => `${s.stage}=${s.outputDigest ?? "-"}`);
  const now = result.stages.map((s) => `${s.name}=${s.digest ?? "-"}`);
  return before.length === now.length && before.every((entry, i) => entry === now[i]) ? previous.report : undefined;
}
