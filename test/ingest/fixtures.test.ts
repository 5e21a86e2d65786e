import assert from "node:assert/strict";
import { copyFile, mkdir, readFile, readdir } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { DataError } from "../../src/errors.js";
import { writeFixtureDataset, type FixtureLayout } from "../../src/synthetic/index.js";
import { synthesizeSample } from "../../src/synthetic/generate.js";
import { readParquetFile } from "../../src/io/parquet.js";
import type { DatasetKind } from "../../src/pipeline/spec.js";
import { SAMPLE_COLUMNS } from "../../src/ingest/schema.js";
import { fileRowCache, realDataPath, runIngest, scratchDir } from "./helpers.js";
import { skipUnless } from "../helpers/skip.js";

const LAYOUTS: [DatasetKind, FixtureLayout][] = [
  ["qata-cov19", "kaggle"],
  ["qata-cov19", "lvit"],
  ["qata-cov19", "guideseg"],
  ["qata-cov19", "sgseg"],
  ["qata-cov19", "prolearn"],
  ["mosmeddata-plus", "lvit"],
  ["mosmeddata-plus", "lvit-csv"],
  ["kvasir-seg", "kvasir"],
];

test("every layout's fixture is detected, ingests every image with its report, and gives the same table shape", async () => {
  const shapes = new Set<string>();
  for (const [kind, layout] of LAYOUTS) {
    const dir = scratchDir("layout");
    const fx = await writeFixtureDataset({ kind, layout, out: path.join(dir, "data"), n: 12, seed: 7 });
    const { summary, outDir, logs } = await runIngest({ kind, root: fx.root, reports: fx.reports });
    assert.ok(
      logs.some((l) => l.includes(`auto-detected ${layout}`)),
      `${kind}/${layout}: ${logs[0]}`,
    );
    assert.equal(summary.found, 12, `${kind}/${layout}`);
    assert.equal(summary.ingested, 12, `${kind}/${layout}`);
    assert.equal(summary.quarantined, 0, `${kind}/${layout}`);
    assert.equal(summary.imageOnly, 0, `${kind}/${layout}: every image matched its report`);
    const table = await readParquetFile(path.join(outDir, "samples.parquet"));
    shapes.add(table.schema.fields.map((f) => `${f.name}:${f.type}:${f.nullable}`).join(","));
    const q = await readParquetFile(path.join(outDir, "quarantine.parquet"));
    assert.deepEqual((q.getChild("reason")!.toArray() as string[]).slice().sort(), fx.expectedQuarantine, `${kind}/${layout}`);
    const reports = table.getChild("report_normalized")!.toArray() as string[];
    for (const r of reports) assert.doesNotMatch(r, /EOF|XXX/, "padding removed");
    const fingerprint = JSON.parse(await readFile(path.join(outDir, "fingerprint.json"), "utf8"));
    assert.equal(fingerprint.layout, layout);
  }
  assert.equal(shapes.size, 1, [...shapes].join("\n"));
  assert.deepEqual(
    [...shapes][0]!.split(",").map((s) => s.split(":")[0]),
    SAMPLE_COLUMNS.map((c) => c.name),
  );
});

for (const [kind, layout] of [
  ["kvasir-seg", "kvasir"],
  ["mosmeddata-plus", "lvit"],
  ["qata-cov19", "guideseg"],
  ["mosmeddata-plus", "lvit-csv"],
] as const) {
  test(`bad-input fixture (${kind}, ${layout}) yields exactly the expected quarantine reasons and reconciles`, async () => {
    const dir = scratchDir("bad");
    const fx = await writeFixtureDataset({ kind, layout, out: path.join(dir, "data"), n: 10, seed: 3, bad: true });
    const { summary, outDir } = await runIngest({ kind, root: fx.root, reports: fx.reports });
    const q = await readParquetFile(path.join(outDir, "quarantine.parquet"));
    const reasons = (q.getChild("reason")!.toArray() as string[]).slice().sort();
    assert.deepEqual(reasons, fx.expectedQuarantine);
    for (const reason of [
      "unreadable-image",
      "truncated-image",
      "unsupported-format",
      "missing-mask",
      "mask-size-mismatch",
      "mask-not-binary",
      "empty-mask",
      "duplicate-id",
      "path-escapes-root",
      "empty-report-file",
      "malformed-report-file",
    ]) {
      assert.ok((reasons as string[]).includes(reason), `missing ${reason}`);
    }
    const samples = await readParquetFile(path.join(outDir, "samples.parquet"), { columns: ["id", "mask_empty"] });
    assert.equal((summary.ingested as number) + (summary.quarantined as number), summary.found, "found = ingested + quarantined");
    assert.equal(samples.numRows, summary.ingested);
    const ids = samples.getChild("id")!.toArray() as string[];
    assert.ok(ids.includes("bad_empty"), "the empty-mask sample is kept");
    assert.equal(samples.getChild("mask_empty")!.get(ids.indexOf("bad_empty")), true);
    await assert.rejects(
      () => runIngest({ kind, root: fx.root, reports: fx.reports }, { strict: true }),
      (error: unknown) => error instanceof DataError && error.exitCode === 1 && /missing-mask/.test(error.message) && /path-escapes-root/.test(error.message),
    );
  });
}

