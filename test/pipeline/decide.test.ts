import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { z } from "zod";
import { decide, formatReasons, type KeyParts, type StageState } from "../../src/pipeline/decision.js";
import { planPipeline, runPipeline } from "../../src/pipeline/engine.js";
import { loadPipelineFile, type StageRegistry } from "../../src/pipeline/spec.js";
import { defineStage, type StageDefinition } from "../../src/pipeline/stage.js";
import { Catalog } from "../../src/pipeline/catalog.js";

const parts = (over: Partial<KeyParts> = {}): KeyParts => ({
  stage: "s",
  version: "1",
  params: { k: 2 },
  dataset: { seed: 1 },
  inputs: { up: "aaaaaaaaaa" },
  resources: {},
  ...over,
});
const state = (over: Partial<StageState> = {}): StageState => ({
  selected: true,
  forced: false,
  runFailed: false,
  missingInputs: [],
  pendingInputs: [],
  parts: parts(),
  cached: false,
  previous: undefined,
  ranBefore: false,
  only: false,
  ...over,
});

test("decide: each state gives one action with typed reasons", () => {
  assert.deepEqual(decide(state()), { action: "run", reasons: [{ code: "never-ran" }] });
  assert.deepEqual(decide(state({ cached: true, previous: parts(), ranBefore: true })), { action: "cached", reasons: [{ code: "unchanged" }] });
  assert.deepEqual(decide(state({ cached: true, forced: true })), { action: "run", reasons: [{ code: "forced" }] });
  assert.deepEqual(decide(state({ previous: parts(), ranBefore: true })), { action: "run", reasons: [{ code: "output-missing" }] });
  assert.deepEqual(decide(state({ damaged: ["a.parquet: missing"], previous: parts(), ranBefore: true })), {
    action: "run",
    reasons: [{ code: "output-damaged", problems: ["a.parquet: missing"] }],
  });
  assert.deepEqual(decide(state({ selected: false, cached: true })), { action: "skip", reasons: [{ code: "not-selected" }] });
  assert.deepEqual(decide(state({ runFailed: true })), { action: "skip", reasons: [{ code: "earlier-stage-failed" }] });
  assert.deepEqual(decide(state({ missingInputs: ["up"], parts: undefined, only: true })), {
    action: "skip",
    reasons: [{ code: "input-has-no-output", stages: ["up"], only: true }],
  });
  assert.deepEqual(decide(state({ pendingInputs: ["up"], parts: undefined })), { action: "run", reasons: [{ code: "upstream-will-run", stages: ["up"] }] });
});

test("decide: what changed since the last execution, one reason per changed leaf, rendered once", () => {
  const previous = parts({
    version: "0",
    params: { k: 1, gone: true },
    dataset: { seed: 1 },
    inputs: { up: "bbbbbbbbbb" },
    resources: { model: "cccccccccc" },
  });
  const decision = decide(state({ previous, ranBefore: true }));
  assert.equal(decision.action, "run");
  assert.deepEqual(decision.reasons, [
    { code: "code-changed", from: "0", to: "1" },
    { code: "param-changed", path: "params.k", from: 1, to: 2 },
    { code: "param-changed", path: "params.gone", from: true, to: undefined },
    { code: "input-changed", input: "up", from: "bbbbbbbbbb", to: "aaaaaaaaaa" },
    { code: "resource-changed", resource: "model", from: "cccccccccc", to: null },
  ]);
  assert.equal(
    formatReasons(decision.reasons),
    "code version 0 -> 1; params.k: 1 -> 2; params.gone: true -> (unset); input up changed (bbbbbbbb -> aaaaaaaa); resource model changed (cccccccc -> none)",
  );
});

// A stage that publishes two files, and a reader of one of them.
const source = defineStage({
  name: "source",
  version: "1",
  description: "writes a.json from `a` and b.json from `b`",
  params: z.strictObject({ a: z.number().default(1).describe("a"), b: z.number().default(1).describe("b") }),
  inputs: [],
  outputs: ["a.json", "b.json"],
  async run(ctx) {
    writeFileSync(path.join(ctx.outDir, "a.json"), JSON.stringify(ctx.params.a));
    writeFileSync(path.join(ctx.outDir, "b.json"), JSON.stringify(ctx.params.b));
    return {};
  },
});
const readsA = defineStage({
  name: "reader",
  version: "1",
  description: "reads a.json of source only",
  params: z.strictObject({}),
  inputs: ["source:a.json"],
  outputs: ["copy.json"],
  async run(ctx) {
    writeFileSync(path.join(ctx.outDir, "copy.json"), readFileSync(ctx.inputs.source!.files["a.json"]!));
    return {};
  },
});
const registry: StageRegistry = new Map<string, StageDefinition>([source, readsA].map((s) => [s.name, s as StageDefinition]));

