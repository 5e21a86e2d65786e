import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { defineStage, type StageDefinition } from "../../src/pipeline/stage.js";
import type { StageRegistry } from "../../src/pipeline/spec.js";
import { TEST_STAGES } from "./test-stages.js";

/** Appends one line per shard execution; append is atomic enough across worker processes. */
export function shardLog(workdir: string): string[] {
  const file = path.join(workdir, "..", "shards.log");
  return existsSync(file) ? readFileSync(file, "utf8").trim().split("\n").filter(Boolean) : [];
}

/**
 * A sharded stage for queue tests: each shard writes half its file, reports progress, sleeps
 * `slowMs`, then finishes, so a worker killed mid-shard leaves a partial file behind; a shard
 * named in `failShard` always throws.
 */
const slowSquares = defineStage({
  name: "slowsquares",
  version: "1",
  description: "squares numbers, one shard per number, slowly",
  params: z.strictObject({
    slowMs: z.number().int().min(0).default(0).describe("sleep inside each shard"),
    failShard: z.string().default("").describe("shard id that always fails"),
  }),
  inputs: ["numbers"],
  outputs: ["squares.json"],
  sharding: {
    async plan(ctx) {
      const values = JSON.parse(readFileSync(ctx.inputs.numbers!.files["numbers.json"]!, "utf8")) as number[];
      return values.map((value, i) => ({ id: `rows-${i}`, payload: { value } }));
    },
    async runShard(ctx, shard, dir) {
      appendFileSync(path.join(ctx.pipeline.workdir, "..", "shards.log"), `${shard.id} ${process.pid}\n`);
      if (shard.id === ctx.params.failShard) throw new Error(`boom in shard ${shard.id}`);
      const value = shard.payload.value as number;
      const out = path.join(dir, "part.json");
      writeFileSync(out, "[");
      ctx.emit({ kind: "progress", stage: "slowsquares", task: shard.id, done: 0, total: 1 });
      if (ctx.params.slowMs) await sleep(ctx.params.slowMs);
      writeFileSync(out, JSON.stringify([value * value]));
    },
    async merge(ctx, shards) {
      const all = shards.flatMap((s) => JSON.parse(readFileSync(path.join(s.dir, "part.json"), "utf8")) as number[]);
      writeFileSync(path.join(ctx.outDir, "squares.json"), JSON.stringify(all));
      // A check that warns, so tests see warnings cross a queue worker.
      if (shards.length > 3) ctx.warn("many-shards", `merged ${shards.length} shards`, { shards: shards.length });
      return { shards: shards.length };
    },
  },
});

/** Records which process ran it; with `device: gpu` only a `--capabilities gpu` worker may take it. */
const accelerated = defineStage({
  name: "accelerated",
  version: "1",
  description: "writes the pid of the process that ran it",
  params: z.strictObject({ device: z.enum(["any", "gpu"]).default("any").describe("gpu: the job needs a worker with the gpu capability") }),
  inputs: ["numbers"],
  outputs: ["ran-by.json"],
  capabilities: (params) => (params.device === "gpu" ? ["gpu"] : []),
  async run(ctx) {
    writeFileSync(path.join(ctx.outDir, "ran-by.json"), JSON.stringify({ pid: process.pid }));
    return { pid: process.pid };
  },
});

export const QUEUE_TEST_STAGES: StageRegistry = new Map<string, StageDefinition>([
  ...TEST_STAGES,
  [slowSquares.name, slowSquares as StageDefinition],
  [accelerated.name, accelerated as StageDefinition],
]);
