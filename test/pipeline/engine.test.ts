import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync, existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { loadPipelineFile } from "../../src/pipeline/spec.js";
import { runPipeline, planPipeline } from "../../src/pipeline/engine.js";
import { Catalog } from "../../src/pipeline/catalog.js";
import { TEST_STAGES, executions } from "./test-stages.js";

function project(stagesYaml = "  numbers: {}\n  scale: { factor: 2 }\n  total: {}\n"): { dir: string; file: string; workdir: string } {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-engine-"));
  mkdirSync(path.join(dir, "data"));
  for (const [name, value] of [
    ["a.txt", "1"],
    ["b.txt", "2"],
    ["c.txt", "3"],
  ])
    writeFileSync(path.join(dir, "data", name), value!);
  const file = path.join(dir, "pipeline.yaml");
  writeFileSync(file, `name: engine-test\ndataset:\n  kind: qata-cov19\n  root: data\nstages:\n${stagesYaml}`);
  return { dir, file, workdir: path.join(dir, ".prolearn") };
}

const load = (file: string) => loadPipelineFile(file, TEST_STAGES);

describe("engine", () => {
  test("a second run reuses every stage and plan reports nothing to run", async () => {
    const { file, workdir } = project();
    const first = await runPipeline(load(file), { registry: TEST_STAGES });
    assert.equal(first.status, "ok");
    assert.deepEqual(
      first.stages.map((s) => s.status),
      ["ran", "ran", "ran"],
    );
    assert.deepEqual(first.stages[2]!.summary, { sum: 12 });
    assert.equal(JSON.parse(readFileSync(first.stages[2]!.outputs["total.json"]!, "utf8")).sum, 12);

    const started = performance.now();
    const second = await runPipeline(load(file), { registry: TEST_STAGES });
    assert.ok(performance.now() - started < 2000);
    assert.deepEqual(
      second.stages.map((s) => s.status),
      ["cached", "cached", "cached"],
    );
    assert.deepEqual(
      second.stages.map((s) => s.cacheKey),
      first.stages.map((s) => s.cacheKey),
    );
    assert.deepEqual(executions(workdir), ["numbers", "scale", "total"]);

    const plan = await planPipeline(load(file), { registry: TEST_STAGES });
    assert.deepEqual(
      plan.map((p) => p.action),
      ["cached", "cached", "cached"],
    );
  });

  test("changing one param reruns that stage and its descendants, and plan says why", async () => {
    const { file, workdir } = project();
    await runPipeline(load(file), { registry: TEST_STAGES });
    writeFileSync(file, readFileSync(file, "utf8").replace("factor: 2", "factor: 3"));
    const plan = await planPipeline(load(file), { registry: TEST_STAGES });
    assert.deepEqual(
      plan.map((p) => [p.name, p.action]),
      [
        ["numbers", "cached"],
        ["scale", "run"],
        ["total", "run"],
      ],
    );
    assert.match(plan[1]!.reason, /params\.factor: 2 -> 3/);
    assert.match(plan[2]!.reason, /upstream scale will run/);
    const result = await runPipeline(load(file), { registry: TEST_STAGES });
    assert.deepEqual(
      result.stages.map((s) => s.status),
      ["cached", "ran", "ran"],
    );
    assert.match(result.stages[1]!.reason, /params\.factor: 2 -> 3/);
    assert.match(result.stages[2]!.reason, /input scale changed/);
    assert.deepEqual(result.stages[2]!.summary, { sum: 18 });
    assert.deepEqual(executions(workdir), ["numbers", "scale", "total", "scale", "total"]);
  });

  test("a changed dataset file reruns from the stage that declared it as a resource", async () => {
    const { dir, file } = project();
    await runPipeline(load(file), { registry: TEST_STAGES });
    writeFileSync(path.join(dir, "data", "c.txt"), "30");
    const plan = await planPipeline(load(file), { registry: TEST_STAGES });
    assert.equal(plan[0]!.action, "run");
    assert.match(plan[0]!.reason, /resource dataset changed/);
    const result = await runPipeline(load(file), { registry: TEST_STAGES });
    assert.deepEqual(result.stages[2]!.summary, { sum: 66 });
  });

  test("identical upstream output keeps downstream stages cached", async () => {
    const { dir, file } = project();
    await runPipeline(load(file), { registry: TEST_STAGES });
    // A new non-matching file changes nothing that `numbers` reads.
    writeFileSync(path.join(dir, "data", "notes.md"), "ignored");
    const result = await runPipeline(load(file), { registry: TEST_STAGES, force: ["numbers"] });
    assert.deepEqual(
      result.stages.map((s) => s.status),
      ["ran", "cached", "cached"],
    );
  });

  test("--until and --only select stages; --only needs cached inputs", async () => {
    const { file } = project();
    const until = await runPipeline(load(file), { registry: TEST_STAGES, until: "scale" });
    assert.deepEqual(
      until.stages.map((s) => [s.name, s.status]),
      [
        ["numbers", "ran"],
        ["scale", "ran"],
      ],
    );
    const only = await runPipeline(load(file), { registry: TEST_STAGES, only: "total" });
    assert.deepEqual(
      only.stages.map((s) => [s.name, s.status]),
      [["total", "ran"]],
    );

    const fresh = project();
    await assert.rejects(runPipeline(load(fresh.file), { registry: TEST_STAGES, only: "total" }), /input scale has no output/);
  });

  test("a failing stage fails the run, records the error and skips its descendants", async () => {
    const { dir, file, workdir } = project();
    writeFileSync(path.join(dir, "data", "bad.txt"), "x");
    writeFileSync(file, readFileSync(file, "utf8"));
    const pipeline = load(file);
    const failing = new Map(TEST_STAGES);
    const scale = TEST_STAGES.get("scale")!;
    failing.set("scale", {
      ...scale,
      run: async () => {
        throw new Error("boom in scale");
      },
    });
    const result = await runPipeline(pipeline, { registry: failing });
    assert.equal(result.status, "failed");
    assert.deepEqual(
      result.stages.map((s) => s.status),
      ["ran", "failed", "skipped"],
    );
    assert.match(result.stages[1]!.error!, /boom in scale/);
    const catalog = new Catalog(workdir);
    const runs = catalog.runs();
    assert.equal(runs[0]!.status, "failed");
    assert.equal(catalog.stageRuns(runs[0]!.id).find((s) => s.stage === "scale")!.status, "failed");
    catalog.close();
  });

  test("sharded stages merge shards in plan order", async () => {
    const { file } = project("  numbers: {}\n  squares: { shardSize: 2 }\n");
    const result = await runPipeline(load(file), { registry: TEST_STAGES });
    assert.deepEqual(result.stages[1]!.summary, { shards: 2 });
    assert.deepEqual(JSON.parse(readFileSync(result.stages[1]!.outputs["squares.json"]!, "utf8")), [1, 4, 9]);
  });

  test("kill -9 mid-stage: nothing half-written is trusted and the next run completes", async () => {
    const { file, workdir } = project("  numbers: {}\n  scale: { factor: 2, slowMs: 20000 }\n  total: {}\n");
    const child = spawn(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, "run-child.ts"), file], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("progress half")) resolve();
      });
      child.on("exit", () => reject(new Error("child exited before reaching the middle of the stage")));
    });
    child.kill("SIGKILL");
    await new Promise((resolve) => child.on("exit", resolve));
    assert.equal(existsSync(path.join(workdir, "store", "scale")), false, "no scale output was published");

    writeFileSync(file, readFileSync(file, "utf8").replace("slowMs: 20000", "slowMs: 0"));
    const result = await runPipeline(load(file), { registry: TEST_STAGES });
    assert.deepEqual(
      result.stages.map((s) => s.status),
      ["cached", "ran", "ran"],
    );
    assert.deepEqual(result.stages[2]!.summary, { sum: 12 });
    const catalog = new Catalog(workdir);
    assert.equal(catalog.runs().find((r) => r.id !== result.runId)!.status, "abandoned");
    catalog.close();
    assert.deepEqual(readdirSync(path.join(workdir, "tmp")), [], "the killed run's staging folder was swept");
  });

  test("two processes sharing a workdir both complete and agree", async () => {
    const { file, workdir } = project();
    const runChild = () =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, "run-child.ts"), file], {
          stdio: ["ignore", "pipe", "inherit"],
        });
        let out = "";
        child.stdout.on("data", (c: Buffer) => (out += c.toString()));
        child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`))));
      });
    const [a, b] = await Promise.all([runChild(), runChild()]);
    for (const out of [a, b]) assert.equal(JSON.parse(out.trim().split("\n").pop()!).status, "ok");
    const catalog = new Catalog(workdir);
    assert.equal(catalog.runs().length, 2);
    assert.equal(catalog.db.pragma("integrity_check", { simple: true }), "ok");
    catalog.close();
    // Each stage executed once in total: the other process waited on the key lock, then reused the output.
    const counts = executions(workdir).reduce<Record<string, number>>((m, s) => {
      m[s] = (m[s] ?? 0) + 1;
      return m;
    }, {});
    assert.deepEqual(counts, { numbers: 1, scale: 1, total: 1 });
  });

  test("a run that waited on another's key lock and reused its output records the stage as cached, not ran", async () => {
    const release = path.join(mkdtempSync(path.join(tmpdir(), "prolearn-release-")), "go");
    const { file, workdir } = project(`  numbers: {}\n  scale: { factor: 2, releaseFile: ${JSON.stringify(release)} }\n  total: {}\n`);
    const start = () => {
      const child = spawn(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, "run-child.ts"), file], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      let out = "";
      const halfway = new Promise<void>((resolve) =>
        child.stdout.on("data", (c: Buffer) => {
          out += c.toString();
          if (out.includes("progress half")) resolve();
        }),
      );
      const done = new Promise<{ status: string; stages: [string, string][] }>((resolve, reject) =>
        child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out.trim().split("\n").pop()!)) : reject(new Error(`exit ${code}`)))),
      );
      return { halfway, done };
    };
    // A holds the scale key lock mid-stage; B starts, finds no output for that key and waits on the lock.
    const a = start();
    await a.halfway;
    const b = start();
    const catalog = new Catalog(workdir);
    const waiting = () => catalog.db.prepare("SELECT COUNT(*) AS n FROM stage_runs WHERE stage = 'scale' AND status = 'running'").get() as { n: number };
    while (waiting().n < 2) await new Promise((r) => setTimeout(r, 50));
    writeFileSync(release, "");
    const [resultA, resultB] = await Promise.all([a.done, b.done]);
    assert.deepEqual(resultA.stages, [
      ["numbers", "ran"],
      ["scale", "ran"],
      ["total", "ran"],
    ]);
    assert.deepEqual(
      resultB.stages.map(([, status]) => status),
      ["cached", "cached", "cached"],
    );
    assert.deepEqual(executions(workdir), ["numbers", "scale", "total"]);
    const runB = catalog.runs({ limit: 1 })[0]!; // the later start
    const scaleB = catalog.stageRuns(runB.id).find((s) => s.stage === "scale")!;
    assert.equal(scaleB.status, "cached");
    assert.equal(scaleB.reason, "another run published this output while this one waited for it");
    catalog.close();
  });
});

test("params a stage declares as non-key (scheduling only) do not change its cache key", async () => {
  const { file } = project();
  const registry = new Map(TEST_STAGES);
  registry.set("scale", { ...TEST_STAGES.get("scale")!, nonKeyParams: ["slowMs"] });
  const first = await runPipeline(load(file), { registry });
  writeFileSync(file, readFileSync(file, "utf8").replace("factor: 2", "factor: 2, slowMs: 5"));
  const second = await runPipeline(loadPipelineFile(file, registry), { registry });
  assert.deepEqual(
    second.stages.map((s) => s.status),
    ["cached", "cached", "cached"],
  );
  assert.equal(second.stages[1]!.cacheKey, first.stages[1]!.cacheKey);
});
