import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { smallPrototypesPipeline } from "./helpers.js";
import { cli } from "../helpers/cli.js";

async function setup(): Promise<{ file: string; workdir: string; catalog: string }> {
  const { file, workdir } = await smallPrototypesPipeline("recover");
  const first = await cli(["run", file]);
  assert.equal(first.code, 0, first.stderr);
  return { file, workdir, catalog: path.join(workdir, "catalog.sqlite") };
}

/** Every command that opens the catalog says it was lost or damaged, names the recovery, exit 1. */
async function assertRefused(file: string, workdir: string, message: RegExp): Promise<void> {
  for (const argv of [
    ["run", file],
    ["plan", file],
    ["status", file],
    ["artifacts", "list", "--workdir", workdir],
    ["artifacts", "verify", "--workdir", workdir],
    ["verify", file],
  ]) {
    const result = await cli(argv);
    assert.equal(result.code, 1, `${argv.join(" ")}: ${result.stderr}`);
    assert.doesNotMatch(result.stderr, /internal error|SqliteError:/, argv.join(" "));
    assert.match(result.stderr, message, argv.join(" "));
    assert.match(result.stderr, /hint: run `prolearn catalog rebuild --workdir .*\.prolearn`/, argv.join(" "));
  }
}

async function rebuildAndCheck(file: string, workdir: string, options: { deleted?: boolean } = {}): Promise<string> {
  const rebuilt = await cli(["catalog", "rebuild", file]);
  assert.equal(rebuilt.code, 0, rebuilt.stderr);
  if (options.deleted) assert.match(rebuilt.stderr, /there was no catalog file; a new one was created/);
  else {
    assert.match(rebuilt.stderr, /the old catalog is kept as .*catalog\.sqlite\.damaged-/);
    assert.ok(
      readdirSync(workdir).some((f) => f.startsWith("catalog.sqlite.damaged-")),
      "the damaged file is kept aside",
    );
  }
  const list = await cli(["artifacts", "list", "--workdir", workdir]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^recover@1 /m, "the artifact is registered again");
  const verify = await cli(["artifacts", "verify", "--workdir", workdir]);
  assert.equal(verify.code, 0, verify.stdout);
  const again = await cli(["run", file, "--json"]);
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(
    JSON.parse(again.stdout).stages.map((s: { status: string }) => s.status),
    ["cached", "cached", "cached"],
    "the store's outputs are reused",
  );
  return rebuilt.stderr;
}

test("a catalog truncated to 0 bytes (or deleted) is reported lost, not silently reset; catalog rebuild re-registers the artifacts", {
  timeout: 120_000,
}, async () => {
  const { file, workdir, catalog } = await setup();
  truncateSync(catalog, 0);
  rmSync(`${catalog}-wal`, { force: true });
  await assertRefused(file, workdir, /the catalog of .* was lost: catalog\.sqlite is empty \(0 bytes\), but catalog\.json records that one was created here/);
  assert.equal(statSync(catalog).size, 0, "nothing was written over it");
  const report = await rebuildAndCheck(file, workdir);
  assert.match(report, /registered again from manifests: recover@1/);

  // Deleted, in a workdir from before the sidecar: the store's outputs are the evidence.
  rmSync(catalog);
  rmSync(path.join(workdir, "catalog.json"));
  await assertRefused(file, workdir, /catalog\.sqlite is missing, but artifacts\/prototypes\/ holds published artifacts/);
  await rebuildAndCheck(file, workdir, { deleted: true });
});

test("a partly damaged catalog gives a CatalogError, not an internal SqliteError; rebuild salvages what it can read", { timeout: 120_000 }, async () => {
  const { file, workdir, catalog } = await setup();
  const db = new Database(catalog);
  const pageSize = db.pragma("page_size", { simple: true }) as number;
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
  // Garbage over every page after the first (the schema page stays, so the file still opens).
  const pages = statSync(catalog).size / pageSize;
  assert.ok(pages >= 3, `${pages} pages`);
  const fd = openSync(catalog, "r+");
  for (let page = 2; page < pages; page++) writeSync(fd, Buffer.alloc(pageSize, 0xa5), 0, pageSize, page * pageSize);
  closeSync(fd);
  await assertRefused(file, workdir, /the catalog .*catalog\.sqlite is damaged/);
  await rebuildAndCheck(file, workdir);
});

test("a file that is not SQLite at all is named as such", async () => {
  const { file, workdir, catalog } = await setup();
  writeFileSync(catalog, "this is not a database, just text someone saved over it\n".repeat(100));
  rmSync(`${catalog}-wal`, { force: true });
  rmSync(`${catalog}-shm`, { force: true });
  await assertRefused(file, workdir, /catalog\.sqlite is damaged: it is not a SQLite database/);
  await rebuildAndCheck(file, workdir);
  assert.ok(existsSync(catalog));
});

test("a folder in the catalog's place is refused by name; rebuild moves it aside; rebuild of a workdir that does not exist is a usage error", async () => {
  const { file, workdir, catalog } = await setup();
  for (const suffix of ["", "-wal", "-shm"]) rmSync(catalog + suffix, { force: true });
  mkdirSync(catalog);
  await assertRefused(file, workdir, /catalog\.sqlite is damaged: it is not a file/);
  await rebuildAndCheck(file, workdir);
  const missing = await cli(["catalog", "rebuild", "--workdir", path.join(workdir, "no-such")]);
  assert.equal(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /no workdir .*no-such/);
});
