import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, realpathSync, rmSync } from "node:fs";
import path from "node:path";
import { FlowProducer, Queue, QueueEvents, type Job, type JobsOptions } from "bullmq";
import { EnvironmentError, StageError } from "../errors.js";
import { sha256 } from "../util/hash.js";
import type { Executor, StageTask } from "../pipeline/executor.js";
import type { StageRegistry } from "../pipeline/spec.js";
import { CAPABILITIES, stageCapabilities, type ProgressEvent, type ShardSpec, type StageSummary } from "../pipeline/stage.js";
import { checkRedis, redisOptionsFromUrl } from "./redis.js";

/** BullMQ key prefix: every queue of this package lives under `prolearn:` in Redis. */
export const QUEUE_PREFIX = "prolearn";
/** Stage work that needs nothing special. */
export const STAGE_QUEUE = "stages";

/** The queue a stage's jobs go to: `stages`, or `stages-gpu` for stages that declare `capabilities: ["gpu"]`. */
export function queueNameFor(capabilities: readonly string[] | undefined): string {
  const needs = [...new Set(capabilities ?? [])].sort();
  return needs.length ? `${STAGE_QUEUE}-${needs.join("-")}` : STAGE_QUEUE;
}

/**
 * What a job carries: the stage task as JSON (stage name, params, paths and digests), never
 * data and never code. `task.outDir` and `task.tmpDir` name the job's own folder under
 * `<workdir>/jobs/`; each attempt writes below it in a fresh folder of its own.
 */
export type JobPayload =
  | { kind: "run"; task: StageTask }
  | { kind: "plan"; task: StageTask }
  | { kind: "shard"; task: StageTask; shard: ShardSpec }
  | { kind: "merge"; task: StageTask; shards: ShardSpec[]; shardJobIds: string[] };

/** What a job returns (small JSON): where the attempt that succeeded left its files. */
export type JobResult =
  | { kind: "run" | "merge"; outDir: string; summary: StageSummary }
  | { kind: "plan"; shards: ShardSpec[] }
  | { kind: "shard"; dir: string };

/** Progress forwarded from a worker through job progress updates. */
export interface ForwardedProgress {
  events: ProgressEvent[];
}

export interface BullMqExecutorOptions {
  redisUrl: string;
  registry: StageRegistry;
  /** Tries per job before the stage fails for good (default 3). */
  attempts?: number;
  /** First retry delay; doubles on each further retry (default 2000 ms). */
  backoffMs?: number;
  /** Skip the Redis policy check (it already ran in this process). */
  skipRedisCheck?: boolean;
}

/**
 * The grammar of the job ids this executor makes: `<workdir tag>.<cache key>`, then for a
 * sharded stage `.plan`, `.merge` or `.shard.<n>.<shard id>`. No id of this grammar holds a
 * path separator or `..`, so its folder always lies directly in `<workdir>/jobs`.
 */
export const JOB_ID_PATTERN = /^[0-9a-f]{8}\.[A-Za-z0-9]+(?:\.plan|\.merge|\.shard\.\d+\.[A-Za-z0-9_-]{0,64})?$/;

export function isJobId(jobId: string): boolean {
  return JOB_ID_PATTERN.test(jobId);
}

/** Folder of one job inside the workdir; an id outside the executor's grammar is refused. */
export function jobDir(workdir: string, jobId: string): string {
  if (!isJobId(jobId))
    throw new StageError("queue", `job id ${JSON.stringify(jobId)} is not one this executor makes (<tag>.<cache key>[.plan|.merge|.shard.<n>.<id>])`);
  return path.join(workdir, "jobs", jobId);
}

/** Short tag of the workdir, so equal cache keys of two different workdirs never share a job. */
export function storeTag(workdir: string): string {
  let real = workdir;
  try {
    real = realpathSync(workdir);
  } catch {
    // Not created yet: the resolved path names it just as well.
  }
  return sha256(path.resolve(real)).slice(0, 8);
}

function safeId(text: string): string {
  return text.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64);
}

