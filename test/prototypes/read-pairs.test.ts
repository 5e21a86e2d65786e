/**
 * The prototypes stage reads its training and validation pairs from embeddings.parquet in
 * slices (src/prototypes/run.ts, readPairedRows): slices that cut through row groups and through
 * the kept rows must give the same pairs, in file order, as one read of the whole table.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { Bool, Table, Utf8, vectorFromArray } from "apache-arrow";
import { writeParquetFile } from "../../src/io/parquet.js";
import { embeddingVector } from "../../src/io/tables.js";
import { readPairedRows } from "../../src/prototypes/run.js";

const DIM = 3;
const ROWS = 50;

/**
 * Row i: image [i, i, i], text [-i, -i, -i]; every 5th row has no report, every 7th an all-zero
 * text embedding (left out), every 4th is validation, every 9th test (neither kept).
 */
async function writeEmbeddings(file: string): Promise<void> {
  const images = Float32Array.from({ length: ROWS * DIM }, (_, k) => Math.floor(k / DIM));
  const texts = Float32Array.from({ length: ROWS * DIM }, (_, k) => (Math.floor(k / DIM) % 7 === 3 ? 0 : -Math.floor(k / DIM) - 1));
  const available = Array.from({ length: ROWS }, (_, i) => i % 5 !== 2);
  const split = Array.from({ length: ROWS }, (_, i) => (i % 9 === 8 ? "test" : i % 4 === 1 ? "val" : "train"));
  await writeParquetFile(
    file,
    new Table({
      id: vectorFromArray(
        Array.from({ length: ROWS }, (_, i) => `s${i}`),
        new Utf8(),
      ),
      split: vectorFromArray(split, new Utf8()),
      report_available: vectorFromArray(available, new Bool()),
      image_embedding: embeddingVector(images, DIM),
      text_embedding: embeddingVector(
        texts,
        DIM,
        Uint8Array.from(available, (a) => (a ? 1 : 0)),
      ),
    }),
    { rowGroupSize: 8 },
  );
}

test("pairs read in slices of 7 rows (across row groups of 8) equal those of one whole read, in file order", async () => {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), "prolearn-pairs-")), "embeddings.parquet");
  await writeEmbeddings(file);
  const whole = await readPairedRows(file, ROWS);
  const sliced = await readPairedRows(file, 7);
  assert.deepEqual(sliced, whole);

  const expected = (which: string) =>
    Array.from({ length: ROWS }, (_, i) => i).filter((i) => i % 5 !== 2 && i % 7 !== 3 && (i % 9 === 8 ? "test" : i % 4 === 1 ? "val" : "train") === which);
  const train = expected("train");
  const validation = expected("val");
  assert.deepEqual(
    sliced.train.ids,
    train.map((i) => `s${i}`),
  );
  assert.deepEqual(
    sliced.validation.ids,
    validation.map((i) => `s${i}`),
  );
  assert.equal(sliced.dim, DIM);
  assert.deepEqual(
    [...sliced.train.images],
    train.flatMap((i) => [i, i, i]),
  );
  assert.deepEqual(
    [...sliced.validation.texts],
    validation.flatMap((i) => [-i - 1, -i - 1, -i - 1]),
  );
  // Rows with a report but an all-zero text embedding are counted, whatever their split.
  assert.equal(sliced.emptyTexts, Array.from({ length: ROWS }, (_, i) => i).filter((i) => i % 5 !== 2 && i % 7 === 3).length);
});
