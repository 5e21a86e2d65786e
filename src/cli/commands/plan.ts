import { defineCommand, stringOption } from "../command.js";
import { loadPipelineArg } from "../pipeline-arg.js";
import { planPipeline } from "../../pipeline/engine.js";
import { STAGES } from "../../stages.js";
import { formatPlan } from "../render.js";

export default defineCommand({
  name: "plan",
  summary: "Show what `run` would execute and why, without running anything",
  positionals: [{ name: "pipeline", description: "pipeline file", required: true }],
  options: {
    until: { type: "string", valueName: "STAGE", description: "plan this stage and what it depends on" },
    only: { type: "string", valueName: "STAGE", description: "plan only this stage" },
    force: { type: "string", valueName: "STAGE|all", multiple: true, description: "treat this stage as forced" },
    set: { type: "string", valueName: "KEY=VALUE", multiple: true, description: "override a pipeline key" },
    json: { type: "boolean", description: "print the plan as JSON on stdout", default: false },
  },
  async run(args, io) {
    const pipeline = await loadPipelineArg(args.positionals[0]!, (args.options.set as string[] | undefined) ?? []);
    const force = (args.options.force as string[] | undefined) ?? [];
    const plan = await planPipeline(pipeline, { registry: STAGES, until: stringOption(args, "until"), only: stringOption(args, "only"), force: force.includes("all") ? "all" : force });
    if (args.options.json) io.stdout.write(JSON.stringify({ pipeline: pipeline.name, stages: plan }, null, 2) + "\n");
    else io.stdout.write(formatPlan(plan) + "\n");
    return 0;
  },
});
