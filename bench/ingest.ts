/**
 * Ingest throughput vs a decode-only baseline (same files, same library, same concurrency, same
 * run), and peak RSS, on a generated QaTa-like set of N 224x224 pairs (default 10,000).
 * Each measurement runs in its own child process so its peak RSS is its own.
 *   node --import tsx bench/ingest.ts [--n 10000] [--concurrency 4]
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import PQueue from "p-queue";
import sharp from "sharp";
import { writeFixtureDataset } from "../src/ingest/fixtures/index.js";
import { ingestParamsSchema, ingestStage } from "../src/ingest/stage.js";
import type { StageContext } from "../src/pipeline/stage.js";
import type { IngestParams } from "../src/ingest/stage.js";

const { values } = parseArgs({ options: { n: { type: "string", default: "10000" }, concurrency: { type: "string", default: "4" }, phase: { type: "string" }, root: { type: "string" } } });
const n = Number(values.n);
const concurrency = Number(values.concurrency);

async function decodeOnly(root: string): Promise<number> {
  const images = readdirSync(path.join(root, "images")).sort();
  const queue = new PQueue({ concurrency });
  for (const name of images) {
    void queue.add(async () => {
      await sharp(await readFile(path.join(root, "images", name))).raw().toBuffer();
      await sharp(await readFile(path.join(root, "masks", `mask_${name}`))).greyscale().raw().toBuffer();
    });
  }
  await queue.onIdle();
  return images.length;
}

async function ingest(root: string): Promise<number> {
  const work = mkdtempSync(path.join(os.tmpdir(), "prolearn-bench-ingest-"));
  const ctx: StageContext<IngestParams> = {
    stage: "ingest",
    pipeline: { name: "bench", baseDir: work, workdir: work, dataset: { kind: "qata-cov19", root, layout: "auto", reportKey: "p6", textAvailability: 1, seed: 42 }, stages: {} },
    params: ingestParamsSchema.parse({ concurrency }),
    inputs: {},
    outDir: mkdtempSync(path.join(work, "out-")),
    tmpDir: mkdtempSync(path.join(work, "tmp-")),
    // No row cache: the first run of a new dataset decodes everything.
    rowCache: () => ({ get: () => undefined, put: () => {} }),
    resources: {},
    emit: () => {},
    log: () => {},
    signal: new AbortController().signal,
  };
  const sharding = ingestStage.sharding!;
  const shards = await sharding.plan(ctx);
  const done = [];
  for (const shard of shards) {
    const dir = path.join(ctx.tmpDir, shard.id);
    mkdirSync(dir);
    await sharding.runShard(ctx, shard, dir);
    done.push({ shard, dir });
  }
  const summary = await sharding.merge(ctx, done);
  return summary.ingested as number;
}

if (values.phase) {
  // Sampled, not getrusage: Linux keeps ru_maxrss across exec, so a child would report its parent's peak.
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  const start = performance.now();
  const count = values.phase === "decode" ? await decodeOnly(values.root!) : await ingest(values.root!);
  const seconds = (performance.now() - start) / 1000;
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  process.stdout.write(JSON.stringify({ count, seconds, maxRssMiB: peak / 2 ** 20 }) + "\n");
} else {
  const root = path.join(os.tmpdir(), `prolearn-bench-ingest-qata-${n}-224`);
  if (!existsSync(path.join(root, "split.json"))) {
    const t = performance.now();
    await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: root, n, seed: 1, size: 224 });
    console.error(`generated ${n} pairs in ${((performance.now() - t) / 1000).toFixed(1)} s at ${root}`);
  }
  const run = (phase: string) => JSON.parse(execFileSync(process.execPath, ["--import", "tsx", path.resolve(import.meta.dirname, "ingest.ts"), "--phase", phase, "--root", root, "--concurrency", String(concurrency)], { encoding: "utf8" })) as { count: number; seconds: number; maxRssMiB: number };
  // Warm the page cache so both measurements read from memory.
  for (const dir of ["images", "masks"]) for (const f of readdirSync(path.join(root, dir))) readFileSync(path.join(root, dir, f));
  const decode = run("decode");
  const full = run("ingest");
  const decodeRate = decode.count / decode.seconds;
  const ingestRate = full.count / full.seconds;
  console.log(`machine: ${os.cpus().length} x ${os.cpus()[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, sharp ${sharp.versions.sharp}, concurrency ${concurrency}`);
  console.log(`decode-only: ${decode.count} pairs in ${decode.seconds.toFixed(1)} s = ${decodeRate.toFixed(0)} pairs/s (peak RSS ${decode.maxRssMiB.toFixed(0)} MiB)`);
  console.log(`ingest:      ${full.count} pairs in ${full.seconds.toFixed(1)} s = ${ingestRate.toFixed(0)} pairs/s (peak RSS ${full.maxRssMiB.toFixed(0)} MiB)`);
  console.log(`ingest / decode-only throughput: ${(ingestRate / decodeRate).toFixed(2)} (target >= 0.80); peak RSS ${full.maxRssMiB < 1024 ? "<" : ">="} 1 GiB`);
}
