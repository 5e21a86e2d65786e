import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Table, vectorFromArray, Utf8, Bool } from "apache-arrow";
import { ArtifactError, DataError } from "../../src/errors.js";
import { writeParquetFile, readParquetFile } from "../../src/io/parquet.js";
import { embeddingVector } from "../../src/io/tables.js";
import type { StageContext } from "../../src/pipeline/stage.js";
import type { ResolvedPipeline } from "../../src/pipeline/spec.js";
import { prototypesParams, prototypesStage, type PrototypesParams } from "../../src/prototypes/stage.js";
import { ArtifactRegistry, decodeNpy } from "../../src/prototypes/registry.js";
import { PrototypeSpace } from "../../src/prototypes/psa.js";
import { readPrototypesFile } from "../../src/prototypes/artifact.js";
import { syntheticPairs } from "./fixtures.js";
import { skipUnless } from "../helpers/skip.js";
import { adjustedRandIndex } from "../../src/prototypes/ari.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const DIM = 32;

async function embedFixture(
  dir: string,
  seed: number,
  textAvailability = 1,
  zeroTextRows: number[] = [],
  options: { uninformativeImages?: boolean } = {},
): Promise<string> {
  const data = syntheticPairs({ groups: 4, perGroup: 40, dim: DIM, seed, splits: ["train", "train", "train", "val", "test"] });
  for (const row of zeroTextRows) data.texts.fill(0, row * DIM, (row + 1) * DIM);
  // Image embeddings that say nothing about their report: PSA can only retrieve noise.
  if (options.uninformativeImages) data.images.set(syntheticPairs({ groups: 1, perGroup: 160, dim: DIM, seed: seed + 1000, noise: 1 }).images);
  const available = data.split.map((s, i) => s !== "train" || i % Math.round(1 / textAvailability) === 0);
  const valid = Uint8Array.from(available, (a) => (a ? 1 : 0));
  const table = new Table({
    id: vectorFromArray(data.ids, new Utf8()),
    split: vectorFromArray(data.split, new Utf8()),
    report_available: vectorFromArray(available, new Bool()),
    image_embedding: embeddingVector(data.images, DIM),
    text_embedding: embeddingVector(data.texts, DIM, valid),
  });
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "embeddings.parquet");
  await writeParquetFile(file, table);
  writeFileSync(path.join(dir, "encoder.json"), JSON.stringify({ id: "test-encoder", dim: DIM, digest: "e".repeat(64), preprocessing: {} }));
  return dir;
}

function context(
  workdir: string,
  embedDir: string,
  outDir: string,
  params: Partial<PrototypesParams> = {},
): StageContext<PrototypesParams> & { logs: string[] } {
  const logs: string[] = [];
  const pipeline = {
    name: "unit",
    baseDir: workdir,
    workdir,
    dataset: { kind: "qata-cov19", root: workdir, layout: "auto", reportKey: "p6", textAvailability: 1, seed: 42 },
    stages: {},
  } as unknown as ResolvedPipeline;
  mkdirSync(outDir, { recursive: true });
  return {
    stage: "prototypes",
    version: prototypesStage.version,
    pipeline,
    params: prototypesParams.parse({ k: 4, ...params }),
    inputs: {
      embed: {
        stage: "embed",
        digest: `embed-${embedDir.length}`,
        dir: embedDir,
        files: { "embeddings.parquet": path.join(embedDir, "embeddings.parquet"), "encoder.json": path.join(embedDir, "encoder.json") },
        summary: {},
      },
    },
    outDir,
    tmpDir: os.tmpdir(),
    rowCache: () => ({ get: () => undefined, put: () => undefined }),
    resources: {},
    emit: () => undefined,
    log: (message) => void logs.push(message),
    warn: (code, message, figures) => void logs.push(`warning ${code}: ${message} ${JSON.stringify(figures ?? {})}`),
    signal: new AbortController().signal,
    logs,
  };
}