/**
 * Runs stages on BullMQ workers (`prolearn worker`). Job ids are the cache keys (prefixed by a
 * tag of the workdir, suffixed by the shard), so the same work enqueued twice while it is
 * queued or running runs once. A plain stage is one job. A sharded stage is a plan job, then a
 * flow: one child job per shard under a merge job that runs once every shard is done and merges
 * them in plan order, which is what the in-process executor does, so outputs are byte-identical.
 * Workers leave their files in job folders of the shared workdir; this process links them into
 * the engine's staging folder, and the engine publishes as for any executor: a killed or failed
 * attempt never reaches the store.
 */
export class BullMqExecutor implements Executor {
  readonly name = "bullmq";
  private readonly connection;
  private readonly queues = new Map<string, { queue: Queue; events: QueueEvents }>();
  private flows?: FlowProducer;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private checked: Promise<unknown> | undefined;
  private readonly swept = new Set<string>();
  /** Job id -> the emit of the task waiting on it, for forwarded progress. */
  private readonly listeners = new Map<string, (event: ProgressEvent) => void>();

  constructor(private readonly options: BullMqExecutorOptions) {
    this.connection = redisOptionsFromUrl(options.redisUrl);
    this.attempts = options.attempts ?? 3;
    this.backoffMs = options.backoffMs ?? 2000;
    if (options.skipRedisCheck) this.checked = Promise.resolve();
  }

  private async queueFor(name: string): Promise<{ queue: Queue; events: QueueEvents }> {
    this.checked ??= checkRedis(this.options.redisUrl);
    await this.checked;
    let entry = this.queues.get(name);
    if (!entry) {
      const queue = new Queue(name, { connection: this.connection, prefix: QUEUE_PREFIX });
      const events = new QueueEvents(name, { connection: this.connection, prefix: QUEUE_PREFIX });
      events.on("progress", ({ jobId, data }) => {
        const emit = this.listeners.get(jobId);
        const forwarded = data as unknown as ForwardedProgress;
        if (emit && forwarded && Array.isArray(forwarded.events)) for (const event of forwarded.events) emit(event);
      });
      entry = { queue, events };
      this.queues.set(name, entry);
      await events.waitUntilReady();
    }
    return entry;
  }

  private jobOptions(jobId: string): JobsOptions {
    return {
      jobId,
      attempts: this.attempts,
      backoff: { type: "exponential", delay: this.backoffMs },
      // Finished jobs stay a while so a late duplicate can still see the result; their
      // folders are reclaimed once Redis has dropped them (see sweepJobFolders).
      removeOnComplete: { age: 3600, count: 10000 },
      removeOnFail: { age: 24 * 3600, count: 10000 },
    };
  }

