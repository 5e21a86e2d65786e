import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { loadPipelineFile } from "../../src/pipeline/spec.js";
import { PipelineScheduler, type ScheduledPipeline } from "../../src/queue/scheduler.js";
import { Catalog } from "../../src/pipeline/catalog.js";
import type { RunResult } from "../../src/pipeline/engine.js";
import { nextFireTimes } from "../../src/cli/schedule-info.js";
import { startRedis, type RedisServer } from "../helpers/redis.js";
import { TEST_STAGES, executions } from "./test-stages.js";

function project(schedule: string, slowMs: number): { file: string; workdir: string } {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-sched-"));
  mkdirSync(path.join(dir, "data"));
  for (const [name, value] of [
    ["a.txt", "1"],
    ["b.txt", "2"],
  ])
    writeFileSync(path.join(dir, "data", name), value!);
  const file = path.join(dir, "pipeline.yaml");
  writeFileSync(
    file,
    `name: sched-test\ndataset: { kind: qata-cov19, root: data }\nschedule: ${schedule}\nstages:\n  numbers: {}\n  scale: { factor: 2, slowMs: ${slowMs} }\n  total: {}\n`,
  );
  return { file, workdir: path.join(dir, ".prolearn") };
}

function scheduled(file: string): ScheduledPipeline {
  const pipeline = loadPipelineFile(file, TEST_STAGES);
  return { name: pipeline.name, schedule: pipeline.schedule!, load: async () => loadPipelineFile(file, TEST_STAGES) };
}

/** Runs a scheduler until `count` runs ended; returns each run's [start, end] times and results. */
async function collectRuns(
  scheduler: PipelineScheduler,
  runs: { start: number; end?: number; result?: RunResult }[],
  count: number,
  start: () => Promise<void> | void,
): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${runs.filter((r) => r.end).length} runs ended in 15 s`)), 15_000);
    const check = setInterval(() => {
      if (runs.filter((r) => r.end).length >= count) {
        clearTimeout(timer);
        clearInterval(check);
        resolve();
      }
    }, 50);
    Promise.resolve(start()).catch(reject);
  });
  await scheduler.stop(5000);
}

function assertNoOverlap(runs: { start: number; end?: number }[]): void {
  for (let i = 1; i < runs.length; i++) assert.ok(runs[i]!.start >= runs[i - 1]!.end!, `run ${i} started before run ${i - 1} ended`);
}

describe("scheduler", () => {
  test("an every-second schedule fires at least twice, never overlaps, and the second run is fully cached", async () => {
    const { file, workdir } = project('"* * * * * *"', 1300);
    const runs: { start: number; end?: number; result?: RunResult }[] = [];
    const lines: string[] = [];
    const scheduler = new PipelineScheduler([scheduled(file)], {
      registry: TEST_STAGES,
      log: (line) => lines.push(line),
      onRunStart: () => runs.push({ start: performance.now() }),
      onRunEnd: (_name, result) => Object.assign(runs[runs.length - 1]!, { end: performance.now(), result }),
    });
    await collectRuns(scheduler, runs, 2, () => scheduler.start());
    assert.ok(runs.length >= 2);
    assertNoOverlap(runs);
    assert.deepEqual(
      runs[0]!.result!.stages.map((s) => s.status),
      ["ran", "ran", "ran"],
    );
    assert.deepEqual(runs[1]!.result!.totals, { ran: 0, cached: 3, failed: 0, skipped: 0 });
    assert.ok(
      lines.some((l) => /skipped, the previous run is still going/.test(l)),
      "a fire during the 1.3 s first run was skipped:\n" + lines.join("\n"),
    );
    assert.deepEqual(executions(workdir), ["numbers", "scale", "total"]);
    const catalog = new Catalog(workdir);
    assert.ok(catalog.runs().every((r) => r.trigger === "schedule" && r.status === "ok"));
    catalog.close();
  });

  test("overlap: queue runs a fire that came during a run right after it", async () => {
    const { file } = project('{ cron: "* * * * * *", overlap: queue }', 1300);
    const runs: { start: number; end?: number; result?: RunResult }[] = [];
    const lines: string[] = [];
    const scheduler = new PipelineScheduler([scheduled(file)], {
      registry: TEST_STAGES,
      log: (line) => lines.push(line),
      onRunStart: () => runs.push({ start: performance.now() }),
      onRunEnd: (_name, result) => Object.assign(runs[runs.length - 1]!, { end: performance.now(), result }),
    });
    await collectRuns(scheduler, runs, 2, () => scheduler.start());
    assertNoOverlap(runs);
    assert.ok(lines.some((l) => /queued after it/.test(l)));
    assert.ok(runs[1]!.start - runs[0]!.end! < 300, "the queued run started as soon as the first ended");
  });

  test("status's next fire time honours the schedule's time zone", () => {
    const from = new Date("2024-01-15T12:00:00Z");
    const [next] = nextFireTimes({ cron: "0 3 * * *", timezone: "Europe/Paris", overlap: "skip" }, 1, from);
    assert.equal(next!.toISOString(), "2024-01-16T02:00:00.000Z");
  });

  test("SIGTERM during a run: the run finishes, no new run starts, the process exits 0", async () => {
    const { file, workdir } = project('"* * * * * *"', 1500);
    const child = spawn(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, "scheduler-child.ts"), file], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no run started:\n${out}`)), 15_000);
        child.stdout!.on("data", (chunk: Buffer) => {
          out += chunk.toString();
          if (out.includes("run started")) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      child.kill("SIGTERM");
      assert.equal(await exited, 0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
    assert.match(out, /SIGTERM: shutting down/);
    assert.match(out, /scheduler stopped/);
    assert.equal(out.match(/run started/g)!.length, 1, out);
    const catalog = new Catalog(workdir);
    const recorded = catalog.runs();
    catalog.close();
    assert.equal(recorded.length, 1);
    assert.equal(recorded[0]!.status, "ok", "the running pipeline finished before the process exited");
  });

  describe("with Redis job schedulers", () => {
    let redis: RedisServer | undefined;
    after(async () => {
      await redis?.stop();
    });

    test("a BullMQ job scheduler fires every second; runs never overlap and the second is cached", async () => {
      redis = await startRedis();
      const { file, workdir } = project('"* * * * * *"', 1300);
      const runs: { start: number; end?: number; result?: RunResult }[] = [];
      const lines: string[] = [];
      const scheduler = new PipelineScheduler([scheduled(file)], {
        registry: TEST_STAGES,
        log: (line) => lines.push(line),
        onRunStart: () => runs.push({ start: performance.now() }),
        onRunEnd: (_name, result) => Object.assign(runs[runs.length - 1]!, { end: performance.now(), result }),
      });
      try {
        await collectRuns(scheduler, runs, 2, () => scheduler.startWithRedis(redis!.url));
      } finally {
        await scheduler.stop(1000);
      }
      assertNoOverlap(runs);
      assert.deepEqual(runs[1]!.result!.totals, { ran: 0, cached: 3, failed: 0, skipped: 0 });
      assert.ok(lines.some((l) => /job scheduler pipeline-sched-test/.test(l)));
      assert.deepEqual(executions(workdir), ["numbers", "scale", "total"]);
    });
  });
});
