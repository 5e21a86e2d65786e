/**
 * Regenerates the stored reference labels: for each set in ../fixtures.ts, writes the points to
 * a scratch CSV, runs R's dbscan::hdbscan (make-reference.R) and stores
 * `<name>.labels.json` = { set, minPts, metric, n, dim, pointsDigest, rDbscanVersion, labels }.
 * 2-d sets also keep their points as `<name>.csv` (small). Run once, commit the output:
 *   node --import tsx test/prototypes/reference/make-reference.ts
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { referenceSets, pointsCsv, pointsDigest } from "../fixtures.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const scratch = mkdtempSync(path.join(os.tmpdir(), "prolearn-ref-"));
const version = execFileSync("Rscript", ["-e", 'cat(as.character(packageVersion("dbscan")))'], { encoding: "utf8" }).trim();
try {
  for (const set of referenceSets()) {
    const csv = path.join(scratch, `${set.name}.csv`);
    const out = path.join(scratch, `${set.name}.labels`);
    writeFileSync(csv, pointsCsv(set));
    if (set.dim <= 2) writeFileSync(path.join(here, `${set.name}.csv`), pointsCsv(set));
    const log = execFileSync("Rscript", [path.join(here, "make-reference.R"), csv, String(set.minPts), set.metric, out], { encoding: "utf8" });
    const labels = readFileSync(out, "utf8").trim().split("\n").map(Number);
    const record = {
      set: set.name,
      minPts: set.minPts,
      metric: set.metric,
      n: set.n,
      dim: set.dim,
      pointsDigest: pointsDigest(set),
      rDbscanVersion: version,
      labels,
    };
    writeFileSync(path.join(here, `${set.name}.labels.json`), JSON.stringify(record) + "\n");
    const clusters = new Set(labels.filter((l) => l >= 0)).size;
    console.log(`${set.name}: n=${set.n} dim=${set.dim} clusters=${clusters} noise=${labels.filter((l) => l < 0).length} (${log.trim()})`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
