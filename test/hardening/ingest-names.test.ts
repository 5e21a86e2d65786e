// Issue #16 item 6, tried again: names and report text that hold characters a reader cannot
// see, or that no report has (bidi overrides, zero-width spaces, C1 controls, line separators,
// NUL bytes). Each is set aside with its reason and shown escaped in the detail.
import assert from "node:assert/strict";
import { copyFileSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { readParquetFile } from "../../src/io/parquet.js";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { runIngest, scratchDir } from "../ingest/helpers.js";

async function quarantineOf(outDir: string): Promise<{ source: string; reason: string; detail: string }[]> {
  return (await readParquetFile(path.join(outDir, "quarantine.parquet"))).toArray().map((r) => ({ ...(r as { source: string; reason: string; detail: string }) }));
}

async function idsOf(outDir: string): Promise<string[]> {
  return (await readParquetFile(path.join(outDir, "samples.parquet"), { columns: ["id"] })).toArray().map((r) => (r as { id: string }).id);
}

test("file names and report keys with bidi overrides, zero-width spaces, C1 controls or line separators are invalid-id, shown escaped", async () => {
  const dir = scratchDir("hard-names");
  const fx = await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: path.join(dir, "data"), n: 8, seed: 6, size: 32 });
  const root = fx.root;
  const ids = readdirSync(path.join(root, "images")).sort().map((n) => n.replace(/\.png$/, ""));
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
    for (const source of [`images/${name}.png`, `reports/${name}.txt`]) assert.ok(quarantine.some((q) => q.reason === "invalid-id" && q.source === source), `${JSON.stringify(source)}: ${JSON.stringify(quarantine)}`);
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
  assert.deepEqual(rows.map((q) => q.source), [`text/${csvName}`]);
  assert.match(rows[0]!.detail, /line 2: image name ".*\\u200B\.png" holds a control or invisible character/);
});
