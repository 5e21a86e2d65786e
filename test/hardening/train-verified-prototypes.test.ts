import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { runPipeline } from "../../src/pipeline/engine.js";
import { resolvePipeline } from "../../src/pipeline/spec.js";
import { STAGES } from "../../src/stages.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";

test("the train stage loads the prototype space through the verified artifact path: a tampered registered copy stops it", { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-train-verified-"));
  const fixture = await writeFixtureDataset({ kind: "kvasir-seg", layout: "kvasir", out: path.join(dir, "data"), n: 24, seed: 3, size: 32 });
  const spec = {
    name: "verified",
    workdir: path.join(dir, "work"),
    dataset: { kind: "kvasir-seg", root: fixture.root, layout: "kvasir", textAvailability: 0.75, seed: 3 },
    stages: {
      ingest: {},
      embed: { encoder: "builtin", dim: 32 },
      prototypes: { minClusterSize: 2, k: 2 },
      train: { imageSize: 32, baseChannels: 4, depth: 2, heads: 2, backend: "cpu", epochs: 1, batchSize: 8, tokenDim: 8, guidanceTokens: 2 },
    },
  };
  const pipeline = resolvePipeline(spec, STAGES, { baseDir: dir });
  const logs: string[] = [];
  const first = await runPipeline(pipeline, { registry: STAGES, onEvent: (e) => void (e.kind === "log" && logs.push(e.message)) });
  assert.equal(first.status, "ok", JSON.stringify(first.stages.map((s) => [s.name, s.status, s.error])));
  assert.ok(
    logs.some((l) => /^prototypes: verified@1 \([0-9a-f]{12}\), verified$/.test(l)),
    logs.join("\n"),
  );

  // Change the registered copy (the one `prototypes query` loads); the store's copy is intact.
  const artifact = first.stages.find((s) => s.name === "prototypes")!.summary.artifact as { path: string };
  const file = path.join(artifact.path, "prototypes.parquet");
  chmodSync(artifact.path, 0o755);
  chmodSync(file, 0o644);
  const bytes = readFileSync(file);
  bytes[Math.floor(bytes.length / 2)] ^= 0xff;
  writeFileSync(file, bytes);

  const second = await runPipeline(pipeline, { registry: STAGES, force: ["train"] });
  assert.equal(second.status, "failed");
  const train = second.stages.find((s) => s.name === "train")!;
  assert.equal(train.status, "failed");
  assert.match(train.error!, /verified@1 failed verification: prototypes\.parquet: sha256 .* does not match the recorded/);
});