  async execute(task: StageTask, emit: (event: ProgressEvent) => void, signal: AbortSignal): Promise<StageSummary> {
    const stage = this.options.registry.get(task.stage);
    if (!stage) throw new StageError(task.stage, `no stage named ${task.stage} is registered`);
    const queueName = queueNameFor(stageCapabilities(stage, task.params));
    const { queue, events } = await this.queueFor(queueName);
    const workdir = task.pipeline.workdir;
    await this.sweepJobFolders(workdir);
    const base = `${storeTag(workdir)}.${task.cacheKey}`;
    const jobTask = (jobId: string): StageTask => ({ ...task, outDir: jobDir(workdir, jobId), tmpDir: jobDir(workdir, jobId) });

    if (!stage.sharding) {
      const result = (await this.runJob(queue, events, base, { kind: "run", task: jobTask(base) }, emit, signal)) as Extract<
        JobResult,
        { kind: "run" | "merge" }
      >;
      this.takeOutputs(workdir, base, result.outDir, task.outDir);
      return result.summary;
    }

    const mergeId = `${base}.merge`;
    const existingMerge = await queue.getJob(mergeId);
    const mergeState = existingMerge ? await existingMerge.getState() : undefined;
    let shardJobIds: string[];
    if (existingMerge && mergeState !== "completed" && mergeState !== "failed" && mergeState !== "unknown") {
      // The same stage is already queued or running (another submitter, or ours before a restart).
      shardJobIds = (existingMerge.data as JobPayload & { kind: "merge" }).shardJobIds;
    } else {
      if (existingMerge) await this.discard(existingMerge, workdir);
      const planId = `${base}.plan`;
      const plan = (await this.runJob(queue, events, planId, { kind: "plan", task: jobTask(planId) }, emit, signal)) as Extract<JobResult, { kind: "plan" }>;
      const shards = plan.shards;
      shardJobIds = shards.map((shard, index) => `${base}.shard.${index}.${safeId(shard.id)}`);
      this.flows ??= new FlowProducer({ connection: this.connection, prefix: QUEUE_PREFIX });
      for (const id of shardJobIds) {
        const stale = await queue.getJob(id);
        if (stale) await this.discard(stale, workdir);
      }
      await this.flows.add({
        name: `${task.stage}:merge`,
        queueName,
        data: { kind: "merge", task: jobTask(mergeId), shards, shardJobIds } satisfies JobPayload,
        opts: this.jobOptions(mergeId),
        children: shards.map((shard, index) => ({
          name: `${task.stage}:shard`,
          queueName,
          data: { kind: "shard", task: jobTask(shardJobIds[index]!), shard } satisfies JobPayload,
          // Without this a parent whose child failed for good waits forever.
          opts: { ...this.jobOptions(shardJobIds[index]!), failParentOnFailure: true },
        })),
      });
    }
    for (const id of shardJobIds) this.listeners.set(id, emit);
    let result: Extract<JobResult, { kind: "run" | "merge" }>;
    try {
      result = (await this.waitFor(queue, events, mergeId, emit, signal, shardJobIds)) as Extract<JobResult, { kind: "run" | "merge" }>;
    } finally {
      for (const id of shardJobIds) this.listeners.delete(id);
    }
    this.takeOutputs(workdir, mergeId, result.outDir, task.outDir);
    // Shard folders were read by the merge only; the plan folder holds nothing.
    for (const id of [...shardJobIds, `${base}.plan`]) rmSync(jobDir(workdir, id), { recursive: true, force: true });
    return result.summary;
  }

  /** Adds the job unless the same id is already queued or running, then waits for its result. */
  private async runJob(
    queue: Queue,
    events: QueueEvents,
    jobId: string,
    payload: JobPayload,
    emit: (event: ProgressEvent) => void,
    signal: AbortSignal,
  ): Promise<JobResult> {
    const existing = await queue.getJob(jobId);
    if (existing) {
      const state = await existing.getState();
      // A finished job from an earlier run (forced rerun, output deleted): start afresh.
      if (state === "completed" || state === "failed") await this.discard(existing, payload.task.pipeline.workdir);
    }
    await queue.add(`${payload.task.stage}:${payload.kind}`, payload, this.jobOptions(jobId));
    await this.warnIfUnserved(queue, payload.task.stage, emit);
    return this.waitFor(queue, events, jobId, emit, signal, []);
  }

  /** A job on a queue no worker serves waits silently forever; say so once per run of a stage. */
  private async warnIfUnserved(queue: Queue, stage: string, emit: (event: ProgressEvent) => void): Promise<void> {
    const workers = await queue.getWorkers().catch(() => undefined);
    if (!workers || workers.length > 0) return;
    const capabilities = queue.name.slice(STAGE_QUEUE.length + 1);
    emit({
      kind: "log",
      stage,
      level: "warn",
      message: `no worker serves queue ${queue.name} yet; the job waits for one (start: prolearn worker --redis URL${capabilities ? ` --capabilities ${capabilities.split("-").join(",")}` : ""})`,
    });
  }

