import { UsageError } from "../../errors.js";
import { runPipeline } from "../../pipeline/engine.js";
import { STAGES } from "../../stages.js";
import { formatSweepTable, parseSweepAssignment, sweepRowFromRun, type SweepRow } from "../../evaluate/sweep.js";
import { defineCommand } from "../command.js";
import { loadPipelineArg } from "../pipeline-arg.js";
import { ProgressRenderer } from "../render.js";

export default defineCommand({
  name: "sweep",
  summary: "Run a pipeline once per value of a key (e.g. text availability) and print a Table-1-like comparison",
  details:
    "One --set names the swept key with comma-separated values (dataset.textAvailability=0.5,0.25,0.1,0.05,0.01); other --set options fix single values. The variants run one after another in the same workdir, so every stage whose inputs and params do not change (ingest, for instance) is computed once and reused from the cache.\nThe table goes to stderr; --json prints the rows on stdout.",
  positionals: [{ name: "pipeline", description: "pipeline file (needs an evaluate stage for the metrics columns)", required: true }],
  options: {
    set: {
      type: "string",
      valueName: "KEY=V1,V2,...",
      multiple: true,
      description: "the swept key with its values; further single-valued --set options are fixed overrides",
    },
    json: { type: "boolean", description: "print the rows as JSON on stdout", default: false },
  },
  async run(args, io) {
    const sets = (args.options.set as string[] | undefined) ?? [];
    const parsed = sets.map((s) => ({ raw: s, sweep: parseSweepAssignment(s) }));
    for (const p of parsed) if (!p.sweep) throw new UsageError(`--set expects key=value[,value...], got "${p.raw}"`);
    const swept = parsed.filter((p) => p.sweep!.values.length > 1);
    if (swept.length !== 1) {
      throw new UsageError(
        swept.length === 0
          ? "nothing to sweep: give one --set with comma-separated values"
          : `only one key can be swept at a time, got ${swept.map((p) => p.sweep!.key).join(", ")}`,
        {
          hint: "e.g. prolearn sweep pipeline.yaml --set dataset.textAvailability=0.5,0.25,0.1,0.05,0.01",
        },
      );
    }
    const { key, values } = swept[0]!.sweep!;
    const fixed = parsed.filter((p) => p !== swept[0]).map((p) => p.raw);
    const rows: SweepRow[] = [];
    const renderer = new ProgressRenderer(io);
    for (const value of values) {
      const pipeline = await loadPipelineArg(args.positionals[0]!, [...fixed, `${key}=${String(value)}`]);
      if (!("evaluate" in pipeline.stages))
        throw new UsageError(`pipeline ${pipeline.name} has no evaluate stage, so a sweep has no metrics to compare`, {
          hint: "add `evaluate: {}` under stages",
        });
      io.stderr.write(`\n== ${key} = ${String(value)}\n`);
      const result = await runPipeline(pipeline, { registry: STAGES, onEvent: renderer.handle, trigger: "sweep" });
      rows.push(sweepRowFromRun(value, result));
    }
    io.stderr.write("\n" + formatSweepTable(key, rows) + "\n");
    if (args.options.json) io.stdout.write(JSON.stringify({ key, rows }, null, 2) + "\n");
    return rows.every((r) => r.status === "ok") ? 0 : 1;
  },
});
