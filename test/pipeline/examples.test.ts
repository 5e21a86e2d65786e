import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import path from "node:path";
import { loadPipelineFile } from "../../src/pipeline/spec.js";
import { STAGES } from "../../src/stages.js";

const dir = path.resolve(import.meta.dirname, "..", "..", "pipelines");

test("every example pipeline in pipelines/ validates against the current stages", () => {
  const files = readdirSync(dir).filter((f) => f.endsWith(".yaml"));
  assert.ok(files.length >= 4);
  for (const file of files) {
    const pipeline = loadPipelineFile(path.join(dir, file), STAGES);
    assert.ok(Object.keys(pipeline.stages).includes("ingest"), `${file} ingests`);
  }
});