test("textAvailability subsets are nested for one seed and sized round(r*n); val/test keep their reports", async () => {
  const dir = scratchDir("avail");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: path.join(dir, "data"), n: 60, seed: 5, size: 32 });
  const cache = fileRowCache(path.join(dir, "rows"));
  let previous = new Set<string>();
  let trainCount = 0;
  for (const r of [0, 0.1, 0.25, 0.5, 1]) {
    const { outDir } = await runIngest({ kind: "qata-cov19", root: fx.root, textAvailability: r, seed: 11 }, {}, { cache });
    const t = await readParquetFile(path.join(outDir, "samples.parquet"), { columns: ["id", "split", "report", "report_available"] });
    const available = new Set<string>();
    trainCount = 0;
    for (let i = 0; i < t.numRows; i++) {
      const split = t.getChild("split")!.get(i);
      assert.notEqual(t.getChild("report")!.get(i), null, "the report is kept even when unavailable");
      if (split === "train") {
        trainCount++;
        if (t.getChild("report_available")!.get(i)) available.add(t.getChild("id")!.get(i));
      } else assert.equal(t.getChild("report_available")!.get(i), true);
    }
    assert.equal(available.size, Math.round(r * trainCount), `r=${r}`);
    for (const id of previous) assert.ok(available.has(id), `r=${r} must contain the smaller subset`);
    previous = available;
  }
  const other = await runIngest({ kind: "qata-cov19", root: fx.root, textAvailability: 0.5, seed: 12 }, {}, { cache });
  const t = await readParquetFile(path.join(other.outDir, "samples.parquet"), { columns: ["id", "report_available", "split"] });
  const withSeed12 = new Set(
    (t.toArray() as { id: string; report_available: boolean; split: string }[]).filter((r) => r.split === "train" && r.report_available).map((r) => r.id),
  );
  assert.equal(withSeed12.size, Math.round(0.5 * trainCount));
});

test("a rerun after adding files decodes only the new ones (row cache keyed on content)", async () => {
  const dir = scratchDir("rerun");
  const fx = await writeFixtureDataset({ kind: "kvasir-seg", layout: "kvasir", out: path.join(dir, "data"), n: 10, seed: 9, size: 48 });
  const cache = fileRowCache(path.join(dir, "rows"));
  const first = await runIngest({ kind: "kvasir-seg", root: fx.root }, {}, { cache });
  assert.equal(first.summary.decoded, 10);
  const extra = await writeFixtureDataset({ kind: "kvasir-seg", layout: "kvasir", out: path.join(dir, "more"), n: 3, seed: 99, size: 48 });
  for (const name of await readdir(path.join(extra.root, "images"))) {
    await copyFile(path.join(extra.root, "images", name), path.join(fx.root, "images", name));
    await copyFile(path.join(extra.root, "masks", name), path.join(fx.root, "masks", name));
  }
  const second = await runIngest({ kind: "kvasir-seg", root: fx.root }, {}, { cache });
  assert.equal(second.summary.ingested, 13);
  assert.equal(second.summary.decoded, 3);
  assert.equal(second.summary.cacheHits, 10);
  assert.equal(second.summary.imageOnly, 3, "the added images have no MedVLSM entry and are ingested image-only");
  const a = await readFile(path.join(first.outDir, "samples.parquet"));
  const again = await runIngest({ kind: "kvasir-seg", root: fx.root }, {}, { cache });
  const b = await readFile(path.join(again.outDir, "samples.parquet"));
  const c = await readFile(path.join(second.outDir, "samples.parquet"));
  assert.notDeepEqual(a, c);
  assert.deepEqual(b, c, "same input, same bytes");
});

