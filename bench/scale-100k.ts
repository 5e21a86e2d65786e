/**
 * Row-count scaling (issue 19): wall time and peak RSS of each stage as the dataset grows.
 *   images:  generated QaTa-like pairs (32x32 by default; the row count is the point) through
 *            ingest -> embed (builtin) -> prototypes at each --sizes, one child process per stage
 *            (so each peak RSS is that stage's own; earlier stages come from the cache).
 *   reports: the prototypes stage alone on --reports generated 512-d report embeddings, once with
 *            realistic repetition (--distinct distinct texts, skewed multiplicities; exact path)
 *            and once all distinct (approximate path).
 * Prints a Markdown table per part plus the growth exponent (log time ratio / log size ratio).
 *   node --import tsx bench/scale-100k.ts [--part images|reports|all] [--sizes 10000,30000,100000]
 *        [--reports 200000] [--distinct 4000] [--image-size 32] [--dir DIR]
 *   node --import tsx bench/scale-100k.ts --phase tables --dir DIR   # tables from every run kept in DIR
 */
import { execFileSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Bool, Table, Utf8, vectorFromArray } from "apache-arrow";

const { values } = parseArgs({
  options: {
    part: { type: "string", default: "all" },
    sizes: { type: "string", default: "10000,30000,100000" },
    reports: { type: "string", default: "200000" },
    distinct: { type: "string", default: "4000" },
    "image-size": { type: "string", default: "32" },
    dir: { type: "string" },
    phase: { type: "string" },
    pipeline: { type: "string" },
    stage: { type: "string" },
    embed: { type: "string" },
    method: { type: "string" },
  },
});
const SELF = import.meta.filename;

interface StageRun {
  stage: string;
  rows: number;
  seconds: number;
  cpuSeconds: number;
  peakRssMiB: number;
  load: number;
  note: string;
}

function child(args: string[]): StageRun {
  const before = os.loadavg()[0]!;
  const out = execFileSync(process.execPath, ["--import", "tsx", SELF, ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 1 << 26,
  });
  const run = JSON.parse(out.trim().split("\n").pop()!) as StageRun;
  run.load = Math.max(before, os.loadavg()[0]!);
  return run;
}

/** CPU seconds of this process, all threads (ORT and libuv's pool included): on a machine shared with other jobs, the part of the wall time that was ours. */
function cpuSeconds(): number {
  const usage = process.resourceUsage();
  return (usage.userCPUTime + usage.systemCPUTime) / 1e6;
}

/** Child: one stage of the pipeline (its inputs cached by the previous children). */
async function runStage(pipelineFile: string, stage: string): Promise<void> {
  const { loadPipelineFile } = await import("../src/pipeline/spec.js");
  const { runPipeline } = await import("../src/pipeline/engine.js");
  const { STAGES } = await import("../src/stages.js");
  const result = await runPipeline(loadPipelineFile(pipelineFile, STAGES), { registry: STAGES, only: stage });
  const s = result.stages.find((x) => x.name === stage)!;
  if (s.status !== "ran") throw new Error(`${stage}: ${s.status} ${s.error ?? s.reason ?? ""}`);
  const summary = s.summary as Record<string, unknown>;
  const rows = Number(summary.rows ?? summary.pairedSamples ?? summary.ingested ?? 0);
  const note = stage === "prototypes" ? `${summary.pairedSamples} pairs, ${summary.surrogateLabels} labels, ${summary.prototypes} prototypes` : "";
  const line = JSON.stringify({
    stage,
    rows,
    seconds: s.seconds,
    cpuSeconds: cpuSeconds(),
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    note,
    load: os.loadavg()[0],
  });
  appendFileSync(path.join(path.dirname(pipelineFile), "runs.jsonl"), `${line}\n`);
  process.stdout.write(`${line}\n`);
}

