import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { defineCommand, numberOption, stringOption } from "../command.js";
import { loadPipelineArg } from "../pipeline-arg.js";
import { runPipeline } from "../../pipeline/engine.js";
import { STAGES } from "../../stages.js";
import { ProgressRenderer, formatRunSummary, runToJson } from "../render.js";
import { reportWriter } from "../report-hook.js";
import { UsageError } from "../../errors.js";

const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export default defineCommand({
  name: "demo",
  summary: "Generate a synthetic dataset (if absent) and run the demo pipeline end to end",
  details:
    "Uses pipelines/demo.yaml by default: a QaTa-COV19-layout dataset whose reports are written from the masks, run through\n" +
    "ingest -> guide -> filter -> embed -> prototypes -> train -> baseline -> evaluate on the CPU. The dataset is generated at the\n" +
    "pipeline's dataset.root when that folder does not exist. Ends by printing the run report's path and the next\n" +
    "commands to try, spelled so they work from the current folder (the demo's workdir is not ./.prolearn).",
  positionals: [],
  options: {
    pipeline: { type: "string", valueName: "FILE", description: "pipeline to run", default: path.join("pipelines", "demo.yaml") },
    n: { type: "number", valueName: "N", description: "image/mask pairs to generate", default: "160" },
    seed: { type: "number", valueName: "S", description: "seed of the generated dataset", default: "7" },
    json: { type: "boolean", description: "print the run as JSON on stdout", default: false },
  },
  async run(args, io) {
    const requested = stringOption(args, "pipeline")!;
    const file = existsSync(requested) ? requested : path.join(PACKAGE_ROOT, requested);
    if (!existsSync(file)) throw new UsageError(`pipeline ${requested} not found`, { hint: "pass --pipeline FILE" });
    const pipeline = await loadPipelineArg(file);
    if (!existsSync(pipeline.dataset.root)) {
      const { writeFixtureDataset } = await import("../../synthetic/index.js");
      const layout = pipeline.dataset.layout === "auto" ? "sgseg" : pipeline.dataset.layout;
      const size =
        typeof pipeline.stages.guide === "object" && pipeline.stages.guide ? Number((pipeline.stages.guide as { imageSize?: number }).imageSize ?? 64) : 64;
      io.stderr.write(
        `generating a synthetic ${pipeline.dataset.kind} dataset (${layout} layout, ${numberOption(args, "n")} pairs, ${size}x${size}) in ${pipeline.dataset.root}\n`,
      );
      await writeFixtureDataset({
        kind: pipeline.dataset.kind,
        layout,
        out: pipeline.dataset.root,
        n: numberOption(args, "n"),
        seed: numberOption(args, "seed"),
        size,
      });
    }
    const renderer = new ProgressRenderer(io);
    const result = await runPipeline(pipeline, { registry: STAGES, onEvent: renderer.handle, writeReport: reportWriter() });
    io.stderr.write(formatRunSummary(result) + "\n");
    if (result.status === "ok") io.stderr.write(nextSteps(file).join("\n") + "\n");
    if (args.options.json) io.stdout.write(JSON.stringify(runToJson(result), null, 2) + "\n");
    return result.status === "ok" ? 0 : 1;
  },
});

/**
 * Commands to try after the demo, each naming the pipeline file (relative to the current folder
 * when it is below it), since the demo's workdir is the pipeline's, not ./.prolearn.
 */
export function nextSteps(pipelineFile: string): string[] {
  const relative = path.relative(process.cwd(), path.resolve(pipelineFile));
  const file = relative && !relative.startsWith("..") && !path.isAbsolute(relative) ? relative : path.resolve(pipelineFile);
  const arg = /[\s"'$`\\]/.test(file) ? JSON.stringify(file) : file;
  return [
    "next, try:",
    `  npx prolearn status ${arg}                 runs and stages, and why each ran`,
    `  npx prolearn outputs ${arg}                the current output files (stable paths for DuckDB/pyarrow)`,
    `  npx prolearn artifacts list --pipeline ${arg}   the published prototype spaces`,
    `  npx prolearn plan ${arg} --set dataset.textAvailability=0.1   what a change would rerun`,
    `  npx prolearn report ${arg}                 the run report's path (--open opens it)`,
  ];
}
