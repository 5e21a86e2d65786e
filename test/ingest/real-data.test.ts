import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { DuckDBInstance } from "@duckdb/node-api";
import { readParquetFile } from "../../src/io/parquet.js";
import { SAMPLE_COLUMNS } from "../../src/ingest/schema.js";
import { realDataPath, runIngest } from "./helpers.js";
import { skipUnless } from "../helpers/skip.js";

const qata = realDataPath("qata-cov19", "QaTa");
const lvitText = realDataPath("qata-cov19", "prompt-lvit");
const kvasir = realDataPath("kvasir-seg", "Kvasir-SEG");

async function duckColumns(file: string): Promise<{ names: string[]; rows: number; binaryMaskValues: number }> {
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  const described = await connection.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet('${file.replace(/'/g, "''")}')`);
  const names = described.getRowObjects().map((r) => String(r.column_name));
  const count = await connection.runAndReadAll(`SELECT count(*)::INTEGER AS n, count(DISTINCT id)::INTEGER AS ids FROM read_parquet('${file}')`);
  const row = count.getRowObjects()[0]!;
  connection.closeSync();
  return { names, rows: Number(row.n), binaryMaskValues: Number(row.ids) };
}

async function assertMasksBinary(file: string, sample: number): Promise<void> {
  const table = await readParquetFile(file, { columns: ["mask", "width", "height"] });
  const step = Math.max(1, Math.floor(table.numRows / sample));
  for (let i = 0; i < table.numRows; i += step) {
    const png = table.getChild("mask")!.get(i) as Uint8Array;
    const meta = await sharp(png).metadata();
    assert.equal(meta.format, "png");
    assert.equal(meta.channels, 1, "grey PNG");
    const { data, info } = await sharp(png).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
    assert.equal(info.width, table.getChild("width")!.get(i));
    assert.equal(info.height, table.getChild("height")!.get(i));
    for (const v of data) assert.ok(v === 0 || v === 1, `mask value ${v}`);
  }
}

test("QaTa-COV19 SGSeg layout with annotation.json: every image ingested and matched, orphans counted", {
  skip: skipUnless(qata, "QaTa-COV19 real subset absent (../shared/data or $PROLEARN_REAL_DATA)"),
}, async () => {
  const { summary, outDir, logs } = await runIngest({ kind: "qata-cov19", root: qata! });
  assert.ok(
    logs.some((l) => l.includes("auto-detected sgseg")),
    logs.join("\n"),
  );
  assert.equal(summary.found, 1700);
  assert.equal(summary.ingested, 1700);
  assert.equal(summary.quarantined, 0);
  assert.equal(summary.imageOnly, 0);
  assert.equal(summary.orphanReports, 9258 - 1700);
  assert.deepEqual(Object.fromEntries(Object.entries(summary.splits as Record<string, { samples: number }>).map(([k, v]) => [k, v.samples])), {
    train: 1200,
    val: 200,
    test: 300,
  });
  const samples = path.join(outDir, "samples.parquet");
  const duck = await duckColumns(samples);
  assert.deepEqual(
    duck.names,
    SAMPLE_COLUMNS.map((c) => c.name),
  );
  assert.equal(duck.rows, 1700);
  assert.equal(duck.binaryMaskValues, 1700, "ids are unique");
  await assertMasksBinary(samples, 60);
  const orphans = await readParquetFile(path.join(outDir, "orphans.parquet"));
  assert.equal(orphans.numRows, 7558);
  const table = await readParquetFile(samples, { columns: ["id", "report", "report_available"] });
  assert.ok(
    table
      .getChild("report")!
      .toArray()
      .every((r: string | null) => typeof r === "string" && r.length > 10),
  );
});

test("QaTa-COV19 SGSeg images with LViT's CSV text: names matched case-insensitively, every image has its report", {
  skip: skipUnless(qata && lvitText, "QaTa-COV19 real subset or prompt-lvit CSVs absent (../shared/data or $PROLEARN_REAL_DATA)"),
}, async () => {
  const { summary, outDir } = await runIngest({ kind: "qata-cov19", root: qata!, reports: lvitText! });
  assert.equal(summary.ingested, 1700);
  assert.equal(summary.quarantined, 0);
  assert.equal(summary.imageOnly, 0, "every image matched a row of train.csv/test.csv");
  assert.equal(summary.orphanReports, 7145 + 2113 - 1700);
  const table = await readParquetFile(path.join(outDir, "samples.parquet"), { columns: ["id", "split", "report", "source_image"] });
  const ids = table.getChild("id")!.toArray() as string[];
  const sub = ids.findIndex((id) => id.startsWith("sub-s"));
  assert.ok(sub >= 0);
  // LViT writes sub-S..., SGSeg sub-s...: the id stays lower case, the report is LViT's verbatim text.
  assert.match(table.getChild("report")!.get(sub) as string, /^[A-Z]/);
});

test("Kvasir-SEG with MedVLSM reports (p6): JPEG masks thresholded, MedVLSM split used, 100 orphans", {
  skip: skipUnless(kvasir, "Kvasir-SEG real subset absent (../shared/data or $PROLEARN_REAL_DATA)"),
}, async () => {
  const { summary, outDir, logs } = await runIngest({ kind: "kvasir-seg", root: kvasir! });
  assert.ok(
    logs.some((l) => l.includes("reports-medvlsm")),
    logs.join("\n"),
  );
  assert.equal(summary.found, 900);
  assert.equal(summary.ingested, 900);
  assert.equal(summary.quarantined, 0);
  assert.equal(summary.imageOnly, 0);
  assert.equal(summary.orphanReports, 100);
  const samples = path.join(outDir, "samples.parquet");
  const duck = await duckColumns(samples);
  assert.deepEqual(
    duck.names,
    SAMPLE_COLUMNS.map((c) => c.name),
  );
  await assertMasksBinary(samples, 30);
  const table = await readParquetFile(samples, { columns: ["report", "image_format", "width"] });
  assert.match(table.getChild("report")!.get(0) as string, /polyp, located in .* of the image$/);
  assert.ok(
    table
      .getChild("image_format")!
      .toArray()
      .every((f: string) => f === "jpeg"),
  );
});
