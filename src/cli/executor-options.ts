import type { CliIO, OptionSpec, ParsedArgs } from "./command.js";
import { stringOption } from "./command.js";
import { UsageError } from "../errors.js";
import { InProcessExecutor, type Executor } from "../pipeline/executor.js";
import { STAGES } from "../stages.js";

/** Options shared by commands that execute stages (run, sweep, scheduler). */
export const executorOptions: Record<string, OptionSpec> = {
  executor: { type: "string", valueName: "NAME", description: "where stages run: in-process, or bullmq (needs --redis)", default: "in-process" },
  concurrency: { type: "string", valueName: "N", description: "shards run at once inside a sharded stage (in-process)", default: "1" },
};

export async function createExecutor(args: ParsedArgs, _io: CliIO): Promise<Executor> {
  const name = stringOption(args, "executor") ?? "in-process";
  const concurrency = Number(stringOption(args, "concurrency") ?? "1");
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new UsageError(`--concurrency expects a positive integer, got ${stringOption(args, "concurrency")}`);
  if (name === "in-process") return new InProcessExecutor(STAGES, concurrency);
  throw new UsageError(`unknown executor "${name}"`, { hint: "use in-process" });
}
