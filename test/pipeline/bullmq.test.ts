import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync, readdirSync, realpathSync, symlinkSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { Queue, QueueEvents } from "bullmq";
import { loadPipelineFile, type ResolvedPipeline } from "../../src/pipeline/spec.js";
import { runPipeline } from "../../src/pipeline/engine.js";
import { BullMqExecutor, QUEUE_PREFIX, STAGE_QUEUE, jobDir } from "../../src/queue/executor.js";
import { checkRedis, redisOptionsFromUrl } from "../../src/queue/redis.js";
import { startStageWorker, validateJobPayload } from "../../src/queue/worker.js";
import { EnvironmentError } from "../../src/errors.js";
import type { StageTask } from "../../src/pipeline/executor.js";
import { OutputStore } from "../../src/pipeline/store.js";
import { startRedis, type RedisServer } from "../helpers/redis.js";
import { QUEUE_TEST_STAGES, shardLog } from "./queue-stages.js";
import { executions } from "./test-stages.js";
import { STAGES } from "../../src/stages.js";
import { writeSyntheticDataset } from "../helpers/synthetic-dataset.js";

const ROOT = realpathSync(tmpdir());
const LOCK_MS = 1500;
/** Payload limit of the test workers: far above any test stage's job, far below the 16 MiB default. */
const MAX_PAYLOAD_BYTES = 256 * 1024;
const CLI = path.resolve(import.meta.dirname, "../../src/cli/main.ts");

function project(stagesYaml: string, values: number[] = [1, 2, 3]): { dir: string; file: string; workdir: string } {
  const dir = mkdtempSync(path.join(ROOT, "prolearn-queue-"));
  mkdirSync(path.join(dir, "data"));
  values.forEach((value, i) => writeFileSync(path.join(dir, "data", `${String.fromCharCode(97 + i)}.txt`), String(value)));
  const file = path.join(dir, "pipeline.yaml");
  writeFileSync(file, `name: queue-test\ndataset:\n  kind: qata-cov19\n  root: data\nstages:\n${stagesYaml}`);
  return { dir, file, workdir: path.join(dir, ".prolearn") };
}

const load = (file: string) => loadPipelineFile(file, QUEUE_TEST_STAGES);

interface WorkerProcess {
  child: ChildProcess;
  lines: string[];
  /** Resolves with the first line matching `pattern`; `fresh` ignores lines logged before the call. */
  waitFor(pattern: RegExp, options?: { fresh?: boolean; timeoutMs?: number }): Promise<string>;
}

/** A worker process over the test registry (logs on stdout), or `prolearn worker` itself (logs on stderr). */
function spawnWorker(redisUrl: string, kind: "test" | "cli" = "test", capabilities: string[] = []): Promise<WorkerProcess> {
  const args =
    kind === "test"
      ? [path.join(import.meta.dirname, "queue-worker-child.ts"), redisUrl, ROOT, String(LOCK_MS), capabilities.join(","), String(MAX_PAYLOAD_BYTES)]
      : [CLI, "worker", "--redis", redisUrl, "--root", ROOT, "--lock-ms", "5000"];
  const child = spawn(process.execPath, ["--import", "tsx", ...args], {
    stdio: ["ignore", kind === "test" ? "pipe" : "inherit", kind === "test" ? "inherit" : "pipe"],
  });
  const output = (kind === "test" ? child.stdout : child.stderr)!;
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  let buffer = "";
  output.on("data", (chunk: Buffer) => {
    buffer += chunk.toString();
    let at: number;
    while ((at = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, at);
      buffer = buffer.slice(at + 1);
      lines.push(line);
      for (const w of [...waiters])
        if (w.pattern.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
    }
  });
  const worker: WorkerProcess = {
    child,
    lines,
    waitFor(pattern, { fresh = false, timeoutMs = 20000 } = {}) {
      const seen = fresh ? undefined : lines.find((l) => pattern.test(l));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`worker ${child.pid} never logged ${pattern}; got:\n${lines.join("\n")}`)), timeoutMs);
        timer.unref();
        waiters.push({
          pattern,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
      });
    },
  };
  return worker.waitFor(/worker ready/).then(() => worker);
}

async function stopWorker(worker: WorkerProcess | undefined): Promise<void> {
  if (!worker || worker.child.exitCode !== null || worker.child.signalCode !== null) return;
  const exited = new Promise((resolve) => worker.child.once("exit", resolve));
  worker.child.kill("SIGKILL");
  await exited;
}

