import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadPipelineFile, resolvePipeline, definePipeline } from "../../src/pipeline/spec.js";
import { PipelineSpecError } from "../../src/errors.js";
import { TEST_STAGES } from "./test-stages.js";

function writePipeline(text: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-spec-"));
  const file = path.join(dir, "p.yaml");
  writeFileSync(file, text);
  return file;
}

function problems(fn: () => unknown): PipelineSpecError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof PipelineSpecError, `expected PipelineSpecError, got ${error}`);
    return error;
  }
  assert.fail("expected the pipeline to be rejected");
}

describe("pipeline spec", () => {
  test("resolves defaults and relative paths from the pipeline file", () => {
    const file = writePipeline(
      "name: p1\ndataset:\n  kind: kvasir-seg\n  root: ./data\n  reports: ./reports\nstages:\n  numbers: {}\n  scale: { factor: 4 }\n",
    );
    const p = loadPipelineFile(file, TEST_STAGES);
    const dir = path.dirname(file);
    assert.equal(p.workdir, path.join(dir, ".prolearn"));
    assert.equal(p.dataset.root, path.join(dir, "data"));
    assert.equal(p.dataset.reports, path.join(dir, "reports"));
    assert.equal(p.dataset.layout, "auto");
    assert.equal(p.dataset.textAvailability, 1);
    assert.deepEqual(p.stages, { numbers: { pattern: ".txt" }, scale: { factor: 4, slowMs: 0 } });
  });

  test("a typo, a wrong type and a missing field are each reported with their line", () => {
    const file = writePipeline(
      ["name: p1", "dataset:", "  kind: qata-cov19", "  textAvailabilty: 0.5", '  seed: "seven"', "stages:", "  numbers: {}", ""].join("\n"),
    );
    const error = problems(() => loadPipelineFile(file, TEST_STAGES));
    const byKey = Object.fromEntries(error.issues.map((i) => [i.keyPath, i]));
    assert.equal(byKey["dataset.textAvailabilty"]!.line, 4);
    assert.match(byKey["dataset.textAvailabilty"]!.message, /unknown key/);
    assert.match(byKey["dataset.textAvailabilty"]!.hint!, /did you mean "textAvailability"/);
    assert.equal(byKey["dataset.seed"]!.line, 5);
    assert.match(byKey["dataset.seed"]!.message, /number/);
    assert.match(byKey["dataset.root"]!.message, /missing required key/);
    assert.equal(byKey["dataset.root"]!.line, 2, "a missing key points at its parent");
    const text = error.format();
    assert.match(text, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:4: dataset.textAvailabilty`));
  });

  test("unknown stages and stage params get suggestions; missing upstream stages are named", () => {
    const file = writePipeline("name: p1\ndataset: { kind: qata-cov19, root: d }\nstages:\n  numbrs: {}\n  scale: { factr: 2 }\n");
    const error = problems(() => loadPipelineFile(file, TEST_STAGES));
    const hints = error.issues.map((i) => `${i.keyPath}@${i.line}: ${i.hint}`);
    assert.ok(hints.includes('stages.numbrs@4: did you mean "numbers"?'), hints.join("\n"));
    assert.ok(hints.includes('stages.scale.factr@5: did you mean "factor"?'), hints.join("\n"));

    const missing = writePipeline("name: p1\ndataset: { kind: qata-cov19, root: d }\nstages:\n  scale: {}\n");
    const e2 = problems(() => loadPipelineFile(missing, TEST_STAGES));
    assert.match(e2.issues[0]!.message, /needs stage numbers/);
  });

  test("YAML syntax errors name the line", () => {
    const file = writePipeline("name: p1\ndataset:\n  kind: [unclosed\n");
    const error = problems(() => loadPipelineFile(file, TEST_STAGES));
    assert.match(error.issues[0]!.message, /YAML syntax/);
    assert.ok(error.issues[0]!.line! >= 3);
  });

  test("a typed object from definePipeline validates the same way", () => {
    const p = resolvePipeline(definePipeline({ name: "ts", dataset: { kind: "kvasir-seg", root: "/data/kvasir" }, stages: { numbers: {} } }), TEST_STAGES, {
      baseDir: "/proj",
    });
    assert.equal(p.workdir, "/proj/.prolearn");
    assert.equal(p.dataset.root, "/data/kvasir");
    const error = problems(() => resolvePipeline({ name: "ts", dataset: { kind: "kvasir", root: "x" }, stages: {} }, TEST_STAGES));
    assert.equal(error.issues[0]!.keyPath, "dataset.kind");
  });

  test("schedules accept a cron string or an object", () => {
    const a = resolvePipeline({ name: "s", dataset: { kind: "kvasir-seg", root: "x" }, stages: {}, schedule: "*/5 * * * *" }, TEST_STAGES);
    assert.deepEqual(a.schedule, { cron: "*/5 * * * *", timezone: "UTC", overlap: "skip" });
    const b = resolvePipeline(
      { name: "s", dataset: { kind: "kvasir-seg", root: "x" }, stages: {}, schedule: { cron: "0 3 * * *", timezone: "Europe/Paris" } },
      TEST_STAGES,
    );
    assert.deepEqual(b.schedule, { cron: "0 3 * * *", timezone: "Europe/Paris", overlap: "skip" });
  });
});
