/**
 * Ingest throughput vs a decode-only baseline (same files, same library, same concurrency, same
 * run), and peak RSS, on a generated QaTa-like set of N 224x224 pairs (default 10,000).
 * Two baselines: "decode-only" reads and decodes each file with sharp on its own (the issue's
 * baseline); "joined decode-only" reads the same files and makes exactly the one-pipeline decode
 * that ingest makes for a PNG pair (decodeJoined in src/ingest/decode.ts), so ingest / joined is
 * everything ingest adds beyond its own decoding.
 * Each measurement runs in its own child process so its peak RSS is its own; decode-only and
 * ingest alternate `--repeat` times (the machine is shared, so one pair of runs is noisy) and the
 * median of the per-pair ratios is reported.
 *   node --import tsx bench/ingest.ts [--n 10000] [--concurrency 4] [--repeat 2]
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import PQueue from "p-queue";
import sharp from "sharp";
import { writeFixtureDataset } from "../src/synthetic/index.js";
import { ingestParamsSchema, ingestStage } from "../src/ingest/stage.js";
import type { StageContext } from "../src/pipeline/stage.js";
import type { IngestParams } from "../src/ingest/stage.js";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "10000" },
    concurrency: { type: "string", default: "4" },
    repeat: { type: "string", default: "2" },
    phase: { type: "string" },
    root: { type: "string" },
  },
});
const n = Number(values.n);
const concurrency = Number(values.concurrency);
const repeat = Number(values.repeat);

/** Seconds spent in each step of the ingest phase. */
const steps: Record<string, number> = {};

async function decodeOnly(root: string): Promise<number> {
  const images = readdirSync(path.join(root, "images")).sort();
  const queue = new PQueue({ concurrency });
  for (const name of images) {
    void queue.add(async () => {
      await sharp(await readFile(path.join(root, "images", name)))
        .raw()
        .toBuffer();
      await sharp(await readFile(path.join(root, "masks", `mask_${name}`)))
        .greyscale()
        .raw()
        .toBuffer();
    });
  }
  await queue.onIdle();
  return images.length;
}

/** The decode ingest makes for an 8-bit PNG pair: one pipeline, image joined to the mask, mask band kept. */
async function decodeJoinedOnly(root: string): Promise<number> {
  const images = readdirSync(path.join(root, "images")).sort();
  const queue = new PQueue({ concurrency });
  for (const name of images) {
    void queue.add(async () => {
      const image = await readFile(path.join(root, "images", name));
      const mask = await readFile(path.join(root, "masks", `mask_${name}`));
      await sharp(mask, { failOn: "truncated" }).joinChannel(image, { failOn: "truncated" }).extractChannel(0).raw().toBuffer();
    });
  }
  await queue.onIdle();
  return images.length;
}

async function ingest(root: string): Promise<number> {
  let mark = performance.now();
  const step = (name: string) => {
    steps[name] = (performance.now() - mark) / 1000;
    mark = performance.now();
  };
  const work = mkdtempSync(path.join(os.tmpdir(), "prolearn-bench-ingest-"));
  const ctx: StageContext<IngestParams> = {
    stage: "ingest",
    version: ingestStage.version,
    pipeline: {
      name: "bench",
      baseDir: work,
      workdir: work,
      dataset: { kind: "qata-cov19", root, layout: "auto", reportKey: "p6", textAvailability: 1, seed: 42 },
      stages: {},
    },
    params: ingestParamsSchema.parse({ concurrency }),
    inputs: {},
    outDir: mkdtempSync(path.join(work, "out-")),
    tmpDir: mkdtempSync(path.join(work, "tmp-")),
    // No row cache: the first run of a new dataset decodes everything.
    rowCache: () => ({ get: () => undefined, put: () => {} }),
    resources: {},
    emit: () => {},
    log: () => {},
    warn: () => {},
    signal: new AbortController().signal,
  };
  const sharding = ingestStage.sharding!;
  const shards = await sharding.plan(ctx);
  step("plan");
  const done = [];
  for (const shard of shards) {
    const dir = path.join(ctx.tmpDir, shard.id);
    mkdirSync(dir);
    await sharding.runShard(ctx, shard, dir);
    done.push({ shard, dir });
  }
  step("shards");
  const summary = await sharding.merge(ctx, done);
  step("merge");
  rmSync(work, { recursive: true, force: true });
  return summary.ingested as number;
}

/** The kernel's high-water mark of this process's resident set (VmHWM starts afresh at exec, unlike ru_maxrss). */
function vmHwmMiB(): number {
  const line = readFileSync("/proc/self/status", "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmHWM:"));
  return line ? Number(line.split(/\s+/)[1]) / 1024 : NaN;
}