const mosmedText = realDataPath("mosmeddata-plus", "text");
test("MosMedData+ real ';' CSV text with images in the LViT folders (lvit-csv): every row matched", {
  skip: skipUnless(mosmedText, "MosMedData+ text CSVs absent (../shared/data or $PROLEARN_REAL_DATA)"),
}, async () => {
  const dir = scratchDir("mosmed");
  const fx = await writeFixtureDataset({ kind: "mosmeddata-plus", layout: "lvit-csv", out: path.join(dir, "data"), n: 4, seed: 1, size: 32 });
  // Replace the generated text by LViT's real CSVs and name images after their first rows.
  const root = fx.root;
  const textDir = path.join(root, "text");
  for (const f of await readdir(textDir)) await import("node:fs/promises").then((fs) => fs.rm(path.join(textDir, f)));
  const names: Record<string, string[]> = {};
  for (const [file, split] of [
    ["Train_text_MosMedData+ 1(in).csv", "Train"],
    ["Val_text_MosMedData+ 1(in).csv", "Val"],
  ] as const) {
    await copyFile(path.join(mosmedText!, file), path.join(textDir, file));
    const lines = (await readFile(path.join(mosmedText!, file), "utf8")).split(/\r?\n/).slice(1, 6);
    names[split] = lines.map((l) => l.split(";")[0]!);
  }
  const fs = await import("node:fs/promises");
  await fs.rm(path.join(root, "Train_Folder"), { recursive: true, force: true });
  await fs.rm(path.join(root, "Val_Folder"), { recursive: true, force: true });
  await fs.rm(path.join(root, "Test_Folder"), { recursive: true, force: true });
  const source = await writeFixtureDataset({ kind: "mosmeddata-plus", layout: "prolearn", out: path.join(dir, "src"), n: 1, seed: 2, size: 32 });
  const [image] = await readdir(path.join(source.root, "images"));
  for (const [split, list] of Object.entries(names)) {
    await mkdir(path.join(root, `${split}_Folder`, "img"), { recursive: true });
    await mkdir(path.join(root, `${split}_Folder`, "labelcol"), { recursive: true });
    for (const name of list) {
      await copyFile(path.join(source.root, "images", image!), path.join(root, `${split}_Folder`, "img", name));
      await copyFile(path.join(source.root, "masks", image!), path.join(root, `${split}_Folder`, "labelcol", name));
    }
  }
  const { summary, outDir } = await runIngest({ kind: "mosmeddata-plus", root, layout: "lvit-csv" });
  assert.equal(summary.ingested, 10);
  assert.equal(summary.imageOnly, 0);
  assert.equal(summary.orphanReports, 2183 + 273 - 10);
  const t = await readParquetFile(path.join(outDir, "samples.parquet"), { columns: ["split", "report"] });
  assert.deepEqual([...new Set(t.getChild("split")!.toArray() as string[])].sort(), ["train", "val"]);
});

test("decoys: an extra lesion outside the mask and the report; masks, reports and the default bytes are unchanged", async () => {
  let withDecoy = 0;
  for (const kind of ["qata-cov19", "mosmeddata-plus"] as const) {
    for (let index = 0; index < 20; index++) {
      const plain = synthesizeSample(kind, 3, index, 64);
      const decoy = synthesizeSample(kind, 3, index, 64, { decoys: true });
      assert.deepEqual(decoy.mask, plain.mask, "the decoy is not in the mask");
      assert.equal(decoy.report, plain.report, "nor in the report");
      let changed = 0;
      for (let p = 0; p < plain.pixels.length; p++) {
        if (decoy.pixels[p] === plain.pixels[p]) continue;
        changed++;
        assert.equal(plain.mask[p], 0, "only pixels outside the real lesion change");
        assert.ok(decoy.pixels[p]! > plain.pixels[p]!, "the decoy is an opacity like the real lesions");
      }
      if (changed > 0) withDecoy++;
    }
  }
  assert.ok(withDecoy >= 36, `most samples get a decoy (${withDecoy}/40)`);
  const dir = scratchDir("decoys");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 8, seed: 3, size: 32, decoys: true });
  const { summary } = await runIngest({ kind: "qata-cov19", root: fx.root });
  assert.equal(summary.ingested, 8);
  await assert.rejects(() => writeFixtureDataset({ kind: "kvasir-seg", layout: "kvasir", out: path.join(dir, "polyps"), decoys: true }), /chest kinds/);
});
