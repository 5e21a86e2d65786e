import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { loadPipelineFile } from "../../src/pipeline/spec.js";
import { runPipeline } from "../../src/pipeline/engine.js";
import { Catalog } from "../../src/pipeline/catalog.js";
import type { StageRegistry } from "../../src/pipeline/spec.js";
import type { StageDefinition } from "../../src/pipeline/stage.js";
import { formatRunSummary } from "../../src/cli/render.js";
import { cli } from "../helpers/cli.js";
import { TEST_STAGES } from "./test-stages.js";

/** `scale` with a quality gate: a factor above 2 "fails the check" but still publishes (ctx.warn); `total` returns one in its summary. */
function registryWithChecks(): StageRegistry {
  const registry = new Map(TEST_STAGES);
  // biome-ignore lint/suspicious/noExplicitAny: scale's definition is reused with its params type erased; run reads ctx.params.factor
  const scale = TEST_STAGES.get("scale")! as StageDefinition<any>;
  registry.set("scale", {
    ...scale,
    run: async (ctx) => {
      const summary = await scale.run!(ctx);
      const factor = (ctx.params as { factor: number }).factor;
      if (factor > 2) ctx.warn("factor-too-large", `factor ${factor} is above the checked limit`, { factor, limit: 2 });
      return summary;
    },
  });
  const total = TEST_STAGES.get("total")!;
  registry.set("total", {
    ...total,
    run: async (ctx) => ({ ...(await total.run!(ctx)), warnings: [{ code: "total-is-a-test", message: "returned in the summary" }] }),
  });
  return registry;
}

function project(factor: number): { file: string; workdir: string } {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-warnings-"));
  mkdirSync(path.join(dir, "data"));
  for (const [name, value] of [
    ["a.txt", "1"],
    ["b.txt", "2"],
  ])
    writeFileSync(path.join(dir, "data", name), value!);
  const file = path.join(dir, "pipeline.yaml");
  writeFileSync(file, `name: warnings-test\ndataset:\n  kind: qata-cov19\n  root: data\nstages:\n  numbers: {}\n  scale: { factor: ${factor} }\n  total: {}\n`);
  return { file, workdir: path.join(dir, ".prolearn") };
}

test("a stage that warns ends ok; its warnings reach the result, the catalog, the summary line, status, and cached reruns", async () => {
  const registry = registryWithChecks();
  const { file, workdir } = project(3);
  const first = await runPipeline(loadPipelineFile(file, registry), { registry });
  assert.equal(first.status, "ok");
  assert.deepEqual(
    first.stages.map((s) => s.status),
    ["ran", "ran", "ran"],
  );
  assert.deepEqual(first.stages[1]!.warnings, [{ code: "factor-too-large", message: "factor 3 is above the checked limit", figures: { factor: 3, limit: 2 } }]);
  assert.deepEqual(first.stages[2]!.warnings, [{ code: "total-is-a-test", message: "returned in the summary" }]);
  assert.equal(first.stages[2]!.summary.warnings, undefined, "warnings are taken out of the published summary");
  const summary = formatRunSummary(first).split("\n");
  assert.ok(summary.includes("scale: warning: factor-too-large: factor 3 is above the checked limit (factor 3, limit 2)"), summary.join("\n"));
  assert.match(summary.at(-1)!, /^run \S+: ok with 2 warnings in /);

  const second = await runPipeline(loadPipelineFile(file, registry), { registry });
  assert.deepEqual(
    second.stages.map((s) => s.status),
    ["cached", "cached", "cached"],
  );
  assert.deepEqual(
    second.stages.map((s) => s.warnings),
    first.stages.map((s) => s.warnings),
    "a cached rerun repeats the producing run's warnings",
  );

  const catalog = new Catalog(workdir);
  const stored = catalog.stageRuns(second.runId).find((s) => s.stage === "scale")!;
  assert.deepEqual(stored.warnings, first.stages[1]!.warnings);
  assert.deepEqual(stored.reasons, [{ code: "unchanged" }]);
  catalog.close();

  const status = await cli(["status", "--workdir", workdir]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /ok \(2 warnings\)/);
  assert.match(status.stdout, /warning: factor-too-large: factor 3 is above the checked limit \(factor 3, limit 2\)/);
  const json = await cli(["status", "--workdir", workdir, "--json"]);
  const runs = JSON.parse(json.stdout).runs as { stages: { stage: string; warnings: unknown[]; reasons: unknown[] }[] }[];
  assert.deepEqual(runs[0]!.stages.find((s) => s.stage === "scale")!.warnings, first.stages[1]!.warnings);
  assert.deepEqual(runs[1]!.stages.find((s) => s.stage === "scale")!.reasons, [{ code: "never-ran" }]);
});

test("a stage whose check passes has no warnings", async () => {
  const registry = registryWithChecks();
  const { file } = project(2);
  const result = await runPipeline(loadPipelineFile(file, registry), { registry });
  assert.deepEqual(result.stages[1]!.warnings, []);
});

test("a catalog written before warnings and typed reasons were kept opens, migrates and keeps its rows", async () => {
  const { file, workdir } = project(2);
  mkdirSync(workdir, { recursive: true });
  // The stage_runs table as the first catalogs created it, with one row.
  const old = new Database(path.join(workdir, "catalog.sqlite"));
  old.exec(`CREATE TABLE runs (id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, pipeline_file TEXT, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL, trigger TEXT NOT NULL DEFAULT 'cli', executor TEXT NOT NULL DEFAULT 'in-process', pid INTEGER NOT NULL, report TEXT);
    CREATE TABLE stage_runs (run_id TEXT NOT NULL REFERENCES runs(id), stage TEXT NOT NULL, status TEXT NOT NULL, cache_key TEXT, reason TEXT NOT NULL, started_at TEXT NOT NULL, seconds REAL, error TEXT, output_digest TEXT, key_parts TEXT, PRIMARY KEY (run_id, stage));
    INSERT INTO runs VALUES ('old-run', 'warnings-test', NULL, '2020-01-01T00:00:00.000Z', '2020-01-01T00:00:01.000Z', 'ok', 'cli', 'in-process', 1, NULL);
    INSERT INTO stage_runs VALUES ('old-run', 'numbers', 'ran', 'k', 'never ran', '2020-01-01T00:00:00.000Z', 0.1, NULL, 'd', NULL);`);
  old.close();
  const registry = registryWithChecks();
  const result = await runPipeline(loadPipelineFile(file, registry), { registry });
  assert.equal(result.status, "ok");
  const catalog = new Catalog(workdir);
  const oldRow = catalog.stageRuns("old-run")[0]!;
  assert.equal(oldRow.reason, "never ran");
  assert.deepEqual([oldRow.reasons, oldRow.warnings], [[], []], "old rows read as no reasons kept, no warnings");
  catalog.close();
});
