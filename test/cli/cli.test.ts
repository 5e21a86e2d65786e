import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { cli } from "../helpers/cli.js";
import { formatRunSummary } from "../../src/cli/render.js";
import type { StageResult } from "../../src/pipeline/engine.js";
import { skipUnless } from "../helpers/skip.js";

describe("cli", () => {
  test("--help lists commands and the exit codes", async () => {
    const { code, stdout } = await cli(["--help"]);
    assert.equal(code, 0);
    assert.match(stdout, /Usage: prolearn <command>/);
    for (const command of ["run", "plan", "status"]) assert.match(stdout, new RegExp(`\\n  ${command}\\s`));
    assert.match(stdout, /2 {2}bad usage or an invalid pipeline file/);
  });

  test("command help shows each option's type and default", async () => {
    const { code, stdout } = await cli(["run", "--help"]);
    assert.equal(code, 0);
    assert.match(stdout, /--until <STAGE>/);
    assert.match(stdout, /--json .*\(boolean, default: false\)/);
  });

  test("unknown commands and options exit 2 with a suggestion", async () => {
    const a = await cli(["rnu"]);
    assert.equal(a.code, 2);
    assert.match(a.stderr, /did you mean "run"/);
    const b = await cli(["plan", "x.yaml", "--jsn"]);
    assert.equal(b.code, 2);
    assert.match(b.stderr, /did you mean --json/);
  });

  test("an invalid pipeline file exits 2 and names every problem with its line", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "prolearn-cli-"));
    const file = path.join(dir, "bad.yaml");
    writeFileSync(file, ["name: bad", "dataset:", "  kind: qata-cov19", "  layot: sgseg", "  textAvailability: lots", "stages: {}", ""].join("\n"));
    const { code, stderr } = await cli(["run", file]);
    assert.equal(code, 2);
    assert.match(stderr, /bad\.yaml:4: dataset\.layot: unknown key "layot" \(did you mean "layout"\?\)/);
    assert.match(stderr, /bad\.yaml:5: dataset\.textAvailability: .*number/);
    assert.match(stderr, /bad\.yaml:2: dataset\.root: missing required key/);
  });

  test("status without a catalog exits 2 with a hint", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "prolearn-cli-"));
    const { code, stderr } = await cli(["status", "--workdir", dir]);
    assert.equal(code, 2);
    assert.match(stderr, /no catalog/);
  });
  test("status of a scheduled pipeline shows its next fire time", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "prolearn-cli-"));
    const file = path.join(dir, "scheduled.yaml");
    writeFileSync(
      file,
      ["name: nightly", "dataset: { kind: kvasir-seg, root: data }", "stages: {}", 'schedule: { cron: "30 2 * * *", timezone: "Europe/Paris" }', ""].join("\n"),
    );
    await cli(["plan", file]);
    const { code, stdout } = await cli(["status", file, "--json"]);
    assert.equal(code, 0);
    const doc = JSON.parse(stdout);
    assert.equal(doc.schedule.cron, "30 2 * * *");
    const next = new Date(doc.schedule.next);
    assert.ok(next.getTime() > Date.now() && next.getTime() <= Date.now() + 25 * 3600_000);
    assert.equal(new Intl.DateTimeFormat("en-GB", { timeZone: "Europe/Paris", hour: "2-digit", minute: "2-digit" }).format(next), "02:30");
  });
});

// On a machine with a GPU the worker would start and wait for jobs; the refusal needs one without.
const gpuDevice =
  existsSync("/dev/nvidia0") || existsSync("/dev/kfd") || (existsSync("/dev/dri") && readdirSync("/dev/dri").some((n) => n.startsWith("renderD")));

test("worker --capabilities gpu refuses to serve GPU jobs where only the cpu backend starts, and says why", {
  skip: skipUnless(!gpuDevice, "this machine shows a GPU device node"),
}, async () => {
  const { code, stderr } = await cli(["worker", "--redis", "redis://127.0.0.1:1", "--capabilities", "gpu"]);
  assert.equal(code, 1, stderr);
  assert.match(stderr, /--capabilities gpu, but no GPU training backend starts on this machine/);
  assert.match(stderr, /hint: .*docs\/backends\.md.*without --capabilities gpu/);
});

test("the run summary leads with the headline of every ran or cached stage that gives one", () => {
  const stage = (name: string, status: StageResult["status"], summary: Record<string, unknown>): StageResult => ({
    name,
    status,
    reason: "",
    reasons: [],
    warnings: [],
    seconds: 1,
    cacheKey: null,
    digest: null,
    outputs: {},
    summary,
  });
  const text = formatRunSummary({
    runId: "r1",
    pipeline: "p",
    status: "ok",
    seconds: 2,
    stages: [
      stage("ingest", "ran", { rows: 3 }),
      stage("evaluate", "cached", { headline: "test Dice / IoU on 3 images" }),
      stage("other", "failed", { headline: "not shown" }),
    ],
    totals: { ran: 1, cached: 1, failed: 1, skipped: 0 },
    report: "/tmp/r.html",
  });
  assert.deepEqual(text.split("\n"), ["evaluate: test Dice / IoU on 3 images", "run r1: ok in 2.00 s (1 ran, 1 cached, 1 failed)", "report: /tmp/r.html"]);
});
