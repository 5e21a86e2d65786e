import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { cli } from "../helpers/cli.js";

test("prolearn run with the package's stages: --json, a fully cached rerun under 2 s, plan says why after a param change", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-cli-run-"));
  await writeFixtureDataset({ kind: "kvasir-seg", layout: "kvasir", out: path.join(dir, "data"), n: 24, seed: 3, size: 32 });
  const file = path.join(dir, "pipeline.yaml");
  const yaml = (k: number) =>
    `name: cli-real\ndataset:\n  kind: kvasir-seg\n  root: data\n  textAvailability: 0.5\nstages:\n  ingest: {}\n  embed: { encoder: builtin, dim: 64 }\n  prototypes: { minClusterSize: 2, k: ${k} }\n`;
  writeFileSync(file, yaml(2));

  const first = await cli(["run", file, "--json"]);
  assert.equal(first.code, 0, first.stderr);
  const doc = JSON.parse(first.stdout);
  assert.deepEqual(
    doc.stages.map((s: { name: string; status: string }) => [s.name, s.status]),
    [
      ["ingest", "ran"],
      ["embed", "ran"],
      ["prototypes", "ran"],
    ],
  );
  for (const stage of doc.stages) {
    assert.match(stage.cacheKey, /^[0-9a-f]{32}$/);
    for (const output of Object.values(stage.outputs) as string[]) assert.ok(path.isAbsolute(output));
  }
  assert.equal(doc.totals.ran, 3);
  assert.match(first.stderr, /report: .*\.html/);

  const started = performance.now();
  const second = await cli(["run", file, "--json"]);
  const seconds = (performance.now() - started) / 1000;
  assert.equal(second.code, 0, second.stderr);
  assert.deepEqual(
    JSON.parse(second.stdout).stages.map((s: { status: string }) => s.status),
    ["cached", "cached", "cached"],
  );
  assert.ok(seconds < 2, `cached rerun took ${seconds.toFixed(2)} s`);

  const plan = await cli(["plan", file]);
  assert.match(plan.stdout, /^nothing to run/);

  writeFileSync(file, yaml(3));
  const changed = await cli(["plan", file, "--json"]);
  const stages = JSON.parse(changed.stdout).stages as { name: string; action: string; reason: string; reasons: unknown[] }[];
  assert.deepEqual(
    stages.map((s) => s.action),
    ["cached", "cached", "run"],
  );
  assert.match(stages[2]!.reason, /params\.k: 2 -> 3/);
  assert.deepEqual(stages[2]!.reasons, [{ code: "param-changed", path: "params.k", from: 2, to: 3 }], "--json reasons are typed");
  assert.deepEqual(stages[0]!.reasons, [{ code: "unchanged" }]);

  const rerun = await cli(["run", file, "--json"]);
  const ran = JSON.parse(rerun.stdout).stages as { reason: string; reasons: unknown[] }[];
  assert.deepEqual(ran[2]!.reasons, stages[2]!.reasons, "run records the reasons plan gave");
  assert.equal(ran[2]!.reason, stages[2]!.reason);
});
