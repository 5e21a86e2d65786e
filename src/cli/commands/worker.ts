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
    "Workers and the submitting `prolearn run` must share the workdir's filesystem. SIGTERM (or Ctrl-C) stops taking jobs and waits for the running ones up to --grace-s; a second signal, a Redis that does not answer, or the end of the grace period drops the connections at once and exits 1 (unfinished jobs are retried by another worker once their lock expires).",
    "A job whose payload (JSON) exceeds --max-payload-mb, whose id is not one `run --executor bullmq` makes, or whose params do not fit its stage's schema fails at once, without retries.",
    "With --capabilities gpu the worker first starts a GPU training backend (docs/backends.md) and exits 1 if none starts: a GPU job on a worker that would train on the CPU runs many times slower than the submitter planned for.",
  ].join("\n"),
  positionals: [],
  options: {
    redis: { type: "string", valueName: "URL", description: "Redis URL, e.g. redis://127.0.0.1:6379 (default: $PROLEARN_REDIS)" },
    concurrency: { type: "number", valueName: "N", description: "jobs run at once in this process", default: "1" },
    capabilities: { type: "string", valueName: "NAME", multiple: true, description: "extra capabilities this machine offers: gpu" },
    root: {
      type: "string",
      valueName: "DIR",
      multiple: true,
      description: "folder that workdirs and datasets named in jobs must lie in (default: the current folder)",
    },
    "grace-s": {
      type: "number",
      valueName: "S",
      description: "on SIGTERM, how long running jobs may take to finish before the worker stops anyway",
      default: "600",
    },
    "max-payload-mb": { type: "number", valueName: "MB", description: "largest job payload (JSON) accepted; larger jobs fail", default: "16" },
    "lock-ms": {
      type: "number",
      valueName: "MS",
      description: "how long a silent (killed) worker keeps a job before another worker retries it",
      default: "30000",
    },
  },
  async run(args, io) {
    const redisUrl = redisUrlOption(args);
    if (!redisUrl) throw new UsageError("prolearn worker needs --redis URL", { hint: "e.g. prolearn worker --redis redis://127.0.0.1:6379" });
    const concurrency = Number(stringOption(args, "concurrency"));
    if (!Number.isInteger(concurrency) || concurrency < 1)
      throw new UsageError(`--concurrency expects a positive integer, got ${stringOption(args, "concurrency")}`);
    const lockMs = Number(stringOption(args, "lock-ms"));
    if (!Number.isInteger(lockMs) || lockMs < 1000)
      throw new UsageError(`--lock-ms expects milliseconds (at least 1000), got ${stringOption(args, "lock-ms")}`);
    const graceS = Number(stringOption(args, "grace-s"));
    if (!Number.isFinite(graceS) || graceS < 0) throw new UsageError(`--grace-s expects seconds (0 or more), got ${stringOption(args, "grace-s")}`);
    const maxPayloadMb = Number(stringOption(args, "max-payload-mb"));
    if (!Number.isFinite(maxPayloadMb) || maxPayloadMb <= 0)
      throw new UsageError(`--max-payload-mb expects a positive number, got ${stringOption(args, "max-payload-mb")}`);
    const capabilities = ((args.options.capabilities as string[] | undefined) ?? []).flatMap((c) => c.split(",")).filter(Boolean);
    const log = (line: string) => io.stderr.write(`${new Date().toISOString()} ${line}\n`);
    if (capabilities.includes("gpu")) await requireGpuBackend(log);
    // Listening before the worker starts: a SIGTERM right after "worker ready" must not kill the process outright.
    const signals = ["SIGTERM", "SIGINT"] as const;
    const stopRequested = new Promise<string>((resolve) => {
      for (const name of signals) process.once(name, () => resolve(name));
    });
    const worker = await startStageWorker({
      redisUrl,
      registry: STAGES,
      concurrency,
      capabilities,
      roots: args.options.root as string[] | undefined,
      lockDurationMs: lockMs,
      maxPayloadBytes: Math.floor(maxPayloadMb * 1024 * 1024),
      graceMs: graceS * 1000,
      log,
    });
    const signal = await stopRequested;
    log(`${signal}: finishing running jobs (up to ${graceS} s), taking no new ones`);
    const again = new Promise<{ forced: boolean; reason?: string }>((resolve) => {
      for (const name of signals) process.once(name, () => resolve(worker.close({ now: true })));
    });
    const stopped = await Promise.race([worker.close(), again]);
    log(stopped.forced ? `worker stopped early: ${stopped.reason}` : "worker stopped");
    // Dropped connections may leave reconnect timers behind; nothing of this process is left to run.
    if (stopped.forced) setTimeout(() => process.exit(1), 200).unref();
    return stopped.forced ? 1 : 0;
  },
});

/** Starts the training backend `auto` would pick and refuses to serve GPU jobs on the cpu one. */
async function requireGpuBackend(log: (line: string) => void): Promise<void> {
  const { initTrainingBackend } = await import("../../tfjs/backends.js");
  const reasons: string[] = [];
  const info = await initTrainingBackend({
    backend: "auto",
    log: (line) => (line.startsWith("skipped: ") ? reasons.push(line.slice("skipped: ".length)) : undefined),
  });
  if (info.backend === "cpu") {
    throw new EnvironmentError(
      `--capabilities gpu, but no GPU training backend starts on this machine: ${reasons.join("; ") || "only the cpu backend is available"}`,
      {
        hint: "see docs/backends.md for the GPU backends and what they need, or start this worker without --capabilities gpu",
      },
    );
  }
  log(`gpu capability: training backend ${info.backend} (${info.adapter})`);
}
