/**
 * The table reader's reads are bounded (issue 19): only the asked columns' bytes and the row
 * groups of the asked range are fetched from the file. test/io/tables.test.ts checks what the
 * reader decodes; this checks what it fetches, on a samples-like file whose image bytes do not
 * compress, by counting the bytes sliced off the file-backed Blob it reads through.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { Binary, Table, Utf8, vectorFromArray } from "apache-arrow";
import { SAMPLES_TABLE } from "../../src/ingest/tables.js";
import { writeParquetFile } from "../../src/io/parquet.js";
import { readTable } from "../../src/io/tables.js";

const ROWS = 400;
const IMAGE_BYTES = 16 * 1024;

/** A samples-like file: a small id column and a large incompressible image column, 40 rows a row group. */
async function imagesFile(): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "prolearn-bounded-"));
  const file = path.join(dir, "samples.parquet");
  const images = Array.from({ length: ROWS }, () => new Uint8Array(randomBytes(IMAGE_BYTES)));
  await writeParquetFile(
    file,
    new Table({
      id: vectorFromArray(
        images.map((_, i) => `s${i}`),
        new Utf8(),
      ),
      image: vectorFromArray(images, new Binary()),
    }),
    { rowGroupSize: 40 },
  );
  return file;
}

/** Bytes sliced off file-backed Blobs while `fn` runs (LazyParquet reads through Blob.slice). */
async function bytesFetched(fn: () => Promise<unknown>): Promise<number> {
  const original = Blob.prototype.slice;
  let fetched = 0;
  Blob.prototype.slice = function (this: Blob, start?: number, end?: number, type?: string) {
    const part = original.call(this, start, end, type);
    fetched += part.size;
    return part;
  };
  try {
    await fn();
  } finally {
    Blob.prototype.slice = original;
  }
  return fetched;
}

test("a read fetches only the asked columns' bytes, and only the row groups of the asked range", async () => {
  const file = await imagesFile();
  const size = statSync(file).size;
  assert.ok(size > ROWS * IMAGE_BYTES * 0.9, "the image bytes do not compress");

  let ids: Awaited<ReturnType<typeof readTable<typeof SAMPLES_TABLE, "id">>> | undefined;
  const idBytes = await bytesFetched(async () => (ids = await readTable(SAMPLES_TABLE, file, ["id"])));
  assert.equal(ids!.numRows, ROWS);
  assert.equal(ids!.id[399], "s399");
  assert.ok(idBytes > 0 && idBytes < size / 20, `the id column fetched ${idBytes} of ${size} bytes`);

  let images: Awaited<ReturnType<typeof readTable<typeof SAMPLES_TABLE, "id" | "image">>> | undefined;
  const imageBytes = await bytesFetched(async () => (images = await readTable(SAMPLES_TABLE, file, ["id", "image"], { offset: 85, limit: 10 })));
  assert.equal(images!.numRows, 10);
  assert.equal(images!.id[0], "s85");
  assert.equal(images!.image[9]!.length, IMAGE_BYTES);
  // Rows 85-94 lie in two row groups of 40: at most 80 images' bytes, not 400.
  assert.ok(imageBytes < 81 * IMAGE_BYTES + 64 * 1024, `10 images fetched ${imageBytes} of ${size} bytes`);
});
