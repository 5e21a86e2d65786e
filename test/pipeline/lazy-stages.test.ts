/**
 * The stage registry holds definitions only: loading it (and so `prolearn plan`, `status`, or
 * `run` before a stage executes) must not load TensorFlow.js, ONNX Runtime, sharp, Arrow or
 * Parquet. Each stage imports its implementation when it runs (see docs/pipelines.md).
 *
 * A child process records every module it loads: an ESM resolve hook (module.register) appends
 * each resolved URL to a file, and an exit handler adds the CommonJS cache (packages required
 * from inside CommonJS code never reach the ESM hook).
 */
import { test, describe, before } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { writeTinyBiomedclipFolder } from "../embed/tiny-biomedclip.js";

const ROOT = path.resolve(import.meta.dirname, "..", "..");
const CLI = path.join(ROOT, "src", "cli", "main.ts");

/** Packages only a running stage needs (each costs 0.1 to 0.3 s to load). */
const HEAVY = ["@tensorflow/tfjs-core", "@tensorflow/tfjs-backend-cpu", "onnxruntime-node", "sharp", "parquet-wasm", "apache-arrow", "@huggingface/tokenizers"];

const HOOK = `
import { appendFileSync } from "node:fs";
let file;
export function initialize(data) { file = data.file; }
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  appendFileSync(file, result.url + "\\n");
  return result;
}`;

const RECORDER = `
import { register, createRequire } from "node:module";
import { appendFileSync } from "node:fs";
const file = process.env.PROLEARN_LOAD_TRACE;
register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOK)}`)}, { data: { file } });
process.on("exit", () => {
  const cache = createRequire(process.cwd() + "/").cache;
  appendFileSync(file, Object.keys(cache).map((f) => "cjs:" + f + "\\n").join(""));
});`;

/** Runs node with tsx and the recorder; returns what it printed and the heavy packages it loaded. */
async function loadedBy(args: string[], traceFile: string): Promise<{ stdout: string; heavy: string[] }> {
  writeFileSync(traceFile, "");
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--import", "tsx", "--import", `data:text/javascript,${encodeURIComponent(RECORDER)}`, ...args],
    {
      cwd: ROOT,
      env: { ...process.env, PROLEARN_LOAD_TRACE: traceFile },
      maxBuffer: 16 * 1024 * 1024,
    },
  );
  const loaded = readFileSync(traceFile, "utf8").split("\n").filter(Boolean);
  assert.ok(
    loaded.some((line) => line.includes("/src/pipeline/engine.ts") || line.includes("/src/guide/") || line.includes("/src/segmenter/")),
    "the recorder saw no module of this package",
  );
  const heavy = HEAVY.filter((pkg) => loaded.some((line) => line.includes(`/node_modules/${pkg}/`)));
  return { stdout, heavy };
}

describe("stage definitions load without their implementations", () => {
  let dir: string;
  let pipelineFile: string;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "prolearn-lazy-"));
    await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 12, seed: 3, size: 32 });
    // BiomedCLIP in guide and embed, so their resources() (the model folder digest) run at plan time too.
    await writeTinyBiomedclipFolder(path.join(dir, "biomedclip"));
    pipelineFile = path.join(dir, "pipeline.yaml");
    writeFileSync(
      pipelineFile,
      [
        "name: lazy",
        "dataset: { kind: qata-cov19, root: data, layout: sgseg, textAvailability: 0.5, seed: 3 }",
        "stages:",
        "  ingest: {}",
        "  guide: { imageSize: 32, encoder: biomedclip, model: biomedclip }",
        "  filter: {}",
        "  embed: { encoder: biomedclip, model: biomedclip }",
        "  prototypes: {}",
        "  train: { imageSize: 32 }",
        "  evaluate: {}",
        "",
      ].join("\n"),
    );
  });

  test("`prolearn plan` loads none of the heavy packages", async () => {
    const { stdout, heavy } = await loadedBy([CLI, "plan", pipelineFile, "--json"], path.join(dir, "plan.trace"));
    const plan = JSON.parse(stdout) as { stages: { name: string }[] };
    assert.deepEqual(
      plan.stages.map((s) => s.name),
      ["ingest", "guide", "filter", "embed", "prototypes", "train", "evaluate"],
    );
    assert.deepEqual(heavy, []);
  });

  test("every stage's resources() (the digests plan computes once upstream outputs are cached) loads none of them", async () => {
    const src = (file: string) => JSON.stringify(path.join(ROOT, "src", file));
    const script = [
      `const { STAGES } = await import(${src("stages.ts")});`,
      `const { loadPipelineFile } = await import(${src("pipeline/spec.ts")});`,
      `const { FileDigester } = await import(${src("pipeline/file-digest.ts")});`,
      `const pipeline = loadPipelineFile(${JSON.stringify(pipelineFile)}, STAGES);`,
      "const resources = {};",
      "for (const [name, stage] of STAGES) if (stage.resources) resources[name] = await stage.resources(pipeline, pipeline.stages[name], { digester: new FileDigester() });",
      "console.log(JSON.stringify(resources));",
    ].join("\n");
    const { stdout, heavy } = await loadedBy(["--input-type=module", "-e", script], path.join(dir, "resources.trace"));
    const resources = JSON.parse(stdout) as Record<string, Record<string, string>>;
    assert.deepEqual(Object.keys(resources.ingest!), ["dataset"]);
    assert.deepEqual(Object.keys(resources.guide!), ["model"]);
    assert.deepEqual(Object.keys(resources.embed!), ["model"]);
    assert.equal(resources.guide!.model, resources.embed!.model);
    assert.deepEqual(heavy, []);
  });

  test("the run and status commands' modules load none of them", async () => {
    for (const command of ["run", "status"]) {
      const { heavy } = await loadedBy([CLI, command, "--help"], path.join(dir, `${command}.trace`));
      assert.deepEqual(heavy, [], `prolearn ${command}`);
    }
  });

  test("the recorder does see a stage implementation's packages", async () => {
    const { heavy } = await loadedBy(
      ["--input-type=module", "-e", `await import(${JSON.stringify(path.join(ROOT, "src", "guide", "run.ts"))})`],
      path.join(dir, "run.trace"),
    );
    assert.ok(heavy.includes("@tensorflow/tfjs-core") && heavy.includes("sharp"), `loaded: ${heavy.join(", ")}`);
  });
});
