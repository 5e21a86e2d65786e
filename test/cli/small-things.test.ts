import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { writeFixtureDataset } from "../../src/synthetic/index.js";
import { ProgressRenderer } from "../../src/cli/render.js";
import { resolveLayout } from "../../src/ingest/layouts.js";
import { DataError } from "../../src/errors.js";
import { cli } from "../helpers/cli.js";

function capture(): { io: ConstructorParameters<typeof ProgressRenderer>[0]; text: () => string } {
  const stderr = new PassThrough();
  let text = "";
  stderr.on("data", (c: Buffer) => (text += c.toString()));
  return { io: { stdout: new PassThrough(), stderr, interactive: false }, text: () => text };
}

describe("the small things of issue 18", () => {
  test("one stage prefix per log line and progress line; no rate before anything was measured", () => {
    const { io, text } = capture();
    const renderer = new ProgressRenderer(io);
    renderer.handle({ kind: "log", stage: "guide", level: "info", message: "guide: 12 paired training samples" });
    renderer.handle({ kind: "log", stage: "train", level: "info", message: "train epoch 1: loss 0.5" });
    renderer.handle({ kind: "progress", stage: "embed", task: "embed rows 0-9", done: 0, total: 10, unit: "rows" });
    const lines = text().trimEnd().split("\n");
    assert.deepEqual(lines, ["  guide: 12 paired training samples", "  train: epoch 1: loss 0.5", "  embed rows 0-9: 0/10 rows"]);
  });

  test("help shows number options as numbers and enum options with their values; typos get a did-you-mean", async () => {
    const help = await cli(["help", "run"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--concurrency <N> .*\(number, default: 1\)/);
    assert.match(help.stdout, /--executor <NAME> .*\(in-process \| bullmq, default: in-process\)/);
    const notNumber = await cli(["run", "x.yaml", "--concurrency", "two"]);
    assert.equal(notNumber.code, 2);
    assert.match(notNumber.stderr, /--concurrency expects a number, got "two"/);
    const enumTypo = await cli(["run", "x.yaml", "--executor", "bulmq"]);
    assert.equal(enumTypo.code, 2);
    assert.match(enumTypo.stderr, /did you mean --executor bullmq\?/);
    const subTypo = await cli(["artifacts", "lst"]);
    assert.equal(subTypo.code, 2);
    assert.match(subTypo.stderr, /unknown subcommand "artifacts lst".*did you mean "artifacts list"\?/s);
  });

  test("a missing pipeline file says it does not exist, and suggests a near name", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "prolearn-small-"));
    writeFileSync(path.join(dir, "demo.yaml"), "name: d\n");
    const missing = await cli(["run", path.join(dir, "dem.yaml")]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /pipeline file .*dem\.yaml does not exist/);
    assert.match(missing.stderr, /did you mean .*demo\.yaml\?/);
    assert.doesNotMatch(missing.stderr, /ENOENT|invalid pipeline/);
    const module = await cli(["plan", path.join(dir, "nothing.ts")]);
    assert.equal(module.code, 2);
    assert.match(module.stderr, /nothing\.ts does not exist/);
  });

  test("a dataset root one folder too high names the child folder that is in a known layout", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "prolearn-small-"));
    await writeFixtureDataset({ kind: "kvasir-seg", layout: "kvasir", out: path.join(dir, "Kvasir-SEG"), n: 4, seed: 1, size: 16 });
    mkdirSync(path.join(dir, "notes"));
    await assert.rejects(resolveLayout(dir, "auto", "kvasir-seg"), (error: unknown) => {
      assert.ok(error instanceof DataError);
      assert.match(error.message, /cannot tell the layout/);
      assert.match(error.format(), new RegExp(`hint: .*${path.join(dir, "Kvasir-SEG").replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} \\(kvasir\\)`));
      return true;
    });
  });

  test("status --json gives a failed run's reason", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "prolearn-small-"));
    const file = path.join(dir, "p.yaml");
    writeFileSync(file, "name: broken\ndataset:\n  kind: kvasir-seg\n  root: no-such-folder\nstages:\n  ingest: {}\n");
    const run = await cli(["run", file]);
    assert.equal(run.code, 1);
    const status = await cli(["status", file, "--json"]);
    assert.equal(status.code, 0, status.stderr);
    const [latest] = JSON.parse(status.stdout).runs as { status: string; error: string | null }[];
    assert.equal(latest!.status, "failed");
    assert.match(latest!.error ?? "", /dataset root .*no-such-folder is not a folder/);
  });

  test("--force trains from scratch, and a resume from a checkpoint is said plainly", { timeout: 180_000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "prolearn-small-"));
    await writeFixtureDataset({ kind: "qata-cov19", layout: "sgseg", out: path.join(dir, "data"), n: 16, seed: 2, size: 32 });
    const file = path.join(dir, "p.yaml");
    writeFileSync(
      file,
      "name: force\ndataset:\n  kind: qata-cov19\n  root: data\n  layout: sgseg\n  textAvailability: 1\nstages:\n  ingest: {}\n  guide: { imageSize: 32, baseChannels: 4, depth: 2, heads: 2, tokenDim: 16, maxTokens: 16, epochs: 2, batchSize: 8, patience: 0, backend: cpu }\n",
    );
    const first = await cli(["run", file, "--json"]);
    assert.equal(first.code, 0, first.stderr);
    const guideOf = (stdout: string) =>
      (JSON.parse(stdout).stages as { name: string; status: string; summary: Record<string, unknown>; outputs: Record<string, string> }[]).find(
        (s) => s.name === "guide",
      )!;
    assert.equal(guideOf(first.stdout).summary.resumedEpochs, 0);

    const forced = await cli(["run", file, "--force", "guide", "--json"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stderr, /guide: forced: removed the guide checkpoint guide-guide-[0-9a-f]{16}; training starts from scratch/);
    const guide = guideOf(forced.stdout);
    assert.equal(guide.status, "ran");
    assert.equal(guide.summary.resumedEpochs, 0);
    assert.equal(guide.summary.epochsRun, 2);

    // The output gone (not forced): the finished checkpoint is reused, and the log says so.
    rmSync(path.dirname(guide.outputs["guide-model.json"]!), { recursive: true });
    const resumed = await cli(["run", file, "--json"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(guideOf(resumed.stdout).summary.resumedEpochs, 2);
    assert.match(
      resumed.stderr,
      /guide: training resumed from checkpoint guide-guide-[0-9a-f]{16}: all 2 epochs were restored, none trained \(`prolearn run --force guide` trains from scratch\)/,
    );
  });

  test("the demo's next commands work as printed", { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "prolearn-small-"));
    const file = path.join(dir, "demo.yaml");
    writeFileSync(
      file,
      "name: demo-small\nworkdir: ../demo-work/.prolearn\ndataset:\n  kind: kvasir-seg\n  root: data\n  layout: kvasir\n  textAvailability: 0.5\nstages:\n  ingest: {}\n  embed: { encoder: builtin, dim: 32 }\n  prototypes: { minClusterSize: 2, k: 2 }\n",
    );
    const demo = await cli(["demo", "--pipeline", file, "--n", "24"]);
    assert.equal(demo.code, 0, demo.stderr);
    const printed = demo.stderr
      .split("\n")
      .filter((l) => l.startsWith("  npx prolearn "))
      .map((l) => l.trim().split(/\s{3,}/)[0]!);
    assert.ok(printed.length >= 4, demo.stderr);
    assert.ok(printed.some((c) => c.startsWith("npx prolearn status ")) && printed.some((c) => c.startsWith("npx prolearn artifacts list ")));
    for (const command of printed) {
      const argv = command.split(" ").slice(2);
      const result = await cli(argv);
      assert.equal(result.code, 0, `${command}\n${result.stderr}`);
    }
  });
});
