// Issue #16, tried again with inputs that are not regular files: a report, image or split.json
// that is a link to nothing, a folder named like a file, or a FIFO (a read of which blocks
// forever). Each is set aside with its reason, never opened, and not digested by resources().
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { DataError } from "../../src/errors.js";
import { readParquetFile } from "../../src/io/parquet.js";
import { datasetFiles } from "../../src/ingest/stage.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { pipelineFor, runIngest, scratchDir } from "../ingest/helpers.js";

async function quarantineOf(outDir: string): Promise<{ source: string; reason: string; detail: string }[]> {
  return (await readParquetFile(path.join(outDir, "quarantine.parquet")))
    .toArray()
    .map((r) => ({ ...(r as { source: string; reason: string; detail: string }) }));
}

test("reports, images and split.json that are links to nothing, folders or FIFOs are set aside with their reason, and never read", {
  timeout: 60_000,
}, async () => {
  const dir = scratchDir("hard-files");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: path.join(dir, "data"), n: 8, seed: 5, size: 32 });
  const root = fx.root;
  const [a, b, c, d] = readdirSync(path.join(root, "reports"))
    .map((n) => n.slice(0, -4))
    .sort();
  rmSync(path.join(root, "reports", `${a}.txt`));
  symlinkSync("/nonexistent/report.txt", path.join(root, "reports", `${a}.txt`));
  rmSync(path.join(root, "reports", `${b}.txt`));
  mkdirSync(path.join(root, "reports", `${b}.txt`));
  rmSync(path.join(root, "reports", `${c}.txt`));
  execFileSync("mkfifo", [path.join(root, "reports", `${c}.txt`)]);
  rmSync(path.join(root, "images", `${d}.png`));
  execFileSync("mkfifo", [path.join(root, "images", `${d}.png`)]);
  // split.json linked out of the root: not read; its ids get the seeded split.
  const outsideSplit = path.join(dir, "split.json");
  writeFileSync(outsideSplit, JSON.stringify({ train: [], val: [], test: [a] }));
  rmSync(path.join(root, "split.json"));
  symlinkSync(outsideSplit, path.join(root, "split.json"));

  // resources() digests only what ingest reads: no link to nothing, no FIFO (both used to throw or hang).
  const files = await datasetFiles(pipelineFor({ kind: "qata-cov19", root }, dir));
  for (const odd of [`reports/${a}.txt`, `reports/${b}.txt`, `reports/${c}.txt`, `images/${d}.png`, "split.json"])
    assert.ok(!files.includes(path.join(root, odd)), `${odd} is not digested`);

  const { outDir, summary } = await runIngest({ kind: "qata-cov19", root });
  const byReason = (await quarantineOf(outDir)).map((q) => `${q.reason} ${q.source}: ${q.detail}`).sort();
  assert.deepEqual(
    byReason,
    [
      `malformed-report-file reports/${a}.txt: report file is a symbolic link to /nonexistent/report.txt, which does not exist`,
      `malformed-report-file reports/${b}.txt: report file is a folder`,
      `malformed-report-file reports/${c}.txt: report file is a FIFO (named pipe)`,
      `path-escapes-root split.json: split.json is a symbolic link to ${outsideSplit}, outside the dataset root; it is not read (every id gets a seeded 8:1:1 split)`,
      `unreadable-image images/${d}.png: ${d}.png is a FIFO (named pipe)`,
    ].sort(),
  );
  assert.equal(summary.ingested, 7);
});

test("a folder or a dangling link named like a report table in a report folder is set aside, the other tables are read", { timeout: 60_000 }, async () => {
  const dir = scratchDir("hard-files-csv");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "guideseg", out: path.join(dir, "data"), n: 8, seed: 5, size: 32 });
  mkdirSync(path.join(fx.root, "prompt", "extra.csv"));
  symlinkSync("/nonexistent/val.csv", path.join(fx.root, "prompt", "val.csv"));
  execFileSync("mkfifo", [path.join(fx.root, "prompt", "zz.json")]);
  const { outDir, summary } = await runIngest({ kind: "qata-cov19", root: fx.root });
  const reasons = (await quarantineOf(outDir)).map((q) => `${q.reason} ${q.source}: ${q.detail}`).sort();
  assert.deepEqual(reasons, [
    "malformed-report-file prompt/extra.csv: report file is a folder",
    "malformed-report-file prompt/val.csv: report file is a symbolic link to /nonexistent/val.csv, which does not exist",
    "malformed-report-file prompt/zz.json: report file is a FIFO (named pipe)",
  ]);
  assert.equal(summary.ingested, 8);
});

