/**
 * Peak memory of the embed stage against the size of the table it reads (issue 17): generates a
 * QaTa-like set of N 224x224 pairs (default 10,000) under the temp folder, ingests it, then runs
 * the embed stage (builtin encoder, row cache empty) once per shard size, each in its own child
 * process, and prints the child's peak RSS (ru_maxrss) beside the size of samples.parquet.
 * `--repo DIR` runs another checkout's code (e.g. a `git worktree` of an older commit) on the
 * same generated data, so two versions can be compared; its ingest runs too, in its own workdir.
 *   node --import tsx bench/embed-memory.ts [--n 10000] [--size 224] [--shard-rows 2048,256]
 *     [--data DIR (reused when it holds a generated set)] [--repo DIR] [--keep]
 */
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "10000" },
    size: { type: "string", default: "224" },
    "shard-rows": { type: "string", default: "2048,256" },
    data: { type: "string" },
    repo: { type: "string" },
    keep: { type: "boolean", default: false },
    // Child-process phase: run one pipeline of `--repo` and print what it measured as JSON.
    phase: { type: "string" },
    pipeline: { type: "string" },
    until: { type: "string" },
  },
});
const BENCH_REPO = path.resolve(import.meta.dirname, "..");
const repo = path.resolve(values.repo ?? BENCH_REPO);

/** What a child reports: the run's status, the stage's seconds, and its own memory. */
interface ChildReport {
  status: string;
  stages: { name: string; status: string; seconds: number; error?: string }[];
  /** RSS once the engine, the stage registry and the embed implementation are loaded, before the run. */
  loadedRssMiB: number;
  /** ru_maxrss at the last progress event of the embed stage: the peak through planning and the shards' reads and encoding, before the merge. */
  shardsPeakRssMiB: number | null;
  /** ru_maxrss of the child: the peak over its whole life. */
  peakRssMiB: number;
}

/** The child: loads the checkout's engine by path (so `--repo` may be an older commit) and runs. */
async function runChild(): Promise<void> {
  const load = <T>(file: string) => import(pathToFileURL(path.join(repo, file)).href) as Promise<T>;
  const { STAGES } = await load<{ STAGES: unknown }>("src/stages.ts");
  const { loadPipelineFile } = await load<{ loadPipelineFile: (file: string, registry: unknown) => unknown }>("src/pipeline/spec.ts");
  const { runPipeline } = await load<{
    runPipeline: (pipeline: unknown, options: Record<string, unknown>) => Promise<ChildReport & { stages: ChildReport["stages"] }>;
  }>("src/pipeline/engine.ts");
  const { InProcessExecutor } = await load<{ InProcessExecutor: new (registry: unknown, concurrency: number) => unknown }>("src/pipeline/executor.ts");
  // The stage would import these on its first shard; loading them first keeps module code out of
  // the difference between "loaded" and "peak".
  await load("src/embed/run.ts");
  const loadedRssMiB = process.memoryUsage().rss / 2 ** 20;
  // No report writer: the run report reads the tables too, and this measures the stage alone.
  // Shards run one after another, as `prolearn run` does by default (--concurrency 1).
  let shardsPeakRssMiB: number | null = null;
  const onEvent = (event: { kind: string; stage?: string }) => {
    if (event.kind === "progress" && event.stage === "embed") shardsPeakRssMiB = process.resourceUsage().maxRSS / 1024;
  };
  const result = await runPipeline(loadPipelineFile(values.pipeline!, STAGES), {
    registry: STAGES,
    executor: new InProcessExecutor(STAGES, 1),
    onEvent,
    ...(values.until ? { until: values.until } : {}),
  });
  const report: ChildReport = {
    status: result.status,
    stages: result.stages.map((s) => ({ name: s.name, status: s.status, seconds: s.seconds, ...(s.error ? { error: String(s.error) } : {}) })),
    loadedRssMiB,
    shardsPeakRssMiB,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

function child(pipeline: string, until?: string): ChildReport {
  const args = ["--import", "tsx", import.meta.filename, "--phase", "run", "--repo", repo, "--pipeline", pipeline, ...(until ? ["--until", until] : [])];
  // Run from this checkout so `tsx` resolves; the stages' own imports resolve from --repo.
  const out = execFileSync(process.execPath, args, { cwd: BENCH_REPO, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 64 * 2 ** 20 });
  const report = JSON.parse(out.trim().split("\n").at(-1)!) as ChildReport;
  if (report.status !== "ok") throw new Error(`${path.basename(pipeline)} failed: ${JSON.stringify(report.stages)}`);
  return report;
}

function findFile(dir: string, name: string): string | undefined {
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile() && entry.name === name) return path.join(entry.parentPath, entry.name);
  }
  return undefined;
}

