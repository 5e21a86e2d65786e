/**
 * Agreement of HDBSCAN's approximate path (neighbour graph + MST) with the exact one (dense
 * matrix), as ARI, with the time and peak RSS of each, on:
 *   - blobs: bench/hdbscan.ts's 512-d blobs + 10% noise at --n points (default 20,000), cosine
 *     and euclidean, minClusterSize 10;
 *   - reports: the real QaTa training reports (5,716 SGSeg captions + 7,145 LViT texts, from
 *     $PROLEARN_REAL_DATA or ../shared/data) embedded with the builtin text encoder, cosine,
 *     minClusterSize 5 (the stage's default). Repeated texts collapse to weighted points on both
 *     paths, so this compares the paths on the distinct texts with their multiplicities.
 * Each path runs in its own child process so each peak RSS is its own.
 *   node --import tsx bench/hdbscan-approximate.ts [--n 20000] [--part blobs|reports|all]
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { adjustedRandIndex } from "../src/prototypes/ari.js";
import { benchPoints } from "./hdbscan.js";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "20000" },
    part: { type: "string", default: "all" },
    phase: { type: "string" },
    input: { type: "string" },
    method: { type: "string" },
    metric: { type: "string" },
    mcs: { type: "string" },
    out: { type: "string" },
  },
});
const SELF = import.meta.filename;
const repoRoot = path.resolve(path.dirname(SELF), "..");
const realData = process.env.PROLEARN_REAL_DATA ?? path.resolve(repoRoot, "../shared/data");

interface PathRun {
  seconds: number;
  peakRssMiB: number;
  clusters: number;
  noise: number;
  log: string;
}

/** Child: one HDBSCAN path over points in a raw float32 file (first 4 bytes: dim). */
async function runPath(): Promise<void> {
  const { hdbscan } = await import("../src/prototypes/hdbscan.js");
  const bytes = readFileSync(values.input!);
  const dim = bytes.readUInt32LE(0);
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + 4, bytes.byteOffset + bytes.length));
  const lines: string[] = [];
  const started = performance.now();
  const result = await hdbscan(data, {
    dim,
    minClusterSize: Number(values.mcs),
    metric: values.metric as "cosine" | "euclidean",
    method: values.method as "exact" | "approximate",
    log: (l) => lines.push(l),
  });
  const seconds = (performance.now() - started) / 1000;
  writeFileSync(values.out!, Buffer.from(result.labels.buffer));
  const run: PathRun = {
    seconds,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    clusters: result.numClusters,
    noise: result.labels.filter((l) => l < 0).length,
    log: lines.join("; "),
  };
  process.stdout.write(`${JSON.stringify(run)}\n`);
}

function compare(name: string, data: Float32Array, dim: number, metric: string, mcs: number, dir: string): string {
  const input = path.join(dir, `${name}-${metric}.f32`);
  const header = Buffer.alloc(4);
  header.writeUInt32LE(dim);
  writeFileSync(input, Buffer.concat([header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
  const runs: Record<string, PathRun & { labels: Int32Array }> = {};
  for (const method of ["exact", "approximate"]) {
    const out = path.join(dir, `${name}-${metric}-${method}.labels`);
    const stdout = execFileSync(
      process.execPath,
      ["--import", "tsx", SELF, "--phase", "path", "--input", input, "--method", method, "--metric", metric, "--mcs", String(mcs), "--out", out],
      { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
    );
    const run = JSON.parse(stdout.trim().split("\n").pop()!) as PathRun;
    const raw = readFileSync(out);
    runs[method] = { ...run, labels: new Int32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length)) };
    console.error(
      `${name} ${metric} ${method}: ${run.seconds.toFixed(1)} s, ${run.peakRssMiB.toFixed(0)} MiB, ${run.clusters} clusters, ${run.noise} noise (${run.log}); load ${os.loadavg()[0]!.toFixed(1)}`,
    );
  }
  const ari = adjustedRandIndex(runs.exact!.labels, runs.approximate!.labels);
  const n = data.length / dim;
  const e = runs.exact!;
  const a = runs.approximate!;
  return `| ${name} | ${n.toLocaleString("en-US")} | ${metric} | ${mcs} | ${ari.toFixed(4)} | ${e.clusters} / ${a.clusters} | ${e.noise} / ${a.noise} | ${e.seconds.toFixed(1)} / ${a.seconds.toFixed(1)} | ${e.peakRssMiB.toFixed(0)} / ${a.peakRssMiB.toFixed(0)} |`;
}

async function reportEmbeddings(): Promise<{ data: Float32Array; dim: number; n: number; distinct: number } | string> {
  const lvitCsv = path.join(realData, "qata-cov19/prompt-lvit/train.csv");
  const annotation = path.join(realData, "qata-cov19/QaTa/prompts/annotation.json");
  if (!existsSync(lvitCsv) || !existsSync(annotation)) return `real QaTa text not found under ${realData}`;
  const lvit = readFileSync(lvitCsv, "utf8")
    .split(/\r?\n/)
    .slice(1)
    .filter(Boolean)
    .map((line) =>
      line
        .slice(line.indexOf(",") + 1)
        .replace(/^"|"$/g, "")
        .replace(/""/g, '"'),
    );
  const sgseg = (JSON.parse(readFileSync(annotation, "utf8")) as { train: { caption: string }[] }).train.map((r) => r.caption);
  const texts = [...sgseg, ...lvit];
  const { BuiltinEncoder } = await import("../src/embed/builtin.js");
  const encoder = new BuiltinEncoder({ fitTexts: texts });
  const data = await encoder.embedTexts(texts);
  return { data, dim: encoder.dim, n: texts.length, distinct: new Set(texts).size };
}

async function main(): Promise<void> {
  if (values.phase === "path") return runPath();
  const dir = mkdtempSync(path.join(os.tmpdir(), "prolearn-hdbscan-approx-"));
  console.error(
    `${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, load ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}`,
  );
  const rows = [
    "| data | points | metric | minClusterSize | ARI approx vs exact | clusters exact / approx | noise exact / approx | seconds exact / approx | peak RSS MiB exact / approx |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  if (values.part !== "reports") {
    const n = Number(values.n);
    const points = benchPoints(n);
    for (const metric of ["cosine", "euclidean"]) rows.push(compare("512-d blobs + 10% noise", points, 512, metric, 10, dir));
  }
  if (values.part !== "blobs") {
    const reports = await reportEmbeddings();
    if (typeof reports === "string") console.error(`reports skipped: ${reports}`);
    else rows.push(compare(`QaTa train reports, builtin (${reports.distinct} distinct texts)`, reports.data, reports.dim, "cosine", 5, dir));
  }
  console.log(rows.join("\n"));
}

await main();
