import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { readParquetFile } from "../../src/io/parquet.js";
import { planPipeline, runPipeline } from "../../src/pipeline/engine.js";
import { resolvePipeline } from "../../src/pipeline/spec.js";
import { STAGES } from "../../src/stages.js";
import { writeTinyBiomedclipFolder } from "../embed/tiny-biomedclip.js";
import { scratchDir } from "./helpers.js";

test("guide and filter read BiomedCLIP token features (text hidden states) from a model folder", { timeout: 300_000 }, async () => {
  const dir = await scratchDir("guide-biomedclip");
  await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 24, seed: 4, size: 32 });
  const model = (await writeTinyBiomedclipFolder(path.join(dir, "biomedclip"))).dir;
  const pipeline = resolvePipeline(
    {
      name: "guide-biomedclip",
      dataset: { kind: "qata-cov19", root: "data", layout: "sgseg", textAvailability: 1, seed: 4 },
      stages: {
        ingest: {},
        guide: {
          encoder: "biomedclip",
          model: "biomedclip",
          imageSize: 32,
          baseChannels: 4,
          depth: 2,
          heads: 2,
          epochs: 1,
          batchSize: 8,
          maxTokens: 32,
          patience: 0,
          backend: "cpu",
        },
        filter: { backend: "cpu" },
      },
    },
    STAGES,
    { baseDir: dir },
  );
  const result = await runPipeline(pipeline, { registry: STAGES });
  assert.equal(
    result.status,
    "ok",
    result.stages
      .map((s) => s.error)
      .filter(Boolean)
      .join("\n"),
  );
  const guide = result.stages.find((s) => s.name === "guide")!;
  assert.deepEqual((guide.summary.guidance as { kind: string }).kind, "features");

  const filtered = await readParquetFile(result.stages.find((s) => s.name === "filter")!.outputs["filtered.parquet"]!);
  assert.ok(filtered.numRows > 0);
  const first = filtered.get(0)!.toJSON() as { tokens: { toArray(): string[] }; scores: { toArray(): Float32Array } };
  const tokens = [...first.tokens.toArray()];
  const scores = [...first.scores.toArray()];
  assert.equal(tokens.length, scores.length);
  assert.ok(tokens.length > 2, "WordPiece tokens of the report, from the model folder's tokenizer");
  assert.ok(scores.every((s) => Number.isFinite(s) && s >= 0));

  // The model folder is a declared resource of guide: new weights rerun it, nothing else does.
  const again = await runPipeline(pipeline, { registry: STAGES });
  assert.deepEqual(
    again.stages.map((s) => s.status),
    ["cached", "cached", "cached"],
  );
  const weights = path.join(model, "text_hidden.onnx");
  await writeFile(weights, await readFile(weights)); // same bytes, new mtime: re-hashed, same digest
  assert.equal((await runPipeline(pipeline, { registry: STAGES })).stages[1]!.status, "cached");
  await writeTinyBiomedclipFolder(model, { embedDim: 256 }); // a re-export with other weights
  const plan = await planPipeline(pipeline, { registry: STAGES });
  assert.equal(plan[1]!.action, "run");
  assert.match(plan[1]!.reason, /resource model changed/);
});
