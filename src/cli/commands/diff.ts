import path from "node:path";
import { existsSync } from "node:fs";
import { defineCommand, stringOption } from "../command.js";
import { loadPipelineArg } from "../pipeline-arg.js";
import { Catalog, type RunRecord } from "../../pipeline/catalog.js";
import { compareRuns, formatComparison } from "../../pipeline/compare.js";
import { UsageError } from "../../errors.js";

export default defineCommand({
  name: "diff",
  summary: "Compare two runs: changed params, inputs and code versions, and their metrics side by side",
  details:
    "For every stage of either run: its status in each, whether its cache key (the work) is the same, which code version,\n" +
    "params, dataset settings, upstream inputs and resources (dataset and model folders) changed, and every number of the\n" +
    "stages' summaries (counts, Dice, IoU, losses) in A, in B and B - A. Run ids are those of `prolearn status`; a unique\n" +
    "prefix is enough.",
  positionals: [
    { name: "runA", description: "the earlier (reference) run id", required: true },
    { name: "runB", description: "the run to compare with it", required: true },
  ],
  options: {
    workdir: { type: "string", valueName: "DIR", description: "workdir whose catalog holds the runs", default: ".prolearn" },
    pipeline: { type: "string", valueName: "FILE", description: "take the workdir from this pipeline file instead" },
    json: { type: "boolean", description: "print {a, b, stages: [{stage, code, params, dataset, inputs, metrics}]} on stdout", default: false },
  },
  async run(args, io) {
    const file = stringOption(args, "pipeline");
    const workdir = file ? (await loadPipelineArg(file)).workdir : path.resolve(stringOption(args, "workdir")!);
    if (!existsSync(path.join(workdir, "catalog.sqlite"))) throw new UsageError(`no catalog in ${workdir}`, { hint: "pass --workdir DIR or --pipeline FILE" });
    const catalog = new Catalog(workdir);
    try {
      const a = findRun(catalog, args.positionals[0]!);
      const b = findRun(catalog, args.positionals[1]!);
      const comparison = compareRuns(catalog, a, b);
      if (args.options.json) io.stdout.write(JSON.stringify(comparison, null, 2) + "\n");
      else io.stdout.write(formatComparison(comparison) + "\n");
      return 0;
    } finally {
      catalog.close();
    }
  },
});

/** A run by its id or a unique prefix of it. */
export function findRun(catalog: Catalog, id: string): RunRecord {
  const exact = catalog.getRun(id);
  if (exact) return exact;
  const matches = catalog.runs({ limit: 100_000 }).filter((r) => r.id.startsWith(id));
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1)
    throw new UsageError(`run id ${id} is ambiguous (${matches.length} runs start with it)`, {
      hint: `e.g. ${matches
        .slice(0, 3)
        .map((r) => r.id)
        .join(", ")}`,
    });
  throw new UsageError(`no run ${id} in ${catalog.file}`, { hint: "see `prolearn status` for the run ids" });
}