/** Child: the prototypes stage on a generated embeddings.parquet, through the stage's own run. */
async function runPrototypesOnEmbeddings(embedDir: string, method: string): Promise<void> {
  const { prototypesParams, prototypesStage } = await import("../src/prototypes/stage.js");
  const workdir = path.join(path.dirname(embedDir), `work-${method}`);
  const outDir = path.join(workdir, "out");
  mkdirSync(outDir, { recursive: true });
  const logs: string[] = [];
  const pipeline = {
    name: "scale",
    baseDir: workdir,
    workdir,
    dataset: { kind: "qata-cov19", root: workdir, layout: "auto", textAvailability: 1, seed: 42 },
    stages: {},
  };
  const started = performance.now();
  const summary = (await prototypesStage.run!({
    stage: "prototypes",
    version: prototypesStage.version,
    pipeline: pipeline as never,
    params: prototypesParams.parse({ hdbscan: { method: "auto", maxExactPoints: 16384 } }),
    inputs: {
      embed: { stage: "embed", digest: "bench", dir: embedDir, files: { "embeddings.parquet": path.join(embedDir, "embeddings.parquet") }, summary: {} },
    },
    outDir,
    tmpDir: os.tmpdir(),
    rowCache: () => ({ get: () => undefined, put: () => undefined }),
    resources: {},
    emit: () => undefined,
    log: (message: string) => {
      logs.push(message);
      // BENCH_LOG=1 shows the stage's log as it runs, with the seconds since the start.
      if (process.env.BENCH_LOG) console.error(`[${((performance.now() - started) / 1000).toFixed(1)} s] ${message}`);
    },
    warn: (code: string, message: string) => void logs.push(`warning ${code}: ${message}`),
    signal: new AbortController().signal,
  } as never)) as Record<string, unknown>;
  const seconds = (performance.now() - started) / 1000;
  const path_ = logs.find((l) => l.startsWith("hdbscan:")) ?? "";
  const line = JSON.stringify({
    stage: `prototypes (${method})`,
    rows: summary.pairedSamples,
    seconds,
    cpuSeconds: cpuSeconds(),
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    note: `${path_.replace(/^hdbscan: /, "")}; ${summary.surrogateLabels} labels, ${summary.noise} noise, ${summary.prototypes} prototypes`,
    load: os.loadavg()[0],
  });
  appendFileSync(path.join(path.dirname(embedDir), "runs.jsonl"), `${line}\n`);
  process.stdout.write(`${line}\n`);
}

/** n report embeddings (512-d): `distinct` texts around 60 topics, repeated with skewed counts (distinct = n: no repetition). */
async function writeReportEmbeddings(dir: string, n: number, distinct: number): Promise<void> {
  const { blobs, withRepetition } = await import("../test/prototypes/blobs.js");
  const { embeddingVector } = await import("../src/io/tables.js");
  const { writeParquetBatches } = await import("../src/io/parquet.js");
  const dim = 512;
  const base = blobs({ points: distinct, dim, blobs: 60, seed: 5, noiseShare: 0.03, separation: 1.5 });
  const texts = distinct === n ? base.data : withRepetition(base.data, dim, n, 6).data;
  // Image embeddings: the text's direction plus as much noise again (paired, not identical).
  const images = new Float32Array(n * dim);
  let state = 99;
  const noise = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 3;
  for (let i = 0; i < n * dim; i++) images[i] = texts[i]! + noise();
  mkdirSync(dir, { recursive: true });
  const group = 4096;
  function* batches() {
    for (let start = 0; start < n; start += group) {
      const end = Math.min(n, start + group);
      const ids = Array.from({ length: end - start }, (_, r) => `r${String(start + r).padStart(7, "0")}`);
      // 90% train, 10% val (the usefulness check), every row with its report.
      const split = ids.map((_, r) => ((start + r) % 10 === 9 ? "val" : "train"));
      const table = new Table({
        id: vectorFromArray(ids, new Utf8()),
        split: vectorFromArray(split, new Utf8()),
        report_available: vectorFromArray(
          ids.map(() => true),
          new Bool(),
        ),
        image_embedding: embeddingVector(images.subarray(start * dim, end * dim), dim),
        text_embedding: embeddingVector(texts.subarray(start * dim, end * dim), dim),
      });
      yield* table.batches;
    }
  }
  await writeParquetBatches(path.join(dir, "embeddings.parquet"), batches(), { rowGroupSize: group });
  writeFileSync(path.join(dir, "encoder.json"), JSON.stringify({ id: "generated", dim, digest: "0".repeat(64), preprocessing: {} }));
}

function table(title: string, runs: StageRun[]): string {
  const lines = [`### ${title}`, "", "| stage | rows | wall s | CPU s | CPU ms / row | peak RSS MiB | load avg | note |", "|---|---|---|---|---|---|---|---|"];
  for (const r of runs)
    lines.push(
      `| ${r.stage} | ${r.rows.toLocaleString("en-US")} | ${r.seconds.toFixed(1)} | ${r.cpuSeconds.toFixed(1)} | ${((1000 * r.cpuSeconds) / Math.max(1, r.rows)).toFixed(3)} | ${r.peakRssMiB.toFixed(0)} | ${r.load.toFixed(1)} | ${r.note} |`,
    );
  return lines.join("\n");
}

