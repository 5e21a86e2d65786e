import path from "node:path";
import { defineCommand, numberOption, stringOption } from "../command.js";
import { WORKDIR_OPTION, pipelineTarget } from "../pipeline-arg.js";
import { applyGc, formatBytes, planGc } from "../../pipeline/gc.js";

export default defineCommand({
  name: "gc",
  summary: "Remove outputs of old runs, unreferenced reports and checkpoints (keeps the last N runs and every artifact)",
  details:
    "Keeps, always: the current output of every stage of every pipeline (`prolearn outputs`, <workdir>/pipelines/),\n" +
    "the outputs and reports of the last --keep runs of each pipeline, every registered artifact version (and the\n" +
    "prototypes output that published it), and checkpoints of unfinished trainings. Removes the other store folders,\n" +
    "reports no kept run refers to, and finished checkpoints no kept output names. With a pipeline, only that\n" +
    "pipeline's runs are thinned. Refuses while a run is in progress in the workdir. --dry-run lists what would go.",
  positionals: [{ name: "pipeline", description: "pipeline file or name (default: every pipeline of --workdir)" }],
  options: {
    keep: { type: "number", valueName: "N", description: "runs of each pipeline whose outputs and reports stay", default: "5" },
    "dry-run": { type: "boolean", description: "list what would be removed and how much space, remove nothing", default: false },
    workdir: WORKDIR_OPTION,
    json: { type: "boolean", description: "print the plan ({remove: [{kind, path, bytes, reason}], bytes, kept}) on stdout", default: false },
  },
  async run(args, io) {
    const target = args.positionals[0] ? await pipelineTarget(args.positionals[0], stringOption(args, "workdir")!) : undefined;
    const workdir = target?.workdir ?? path.resolve(stringOption(args, "workdir")!);
    const plan = planGc(workdir, { keep: numberOption(args, "keep")!, ...(target ? { pipeline: target.name } : {}) });
    const dryRun = Boolean(args.options["dry-run"]);
    const lines = plan.remove.map(
      (item) =>
        `${dryRun ? "would remove" : "removing"} ${item.kind.padEnd(10)} ${formatBytes(item.bytes).padStart(9)}  ${path.relative(process.cwd(), item.path) || item.path}  (${item.reason})`,
    );
    if (!args.options.json) for (const line of lines) io.stderr.write(line + "\n");
    const freed = dryRun ? 0 : applyGc(plan);
    const k = plan.kept;
    const summary =
      `${dryRun ? "would free" : "freed"} ${formatBytes(dryRun ? plan.bytes : freed)} in ${plan.remove.length} item${plan.remove.length === 1 ? "" : "s"} of ${workdir}; ` +
      `kept ${k.outputs} outputs, ${k.reports} reports, ${k.checkpoints} checkpoints${k.unfinishedCheckpoints ? ` (+${k.unfinishedCheckpoints} of unfinished trainings)` : ""}, ${k.artifacts} registered artifact versions`;
    if (args.options.json) io.stdout.write(JSON.stringify({ ...plan, dryRun, freed }, null, 2) + "\n");
    io.stderr.write(summary + "\n");
    return 0;
  },
});