function project(params: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-file-inputs-"));
  mkdirSync(path.join(dir, "data"));
  const file = path.join(dir, "pipeline.yaml");
  writeFileSync(file, `name: file-inputs\ndataset:\n  kind: qata-cov19\n  root: data\nstages:\n  source: ${params}\n  reader: {}\n`);
  return file;
}

test("a stage that names one file of its input keys on that file: a change elsewhere in the upstream output keeps it cached", async () => {
  const file = project("{ a: 1, b: 1 }");
  const first = await runPipeline(loadPipelineFile(file, registry), { registry });
  assert.deepEqual(
    first.stages.map((s) => s.status),
    ["ran", "ran"],
  );
  writeFileSync(file, readFileSync(file, "utf8").replace("b: 1", "b: 2"));
  const plan = await planPipeline(loadPipelineFile(file, registry), { registry });
  // The plan cannot know the new a.json before source runs; the run can, and reuses reader.
  assert.deepEqual(
    plan.map((p) => [p.action, p.reason]),
    [
      ["run", "params.b: 1 -> 2"],
      ["run", "upstream source will run"],
    ],
  );
  const second = await runPipeline(loadPipelineFile(file, registry), { registry });
  assert.deepEqual(
    second.stages.map((s) => s.status),
    ["ran", "cached"],
  );
  assert.equal(second.stages[1]!.cacheKey, first.stages[1]!.cacheKey);
  writeFileSync(file, readFileSync(file, "utf8").replace("a: 1", "a: 5"));
  const third = await runPipeline(loadPipelineFile(file, registry), { registry });
  assert.deepEqual(
    third.stages.map((s) => s.status),
    ["ran", "ran"],
  );
  assert.match(third.stages[1]!.reason, /^input source:a\.json changed \(\w{8} -> \w{8}\)$/);
  assert.deepEqual(
    third.stages[1]!.reasons.map((r) => r.code),
    ["input-changed"],
  );
});

test("a file input the upstream stage does not publish fails with the files it does", async () => {
  const broken = new Map(registry);
  broken.set("reader", { ...readsA, inputs: ["source:c.json"] } as StageDefinition);
  const file = project("{}");
  await assert.rejects(runPipeline(loadPipelineFile(file, broken), { registry: broken }), (error: Error & { hint?: string }) => {
    assert.match(error.message, /stage reader reads c\.json of stage source, which source does not publish/);
    assert.match(error.hint ?? "", /source publishes: a\.json, b\.json/);
    return true;
  });
});

test("plan and run give the same typed reasons, and the catalog keeps them", async () => {
  const file = project("{ a: 1 }");
  await runPipeline(loadPipelineFile(file, registry), { registry });
  writeFileSync(file, readFileSync(file, "utf8").replace("a: 1", "a: 3"));
  const plan = await planPipeline(loadPipelineFile(file, registry), { registry });
  const run = await runPipeline(loadPipelineFile(file, registry), { registry });
  assert.deepEqual(run.stages[0]!.reasons, plan[0]!.reasons);
  assert.equal(run.stages[0]!.reason, plan[0]!.reason);
  const catalog = new Catalog(path.join(path.dirname(file), ".prolearn"));
  assert.deepEqual(catalog.stageRuns(run.runId)[0]!.reasons, [{ code: "param-changed", path: "params.a", from: 1, to: 3 }]);
  catalog.close();
});

test("an output folder deleted by hand: plan says so and writes nothing; run recomputes it", async () => {
  const file = project("{ a: 1 }");
  const workdir = path.join(path.dirname(file), ".prolearn");
  const first = await runPipeline(loadPipelineFile(file, registry), { registry });
  const key = first.stages[0]!.cacheKey!;
  rmSync(path.join(workdir, "store", "source", key), { recursive: true });
  const plan = await planPipeline(loadPipelineFile(file, registry), { registry });
  assert.deepEqual(plan[0]!.reasons, [{ code: "output-missing" }]);
  const catalog = new Catalog(workdir);
  assert.ok(catalog.getOutput(key), "plan leaves the catalog as it was");
  catalog.close();
  const again = await runPipeline(loadPipelineFile(file, registry), { registry });
  assert.deepEqual(
    again.stages.map((s) => [s.status, s.reason]),
    [
      ["ran", "output missing from the store"],
      ["cached", "inputs, params and code unchanged"],
    ],
  );
});
