import assert from "node:assert/strict";
import { test } from "node:test";
import { matchKey } from "../../src/ingest/scan.js";
import { normalizeReport, splitFromFileName } from "../../src/ingest/reports.js";
import { parseDelimited } from "../../src/io/csv.js";
import { binarizeMask } from "../../src/ingest/decode.js";
import { availableSubset, seededSplit } from "../../src/ingest/split.js";
import { FingerprintBuilder, formatFingerprint } from "../../src/ingest/fingerprint.js";
import { quarantineEntry, type QuarantineReason, type QuarantineScope } from "../../src/ingest/reasons.js";

test("normalizeReport strips LViT padding and folds whitespace, keeping wording and typos", () => {
  assert.equal(
    normalizeReport("Unilateral pulmonary infection, one infected area, midlle left lung. EOF XXX XXX"),
    "Unilateral pulmonary infection, one infected area, midlle left lung.",
  );
  assert.equal(normalizeReport("one infected areas,  upper  left lung.."), "one infected areas, upper left lung.");
  assert.equal(normalizeReport("  a\tb \n c . "), "a b c.");
});

test("CSV parsing handles quotes, ';' and BOM; file names give splits; match keys ignore case, extension and mask_", () => {
  assert.deepEqual(parseDelimited('\uFEFFImage,Description\r\nmask_a.png,"x, y ""z"""\n', ","), [
    ["Image", "Description"],
    ["mask_a.png", 'x, y "z"'],
  ]);
  assert.deepEqual(parseDelimited("Image;text\nbjorke_1.png;a, b.\n", ";"), [
    ["Image", "text"],
    ["bjorke_1.png", "a, b."],
  ]);
  assert.throws(() => parseDelimited('a,"b\n', ","));
  assert.equal(splitFromFileName("Train_text_MosMedData+ 1(in).csv"), "train");
  assert.equal(splitFromFileName("Val_text.xlsx"), "val");
  assert.equal(splitFromFileName("Train_Val_text.xlsx"), undefined);
  assert.equal(splitFromFileName("test.json"), "test");
  assert.equal(matchKey("mask_sub-S08047_ses-E16280_run-1_bp-chest_vp-ap_dx.png"), "sub-s08047_ses-e16280_run-1_bp-chest_vp-ap_dx");
  assert.equal(matchKey("cju0qkwl35piu0993l0dewei2.jpg"), "cju0qkwl35piu0993l0dewei2");
});

test("binarisation: > threshold is foreground, 0/1 masks stay labels, ambiguous pixels are counted", () => {
  const params = { maskThreshold: 127, maskAmbiguousFraction: 0.01 };
  assert.deepEqual([...binarizeMask(new Uint8Array([0, 3, 250, 255]), params).bits], [0, 0, 1, 1]);
  assert.deepEqual([...binarizeMask(new Uint8Array([0, 1, 1, 0]), params).bits], [0, 1, 1, 0]);
  assert.equal(binarizeMask(new Uint8Array([0, 100, 128, 255]), params).ambiguousFraction, 0.5);
});

test("seeded splits are exact and independent of input order; availability subsets nest", () => {
  const ids = Array.from({ length: 100 }, (_, i) => `id${i}`);
  const a = seededSplit(ids, 1, { train: 0.8, val: 0.1 });
  const b = seededSplit([...ids].reverse(), 1, { train: 0.8, val: 0.1 });
  assert.deepEqual([...a].sort(), [...b].sort());
  assert.equal([...a.values()].filter((s) => s === "train").length, 80);
  const small = availableSubset(ids, 3, 0.05);
  const large = availableSubset(ids, 3, 0.3);
  assert.equal(small.size, 5);
  for (const id of small) assert.ok(large.has(id));
});

test("the ingest log keeps images set aside, all inputs set aside and flagged-but-kept samples apart", () => {
  const builder = new FingerprintBuilder();
  for (let i = 0; i < 3; i++)
    builder.add({
      split: "train",
      width: 64,
      height: 64,
      report: i ? "x" : null,
      report_available: i === 1,
      mask_empty: i === 2,
      mask_coverage: i === 2 ? 0 : 0.1,
      image_format: "png",
    });
  const entry = (reason: QuarantineReason, scope: QuarantineScope) => quarantineEntry({ source: `s-${reason}`, reason, detail: "", scope });
  const quarantine = [
    entry("unreadable-image", "image"),
    entry("duplicate-id", "image"),
    entry("malformed-report-file", "report"),
    entry("empty-mask", "image"),
  ];
  assert.equal(quarantine[3]!.kept, true, "empty-mask entries are kept by default");
  const fingerprint = builder.build(
    {
      dataset: "qata-cov19",
      layout: "sgseg",
      layoutReason: "",
      splitRule: "folders",
      textAvailability: 0.5,
      seed: 1,
      found: 5,
      imageOnly: 1,
      orphanReports: 0,
      identicalCopies: 0,
    },
    quarantine,
  );
  const lines = formatFingerprint(fingerprint).split("\n");
  assert.ok(lines.includes("found 5 images = ingested 3 + set aside 2; image-only 1; orphan reports 0"), lines.join("\n"));
  assert.ok(
    lines.includes("quarantine, set aside: 3 inputs (2 images, 1 other): duplicate-id 1, malformed-report-file 1, unreadable-image 1"),
    lines.join("\n"),
  );
  assert.ok(lines.includes("quarantine, kept and flagged: 1 sample: empty-mask 1"), lines.join("\n"));
});