/** The fields of the prototypes stage's summary that these tests read. */
interface PrototypesSummary {
  emptyTexts: number;
  pairedSamples: number;
  usefulness: { passed: boolean; marginOverMean: number; marginOverRandom: number; ownReportAuc: number; shuffled: { ownReportAuc: number } };
  artifact: { version: number; isNew: boolean; digest: string };
}
test("prototypes stage: outputs per the data contract, lineage manifest, usefulness margins, published as version 1", async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "prolearn-proto-stage-"));
  const embedDir = await embedFixture(path.join(root, "embed"), 21, 1, [0]);
  const ctx = context(path.join(root, "work"), embedDir, path.join(root, "out1"));
  const summary = (await prototypesStage.run!(ctx)) as unknown as PrototypesSummary;
  assert.equal(summary.emptyTexts, 1, "an all-zero text embedding is left out, not fed to cosine HDBSCAN");
  assert.equal(summary.pairedSamples, 96 - 1);
  for (const f of prototypesStage.outputs) assert.ok(existsSync(path.join(ctx.outDir, f)), f);
  const table = await readParquetFile(path.join(ctx.outDir, "prototypes.parquet"));
  assert.deepEqual(
    table.schema.fields.map((f) => f.name),
    ["prototype_id", "cluster", "subcluster", "sample_id", "size", "query", "response"],
  );
  const assignments = await readParquetFile(path.join(ctx.outDir, "assignments.parquet"));
  assert.deepEqual(
    assignments.schema.fields.map((f) => f.name),
    ["id", "cluster", "probability", "subcluster"],
  );
  assert.equal(assignments.numRows, summary.pairedSamples);
  const manifest = JSON.parse(readFileSync(path.join(ctx.outDir, "manifest.json"), "utf8"));
  assert.equal(manifest.lineage.encoder.digest, "e".repeat(64));
  assert.equal(manifest.lineage.seed, 42);
  assert.equal(manifest.lineage.params.minClusterSize, 5);
  assert.equal(manifest.lineage.upstream.embed, ctx.inputs.embed!.digest);
  assert.match(manifest.lineage.packageVersion, /^\d+\.\d+\.\d+/);
  assert.ok(summary.usefulness.passed, JSON.stringify(summary.usefulness));
  assert.ok(summary.usefulness.marginOverMean > 0 && summary.usefulness.marginOverRandom > 0);
  for (const key of ["samples", "ownReportAuc", "centredCosine", "marginOverMean", "marginOverRandom", "passed"]) assert.ok(key in summary.usefulness, key);
  assert.ok(summary.usefulness.ownReportAuc > summary.usefulness.shuffled.ownReportAuc + 0.1, JSON.stringify(summary.usefulness));
  assert.ok(
    ctx.logs.some((l) => /own-report AUC 0\.\d{4} \(shuffled prototypes 0\.\d{4}.*centred cosine/.test(l)),
    "the stage prints AUC and centred cosine with their shuffled baselines",
  );
  assert.equal(summary.artifact.version, 1);
  assert.equal(summary.artifact.isNew, true);

  // Same inputs again (a fresh outDir, a later created time): same digest, no new version.
  const again = (await prototypesStage.run!(context(path.join(root, "work"), embedDir, path.join(root, "out2")))) as unknown as PrototypesSummary;
  assert.equal(again.artifact.digest, summary.artifact.digest);
  assert.equal(again.artifact.version, 1);
  assert.equal(again.artifact.isNew, false);

  // Different params: new content, version 2.
  const changed = (await prototypesStage.run!(context(path.join(root, "work"), embedDir, path.join(root, "out3"), { k: 2 }))) as unknown as PrototypesSummary;
  assert.notEqual(changed.artifact.digest, summary.artifact.digest);
  assert.equal(changed.artifact.version, 2);

  const registry = ArtifactRegistry.open(path.join(root, "work"));
  try {
    assert.deepEqual(
      registry.list("unit").map((v) => v.version),
      [1, 2],
    );
    const v1 = registry.resolve("unit@1");
    assert.ok(v1.path.startsWith(path.join(root, "work", "artifacts", "prototypes")));
    assert.equal(path.basename(v1.path), v1.digest);
    assert.equal(statSync(path.join(v1.path, "prototypes.parquet")).mode & 0o222, 0, "published files are read-only");
    assert.equal(registry.resolve("unit").version, 2);
    assert.equal(registry.resolve(v1.digest.slice(0, 10)).version, 1);
    assert.throws(() => registry.resolve("unit@9"), ArtifactError);
  } finally {
    registry.close();
  }
});

