// Issue #16 items 2, 4, 5, 6 and 13: what ingest does with report links out of the root, CSVs
// saved with another delimiter or an unclosed quote, truncated annotation files, a dataset that
// yields no sample, bytes that are not UTF-8, control characters in names, and the text-
// availability fraction under decode quarantine. Every bad input is made here, in code.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, readdirSync, renameSync, symlinkSync, truncateSync, writeFileSync, copyFileSync, statSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { DataError } from "../../src/errors.js";
import { readParquetFile } from "../../src/io/parquet.js";
import { readDelimited, sniffDelimiter } from "../../src/io/csv.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { runIngest, scratchDir } from "../ingest/helpers.js";

interface QuarantineRow {
  source: string;
  reason: string;
  detail: string;
  row: number | null;
}

async function quarantineOf(outDir: string): Promise<QuarantineRow[]> {
  return (await readParquetFile(path.join(outDir, "quarantine.parquet"))).toArray().map((r) => ({ ...(r as QuarantineRow) }));
}

async function samplesOf(
  outDir: string,
): Promise<{ id: string; split: string; report: string | null; report_available: boolean; report_in_budget: boolean }[]> {
  const table = await readParquetFile(path.join(outDir, "samples.parquet"), { columns: ["id", "split", "report", "report_available", "report_in_budget"] });
  return table.toArray().map((r) => ({ ...(r as { id: string; split: string; report: string | null; report_available: boolean; report_in_budget: boolean }) }));
}

test("report files and folders that are symbolic links out of the root are quarantined as path-escapes-root; links inside keep working", async () => {
  const dir = scratchDir("hard-links");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: path.join(dir, "data"), n: 6, seed: 1, size: 32 });
  const reports = path.join(fx.root, "reports");
  const [outsideId, insideId] = readdirSync(reports)
    .sort()
    .map((n) => n.slice(0, -4));
  // One report replaced by a link to a file outside the root, one by a link to a copy inside it.
  const outside = path.join(dir, "secret.txt");
  writeFileSync(outside, "OUTSIDE TEXT that must never be ingested");
  renameSync(path.join(reports, `${outsideId}.txt`), path.join(dir, "moved.txt"));
  symlinkSync(outside, path.join(reports, `${outsideId}.txt`));
  mkdirSync(path.join(fx.root, "kept"));
  renameSync(path.join(reports, `${insideId}.txt`), path.join(fx.root, "kept", "inside.txt"));
  symlinkSync(path.join(fx.root, "kept", "inside.txt"), path.join(reports, `${insideId}.txt`));

  const { outDir } = await runIngest({ kind: "qata-cov19", root: fx.root });
  const samples = await samplesOf(outDir);
  assert.ok(!samples.some((s) => s.report?.includes("OUTSIDE")), "no text from outside the root");
  assert.equal(samples.find((s) => s.id === outsideId)!.report, null, "the image stays, without the linked report");
  assert.notEqual(samples.find((s) => s.id === insideId)!.report, null, "a link inside the root still reads");
  const escaped = (await quarantineOf(outDir)).filter((q) => q.reason === "path-escapes-root");
  assert.deepEqual(
    escaped.map((q) => q.source),
    [`reports/${outsideId}.txt`],
  );
  assert.match(escaped[0]!.detail, /symbolic link to .*secret\.txt, outside the dataset root/);

  // A linked report folder (lvit-csv's text/) and a linked CSV: neither is read.
  const csvDir = scratchDir("hard-links-csv");
  const lvit = await writeFixtureDataset({ kind: "mosmeddata-plus", layout: "lvit-csv", out: path.join(csvDir, "data"), n: 6, seed: 1, size: 32 });
  const text = path.join(lvit.root, "text");
  const [trainCsv] = readdirSync(text).filter((n) => n.startsWith("Train"));
  const outsideCsv = path.join(csvDir, "outside.csv");
  writeFileSync(outsideCsv, "Image;text\nbjorke_1.png;OUTSIDE ROW\n");
  renameSync(path.join(text, trainCsv!), path.join(csvDir, "moved.csv"));
  symlinkSync(outsideCsv, path.join(text, trainCsv!));
  const linked = await runIngest({ kind: "mosmeddata-plus", root: lvit.root, layout: "lvit-csv" });
  assert.ok(!(await samplesOf(linked.outDir)).some((s) => s.report?.includes("OUTSIDE")), "no row from the linked CSV");
  assert.ok((await quarantineOf(linked.outDir)).some((q) => q.reason === "path-escapes-root" && q.source === `text/${trainCsv}`));
});