function digests(result: Awaited<ReturnType<typeof runPipeline>>): Record<string, string | null> {
  return Object.fromEntries(result.stages.map((s) => [s.name, s.digest]));
}

describe("bullmq executor", () => {
  let redis: RedisServer;
  const workers: WorkerProcess[] = [];
  const executors: BullMqExecutor[] = [];
  const executor = (options: { attempts?: number; backoffMs?: number } = {}) => {
    const made = new BullMqExecutor({ redisUrl: redis.url, registry: QUEUE_TEST_STAGES, backoffMs: 100, ...options });
    executors.push(made);
    return made;
  };

  before(async () => {
    redis = await startRedis();
    workers.push(...(await Promise.all([spawnWorker(redis.url), spawnWorker(redis.url)])));
  });

  after(async () => {
    for (const e of executors) await e.close().catch(() => {});
    await Promise.all(workers.map(stopWorker));
    await redis?.stop();
  });

  test("in-process and bullmq with 2 worker processes publish identical digests", async () => {
    const stages = "  numbers: {}\n  scale: { factor: 3 }\n  total: {}\n  squares: { shardSize: 1 }\n  slowsquares: {}\n";
    const local = project(stages, [4, 5, 6, 7]);
    const queued = project(stages, [4, 5, 6, 7]);
    const inProcess = await runPipeline(load(local.file), { registry: QUEUE_TEST_STAGES });
    const onQueue = await runPipeline(load(queued.file), { registry: QUEUE_TEST_STAGES, executor: executor() });
    assert.equal(onQueue.status, "ok", JSON.stringify(onQueue.stages.map((s) => s.error)));
    assert.deepEqual(
      onQueue.stages.map((s) => s.status),
      ["ran", "ran", "ran", "ran", "ran"],
    );
    assert.deepEqual(digests(onQueue), digests(inProcess));
    assert.deepEqual(JSON.parse(readFileSync(onQueue.stages[4]!.outputs["squares.json"]!, "utf8")), [16, 25, 36, 49]);
    // ctx.warn in a merge that ran on a worker comes back with the stage's result.
    assert.deepEqual(onQueue.stages[4]!.warnings, [{ code: "many-shards", message: "merged 4 shards", figures: { shards: 4 } }]);
    assert.deepEqual(onQueue.stages[4]!.warnings, inProcess.stages[4]!.warnings);
    // Every shard ran in a worker process, never in this one.
    const pids = new Set(shardLog(queued.workdir).map((l) => Number(l.split(" ")[1])));
    assert.ok(![...pids].includes(process.pid));
    assert.ok([...pids].every((pid) => workers.some((w) => w.child.pid === pid)));
    // The shards' scratch folders are gone; only the merged job's folder is kept until it expires.
    assert.ok(readdirSync(path.join(queued.workdir, "jobs")).every((d) => !d.includes(".shard.")));
  });

  test("the same work enqueued twice at once runs once", async () => {
    const { file, workdir } = project("  numbers: {}\n  scale: { factor: 2, slowMs: 400 }\n");
    const upstream = await runPipeline(load(file), { registry: QUEUE_TEST_STAGES, until: "numbers" });
    const pipeline: ResolvedPipeline = load(file);
    const store = new OutputStore(workdir);
    const numbers = upstream.stages[0]!;
    const inputs = {
      numbers: {
        stage: "numbers",
        digest: numbers.digest!,
        dir: path.dirname(numbers.outputs["numbers.json"]!),
        files: numbers.outputs,
        summary: numbers.summary,
      },
    };
    const task = (): StageTask => {
      const staging = store.makeStaging("20240101T000000-aaaaaa", "scale");
      return {
        runId: "20240101T000000-aaaaaa",
        stage: "scale",
        cacheKey: "0123456789abcdef0123456789abcdef",
        pipeline,
        params: pipeline.stages.scale,
        inputs,
        resources: {},
        outDir: staging.outDir,
        tmpDir: staging.tmpDir,
      };
    };
    const [a, b] = [task(), task()];
    const signal = new AbortController().signal;
    const [first, second] = await Promise.all([executor().execute(a, () => {}, signal), executor().execute(b, () => {}, signal)]);
    assert.deepEqual(first, { factor: 2 });
    assert.deepEqual(second, first);
    assert.equal(readFileSync(path.join(a.outDir, "scaled.json"), "utf8"), "[2,4,6]");
    assert.equal(readFileSync(path.join(b.outDir, "scaled.json"), "utf8"), "[2,4,6]");
    assert.deepEqual(executions(workdir), ["numbers", "scale"]);
  });

  test("a stage whose params need a GPU waits (and says so) for a --capabilities gpu worker; without them any worker runs it", async () => {
    const { file } = project("  numbers: {}\n  accelerated: { device: gpu }\n", [1]);
    const warnings: string[] = [];
    let warned: () => void = () => {};
    const warnedOnce = new Promise<void>((resolve) => (warned = resolve));
    const run = runPipeline(load(file), {
      registry: QUEUE_TEST_STAGES,
      executor: executor(),
      onEvent: (event) => {
        if (event.kind === "log" && event.level === "warn") {
          warnings.push(event.message);
          warned();
        }
      },
    });
    await warnedOnce;
    assert.match(warnings[0]!, /no worker serves queue stages-gpu yet; the job waits for one \(start: prolearn worker --redis URL --capabilities gpu\)/);
    // The two plain worker processes serve only `stages`: the job is still waiting a while later.
    await new Promise((resolve) => setTimeout(resolve, 700));
    const gpuQueue = new Queue("stages-gpu", { connection: redisOptionsFromUrl(redis.url), prefix: QUEUE_PREFIX });
    try {
      assert.equal(await gpuQueue.getWaitingCount(), 1);
    } finally {
      await gpuQueue.close();
    }
    const gpuWorker = await spawnWorker(redis.url, "test", ["gpu"]);
    try {
      const result = await run;
      assert.equal(result.status, "ok", JSON.stringify(result.stages.map((s) => s.error)));
      const ranBy = JSON.parse(readFileSync(result.stages[1]!.outputs["ran-by.json"]!, "utf8")) as { pid: number };
      assert.equal(ranBy.pid, gpuWorker.child.pid, "the --capabilities gpu worker ran it, not a plain one");
    } finally {
      await stopWorker(gpuWorker);
    }
    const anywhere = project("  numbers: {}\n  accelerated: {}\n", [1]);
    const result = await runPipeline(load(anywhere.file), { registry: QUEUE_TEST_STAGES, executor: executor() });
    assert.equal(result.status, "ok");
    const ranBy = JSON.parse(readFileSync(result.stages[1]!.outputs["ran-by.json"]!, "utf8")) as { pid: number };
    assert.ok(
      workers.some((w) => w.child.pid === ranBy.pid),
      "a plain worker process ran it",
    );
  });

  test("a stage that fails for good fails the run with the worker's message and the job id", async () => {
    const { file } = project("  numbers: {}\n  slowsquares: { failShard: rows-1 }\n");
    const result = await runPipeline(load(file), { registry: QUEUE_TEST_STAGES, executor: executor({ attempts: 2 }) });
    assert.equal(result.status, "failed");
    const failed = result.stages[1]!;
    assert.equal(failed.status, "failed");
    assert.match(failed.error!, /boom in shard rows-1/);
    assert.match(failed.error!, new RegExp(`job [0-9a-f]{8}\\.${failed.cacheKey}\\.shard\\.1\\.rows-1 failed after 2 attempts`));
  });

  test("a worker killed mid-shard: the shard is retried on the other worker and nothing partial is published", async () => {
    const { file, workdir } = project("  numbers: {}\n  slowsquares: { slowMs: 1200 }\n");
    const run = runPipeline(load(file), { registry: QUEUE_TEST_STAGES, executor: executor() });
    const starts = workers.map((w) => w.waitFor(/slowsquares shard rows-\d+\) started/, { fresh: true }).then((l) => ({ w, l })));
    for (const start of starts) start.catch(() => {});
    const line = await Promise.race(starts);
    const victim = line.w;
    const shardId = /shard (rows-\d+)\)/.exec(line.l)![1]!;
    await new Promise((resolve) => setTimeout(resolve, 300));
    await stopWorker(victim);
    const result = await run;
    assert.equal(result.status, "ok", result.stages.map((s) => s.error).join("\n"));
    assert.deepEqual(JSON.parse(readFileSync(result.stages[1]!.outputs["squares.json"]!, "utf8")), [1, 4, 9]);
    const attempts = shardLog(workdir).filter((l) => l.startsWith(`${shardId} `));
    assert.equal(attempts.length, 2, `shard ${shardId} started twice: ${attempts.join(", ")}`);
    assert.notEqual(attempts[0]!.split(" ")[1], attempts[1]!.split(" ")[1], "the retry ran on the other worker");
    assert.deepEqual(readdirSync(path.join(workdir, "store", "slowsquares")), [result.stages[1]!.cacheKey]);
    assert.ok(await new OutputStore(workdir).verify("slowsquares", result.stages[1]!.cacheKey!));
    workers.splice(workers.indexOf(victim), 1, await spawnWorker(redis.url));
  });

  test("the worker rejects unregistered stages and paths outside the workdir and dataset", async () => {
    const { file, workdir } = project("  numbers: {}\n  scale: {}\n");
    const pipeline = load(file);
    const jobId = "badc0ffe.0123456789abcdef0123456789abcdef";
    const base: StageTask = {
      runId: "r",
      stage: "scale",
      cacheKey: "0123456789abcdef0123456789abcdef",
      pipeline,
      params: { factor: 2, slowMs: 0 },
      inputs: {},
      resources: {},
      outDir: jobDir(workdir, jobId),
      tmpDir: jobDir(workdir, jobId),
    };
    const connection = redisOptionsFromUrl(redis.url);
    const queue = new Queue(STAGE_QUEUE, { connection, prefix: QUEUE_PREFIX });
    const events = new QueueEvents(STAGE_QUEUE, { connection, prefix: QUEUE_PREFIX });
    try {
      await events.waitUntilReady();
      const cases: [string, StageTask, RegExp][] = [
        [
          "unregistered",
          { ...base, stage: "rm-rf", pipeline: { ...pipeline, stages: { ...pipeline.stages, "rm-rf": {} } } },
          /stage "rm-rf" is not registered/,
        ],
        [
          "input outside the store",
          { ...base, inputs: { numbers: { stage: "numbers", digest: "x", dir: "/etc", files: { "numbers.json": "/etc/passwd" }, summary: {} } } },
          /not an output in the workdir's store/,
        ],
        [
          "dataset outside the roots",
          { ...base, pipeline: { ...pipeline, dataset: { ...pipeline.dataset, root: "/etc" } } },
          /outside the folders this worker serves/,
        ],
        [
          "param escaping with ..",
          { ...base, params: { factor: 2, slowMs: 0, model: "../../../../../etc/shadow" } },
          /params\.model names .*outside the workdir/,
        ],
      ];
      for (const [i, [name, task, reason]] of cases.entries()) {
        const id = `badc0ff${i}.0123456789abcdef0123456789abcdef`;
        const job = await queue.add(
          "probe",
          { kind: "run", task: { ...task, outDir: jobDir(workdir, id), tmpDir: jobDir(workdir, id) } },
          { jobId: id, attempts: 3 },
        );
        await assert.rejects(job.waitUntilFinished(events), reason, name);
        const failed = (await queue.getJob(id))!;
        assert.equal(failed.attemptsMade, 1, `${name}: a rejected job is not retried`);
      }
      assert.deepEqual(executions(workdir), [], "nothing ran");
    } finally {
      await events.close();
      await queue.close();
    }
    // The same checks, without a queue.
    assert.throws(
      () => validateJobPayload({ kind: "run", task: { ...base, outDir: "/tmp/elsewhere" } }, jobId, QUEUE_TEST_STAGES, [ROOT]),
      /must be the job's folder/,
    );
    assert.throws(() => validateJobPayload({ kind: "run", task: base, module: "./evil.js" }, jobId, QUEUE_TEST_STAGES, [ROOT]), /malformed payload/);
    assert.throws(() => validateJobPayload({ kind: "plan", task: base }, jobId, QUEUE_TEST_STAGES, [ROOT]), /does not fit stage scale/);
    assert.throws(
      () => validateJobPayload({ kind: "run", task: base }, jobId, QUEUE_TEST_STAGES, [path.join(ROOT, "nowhere")]),
      /outside the folders this worker serves/,
    );
    assert.equal(validateJobPayload({ kind: "run", task: base }, jobId, QUEUE_TEST_STAGES, [ROOT]).kind, "run");
    // A job whose stage and params need a GPU is refused on the plain queue (and taken on its own).
    const gpuTask: StageTask = {
      ...base,
      stage: "accelerated",
      params: { device: "gpu" },
      pipeline: { ...pipeline, stages: { ...pipeline.stages, accelerated: { device: "gpu" } } },
    };
    assert.throws(
      () => validateJobPayload({ kind: "run", task: gpuTask }, jobId, QUEUE_TEST_STAGES, [ROOT], STAGE_QUEUE),
      /stage accelerated with these params belongs on queue stages-gpu, not stages/,
    );
    assert.equal(validateJobPayload({ kind: "run", task: gpuTask }, jobId, QUEUE_TEST_STAGES, [ROOT], "stages-gpu").kind, "run");
  });
});

