/**
 * Issue 19: do the in-process and the BullMQ executors give identical outputs at 30,000 images?
 * Generates QaTa-like pairs (32x32 PNG; the row count is the point), then runs ingest -> embed
 * (builtin) -> prototypes twice from empty workdirs: in-process, and on BullMQ (a real
 * redis-server) with `--workers` `prolearn worker` processes. Compares every stage's output
 * digest and the SHA-256 of every published file; exits 1 on any difference.
 *   node --import tsx bench/executors-30k.ts [--images 30000] [--workers 2] [--dir DIR]
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { runPipeline, type RunResult } from "../src/pipeline/engine.js";
import { loadPipelineFile } from "../src/pipeline/spec.js";
import { BullMqExecutor } from "../src/queue/executor.js";
import { STAGES } from "../src/stages.js";
import { writeFixtureDataset } from "../src/synthetic/index.js";
import { sha256File } from "../src/util/hash.js";
import { startRedis } from "../test/helpers/redis.js";

const { values } = parseArgs({
  options: { images: { type: "string", default: "30000" }, workers: { type: "string", default: "2" }, dir: { type: "string" } },
});
const images = Number(values.images);
const workers = Number(values.workers);
const root = values.dir ?? mkdtempSync(path.join(os.tmpdir(), "prolearn-bench-executors-"));
const CLI = path.resolve(import.meta.dirname, "../src/cli/main.ts");
mkdirSync(root, { recursive: true });
const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(" ");
console.error(`working in ${root}; ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, load ${load()}`);

if (!existsSync(path.join(root, "data"))) {
  const t = performance.now();
  await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: path.join(root, "data"), n: images, seed: 1, size: 32 });
  console.error(`generated ${images} pairs in ${((performance.now() - t) / 1000).toFixed(0)} s`);
}

function pipelineFile(name: string): string {
  const file = path.join(root, `${name}.yaml`);
  rmSync(path.join(root, `wd-${name}`), { recursive: true, force: true });
  writeFileSync(
    file,
    `name: executors\nworkdir: wd-${name}\ndataset: { kind: qata-cov19, root: data, layout: prolearn, seed: 1 }\nstages:\n  ingest: {}\n  embed: { encoder: builtin }\n  prototypes: {}\n`,
  );
  return file;
}

async function startWorker(redisUrl: string, children: ChildProcess[]): Promise<void> {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, "worker", "--redis", redisUrl, "--root", root], { stdio: ["ignore", "ignore", "pipe"] });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    let text = "";
    child.stderr!.on("data", (c: Buffer) => {
      text += c.toString();
      if (text.includes("worker ready")) resolve();
    });
    child.on("exit", (code) => reject(new Error(`worker exited (${code}): ${text}`)));
  });
}

interface Outcome {
  result: RunResult;
  files: Map<string, string>;
}

async function outcome(result: RunResult): Promise<Outcome> {
  if (result.status !== "ok") throw new Error(`run failed: ${result.stages.map((s) => `${s.name} ${s.status} ${s.error ?? ""}`).join("; ")}`);
  const files = new Map<string, string>();
  for (const stage of result.stages) for (const [name, file] of Object.entries(stage.outputs)) files.set(`${stage.name}/${name}`, await sha256File(file));
  return { result, files };
}

const inProcess = await outcome(await runPipeline(loadPipelineFile(pipelineFile("in-process"), STAGES), { registry: STAGES }));
console.error(`in-process: ${inProcess.result.stages.map((s) => `${s.name} ${s.seconds.toFixed(0)} s`).join(", ")}; load ${load()}`);

const redis = await startRedis();
const children: ChildProcess[] = [];
let queued: Outcome;
try {
  for (let i = 0; i < workers; i++) await startWorker(redis.url, children);
  const executor = new BullMqExecutor({ redisUrl: redis.url, registry: STAGES });
  try {
    queued = await outcome(await runPipeline(loadPipelineFile(pipelineFile("bullmq"), STAGES), { registry: STAGES, executor }));
  } finally {
    await executor.close();
  }
} finally {
  for (const child of children) child.kill("SIGTERM");
  await redis.stop();
}
console.error(`bullmq (${workers} workers): ${queued.result.stages.map((s) => `${s.name} ${s.seconds.toFixed(0)} s`).join(", ")}; load ${load()}`);

console.log(
  `${images} generated 32x32 pairs, ingest -> embed (builtin) -> prototypes; ${os.cpus().length} x ${os.cpus()[0]?.model ?? "cpu"}, Node ${process.version}`,
);
console.log("| stage | in-process wall s | BullMQ wall s | output digest (in-process) | output digest (BullMQ) | identical |");
console.log("|---|---|---|---|---|---|");
let differ = 0;
for (const a of inProcess.result.stages) {
  const b = queued.result.stages.find((s) => s.name === a.name)!;
  const same = a.digest === b.digest;
  if (!same) differ++;
  console.log(
    `| ${a.name} | ${a.seconds.toFixed(1)} | ${b.seconds.toFixed(1)} | ${a.digest?.slice(0, 12)} | ${b.digest?.slice(0, 12)} | ${same ? "yes" : "**no**"} |`,
  );
}
const fileDiffs = [...inProcess.files].filter(([name, sha]) => queued.files.get(name) !== sha).map(([name]) => name);
console.log(`published files compared by SHA-256: ${inProcess.files.size}; different: ${fileDiffs.length ? fileDiffs.join(", ") : "none"}`);
if (differ || fileDiffs.length) process.exit(1);
