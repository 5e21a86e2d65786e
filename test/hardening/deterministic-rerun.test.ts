import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, renameSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { runPipeline, type RunResult } from "../../src/pipeline/engine.js";
import { resolvePipeline } from "../../src/pipeline/spec.js";
import { ArtifactRegistry } from "../../src/prototypes/registry.js";
import { STAGES } from "../../src/stages.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { sha256 } from "../../src/util/hash.js";

/** Output file name -> sha256 of its bytes, per stage. */
function outputDigests(result: RunResult): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const stage of result.stages) {
    out[stage.name] = Object.fromEntries(Object.entries(stage.outputs).map(([name, file]) => [name, sha256(readFileSync(file))]));
  }
  return out;
}

test("a forced rerun of ingest -> guide -> embed -> prototypes gives byte-identical outputs, and the republished artifact verifies", {
  timeout: 300_000,
}, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-deterministic-"));
  const fixture = await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 32, seed: 5, size: 32 });
  const spec = {
    name: "repeat",
    workdir: path.join(dir, "work"),
    dataset: { kind: "qata-cov19", root: fixture.root, layout: "sgseg", textAvailability: 0.75, seed: 5 },
    stages: {
      ingest: {},
      guide: { imageSize: 32, baseChannels: 4, depth: 2, heads: 2, backend: "cpu", tokenDim: 8, maxTokens: 16, epochs: 1, batchSize: 8 },
      embed: { encoder: "builtin", dim: 32 },
      prototypes: { minClusterSize: 2, k: 2 },
    },
  };
  const pipeline = resolvePipeline(spec, STAGES, { baseDir: dir });
  const first = await runPipeline(pipeline, { registry: STAGES });
  assert.equal(first.status, "ok", JSON.stringify(first.stages.map((s) => [s.name, s.status, s.error])));
  // Read now: the forced rerun replaces the files at the same store paths.
  const firstBytes = outputDigests(first);
  const second = await runPipeline(pipeline, { registry: STAGES, force: "all" });
  assert.equal(second.status, "ok", JSON.stringify(second.stages.map((s) => [s.name, s.status, s.error])));
  assert.deepEqual(
    second.stages.map((s) => s.status),
    ["ran", "ran", "ran", "ran"],
    "every stage recomputed",
  );
  assert.deepEqual(outputDigests(second), firstBytes, "same bytes in every output file");
  assert.deepEqual(
    second.stages.map((s) => s.digest),
    first.stages.map((s) => s.digest),
    "same stage digests, so nothing downstream would rerun",
  );

  // The tamper hint's recovery: move the published copy away and run again. The republished
  // manifest is the same bytes as the registered one, so verify is ok again (not TAMPERED forever).
  const digest = (second.stages.find((s) => s.name === "prototypes")!.summary.artifact as { digest: string }).digest;
  const published = path.join(pipeline.workdir, "artifacts", "prototypes", digest);
  renameSync(published, path.join(dir, "moved-away"));
  const third = await runPipeline(pipeline, { registry: STAGES, force: ["prototypes"] });
  assert.equal(third.status, "ok", JSON.stringify(third.stages.map((s) => [s.name, s.status, s.error])));
  const registry = ArtifactRegistry.open(pipeline.workdir);
  try {
    const reports = await registry.verify();
    assert.equal(reports.length, 1, "one version: same content, same digest");
    assert.ok(reports[0]!.ok, reports[0]!.problems.join("; "));
  } finally {
    registry.close();
  }
});