describe("bullmq worker: job ids, job folders, params and payload size (issue #16)", () => {
  let redis: RedisServer;
  let worker: WorkerProcess;
  before(async () => {
    redis = await startRedis();
    worker = await spawnWorker(redis.url);
  });
  after(async () => {
    await stopWorker(worker);
    await redis?.stop();
  });

  test("a job whose id or folder leads out of <workdir>/jobs, or whose params or size do not fit, fails at once and touches nothing outside", async () => {
    const { dir, file, workdir } = project("  numbers: {}\n  scale: {}\n");
    const pipeline = load(file);
    // What a crafted job id aimed at: a dataset-like folder beside the workdir.
    const victim = path.join(dir, "victim");
    mkdirSync(victim);
    writeFileSync(path.join(victim, "keep.txt"), "precious");
    const cacheKey = "0123456789abcdef0123456789abcdef";
    const linkedId = `badc0ff1.${cacheKey}`;
    mkdirSync(path.join(workdir, "jobs"), { recursive: true });
    symlinkSync(victim, path.join(workdir, "jobs", linkedId));
    const task = (outDir: string, params: Record<string, unknown> = { factor: 2, slowMs: 0 }): StageTask => ({
      runId: "r",
      stage: "scale",
      cacheKey,
      pipeline,
      params,
      inputs: {},
      resources: {},
      outDir,
      tmpDir: outDir,
    });
    const cases: [string, string, StageTask, RegExp][] = [
      ["id with ../", "../../victim", task(path.join(workdir, "jobs", "../../victim")), /job id "\.\.\/\.\.\/victim" is not one the bullmq executor makes/],
      ["absolute id", victim, task(path.join(workdir, "jobs", victim)), /is not one the bullmq executor makes/],
      ["symlinked job folder", linkedId, task(path.join(workdir, "jobs", linkedId)), /its folder .* is a symbolic link to/],
      [
        "params off the schema",
        `badc0ff2.${cacheKey}`,
        task(path.join(workdir, "jobs", `badc0ff2.${cacheKey}`), { factor: "2", slowMs: 0 }),
        /params\.factor of stage scale: /,
      ],
      [
        "oversized payload",
        `badc0ff3.${cacheKey}`,
        { ...task(path.join(workdir, "jobs", `badc0ff3.${cacheKey}`)), resources: { padding: "x".repeat(MAX_PAYLOAD_BYTES) } },
        /payload of \d+ bytes exceeds this worker's limit of 262144 bytes/,
      ],
    ];
    const connection = redisOptionsFromUrl(redis.url);
    const queue = new Queue(STAGE_QUEUE, { connection, prefix: QUEUE_PREFIX });
    const events = new QueueEvents(STAGE_QUEUE, { connection, prefix: QUEUE_PREFIX });
    try {
      await events.waitUntilReady();
      for (const [name, id, jobTask, reason] of cases) {
        const job = await queue.add("probe", { kind: "run", task: jobTask }, { jobId: id, attempts: 3 });
        await assert.rejects(job.waitUntilFinished(events), reason, name);
        assert.equal((await queue.getJob(id))!.attemptsMade, 1, `${name}: a rejected job is not retried`);
        assert.equal(readFileSync(path.join(victim, "keep.txt"), "utf8"), "precious", `${name}: the folder outside the jobs folder is untouched`);
        assert.deepEqual(readdirSync(victim), ["keep.txt"], `${name}: nothing was written outside`);
      }
    } finally {
      await events.close();
      await queue.close();
    }
    assert.deepEqual(executions(workdir), [], "nothing ran");
    assert.ok(existsSync(path.join(workdir, "jobs", linkedId)), "the link itself is left for its owner to look at");
    // The executor side refuses to name a folder for such an id at all.
    assert.throws(() => jobDir(workdir, "../../victim"), /not one this executor makes/);
    // A jobs folder that is itself a link out of the workdir is refused before anything runs.
    const other = project("  numbers: {}\n  scale: {}\n");
    mkdirSync(other.workdir, { recursive: true });
    symlinkSync(victim, path.join(other.workdir, "jobs"));
    const otherId = `badc0ff4.${cacheKey}`;
    const otherTask: StageTask = { ...task(path.join(other.workdir, "jobs", otherId)), pipeline: load(other.file) };
    assert.throws(
      () => validateJobPayload({ kind: "run", task: otherTask }, otherId, QUEUE_TEST_STAGES, [ROOT]),
      /jobs resolves to .*victim, outside the workdir/,
    );
    // A job id that does not fit its kind or cache key is refused too.
    const fitting = task(path.join(workdir, "jobs", `badc0ff5.${cacheKey}.plan`));
    assert.throws(() => validateJobPayload({ kind: "run", task: fitting }, `badc0ff5.${cacheKey}.plan`, QUEUE_TEST_STAGES, [ROOT]), /does not fit a run job/);
    assert.deepEqual(readdirSync(victim), ["keep.txt"]);
  });
});

