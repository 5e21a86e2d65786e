import path from "node:path";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Cron } from "croner";
import { Queue, UnrecoverableError, Worker, type Job } from "bullmq";
import { Redis } from "ioredis";
import { UsageError } from "../errors.js";
import { tryLockFile, unlockFile } from "../pipeline/file-lock.js";
import { runPipeline, type RunOptions, type RunResult } from "../pipeline/engine.js";
import type { Executor } from "../pipeline/executor.js";
import { QUEUE_PREFIX } from "./executor.js";
import { checkRedis, redisOptionsFromUrl } from "./redis.js";
import type { ResolvedPipeline, ResolvedSchedule, StageRegistry } from "../pipeline/spec.js";

/** A pipeline the scheduler serves; it is loaded again at every fire so edits to the file apply. */
export interface ScheduledPipeline {
  name: string;
  schedule: ResolvedSchedule;
  load(): Promise<ResolvedPipeline>;
}

export interface SchedulerOptions {
  registry: StageRegistry;
  /** A fresh executor for each run (default: in-process); closed after the run. */
  createExecutor?: () => Promise<Executor>;
  writeReport?: RunOptions["writeReport"];
  /** One human line per event (fired, skipped, queued, finished). */
  log?: (line: string) => void;
  onRunStart?: (pipeline: string) => void;
  onRunEnd?: (pipeline: string, result: RunResult | undefined, error?: unknown) => void;
}

/** Lock of one pipeline held across processes; the release is idempotent. */
export interface PipelineLock {
  release(): Promise<void>;
}

/**
 * Takes the pipeline's lock in its workdir without waiting (undefined when another process
 * holds it). A lock left by a process that died is taken over. Enough for processes sharing
 * one machine; the Redis mode uses a Redis lock instead.
 */
export function tryPipelineFileLock(workdir: string, pipeline: string): PipelineLock | undefined {
  const file = path.join(workdir, "locks", `pipeline-${pipeline}.lock`);
  if (!tryLockFile(file)) return undefined;
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      unlockFile(file);
    },
  };
}

const RELEASE_SCRIPT = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`;
const RENEW_SCRIPT = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`;

/** The same lock in Redis, for schedulers on several machines: renewed while held, expires if the holder dies. */
export async function tryPipelineRedisLock(client: Redis, pipeline: string, ttlMs = 30_000): Promise<PipelineLock | undefined> {
  const key = `${QUEUE_PREFIX}:pipeline-lock:${pipeline}`;
  const token = `${process.pid}-${randomBytes(6).toString("hex")}`;
  if ((await client.set(key, token, "PX", ttlMs, "NX")) !== "OK") return undefined;
  const timer = setInterval(() => void client.eval(RENEW_SCRIPT, 1, key, token, String(ttlMs)).catch(() => {}), Math.floor(ttlMs / 3));
  timer.unref();
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      await client.eval(RELEASE_SCRIPT, 1, key, token);
    },
  };
}

interface PipelineState {
  entry: ScheduledPipeline;
  running?: Promise<void>;
  queued: boolean;
}

/**
 * Runs pipelines on their schedules. Triggers come from croner timers in this process, or, with
 * a Redis URL, from BullMQ job schedulers that any number of scheduler processes consume. A
 * pipeline never runs twice at once: a fire during a run is skipped with a log line, or queued
 * (at most one waiting run) when the schedule says `overlap: queue`. Each run is a normal run:
 * cached stages are reused, and it lands in the catalog with trigger `schedule`.
 */
export class PipelineScheduler {
  private readonly states = new Map<string, PipelineState>();
  private readonly crons: Cron[] = [];
  private readonly abort = new AbortController();
  private stopping = false;
  private stopped?: Promise<void>;
  private redis?: { client: Redis; queue: Queue; worker: Worker };

  constructor(
    pipelines: ScheduledPipeline[],
    private readonly options: SchedulerOptions,
  ) {
    for (const entry of pipelines) {
      if (this.states.has(entry.name)) throw new UsageError(`pipeline ${entry.name} is given twice`);
      this.states.set(entry.name, { entry, queued: false });
    }
  }

