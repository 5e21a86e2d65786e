import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import { loadPipelineFile } from "../../src/pipeline/spec.js";
import { runPipeline } from "../../src/pipeline/engine.js";
import { STAGES } from "../../src/stages.js";
import { reportWriter } from "../../src/cli/report-hook.js";
import { gatherReport } from "../../src/report/gather.js";
import { CHROMIUM, CHROMIUM_ARGS, SCREENSHOT_DIR, cli } from "./helpers.js";
import { skipUnless } from "../helpers/skip.js";

/**
 * The report of a run of the project's own registered stages on real QaTa-COV19 X-rays: a
 * small SGSeg-layout copy (in a scratch folder) of the shared subset, with SGSeg's real
 * annotation.json, through the registry the CLI uses and the report writer `prolearn run` uses.
 */
const REAL_DATA = process.env.PROLEARN_REAL_DATA ?? path.resolve(import.meta.dirname, "../../../shared/data");
const QATA = path.join(REAL_DATA, "qata-cov19", "QaTa");
const PER_SPLIT = { train: 24, valid: 6, test: 6 };

function subset(): string {
  const root = mkdtempSync(path.join(tmpdir(), "prolearn-report-qata-"));
  for (const [split, count] of Object.entries(PER_SPLIT)) {
    const from = path.join(QATA, "images", split);
    const images = readdirSync(path.join(from, "images"))
      .filter((f) => f.endsWith(".png"))
      .sort()
      .slice(0, count);
    for (const kind of ["images", "masks"]) mkdirSync(path.join(root, "images", split, kind), { recursive: true });
    for (const image of images) {
      copyFileSync(path.join(from, "images", image), path.join(root, "images", split, "images", image));
      copyFileSync(path.join(from, "masks", `mask_${image}`), path.join(root, "images", split, "masks", `mask_${image}`));
    }
  }
  mkdirSync(path.join(root, "prompts"));
  copyFileSync(path.join(QATA, "prompts", "annotation.json"), path.join(root, "prompts", "annotation.json"));
  return root;
}

const missing = !existsSync(QATA)
  ? `${QATA} is absent; set PROLEARN_REAL_DATA`
  : !STAGES.has("ingest") || !STAGES.has("embed")
    ? "the ingest and embed stages are not registered"
    : undefined;

describe("report of a real QaTa run", { skip: skipUnless(!missing, missing ?? "") }, () => {
  test("ingest and embed on 36 real X-rays: split sizes, real thumbnails, the absent stages said plainly", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "prolearn-report-real-"));
    const file = path.join(dir, "pipeline.yaml");
    const root = subset();
    writeFileSync(
      file,
      `name: qata-report\ndataset:\n  kind: qata-cov19\n  root: ${JSON.stringify(root)}\n  layout: sgseg\n  textAvailability: 0.5\nstages:\n  ingest: {}\n  embed: {}\n`,
    );
    const pipeline = loadPipelineFile(file, STAGES);
    const result = await runPipeline(pipeline, { registry: STAGES, writeReport: reportWriter() });
    assert.equal(result.status, "ok", JSON.stringify(result.stages.map((s) => [s.name, s.status, s.error])));
    assert.ok(result.report && existsSync(result.report));

    const model = await gatherReport({ pipeline, result });
    const dataset = model.sections.dataset;
    assert.equal(dataset.state, "ok");
    if (dataset.state === "ok") {
      assert.deepEqual(
        dataset.data.splits.map((s) => [s.split, s.samples]),
        [
          ["train", 24],
          ["val", 6],
          ["test", 6],
        ],
      );
      const annotation = JSON.parse(readFileSync(path.join(QATA, "prompts", "annotation.json"), "utf8")) as Record<string, { image_path: string }[]>;
      const named = new Set(
        Object.values(annotation)
          .flat()
          .map((r) => path.basename(r.image_path).toLowerCase()),
      );
      const trainImages = readdirSync(path.join(root, "images", "train", "images"));
      const withCaption = trainImages.filter((f) => named.has(`mask_${f}`.toLowerCase())).length;
      assert.ok(withCaption > 0);
      assert.equal(dataset.data.splits[0]!.withReport, withCaption, "train images that annotation.json names");
      assert.equal(dataset.data.splits[0]!.reportAvailable, Math.round(withCaption * 0.5), "textAvailability 0.5 of the train images with a report");
      assert.equal(dataset.data.thumbnails.length, 24);
      assert.ok(dataset.data.thumbnails.every((t) => t.width === 96 && t.height === 96));
    }
    assert.equal(model.sections.filtering.state, "absent");
    assert.equal(model.sections.prototypes.state, "absent");
    assert.equal(model.sections.training.state, "absent");

    // The CLI's run ends with the report's path, and --json carries it; an all-cached rerun that used the
    // very same outputs reuses the previous run's report instead of writing another copy.
    const rerun = await cli(["run", file, "--json"]);
    assert.equal(rerun.code, 0, rerun.stderr);
    const json = JSON.parse(rerun.stdout) as { runId: string; report: string; stages: { status: string }[] };
    assert.deepEqual(
      json.stages.map((s) => s.status),
      ["cached", "cached"],
    );
    assert.equal(json.report, result.report);
    assert.ok(!existsSync(path.join(pipeline.workdir, "reports", `${json.runId}.html`)), "no second copy of an unchanged report");
    assert.ok(existsSync(json.report));
    assert.ok(rerun.stderr.trimEnd().endsWith(`report: ${json.report}`), rerun.stderr);
    const latest = await cli(["report", file]);
    assert.equal(latest.stdout.trim(), json.report);

    if (!existsSync(CHROMIUM)) return;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60_000 });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const problems: string[] = [];
      page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
      page.on("pageerror", (e) => problems.push(e.message));
      await page.goto(pathToFileURL(result.report).href);
      assert.equal((await page.locator('#dataset [data-metric="samples-total"]').innerText()).trim(), "36");
      assert.match(await page.locator("#prototypes .notice").innerText(), /has no prototypes stage/);
      mkdirSync(SCREENSHOT_DIR, { recursive: true });
      await page.screenshot({ path: path.join(SCREENSHOT_DIR, "report-real-qata.png"), fullPage: true });
      assert.deepEqual(problems, []);
    } finally {
      await browser.close();
    }
  });
});
