import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { cacheKeyOf, keyPartsOf, runPipeline } from "../../src/pipeline/engine.js";
import { resolvePipeline } from "../../src/pipeline/spec.js";
import { parseInputRef } from "../../src/pipeline/stage.js";
import { sha256 } from "../../src/util/hash.js";
import { STAGES, STAGE_NAMES, definePipeline, type PipelineStagesInput, type StageName } from "../../src/stages.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";

/**
 * The contract every registered stage keeps (issue 17): a golden cache key for its definition,
 * reuse on an unchanged rerun, and a rerun when one of its own params changes. The tables below
 * are keyed by StageName, so registering a stage without its rows here does not compile.
 */

// The cache key of each stage with its default params over fixed input digests. A change here
// means every workdir recomputes that stage: if it is on purpose (a new default, a version bump,
// a new key part), update the key and say so in the commit.
const GOLDEN_KEYS: Record<StageName, string> = {
  ingest: "98a3a43d5d10446d02e0b75d5d68dc52",
  guide: "a763da9d8975a7ed533b0039c8b6e1dc",
  filter: "6939fdd4c35a1c05d8cf3a9cc42e6620",
  embed: "35b4b24c0a4839c12d903c7c1f2870f0",
  prototypes: "14676371bc5fa7caa3ea4faf49c1c9d4",
  train: "0daff734648f77669a5ef5dcd11a60b5",
  baseline: "8ec27523f6ee1692a2346ff9874a71f5",
  evaluate: "4d94080974a550203d9d184e1166c365",
};

test("golden cache keys: each registered stage's key over fixed inputs is pinned", () => {
  const stages = Object.fromEntries(STAGE_NAMES.map((name) => [name, {}]));
  const pipeline = resolvePipeline({ name: "golden", dataset: { kind: "qata-cov19", root: "/data" }, stages }, STAGES, { baseDir: "/project" });
  const actual: Record<string, string> = {};
  for (const name of STAGE_NAMES) {
    const stage = STAGES.get(name)!;
    const refs = [...stage.inputs, ...(stage.optionalInputs ?? []).filter((ref) => parseInputRef(ref).stage in pipeline.stages)];
    const inputs = Object.fromEntries(refs.map((ref) => [ref, sha256(`output of ${ref}`)]));
    const resources: Record<string, string> =
      name === "ingest" ? { dataset: sha256("dataset files") } : name === "baseline" ? { "train-budget": sha256("train budget") } : {};
    actual[name] = cacheKeyOf(keyPartsOf(stage, pipeline, inputs, resources));
  }
  assert.deepEqual(actual, GOLDEN_KEYS);
});

test("every registered stage reads stages registered before it, and only files they declare", () => {
  for (const [index, name] of STAGE_NAMES.entries()) {
    const stage = STAGES.get(name)!;
    for (const ref of [...stage.inputs, ...(stage.optionalInputs ?? [])]) {
      const { stage: dep, file } = parseInputRef(ref);
      assert.ok(
        STAGE_NAMES.indexOf(dep as StageName) >= 0 && STAGE_NAMES.indexOf(dep as StageName) < index,
        `${name} reads ${dep}, which is not registered before it`,
      );
      if (file) assert.ok(STAGES.get(dep)!.outputs.includes(file), `${name} reads ${file} of ${dep}, which ${dep} does not declare`);
    }
  }
});

// Tiny settings: every stage runs in seconds on 2 CPU cores.
const NET = { imageSize: 16, baseChannels: 4, depth: 2, heads: 2, backend: "cpu" as const, batchSize: 8, patience: 0, epochs: 1 };
const TINY = {
  ingest: {},
  guide: { ...NET, tokenDim: 8, maxTokens: 16 },
  filter: { backend: "cpu" },
  embed: { encoder: "builtin", dim: 16 },
  prototypes: { minClusterSize: 2, k: 2 },
  train: { ...NET, tokenDim: 8, guidanceTokens: 2 },
  baseline: { backend: "cpu" },
  evaluate: { backend: "cpu", examples: 1 },
} satisfies PipelineStagesInput;

/** One key param per stage, changed: the stage must rerun. */
const PARAM_CHANGES = {
  ingest: { maskAmbiguousFraction: 0.02 },
  guide: { learningRate: 2e-3 },
  filter: { threshold: 0.5 },
  embed: { dim: 24 },
  prototypes: { k: 3 },
  train: { learningRate: 2e-3 },
  baseline: { seeds: 2 },
  evaluate: { examples: 2 },
} satisfies Record<StageName, object>;

test("every registered stage: runs, is reused on an unchanged rerun, reruns when one of its params changes", { timeout: 600_000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-contract-"));
  const fixture = await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 24, seed: 5, size: 32 });
  const spec = (stages: PipelineStagesInput) =>
    definePipeline({
      name: "contract",
      workdir: path.join(dir, "work"),
      dataset: { kind: "qata-cov19", root: fixture.root, layout: "sgseg", textAvailability: 0.75, seed: 5 },
      stages,
    });
  const run = async (stages: PipelineStagesInput, only?: StageName) =>
    runPipeline(resolvePipeline(spec(stages), STAGES, { baseDir: dir }), { registry: STAGES, only });

  const first = await run(TINY);
  assert.equal(first.status, "ok", JSON.stringify(first.stages.map((s) => [s.name, s.status, s.error])));
  assert.deepEqual(
    first.stages.map((s) => s.name),
    [...STAGE_NAMES],
    "the pipeline holds every registered stage",
  );
  assert.deepEqual(
    first.stages.map((s) => s.status),
    STAGE_NAMES.map(() => "ran"),
  );

  const second = await run(TINY);
  assert.deepEqual(
    second.stages.map((s) => [s.name, s.status]),
    STAGE_NAMES.map((name) => [name, "cached"]),
  );
  assert.deepEqual(
    second.stages.map((s) => s.cacheKey),
    first.stages.map((s) => s.cacheKey),
  );

  for (const name of STAGE_NAMES) {
    const changed = { ...TINY, [name]: { ...TINY[name], ...PARAM_CHANGES[name] } };
    const result = await run(changed, name);
    const stage = result.stages.find((s) => s.name === name)!;
    assert.equal(stage.status, "ran", `${name} reruns after a param change: ${stage.error ?? stage.reason}`);
    const [key, value] = Object.entries(PARAM_CHANGES[name])[0]!;
    assert.deepEqual(
      stage.reasons.map((r) => r.code),
      ["param-changed"],
      `${name}: ${stage.reason}`,
    );
    assert.match(stage.reason, new RegExp(`^params\\.${key}: .* -> ${JSON.stringify(value).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`));
    assert.notEqual(stage.cacheKey, first.stages.find((s) => s.name === name)!.cacheKey);
  }
});
