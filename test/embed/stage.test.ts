import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { before, describe, test } from "node:test";
import { Table, Utf8, vectorFromArray } from "apache-arrow";
import { DuckDBInstance } from "@duckdb/node-api";
import { ModelError } from "../../src/errors.js";
import { readParquetFile, writeParquetFile } from "../../src/io/parquet.js";
import { readEmbeddingColumn } from "../../src/io/tables.js";
import { BuiltinEncoder } from "../../src/embed/builtin.js";
import { embedParams } from "../../src/embed/stage.js";
import { blobImage, countingRowCache, runEmbed, scratchDir, writeSamplesParquet, type SampleRow } from "./helpers.js";
import { FIXTURE_REPORTS, writeTinyBiomedclipFolder } from "./tiny-biomedclip.js";

async function makeRows(from: number, count: number, options: { split?: SampleRow["split"]; withReports?: boolean } = {}): Promise<SampleRow[]> {
  const rows: SampleRow[] = [];
  for (let i = from; i < from + count; i++) {
    const split = options.split ?? (i % 5 === 3 ? "val" : i % 5 === 4 ? "test" : "train");
    const report = `${FIXTURE_REPORTS[i % FIXTURE_REPORTS.length]!} case ${i}`;
    const available = options.withReports === false ? false : split !== "train" || i % 3 !== 0;
    rows.push({ id: `s${String(i).padStart(3, "0")}`, split, image: await blobImage(i), report, available });
  }
  return rows;
}