test("a report CSV saved with ',' instead of ';' keeps every report whole, and says so", async () => {
  const dir = scratchDir("hard-delim");
  const fx = await writeFixtureDataset({ kind: "mosmeddata-plus", layout: "lvit-csv", out: path.join(dir, "data"), n: 10, seed: 3, size: 32 });
  const before = await runIngest({ kind: "mosmeddata-plus", root: fx.root, layout: "lvit-csv" });
  const expected = new Map((await samplesOf(before.outDir)).map((s) => [s.id, s.report]));
  assert.ok(
    [...expected.values()].some((r) => r?.includes(",")),
    "the fixture's reports hold commas",
  );
  for (const name of readdirSync(path.join(fx.root, "text"))) {
    const file = path.join(fx.root, "text", name);
    writeFileSync(file, readFileSync(file, "utf8").replaceAll(";", ","));
  }
  const after = await runIngest({ kind: "mosmeddata-plus", root: fx.root, layout: "lvit-csv" });
  assert.deepEqual(new Map((await samplesOf(after.outDir)).map((s) => [s.id, s.report])), expected, "no report cut at its first comma");
  assert.ok(
    after.logs.some((l) => /had more cells than the header; the extra cells were joined back into the text column/.test(l)),
    after.logs.join("\n"),
  );
  assert.equal(sniffDelimiter("Image;text\na,b;c"), ";");
  assert.equal(
    sniffDelimiter('"Image, name"\tDescription\n', (cells) => cells.includes("Description")),
    "\t",
  );
});

test("an unclosed quote sets aside its own row, named by line; the rows after it are read", async () => {
  const dir = scratchDir("hard-quote");
  const fx = await writeFixtureDataset({ kind: "mosmeddata-plus", layout: "lvit-csv", out: path.join(dir, "data"), n: 10, seed: 3, size: 32 });
  const file = path.join(fx.root, "text", readdirSync(path.join(fx.root, "text")).find((n) => n.startsWith("Train"))!);
  const lines = readFileSync(file, "utf8").split("\n");
  const rows = lines.filter(Boolean).length - 1;
  assert.ok(rows >= 4);
  // Line 3 gets a quote that never closes; every other row stays as it was.
  lines.splice(2, 0, 'broken.png;"no closing quote, "here" at all');
  writeFileSync(file, lines.join("\n"));
  const { summary, outDir } = await runIngest({ kind: "mosmeddata-plus", root: fx.root, layout: "lvit-csv" });
  const bad = (await quarantineOf(outDir)).filter((q) => q.reason === "malformed-report-row");
  assert.equal(bad.length, 1, JSON.stringify(bad));
  assert.match(bad[0]!.detail, /^line 3: the record starting here cannot be read/);
  assert.equal(summary.imageOnly, 0, "every image still has its report");
  assert.equal(summary.ingested, 10);
  // The same through the CSV module: rows after the bad one are all there, with their lines.
  const table = readDelimited('Image,text\na.png,one\nb.png,"never closed\nc.png,three\nd.png,5" lesion\n', ",");
  assert.deepEqual(
    table.errors.map((e) => e.line),
    [3],
  );
  assert.deepEqual(
    table.records.map((r) => [r.line, r.cells[0]]),
    [
      [1, "Image"],
      [2, "a.png"],
      [4, "c.png"],
      [5, "d.png"],
    ],
  );
});

test("a truncated annotation.json fails ingest (exit 1) naming the file, unless allowNoReports", async () => {
  const dir = scratchDir("hard-trunc");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 6, seed: 2, size: 32 });
  const annotation = path.join(fx.root, "prompts", "annotation.json");
  truncateSync(annotation, Math.floor(statSync(annotation).size / 2));
  await assert.rejects(runIngest({ kind: "qata-cov19", root: fx.root }), (error: unknown) => {
    assert.ok(error instanceof DataError, String(error));
    assert.match(error.message, /report file prompts\/annotation\.json yielded no report at all: 1 malformed-report-file \(.*invalid JSON \(truncated\?\)/);
    assert.match(error.format(), /allowNoReports: true/);
    return true;
  });
  const { summary } = await runIngest({ kind: "qata-cov19", root: fx.root }, { allowNoReports: true });
  assert.equal(summary.ingested, 6);
  assert.equal(summary.imageOnly, 6);
});

test("a dataset whose images/ is a link out of the root is an error with its reason; a link inside the root is followed", async () => {
  const dir = scratchDir("hard-empty");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: path.join(dir, "data"), n: 6, seed: 4, size: 32 });
  renameSync(path.join(fx.root, "images"), path.join(dir, "images-elsewhere"));
  symlinkSync(path.join(dir, "images-elsewhere"), path.join(fx.root, "images"));
  await assert.rejects(runIngest({ kind: "qata-cov19", root: fx.root }), (error: unknown) => {
    assert.ok(error instanceof DataError, String(error));
    assert.match(error.message, /none of the 6 images found under .* can be ingested: 6 path-escapes-root/);
    assert.match(error.format(), /symbolic link out of the dataset root/);
    return true;
  });
  // The same folder moved inside the root and linked there: followed.
  renameSync(path.join(dir, "images-elsewhere"), path.join(fx.root, "pictures"));
  const { unlinkSync } = await import("node:fs");
  unlinkSync(path.join(fx.root, "images"));
  symlinkSync(path.join(fx.root, "pictures"), path.join(fx.root, "images"));
  const { summary } = await runIngest({ kind: "qata-cov19", root: fx.root });
  assert.equal(summary.ingested, 6);
});