function git(...args: string[]): string {
  return execFileSync("git", ["-C", repo, ...args], { encoding: "utf8" }).trim();
}

async function main(): Promise<void> {
  const n = Number(values.n);
  const size = Number(values.size);
  const shardRows = values["shard-rows"]!.split(",").map(Number);
  const work = mkdtempSync(path.join(os.tmpdir(), "prolearn-bench-embed-memory-"));
  const data = path.resolve(values.data ?? path.join(work, "data"));
  try {
    const fixtureInfo = path.join(data, "..", `${path.basename(data)}.fixtures.json`);
    if (!existsSync(fixtureInfo)) {
      mkdirSync(path.dirname(data), { recursive: true });
      const started = performance.now();
      // Generated with this checkout's CLI, so both versions see the very same files.
      const out = execFileSync(
        process.execPath,
        ["--import", "tsx", path.join(BENCH_REPO, "src/cli/main.ts"), "fixtures", "qata-cov19", "--out", data, "--n", String(n), "--size", String(size)],
        { cwd: BENCH_REPO, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
      );
      writeFileSync(fixtureInfo, out);
      console.error(`generated ${n} pairs in ${((performance.now() - started) / 1000).toFixed(0)} s`);
    }
    const fixtures = JSON.parse(readFileSync(fixtureInfo, "utf8")) as { root: string; reports?: string; samples: number };
    if (fixtures.samples !== n) throw new Error(`${data} holds ${fixtures.samples} samples, not ${n}; pass another --data`);

    const pipelineFile = (name: string, rows: number) => {
      const file = path.join(work, `${name}.yaml`);
      const reports = fixtures.reports ? `, reports: ${JSON.stringify(fixtures.reports)}` : "";
      writeFileSync(
        file,
        `name: bench-embed-memory\nworkdir: wd-${name}\ndataset: { kind: qata-cov19, root: ${JSON.stringify(fixtures.root)}${reports} }\nstages:\n  ingest: {}\n  embed: { encoder: builtin, shardRows: ${rows} }\n`,
      );
      return file;
    };

    const ingest = child(pipelineFile("template", shardRows[0]!), "ingest");
    const samples = findFile(path.join(work, "wd-template"), "samples.parquet");
    if (!samples) throw new Error("ingest published no samples.parquet");
    const samplesMiB = statSync(samples).size / 2 ** 20;

    const rows: { shardRows: number; report: ChildReport }[] = [];
    for (const r of shardRows) {
      // A copy of the workdir where ingest is cached and the embed row cache is empty.
      cpSync(path.join(work, "wd-template"), path.join(work, `wd-rows-${r}`), { recursive: true });
      const report = child(pipelineFile(`rows-${r}`, r));
      const embed = report.stages.find((s) => s.name === "embed");
      if (embed?.status !== "ran") throw new Error(`embed did not run with shardRows ${r}: ${JSON.stringify(report.stages)}`);
      rows.push({ shardRows: r, report });
      rmSync(path.join(work, `wd-rows-${r}`), { recursive: true, force: true });
    }

    const load = os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(", ");
    console.log(`code: ${repo} at ${git("rev-parse", "--short", "HEAD")} (${git("log", "-1", "--format=%s").slice(0, 70)})`);
    console.log(
      `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}; load average at the end ${load}`,
    );
    console.log(
      `data: ${n} generated ${size}x${size} QaTa-like pairs; samples.parquet ${samplesMiB.toFixed(1)} MiB; ingest ${ingest.stages[0]!.seconds.toFixed(0)} s, peak RSS ${ingest.peakRssMiB.toFixed(0)} MiB`,
    );
    console.log("| shardRows | shards | embed wall s | RSS with modules loaded | peak through the shards | embed peak RSS (with merge) |");
    console.log("|---|---|---|---|---|---|");
    for (const { shardRows: r, report } of rows) {
      const embed = report.stages.find((s) => s.name === "embed")!;
      console.log(
        `| ${r} | ${Math.ceil(n / r)} | ${embed.seconds.toFixed(0)} | ${report.loadedRssMiB.toFixed(0)} MiB | ${report.shardsPeakRssMiB === null ? "-" : `${report.shardsPeakRssMiB.toFixed(0)} MiB`} | ${report.peakRssMiB.toFixed(0)} MiB |`,
      );
    }
  } finally {
    if (!values.keep) rmSync(work, { recursive: true, force: true });
    else console.error(`kept ${work}`);
  }
}

if (values.phase === "run") await runChild();
else await main();
