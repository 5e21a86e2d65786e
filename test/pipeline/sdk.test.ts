// The SDK as the docs show it: every name a README or docs/ example imports from "prolearn" is
// exported by the package root, and the pipeline example of docs/pipelines.md runs.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import * as prolearn from "../../src/index.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { scratchDir } from "../train/helpers.js";

const repoRoot = path.resolve(import.meta.dirname, "../..");

test('every name the README and docs/ import from "prolearn" is exported by the package root', () => {
  const files = [
    "README.md",
    ...readdirSync(path.join(repoRoot, "docs"))
      .filter((f) => f.endsWith(".md"))
      .map((f) => path.join("docs", f)),
  ];
  const imported: { name: string; file: string }[] = [];
  for (const file of files) {
    const text = readFileSync(path.join(repoRoot, file), "utf8");
    for (const match of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*["']prolearn["']/g)) {
      for (const part of match[1]!.split(",")) {
        const name = part
          .trim()
          .replace(/^type\s+/, "")
          .split(/\s+as\s+/)[0]!
          .trim();
        if (name) imported.push({ name, file });
      }
    }
  }
  assert.ok(imported.length >= 8, `found the docs' imports (${imported.length})`);
  const exported = new Set(Object.keys(prolearn));
  const typeOnly = new Set(["ReportModel", "ReportOptions", "QueryOptions", "QueryResult", "HdbscanOptions", "HdbscanResult", "RunResult", "StageResult"]);
  const missing = imported.filter(({ name }) => !exported.has(name) && !typeOnly.has(name));
  assert.deepEqual(missing, [], "names the docs import that the package does not export");
});

test("the TypeScript example of docs/pipelines.md runs as written", async () => {
  const dir = await scratchDir("sdk");
  const fixture = await writeFixtureDataset({ kind: "kvasir-seg", layout: "kvasir", out: path.join(dir, "Kvasir-SEG"), n: 12, seed: 3, size: 32 });
  const { definePipeline, resolvePipeline, STAGES, runPipeline } = prolearn;
  const pipeline = resolvePipeline(
    definePipeline({ name: "kvasir", workdir: path.join(dir, ".prolearn"), dataset: { kind: "kvasir-seg", root: fixture.root }, stages: { ingest: {} } }),
    STAGES,
    { baseDir: dir },
  );
  const result = await runPipeline(pipeline, { registry: STAGES });
  assert.equal(result.status, "ok", JSON.stringify(result.stages.map((s) => s.error)));
  assert.deepEqual(
    result.stages.map((s) => [s.name, s.status]),
    [["ingest", "ran"]],
  );
  assert.ok(result.stages[0]!.outputs["samples.parquet"]!.endsWith("samples.parquet"));
});