function growth(runs: StageRun[]): string {
  const byStage = new Map<string, StageRun[]>();
  for (const r of runs) byStage.set(r.stage, [...(byStage.get(r.stage) ?? []), r]);
  const lines = ["", "| stage | CPU-time exponent (first -> last size) | CPU ms/row last / first |", "|---|---|---|"];
  for (const [stage, list] of byStage) {
    if (list.length < 2) continue;
    const a = list[0]!;
    const b = list[list.length - 1]!;
    const exponent = Math.log(b.cpuSeconds / a.cpuSeconds) / Math.log(b.rows / a.rows);
    lines.push(`| ${stage} | ${exponent.toFixed(2)} | ${(b.cpuSeconds / b.rows / (a.cpuSeconds / a.rows)).toFixed(2)}x |`);
  }
  return lines.join("\n");
}

/** Tables from the runs.jsonl files the children append to under `dir` (runs split over several invocations). */
function printTables(dir: string): void {
  const read = (file: string) =>
    existsSync(file)
      ? readFileSync(file, "utf8")
          .trim()
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l) as StageRun)
      : [];
  const sizes = readdirSync(dir)
    .filter((d) => d.startsWith("images-"))
    .sort((a, b) => Number(a.slice(7)) - Number(b.slice(7)));
  const images = sizes.flatMap((d) => read(path.join(dir, d, "runs.jsonl")));
  const reports = readdirSync(dir)
    .filter((d) => d.startsWith("reports-"))
    .sort()
    .flatMap((d) => read(path.join(dir, d, "runs.jsonl")));
  console.log(
    [table("images: ingest -> embed (builtin) -> prototypes", images), growth(images), table("prototypes alone on report embeddings (512-d)", reports)].join(
      "\n\n",
    ),
  );
}

async function main(): Promise<void> {
  if (values.phase === "stage") return runStage(values.pipeline!, values.stage!);
  if (values.phase === "prototypes") return runPrototypesOnEmbeddings(values.embed!, values.method!);
  if (values.phase === "tables") return printTables(values.dir!);
  const root = values.dir ?? mkdtempSync(path.join(os.tmpdir(), "prolearn-scale-100k-"));
  console.error(
    `working in ${root}; ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, load ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}`,
  );
  const out: string[] = [];
  if (values.part === "images" || values.part === "all") {
    const { writeFixtureDataset } = await import("../src/synthetic/index.js");
    const runs: StageRun[] = [];
    for (const size of values.sizes!.split(",").map(Number)) {
      const dir = path.join(root, `images-${size}`);
      if (!existsSync(path.join(dir, "data"))) {
        const t = performance.now();
        await writeFixtureDataset({
          kind: "qata-cov19",
          layout: "prolearn",
          out: path.join(dir, "data"),
          n: size,
          seed: 1,
          size: Number(values["image-size"]),
        });
        console.error(`generated ${size} pairs in ${((performance.now() - t) / 1000).toFixed(0)} s`);
      }
      const pipelineFile = path.join(dir, "pipeline.yaml");
      writeFileSync(
        pipelineFile,
        `name: scale\nworkdir: work\ndataset: { kind: qata-cov19, root: data, layout: prolearn, seed: 1 }\nstages:\n  ingest: {}\n  embed: { encoder: builtin }\n  prototypes: {}\n`,
      );
      for (const stage of ["ingest", "embed", "prototypes"]) {
        const run = child(["--phase", "stage", "--pipeline", pipelineFile, "--stage", stage]);
        console.error(`${size} ${stage}: ${run.seconds.toFixed(1)} s, ${run.peakRssMiB.toFixed(0)} MiB, load ${run.load.toFixed(1)} ${run.note}`);
        runs.push(run);
      }
    }
    out.push(table("images: ingest -> embed (builtin) -> prototypes", runs), growth(runs));
  }
  if (values.part === "reports" || values.part === "all") {
    const n = Number(values.reports);
    const runs: StageRun[] = [];
    for (const [name, distinct] of [
      ["repeated", Number(values.distinct)],
      ["distinct", n],
    ] as const) {
      const embedDir = path.join(root, `reports-${n}-${name}`, "embed");
      if (!existsSync(path.join(embedDir, "embeddings.parquet"))) await writeReportEmbeddings(embedDir, n, distinct);
      const run = child(["--phase", "prototypes", "--embed", embedDir, "--method", name]);
      console.error(`${n} reports ${name}: ${run.seconds.toFixed(1)} s, ${run.peakRssMiB.toFixed(0)} MiB, load ${run.load.toFixed(1)} ${run.note}`);
      runs.push(run);
    }
    out.push(table(`prototypes alone on ${n.toLocaleString("en-US")} report embeddings (512-d)`, runs));
  }
  console.log(out.join("\n\n"));
}

await main();
