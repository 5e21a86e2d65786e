/**
 * HDBSCAN speed, 512-d Gaussian blobs with 10% uniform noise (deterministic):
 * - ours vs hdbscan-ts (the package the card named) at n = 500, 1,000, 2,000;
 * - ours alone at 5,716 (QaTa training reports) and 20,000;
 * - R's dbscan::hdbscan at 5,716 in the same run (Rscript; its time is measured inside R, so
 *   reading the CSV is not counted), when Rscript and r-cran-dbscan are installed.
 * Every measurement runs in a fresh child process, which reports its own peak RSS.
 *   node --import tsx bench/hdbscan.ts [--skip-hdbscan-ts-2000] [--sizes 500,1000,...]
 * hdbscan-ts at 2,000 takes minutes (411 s measured once); with --skip-hdbscan-ts-2000 its time
 * is extrapolated from its measured 500 -> 1,000 scaling and marked "(extrapolated)".
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { mulberry32 } from "../src/util/random.js";

const DIM = 512;
const MIN_CLUSTER_SIZE = 10;
const self = fileURLToPath(import.meta.url);
const repoRoot = path.resolve(path.dirname(self), "..");

/** n points: 40 blobs of different spreads (0.15..0.35 per axis around N(0,1) centres) + 10% uniform noise. */
export function benchPoints(n: number): Float32Array {
  const random = mulberry32(2024);
  const normal = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const blobs = 40;
  const centers = Array.from({ length: blobs }, () => Float32Array.from({ length: DIM }, normal));
  const points = new Float32Array(n * DIM);
  const noise = Math.floor(n / 10);
  for (let i = 0; i < n; i++) {
    if (i < n - noise) {
      const b = i % blobs;
      const spread = 0.15 + (0.2 * b) / blobs;
      for (let k = 0; k < DIM; k++) points[i * DIM + k] = centers[b]![k]! + spread * normal();
    } else for (let k = 0; k < DIM; k++) points[i * DIM + k] = (random() * 2 - 1) * 2;
  }
  return points;
}

interface ChildResult {
  seconds: number;
  maxRssMiB: number;
  clusters: number;
  noise: number;
}

/** Distance matrix only: ONNX Runtime Gemm blocks vs plain JS loops, same points, same process. */
async function distanceChild(n: number): Promise<void> {
  const { pairwiseDistances, pairwiseDistancesJs } = await import("../src/prototypes/distances.js");
  const points = benchPoints(n);
  await pairwiseDistances(benchPoints(64), 64, DIM, "euclidean");
  let start = performance.now();
  const fast = await pairwiseDistances(points, n, DIM, "euclidean");
  const ortSeconds = (performance.now() - start) / 1000;
  start = performance.now();
  const slow = pairwiseDistancesJs(points, n, DIM, "euclidean");
  const jsSeconds = (performance.now() - start) / 1000;
  let maxDiff = 0;
  for (let i = 0; i < fast.length; i++) maxDiff = Math.max(maxDiff, Math.abs(fast[i]! - slow[i]!));
  process.stdout.write(JSON.stringify({ ortSeconds, jsSeconds, maxDiff }) + "\n");
}

async function child(kind: string, n: number): Promise<void> {
  if (kind === "distances") return distanceChild(n);
  const points = benchPoints(n);
  let clusters = 0;
  let noise = 0;
  // Modules load before the clock starts (for both); creating ONNX Runtime's session is counted.
  const { hdbscan } = await import("../src/prototypes/hdbscan.js");
  const { HDBSCAN } = (await import("hdbscan-ts")) as unknown as {
    HDBSCAN: new (o: { minClusterSize: number; minSamples: number }) => { fit(d: number[][]): number[] };
  };
  const start = performance.now();
  if (kind === "ours") {
    const result = await hdbscan(points, { dim: DIM, minClusterSize: MIN_CLUSTER_SIZE });
    clusters = result.numClusters;
    noise = result.labels.filter((l) => l < 0).length;
  } else {
    const rows = Array.from({ length: n }, (_, i) => Array.from(points.subarray(i * DIM, (i + 1) * DIM)));
    const labels = new HDBSCAN({ minClusterSize: MIN_CLUSTER_SIZE, minSamples: MIN_CLUSTER_SIZE }).fit(rows);
    clusters = new Set(labels.filter((l) => l >= 0)).size;
    noise = labels.filter((l) => l < 0).length;
  }
  const seconds = (performance.now() - start) / 1000;
  const result: ChildResult = { seconds, maxRssMiB: process.resourceUsage().maxRSS / 1024, clusters, noise };
  process.stdout.write(JSON.stringify(result) + "\n");
}

