import { readdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { defineStage, type StageDefinition } from "../../src/pipeline/stage.js";
import type { StageRegistry } from "../../src/pipeline/spec.js";

/**
 * A small registry of real stages over real files, for engine tests: `numbers` reads every
 * .txt file of the dataset root, `scale` multiplies, `total` sums. Each appends to a run log so
 * tests can see exactly which stages executed.
 */
export function logExecution(workdir: string, stage: string): void {
  const file = path.join(workdir, "..", "executions.log");
  writeFileSync(file, (existsSync(file) ? readFileSync(file, "utf8") : "") + stage + "\n");
}

export function executions(workdir: string): string[] {
  const file = path.join(workdir, "..", "executions.log");
  return existsSync(file) ? readFileSync(file, "utf8").trim().split("\n").filter(Boolean) : [];
}

const numbers = defineStage({
  name: "numbers",
  version: "1",
  description: "reads numbers from the dataset's .txt files",
  params: z.strictObject({ pattern: z.string().default(".txt").describe("file suffix") }),
  inputs: [],
  outputs: ["numbers.json"],
  async resources(pipeline, params, { digester }) {
    const files = readdirSync(pipeline.dataset.root)
      .filter((f) => f.endsWith(params.pattern))
      .map((f) => path.join(pipeline.dataset.root, f));
    return { dataset: await digester.digestFiles(files, pipeline.dataset.root) };
  },
  async run(ctx) {
    logExecution(ctx.pipeline.workdir, "numbers");
    const values = readdirSync(ctx.pipeline.dataset.root)
      .filter((f) => f.endsWith(ctx.params.pattern))
      .sort()
      .map((f) => Number(readFileSync(path.join(ctx.pipeline.dataset.root, f), "utf8")));
    writeFileSync(path.join(ctx.outDir, "numbers.json"), JSON.stringify(values));
    return { count: values.length };
  },
});

const scale = defineStage({
  name: "scale",
  version: "1",
  description: "multiplies every number",
  params: z.strictObject({
    factor: z.number().default(2).describe("multiplier"),
    slowMs: z.number().default(0).describe("sleep inside the stage, after writing half the output"),
    releaseFile: z.string().optional().describe("after writing half the output, wait until this file exists (a test holds the stage mid-way)"),
  }),
  inputs: ["numbers"],
  outputs: ["scaled.json"],
  async run(ctx) {
    logExecution(ctx.pipeline.workdir, "scale");
    const values = JSON.parse(readFileSync(ctx.inputs.numbers!.files["numbers.json"]!, "utf8")) as number[];
    const out = path.join(ctx.outDir, "scaled.json");
    if (ctx.params.slowMs || ctx.params.releaseFile) {
      writeFileSync(out, "[1,");
      ctx.emit({ kind: "progress", stage: "scale", task: "half", done: 1, total: 2 });
      await sleep(ctx.params.slowMs);
      while (ctx.params.releaseFile && !existsSync(ctx.params.releaseFile)) await sleep(50);
    }
    writeFileSync(out, JSON.stringify(values.map((v) => v * ctx.params.factor)));
    return { factor: ctx.params.factor };
  },
});

const total = defineStage({
  name: "total",
  version: "1",
  description: "sums the scaled numbers",
  params: z.strictObject({}),
  inputs: ["scale"],
  outputs: ["total.json"],
  async run(ctx) {
    logExecution(ctx.pipeline.workdir, "total");
    const values = JSON.parse(readFileSync(ctx.inputs.scale!.files["scaled.json"]!, "utf8")) as number[];
    const sum = values.reduce((a, b) => a + b, 0);
    writeFileSync(path.join(ctx.outDir, "total.json"), JSON.stringify({ sum }));
    return { sum };
  },
});

/** A sharded stage: squares numbers in shards of two and merges them in plan order. */
const squares = defineStage({
  name: "squares",
  version: "1",
  description: "squares numbers, sharded",
  params: z.strictObject({ shardSize: z.number().int().default(2).describe("rows per shard") }),
  inputs: ["numbers"],
  outputs: ["squares.json"],
  sharding: {
    async plan(ctx) {
      const values = JSON.parse(readFileSync(ctx.inputs.numbers!.files["numbers.json"]!, "utf8")) as number[];
      const shards = [];
      for (let i = 0; i < values.length; i += ctx.params.shardSize)
        shards.push({ id: `rows-${i}`, payload: { values: values.slice(i, i + ctx.params.shardSize) } });
      return shards;
    },
    async runShard(_ctx, shard, dir) {
      const values = shard.payload.values as number[];
      writeFileSync(path.join(dir, "part.json"), JSON.stringify(values.map((v) => v * v)));
    },
    async merge(ctx, shards) {
      const all = shards.flatMap((s) => JSON.parse(readFileSync(path.join(s.dir, "part.json"), "utf8")) as number[]);
      writeFileSync(path.join(ctx.outDir, "squares.json"), JSON.stringify(all));
      return { shards: shards.length };
    },
  },
});

export const TEST_STAGES: StageRegistry = new Map<string, StageDefinition>([numbers, scale, total, squares].map((s) => [s.name, s as StageDefinition]));