test("registry: aliases move with history; verify and load detect tampering; export round-trips through .npy", async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "prolearn-proto-reg-"));
  const embedDir = await embedFixture(path.join(root, "embed"), 31);
  const workdir = path.join(root, "work");
  await prototypesStage.run!(context(workdir, embedDir, path.join(root, "a")));
  await prototypesStage.run!(context(workdir, embedDir, path.join(root, "b"), { k: 3 }));
  const registry = ArtifactRegistry.open(workdir);
  try {
    const first = registry.promote("unit@1", "production");
    assert.equal(first.previousVersion, null);
    const moved = registry.promote("unit@2", "production");
    assert.equal(moved.previousVersion, 1);
    registry.promote("unit@1", "staging");
    assert.equal(registry.resolve("unit@production").version, 2);
    assert.deepEqual(
      registry.aliasHistory("unit", "production").map((e) => [e.previousVersion, e.version]),
      [
        [null, 1],
        [1, 2],
      ],
    );
    assert.deepEqual(registry.resolve("unit@2").aliases, ["production"]);
    assert.throws(() => registry.promote("unit@1", "latest"), /not allowed/);

    // Export, then read Q.npy / R.npy back and compare with the Parquet prototypes.
    const exportDir = path.join(root, "export");
    const exported = await registry.export("unit@production", exportDir);
    assert.deepEqual(exported.files.sort(), ["Q.npy", "R.npy", "manifest.json", "prototypes.parquet"]);
    const protos = await readPrototypesFile(path.join(exportDir, "prototypes.parquet"));
    const q = decodeNpy(readFileSync(path.join(exportDir, "Q.npy")));
    const r = decodeNpy(readFileSync(path.join(exportDir, "R.npy")));
    assert.deepEqual(q.shape, [protos.count, protos.dim]);
    assert.deepEqual(Array.from(q.values), Array.from(protos.queries));
    assert.deepEqual(Array.from(r.values), Array.from(protos.responses));
    const npyHeader = readFileSync(path.join(exportDir, "Q.npy")).subarray(0, 128).toString("latin1");
    assert.ok(npyHeader.startsWith("\x93NUMPY\x01\x00") && npyHeader.includes("'descr': '<f4'"));
    assert.equal((10 + readFileSync(path.join(exportDir, "Q.npy")).readUInt16LE(8)) % 64, 0, "header padded to 64 bytes");
    await assert.rejects(registry.export("unit@1", exportDir), /not empty/);

    // Tamper with version 1's Parquet file: verify names it, loading fails.
    const v1 = registry.resolve("unit@1");
    assert.ok((await registry.verify()).every((r) => r.ok));
    const file = path.join(v1.path, "prototypes.parquet");
    chmodSync(v1.path, 0o755);
    chmodSync(file, 0o644);
    const bytes = readFileSync(file);
    bytes[bytes.length - 100] ^= 0xff;
    writeFileSync(file, bytes);
    const [report] = await registry.verify("unit@1");
    assert.equal(report!.ok, false);
    assert.ok(
      report!.problems.some((p) => p.startsWith("prototypes.parquet: sha256")),
      report!.problems.join("; "),
    );
    await assert.rejects(PrototypeSpace.load(v1.path), ArtifactError);
    await assert.rejects(registry.export("unit@1", path.join(root, "export2")), ArtifactError);
    // Republishing the same content refuses to reuse (or overwrite) the tampered copy.
    await assert.rejects(prototypesStage.run!(context(workdir, embedDir, path.join(root, "again"))), /was tampered with/);
    // Untouched version 2 still loads.
    const space = await PrototypeSpace.load(registry.resolve("unit@2").path);
    assert.equal(space.dim, DIM);

    // Manifest edits are caught too.
    const v2 = registry.resolve("unit@2");
    chmodSync(v2.path, 0o755);
    chmodSync(path.join(v2.path, "manifest.json"), 0o644);
    const manifest = JSON.parse(readFileSync(path.join(v2.path, "manifest.json"), "utf8"));
    manifest.lineage.seed = 1;
    writeFileSync(path.join(v2.path, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
    const [report2] = await registry.verify("unit@2");
    assert.ok(
      report2!.problems.some((p) => p.includes("manifest edited")),
      report2!.problems.join("; "),
    );
  } finally {
    registry.close();
  }

  // The CLI: verify exits 1 and names the tampered version; list shows aliases.
  const cli = (args: string[]) =>
    spawnSync(process.execPath, ["--import", "tsx", path.join(repoRoot, "src/cli/main.ts"), ...args], { cwd: repoRoot, encoding: "utf8" });
  const verify = cli(["artifacts", "verify", "--workdir", workdir]);
  assert.equal(verify.status, 1, verify.stderr);
  assert.match(verify.stdout, /TAMPERED unit@1/);
  const list = cli(["artifacts", "list", "--workdir", workdir]);
  assert.equal(list.status, 0, list.stderr);
  assert.match(list.stdout, /unit@2 .*\[production\]/);
  // Like every other command, it takes a pipeline file: that pipeline's name, in its workdir.
  const pipelineFile = path.join(root, "unit.yaml");
  writeFileSync(pipelineFile, `name: unit\nworkdir: ${JSON.stringify(workdir)}\ndataset: { kind: qata-cov19, root: data }\nstages: { ingest: {} }\n`);
  const byFile = cli(["artifacts", "list", pipelineFile]);
  assert.equal(byFile.status, 0, byFile.stderr);
  assert.match(byFile.stdout, /unit@2 .*\[production\]/);
  const unknown = cli(["artifacts", "list", "nope", "--workdir", workdir]);
  assert.equal(unknown.status, 0, unknown.stderr);
  assert.match(unknown.stderr, /no artifacts named "nope" registered in .* \(registered: unit\)/);
  const mistyped = path.join(workdir, "no-such-workdir");
  const missing = cli(["artifacts", "list", "--workdir", mistyped]);
  assert.equal(missing.status, 2, missing.stderr);
  assert.match(missing.stderr, /no catalog in .*no-such-workdir/);
  assert.equal(existsSync(mistyped), false, "a read-only command creates no workdir");
});