function runChild(kind: string, n: number): ChildResult {
  const out = execFileSync(process.execPath, ["--import", "tsx", self, "--child", kind, String(n)], { cwd: repoRoot, encoding: "utf8", maxBuffer: 1 << 20 });
  return JSON.parse(out.trim().split("\n").pop()!) as ChildResult;
}

function runR(n: number): { seconds: number; clusters: number } | string {
  if (spawnSync("Rscript", ["-e", "suppressPackageStartupMessages(library(dbscan))"], { stdio: "ignore" }).status !== 0)
    return "Rscript with dbscan not installed (apt r-cran-dbscan)";
  const dir = mkdtempSync(path.join(os.tmpdir(), "prolearn-bench-r-"));
  try {
    const points = benchPoints(n);
    const lines: string[] = [];
    for (let i = 0; i < n; i++) lines.push(Array.from(points.subarray(i * DIM, (i + 1) * DIM)).join(","));
    writeFileSync(path.join(dir, "points.csv"), lines.join("\n") + "\n");
    const log = execFileSync(
      "Rscript",
      [
        path.join(repoRoot, "test/prototypes/reference/make-reference.R"),
        path.join(dir, "points.csv"),
        String(MIN_CLUSTER_SIZE),
        "euclidean",
        path.join(dir, "labels.txt"),
      ],
      { encoding: "utf8" },
    );
    const seconds = Number(/elapsed ([\d.]+)/.exec(log)?.[1]);
    const labels = execFileSync("cat", [path.join(dir, "labels.txt")], { encoding: "utf8" })
      .trim()
      .split("\n")
      .map(Number);
    return { seconds, clusters: new Set(labels.filter((l) => l >= 0)).size };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === "--child") return child(args[1]!, Number(args[2]));
  const skip2000 = args.includes("--skip-hdbscan-ts-2000");
  const sizesArg = args.indexOf("--sizes");
  const sizes = sizesArg >= 0 ? args[sizesArg + 1]!.split(",").map(Number) : [500, 1000, 2000, 5716, 20000];
  console.log(`HDBSCAN bench: ${DIM}-d blobs + 10% noise, minClusterSize = minSamples = ${MIN_CLUSTER_SIZE}, euclidean`);
  console.log(
    `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, load ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}`,
  );
  for (const n of [1000, 2000]) {
    const out = execFileSync(process.execPath, ["--import", "tsx", self, "--child", "distances", String(n)], { cwd: repoRoot, encoding: "utf8" });
    const d = JSON.parse(out.trim().split("\n").pop()!) as { ortSeconds: number; jsSeconds: number; maxDiff: number };
    console.log(
      `distance matrix n=${n}: ORT Gemm blocks ${d.ortSeconds.toFixed(3)} s, plain JS ${d.jsSeconds.toFixed(3)} s -> x${(d.jsSeconds / d.ortSeconds).toFixed(1)} (max |diff| ${d.maxDiff.toExponential(1)})`,
    );
  }
  const theirs = new Map<number, number>();
  for (const n of sizes) {
    const ours = runChild("ours", n);
    let line = `n=${String(n).padStart(6)}  ours ${ours.seconds.toFixed(2).padStart(7)} s  peak RSS ${ours.maxRssMiB.toFixed(0).padStart(5)} MiB  (${ours.clusters} clusters, ${ours.noise} noise)`;
    if (n <= 2000) {
      let t: number;
      let note = "";
      if (n === 2000 && skip2000 && theirs.has(500) && theirs.has(1000)) {
        const exponent = Math.log2(theirs.get(1000)! / theirs.get(500)!);
        t = theirs.get(1000)! * 2 ** exponent;
        note = ` (extrapolated, n^${exponent.toFixed(2)})`;
      } else {
        const r = runChild("hdbscan-ts", n);
        t = r.seconds;
        note = `, peak RSS ${r.maxRssMiB.toFixed(0)} MiB, ${r.clusters} clusters`;
      }
      theirs.set(n, t);
      line += `  | hdbscan-ts ${t.toFixed(1)} s${note}  -> ours x${(t / ours.seconds).toFixed(0)} faster`;
    }
    if (n === 5716) {
      const r = runR(n);
      line +=
        typeof r === "string"
          ? `  | R: skipped (${r})`
          : `  | R dbscan::hdbscan ${r.seconds.toFixed(1)} s (${r.clusters} clusters) -> ours at ${((100 * ours.seconds) / r.seconds).toFixed(1)}% of R's time`;
    }
    console.log(line);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === self) await main();
