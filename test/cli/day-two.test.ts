import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { cli } from "../helpers/cli.js";

/**
 * Day-two operations on real runs of the package's stages: two pipelines (Kvasir-SEG and
 * QaTa-COV19 layouts, small generated datasets) sharing one workdir, as every file in pipelines/ does.
 */
describe("day two: outputs, diff, gc", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-day-two-"));
  const workdir = path.join(dir, "wd");
  const kvasirFile = path.join(dir, "kvasir.yaml");
  const qataFile = path.join(dir, "qata.yaml");
  const kvasirYaml = (dim: number) =>
    `name: kv\nworkdir: wd\ndataset:\n  kind: kvasir-seg\n  root: kvasir\n  textAvailability: 0.5\nstages:\n  ingest: {}\n  embed: { encoder: builtin, dim: ${dim} }\n  prototypes: { minClusterSize: 2, k: 2 }\n`;
  const runIds: string[] = [];
  const runStderr: string[] = [];
  const duck = async (sql: string) => {
    const connection = await (await DuckDBInstance.create()).connect();
    return (await (await connection.run(sql)).getRowObjectsJS()) as Record<string, unknown>[];
  };

  before(async () => {
    await writeFixtureDataset({ kind: "kvasir-seg", layout: "kvasir", out: path.join(dir, "kvasir"), n: 24, seed: 3, size: 32 });
    await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "qata"), n: 12, seed: 5, size: 32 });
    writeFileSync(kvasirFile, kvasirYaml(64));
    writeFileSync(qataFile, `name: qa\nworkdir: wd\ndataset:\n  kind: qata-cov19\n  root: qata\n  layout: sgseg\nstages:\n  ingest: {}\n`);
    for (const file of [kvasirFile, qataFile]) {
      const run = await cli(["run", file, "--json"]);
      assert.equal(run.code, 0, run.stderr);
      runIds.push(JSON.parse(run.stdout).runId);
      runStderr.push(run.stderr);
    }
  });

  test("outputs and the stable pointer give one pipeline's rows only, read by DuckDB", async () => {
    const listed = await cli(["outputs", "kv", "ingest", "--workdir", workdir]);
    assert.equal(listed.code, 0, listed.stderr);
    const pointer = path.join(workdir, "pipelines", "kv", "ingest", "samples.parquet");
    assert.ok(listed.stdout.split("\n").includes(pointer), listed.stdout);
    const [kv] = await duck(`SELECT count(*)::INT AS n, count(DISTINCT dataset)::INT AS kinds, min(dataset) AS kind FROM '${pointer}'`);
    assert.deepEqual(kv, { n: 24, kinds: 1, kind: "kvasir-seg" });
    const [qa] = await duck(`SELECT count(*)::INT AS n, min(dataset) AS kind FROM '${path.join(workdir, "pipelines", "qa", "ingest", "samples.parquet")}'`);
    assert.equal(qa!.kind, "qata-cov19");
    // What the README used to query: the store's glob mixes both pipelines.
    const [mixed] = await duck(`SELECT count(DISTINCT dataset)::INT AS kinds FROM '${path.join(workdir, "store", "ingest", "*", "samples.parquet")}'`);
    assert.equal(mixed!.kinds, 2);

    // By pipeline file, as JSON: every stage of the last successful run.
    const json = await cli(["outputs", kvasirFile, "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const doc = JSON.parse(json.stdout) as { pipeline: string; stages: Record<string, { runId: string; files: Record<string, string> }> };
    assert.deepEqual(Object.keys(doc.stages), ["ingest", "embed", "prototypes"]);
    assert.equal(doc.stages.embed!.files["embeddings.parquet"], path.join(workdir, "pipelines", "kv", "embed", "embeddings.parquet"));
    assert.equal(doc.stages.ingest!.runId, runIds[0]);
    for (const files of Object.values(doc.stages)) for (const file of Object.values(files.files)) assert.ok(existsSync(file), file);

    const typo = await cli(["outputs", "kv", "ingets", "--workdir", workdir]);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /did you mean ingest\?/);
    const unknown = await cli(["outputs", "kvv", "--workdir", workdir]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /no runs of pipeline kvv .*did you mean kv\?/s);
  });

  test("prototypes query and the embeddings readers accept the List<float> column DuckDB writes, of the right length only", async () => {
    const pointer = path.join(workdir, "pipelines", "kv", "embed", "embeddings.parquet");
    const listFile = path.join(dir, "duckdb-list.parquet");
    const wrongFile = path.join(dir, "duckdb-wrong.parquet");
    await duck(
      `COPY (SELECT id, image_embedding::FLOAT[] AS image_embedding, text_embedding::FLOAT[] AS text_embedding FROM '${pointer}') TO '${listFile}' (FORMAT parquet)`,
    );
    await duck(`COPY (SELECT id, list_slice(image_embedding::FLOAT[], 1, 10) AS image_embedding FROM '${pointer}') TO '${wrongFile}' (FORMAT parquet)`);
    const [type] = await duck(`SELECT typeof(image_embedding) AS t FROM '${listFile}' LIMIT 1`);
    assert.equal(type!.t, "FLOAT[]", "DuckDB wrote a variable-length list, not a fixed-size one");

    const out = path.join(dir, "approx.parquet");
    const query = await cli(["prototypes", "query", "kv", listFile, "--workdir", workdir, "--out", out, "--json"]);
    assert.equal(query.code, 0, query.stderr);
    assert.equal(JSON.parse(query.stdout).rows, 24);
    const wrong = await cli(["prototypes", "query", "kv", wrongFile, "--workdir", workdir, "--out", out]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /vectors? of length 10, expected 64/);

    const labels = path.join(dir, "labels.csv");
    const clustered = await cli(["cluster", "hdbscan", listFile, "--column", "image_embedding", "--min-cluster-size", "2", "--out", labels]);
    assert.equal(clustered.code, 0, clustered.stderr);
    assert.equal(readFileSync(labels, "utf8").trim().split("\n").length, 1 + 24, "a header and one label per row");

    const { readEmbeddings } = await import("../../src/segmenter/embeddings.js");
    const fromDuck = await readEmbeddings(listFile);
    const ours = await readEmbeddings(pointer);
    assert.equal(fromDuck.dim, 64);
    assert.equal(fromDuck.image.size, 24);
    for (const [id, vector] of ours.image) assert.deepEqual(fromDuck.image.get(id), vector);
    assert.equal(fromDuck.text.size, ours.text.size);
  });

  test("the report counts noise as the prototypes stage did and sizes a projection point by the reports it stands for", async () => {
    const { Catalog } = await import("../../src/pipeline/catalog.js");
    const { runResultFromCatalog } = await import("../../src/report/write.js");
    const { gatherReport } = await import("../../src/report/gather.js");
    const { renderReportHtml } = await import("../../src/report/html.js");
    const { loadPipelineArg } = await import("../../src/cli/pipeline-arg.js");
    const catalog = new Catalog(workdir);
    let model: Awaited<ReturnType<typeof gatherReport>>;
    try {
      model = await gatherReport({ pipeline: await loadPipelineArg(kvasirFile), result: runResultFromCatalog(catalog, catalog.getRun(runIds[0]!)!) });
    } finally {
      catalog.close();
    }
    const section = model.sections.prototypes;
    assert.equal(section.state, "ok");
    if (section.state !== "ok") return;
    const p = section.data;
    const prototypesDir = path.join(workdir, "pipelines", "kv", "prototypes");
    const [counted] = await duck(
      `SELECT count(*) FILTER (WHERE cluster = -1)::INT AS unassigned, count(*)::INT AS n FROM '${path.join(prototypesDir, "assignments.parquet")}'`,
    );
    const current = JSON.parse(readFileSync(path.join(workdir, "pipelines", "kv", "current.json"), "utf8")) as {
      stages: Record<string, { store: Record<string, string> }>;
    };
    const manifest = path.join(path.dirname(current.stages.prototypes!.store["manifest.json"]!), "_manifest.json");
    const summary = JSON.parse(readFileSync(manifest, "utf8")).summary as { noise: number };
    assert.ok(summary.noise > 0, "this fixture leaves HDBSCAN noise, which noise: nearest relabels");
    assert.equal(counted!.unassigned, 0);
    assert.deepEqual([p.noise, p.noiseReassigned], [summary.noise, summary.noise], "the stage's count, not the -1 rows of assignments.parquet");
    assert.ok(p.projection.state === "ok");
    if (p.projection.state !== "ok") return;
    const points = p.projection.data.points;
    const [texts] = await duck(
      `SELECT count(*)::INT AS reports, count(DISTINCT (a.cluster, e.text_embedding::FLOAT[]))::INT AS distinct_points FROM '${path.join(workdir, "pipelines", "kv", "embed", "embeddings.parquet")}' e ` +
        `JOIN '${path.join(prototypesDir, "assignments.parquet")}' a USING (id) WHERE e.text_embedding IS NOT NULL`,
    );
    assert.deepEqual([points.length, p.projection.data.population], [texts!.distinct_points, texts!.reports], "one point per distinct (label, embedding)");
    assert.equal(
      points.reduce((a, q) => a + q.count, 0),
      p.projection.data.population,
      "every embedded report is counted once",
    );
    assert.ok(
      points.some((q) => q.count > 1),
      "identical reports share a point",
    );
    const html = renderReportHtml(model);
    const big = points.find((q) => q.count > 1)!;
    assert.match(html, new RegExp(`r="${(3 * Math.sqrt(big.count)).toFixed(1)}" data-count="${big.count}"`));
    assert.match(html, /data-metric="noise-count">\d+</);
  });

  test("the report's header gives the run's duration as the CLI printed it", () => {
    const cliSeconds = Number(/run \S+: ok(?: with \d+ warnings?)? in ([\d.]+) s/.exec(runStderr[0]!)![1]);
    const html = readFileSync(path.join(workdir, "reports", `${runIds[0]}.html`), "utf8");
    const [, value, unit] = /data-metric="run-seconds">([\d.]+) (ms|s)</.exec(html)!;
    const reportSeconds = Number(value) / (unit === "ms" ? 1000 : 1);
    assert.ok(Math.abs(reportSeconds - cliSeconds) <= 0.01, `report ${value} ${unit}, CLI ${cliSeconds} s`);
  });

  test("an all-cached rerun keeps the previous report instead of writing a copy", async () => {
    const reports = () => readdirSync(path.join(workdir, "reports")).sort();
    const beforeRerun = reports();
    const rerun = await cli(["run", qataFile, "--json"]);
    assert.equal(rerun.code, 0, rerun.stderr);
    const doc = JSON.parse(rerun.stdout) as { report: string; runId: string };
    assert.equal(doc.report, path.join(workdir, "reports", `${runIds[1]}.html`));
    assert.deepEqual(reports(), beforeRerun);
  });

  test("diff names the changed param and input and puts the metrics side by side; gc keeps current outputs and artifacts", async () => {
    writeFileSync(kvasirFile, kvasirYaml(32));
    const second = await cli(["run", kvasirFile, "--json"]);
    assert.equal(second.code, 0, second.stderr);
    const secondId = JSON.parse(second.stdout).runId as string;

    const text = await cli(["diff", runIds[0]!, secondId, "--workdir", workdir]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /ingest: ran -> cached \(same work: cache key unchanged\)\n {2}same output: its \d+ figures are equal/);
    assert.match(text.stdout, /surrogateLabels +\d+ +\d+/);
    assert.match(text.stdout, /embed: ran -> ran\n {2}params\.dim: 64 -> 32/);
    assert.match(text.stdout, /prototypes: ran -> ran\n {2}input embed changed: [0-9a-f]{12} -> [0-9a-f]{12}/);
    const json = await cli(["diff", runIds[0]!.slice(0, 17), secondId, "--pipeline", kvasirFile, "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const comparison = JSON.parse(json.stdout) as {
      stages: { stage: string; params: { path: string; a: unknown; b: unknown }[]; metrics: { path: string; a: number | null; b: number | null }[] }[];
    };
    const embed = comparison.stages.find((s) => s.stage === "embed")!;
    assert.deepEqual(embed.params, [{ path: "dim", a: 64, b: 32 }]);
    const prototypes = comparison.stages.find((s) => s.stage === "prototypes")!;
    const dim = prototypes.metrics.find((m) => m.path === "dim");
    assert.deepEqual(dim && [dim.a, dim.b], [64, 32]);

    // gc --keep 1: the first run's embed output and report go; its prototypes output published a
    // registered artifact version and stays, as do the current outputs of both pipelines.
    const store = (stage: string) => readdirSync(path.join(workdir, "store", stage)).sort();
    const before = { embed: store("embed"), prototypes: store("prototypes"), ingest: store("ingest") };
    assert.equal(before.embed.length, 2);
    const dry = await cli(["gc", "--keep", "1", "--workdir", workdir, "--dry-run", "--json"]);
    assert.equal(dry.code, 0, dry.stderr);
    const plan = JSON.parse(dry.stdout) as { remove: { kind: string; path: string; bytes: number }[]; bytes: number };
    const removed = plan.remove.map((r) => `${r.kind} ${path.relative(workdir, r.path)}`).sort();
    const oldEmbed = before.embed.find((key) => !second.stdout.includes(key))!;
    assert.deepEqual(removed, [`output store/embed/${oldEmbed}`, `report reports/${runIds[0]}.html`]);
    assert.ok(plan.bytes > 0 && plan.bytes === plan.remove.reduce((a, r) => a + r.bytes, 0));
    assert.match(dry.stderr, /would free .* in 2 items/);
    assert.deepEqual(store("embed"), before.embed, "a dry run removes nothing");

    const real = await cli(["gc", "--keep", "1", "--workdir", workdir]);
    assert.equal(real.code, 0, real.stderr);
    assert.deepEqual(
      store("embed"),
      before.embed.filter((k) => k !== oldEmbed),
    );
    assert.deepEqual(store("prototypes"), before.prototypes);
    assert.deepEqual(store("ingest"), before.ingest);
    const verify = await cli(["artifacts", "verify", "--workdir", workdir]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    const [rows] = await duck(`SELECT count(*)::INT AS n FROM '${path.join(workdir, "pipelines", "kv", "embed", "embeddings.parquet")}'`);
    assert.equal(rows!.n, 24);
    const outputs = await cli(["outputs", kvasirFile]);
    assert.equal(outputs.code, 0, outputs.stderr);
    // The old run's outputs are gone and `outputs --run` says so instead of printing dead paths.
    const old = await cli(["outputs", kvasirFile, "embed", "--run", runIds[0]!]);
    assert.equal(old.code, 0, old.stderr);
    assert.equal(old.stdout, "");
    assert.match(old.stderr, /no longer in the store/);
    const again = await cli(["gc", "--keep", "1", "--workdir", workdir, "--dry-run"]);
    assert.match(again.stderr, /would free 0 B in 0 items/);

    // A run in progress (this process) could be publishing what gc would take: gc refuses.
    const { Catalog } = await import("../../src/pipeline/catalog.js");
    const catalog = new Catalog(workdir);
    try {
      catalog.startRun({ id: "20991231T000000-inprog", pipeline: "kv" });
      const refused = await cli(["gc", "--keep", "1", "--workdir", workdir]);
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /run 20991231T000000-inprog of kv is in progress/);
      catalog.finishRun("20991231T000000-inprog", "failed");
    } finally {
      catalog.close();
    }
  });
});