test("onUseless: fail stops before publishing when PSA cannot find the reports; warn publishes and says so", async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "prolearn-proto-useless-"));
  const embedDir = await embedFixture(path.join(root, "embed"), 33, 1, [], { uninformativeImages: true });
  const gated = context(path.join(root, "work"), embedDir, path.join(root, "out-fail"), { onUseless: "fail" });
  await assert.rejects(prototypesStage.run!(gated), (error: unknown) => {
    assert.ok(error instanceof DataError, String(error));
    assert.match(
      error.message,
      /the prototype space is not useful: on \d+ validation samples .*own report with AUC 0\.\d+ .*shuffled among the prototypes.*nothing was published/,
    );
    assert.match(error.hint ?? "", /encoder: learned or biomedclip/);
    return true;
  });
  const registry = ArtifactRegistry.open(path.join(root, "work"));
  try {
    assert.deepEqual(registry.list(), [], "a failed gate publishes nothing");
  } finally {
    registry.close();
  }
  const warned = context(path.join(root, "work"), embedDir, path.join(root, "out-warn"));
  const summary = (await prototypesStage.run!(warned)) as { usefulness: { passed: boolean }; artifact: { version: number } };
  assert.equal(summary.usefulness.passed, false);
  assert.equal(summary.artifact.version, 1);
  assert.ok(
    warned.logs.some((l) => /PSA does NOT beat its shuffled copy/.test(l)),
    warned.logs.join("\n"),
  );
  // The failed check is a warning of the stage (the run stays ok, the report shows it amber), with its figures.
  assert.ok(
    warned.logs.some((l) => /^warning prototypes-not-useful: on \d+ validation samples .*"ownReportAuc":/.test(l)),
    warned.logs.join("\n"),
  );
});

