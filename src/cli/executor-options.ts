import type { CliIO, OptionSpec, ParsedArgs } from "./command.js";
import { stringOption } from "./command.js";
import { UsageError } from "../errors.js";
import { InProcessExecutor, type Executor } from "../pipeline/executor.js";
import { STAGES } from "../stages.js";

/** Options shared by commands that execute stages (run, sweep, scheduler). */
export const executorOptions: Record<string, OptionSpec> = {
  executor: {
    type: "string",
    choices: ["in-process", "bullmq"],
    valueName: "NAME",
    description: "where stages run: in-process, or bullmq (needs --redis)",
    default: "in-process",
  },
  concurrency: { type: "number", valueName: "N", description: "shards run at once inside a sharded stage (in-process)", default: "1" },
  redis: { type: "string", valueName: "URL", description: "Redis for --executor bullmq, e.g. redis://127.0.0.1:6379 (default: $PROLEARN_REDIS)" },
};

/** The --redis URL, or $PROLEARN_REDIS; undefined when neither is set. */
export function redisUrlOption(args: ParsedArgs): string | undefined {
  return stringOption(args, "redis") ?? (process.env.PROLEARN_REDIS || undefined);
}

export async function createExecutor(args: ParsedArgs, _io: CliIO): Promise<Executor> {
  const name = stringOption(args, "executor") ?? "in-process";
  const concurrency = Number(stringOption(args, "concurrency") ?? "1");
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new UsageError(`--concurrency expects a positive integer, got ${stringOption(args, "concurrency")}`);
  if (name === "in-process") return new InProcessExecutor(STAGES, concurrency);
  if (name === "bullmq") {
    const redisUrl = redisUrlOption(args);
    if (!redisUrl)
      throw new UsageError("--executor bullmq needs --redis URL", {
        hint: "e.g. --redis redis://127.0.0.1:6379, with workers started by `prolearn worker --redis URL`",
      });
    // Loaded only here: BullMQ and ioredis cost ~0.3 s of start-up that in-process runs never need.
    const [{ checkRedis }, { BullMqExecutor }] = await Promise.all([import("../queue/redis.js"), import("../queue/executor.js")]);
    // Fail before the run starts, not inside its first stage.
    await checkRedis(redisUrl);
    return new BullMqExecutor({ redisUrl, registry: STAGES, skipRedisCheck: true });
  }
  throw new UsageError(`unknown executor "${name}"`, { hint: "use in-process or bullmq" });
}
