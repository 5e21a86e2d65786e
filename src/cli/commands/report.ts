import { existsSync } from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { defineCommand, stringOption } from "../command.js";
import { loadPipelineArg } from "../pipeline-arg.js";
import { Catalog, catalogState } from "../../pipeline/catalog.js";
import { UsageError } from "../../errors.js";
import { ensureRunReport } from "../../report/write.js";

/** The first of `names` found on PATH, as an absolute path. */
export function findOnPath(names: readonly string[], env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dirs = (env.PATH ?? "").split(path.delimiter).filter(Boolean);
  for (const name of names) {
    for (const dir of dirs) {
      const candidate = path.join(dir, name);
      if (existsSync(candidate)) return candidate;
    }
  }
  return undefined;
}

export default defineCommand({
  name: "report",
  summary: "Print the path of a run's HTML report (the latest run by default); --open opens it",
  details:
    "Every run writes <workdir>/reports/<runId>.html, a self-contained page (no network needed): stages and why each ran, the dataset, token filtering, the prototype space and training.\n" +
    "A run whose report is missing (deleted, or written before reports existed) gets one written now from its cached stage outputs.",
  positionals: [{ name: "pipeline", description: "pipeline file whose runs to look at", required: true }],
  options: {
    run: { type: "string", valueName: "ID", description: "run id (see `prolearn status`); default: the pipeline's latest run" },
    open: { type: "boolean", description: "open the report with xdg-open (Linux) or open (macOS)", default: false },
    rebuild: { type: "boolean", description: "write the report again from the run's stage outputs", default: false },
  },
  async run(args, io) {
    const pipeline = await loadPipelineArg(args.positionals[0]!);
    if (catalogState(pipeline.workdir).state === "absent") {
      throw new UsageError(`pipeline ${pipeline.name} has no runs yet (no catalog in ${pipeline.workdir})`, {
        hint: `run it first: prolearn run ${args.positionals[0]}`,
      });
    }
    const catalog = new Catalog(pipeline.workdir);
    let file: string;
    try {
      const wanted = stringOption(args, "run");
      const run = wanted ? catalog.getRun(wanted) : catalog.runs({ pipeline: pipeline.name, limit: 1 })[0];
      if (!run) {
        const recent = catalog.runs({ pipeline: pipeline.name, limit: 5 }).map((r) => r.id);
        throw new UsageError(wanted ? `no run ${wanted} in ${pipeline.workdir}` : `pipeline ${pipeline.name} has no runs yet`, {
          hint: recent.length ? `recent runs: ${recent.join(", ")}` : `run it first: prolearn run ${args.positionals[0]}`,
        });
      }
      if (run.pipeline !== pipeline.name) throw new UsageError(`run ${run.id} belongs to pipeline ${run.pipeline}, not ${pipeline.name}`);
      if (run.status === "running")
        throw new UsageError(`run ${run.id} is still running; its report is written when it ends`, { hint: "wait for it, or see `prolearn status`" });
      file = await ensureRunReport(pipeline, catalog, run.id, { rebuild: args.options.rebuild === true });
    } finally {
      catalog.close();
    }
    io.stdout.write(file + "\n");
    if (args.options.open) {
      const opener = findOnPath(process.platform === "darwin" ? ["open"] : ["xdg-open", "open"]);
      if (!opener) {
        io.stderr.write(`cannot open the report: neither xdg-open nor open is on PATH; open ${file} in a browser\n`);
        return 0;
      }
      const child = spawn(opener, [file], { detached: true, stdio: "ignore" });
      child.on("error", (error) => io.stderr.write(`could not start ${opener}: ${error.message}\n`));
      child.unref();
      io.stderr.write(`opened with ${path.basename(opener)}\n`);
    }
    return 0;
  },
});
