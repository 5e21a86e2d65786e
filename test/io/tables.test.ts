/**
 * Declared stage tables (src/io/columns.ts, src/<stage>/tables.ts): the typed reader, bounded
 * reads, the check before publishing, and embedding columns written by DuckDB (lists, not
 * FixedSizeList) read by the same reader that `prolearn prototypes query` uses.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { Bool, Field, type Float32, List, Table, Utf8, vectorFromArray } from "apache-arrow";
import { EMBEDDINGS_TABLE } from "../../src/embed/tables.js";
import { DataError } from "../../src/errors.js";
import { FILTERED_TABLE } from "../../src/filter/tables.js";
import { writeParquetFile } from "../../src/io/parquet.js";
import { checkTableFile, embeddingVector, readEmbeddingFile, readTable, withTable } from "../../src/io/tables.js";
import { assignmentsTable, prototypesTable, writeArtifactManifest, type Lineage } from "../../src/prototypes/artifact.js";
import type { Prototypes } from "../../src/prototypes/build.js";
import { cli } from "../helpers/cli.js";
import { runDemo, demoProject } from "../report/helpers.js";
import { demoRegistry } from "../report/fixtures.js";
import { defineStage, type StageDefinition } from "../../src/pipeline/stage.js";

function scratch(): string {
  return mkdtempSync(path.join(tmpdir(), "prolearn-tables-"));
}

const DIM = 4;

/** Embeddings in embed's layout: row i's image vector is [i, i+1, i+2, i+3]; odd rows have no text. */
async function writeEmbeddings(file: string, rows: number): Promise<void> {
  const images = Float32Array.from({ length: rows * DIM }, (_, k) => Math.floor(k / DIM) + (k % DIM));
  const texts = images.map((v) => -v);
  const valid = Uint8Array.from({ length: rows }, (_, i) => (i % 2 === 0 ? 1 : 0));
  await writeParquetFile(
    file,
    new Table({
      id: vectorFromArray(
        Array.from({ length: rows }, (_, i) => `s${i}`),
        new Utf8(),
      ),
      split: vectorFromArray(
        Array.from({ length: rows }, (_, i) => (i < rows / 2 ? "train" : "val")),
        new Utf8(),
      ),
      report_available: vectorFromArray(
        Array.from({ length: rows }, (_, i) => i % 2 === 0),
        new Bool(),
      ),
      image_embedding: embeddingVector(images, DIM),
      text_embedding: embeddingVector(texts, DIM, valid),
    }),
    { rowGroupSize: 8 },
  );
}

/** Runs SQL in an in-memory DuckDB (DuckDB writes FLOAT[] / DOUBLE[] as Parquet lists). */
async function duckdb(sql: string): Promise<void> {
  const instance = await DuckDBInstance.create(":memory:");
  const connection = await instance.connect();
  await connection.run(sql);
  connection.closeSync();
}

describe("declared tables", () => {
  test("the typed reader decodes each column by its declared type, over a row range", async () => {
    const file = path.join(scratch(), "embeddings.parquet");
    await writeEmbeddings(file, 40);
    const all = await readTable(EMBEDDINGS_TABLE, file, ["id", "report_available", "text_embedding"]);
    assert.equal(all.numRows, 40);
    assert.equal(all.id[7], "s7");
    assert.equal(all.report_available[7], false);
    assert.equal(all.text_embedding.dim, DIM);
    assert.deepEqual([...all.text_embedding.valid.subarray(0, 4)], [1, 0, 1, 0]);

    const slice = await readTable(EMBEDDINGS_TABLE, file, ["id", "image_embedding"], { offset: 17, limit: 5 });
    assert.equal(slice.numRows, 5);
    assert.deepEqual(slice.id, ["s17", "s18", "s19", "s20", "s21"]);
    assert.deepEqual([...slice.image_embedding.values.subarray(0, DIM)], [17, 18, 19, 20], "row 17's vector, not row 0's");
    assert.deepEqual([...slice.image_embedding.values.subarray(4 * DIM)], [21, 22, 23, 24]);

    const slices = await withTable(EMBEDDINGS_TABLE, file, async (reader) => {
      const seen: [number, number][] = [];
      for await (const { offset, rows } of reader.slices(["id"], 16)) seen.push([offset, rows.numRows]);
      return seen;
    });
    assert.deepEqual(slices, [
      [0, 16],
      [16, 16],
      [32, 8],
    ]);
  });

  test("a missing, mistyped or undeclared column fails the check, naming the file and the column", async () => {
    const dir = scratch();
    const good = path.join(dir, "embeddings.parquet");
    await writeEmbeddings(good, 4);
    await checkTableFile(EMBEDDINGS_TABLE, good);

    const bad = path.join(dir, "filtered.parquet");
    const listOf = (type: Utf8 | Float32 | Bool) => new List(new Field("item", type, true));
    await writeParquetFile(
      bad,
      new Table({
        id: vectorFromArray(["a"], new Utf8()),
        report: vectorFromArray(["left lung"], new Utf8()),
        filtered_report: vectorFromArray(["left"], new Utf8()),
        tokens: vectorFromArray([["left", "lung"]], listOf(new Utf8())),
        scores: vectorFromArray([["0.9", "0.1"]], listOf(new Utf8())),
        kept: vectorFromArray([[true, false]], listOf(new Bool())),
        note: vectorFromArray(["extra"], new Utf8()),
      }),
    );
    await assert.rejects(checkTableFile(FILTERED_TABLE, bad), (error: unknown) => {
      assert.ok(error instanceof DataError);
      assert.equal(error.location.file, bad);
      assert.match(error.message, /filtered\.parquet does not match what the filter stage declares/);
      assert.match(error.message, /column threshold \(float32\) is missing/);
      assert.match(error.message, /column scores is List<Utf8>, declared List<float32>/);
      assert.match(error.message, /column note is not declared/);
      return true;
    });
    // The reader refuses a mistyped column when it opens the file, and a missing one when asked for it.
    await assert.rejects(readTable(FILTERED_TABLE, bad, ["id"]), /column scores is List<Utf8>/);
  });

  test("the engine checks a stage's declared tables before publishing, and the failure names the stage", async () => {
    const registry = new Map(demoRegistry());
    const ingest = registry.get("ingest")!;
    const broken: StageDefinition = defineStage({
      ...ingest,
      async run(ctx) {
        const summary = await ingest.run!(ctx);
        await writeParquetFile(path.join(ctx.outDir, "orphans.parquet"), new Table({ report_key: vectorFromArray([], new Utf8()) }));
        return summary;
      },
    }) as StageDefinition;
    registry.set("ingest", broken);
    const { file } = demoProject(["ingest"]);
    const { result } = await runDemo(file, registry);
    assert.equal(result.status, "failed");
    const stage = result.stages.find((s) => s.name === "ingest")!;
    assert.equal(stage.status, "failed");
    assert.match(
      stage.error!,
      /^stage ingest failed: \/\S+\/orphans\.parquet: orphans\.parquet does not match what the ingest stage declares: column report_file \(utf8\) is missing/,
    );
    assert.equal(stage.digest, null, "nothing was published");
  });
});

