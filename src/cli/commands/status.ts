import path from "node:path";
import { defineCommand, stringOption } from "../command.js";
import { loadPipelineArg } from "../pipeline-arg.js";
import { Catalog, catalogState, type RunRecord, type StageRunRecord } from "../../pipeline/catalog.js";
import { UsageError } from "../../errors.js";
import { nextFireTimes } from "../schedule-info.js";
import { formatWarning } from "../../pipeline/warnings.js";

export default defineCommand({
  name: "status",
  summary: "Recent runs and their stages, from the workdir's catalog",
  positionals: [{ name: "pipeline", description: "pipeline file (default: the catalog in --workdir)" }],
  options: {
    workdir: { type: "string", valueName: "DIR", description: "workdir to read when no pipeline is given", default: ".prolearn" },
    limit: { type: "number", valueName: "N", description: "how many runs to show", default: "5" },
    json: { type: "boolean", description: "print as JSON on stdout", default: false },
  },
  async run(args, io) {
    const pipeline = args.positionals[0] ? await loadPipelineArg(args.positionals[0]) : undefined;
    const workdir = pipeline?.workdir ?? path.resolve(stringOption(args, "workdir")!);
    // A lost catalog (missing or emptied, where one existed) is reported by Catalog with its recovery.
    if (catalogState(workdir).state === "absent") {
      throw new UsageError(`no catalog in ${workdir}`, { hint: "run a pipeline first, or pass --workdir / a pipeline file" });
    }
    const catalog = new Catalog(workdir);
    try {
      const runs = catalog.runs({ pipeline: pipeline?.name, limit: Number(stringOption(args, "limit")) });
      const schedule = pipeline?.schedule ? { ...pipeline.schedule, next: nextFireTimes(pipeline.schedule, 1).map((d) => d.toISOString())[0] ?? null } : null;
      const detailed = runs.map((run) => {
        const stages = catalog.stageRuns(run.id);
        return { ...run, error: runError(run, stages), stages };
      });
      if (args.options.json) {
        io.stdout.write(JSON.stringify({ workdir, schedule, runs: detailed }, null, 2) + "\n");
        return 0;
      }
      const lines: string[] = [`workdir ${workdir}`];
      if (schedule) lines.push(`schedule: ${schedule.cron} (${schedule.timezone}); next run at ${schedule.next ?? "never"}`);
      if (!runs.length) lines.push("no runs yet");
      for (const run of detailed) {
        const warnings = run.stages.reduce((n, s) => n + s.warnings.length, 0);
        lines.push(
          `run ${run.id}  ${run.pipeline}  ${run.status}${warnings ? ` (${warnings} warning${warnings === 1 ? "" : "s"})` : ""}  started ${run.startedAt}${run.finishedAt ? `  finished ${run.finishedAt}` : ""}  (${run.trigger}, ${run.executor})`,
        );
        if (run.error && !run.stages.some((s) => s.error)) lines.push(`  ${run.error}`);
        for (const s of run.stages) {
          lines.push(
            `  ${s.stage.padEnd(12)} ${s.status.padEnd(8)} ${s.seconds !== null ? `${s.seconds.toFixed(2)} s`.padStart(10) : "".padStart(10)}  ${s.cacheKey ?? ""}  ${s.reason}${s.error ? `\n      ${s.error.split("\n")[0]}` : ""}`,
          );
          for (const w of s.warnings) lines.push(`      warning: ${formatWarning(w)}`);
        }
        if (run.report) lines.push(`  report: ${run.report}`);
      }
      io.stdout.write(lines.join("\n") + "\n");
      return 0;
    } finally {
      catalog.close();
    }
  },
});

/**
 * Why a run did not succeed, in one line (null when it did): the failed stage's error, a stage the
 * process left running (killed), or a run that stopped before any stage failed.
 */
export function runError(run: RunRecord, stages: StageRunRecord[]): string | null {
  if (run.status === "ok" || run.status === "running") return null;
  if (run.error) return run.error;
  const failed = stages.find((s) => s.status === "failed");
  if (failed) return `${failed.stage}: ${failed.error ?? "failed without a message"}`;
  const unfinished = stages.find((s) => s.status === "running");
  if (run.status === "abandoned" || unfinished) {
    return `${unfinished ? `stage ${unfinished.stage} did not finish: ` : ""}the run's process (pid ${run.pid}) ended without finishing the run (killed or crashed)`;
  }
  return "the run stopped before any stage failed (refused or interrupted; see its output)";
}
