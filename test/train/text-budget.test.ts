import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { readParquetFile } from "../../src/io/parquet.js";
import { runPipeline } from "../../src/pipeline/engine.js";
import { resolvePipeline } from "../../src/pipeline/spec.js";
import type { StageSummary } from "../../src/pipeline/stage.js";
import { STAGES } from "../../src/stages.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { artifact, makeFixture, pipelineFor, scratchDir, stageContext, writeSamples, type FixtureSample } from "./helpers.js";

test("ingest marks the text budget: train as available, the same seeded share of val, no test report; nested in r", { timeout: 120_000 }, async () => {
  const dir = await scratchDir("budget-ingest");
  const fixture = await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 60, seed: 4, size: 32 });
  const budgetAt = async (r: number) => {
    const result = await runPipeline(
      resolvePipeline(
        {
          name: "budget",
          workdir: path.join(dir, "work"),
          dataset: { kind: "qata-cov19", root: fixture.root, layout: "sgseg", textAvailability: r, seed: 4 },
          stages: { ingest: {} },
        },
        STAGES,
        { baseDir: dir },
      ),
      { registry: STAGES },
    );
    assert.equal(result.status, "ok");
    const table = await readParquetFile(result.stages[0]!.outputs["samples.parquet"]!, {
      columns: ["id", "split", "report", "report_available", "report_in_budget"],
    });
    return (table.toArray() as { id: string; split: string; report: string | null; report_available: boolean; report_in_budget: boolean }[]).map((row) => ({
      ...row,
    }));
  };
  const half = await budgetAt(0.5);
  const quarter = await budgetAt(0.25);
  for (const rows of [half, quarter]) {
    for (const row of rows) {
      if (row.split === "train") assert.equal(row.report_in_budget, row.report_available, `${row.id}: train rows are within the budget exactly when available`);
      if (row.split === "test") assert.equal(row.report_in_budget, false, `${row.id}: test reports never feed a choice`);
      if (row.split !== "train")
        assert.equal(row.report_available, row.report !== null, `${row.id}: val/test reports stay readable for diagnostics and evaluation`);
    }
  }
  const valWithReport = half.filter((r) => r.split === "val" && r.report !== null).length;
  assert.ok(valWithReport >= 4, `the fixture has validation reports (${valWithReport})`);
  const inBudget = (rows: typeof half) => new Set(rows.filter((r) => r.split === "val" && r.report_in_budget).map((r) => r.id));
  assert.equal(inBudget(half).size, Math.round(0.5 * valWithReport));
  assert.equal(inBudget(quarter).size, Math.round(0.25 * valWithReport));
  for (const id of inBudget(quarter)) assert.ok(inBudget(half).has(id), "the budgets nest: 25% within 50%");
});

const GUIDE = {
  imageSize: 16,
  channels: 1 as const,
  baseChannels: 4,
  depth: 2,
  heads: 2,
  epochs: 3,
  batchSize: 8,
  learningRate: 1e-2,
  minLearningRate: 1e-4,
  weightDecay: 0.01,
  patience: 0,
  backend: "cpu" as const,
  encoder: "builtin" as const,
  tokenDim: 8,
  maxTokens: 32,
  minWordCount: 1,
  imageDropout: 0,
};
const FILTER = {
  threshold: "auto" as const,
  positions: "all" as const,
  trust: "check" as const,
  tolerance: 0.02,
  minValidationPairs: 2,
  batchSize: 8,
  backend: "cpu" as const,
};

/** Runs guide then filter on the samples; returns the bytes and summaries a choice would show in. */
async function guideAndFilter(label: string, samples: readonly FixtureSample[]) {
  const dir = await scratchDir(`budget-${label}`);
  const pipeline = pipelineFor(dir, { textAvailability: 0.5 });
  const ingest = await writeSamples(path.join(dir, "ingest"), samples);
  const guideCtx = await stageContext("guide", GUIDE, pipeline, { ingest });
  const guideSummary = (await STAGES.get("guide")!.run!(guideCtx as never)) as StageSummary;
  const guide = artifact("guide", guideCtx.outDir, ["guide-model.json", "guide-weights.bin", "guide-history.json"]);
  const filterCtx = await stageContext("filter", FILTER, pipeline, { ingest, guide });
  const filterSummary = (await STAGES.get("filter")!.run!(filterCtx as never)) as StageSummary;
  const history = JSON.parse(await readFile(path.join(guideCtx.outDir, "guide-history.json"), "utf8")) as { epochs: { valDice: number }[] };
  return {
    weights: await readFile(path.join(guideCtx.outDir, "guide-weights.bin")),
    model: await readFile(path.join(guideCtx.outDir, "guide-model.json"), "utf8"),
    valDice: history.epochs.map((e) => e.valDice),
    filtered: await readFile(path.join(filterCtx.outDir, "filtered.parquet")),
    guideSummary,
    filterSummary,
  };
}

test("guide and filter choices read no report outside the text budget: changing those reports changes no byte; changing budget reports does", {
  timeout: 300_000,
}, async () => {
  const samples = await makeFixture({ counts: { train: 24, val: 12, test: 2 }, seed: 4, textAvailability: 0.5 });
  const inBudgetVal = samples.filter((s) => s.split === "val" && s.reportInBudget).length;
  assert.ok(inBudgetVal > 0 && inBudgetVal < 12, "some validation reports are outside the budget");
  // Reports a choice must not read, rewritten: unavailable training reports, validation reports
  // outside the budget (still readable for diagnostics), test reports.
  const outside = (s: FixtureSample) => (s.split === "train" ? !s.reportAvailable : !s.reportInBudget);
  const rewrite = (pick: (s: FixtureSample) => boolean) =>
    samples.map((s) => (pick(s) ? { ...s, report: "Unilateral pulmonary infection, one infected area, lower right lung and all left lung." } : s));
  const original = await guideAndFilter("original", samples);
  const outsideChanged = await guideAndFilter("outside", rewrite(outside));
  assert.equal(original.guideSummary.valSamples, inBudgetVal, "the guide validates on the budget's validation reports");
  const trust = original.filterSummary.trust as { validationPairs: number; diceAllTokens: number };
  assert.equal(trust.validationPairs, inBudgetVal, "the filter's trust check reads the budget's validation reports");
  assert.ok(Number.isFinite(trust.diceAllTokens), "the check ran");
  assert.deepEqual(outsideChanged.valDice, original.valDice, "early stopping saw the same validation Dice");
  assert.ok(outsideChanged.weights.equals(original.weights), "the guide kept the same weights");
  assert.equal(outsideChanged.model, original.model, "the same vocabulary and settings");
  assert.ok(outsideChanged.filtered.equals(original.filtered), "the filter wrote the same tokens, scores and decisions");
  assert.deepEqual(outsideChanged.filterSummary, original.filterSummary);
  // The same change on the budget's validation reports reaches the validation Dice: the
  // comparison above would see a stage that read the others.
  const insideChanged = await guideAndFilter(
    "inside",
    rewrite((s) => s.split === "val" && s.reportInBudget),
  );
  assert.notDeepEqual(insideChanged.valDice, original.valDice, "validation reports within the budget do feed early stopping");
  assert.notDeepEqual(insideChanged.filterSummary.trust, original.filterSummary.trust, "and the trust check");
});
