import { defineCommand, stringOption } from "../command.js";
import { EnvironmentError, UsageError } from "../../errors.js";
import { startStageWorker } from "../../queue/worker.js";
import { STAGES } from "../../stages.js";
import { redisUrlOption } from "../executor-options.js";

export default defineCommand({
  name: "worker",
  summary: "Run stage jobs from a BullMQ queue (for `run --executor bullmq`) until SIGTERM",
  details: [
    "Serves the `stages` queue (and `stages-gpu` with --capabilities gpu). A job names a registered stage and paths; this worker runs only stages of this package, and refuses any job whose workdir, dataset or pipeline folder is outside the --root folders, or whose paths leave them.",
    "Workers and the submitting `prolearn run` must share the workdir's filesystem. SIGTERM (or Ctrl-C) stops taking jobs and waits for the running ones.",
    "With --capabilities gpu the worker first starts a GPU training backend (docs/backends.md) and exits 1 if none starts: a GPU job on a worker that would train on the CPU runs many times slower than the submitter planned for.",
  ].join("\n"),
  positionals: [],
  options: {
    redis: { type: "string", valueName: "URL", description: "Redis URL, e.g. redis://127.0.0.1:6379 (default: $PROLEARN_REDIS)" },
    concurrency: { type: "string", valueName: "N", description: "jobs run at once in this process", default: "1" },
    capabilities: { type: "string", valueName: "NAME", multiple: true, description: "extra capabilities this machine offers: gpu" },
    root: { type: "string", valueName: "DIR", multiple: true, description: "folder that workdirs and datasets named in jobs must lie in (default: the current folder)" },
    "lock-ms": { type: "string", valueName: "MS", description: "how long a silent (killed) worker keeps a job before another worker retries it", default: "30000" },
  },
  async run(args, io) {
    const redisUrl = redisUrlOption(args);
    if (!redisUrl) throw new UsageError("prolearn worker needs --redis URL", { hint: "e.g. prolearn worker --redis redis://127.0.0.1:6379" });
    const concurrency = Number(stringOption(args, "concurrency"));
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new UsageError(`--concurrency expects a positive integer, got ${stringOption(args, "concurrency")}`);
    const lockMs = Number(stringOption(args, "lock-ms"));
    if (!Number.isInteger(lockMs) || lockMs < 1000) throw new UsageError(`--lock-ms expects milliseconds (at least 1000), got ${stringOption(args, "lock-ms")}`);
    const capabilities = ((args.options.capabilities as string[] | undefined) ?? []).flatMap((c) => c.split(",")).filter(Boolean);
    const log = (line: string) => io.stderr.write(`${new Date().toISOString()} ${line}\n`);
    if (capabilities.includes("gpu")) await requireGpuBackend(log);
    const worker = await startStageWorker({ redisUrl, registry: STAGES, concurrency, capabilities, roots: args.options.root as string[] | undefined, lockDurationMs: lockMs, log });
    const signal = await new Promise<string>((resolve) => {
      process.once("SIGTERM", () => resolve("SIGTERM"));
      process.once("SIGINT", () => resolve("SIGINT"));
    });
    log(`${signal}: finishing running jobs, taking no new ones`);
    await worker.close();
    log("worker stopped");
    return 0;
  },
});

/** Starts the training backend `auto` would pick and refuses to serve GPU jobs on the cpu one. */
async function requireGpuBackend(log: (line: string) => void): Promise<void> {
  const { initTrainingBackend } = await import("../../tfjs/backends.js");
  const reasons: string[] = [];
  const info = await initTrainingBackend({ backend: "auto", log: (line) => (line.startsWith("skipped: ") ? reasons.push(line.slice("skipped: ".length)) : undefined) });
  if (info.backend === "cpu") {
    throw new EnvironmentError(`--capabilities gpu, but no GPU training backend starts on this machine: ${reasons.join("; ") || "only the cpu backend is available"}`, {
      hint: "see docs/backends.md for the GPU backends and what they need, or start this worker without --capabilities gpu",
    });
  }
  log(`gpu capability: training backend ${info.backend} (${info.adapter})`);
}
