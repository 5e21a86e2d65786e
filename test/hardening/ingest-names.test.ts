// Issue #16 item 6, tried again: names and report text that hold characters a reader cannot
// see, or that no report has (bidi overrides, zero-width spaces, C1 controls, line separators,
// NUL bytes). Each is set aside with its reason and shown escaped in the detail.
import assert from "node:assert/strict";
import { readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { readParquetFile } from "../../src/io/parquet.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { runIngest, scratchDir } from "../ingest/helpers.js";

async function quarantineOf(outDir: string): Promise<{ source: string; reason: string; detail: string }[]> {
  return (await readParquetFile(path.join(outDir, "quarantine.parquet")))
    .toArray()
    .map((r) => ({ ...(r as { source: string; reason: string; detail: string }) }));
}

async function idsOf(outDir: string): Promise<string[]> {
  return (await readParquetFile(path.join(outDir, "samples.parquet"), { columns: ["id"] })).toArray().map((r) => (r as { id: string }).id);
}

test("file names and report keys with bidi overrides, zero-width spaces, C1 controls or line separators are invalid-id, shown escaped", async () => {
  const dir = scratchDir("hard-names");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: path.join(dir, "data"), n: 8, seed: 6, size: 32 });
  const root = fx.root;
  const ids = readdirSync(path.join(root, "images"))
    .sort()
    .map((n) => n.replace(/\.png$/, ""));
  // U+202E shows `<id>\u202Egnp.png` as `<id>png.png`; U+0085 (NEL) is a C1 control; U+2028 a line separator.
  const renamed = ids.slice(0, 3).map((id, i) => ({ id, name: `${id}${["\u202Egnp", "\u0085x", "\u2028x"][i]}` }));
  for (const { id, name } of renamed) {
    renameSync(path.join(root, "images", `${id}.png`), path.join(root, "images", `${name}.png`));
    renameSync(path.join(root, "masks", `mask_${id}.png`), path.join(root, "masks", `mask_${name}.png`));
    renameSync(path.join(root, "reports", `${id}.txt`), path.join(root, "reports", `${name}.txt`));
  }
  const { outDir, summary } = await runIngest({ kind: "qata-cov19", root });
  const quarantine = await quarantineOf(outDir);
  for (const { name } of renamed) {
    for (const source of [`images/${name}.png`, `reports/${name}.txt`])
      assert.ok(
        quarantine.some((q) => q.reason === "invalid-id" && q.source === source),
        `${JSON.stringify(source)}: ${JSON.stringify(quarantine)}`,
      );
  }
  const bidi = quarantine.find((q) => q.source === `images/${renamed[0]!.name}.png`)!;
  assert.ok(bidi.detail.includes(`"${renamed[0]!.id}\\u202Egnp.png"`) && !bidi.detail.includes("\u202E"), bidi.detail);
  assert.ok(!(await idsOf(outDir)).some((id) => /[\p{Cc}\p{Cf}\p{Zl}]/u.test(id)));
  assert.equal(summary.ingested, 5);

  // The same in a report table: a zero-width space in a CSV's image name.
  const csvDir = scratchDir("hard-names-csv");
  const lvit = await writeFixtureDataset({ kind: "qata-cov19", layout: "lvit-csv", out: path.join(csvDir, "data"), n: 6, seed: 6, size: 32 });
  const [csvName] = readdirSync(path.join(lvit.root, "text")).filter((n) => n.startsWith("Train"));
  const csv = path.join(lvit.root, "text", csvName!);
  const lines = readFileSync(csv, "utf8").split("\n");
  const key = lines[1]!.split(";")[0]!;
  lines[1] = lines[1]!.replace(key, key.replace(".png", "\u200B.png"));
  writeFileSync(csv, lines.join("\n"));
  const tabled = await runIngest({ kind: "qata-cov19", root: lvit.root });
  const rows = (await quarantineOf(tabled.outDir)).filter((q) => q.reason === "invalid-id");
  assert.deepEqual(
    rows.map((q) => q.source),
    [`text/${csvName}`],
  );
  assert.match(rows[0]!.detail, /line 2: image name ".*\\u200B\.png" holds a control or invisible character/);
});

test("report text holding NUL or another control character is invalid-text-encoding; UTF-16 with a byte-order mark (Excel's Unicode Text) is read", async () => {
  const dir = scratchDir("hard-text");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: path.join(dir, "data"), n: 6, seed: 7, size: 32 });
  const reports = path.join(fx.root, "reports");
  const [nulId, utf16Id] = readdirSync(reports)
    .sort()
    .map((n) => n.slice(0, -4));
  writeFileSync(path.join(reports, `${nulId}.txt`), "Bilateral\u0000\u0000 infection");
  const utf16Text = readFileSync(path.join(reports, `${utf16Id}.txt`), "utf8");
  writeFileSync(path.join(reports, `${utf16Id}.txt`), Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(utf16Text, "utf16le")]));
  const { outDir } = await runIngest({ kind: "qata-cov19", root: fx.root });
  const samples = (await readParquetFile(path.join(outDir, "samples.parquet"), { columns: ["id", "report"] }))
    .toArray()
    .map((r) => ({ ...(r as { id: string; report: string | null }) }));
  assert.equal(samples.find((s) => s.id === nulId)!.report, null, "the NUL report is not stored");
  assert.equal(samples.find((s) => s.id === utf16Id)!.report, utf16Text.replace(/\r?\n$/, ""), "the UTF-16 report is read whole");
  const quarantine = await quarantineOf(outDir);
  assert.deepEqual(
    quarantine.map((q) => `${q.reason} ${q.source}: ${q.detail}`),
    [
      `invalid-text-encoding reports/${nulId}.txt: ${nulId}.txt: the report for ${nulId} holds the control character U+0000 at offset 9 (a binary file, or a corrupted export?)`,
    ],
  );

  // A tab-delimited UTF-16LE CSV with a byte-order mark, as Excel saves "Unicode Text".
  const csvDir = scratchDir("hard-text-csv");
  const lvit = await writeFixtureDataset({ kind: "qata-cov19", layout: "lvit-csv", out: path.join(csvDir, "data"), n: 6, seed: 7, size: 32 });
  const before = await runIngest({ kind: "qata-cov19", root: lvit.root });
  const expected = (await readParquetFile(path.join(before.outDir, "samples.parquet"), { columns: ["id", "report"] })).toArray().map((r) => ({ ...r }));
  for (const name of readdirSync(path.join(lvit.root, "text"))) {
    const file = path.join(lvit.root, "text", name);
    writeFileSync(
      file,
      Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(readFileSync(file, "utf8").replaceAll(";", "\t").replaceAll("\n", "\r\n"), "utf16le")]),
    );
  }
  const after = await runIngest({ kind: "qata-cov19", root: lvit.root });
  assert.deepEqual(
    (await readParquetFile(path.join(after.outDir, "samples.parquet"), { columns: ["id", "report"] })).toArray().map((r) => ({ ...r })),
    expected,
  );
  assert.deepEqual(await quarantineOf(after.outDir), await quarantineOf(before.outDir));
});
