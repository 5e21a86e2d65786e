import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { writeFixtureDataset } from "../../src/synthetic/index.js";

/**
 * A small Kvasir pipeline (ingest -> embed -> prototypes) on 24 generated pairs, in a fresh
 * folder: the cheapest run that fills a store, a catalog and an artifact registry to damage.
 */
export async function smallPrototypesPipeline(name: string): Promise<{ dir: string; file: string; workdir: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), `prolearn-${name}-`));
  await writeFixtureDataset({ kind: "kvasir-seg", layout: "kvasir", out: path.join(dir, "data"), n: 24, seed: 3, size: 32 });
  const file = path.join(dir, "pipeline.yaml");
  writeFileSync(
    file,
    `name: ${name}\ndataset:\n  kind: kvasir-seg\n  root: data\n  textAvailability: 0.5\nstages:\n  ingest: {}\n  embed: { encoder: builtin, dim: 32 }\n  prototypes: { minClusterSize: 2, k: 2 }\n`,
  );
  return { dir, file, workdir: path.join(dir, ".prolearn") };
}