describe("embedding columns written by DuckDB", () => {
  test("FLOAT[] and DOUBLE[] lists read like FixedSizeList; a ragged list names its row", async () => {
    const dir = scratch();
    const floats = path.join(dir, "floats.parquet");
    await duckdb(`COPY (SELECT 'q' || i AS id, [i::FLOAT, 1, 2, 3] AS image_embedding FROM range(5) t(i)) TO '${floats}' (FORMAT parquet)`);
    const read = await readEmbeddingFile(floats, "image_embedding");
    assert.equal(read.numRows, 5);
    assert.equal(read.embeddings.dim, 4);
    assert.deepEqual(read.ids, ["q0", "q1", "q2", "q3", "q4"]);
    assert.deepEqual([...read.embeddings.values.subarray(3 * 4, 4 * 4)], [3, 1, 2, 3]);

    const doubles = path.join(dir, "doubles.parquet");
    await duckdb(`COPY (SELECT [i::DOUBLE / 4, 0.5] AS v FROM range(3) t(i)) TO '${doubles}' (FORMAT parquet)`);
    const only = await readEmbeddingFile(doubles);
    assert.equal(only.column, "v", "the only vector column is found without --column");
    assert.deepEqual([...only.embeddings.values], [0, 0.5, 0.25, 0.5, 0.5, 0.5]);
    assert.equal(only.ids, null);

    const ragged = path.join(dir, "ragged.parquet");
    await duckdb(`COPY (SELECT CASE WHEN i = 2 THEN [1::FLOAT, 2] ELSE [1::FLOAT, 2, 3] END AS v FROM range(4) t(i)) TO '${ragged}' (FORMAT parquet)`);
    await assert.rejects(readEmbeddingFile(ragged), (error: unknown) => {
      assert.ok(error instanceof DataError);
      assert.equal(error.location.row, 2);
      assert.match(error.message, /row 2 has 2 values, earlier rows 3/);
      return true;
    });
  });

  test("prolearn prototypes query answers for image embeddings DuckDB wrote as FLOAT[]", async () => {
    const dir = scratch();
    const artifact = path.join(dir, "artifact");
    mkdirSync(artifact);
    // Two prototypes along the first two axes; their responses are recognisable vectors.
    const prototypes: Prototypes = {
      dim: DIM,
      queries: Float32Array.from([1, 0, 0, 0, 0, 1, 0, 0]),
      responses: Float32Array.from([10, 10, 10, 10, -5, -5, -5, -5]),
      cluster: Int32Array.from([0, 1]),
      subcluster: Int32Array.from([0, 0]),
      size: Int32Array.from([3, 3]),
      sampleIndex: Int32Array.from([0, 1]),
    };
    await writeParquetFile(path.join(artifact, "prototypes.parquet"), prototypesTable(prototypes, ["a", "b"]));
    await writeParquetFile(path.join(artifact, "assignments.parquet"), assignmentsTable([{ sample: 0, cluster: 0, probability: 1, subcluster: 0 }], ["a"]));
    const lineage: Lineage = {
      pipeline: "t",
      datasetFingerprint: null,
      upstream: {},
      encoder: { id: null, dim: DIM, digest: null },
      params: {},
      seed: 1,
      packageVersion: "test",
      counts: {},
    };
    await writeArtifactManifest(artifact, lineage);

    const input = path.join(dir, "queries.parquet");
    await duckdb(
      `COPY (SELECT * FROM (VALUES ('near-a', [0.9::FLOAT, 0.1, 0, 0]), ('near-b', [0.1::FLOAT, 0.9, 0, 0])) t(id, image_embedding)) TO '${input}' (FORMAT parquet)`,
    );
    const out = path.join(dir, "answers.parquet");
    const run = await cli(["prototypes", "query", artifact, input, "--out", out, "--top-k", "1", "--json"]);
    assert.equal(run.code, 0, run.stderr);
    const answers = await readEmbeddingFile(out, "text_embedding");
    assert.deepEqual(answers.ids, ["near-a", "near-b"]);
    assert.deepEqual([...answers.embeddings.values], [10, 10, 10, 10, -5, -5, -5, -5]);
  });
});
