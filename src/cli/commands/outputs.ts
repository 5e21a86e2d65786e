import path from "node:path";
import { existsSync } from "node:fs";
import { defineCommand, stringOption } from "../command.js";
import { WORKDIR_OPTION, pipelineTarget } from "../pipeline-arg.js";
import { Catalog, type StageRunRecord } from "../../pipeline/catalog.js";
import { readCurrentPointers, stagePointerDir } from "../../pipeline/pointers.js";
import { ArtifactError, UsageError, didYouMean } from "../../errors.js";

export default defineCommand({
  name: "outputs",
  summary: "Print the current output files of a pipeline (its last successful run), or of one stage",
  details:
    "Current = per stage, its output in the latest successful run of the pipeline that included it. After every\n" +
    "successful run these files are also linked at <workdir>/pipelines/<pipeline>/<stage>/<file>, a stable path for\n" +
    "DuckDB, pyarrow or polars that holds this pipeline's rows only; this command prints those paths.\n" +
    "--run ID prints the store files of that run instead (they may have been removed by `prolearn gc`).",
  positionals: [
    { name: "pipeline", description: "pipeline file, or a pipeline name in --workdir", required: true },
    { name: "stage", description: "only this stage's files" },
  ],
  options: {
    run: { type: "string", valueName: "ID", description: "a given run (see `prolearn status`) instead of the current outputs" },
    workdir: WORKDIR_OPTION,
    json: { type: "boolean", description: "print {pipeline, workdir, stages: {stage: {runId, cacheKey, files}}} on stdout", default: false },
  },
  async run(args, io) {
    const target = await pipelineTarget(args.positionals[0]!, stringOption(args, "workdir")!);
    if (!existsSync(path.join(target.workdir, "catalog.sqlite"))) {
      throw new UsageError(`no catalog in ${target.workdir}`, { hint: "run the pipeline first, or pass its file / --workdir" });
    }
    const catalog = new Catalog(target.workdir);
    try {
      const known = catalog.pipelines();
      if (!known.includes(target.name)) {
        const suggestion = didYouMean(target.name, known);
        throw new UsageError(`no runs of pipeline ${target.name} in ${target.workdir}`, {
          hint: suggestion ? `did you mean ${suggestion}?` : known.length ? `pipelines there: ${known.join(", ")}` : "run it first",
        });
      }
      const runId = stringOption(args, "run");
      let stageRuns: StageRunRecord[];
      if (runId) {
        const run = catalog.getRun(runId);
        if (!run || run.pipeline !== target.name)
          throw new UsageError(`no run ${runId} of pipeline ${target.name}`, { hint: "see `prolearn status` for the run ids" });
        stageRuns = catalog.stageRuns(runId).filter((s) => s.status === "ran" || s.status === "cached");
      } else {
        stageRuns = catalog.currentStageRuns(target.name);
        if (!stageRuns.length)
          throw new ArtifactError(`pipeline ${target.name} has no successful run in ${target.workdir}`, { hint: "see `prolearn status` for what failed" });
      }
      const stageName = args.positionals[1];
      if (stageName && !stageRuns.some((s) => s.stage === stageName)) {
        const names = stageRuns.map((s) => s.stage);
        const suggestion = didYouMean(stageName, names);
        throw new UsageError(`no output of stage ${stageName}${runId ? ` in run ${runId}` : ""} for pipeline ${target.name}`, {
          hint: suggestion ? `did you mean ${suggestion}?` : `stages with outputs: ${names.join(", ")}`,
        });
      }
      const pointers = runId ? undefined : readCurrentPointers(target.workdir, target.name);
      const stages: Record<string, { runId: string; cacheKey: string | null; files: Record<string, string>; store: Record<string, string> }> = {};
      for (const s of stageRuns) {
        if (stageName && s.stage !== stageName) continue;
        const output = s.cacheKey ? catalog.getOutput(s.cacheKey) : undefined;
        const storeFiles = output?.files ?? {};
        const pointer = pointers?.stages[s.stage];
        // The stable link when it still points at this very output, else the store file itself.
        const files = pointer && pointer.cacheKey === s.cacheKey ? pointer.files : storeFiles;
        stages[s.stage] = { runId: s.runId, cacheKey: s.cacheKey, files, store: storeFiles };
      }
      if (args.options.json) {
        io.stdout.write(JSON.stringify({ pipeline: target.name, workdir: target.workdir, ...(runId ? { run: runId } : {}), stages }, null, 2) + "\n");
        return 0;
      }
      const lines: string[] = [];
      for (const [stage, entry] of Object.entries(stages)) {
        const names = Object.keys(entry.files);
        if (!names.length) {
          io.stderr.write(`${stage}: the output of run ${entry.runId} is no longer in the store\n`);
          continue;
        }
        io.stderr.write(
          `${stage} (run ${entry.runId}, key ${entry.cacheKey ?? "?"}${!runId ? `, in ${stagePointerDir(target.workdir, target.name, stage)}` : ""})\n`,
        );
        for (const name of names) lines.push(entry.files[name]!);
      }
      io.stdout.write(lines.length ? lines.join("\n") + "\n" : "");
      return 0;
    } finally {
      catalog.close();
    }
  },
});
