// Wall time of the embed stage on a generated 2,000-image set: in-process, then on BullMQ with
// 1 and 2 `prolearn worker` processes (started and ready before the clock starts).
// Run: node --import tsx bench/scale.ts [--images 2000] [--size 224] [--shard-rows 250]
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import path from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { parseArgs } from "node:util";
import { loadPipelineFile } from "../src/pipeline/spec.js";
import { runPipeline } from "../src/pipeline/engine.js";
import { BullMqExecutor } from "../src/queue/executor.js";
import { STAGES } from "../src/stages.js";
import { startRedis } from "../test/helpers/redis.js";
import { writeSyntheticDataset } from "../test/helpers/synthetic-dataset.js";

const { values } = parseArgs({
  options: { images: { type: "string", default: "2000" }, size: { type: "string", default: "224" }, "shard-rows": { type: "string", default: "250" } },
});
const images = Number(values.images);
const size = Number(values.size);
const shardRows = Number(values["shard-rows"]);
const CLI = path.resolve(import.meta.dirname, "../src/cli/main.ts");

const dir = mkdtempSync(path.join(tmpdir(), "prolearn-bench-scale-"));
const redis = await startRedis();
const children: ChildProcess[] = [];

function pipelineFile(name: string): string {
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    `name: bench-scale\nworkdir: wd-${name}\ndataset: { kind: qata-cov19, root: data }\nstages:\n  ingest: { shardSize: 256 }\n  embed: { shardRows: ${shardRows} }\n`,
  );
  return file;
}

async function startWorker(): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, "worker", "--redis", redis.url, "--root", dir], { stdio: ["ignore", "ignore", "pipe"] });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    let text = "";
    child.stderr!.on("data", (c: Buffer) => {
      text += c.toString();
      if (process.env.BENCH_DEBUG) process.stderr.write(`[worker ${child.pid}] ${c.toString()}`);
      if (text.includes("worker ready")) resolve();
    });
    child.on("exit", (code) => reject(new Error(`worker exited (${code}): ${text}`)));
  });
  return child;
}

async function stopWorkers(): Promise<void> {
  await Promise.all(
    children.splice(0).map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
        }),
    ),
  );
}

/** Embeds on a copy of the workdir where ingest is cached and no embedding is (row cache empty). */
async function timeEmbed(name: string, workers: number): Promise<{ seconds: number; digest: string }> {
  cpSync(path.join(dir, "wd-template"), path.join(dir, `wd-${name}`), { recursive: true });
  for (let i = 0; i < workers; i++) await startWorker();
  const executor = workers ? new BullMqExecutor({ redisUrl: redis.url, registry: STAGES }) : undefined;
  try {
    const result = await runPipeline(loadPipelineFile(pipelineFile(name), STAGES), { registry: STAGES, executor });
    const embed = result.stages.find((s) => s.name === "embed")!;
    if (result.status !== "ok" || embed.status !== "ran") throw new Error(`${name}: embed ${embed.status}: ${embed.error ?? ""}`);
    return { seconds: embed.seconds, digest: embed.digest! };
  } finally {
    await executor?.close();
    await stopWorkers();
  }
}

try {
  const generated = performance.now();
  await writeSyntheticDataset(path.join(dir, "data"), { count: images, size });
  const generateSeconds = (performance.now() - generated) / 1000;
  const ingest = await runPipeline(loadPipelineFile(pipelineFile("template"), STAGES), { registry: STAGES, until: "ingest" });
  if (ingest.status !== "ok") throw new Error(`ingest failed: ${ingest.stages[0]!.error}`);

  const inProcess = await timeEmbed("in-process", 0);
  const one = await timeEmbed("one-worker", 1);
  const two = await timeEmbed("two-workers", 2);
  if (new Set([inProcess.digest, one.digest, two.digest]).size !== 1) throw new Error("embed digests differ between executors");

  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}`);
  console.log(
    `dataset: ${images} generated ${size}x${size} PNG images (+ masks, reports) in ${generateSeconds.toFixed(1)} s; ingest ${ingest.stages[0]!.seconds.toFixed(1)} s in-process`,
  );
  console.log(
    `embed: builtin encoder, shardRows ${shardRows} (${Math.ceil(images / shardRows)} shards); identical output digest ${inProcess.digest.slice(0, 12)} in all three runs`,
  );
  console.log("| executor | embed wall s | vs 1 worker |");
  console.log("|---|---|---|");
  for (const [label, r] of [
    ["in-process", inProcess],
    ["bullmq, 1 worker", one],
    ["bullmq, 2 workers", two],
  ] as const) {
    console.log(`| ${label} | ${r.seconds.toFixed(2)} | ${(one.seconds / r.seconds).toFixed(2)}x |`);
  }
} finally {
  await stopWorkers();
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
}
