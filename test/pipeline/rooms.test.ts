/**
 * The import rules of the room layout (docs/pipelines.md): a stage's run module is its own room's
 * business, and the TensorFlow.js kernels do not depend on the network built from them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";

const SRC = path.resolve(import.meta.dirname, "..", "..", "src");
const STAGE_ROOMS = ["ingest", "embed", "prototypes", "guide", "filter", "train", "evaluate"];

/** Every relative import of every module under src/, as [importer, imported] paths relative to src/. */
function relativeImports(): [string, string][] {
  const out: [string, string][] = [];
  for (const entry of readdirSync(SRC, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith(".ts")) continue;
    const file = path.join(entry.parentPath, entry.name);
    for (const match of readFileSync(file, "utf8").matchAll(/(?:from|import\()\s*"(\.{1,2}\/[^"]+)"/g)) {
      const target = path.resolve(path.dirname(file), match[1]!).replace(/\.js$/, ".ts");
      out.push([path.relative(SRC, file), path.relative(SRC, target)]);
    }
  }
  return out;
}

const roomOf = (file: string) => file.split(path.sep)[0]!;

test("no module imports another stage's run module", () => {
  const imports = relativeImports();
  assert.ok(imports.length > 100, "the scan found the package's imports");
  const crossings = imports.filter(([from, to]) => STAGE_ROOMS.includes(roomOf(to)) && path.basename(to) === "run.ts" && roomOf(from) !== roomOf(to));
  assert.deepEqual(crossings, [], "a stage's run module is loaded by its own stage.ts only; share code through a shared room or the declarations (tables.ts)");
});

test("the kernels (src/tfjs, src/linalg) do not import the network (src/segmenter) or any stage", () => {
  const crossings = relativeImports().filter(
    ([from, to]) => ["tfjs", "linalg"].includes(roomOf(from)) && (roomOf(to) === "segmenter" || STAGE_ROOMS.includes(roomOf(to))),
  );
  assert.deepEqual(crossings, []);
});