test("reports with bytes that are not UTF-8 and names with control characters are quarantined with their reason", async () => {
  const dir = scratchDir("hard-bytes");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: path.join(dir, "data"), n: 6, seed: 5, size: 32 });
  const [latinId, tabId] = readdirSync(path.join(fx.root, "images"))
    .sort()
    .map((n) => n.replace(/\.png$/, ""));
  // A Latin-1 "é" (0xE9) where UTF-8 was expected.
  writeFileSync(
    path.join(fx.root, "reports", `${latinId}.txt`),
    Buffer.concat([Buffer.from("Bilateral pulmonary infection, opacit"), Buffer.from([0xe9]), Buffer.from(" in the left lung.")]),
  );
  // An image (and its mask and report) whose name holds a tab.
  const tabbed = `${tabId}\tx`;
  renameSync(path.join(fx.root, "images", `${tabId}.png`), path.join(fx.root, "images", `${tabbed}.png`));
  renameSync(path.join(fx.root, "masks", `mask_${tabId}.png`), path.join(fx.root, "masks", `mask_${tabbed}.png`));
  copyFileSync(path.join(fx.root, "reports", `${tabId}.txt`), path.join(fx.root, "reports", `${tabbed}.txt`));
  const { summary, outDir } = await runIngest({ kind: "qata-cov19", root: fx.root });
  const quarantine = await quarantineOf(outDir);
  const samples = await samplesOf(outDir);
  assert.ok(!samples.some((s) => s.report?.includes("\uFFFD")), "no U+FFFD reaches samples.parquet");
  assert.equal(samples.find((s) => s.id === latinId)!.report, null);
  assert.ok(
    quarantine.some((q) => q.reason === "invalid-text-encoding" && q.source === `reports/${latinId}.txt`),
    JSON.stringify(quarantine),
  );
  assert.ok(
    quarantine.some((q) => q.reason === "invalid-id" && q.source === `images/${tabbed}.png`),
    JSON.stringify(quarantine),
  );
  assert.ok(
    quarantine.some((q) => q.reason === "invalid-id" && q.source === `reports/${tabbed}.txt`),
    JSON.stringify(quarantine),
  );
  assert.ok(!samples.some((s) => /[\t\n]/.test(s.id)));
  assert.equal(summary.ingested, 5);
});

test("the text-availability fraction holds over the samples that survive decode quarantine", async () => {
  const dir = scratchDir("hard-avail");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: path.join(dir, "data"), n: 40, seed: 6, size: 32 });
  const split = JSON.parse(readFileSync(path.join(fx.root, "split.json"), "utf8")) as { train: string[] };
  const trainIds = split.train.map((id) => id.replace(/\.[A-Za-z0-9]+$/, ""));
  // Find the training images the 50% subset would pick, and break a third of the training
  // set, all among those picked: drawn before decoding, the subset would keep too few unpicked.
  const whole = await runIngest({ kind: "qata-cov19", root: fx.root, textAvailability: 0.5, seed: 9 });
  const picked = (await samplesOf(whole.outDir)).filter((s) => s.split === "train" && s.report_available).map((s) => s.id);
  const valPicked = (await samplesOf(whole.outDir)).filter((s) => s.split === "val" && s.report_in_budget).map((s) => s.id);
  assert.ok(valPicked.length >= 1, "the fixture has validation reports within the text budget");
  const brokenVal = valPicked.slice(0, Math.max(1, Math.floor(valPicked.length / 2)));
  for (const id of brokenVal) writeFileSync(path.join(fx.root, "images", `${id}.png`), "not an image");
  const broken = picked.slice(0, Math.floor(trainIds.length / 3));
  for (const id of broken) writeFileSync(path.join(fx.root, "images", `${id}.png`), "not an image");
  // Small shards: some are rewritten at merge, some pass through as they were.
  const { outDir } = await runIngest({ kind: "qata-cov19", root: fx.root, textAvailability: 0.5, seed: 9 }, { shardSize: 8 });
  const schemaOf = async (dir: string) =>
    (await readParquetFile(path.join(dir, "samples.parquet"))).schema.fields.map((f) => `${f.name}:${f.type}:${f.nullable}`).join(",");
  assert.equal(await schemaOf(outDir), await schemaOf(whole.outDir), "rewritten shards keep the table's schema");
  const train = (await samplesOf(outDir)).filter((s) => s.split === "train");
  assert.equal(train.length, trainIds.length - broken.length);
  const available = train.filter((s) => s.report_available).length;
  assert.equal(available, Math.round(0.5 * train.length), `${available} of ${train.length} surviving train samples available`);
  for (const s of train) assert.equal(s.report_in_budget, s.report_available, `${s.id}: train reports are within the text budget exactly when available`);
  // The text budget's validation share is drawn again over the surviving validation reports too.
  const val = (await samplesOf(outDir)).filter((s) => s.split === "val" && s.report !== null);
  const valInBudget = val.filter((s) => s.report_in_budget).length;
  assert.equal(valInBudget, Math.round(0.5 * val.length), `${valInBudget} of ${val.length} surviving validation reports within the budget`);
  assert.ok((await quarantineOf(outDir)).filter((q) => q.reason === "unreadable-image").length === broken.length + brokenVal.length);
});