describe("embed stage", () => {
  let root: string;
  let samples20: string;
  let rows20: SampleRow[];
  before(async () => {
    root = await scratchDir("stage");
    rows20 = await makeRows(0, 20);
    samples20 = path.join(root, "samples20.parquet");
    await writeSamplesParquet(samples20, rows20);
  });

  test("params: builtin by default; biomedclip needs a model; dim is builtin-only", () => {
    assert.equal(embedParams.parse({}).encoder, "builtin");
    assert.equal(embedParams.safeParse({ encoder: "biomedclip" }).success, false);
    assert.equal(embedParams.safeParse({ encoder: "biomedclip", model: "m", dim: 256 }).success, false);
    assert.equal(embedParams.safeParse({ bogus: 1 }).success, false);
  });

  test("builtin: one row per sample in order, text null where no available report, unit rows, encoder.json, DuckDB reads it", async () => {
    const { cache } = countingRowCache();
    const run = await runEmbed({ samplesFile: samples20, params: { batchSize: 4 }, rowCache: cache });
    const file = path.join(run.outDir, "embeddings.parquet");
    const table = await readParquetFile(file);
    assert.deepEqual(
      table.schema.fields.map((f) => f.name),
      ["id", "split", "report_available", "image_embedding", "text_embedding"],
    );
    assert.deepEqual(
      table.getChild("id")!.toArray(),
      rows20.map((r) => r.id),
    );
    const img = readEmbeddingColumn(table, "image_embedding");
    const txt = readEmbeddingColumn(table, "text_embedding");
    assert.equal(img.dim, 512);
    rows20.forEach((r, i) => {
      assert.equal(txt.valid[i], r.available ? 1 : 0, `text validity of ${r.id}`);
      assert.ok(Math.abs(Math.hypot(...img.values.subarray(i * 512, (i + 1) * 512)) - 1) < 1e-5);
    });
    const encoderJson = JSON.parse(await readFile(path.join(run.outDir, "encoder.json"), "utf8"));
    assert.deepEqual(Object.keys(encoderJson).sort(), ["digest", "dim", "id", "preprocessing"]);
    assert.equal(encoderJson.id, "builtin");
    const trainTexts = rows20.filter((r) => r.split === "train" && r.available).length;
    assert.equal(encoderJson.preprocessing.text.fit.documents, trainTexts, "TF-IDF fitted on the training split's available reports");
    assert.deepEqual(run.summary.images, { embedded: 20, cached: 0 });
    assert.deepEqual(run.summary.texts, { embedded: rows20.filter((r) => r.available).length, cached: 0 });

    const duck = await (await DuckDBInstance.create()).connect();
    const reader = await duck.runAndReadAll(
      `SELECT count(*)::INT AS n, min(len(image_embedding))::INT AS d, count(text_embedding)::INT AS t FROM read_parquet('${file}')`,
    );
    assert.deepEqual(reader.getRowObjects()[0], { n: 20, d: 512, t: rows20.filter((r) => r.available).length });
  });

  test("text embeddings equal the encoder's own, and filtered_report replaces the report when a filter ran", async () => {
    const filterFile = path.join(root, "filtered.parquet");
    const filtered = rows20.filter((r) => r.split === "train" && r.available);
    await writeParquetFile(
      filterFile,
      new Table({
        id: vectorFromArray(
          filtered.map((r) => r.id),
          new Utf8(),
        ),
        filtered_report: vectorFromArray(
          filtered.map(() => "lower left lung"),
          new Utf8(),
        ),
      }),
    );
    const run = await runEmbed({ samplesFile: samples20, params: {}, rowCache: countingRowCache().cache, filterFile });
    const txt = readEmbeddingColumn(await readParquetFile(path.join(run.outDir, "embeddings.parquet")), "text_embedding");
    const texts = rows20.filter((r) => r.split === "train" && r.available).map(() => "lower left lung");
    const reference = new BuiltinEncoder({ fitTexts: texts });
    const expected = await reference.embedTexts(["lower left lung", rows20[3]!.report!]);
    const firstFiltered = rows20.findIndex((r) => r.split === "train" && r.available);
    assert.deepEqual(txt.values.subarray(firstFiltered * 512, (firstFiltered + 1) * 512), expected.subarray(0, 512));
    assert.equal(rows20[3]!.split, "val");
    assert.deepEqual(txt.values.subarray(3 * 512, 4 * 512), expected.subarray(512, 1024), "val rows keep report_normalized");
  });

  test("outputs are byte-identical whatever the sharding and whether rows came from the cache", async () => {
    const a = await runEmbed({ samplesFile: samples20, params: { shardRows: 2048 }, rowCache: countingRowCache().cache });
    const shared = countingRowCache();
    const b = await runEmbed({ samplesFile: samples20, params: { shardRows: 3, batchSize: 2, concurrency: 3 }, rowCache: shared.cache });
    const c = await runEmbed({ samplesFile: samples20, params: { shardRows: 7 }, rowCache: shared.cache });
    assert.deepEqual(c.summary.images, { embedded: 0, cached: 20 });
    const bytes = async (r: typeof a) => [await readFile(path.join(r.outDir, "embeddings.parquet")), await readFile(path.join(r.outDir, "encoder.json"))];
    const [ea, ja] = await bytes(a);
    const [eb, jb] = await bytes(b);
    const [ec, jc] = await bytes(c);
    assert.ok(ea!.equals(eb!) && ea!.equals(ec!), "embeddings.parquet bytes");
    assert.ok(ja!.equals(jb!) && ja!.equals(jc!), "encoder.json bytes");
  });

  test("biomedclip (test-built model): adding 10 samples embeds exactly those 10, counted at the encoder", async () => {
    const modelDir = path.join(root, "models", "tiny");
    await writeTinyBiomedclipFolder(modelDir);
    const more = [...rows20, ...(await makeRows(20, 10))];
    const samples30 = path.join(root, "samples30.parquet");
    await writeSamplesParquet(samples30, more);
    const { cache } = countingRowCache();
    const params = { encoder: "biomedclip" as const, model: "models/tiny", batchSize: 4 };
    const first = await runEmbed({ samplesFile: samples20, params, rowCache: cache, baseDir: root });
    assert.deepEqual(first.summary.images, { embedded: 20, cached: 0 });
    const second = await runEmbed({ samplesFile: samples30, params, rowCache: cache, baseDir: root });
    const newTexts = more.slice(20).filter((r) => r.available).length;
    assert.deepEqual(second.summary.images, { embedded: 10, cached: 20 });
    assert.deepEqual(second.summary.texts, { embedded: newTexts, cached: rows20.filter((r) => r.available).length });
    assert.equal(second.summary.encoderCalls, Math.ceil(10 / 4) + Math.ceil(newTexts / 4), "encoder called only for the new rows, in batches of 4");
    const encoderJson = JSON.parse(await readFile(path.join(second.outDir, "encoder.json"), "utf8"));
    assert.equal(encoderJson.id, "biomedclip");
    assert.equal(encoderJson.preprocessing.image.size, 224);
    // The first 20 rows of the grown output equal the first run's rows.
    const a = readEmbeddingColumn(await readParquetFile(path.join(first.outDir, "embeddings.parquet")), "image_embedding");
    const b = readEmbeddingColumn(await readParquetFile(path.join(second.outDir, "embeddings.parquet")), "image_embedding");
    assert.deepEqual(b.values.subarray(0, 20 * 512), a.values);
  });

  test("builtin: 10 new unreported test images embed 10 images and no text", async () => {
    const { cache } = countingRowCache();
    await runEmbed({ samplesFile: samples20, params: {}, rowCache: cache });
    const grown = path.join(root, "samples-grown.parquet");
    await writeSamplesParquet(grown, [...rows20, ...(await makeRows(40, 10, { split: "test", withReports: false }))]);
    const run = await runEmbed({ samplesFile: grown, params: {}, rowCache: cache });
    assert.deepEqual(run.summary.images, { embedded: 10, cached: 20 });
    assert.deepEqual(run.summary.texts, { embedded: 0, cached: rows20.filter((r) => r.available).length });
  });

  test("a bad model folder fails in plan with a ModelError and publishes nothing", async () => {
    const bad = path.join(root, "models", "bad");
    await writeTinyBiomedclipFolder(bad, { imageSize: 112 });
    await assert.rejects(
      runEmbed({ samplesFile: samples20, params: { encoder: "biomedclip", model: bad }, rowCache: countingRowCache().cache }),
      (e: unknown) => e instanceof ModelError && /found float32 \[batch, 3, 112, 112\]/.test(e.message),
    );
  });
});