interface PhaseResult {
  count: number;
  seconds: number;
  cpuSeconds: number;
  maxRssMiB: number;
  vmHwmMiB: number;
  steps: Record<string, number>;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

if (values.phase) {
  // Sampled in the process that does the work (and VmHWM read at the end as a check).
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  const cpu = process.cpuUsage();
  const start = performance.now();
  const count =
    values.phase === "decode" ? await decodeOnly(values.root!) : values.phase === "joined" ? await decodeJoinedOnly(values.root!) : await ingest(values.root!);
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  const result: PhaseResult = { count, seconds, cpuSeconds: (used.user + used.system) / 1e6, maxRssMiB: peak / 2 ** 20, vmHwmMiB: vmHwmMiB(), steps };
  process.stdout.write(JSON.stringify(result) + "\n");
} else {
  const root = path.join(os.tmpdir(), `prolearn-bench-ingest-qata-${n}-224`);
  if (!existsSync(path.join(root, "split.json"))) {
    const t = performance.now();
    await writeFixtureDataset({ kind: "qata-cov19", layout: "prolearn", out: root, n, seed: 1, size: 224 });
    console.error(`generated ${n} pairs in ${((performance.now() - t) / 1000).toFixed(1)} s at ${root}`);
  }
  const run = (phase: string) =>
    JSON.parse(
      execFileSync(
        process.execPath,
        ["--import", "tsx", path.resolve(import.meta.dirname, "ingest.ts"), "--phase", phase, "--root", root, "--concurrency", String(concurrency)],
        { encoding: "utf8" },
      ),
    ) as PhaseResult;
  // Warm the page cache so both measurements read from memory.
  for (const dir of ["images", "masks", "reports"]) for (const f of readdirSync(path.join(root, dir))) readFileSync(path.join(root, dir, f));
  const load = () =>
    os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ");
  console.log(
    `machine: ${os.cpus().length} x ${os.cpus()[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, sharp ${sharp.versions.sharp}, concurrency ${concurrency}, ${n} pairs`,
  );
  console.log(`load average before: ${load()}`);
  const ratios: number[] = [];
  const strictRatios: number[] = [];
  let worstRss = 0;
  for (let r = 0; r < repeat; r++) {
    const decode = run("decode");
    const joined = run("joined");
    const full = run("ingest");
    const decodeRate = decode.count / decode.seconds;
    const joinedRate = joined.count / joined.seconds;
    const ingestRate = full.count / full.seconds;
    ratios.push(ingestRate / decodeRate);
    strictRatios.push(ingestRate / joinedRate);
    worstRss = Math.max(worstRss, full.maxRssMiB, full.vmHwmMiB);
    const stepText = Object.entries(full.steps)
      .map(([k, v]) => `${k} ${v.toFixed(1)} s`)
      .join(", ");
    console.log(
      `run ${r + 1}: decode-only        ${decodeRate.toFixed(0)} pairs/s (${decode.seconds.toFixed(1)} s, cpu ${decode.cpuSeconds.toFixed(1)} s, peak RSS ${decode.maxRssMiB.toFixed(0)} MiB)`,
    );
    console.log(
      `       joined decode-only ${joinedRate.toFixed(0)} pairs/s (${joined.seconds.toFixed(1)} s, cpu ${joined.cpuSeconds.toFixed(1)} s, peak RSS ${joined.maxRssMiB.toFixed(0)} MiB)`,
    );
    console.log(
      `       ingest             ${ingestRate.toFixed(0)} pairs/s (${full.seconds.toFixed(1)} s: ${stepText}; cpu ${full.cpuSeconds.toFixed(1)} s, peak RSS ${full.maxRssMiB.toFixed(0)} MiB sampled, VmHWM ${full.vmHwmMiB.toFixed(0)} MiB)`,
    );
    console.log(
      `       ingest / decode-only ${(ingestRate / decodeRate).toFixed(2)}, ingest / joined decode-only ${(ingestRate / joinedRate).toFixed(2)}; load average now ${load()}`,
    );
  }
  const list = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(", ");
  console.log(`ingest / decode-only: median ${median(ratios).toFixed(2)} of ${list(ratios)} (target >= 0.80)`);
  console.log(`ingest / joined decode-only (ingest's own decode alone): median ${median(strictRatios).toFixed(2)} of ${list(strictRatios)}`);
  console.log(`peak ingest RSS ${worstRss.toFixed(0)} MiB (${worstRss < 1024 ? "<" : ">="} 1 GiB)`);
}
