import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Catalog } from "../../src/pipeline/catalog.js";
import { cli } from "../helpers/cli.js";

function scratch(): string {
  return mkdtempSync(path.join(tmpdir(), "prolearn-hardening-spec-"));
}

const DATASET = "dataset:\n  kind: kvasir-seg\n  root: data\n";

test("a YAML alias bomb is an invalid pipeline (exit 2), not an internal error", async () => {
  const dir = scratch();
  const file = path.join(dir, "bomb.yaml");
  const levels = ["a: &a [x, x, x, x, x, x, x, x, x]"];
  for (const [i, name] of ["b", "c", "d", "e", "f", "g"].entries()) {
    const previous = "abcdefg"[i]!;
    levels.push(`${name}: &${name} [${Array(9).fill(`*${previous}`).join(", ")}]`);
  }
  writeFileSync(file, `name: bomb\n${DATASET}stages: { ingest: {} }\n${levels.join("\n")}\n`);
  const result = await cli(["plan", file]);
  assert.equal(result.code, 2, result.stderr);
  assert.doesNotMatch(result.stderr, /internal error/);
  assert.match(result.stderr, /bomb\.yaml/);
  assert.match(result.stderr, /alias/i);
});

test("a workdir that is an existing file is named (exit 2)", async () => {
  const dir = scratch();
  writeFileSync(path.join(dir, "not-a-folder"), "x");
  const file = path.join(dir, "p.yaml");
  writeFileSync(file, `name: p\nworkdir: not-a-folder\n${DATASET}stages: { ingest: {} }\n`);
  const result = await cli(["run", file]);
  assert.equal(result.code, 2, result.stderr);
  assert.doesNotMatch(result.stderr, /internal error/);
  assert.match(result.stderr, /p\.yaml:2: workdir: workdir .*not-a-folder exists and is not a folder/);
});

test("a workdir inside the dataset root is refused before ingest reads its own files (exit 2)", async () => {
  const dir = scratch();
  mkdirSync(path.join(dir, "data"));
  const file = path.join(dir, "p.yaml");
  writeFileSync(file, `name: p\nworkdir: data/.work\n${DATASET}stages: { ingest: {} }\n`);
  const explicit = await cli(["plan", file]);
  assert.equal(explicit.code, 2, explicit.stderr);
  assert.match(explicit.stderr, /p\.yaml:2: workdir: workdir .*data\/\.work is inside the dataset root .*data/);
  // The default workdir (.prolearn next to the file) of a pipeline file kept in the dataset root.
  const inRoot = path.join(dir, "data", "p.yaml");
  writeFileSync(inRoot, "name: p\ndataset:\n  kind: kvasir-seg\n  root: .\nstages: { ingest: {} }\n");
  const implicit = await cli(["plan", inRoot]);
  assert.equal(implicit.code, 2, implicit.stderr);
  assert.match(implicit.stderr, /the default: \.prolearn next to the pipeline file\) is inside the dataset root/);
});

test("--set __proto__.x=1 is refused and leaves Object.prototype alone", async () => {
  const dir = scratch();
  const file = path.join(dir, "p.yaml");
  writeFileSync(file, `name: p\n${DATASET}stages: { ingest: {} }\n`);
  for (const key of ["__proto__.polluted", "stages.__proto__.polluted", "constructor.prototype.polluted"]) {
    const result = await cli(["plan", file, "--set", `${key}=1`]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, new RegExp(`--set ${key.replace(/\./g, "\\.")}: key "(__proto__|constructor)" is not allowed`));
    assert.equal(({} as Record<string, unknown>).polluted, undefined, `${key} polluted Object.prototype`);
  }
});

test("64k unknown keys are reported in linear time, naming the first ones with their lines", async () => {
  const dir = scratch();
  const file = path.join(dir, "many.yaml");
  const keys = Array.from({ length: 65_536 }, (_, i) => `unknown_${i}: ${i}`);
  writeFileSync(file, `name: p\n${DATASET}stages: { ingest: {} }\n${keys.join("\n")}\n`);
  const started = performance.now();
  const result = await cli(["plan", file]);
  const seconds = (performance.now() - started) / 1000;
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /65536 problems/);
  assert.match(result.stderr, /many\.yaml:6: unknown_0: unknown key "unknown_0"/);
  assert.match(result.stderr, /\.\.\. and 65486 more/);
  // Quadratic (the yaml package's duplicate-key check, and a key search per problem) this took
  // 225-255 s on a 2-core machine; linear, about 7 s.
  assert.ok(seconds < 30, `took ${seconds.toFixed(1)} s`);
});

test("artifacts export to an existing file names the path (exit 2)", async () => {
  const dir = scratch();
  const workdir = path.join(dir, "work");
  new Catalog(workdir).close();
  const target = path.join(dir, "export.npy");
  writeFileSync(target, "x");
  const result = await cli(["artifacts", "export", "anything@1", target, "--workdir", workdir]);
  assert.equal(result.code, 2, result.stderr);
  assert.doesNotMatch(result.stderr, /internal error/);
  assert.match(result.stderr, /export folder .*export\.npy: it is a file, not a folder/);
  const under = await cli(["artifacts", "export", "anything@1", path.join(target, "sub"), "--workdir", workdir]);
  assert.equal(under.code, 2, under.stderr);
  assert.match(under.stderr, /export folder .*export\.npy\/sub: .*export\.npy is a file, not a folder/);
});
