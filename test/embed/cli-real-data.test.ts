import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import { describe, test } from "node:test";
import { readParquetFile } from "../../src/io/parquet.js";
import { parseCommandArgs, type CliIO } from "../../src/cli/command.js";
import { COMMANDS } from "../../src/cli/commands/index.js";
import { readEmbeddingColumn } from "../../src/io/tables.js";
import { parseCsv } from "../../src/io/csv.js";
import { blobImage, scratchDir } from "./helpers.js";
import { writeFile, mkdir } from "node:fs/promises";
import { skipUnless } from "../helpers/skip.js";

const REAL_DATA = process.env.PROLEARN_REAL_DATA ?? path.resolve(import.meta.dirname, "../../../shared/data");
const ANNOTATION = path.join(REAL_DATA, "qata-cov19/QaTa/prompts/annotation.json");
const LVIT_TEST = path.join(REAL_DATA, "qata-cov19/prompt-lvit/test.csv");
const QATA_IMAGES = path.join(REAL_DATA, "qata-cov19/QaTa/images/test/images");

async function runCommand(name: string, argv: string[]): Promise<{ code: number | void; stdout: string; stderr: string }> {
  const spec = await COMMANDS[name]!.load();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (d) => (out += d));
  stderr.on("data", (d) => (err += d));
  const io: CliIO = { stdout, stderr, interactive: false };
  const code = await spec.run(parseCommandArgs(spec, argv), io);
  return { code, stdout: out, stderr: err };
}

function rowsEqual(values: Float32Array, dim: number, i: number, j: number): boolean {
  for (let k = 0; k < dim; k++) if (values[i * dim + k] !== values[j * dim + k]) return false;
  return true;
}

describe("prolearn embed texts / images", () => {
  test("CSV parsing: quotes, doubled quotes, embedded newlines, ; delimiter", () => {
    assert.deepEqual(parseCsv('Image,Description\r\na.png,"one, two ""x""\nthree"\r\nb.png,plain\n'), [
      ["Image", "Description"],
      ["a.png", 'one, two "x"\nthree'],
      ["b.png", "plain"],
    ]);
    assert.deepEqual(parseCsv("Image;text\nbjorke_1.png;No pulmonary infection, zero infected areas.\n"), [
      ["Image", "text"],
      ["bjorke_1.png", "No pulmonary infection, zero infected areas."],
    ]);
  });

  test("QaTa annotation.json: 9258 captions of all splits in one run, fitted on 5716 train, identical captions identical", {
    skip: skipUnless(existsSync(ANNOTATION), `${ANNOTATION} is absent; set PROLEARN_REAL_DATA`),
  }, async () => {
    const out = path.join(await scratchDir("cli"), "captions.parquet");
    const result = await runCommand("embed texts", [ANNOTATION, "--encoder", "builtin", "--out", out]);
    assert.equal(result.code, 0);
    const info = JSON.parse(result.stdout);
    assert.equal(info.rows, 9258);
    assert.equal(info.column, "caption");
    assert.equal(info.encoder.fittedOn, 5716);
    const table = await readParquetFile(out);
    assert.deepEqual(
      table.schema.fields.map((f) => f.name),
      ["split", "text", "embedding"],
    );
    const splits = table.getChild("split")!.toArray() as string[];
    assert.equal(splits.filter((s) => s === "train").length, 5716);
    assert.equal(splits.filter((s) => s === "valid").length, 1429);
    assert.equal(splits.filter((s) => s === "test").length, 2113);
    const texts = table.getChild("text")!.toArray() as string[];
    const { values, valid, dim } = readEmbeddingColumn(table, "embedding");
    assert.equal(dim, 512);
    assert.equal(
      valid.reduce((a, b) => a + b, 0),
      9258,
    );
    const firstOf = new Map<string, number>();
    let duplicates = 0;
    texts.forEach((t, i) => {
      const first = firstOf.get(t);
      if (first === undefined) firstOf.set(t, i);
      else {
        duplicates++;
        assert.ok(rowsEqual(values, dim, first, i), `rows ${first} and ${i} share a caption`);
      }
    });
    assert.ok(duplicates > 100, `the captions repeat (${duplicates} repeats)`);
    const distinct = [...firstOf.values()];
    assert.ok(!rowsEqual(values, dim, distinct[0]!, distinct[1]!), "different captions differ");
  });

  test("LViT test.csv: 2113 rows with typos embed, in order", {
    skip: skipUnless(existsSync(LVIT_TEST), `${LVIT_TEST} is absent; set PROLEARN_REAL_DATA`),
  }, async () => {
    const out = path.join(await scratchDir("cli"), "lvit.parquet");
    const result = await runCommand("embed texts", [LVIT_TEST, "--out", out, "--dim", "128"]);
    const info = JSON.parse(result.stdout);
    assert.equal(info.rows, 2113);
    assert.equal(info.column, "Description");
    const table = await readParquetFile(out);
    const texts = table.getChild("text")!.toArray() as string[];
    assert.ok(
      texts.some((t) => /midlle|uppper/.test(t)),
      "typos are kept",
    );
    assert.equal(readEmbeddingColumn(table, "embedding").dim, 128);
    assert.match(result.stderr, /embedded 2113 rows of column Description/);
  });

  test("embed images: generated folder with the test-built BiomedCLIP model and builtin; bad flags are usage errors", async () => {
    const root = await scratchDir("cli-images");
    const folder = path.join(root, "imgs", "sub");
    await mkdir(folder, { recursive: true });
    for (let i = 0; i < 5; i++) await writeFile(path.join(folder, `im${i}.png`), await blobImage(i));
    const { writeTinyBiomedclipFolder } = await import("./tiny-biomedclip.js");
    const model = path.join(root, "model");
    await writeTinyBiomedclipFolder(model);
    const out = path.join(root, "images.parquet");
    const result = await runCommand("embed images", [path.join(root, "imgs"), "--encoder", "biomedclip", "--model", model, "--out", out, "--batch-size", "2"]);
    assert.equal(JSON.parse(result.stdout).rows, 5);
    const table = await readParquetFile(out);
    assert.deepEqual(
      table.schema.fields.map((f) => f.name),
      ["path", "sha256", "embedding"],
    );
    assert.match(String(table.getChild("path")!.get(4)), /im4\.png$/);
    await assert.rejects(runCommand("embed images", [root, "--encoder", "clip", "--out", out]), /--encoder must be one of builtin, biomedclip/);
    await assert.rejects(runCommand("embed images", [root, "--encoder", "biomedclip", "--out", out]), /needs --model/);
  });

  test("embed images on 40 real QaTa X-rays with the builtin encoder", {
    skip: skipUnless(existsSync(QATA_IMAGES), `${QATA_IMAGES} is absent; set PROLEARN_REAL_DATA`),
  }, async () => {
    const root = await scratchDir("cli-real");
    const folder = path.join(root, "x");
    await mkdir(folder);
    const { readdir, copyFile } = await import("node:fs/promises");
    for (const name of (await readdir(QATA_IMAGES)).sort().slice(0, 40)) await copyFile(path.join(QATA_IMAGES, name), path.join(folder, name));
    const out = path.join(root, "x.parquet");
    const result = await runCommand("embed images", [folder, "--out", out]);
    assert.equal(JSON.parse(result.stdout).rows, 40);
    const { values } = readEmbeddingColumn(await readParquetFile(out), "embedding");
    assert.ok(values.every(Number.isFinite));
  });
});
