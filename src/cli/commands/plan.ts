import { defineCommand } from "../command.js";
import { loadPipelineArg, selectionFromArgs, selectionOptionSpecs } from "../pipeline-arg.js";
import { planPipeline } from "../../pipeline/engine.js";
import { STAGES } from "../../stages.js";
import { formatPlan } from "../render.js";

export default defineCommand({
  name: "plan",
  summary: "Show what `run` would execute and why, without running anything",
  positionals: [{ name: "pipeline", description: "pipeline file", required: true }],
  options: {
    ...selectionOptionSpecs("plan"),
    json: { type: "boolean", description: "print the plan as JSON on stdout", default: false },
  },
  async run(args, io) {
    const pipeline = await loadPipelineArg(args.positionals[0]!, (args.options.set as string[] | undefined) ?? []);
    const plan = await planPipeline(pipeline, { registry: STAGES, ...selectionFromArgs(args) });
    if (args.options.json) io.stdout.write(JSON.stringify({ pipeline: pipeline.name, stages: plan }, null, 2) + "\n");
    else io.stdout.write(formatPlan(plan) + "\n");
    return 0;
  },
});
