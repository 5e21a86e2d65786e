import assert from "node:assert/strict";
import { test } from "node:test";
import { matchKey } from "../../src/ingest/scan.js";
import { normalizeReport, splitFromFileName } from "../../src/ingest/reports.js";
import { parseDelimited } from "../../src/io/csv.js";
import { binarizeMask } from "../../src/ingest/decode.js";
import { availableSubset, seededSplit } from "../../src/ingest/split.js";

test("normalizeReport strips LViT padding and folds whitespace, keeping wording and typos", () => {
  assert.equal(normalizeReport("Unilateral pulmonary infection, one infected area, midlle left lung. EOF XXX XXX"), "Unilateral pulmonary infection, one infected area, midlle left lung.");
  assert.equal(normalizeReport("one infected areas,  upper  left lung.."), "one infected areas, upper left lung.");
  assert.equal(normalizeReport("  a\tb \n c . "), "a b c.");
});

test("CSV parsing handles quotes, ';' and BOM; file names give splits; match keys ignore case, extension and mask_", () => {
  assert.deepEqual(parseDelimited('\uFEFFImage,Description\r\nmask_a.png,"x, y ""z"""\n', ","), [["Image", "Description"], ["mask_a.png", 'x, y "z"']]);
  assert.deepEqual(parseDelimited("Image;text\nbjorke_1.png;a, b.\n", ";"), [["Image", "text"], ["bjorke_1.png", "a, b."]]);
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
