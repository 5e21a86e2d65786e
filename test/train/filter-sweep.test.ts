import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { writeParquetFile } from "../../src/io/parquet.js";
import { applyThreshold, checkTrust, filteredTable, joinTokens } from "../../src/filter/run.js";
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

test("the filter's trust check keeps every token when too few validation reports are within the text budget", async () => {
  // With fewer pairs than minPairs the check returns before running the guide, so no model is needed.
  const trust = await checkTrust({
    store: new Map(),
    config: {} as never,
    text: {} as never,
    val: [],
    trainTokens: [["upper", "left"]],
    threshold: "auto",
    positions: "all",
    batchSize: 8,
    tolerance: 0.02,
    minPairs: 8,
    seed: 1,
  });
  assert.equal(trust.trusted, false);
  assert.equal(trust.validationPairs, 0);
  assert.equal(trust.diceAllTokens, null);
  assert.match(trust.reason, /only 0 validation reports within the text budget \(the check needs 8\): every token is kept/);
});

test("WordPiece continuations join their word", () => {
  assert.equal(joinTokens(["bi", "##lateral", "infection"]), "bilateral infection");
});

test("sweep assignment parsing and the Table-1-like table", () => {
  assert.deepEqual(parseSweepAssignment("dataset.textAvailability=0.5,0.25,0.01"), { key: "dataset.textAvailability", values: [0.5, 0.25, 0.01] });
  const rows: SweepRow[] = [
    {
      value: 0.5,
      status: "ok",
      prolearn: { dice: 0.8667, iou: 0.765, dicePooled: 0.87, iouPooled: 0.77 },
      baseline: { dice: 0.819, iou: 0.7, dicePooled: 0.82, iouPooled: 0.7 },
      psaOwnReportAuc: 0.6123,
      ran: 7,
      cached: 0,
    },
    { value: 0.01, status: "failed", prolearn: null, baseline: null, ran: 2, cached: 1, error: "prototypes: too few reports" },
  ];
  const table = formatSweepTable("dataset.textAvailability", rows).split("\n");
  assert.match(table[0]!, /^textAvailability\s+ProLearn Dice\s+ProLearn mIoU\s+U-Net Dice\s+U-Net mIoU\s+ProLearn Dice \(pooled\)/);
  assert.match(table[0]!, /ProLearn Dice \(pooled\)\s+PSA own-report AUC\s+stages ran\/cached$/);
  assert.match(table[2]!, /^50%\s+0\.8667\s+0\.7650\s+0\.8190\s+0\.7000\s+0\.8700\s+0\.6123\s+7\/0$/);
  assert.match(table[3]!, /^1%\s+failed: prototypes: too few reports/);
});

test("the sweep table prints the controls' Dice and ProLearn's paired differences with their intervals", () => {
  const h = (dice: number) => ({ dice, iou: dice - 0.1, dicePooled: dice, iouPooled: dice - 0.1 });
  const rows: SweepRow[] = [
    {
      value: 0.1,
      status: "ok",
      prolearn: h(0.7),
      baseline: h(0.6),
      controls: { "shuffled-psa": h(0.5), "mean-text": h(0.55), "own-report": h(0.9) },
      paired: [
        { b: "unet", meanDiff: 0.1, ci95: [0.05, 0.15] },
        { b: "shuffled-psa", meanDiff: 0.2, ci95: [0.1, 0.3] },
        { b: "mean-text", meanDiff: 0.15, ci95: [-0.01, 0.3] },
        { b: "own-report", meanDiff: -0.2, ci95: [-0.3, -0.1] },
      ],
      seeds: 3,
      psaOwnReportAuc: null,
      ran: 7,
      cached: 0,
    },
    { value: 0.01, status: "failed", prolearn: null, baseline: null, ran: 2, cached: 1, error: "prototypes: too few reports" },
  ];
  const table = formatSweepTable("dataset.textAvailability", rows).split("\n");
  assert.match(
    table[0]!,
    /U-Net mIoU\s+shuffled-PSA Dice\s+mean-text Dice\s+own-report Dice\s+ProLearn Dice \(pooled\)\s+ProLearn - U-Net \[95% CI\]\s+ProLearn - shuffled-PSA \[95% CI\]\s+ProLearn - mean-text \[95% CI\]\s+ProLearn - own-report \[95% CI\]\s+PSA own-report AUC\s+seeds\s+stages ran\/cached$/,
  );
  assert.match(
    table[2]!,
    /^10%\s+0\.7000\s+0\.6000\s+0\.6000\s+0\.5000\s+0\.5000\s+0\.5500\s+0\.9000\s+0\.7000\s+\+0\.1000 \[\+0\.0500, \+0\.1500\]\s+\+0\.2000 \[\+0\.1000, \+0\.3000\]\s+\+0\.1500 \[-0\.0100, \+0\.3000\]\s+-0\.2000 \[-0\.3000, -0\.1000\]\s+-\s+3\s+7\/0$/,
  );
  assert.equal(table[3]!.split(/\s{2,}/).length <= table[0]!.split(/\s{2,}/).length, true, "a failed row spans no more columns than the header");
});

test("prolearn inspect filter prints a report's tokens and scores", async () => {
  const dir = await scratchDir("inspect");
  const file = path.join(dir, "filtered.parquet");
  await writeParquetFile(
    file,
    filteredTable([
      {
        id: "covid_1",
        report: "Upper left lung.",
        filteredReport: "upper left",
        tokens: ["upper", "left", "lung"],
        scores: [0.5, 0.3, 0.2],
        kept: [true, true, false],
        threshold: 1 / 3,
      },
    ]),
  );
  const { code, stdout: out, stderr: err } = await cli(["inspect", "filter", "covid_1", "--file", file, "--json"]);
  assert.equal(code, 0, err);
  assert.match(err, /covid_1: 2\/3 tokens kept/);
  assert.match(err, /upper\s+0\.5000\s+yes/);
  assert.match(err, /lung\s+0\.2000\s+no/);
  assert.deepEqual(JSON.parse(out).tokens, ["upper", "left", "lung"]);
  const missing = await cli(["inspect", "filter", "nope", "--file", file]);
  assert.equal(missing.code, 2);
});