test("a layout whose only report file is set aside unread, or a dataset.reports that does not exist or holds no table, fails ingest instead of going image-only", async () => {
  const dir = scratchDir("hard-files-aside");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 6, seed: 8, size: 32 });
  const annotation = path.join(fx.root, "prompts", "annotation.json");
  const outside = path.join(dir, "annotation.json");
  writeFileSync(outside, readFileSync(annotation));
  rmSync(annotation);
  symlinkSync(outside, annotation);
  await assert.rejects(runIngest({ kind: "qata-cov19", root: fx.root }), (error: unknown) => {
    assert.ok(error instanceof DataError, String(error));
    assert.match(error.message, /report file prompts\/annotation\.json yielded no report at all: 1 path-escapes-root/);
    return true;
  });
  const { summary } = await runIngest({ kind: "qata-cov19", root: fx.root }, { allowNoReports: true });
  assert.equal(summary.imageOnly, 6);

  const kaggle = await writeFixtureDataset({ kind: "qata-cov19", layout: "kaggle", out: path.join(dir, "kaggle"), n: 6, seed: 8, size: 32 });
  const typo = path.join(path.dirname(kaggle.reports!), "reprts.csv");
  await assert.rejects(
    runIngest({ kind: "qata-cov19", root: kaggle.root, reports: typo }),
    /reprts\.csv yielded no report at all: 1 malformed-report-file \(.*the reports path does not exist\)/,
  );
  // A dataset.reports folder that holds no report table at all (the images folder named by mistake).
  await assert.rejects(
    runIngest({ kind: "qata-cov19", root: kaggle.root, reports: path.join(kaggle.root, "Train Set") }),
    /Train Set yielded no report at all: 1 empty-report-file \(.*the reports folder holds no \.csv, \.xlsx, \.json file\)/,
  );
});

test("an xlsx whose report table is not on its first sheet is read from the sheet that holds it, and said so", async () => {
  const dir = scratchDir("hard-xlsx");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "lvit", out: path.join(dir, "data"), n: 6, seed: 9, size: 32 });
  const before = await runIngest({ kind: "qata-cov19", root: fx.root });
  const reportsOf = async (outDir: string) =>
    (await readParquetFile(path.join(outDir, "samples.parquet"), { columns: ["id", "report"] })).toArray().map((r) => ({ ...r }));
  const expected = await reportsOf(before.outDir);
  const { default: ExcelJS } = await import("exceljs");
  for (const name of readdirSync(fx.root).filter((n) => n.endsWith(".xlsx"))) {
    const file = path.join(fx.root, name);
    const original = new ExcelJS.Workbook();
    await original.xlsx.readFile(file);
    const rows = original.worksheets[0]!.getSheetValues()
      .filter(Boolean)
      .map((r) => (r as unknown[]).slice(1));
    const saved = new ExcelJS.Workbook();
    saved.addWorksheet("Notes").addRow(["exported by hand"]);
    const data = saved.addWorksheet("Reports");
    for (const row of rows) data.addRow(row);
    await saved.xlsx.writeFile(file);
  }
  const after = await runIngest({ kind: "qata-cov19", root: fx.root });
  assert.deepEqual(await reportsOf(after.outDir), expected, "every report read, none lost to an empty first sheet");
  assert.ok(
    after.logs.some((l) => /read sheet "Reports" \(sheet 2\); its first sheet "Notes" has no image\/description header/.test(l)),
    after.logs.join("\n"),
  );
});

test("a CSV whose header was re-saved with ',' above ';' rows is read with the rows' delimiter, and said so (every report was an orphan)", async () => {
  const dir = scratchDir("hard-rowdelim");
  const fx = await writeFixtureDataset({ kind: "mosmeddata-plus", layout: "lvit-csv", out: path.join(dir, "data"), n: 8, seed: 10, size: 32 });
  const reportsOf = async (outDir: string) =>
    (await readParquetFile(path.join(outDir, "samples.parquet"), { columns: ["id", "report"] })).toArray().map((r) => ({ ...r }));
  const before = await runIngest({ kind: "mosmeddata-plus", root: fx.root, layout: "lvit-csv" });
  const expected = await reportsOf(before.outDir);
  assert.ok(
    expected.some((r) => typeof r.report === "string" && r.report.includes(",")),
    "the fixture's reports hold commas",
  );
  for (const name of readdirSync(path.join(fx.root, "text"))) {
    const file = path.join(fx.root, "text", name);
    writeFileSync(file, readFileSync(file, "utf8").replace(/^Image;text/, "Image,text"));
  }
  const after = await runIngest({ kind: "mosmeddata-plus", root: fx.root, layout: "lvit-csv" });
  assert.deepEqual(await reportsOf(after.outDir), expected);
  assert.equal(after.summary.orphanReports, 0);
  assert.ok(
    after.logs.some((l) => /the header is split by "," but the rows by ";"; the rows were read with ";"/.test(l)),
    after.logs.join("\n"),
  );
});