  private log(line: string): void {
    this.options.log?.(`${new Date().toISOString()} ${line}`);
  }

  /** Starts croner timers, one per pipeline, in each schedule's time zone. */
  start(): void {
    for (const state of this.states.values()) {
      const { cron, timezone } = state.entry.schedule;
      const timer = new Cron(cron, { timezone }, () => this.fire(state.entry.name));
      this.crons.push(timer);
      this.log(`${state.entry.name}: scheduled "${cron}" (${timezone}); next run at ${timer.nextRun()?.toISOString() ?? "never"}`);
    }
  }

  /**
   * Registers one BullMQ job scheduler per pipeline (upsert: restarting or running several
   * scheduler processes keeps one schedule each) and consumes the jobs they produce.
   */
  async startWithRedis(redisUrl: string): Promise<void> {
    await checkRedis(redisUrl);
    const connection = redisOptionsFromUrl(redisUrl);
    const client = new Redis(connection);
    const queue = new Queue(SCHEDULE_QUEUE, { connection, prefix: QUEUE_PREFIX });
    for (const state of this.states.values()) {
      const { cron, timezone } = state.entry.schedule;
      await queue.upsertJobScheduler(
        `pipeline-${state.entry.name}`,
        { pattern: cron, tz: timezone },
        { name: "run-pipeline", data: { pipeline: state.entry.name }, opts: { attempts: 1, removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } } },
      );
      this.log(`${state.entry.name}: job scheduler pipeline-${state.entry.name} "${cron}" (${timezone}) registered in Redis`);
    }
    const worker = new Worker(
      SCHEDULE_QUEUE,
      async (job: Job) => {
        const name = (job.data as { pipeline?: unknown })?.pipeline;
        // Only pipelines this process was started with can run here; a job cannot name a file.
        const state = typeof name === "string" ? this.states.get(name) : undefined;
        if (!state) throw new UnrecoverableError(`this scheduler does not serve pipeline ${String(name)}`);
        return this.runLocked(state, () => tryPipelineRedisLock(client, state.entry.name));
      },
      { connection, prefix: QUEUE_PREFIX, concurrency: Math.max(1, this.states.size) },
    );
    worker.on("error", (error) => this.log(`schedule worker error: ${error.message}`));
    await worker.waitUntilReady();
    this.redis = { client, queue, worker };
  }

  /** Next fire times, for `status` and the startup log. */
  nextRuns(): { pipeline: string; next: Date | null }[] {
    return [...this.states.values()].map((s) => {
      const cron = new Cron(s.entry.schedule.cron, { timezone: s.entry.schedule.timezone, paused: true });
      const next = cron.nextRun();
      cron.stop();
      return { pipeline: s.entry.name, next };
    });
  }

  /** A timer fired: run now, or skip / queue when the previous run is still going. */
  fire(name: string): void {
    const state = this.states.get(name);
    if (!state || this.stopping) return;
    if (state.running) {
      if (state.entry.schedule.overlap === "queue") {
        if (state.queued) this.log(`${name}: fired while a run is going and another is queued; not queueing a third`);
        else this.log(`${name}: fired while the previous run is still going; queued after it`);
        state.queued = true;
      } else {
        this.log(`${name}: skipped, the previous run is still going (overlap: skip)`);
      }
      return;
    }
    void this.runLocked(state, async () => {
      const pipeline = await state.entry.load();
      return tryPipelineFileLock(pipeline.workdir, name);
    });
  }

  private async runLocked(state: PipelineState, lock: () => Promise<PipelineLock | undefined>): Promise<string> {
    const name = state.entry.name;
    if (state.running) {
      // Redis mode: this process already runs it; the lock below would say the same.
      if (state.entry.schedule.overlap === "skip") {
        this.log(`${name}: skipped, the previous run is still going (overlap: skip)`);
        return "skipped";
      }
      while (state.running) await state.running;
    }
    let held: PipelineLock | undefined;
    const done = (async () => {
      held = await lock();
      while (!held && state.entry.schedule.overlap === "queue" && !this.stopping) {
        await sleep(500);
        held = await lock();
      }
      if (!held) {
        this.log(`${name}: skipped, another process is running it (overlap: skip)`);
        return;
      }
      try {
        await this.runOnce(state.entry);
      } finally {
        await held.release();
      }
    })();
    state.running = done.catch(() => {});
    try {
      await done;
    } finally {
      state.running = undefined;
    }
    if (state.queued && !this.stopping) {
      state.queued = false;
      this.fire(name);
    }
    return held ? "ran" : "skipped";
  }

  private async runOnce(entry: ScheduledPipeline): Promise<void> {
    this.options.onRunStart?.(entry.name);
    this.log(`${entry.name}: run started`);
    let executor: Executor | undefined;
    try {
      const pipeline = await entry.load();
      executor = await this.options.createExecutor?.();
      const result = await runPipeline(pipeline, {
        registry: this.options.registry,
        executor,
        trigger: "schedule",
        signal: this.abort.signal,
        writeReport: this.options.writeReport,
      });
      const { ran, cached, failed, skipped } = result.totals;
      this.log(
        `${entry.name}: run ${result.runId} ${result.status} in ${result.seconds.toFixed(2)} s (ran ${ran}, cached ${cached}, failed ${failed}, skipped ${skipped})`,
      );
      this.options.onRunEnd?.(entry.name, result);
    } catch (error) {
      this.log(`${entry.name}: run failed: ${(error as Error)?.message ?? String(error)}`);
      this.options.onRunEnd?.(entry.name, undefined, error);
    } finally {
      await executor?.close?.();
    }
  }

  /**
   * Stops timers (and the Redis consumer), lets running pipelines finish for up to `graceMs`,
   * then aborts them. Queued runs are dropped.
   */
  stop(graceMs = 30_000): Promise<void> {
    this.stopped ??= this.shutdown(graceMs);
    return this.stopped;
  }

  private async shutdown(graceMs: number): Promise<void> {
    this.stopping = true;
    for (const cron of this.crons) cron.stop();
    const running = [...this.states.values()].map((s) => s.running).filter(Boolean) as Promise<void>[];
    if (running.length)
      this.log(`stopping: waiting up to ${(graceMs / 1000).toFixed(0)} s for ${running.length} run${running.length > 1 ? "s" : ""} to finish`);
    const all = Promise.all(running);
    const timer = setTimeout(() => {
      this.log("stopping: grace period over, aborting the running stages");
      this.abort.abort(new Error("scheduler stopped"));
    }, graceMs);
    // The Redis consumer waits for its active job (the run) while it closes.
    await Promise.all([all, this.redis?.worker.close()]);
    clearTimeout(timer);
    if (this.redis) {
      await this.redis.queue.close();
      this.redis.client.disconnect();
    }
    this.log("scheduler stopped");
  }

  /** Aborts running pipelines now (a second SIGTERM). */
  abortNow(): void {
    this.abort.abort(new Error("scheduler stopped"));
  }
}

/** Queue the BullMQ job schedulers put pipeline-run jobs on. */
export const SCHEDULE_QUEUE = "schedules";

/**
 * Keeps a started scheduler serving until SIGTERM or SIGINT, then stops it cleanly: timers off,
 * the running pipeline finishes (or is aborted after `graceMs`; a second signal aborts at once).
 */
export async function serveUntilSignal(scheduler: PipelineScheduler, options: { graceMs?: number; log?: (line: string) => void } = {}): Promise<string> {
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  options.log?.(`${new Date().toISOString()} ${signal}: shutting down (send it again to abort running stages)`);
  const again = () => scheduler.abortNow();
  process.once("SIGTERM", again);
  process.once("SIGINT", again);
  try {
    await scheduler.stop(options.graceMs);
  } finally {
    process.removeListener("SIGTERM", again);
    process.removeListener("SIGINT", again);
  }
  return signal;
}
