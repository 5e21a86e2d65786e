import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { writeParquetFile } from "../../src/io/parquet.js";
import { applyThreshold, filteredTable, joinTokens } from "../../src/filter/run.js";
import { formatSweepTable, parseSweepAssignment, type SweepRow } from "../../src/evaluate/sweep.js";
import { cli } from "../helpers/cli.js";
import { scratchDir } from "./helpers.js";

test("auto threshold keeps tokens above the report's mean score, in order", () => {
  const r = applyThreshold(["bilateral", "upper", "left", "lung"], [0.1, 0.4, 0.35, 0.15], "auto");
  assert.equal(r.threshold, 0.25);
  assert.deepEqual(r.kept, [false, true, true, false]);
  assert.equal(r.filtered, "upper left");
});

test("a numeric threshold that nothing passes keeps the best token", () => {
  const r = applyThreshold(["a", "b", "c"], [0.2, 0.5, 0.3], 0.9);
  assert.deepEqual(r.kept, [false, true, false]);
  assert.equal(r.filtered, "b");
});

test("WordPiece continuations join their word", () => {
  assert.equal(joinTokens(["bi", "##lateral", "infection"]), "bilateral infection");
});

test("sweep assignment parsing and the Table-1-like table", () => {
  assert.deepEqual(parseSweepAssignment("dataset.textAvailability=0.5,0.25,0.01"), { key: "dataset.textAvailability", values: [0.5, 0.25, 0.01] });
  const rows: SweepRow[] = [
    { value: 0.5, status: "ok", prolearn: { dice: 0.8667, iou: 0.765, dicePooled: 0.87, iouPooled: 0.77 }, baseline: { dice: 0.819, iou: 0.7, dicePooled: 0.82, iouPooled: 0.7 }, psaOwnReportAuc: 0.6123, ran: 7, cached: 0 },
    { value: 0.01, status: "failed", prolearn: null, baseline: null, ran: 2, cached: 1, error: "prototypes: too few reports" },
  ];
  const table = formatSweepTable("dataset.textAvailability", rows).split("\n");
  assert.match(table[0]!, /^textAvailability\s+ProLearn Dice\s+ProLearn mIoU\s+U-Net Dice\s+U-Net mIoU/);
  assert.match(table[0]!, /ProLearn Dice \(pooled\)\s+PSA own-report AUC\s+stages ran\/cached$/);
  assert.match(table[2]!, /^50%\s+0\.8667\s+0\.7650\s+0\.8190\s+0\.7000\s+0\.8700\s+0\.6123\s+7\/0$/);
  assert.match(table[3]!, /^1%\s+failed: prototypes: too few reports/);
});

test("prolearn inspect filter prints a report's tokens and scores", async () => {
  const dir = await scratchDir("inspect");
  const file = path.join(dir, "filtered.parquet");
  await writeParquetFile(file, filteredTable([{ id: "covid_1", report: "Upper left lung.", filteredReport: "upper left", tokens: ["upper", "left", "lung"], scores: [0.5, 0.3, 0.2], kept: [true, true, false], threshold: 1 / 3 }]));
  const { code, stdout: out, stderr: err } = await cli(["inspect", "filter", "covid_1", "--file", file, "--json"]);
  assert.equal(code, 0, err);
  assert.match(err, /covid_1: 2\/3 tokens kept/);
  assert.match(err, /upper\s+0\.5000\s+yes/);
  assert.match(err, /lung\s+0\.2000\s+no/);
  assert.deepEqual(JSON.parse(out).tokens, ["upper", "left", "lung"]);
  const missing = await cli(["inspect", "filter", "nope", "--file", file]);
  assert.equal(missing.code, 2);
});
