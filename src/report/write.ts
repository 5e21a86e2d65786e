import { existsSync, mkdirSync } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { ArtifactError } from "../errors.js";
import type { Catalog, RunRecord } from "../pipeline/catalog.js";
import type { RunResult, StageOutcome, StageResult } from "../pipeline/engine.js";
import type { ResolvedPipeline } from "../pipeline/spec.js";
import { gatherReport } from "./gather.js";
import { renderReportHtml } from "./html.js";
import type { ReportOptions } from "./model.js";

export function reportPath(workdir: string, runId: string): string {
  return path.join(workdir, "reports", `${runId}.html`);
}

/**
 * Writes `<workdir>/reports/<runId>.html` and returns its path. The page is written to a
 * temporary file, fsynced and renamed, so a reader never sees half a report.
 */
export async function writeRunReport(
  context: { pipeline: ResolvedPipeline; result: RunResult; catalog?: Catalog },
  options: Partial<ReportOptions> = {},
): Promise<string> {
  const run = context.catalog?.getRun(context.result.runId);
  const model = await gatherReport({ pipeline: context.pipeline, result: context.result, ...(run ? { run } : {}) }, options);
  const html = renderReportHtml(model);
  const file = reportPath(context.pipeline.workdir, context.result.runId);
  mkdirSync(path.dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    const handle = await open(temporary, "w");
    try {
      await handle.writeFile(html, "utf8");
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  return file;
}

/**
 * Rebuilds a run's result from the catalog (its stage records and their published outputs), so
 * a report can be written for a run after the fact. An output folder that was removed since
 * leaves the stage without outputs; the report then says the files are gone.
 */
export function runResultFromCatalog(catalog: Catalog, run: RunRecord): RunResult {
  const stages: StageResult[] = catalog.stageRuns(run.id).map((s) => {
    const output = s.cacheKey && (s.status === "ran" || s.status === "cached") ? catalog.getOutput(s.cacheKey) : undefined;
    const status: StageOutcome = s.status === "running" ? "failed" : s.status;
    return {
      name: s.stage,
      status,
      reason: s.reason,
      reasons: s.reasons as StageResult["reasons"],
      warnings: s.warnings,
      seconds: s.seconds ?? 0,
      cacheKey: s.cacheKey,
      digest: s.outputDigest,
      outputs: output?.files ?? {},
      summary: output?.summary ?? {},
      ...(s.status === "running" ? { error: "the stage did not finish (the run was interrupted)" } : s.error ? { error: s.error } : {}),
    };
  });
  const totals = { ran: 0, cached: 0, failed: 0, skipped: 0 };
  for (const s of stages) totals[s.status]++;
  const seconds = run.finishedAt ? (Date.parse(run.finishedAt) - Date.parse(run.startedAt)) / 1000 : stages.reduce((a, s) => a + s.seconds, 0);
  return { runId: run.id, pipeline: run.pipeline, status: run.status === "ok" ? "ok" : "failed", seconds, stages, totals };
}

/** The report of a run: the recorded file when it still exists, else written anew and recorded. */
export async function ensureRunReport(
  pipeline: ResolvedPipeline,
  catalog: Catalog,
  runId: string,
  options: { rebuild?: boolean } & Partial<ReportOptions> = {},
): Promise<string> {
  const run = catalog.getRun(runId);
  if (!run) throw new ArtifactError(`no run ${runId} in ${catalog.file}`, { hint: "see `prolearn status` for the run ids" });
  if (!options.rebuild && run.report && existsSync(run.report)) return run.report;
  const file = await writeRunReport({ pipeline, result: runResultFromCatalog(catalog, run), catalog }, options);
  catalog.setRunReport(run.id, file);
  return file;
}
