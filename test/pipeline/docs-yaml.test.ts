// The YAML in the README and docs/ stays true: every stage's params in a snippet parse against that
// stage's schema, and a snippet that is a whole pipeline (name, dataset, stages) resolves.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { parse, parseAllDocuments } from "yaml";
import { resolvePipeline } from "../../src/pipeline/spec.js";
import { STAGES } from "../../src/stages.js";

const repoRoot = path.resolve(import.meta.dirname, "../..");

test("pipeline YAML in the README and docs/ uses real stages and params", () => {
  const files = [
    "README.md",
    ...readdirSync(path.join(repoRoot, "docs"))
      .filter((f) => f.endsWith(".md"))
      .map((f) => path.join("docs", f)),
  ];
  const problems: string[] = [];
  let stagesChecked = 0;
  let pipelinesChecked = 0;
  for (const file of files) {
    const text = readFileSync(path.join(repoRoot, file), "utf8");
    for (const [, body] of text.matchAll(/```ya?ml\n([\s\S]*?)```/g)) {
      // Some blocks show alternatives one after another ("# or"): each alternative on its own.
      const docs = parseAllDocuments(body!.replace(/^# or\b.*$/gm, "---"));
      for (const doc of docs) {
        const value = doc.errors.length ? parse(body!, { uniqueKeys: false }) : doc.toJS();
        if (!value || typeof value !== "object" || !value.stages) continue;
        for (const [name, params] of Object.entries(value.stages as Record<string, unknown>)) {
          const stage = STAGES.get(name);
          if (!stage) {
            problems.push(`${file}: no stage named ${name}`);
            continue;
          }
          const parsed = stage.params.safeParse(params ?? {});
          stagesChecked++;
          if (!parsed.success) problems.push(`${file}: stages.${name}: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
        }
        if (value.name && value.dataset) {
          pipelinesChecked++;
          try {
            resolvePipeline(value, STAGES, { baseDir: repoRoot });
          } catch (error) {
            problems.push(`${file}: ${(error as Error).message}`);
          }
        }
      }
    }
  }
  assert.ok(stagesChecked >= 10 && pipelinesChecked >= 1, `checked ${stagesChecked} stage params, ${pipelinesChecked} whole pipelines`);
  assert.deepEqual(problems, []);
});
