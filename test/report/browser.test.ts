import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { chromium, type Browser } from "playwright-core";
import { demoFacts, demoRegistryWithWarning } from "./fixtures.js";
import { CHROMIUM, CHROMIUM_ARGS, SCREENSHOT_DIR, demoProject, runDemo } from "./helpers.js";
import { skipUnless } from "../helpers/skip.js";

/**
 * Opens the report of a demo run in a real headless Chromium (Debian's `chromium`; CI installs
 * it) and checks what a person would see: every section with the run's numbers, every image
 * decoded, every chart drawn, no console error and no network request. The full-page
 * screenshot lands in test-output/report/ for CI to keep as an artifact.
 */

const skip = skipUnless(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium, or set PROLEARN_CHROMIUM)`);

describe("run report in headless Chromium", { skip }, () => {
  let browser: Browser;
  before(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60_000 });
  });
  after(async () => {
    await browser?.close();
  });

  test("every section shows the demo run's numbers, images and charts, with no console error or request", async () => {
    const { file } = demoProject();
    const { result } = await runDemo(file);
    assert.ok(result.report);
    const facts = demoFacts();
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems: string[] = [];
    const requests: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("request", (r) => {
      if (!r.url().startsWith("file:") && !r.url().startsWith("data:")) requests.push(r.url());
    });
    const url = pathToFileURL(result.report).href;
    const response = await page.goto(url, { waitUntil: "load" });
    assert.ok(response === null || response.ok());

    assert.equal(await page.title(), `report-demo · run ${result.runId}`);
    for (const id of ["overview", "dataset", "filtering", "prototypes", "training"]) {
      const section = page.locator(`section#${id}`);
      assert.equal(await section.count(), 1, `section ${id}`);
      assert.equal(await section.getAttribute("data-state"), "ok", `section ${id} has data`);
      assert.ok(await section.isVisible());
    }
    const text = async (selector: string) => (await page.locator(selector).first().innerText()).trim();

    assert.equal(await page.locator("#overview tr[data-stage]").count(), 6);
    assert.equal(await text('#overview tr[data-stage="ingest"] [data-metric="stage-status"]'), "ran");
    assert.match(await text('#overview tr[data-stage="evaluate"] [data-metric="stage-seconds"]'), /^\d+(\.\d+)? (ms|s)$/);

    for (const [split, f] of Object.entries(facts.splits)) {
      assert.equal(await text(`#dataset tr[data-split="${split}"] [data-metric="split-samples"]`), String(f.samples));
      assert.match(await text(`#dataset tr[data-split="${split}"] [data-metric="split-report-available"]`), new RegExp(`^${f.reportAvailable} \\(`));
    }
    assert.equal(await text('#dataset [data-metric="samples-total"]'), "60");
    assert.equal(await text('#dataset [data-metric="quarantine-total"]'), String(Object.values(facts.quarantine).reduce((a, b) => a + b, 0)));
    assert.equal(await text('#dataset tr[data-reason="unreadable-image"] [data-metric="quarantine-count"]'), "2");
    assert.equal(await page.locator("#dataset .thumb img").count(), 24);

    assert.equal(await text('#filtering [data-metric="filter-reports"]'), String(facts.filteredReports));
    assert.equal(await text('#filtering [data-metric="filter-tokens"]'), String(facts.tokens));
    assert.ok((await page.locator("#filtering .tok.kept").count()) > 0 && (await page.locator("#filtering .tok.dropped").count()) > 0);

    assert.equal(await text('#prototypes [data-metric="prototype-count"]'), String(facts.prototypes));
    assert.equal(await text('#prototypes [data-metric="cluster-count"]'), String(facts.clusters));
    assert.equal(await page.locator('#prototypes svg[data-chart="projection"] .points circle').count(), facts.assigned);
    assert.equal(await page.locator('#prototypes svg[data-chart="projection"] .prototypes path').count(), facts.prototypes);
    assert.equal(await page.locator("#prototypes .card img").count(), facts.prototypes);

    assert.equal(await text('#training [data-metric="epochs"]'), String(facts.epochs));
    assert.equal(await text('#training [data-metric="best-epoch"]'), String(facts.bestEpoch));
    assert.match(await text('#training table.metrics tbody tr:first-child [data-metric="dice"]'), /^0\.8123 \+0\.0404$/);
    assert.equal(await page.locator("#training .example").count(), facts.examples);

    // Every image decoded and every chart laid out with a real size.
    const images = await page.locator("img").evaluateAll((all) =>
      all.map((i) => {
        const image = i as unknown as { complete: boolean; naturalWidth: number };
        return [image.complete, image.naturalWidth] as const;
      }),
    );
    assert.ok(images.length >= 24 + 6 + facts.examples * 4);
    assert.ok(
      images.every(([complete, width]) => complete && width > 0),
      "all thumbnails decode",
    );
    const charts = await page.locator("svg.chart").evaluateAll((all) => all.map((s) => s.getBoundingClientRect().width * s.getBoundingClientRect().height));
    assert.ok(charts.length >= 6, `charts: ${charts.length}`);
    assert.ok(charts.every((area) => area > 1000));

    mkdirSync(SCREENSHOT_DIR, { recursive: true });
    const shot = path.join(SCREENSHOT_DIR, "report-demo.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(existsSync(shot));
    await page.close();

    assert.deepEqual(problems, [], "no console errors or warnings");
    assert.deepEqual(requests, [], "no network requests");
  });

  test("a failed check shows amber: in the header with its figures, and on the stage's row, not green", async () => {
    const { file } = demoProject();
    const registry = demoRegistryWithWarning();
    await runDemo(file, registry);
    // The cached rerun repeats the warning of the run that produced the output.
    const { result } = await runDemo(file, registry);
    assert.equal(result.stages.find((s) => s.name === "prototypes")!.status, "cached");
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(pathToFileURL(result.report!).href, { waitUntil: "load" });
    const amber = "rgb(191, 135, 0)";
    const background = async (selector: string) =>
      page
        .locator(selector)
        .first()
        .evaluate((e) => (globalThis as unknown as { getComputedStyle(element: unknown): { backgroundColor: string } }).getComputedStyle(e).backgroundColor);
    const runStatus = page.locator('header [data-metric="run-status"]');
    assert.equal((await runStatus.innerText()).trim(), "succeeded with 1 warning");
    assert.equal(await background('header [data-metric="run-status"]'), amber);
    const item = page.locator('header [data-metric="run-warnings"] li[data-warning="prototypes-not-useful"]');
    assert.ok(await item.isVisible(), "the warning is in the sticky header");
    assert.match(
      await item.innerText(),
      /^prototypes: on 12 validation samples PSA's approximated text is no closer .* \(samples 12, marginOverMean -0\.0123, marginOverRandom 0\.0456\)$/,
    );
    assert.equal(await background('#overview tr[data-stage="prototypes"] [data-metric="stage-status"]'), amber);
    assert.equal((await page.locator('#overview tr[data-stage="prototypes"] [data-metric="stage-status"]').innerText()).trim(), "cached");
    assert.notEqual(await background('#overview tr[data-stage="ingest"] [data-metric="stage-status"]'), amber);
    assert.ok(await page.locator('#overview tr[data-stage="prototypes"] li[data-warning="prototypes-not-useful"]').isVisible());
    mkdirSync(SCREENSHOT_DIR, { recursive: true });
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "report-warning.png") });
    await page.close();
  });
});
