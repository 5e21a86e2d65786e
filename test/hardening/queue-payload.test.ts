// Issue #16 item 3, tried again through a real `prolearn worker` and Redis: payloads that fit
// the size limit but nest a few hundred thousand arrays deep (every recursive check overflowed
// its stack: the job failed with "Maximum call stack size exceeded"), and params with
// prototype-pollution keys or wrong types. Each job fails at once, not retried, with a reason
// that says what is wrong; the worker goes on serving.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import { loadPipelineFile } from "../../src/pipeline/spec.js";
import { jobDir, QUEUE_PREFIX, STAGE_QUEUE } from "../../src/queue/executor.js";
import { redisOptionsFromUrl } from "../../src/queue/redis.js";
import { STAGES } from "../../src/stages.js";
import { startRedis } from "../helpers/redis.js";

const CLI = path.resolve(import.meta.dirname, "../../src/cli/main.ts");

test("deeply nested payloads and params with __proto__, constructor or wrong types fail at once with their reason; the worker keeps serving", {
  timeout: 120_000,
}, async () => {
  const redis = await startRedis();
  const root = mkdtempSync(path.join(realpathSync(tmpdir()), "prolearn-payload-"));
  mkdirSync(path.join(root, "data"));
  writeFileSync(path.join(root, "p.yaml"), "name: t\nworkdir: ./wd\ndataset: { kind: qata-cov19, root: ./data }\nstages:\n  ingest: {}\n");
  const pipeline = loadPipelineFile(path.join(root, "p.yaml"), STAGES);
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", CLI, "worker", "--redis", redis.url, "--root", root, "--grace-s", "3"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const connection = redisOptionsFromUrl(redis.url);
  const queue = new Queue(STAGE_QUEUE, { connection, prefix: QUEUE_PREFIX });
  const events = new QueueEvents(STAGE_QUEUE, { connection, prefix: QUEUE_PREFIX });
  const raw = new Redis(redis.url, { lazyConnect: true });
  try {
    await events.waitUntilReady();
    await raw.connect();
    const cacheKey = "0123456789abcdef";
    let deep = "0";
    for (let i = 0; i < 200_000; i++) deep = `[${deep}]`;
    const payload = (id: string, params: string) =>
      JSON.stringify({
        kind: "plan",
        task: {
          runId: "r",
          stage: "ingest",
          cacheKey,
          pipeline,
          params: {},
          inputs: {},
          resources: {},
          outDir: jobDir(pipeline.workdir, id),
          tmpDir: jobDir(pipeline.workdir, id),
        },
      }).replace('"params":{}', `"params":${params}`);
    const cases: [string, string, RegExp][] = [
      ["200,000 nested arrays (under the size limit)", `{"junk":${deep}}`, /payload nests arrays or objects more than 64 levels deep/],
      ["__proto__ in params", '{"__proto__":{"polluted":true},"strict":true}', /params of stage ingest: Unrecognized key: "__proto__"/],
      ["constructor.prototype in params", '{"constructor":{"prototype":{"polluted":true}}}', /params of stage ingest: Unrecognized key: "constructor"/],
      ["a string where a number belongs", '{"concurrency":"4"}', /params\.concurrency of stage ingest: Invalid input: expected number, received string/],
      ["params that are an array", "[1,2,3]", /params of stage ingest: Invalid input: expected object, received array/],
    ];
    for (const [i, [name, params, reason]] of cases.entries()) {
      const id = `badc0ff${i}.${cacheKey}.plan`;
      // Written as raw JSON into the job's hash, as any client of the Redis server could: this
      // process could not serialise 200,000 nested arrays itself (JSON.stringify would overflow).
      const job = await queue.add("probe", {}, { jobId: id, attempts: 3, delay: 3_600_000 });
      await raw.hset(`${QUEUE_PREFIX}:${STAGE_QUEUE}:${id}`, "data", payload(id, params));
      await job.promote();
      await assert.rejects(job.waitUntilFinished(events), reason, name);
      assert.equal((await queue.getJob(id))!.attemptsMade, 1, `${name}: a rejected job is not retried`);
    }
    assert.equal(child.exitCode, null, `the worker is still running:\n${stderr}`);
    assert.doesNotMatch(stderr, /Maximum call stack|internal error/);
  } finally {
    raw.disconnect();
    await events.close();
    await queue.close();
    child.kill("SIGKILL");
    await redis.stop();
    rmSync(root, { recursive: true, force: true });
  }
});
