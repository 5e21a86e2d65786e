import { test } from "node:test";
import assert from "node:assert/strict";
import { DataError, StageError, UsageError } from "../../src/errors.js";

test("StageError.of names the failing stage and keeps what the cause said about where and why", () => {
  const data = StageError.of(
    "embed",
    new DataError("sample s7 has no image bytes", { location: { file: "/w/samples.parquet", row: 7 }, hint: "rerun ingest" }),
  );
  assert.equal(data.stage, "embed");
  assert.equal(data.format(), "stage embed failed: /w/samples.parquet, row 7: sample s7 has no image bytes\n  hint: rerun ingest");
  assert.equal(data.exitCode, 1);

  assert.equal(StageError.of("guide", new UsageError("no such model folder")).exitCode, 2, "a usage problem stays exit 2");
  assert.equal(StageError.of("train", new TypeError("x is undefined")).format(), "stage train failed: x is undefined");

  const own = new StageError("prototypes", "no training row has a report");
  assert.equal(StageError.of("prototypes", own), own, "an error that already names its stage passes through");
  assert.equal(StageError.of("train", own).format(), "stage train failed: prototypes: no training row has a report");
});
