import { defineCommand, stringOption } from "../command.js";
import { UsageError } from "../../errors.js";
import { loadPipelineArg } from "../pipeline-arg.js";
import { PipelineScheduler, serveUntilSignal, type ScheduledPipeline } from "../../queue/scheduler.js";
import { STAGES } from "../../stages.js";
import { createExecutor, executorOptions, redisUrlOption } from "../executor-options.js";
import { reportWriter } from "../report-hook.js";

export default defineCommand({
  name: "scheduler",
  summary: "Run pipelines on their `schedule` (cron, time zone) until SIGTERM",
  details: [
    "Each fire is a normal run (trigger `schedule`): cached stages are reused, so an unchanged dataset costs almost nothing and a new version appears only when content changed.",
    "A pipeline never runs twice at once: a fire during a run is skipped with a log line, or queued with `schedule: { overlap: queue }`.",
    "With --redis the schedules become BullMQ job schedulers in Redis, and every scheduler process started with the same pipelines takes part in running them. SIGTERM stops the timers and lets the running pipeline finish (--grace-s, then it is aborted; a second SIGTERM aborts at once).",
  ].join("\n"),
  positionals: [{ name: "pipeline", description: "pipeline files with a `schedule:` key", required: true, variadic: true }],
  options: {
    ...executorOptions,
    "grace-s": {
      type: "number",
      valueName: "S",
      description: "on SIGTERM, how long a running pipeline may take to finish before it is aborted",
      default: "600",
    },
  },
  async run(args, io) {
    const log = (line: string) => io.stderr.write(`${line}\n`);
    const entries: ScheduledPipeline[] = [];
    for (const file of args.positionals) {
      const pipeline = await loadPipelineArg(file);
      if (!pipeline.schedule)
        throw new UsageError(`${file}: pipeline ${pipeline.name} has no schedule`, {
          hint: 'add e.g. `schedule: { cron: "0 3 * * *", timezone: "Europe/Paris" }`',
        });
      entries.push({ name: pipeline.name, schedule: pipeline.schedule, load: () => loadPipelineArg(file) });
    }
    const grace = Number(stringOption(args, "grace-s"));
    if (!Number.isFinite(grace) || grace < 0) throw new UsageError(`--grace-s expects seconds, got ${stringOption(args, "grace-s")}`);
    // Fails now on a bad --executor / --redis rather than at the first fire.
    await (await createExecutor(args, io)).close?.();
    const scheduler = new PipelineScheduler(entries, { registry: STAGES, createExecutor: () => createExecutor(args, io), writeReport: reportWriter(), log });
    const redisUrl = redisUrlOption(args);
    if (redisUrl) await scheduler.startWithRedis(redisUrl);
    else scheduler.start();
    await serveUntilSignal(scheduler, { graceMs: grace * 1000, log });
    return 0;
  },
});