test("prolearn prototypes query answers from a registered artifact", async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "prolearn-proto-q-"));
  const embedDir = await embedFixture(path.join(root, "embed"), 41);
  const workdir = path.join(root, "work");
  await prototypesStage.run!(context(workdir, embedDir, path.join(root, "a")));
  const out = path.join(root, "approx.parquet");
  const stdout = execFileSync(
    process.execPath,
    [
      "--import",
      "tsx",
      path.join(repoRoot, "src/cli/main.ts"),
      "prototypes",
      "query",
      "unit@1",
      path.join(embedDir, "embeddings.parquet"),
      "--workdir",
      workdir,
      "--out",
      out,
      "--json",
    ],
    { cwd: repoRoot, encoding: "utf8" },
  );
  const summary = JSON.parse(stdout);
  assert.equal(summary.rows, 160);
  const table = await readParquetFile(out);
  assert.deepEqual(
    table.schema.fields.map((f) => f.name),
    ["id", "text_embedding", "prototype_ids", "weights"],
  );
  const weights = table.getChild("weights")!.get(0)!.toArray() as Float32Array;
  assert.ok(Math.abs(weights.reduce((a, b) => a + b, 0) - 1) < 1e-5);
});

const hasNumpy = spawnSync("python3", ["-c", "import numpy"], { stdio: "ignore" }).status === 0;
test("exported Q.npy / R.npy load in NumPy", {
  skip: skipUnless(hasNumpy, "python3 with numpy is not installed (apt-get install python3-numpy)"),
}, async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "prolearn-proto-npy-"));
  const embedDir = await embedFixture(path.join(root, "embed"), 51);
  const workdir = path.join(root, "work");
  await prototypesStage.run!(context(workdir, embedDir, path.join(root, "a")));
  const registry = ArtifactRegistry.open(workdir);
  let protos: Awaited<ReturnType<typeof readPrototypesFile>>;
  try {
    await registry.export("unit@1", path.join(root, "export"));
    protos = await readPrototypesFile(path.join(root, "export", "prototypes.parquet"));
  } finally {
    registry.close();
  }
  const script =
    "import json,sys,numpy as np; q=np.load(sys.argv[1]); r=np.load(sys.argv[2]); print(json.dumps({'shape': list(q.shape), 'dtype': str(q.dtype), 'q0': float(q[0,0]), 'rLast': float(r[-1,-1])}))";
  const out = JSON.parse(execFileSync("python3", ["-c", script, path.join(root, "export", "Q.npy"), path.join(root, "export", "R.npy")], { encoding: "utf8" }));
  assert.deepEqual(out.shape, [protos.count, protos.dim]);
  assert.equal(out.dtype, "float32");
  assert.equal(out.q0, protos.queries[0]);
  assert.equal(out.rLast, protos.responses[protos.responses.length - 1]);
});

test("hdbscan.method: the stage logs the path it took; approximate on this small set gives the exact path's labels", async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "prolearn-proto-method-"));
  const embedDir = await embedFixture(path.join(root, "embed"), 47);
  const labelsOf = async (dir: string) =>
    Array.from((await readParquetFile(path.join(dir, "assignments.parquet"))).getChild("cluster")!.toArray() as Int32Array);
  const exact = context(path.join(root, "work"), embedDir, path.join(root, "out-exact"), { hdbscan: { method: "auto", maxExactPoints: 16384 } });
  await prototypesStage.run!(exact);
  assert.ok(
    exact.logs.some((l) => /^hdbscan: 96 distinct of 96 points; exact path/.test(l)),
    exact.logs.join("\n"),
  );
  const approximate = context(path.join(root, "work"), embedDir, path.join(root, "out-approx"), { hdbscan: { method: "approximate", maxExactPoints: 16384 } });
  await prototypesStage.run!(approximate);
  assert.ok(
    approximate.logs.some((l) => /^hdbscan: 96 distinct of 96 points; approximate path .*as asked/.test(l)),
    approximate.logs.join("\n"),
  );
  // The same partition (cluster ids may be numbered in another order).
  assert.equal(adjustedRandIndex(await labelsOf(approximate.outDir), await labelsOf(exact.outDir)), 1);
  assert.throws(() => prototypesParams.parse({ hdbscan: { method: "fast" } }), /method/);
});
