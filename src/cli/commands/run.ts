import { defineCommand } from "../command.js";
import { loadPipelineArg, selectionFromArgs, selectionOptionSpecs } from "../pipeline-arg.js";
import { runPipeline } from "../../pipeline/engine.js";
import { STAGES } from "../../stages.js";
import { ProgressRenderer, formatRunSummary, runToJson } from "../render.js";
import { createExecutor, executorOptions } from "../executor-options.js";
import { reportWriter } from "../report-hook.js";

export default defineCommand({
  name: "run",
  summary: "Run a pipeline; cached stages are reused, changed ones rerun",
  details:
    "Each stage runs only if its code version, params, input digests or declared resources changed since its output was published.\nHuman output (progress, summary) goes to stderr; --json prints one JSON document on stdout.",
  positionals: [{ name: "pipeline", description: "pipeline file (YAML, JSON, or a JS/TS module exporting definePipeline(...))", required: true }],
  options: {
    ...selectionOptionSpecs("run"),
    json: { type: "boolean", description: "print the run as JSON on stdout", default: false },
    ...executorOptions,
  },
  async run(args, io) {
    const pipeline = await loadPipelineArg(args.positionals[0]!, (args.options.set as string[] | undefined) ?? []);
    const renderer = new ProgressRenderer(io);
    const executor = await createExecutor(args, io);
    try {
      const result = await runPipeline(pipeline, {
        registry: STAGES,
        ...selectionFromArgs(args),
        executor,
        onEvent: renderer.handle,
        writeReport: reportWriter(),
      });
      io.stderr.write(formatRunSummary(result) + "\n");
      if (args.options.json) io.stdout.write(JSON.stringify(runToJson(result), null, 2) + "\n");
      return result.status === "ok" ? 0 : 1;
    } finally {
      await executor?.close?.();
    }
  },
});
