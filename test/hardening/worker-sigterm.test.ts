// Issue #16 item 14: a worker whose Redis server has gone away must still stop on SIGTERM,
// within its grace period (it used to keep running until SIGKILL).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startRedis, type RedisServer } from "../helpers/redis.js";

const CLI = path.resolve(import.meta.dirname, "../../src/cli/main.ts");

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  seconds: number;
  stderr: string;
}

/** Starts `prolearn worker` (grace 3 s), runs `between` once it is ready, SIGTERMs it and waits up to 15 s. */
async function sigtermWorker(redis: RedisServer, between: () => Promise<void>): Promise<Outcome | "still running"> {
  const root = mkdtempSync(path.join(realpathSync(tmpdir()), "prolearn-sigterm-"));
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", CLI, "worker", "--redis", redis.url, "--root", root, "--grace-s", "3"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`worker never became ready:\n${stderr}`)), 30_000);
      child.stderr!.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
        if (/worker ready/.test(stderr)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    await between();
    const sent = performance.now();
    child.kill("SIGTERM");
    const outcome = await Promise.race([exited, new Promise<"still running">((resolve) => setTimeout(() => resolve("still running"), 15_000))]);
    if (outcome === "still running") return outcome;
    return { ...outcome, seconds: (performance.now() - sent) / 1000, stderr };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    rmSync(root, { recursive: true, force: true });
  }
}

test("SIGTERM stops `prolearn worker` within its grace period after its Redis server was killed", { timeout: 60_000 }, async () => {
  const redis = await startRedis();
  try {
    const outcome = await sigtermWorker(redis, async () => {
      await redis.stop();
      // Let the worker notice: its connections fail and start reconnecting.
      await new Promise((resolve) => setTimeout(resolve, 500));
    });
    assert.notEqual(outcome, "still running", "worker still running 15 s after SIGTERM");
    const { code, signal, seconds, stderr } = outcome as Outcome;
    assert.equal(signal, null, "the worker exits by itself, not by a signal");
    assert.equal(code, 1, `a forced stop (Redis gone) exits 1:\n${stderr}`);
    assert.ok(seconds < 3 + 5, `stopped ${seconds.toFixed(1)} s after SIGTERM (grace 3 s)`);
    assert.match(stderr, /Redis does not answer: dropping the Redis connections/);
  } finally {
    await redis.stop();
  }
});

test("SIGTERM stops an idle `prolearn worker` with Redis up: exit 0", { timeout: 60_000 }, async () => {
  const redis = await startRedis();
  try {
    const outcome = await sigtermWorker(redis, async () => {});
    assert.notEqual(outcome, "still running", "worker still running 15 s after SIGTERM");
    const { code, stderr } = outcome as Outcome;
    assert.equal(code, 0, stderr);
    assert.match(stderr, /worker stopped\n/);
  } finally {
    await redis.stop();
  }
});
