import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import path from "node:path";
import { smallPrototypesPipeline } from "./helpers.js";
import { cli } from "../helpers/cli.js";

interface StageLine {
  name: string;
  status: string;
  reason: string;
  digest: string | null;
  outputs: Record<string, string>;
}

function setup(): Promise<{ dir: string; file: string; workdir: string }> {
  return smallPrototypesPipeline("heals");
}

async function run(file: string): Promise<StageLine[]> {
  const result = await cli(["run", file, "--json"]);
  assert.equal(result.code, 0, result.stderr);
  assert.doesNotMatch(result.stderr, /internal error|ENOTEMPTY/);
  return JSON.parse(result.stdout).stages as StageLine[];
}

function embedFile(stages: StageLine[]): string {
  return stages.find((s) => s.name === "embed")!.outputs["embeddings.parquet"]!;
}

test("a deleted, truncated or rewritten store file is a cache miss: recomputed, published in place, the damaged copy kept aside", {
  timeout: 120_000,
}, async () => {
  const { file, workdir } = await setup();
  const first = await run(file);
  const target = embedFile(first);
  const original = readFileSync(target);

  const damages: [string, () => void, RegExp][] = [
    ["deleted", () => rmSync(target), /embeddings\.parquet: missing/],
    ["truncated", () => truncateSync(target, 10), /embeddings\.parquet: 10 bytes, published with \d+/],
    // Same size, new bytes: the mtime moved, so the file is re-hashed.
    ["rewritten", () => writeFileSync(target, Buffer.alloc(original.length, 7)), /embeddings\.parquet: sha256 .* is not the published/],
  ];
  for (const [label, damage, problem] of damages) {
    damage();
    const plan = await cli(["plan", file, "--json"]);
    assert.equal(plan.code, 0, plan.stderr);
    const planned = JSON.parse(plan.stdout).stages as { name: string; action: string; reason: string }[];
    assert.equal(planned.find((s) => s.name === "embed")!.action, "run", label);
    assert.match(planned.find((s) => s.name === "embed")!.reason, problem, label);

    const stages = await run(file);
    assert.deepEqual(
      stages.map((s) => [s.name, s.status]),
      [
        ["ingest", "cached"],
        ["embed", "ran"],
        ["prototypes", "cached"],
      ],
      `${label}: embed recomputed, prototypes reused (same bytes, same digest)`,
    );
    assert.match(stages.find((s) => s.name === "embed")!.reason, /output damaged in the store/);
    assert.deepEqual(readFileSync(target), original, `${label}: the same bytes are back`);
    const kept = path.join(workdir, "damaged", "store", "embed");
    assert.ok(existsSync(kept) && readdirSync(kept).length > 0, `${label}: the damaged copy is kept under damaged/store/embed`);
    const again = await run(file);
    assert.deepEqual(
      again.map((s) => s.status),
      ["cached", "cached", "cached"],
      `${label}: healed`,
    );
  }
});

test("prolearn verify finds a same-size change with its mtime put back; the next run recomputes it", { timeout: 120_000 }, async () => {
  const { file, workdir } = await setup();
  const first = await run(file);
  const target = embedFile(first);
  const clean = await cli(["verify", file]);
  assert.equal(clean.code, 0, clean.stderr);
  assert.match(clean.stderr, /all 3 outputs and 1 artifact intact/);

  // A touched file with unchanged bytes is re-hashed once and reused (its new mtime recorded).
  // Whole seconds, so the mtime can be put back exactly below.
  const stamp = Math.floor(Date.now() / 1000) - 3600;
  utimesSync(target, stamp, stamp);
  assert.deepEqual(
    (await run(file)).map((s) => s.status),
    ["cached", "cached", "cached"],
  );
  const bytes = readFileSync(target);
  bytes[Math.floor(statSync(target).size / 2)] ^= 0xff;
  writeFileSync(target, bytes);
  utimesSync(target, stamp, stamp);
  // The per-run check trusts size and mtime: this change passes it.
  assert.deepEqual(
    (await run(file)).map((s) => s.status),
    ["cached", "cached", "cached"],
  );

  const found = await cli(["verify", file]);
  assert.equal(found.code, 1, found.stderr);
  assert.match(found.stdout, /DAMAGED {2}embed\/[0-9a-f]{32}\n {4}embeddings\.parquet: sha256 .* is not the published/);
  assert.match(found.stderr, /1 damaged: run the pipeline again \(prolearn run .*pipeline\.yaml\); a damaged output is recomputed/);
  const json = JSON.parse((await cli(["verify", "--workdir", workdir, "--json"])).stdout) as { ok: boolean; outputs: { stage: string; ok: boolean }[] };
  assert.equal(json.ok, false);
  assert.deepEqual(
    json.outputs.filter((o) => !o.ok).map((o) => o.stage),
    ["embed"],
  );

  const healed = await run(file);
  assert.equal(healed.find((s) => s.name === "embed")!.status, "ran", "verify made the next run re-hash the file");
  const after = await cli(["verify", file]);
  assert.equal(after.code, 0, after.stdout + after.stderr);
});

test("a store manifest edited to list a file outside its folder is damage, not a path handed downstream", { timeout: 120_000 }, async () => {
  const { file, workdir } = await setup();
  const first = await run(file);
  const embed = first.find((s) => s.name === "embed")!;
  const manifestFile = path.join(path.dirname(embed.outputs["embeddings.parquet"]!), "_manifest.json");
  const manifest = JSON.parse(readFileSync(manifestFile, "utf8")) as { files: Record<string, unknown> };
  manifest.files["../../../../pipeline.yaml"] = { sha256: "0".repeat(64), size: 1 };
  writeFileSync(manifestFile, JSON.stringify(manifest));
  const stages = await run(file);
  const rerun = stages.find((s) => s.name === "embed")!;
  assert.equal(rerun.status, "ran");
  assert.match(rerun.reason, /_manifest\.json: lists "\.\.\/\.\.\/\.\.\/\.\.\/pipeline\.yaml", outside its folder/);
  assert.deepEqual(Object.keys(rerun.outputs).sort(), ["embeddings.parquet", "encoder.json"]);
  assert.ok(existsSync(path.join(workdir, "damaged", "store", "embed")));
});