describe("redis checks", () => {
  let lru: RedisServer | undefined;
  after(async () => {
    await lru?.stop();
  });

  test("a Redis that may evict keys is refused by the executor and the worker", async () => {
    lru = await startRedis({ maxmemoryPolicy: "allkeys-lru" });
    await assert.rejects(
      checkRedis(lru.url),
      (error: unknown) => error instanceof EnvironmentError && /maxmemory-policy allkeys-lru; the queue needs noeviction/.test(error.message),
    );
    await assert.rejects(startStageWorker({ redisUrl: lru.url, registry: QUEUE_TEST_STAGES }), EnvironmentError);
    const { file } = project("  numbers: {}\n");
    const executor = new BullMqExecutor({ redisUrl: lru.url, registry: QUEUE_TEST_STAGES });
    const result = await runPipeline(load(file), { registry: QUEUE_TEST_STAGES, executor });
    await executor.close();
    assert.equal(result.status, "failed");
    assert.match(result.stages[0]!.error!, /noeviction/);
  });

  test("an unreachable Redis is an environment error naming the URL", async () => {
    await assert.rejects(checkRedis("redis://127.0.0.1:1", 1000), /cannot reach Redis at redis:\/\/127\.0\.0\.1:1/);
  });
});

describe("bullmq executor with the package's stages", () => {
  let redis: RedisServer;
  const workers: WorkerProcess[] = [];
  before(async () => {
    redis = await startRedis();
    workers.push(...(await Promise.all([spawnWorker(redis.url, "cli"), spawnWorker(redis.url, "cli")])));
  });
  after(async () => {
    await Promise.all(workers.map(stopWorker));
    await redis?.stop();
  });

  test("ingest + embed: `prolearn run --executor bullmq` with 2 `prolearn worker` processes matches the in-process digests", async () => {
    const dir = mkdtempSync(path.join(ROOT, "prolearn-queue-real-"));
    await writeSyntheticDataset(path.join(dir, "data"), { count: 40 });
    const pipelineText = "name: scale-real\ndataset: { kind: qata-cov19, root: ../data }\nstages:\n  ingest: { shardSize: 8 }\n  embed: { shardRows: 10 }\n";
    for (const sub of ["local", "queued"]) {
      mkdirSync(path.join(dir, sub));
      writeFileSync(path.join(dir, sub, "pipeline.yaml"), pipelineText);
    }
    const inProcess = await runPipeline(loadPipelineFile(path.join(dir, "local", "pipeline.yaml"), STAGES), { registry: STAGES });
    assert.equal(inProcess.status, "ok");
    const child = spawn(
      process.execPath,
      ["--import", "tsx", CLI, "run", path.join(dir, "queued", "pipeline.yaml"), "--executor", "bullmq", "--redis", redis.url, "--json"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise((resolve) => child.on("exit", resolve));
    assert.equal(code, 0, stderr);
    const queued = JSON.parse(stdout) as { executor?: string; stages: { name: string; status: string; digest: string }[] };
    assert.deepEqual(
      queued.stages.map((s) => [s.name, s.status]),
      [
        ["ingest", "ran"],
        ["embed", "ran"],
      ],
    );
    assert.deepEqual(Object.fromEntries(queued.stages.map((s) => [s.name, s.digest])), digests(inProcess));
    // Both worker processes took shard jobs.
    for (const worker of workers)
      assert.ok(
        worker.lines.some((l) => /shard .*done/.test(l)),
        `worker ${worker.child.pid} ran no shard:\n${worker.lines.join("\n")}`,
      );
  });
});