  private async waitFor(
    queue: Queue,
    events: QueueEvents,
    jobId: string,
    emit: (event: ProgressEvent) => void,
    signal: AbortSignal,
    childIds: string[],
  ): Promise<JobResult> {
    const job = await queue.getJob(jobId);
    if (!job) throw new EnvironmentError(`job ${jobId} vanished from the queue before it finished`);
    this.listeners.set(jobId, emit);
    const aborted = new Promise<never>((_, reject) => {
      const onAbort = () => reject(signal.reason ?? new Error("aborted"));
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return (await Promise.race([job.waitUntilFinished(events), aborted])) as JobResult;
    } catch (error) {
      if (signal.aborted) {
        // Queued work nobody waits for any more is dropped; a running attempt is left to finish.
        await job.remove().catch(() => {});
        throw error;
      }
      throw await this.describeFailure(queue, jobId, childIds, error as Error);
    } finally {
      this.listeners.delete(jobId);
    }
  }

  /** The worker's own message and the id of the job that failed for good (a shard, if one did). */
  private async describeFailure(queue: Queue, jobId: string, childIds: string[], error: Error): Promise<StageError> {
    for (const id of childIds) {
      const child = await queue.getJob(id);
      if (child && (await child.getState()) === "failed") return failure(child);
    }
    const job = await queue.getJob(jobId);
    if (job) return failure(job, error.message);
    return new StageError(jobId.split(".")[0] ?? "queue", `job ${jobId} failed: ${error.message}`);

    function failure(failed: Job, fallback?: string): StageError {
      const payload = failed.data as JobPayload;
      const stageName = payload?.task?.stage ?? "queue";
      const reason = (failed.failedReason || fallback || "unknown reason").replace(new RegExp(`^stage ${stageName} failed: `), "");
      return new StageError(stageName, `job ${failed.id} failed after ${failed.attemptsMade} attempt${failed.attemptsMade === 1 ? "" : "s"}: ${reason}`, {
        hint: "the worker's log has the full error; `prolearn run` again retries it",
      });
    }
  }

  /** Removes a finished job (and its children) and its folders from the workdir. */
  private async discard(job: Job, workdir: string): Promise<void> {
    const payload = job.data as JobPayload;
    const ids = [job.id!, ...(payload?.kind === "merge" && Array.isArray(payload.shardJobIds) ? payload.shardJobIds : [])];
    await job.remove().catch(() => {});
    // Ids come back from Redis: only those of the executor's grammar name a folder to remove.
    for (const id of ids) if (typeof id === "string" && isJobId(id)) rmSync(jobDir(workdir, id), { recursive: true, force: true });
  }

  /** Links the files the successful attempt left into the engine's staging folder. */
  private takeOutputs(workdir: string, jobId: string, from: string, to: string): void {
    const root = jobDir(workdir, jobId);
    const source = path.resolve(from);
    if (!source.startsWith(root + path.sep)) throw new EnvironmentError(`job ${jobId} reported outputs outside its folder: ${from}`);
    if (!existsSync(source))
      throw new EnvironmentError(`job ${jobId} finished but its folder ${source} is gone`, {
        hint: "workers and this process must share the workdir's filesystem",
      });
    linkTree(source, to);
  }

  /** Drops job folders whose jobs Redis no longer holds (expired after completion or failure). */
  private async sweepJobFolders(workdir: string): Promise<void> {
    if (this.swept.has(workdir)) return;
    this.swept.add(workdir);
    const root = path.join(workdir, "jobs");
    if (!existsSync(root)) return;
    const names = new Set([queueNameFor([]), ...CAPABILITIES.map((c) => queueNameFor([c]))]);
    const queues = await Promise.all([...names].map(async (name) => (await this.queueFor(name)).queue));
    for (const entry of readdirSync(root)) {
      const jobs = await Promise.all(queues.map((q) => q.getJob(entry)));
      if (!jobs.some(Boolean)) rmSync(path.join(root, entry), { recursive: true, force: true });
    }
  }

  async close(): Promise<void> {
    await this.flows?.close();
    for (const { queue, events } of this.queues.values()) {
      await events.close();
      await queue.close();
    }
    this.queues.clear();
  }
}

/** Hard-links every file of `from` into `to` (same filesystem: no copy); copies where links fail. */
export function linkTree(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) linkTree(source, target);
    else if (entry.isFile()) {
      try {
        linkSync(source, target);
      } catch {
        copyFileSync(source, target);
      }
    }
  }
}
