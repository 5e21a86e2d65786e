import { existsSync, lstatSync, mkdirSync, readdirSync, realpathSync, rmSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { UnrecoverableError, Worker, type Job } from "bullmq";
import { z } from "zod";
import { ProlearnError, UsageError } from "../errors.js";
import { makeStageContext, type StageTask } from "../pipeline/executor.js";
import { withCollectedWarnings } from "../pipeline/warnings.js";
import { isJobId, jobDir, queueNameFor, QUEUE_PREFIX, type JobPayload, type JobResult } from "./executor.js";
import { checkRedis, redisOptionsFromUrl } from "./redis.js";
import { CAPABILITIES, stageCapabilities } from "../pipeline/stage.js";
import type { StageRegistry } from "../pipeline/spec.js";
import type { ProgressEvent, ShardSpec } from "../pipeline/stage.js";

export interface StageWorkerOptions {
  redisUrl: string;
  /** Stages this worker may run, by name (the package's STAGES in `prolearn worker`). */
  registry: StageRegistry;
  /** Jobs run at once in this process (default 1). */
  concurrency?: number;
  /** Extra queues served, e.g. ["gpu"] for stages that declare that capability. */
  capabilities?: string[];
  /**
   * Folders that workdirs, dataset roots and pipeline folders named in a job must lie in
   * (after resolving symlinks). Default: the current folder.
   */
  roots?: string[];
  /**
   * How long a job stays locked without a heartbeat from its worker; after that (a killed
   * worker) another worker takes it over. Default 30 s.
   */
  lockDurationMs?: number;
  /** Largest job payload (its JSON, in bytes) the worker accepts; larger jobs fail at once. Default 16 MiB. */
  maxPayloadBytes?: number;
  /**
   * How long `close()` waits for running jobs (and for Redis) before it drops the connections
   * and returns anyway. Default 30 s.
   */
  graceMs?: number;
  log?: (line: string) => void;
}

export interface StageWorker {
  queues: string[];
  /**
   * Stops taking jobs and waits for the running ones to finish, for at most the grace period;
   * when Redis does not answer, or the grace period runs out, it drops the connections and
   * returns `forced` with the reason (unfinished jobs are retried elsewhere once their lock
   * expires). `now` skips the wait (a second signal).
   */
  close(options?: { graceMs?: number; now?: boolean }): Promise<{ forced: boolean; reason?: string }>;
}

/** Default grace period of `StageWorker.close()`. */
export const DEFAULT_WORKER_GRACE_MS = 600_000;

/** Resolves with "timeout" after `ms`, without keeping the process alive. */
function timeout(ms: number): Promise<"timeout"> {
  return new Promise((resolve) => setTimeout(() => resolve("timeout"), ms).unref());
}

const artifactSchema = z.object({
  stage: z.string(),
  digest: z.string(),
  dir: z.string(),
  files: z.record(z.string(), z.string()),
  summary: z.record(z.string(), z.unknown()),
});
const taskSchema = z.object({
  runId: z.string(),
  stage: z.string(),
  cacheKey: z.string().regex(/^[A-Za-z0-9]+$/),
  pipeline: z.looseObject({
    name: z.string(),
    file: z.string().optional(),
    baseDir: z.string(),
    workdir: z.string(),
    dataset: z.looseObject({ root: z.string(), reports: z.string().optional() }),
    stages: z.record(z.string(), z.unknown()),
  }),
  params: z.unknown(),
  inputs: z.record(z.string(), artifactSchema),
  resources: z.record(z.string(), z.string()),
  outDir: z.string(),
  tmpDir: z.string(),
  fresh: z.boolean().optional(),
});
const shardSchema = z.object({ id: z.string(), payload: z.record(z.string(), z.unknown()) });
const payloadSchema = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("run"), task: taskSchema }),
  z.strictObject({ kind: z.literal("plan"), task: taskSchema }),
  z.strictObject({ kind: z.literal("shard"), task: taskSchema, shard: shardSchema }),
  z.strictObject({ kind: z.literal("merge"), task: taskSchema, shards: z.array(shardSchema), shardJobIds: z.array(z.string().regex(/^[A-Za-z0-9._-]+$/)) }),
]);

/** A payload the worker refuses to run; the job fails at once, without retries. */
export class RejectedJobError extends UsageError {}

/**
 * Default for `maxPayloadBytes`. A job carries paths, params and (ingest) one shard's sample
 * list; the largest the package makes, an ingest merge of ~10k reports, is a few MB.
 */
export const DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;

/** Resolves symlinks of the longest existing prefix, so a path that does not exist yet is still checked. */
export function realpathNearest(target: string): string {
  let current = path.resolve(target);
  const rest: string[] = [];
  for (;;) {
    try {
      return path.join(realpathSync(current), ...rest.reverse());
    } catch {
      const parent = path.dirname(current);
      if (parent === current) return path.join(current, ...rest.reverse());
      rest.push(path.basename(current));
      current = parent;
    }
  }
}

/**
 * The job's own folder, `<workdir>/jobs/<job id>`, after checking that a worker may delete and
 * write there: an id of the executor's grammar (no separator, no `..`), a `jobs` folder that is
 * not a link out of the workdir, and a job folder that, where it exists, is a real folder (not a
 * link) resolving inside it.
 */
export function ownJobFolder(workdir: string, jobId: string): string {
  if (!isJobId(jobId)) {
    throw new RejectedJobError(`job id ${JSON.stringify(jobId)} is not one the bullmq executor makes`, {
      hint: "job ids are <workdir tag>.<cache key>[.plan|.merge|.shard.<n>.<id>]; only `prolearn run --executor bullmq` should enqueue jobs",
    });
  }
  const jobs = path.join(workdir, "jobs");
  const realJobs = realpathNearest(jobs);
  if (realJobs !== path.join(realpathNearest(workdir), "jobs"))
    throw new RejectedJobError(`job ${jobId}: ${jobs} resolves to ${realJobs}, outside the workdir`, {
      hint: "the jobs folder must be a plain folder of the workdir, not a symbolic link",
    });
  const folder = path.join(jobs, jobId);
  const info = lstatSync(folder, { throwIfNoEntry: false });
  if (info && !info.isDirectory())
    throw new RejectedJobError(
      `job ${jobId}: its folder ${folder} is ${info.isSymbolicLink() ? `a symbolic link to ${realpathNearest(folder)}` : "not a folder"}`,
      { hint: "remove it; a worker only writes into plain folders under <workdir>/jobs" },
    );
  if (info && !inside(realpathNearest(folder), realJobs)) throw new RejectedJobError(`job ${jobId}: its folder ${folder} resolves outside ${jobs}`);
  return folder;
}

/** What the job id says the job is: kind and cache key must agree with the payload. */
function checkJobIdFits(payload: JobPayload, jobId: string): void {
  const base = jobId.slice(0, 9 + payload.task.cacheKey.length);
  const rest = jobId.slice(base.length);
  const suffixOk =
    payload.kind === "run"
      ? rest === ""
      : payload.kind === "plan"
        ? rest === ".plan"
        : payload.kind === "merge"
          ? rest === ".merge"
          : rest.startsWith(".shard.");
  if (base.slice(9) !== payload.task.cacheKey || !suffixOk)
    throw new RejectedJobError(`job ${jobId}: the id does not fit a ${payload.kind} job of cache key ${payload.task.cacheKey}`);
  if (payload.kind === "merge") {
    for (const id of payload.shardJobIds)
      if (!id.startsWith(`${base}.shard.`)) throw new RejectedJobError(`job ${jobId}: shard job ${id} belongs to another stage run`);
  }
}

function inside(child: string, parent: string): boolean {
  const relative = path.relative(parent, child);
  return relative === "" || (!relative.startsWith("..") && !path.isAbsolute(relative));
}

/**
 * Deepest nesting a job payload may have. The package's own payloads are under 10 levels deep;
 * a few hundred thousand nested arrays fit in the size limit and overflow the stack of every
 * recursive walk (JSON.stringify, zod), which would fail the job with an unclear message.
 */
export const MAX_PAYLOAD_DEPTH = 64;

/** Whether a JSON value nests arrays/objects more than `limit` levels deep (iterative: no stack to overflow). */
function nestedDeeperThan(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [item, depth] = stack.pop()!;
    if (!item || typeof item !== "object") continue;
    if (depth + 1 > limit) return true;
    for (const child of Array.isArray(item) ? item : Object.values(item)) if (child && typeof child === "object") stack.push([child, depth + 1]);
  }
  return false;
}

/** Every string in a JSON value, with where it sits (for error messages). */
function* strings(value: unknown, at: string): Generator<[string, string]> {
  if (typeof value === "string") yield [at, value];
  else if (Array.isArray(value)) for (let i = 0; i < value.length; i++) yield* strings(value[i], `${at}[${i}]`);
  else if (value && typeof value === "object") for (const [key, v] of Object.entries(value)) yield* strings(v, at ? `${at}.${key}` : key);
}

/**
 * Checks a job before anything runs: a known shape, a stage registered in this worker, its own
 * folder as output, and no path outside the workdir, the dataset folders and the pipeline's
 * folder, all of which must lie in the worker's roots. Strings that look like paths (absolute,
 * or with a separator) are resolved against the pipeline folder, so `../../etc` is caught too.
 */
export function validateJobPayload(
  data: unknown,
  jobId: string,
  registry: StageRegistry,
  roots: readonly string[],
  queueName?: string,
  maxPayloadBytes = DEFAULT_MAX_PAYLOAD_BYTES,
): JobPayload {
  // Checked first and without recursion: every later check walks the payload recursively.
  if (nestedDeeperThan(data, MAX_PAYLOAD_DEPTH)) {
    throw new RejectedJobError(`job ${jobId}: payload nests arrays or objects more than ${MAX_PAYLOAD_DEPTH} levels deep`, {
      hint: "jobs carry paths and params (a few levels deep); only `prolearn run --executor bullmq` should enqueue jobs",
    });
  }
  const bytes = Buffer.byteLength(JSON.stringify(data) ?? "");
  if (bytes > maxPayloadBytes) {
    throw new RejectedJobError(`job ${jobId}: payload of ${bytes} bytes exceeds this worker's limit of ${maxPayloadBytes} bytes`, {
      hint: "jobs carry paths and params, never data; raise the limit with `prolearn worker --max-payload-mb N` if a real stage needs it",
    });
  }
  if (!isJobId(jobId)) ownJobFolder("", jobId);
  const parsed = payloadSchema.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RejectedJobError(`job ${jobId}: malformed payload at ${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  const payload = parsed.data as unknown as JobPayload;
  const { task } = payload;
  const stage = registry.get(task.stage);
  if (!stage) {
    throw new RejectedJobError(`job ${jobId}: stage "${task.stage}" is not registered in this worker`, {
      hint: `registered: ${[...registry.keys()].join(", ") || "(none)"}`,
    });
  }
  if (!(task.stage in task.pipeline.stages)) throw new RejectedJobError(`job ${jobId}: stage ${task.stage} is not part of pipeline ${task.pipeline.name}`);
  if ((payload.kind === "run") !== !stage.sharding) throw new RejectedJobError(`job ${jobId}: a ${payload.kind} job does not fit stage ${task.stage}`);
  const expectedQueue = queueNameFor(stageCapabilities(stage, task.params));
  if (queueName !== undefined && queueName !== expectedQueue)
    throw new RejectedJobError(`job ${jobId}: stage ${task.stage} with these params belongs on queue ${expectedQueue}, not ${queueName}`);

  checkJobIdFits(payload, jobId);
  const realRoots = roots.map((r) => realpathNearest(r));
  const anchors: Record<string, string> = {
    "pipeline.workdir": task.pipeline.workdir,
    "pipeline.dataset.root": task.pipeline.dataset.root,
    "pipeline.baseDir": task.pipeline.baseDir,
  };
  if (task.pipeline.dataset.reports) anchors["pipeline.dataset.reports"] = task.pipeline.dataset.reports;
  const realAnchors: string[] = [];
  for (const [key, value] of Object.entries(anchors)) {
    if (!path.isAbsolute(value)) throw new RejectedJobError(`job ${jobId}: task.${key} must be an absolute path, got ${value}`);
    const real = realpathNearest(value);
    if (!realRoots.some((root) => inside(real, root))) {
      throw new RejectedJobError(`job ${jobId}: task.${key} ${value} is outside the folders this worker serves`, {
        hint: `worker roots: ${realRoots.join(", ")} (prolearn worker --root DIR)`,
      });
    }
    realAnchors.push(real);
  }
  const workdir = realpathNearest(task.pipeline.workdir);
  const expected = realpathNearest(ownJobFolder(task.pipeline.workdir, jobId));
  for (const key of ["outDir", "tmpDir"] as const) {
    if (realpathNearest(task[key]) !== expected)
      throw new RejectedJobError(`job ${jobId}: task.${key} must be the job's folder ${jobDir(task.pipeline.workdir, jobId)}, got ${task[key]}`);
  }
  for (const [name, input] of Object.entries(task.inputs)) {
    for (const [at, file] of strings({ dir: input.dir, files: input.files }, `inputs.${name}`)) {
      if (!path.isAbsolute(file) || !inside(realpathNearest(file), path.join(workdir, "store"))) {
        throw new RejectedJobError(`job ${jobId}: task.${at} ${file} is not an output in the workdir's store`);
      }
    }
  }
  for (const [at, value] of strings(payload, "")) {
    if (!path.isAbsolute(value) && !/[\\/]/.test(value)) continue;
    const real = realpathNearest(path.resolve(task.pipeline.baseDir, value));
    if (!realAnchors.some((anchor) => inside(real, anchor))) {
      throw new RejectedJobError(`job ${jobId}: ${at} names ${value}, outside the workdir and the dataset folders`, {
        hint: "jobs may only name files of the pipeline's workdir, dataset and pipeline folder",
      });
    }
  }
  // The submitter validated the params too; a worker trusts no one with what reaches a stage.
  const params = stage.params.safeParse(task.params);
  if (!params.success) {
    const issue = params.error.issues[0]!;
    throw new RejectedJobError(`job ${jobId}: params${issue.path.length ? `.${issue.path.join(".")}` : ""} of stage ${task.stage}: ${issue.message}`);
  }
  return { ...payload, task: { ...task, params: params.data } } as JobPayload;
}

/** Runs one validated job in this process; files go to a fresh attempt folder inside the job's folder. */
export async function runJob(
  payload: JobPayload,
  job: Pick<Job, "id" | "attemptsStarted" | "getChildrenValues">,
  registry: StageRegistry,
  emit: (event: ProgressEvent) => void,
  signal: AbortSignal,
): Promise<JobResult> {
  const jobId = job.id!;
  const stage = registry.get(payload.task.stage)!;
  // Checked again just before anything is deleted: the folder may have changed since validation.
  const folder = ownJobFolder(payload.task.pipeline.workdir, jobId);
  // Earlier attempts of this job died or failed; their files are never used.
  if (existsSync(folder)) for (const entry of readdirSync(folder)) rmSync(path.join(folder, entry), { recursive: true, force: true });
  const attempt = path.join(folder, `attempt-${job.attemptsStarted}-${randomBytes(3).toString("hex")}`);
  const outDir = path.join(attempt, "out");
  const tmpDir = path.join(attempt, "scratch");
  mkdirSync(outDir, { recursive: true });
  mkdirSync(tmpDir, { recursive: true });
  const task: StageTask = { ...payload.task, outDir, tmpDir };
  const ctx = makeStageContext(task, registry, emit, signal);
  try {
    switch (payload.kind) {
      case "run":
        return { kind: "run", outDir, summary: withCollectedWarnings(ctx, await stage.run!(ctx)) };
      case "plan":
        return { kind: "plan", shards: await stage.sharding!.plan(ctx) };
      case "shard": {
        const dir = path.join(attempt, "shard");
        mkdirSync(dir);
        await stage.sharding!.runShard(ctx, payload.shard, dir);
        return { kind: "shard", dir };
      }
      case "merge": {
        const values = await job.getChildrenValues<JobResult>();
        const byId = new Map(Object.entries(values).map(([key, value]) => [key.slice(key.lastIndexOf(":") + 1), value]));
        const shards: { shard: ShardSpec; dir: string }[] = payload.shards.map((shard, index) => {
          const id = payload.shardJobIds[index]!;
          const value = byId.get(id);
          if (value?.kind !== "shard") throw new Error(`shard job ${id} has no result`);
          const dir = realpathNearest(value.dir);
          if (!inside(dir, realpathNearest(jobDir(payload.task.pipeline.workdir, id))))
            throw new Error(`shard job ${id} reported a folder outside its own: ${value.dir}`);
          return { shard, dir };
        });
        return { kind: "merge", outDir, summary: withCollectedWarnings(ctx, await stage.sharding!.merge(ctx, shards)) };
      }
      default:
        throw new Error(`unknown job kind ${(payload as { kind: string }).kind}`);
    }
  } catch (error) {
    rmSync(attempt, { recursive: true, force: true });
    throw error;
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
    if (payload.kind === "plan") rmSync(attempt, { recursive: true, force: true });
  }
}

/**
 * A worker process's runtime: serves the stage queue (and one queue per capability), refuses
 * jobs it cannot trust, runs the rest by stage name from its registry, and forwards progress.
 */
export async function startStageWorker(options: StageWorkerOptions): Promise<StageWorker> {
  await checkRedis(options.redisUrl);
  const log = options.log ?? (() => {});
  const roots = (options.roots?.length ? options.roots : [process.cwd()]).map((r) => path.resolve(r));
  const lockDuration = options.lockDurationMs ?? 30_000;
  const capabilities = [...new Set(options.capabilities ?? [])];
  for (const capability of capabilities)
    if (!(CAPABILITIES as readonly string[]).includes(capability))
      throw new UsageError(`unknown capability "${capability}"`, { hint: `known: ${CAPABILITIES.join(", ")}` });
  const queues = [queueNameFor([]), ...capabilities.map((c) => queueNameFor([c]))];
  const connection = redisOptionsFromUrl(options.redisUrl);

  const processor = async (job: Job, _token?: string, signal?: AbortSignal): Promise<JobResult> => {
    let payload: JobPayload;
    try {
      payload = validateJobPayload(job.data, job.id!, options.registry, roots, job.queueName, options.maxPayloadBytes);
    } catch (error) {
      const message = error instanceof ProlearnError ? error.format() : (error as Error).message;
      log(`job ${job.id} rejected: ${message}`);
      throw new UnrecoverableError(message);
    }
    const label = `job ${job.id} (${payload.task.stage} ${payload.kind}${payload.kind === "shard" ? ` ${payload.shard.id}` : ""})`;
    log(`${label} started, attempt ${job.attemptsStarted}`);
    const forwarder = progressForwarder(job);
    const started = performance.now();
    try {
      const result = await runJob(payload, job, options.registry, forwarder.emit, signal ?? new AbortController().signal);
      await forwarder.flush();
      log(`${label} done in ${((performance.now() - started) / 1000).toFixed(2)} s`);
      return result;
    } catch (error) {
      await forwarder.flush();
      const message = error instanceof ProlearnError ? error.format() : ((error as Error)?.message ?? String(error));
      log(`${label} failed: ${message}`);
      throw new Error(message);
    }
  };

  const workers = queues.map(
    (name) =>
      new Worker(name, processor, {
        connection,
        prefix: QUEUE_PREFIX,
        concurrency: options.concurrency ?? 1,
        lockDuration,
        stalledInterval: Math.max(500, Math.floor(lockDuration / 2)),
        // A job survives two dead workers before it counts as failed.
        maxStalledCount: 2,
      }),
  );
  for (const worker of workers) worker.on("error", (error) => log(`worker error: ${error.message}`));
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  log(`worker ready on ${queues.join(", ")} (concurrency ${options.concurrency ?? 1}, stages: ${[...options.registry.keys()].join(", ") || "none"})`);
  const closing = () => Promise.all(workers.map((w) => w.close())).then(() => "closed" as const);
  return {
    queues,
    async close({ graceMs = options.graceMs ?? DEFAULT_WORKER_GRACE_MS, now = false } = {}) {
      // With Redis gone every BullMQ command waits for a reconnect that never comes (commands
      // retry forever, as workers need), so closing would wait forever too: ask first.
      const answers = now
        ? false
        : (await Promise.race([
            checkRedis(options.redisUrl, 2000).then(
              () => true,
              () => false,
            ),
            timeout(3000),
          ])) === true;
      let reason: string;
      if (now) reason = "stopping at once";
      else if (!answers) reason = "Redis does not answer";
      else if ((await Promise.race([closing(), timeout(graceMs)])) === "closed") return { forced: false };
      else reason = `running jobs did not finish within the grace period (${Math.round(graceMs / 1000)} s)`;
      log(`${reason}: dropping the Redis connections; unfinished jobs are retried by another worker once their lock expires`);
      await Promise.race([Promise.all(workers.map((w) => w.close(true).catch(() => {}))), timeout(1000)]);
      await Promise.race([Promise.all(workers.map((w) => w.disconnect().catch(() => {}))), timeout(1000)]);
      return { forced: true, reason };
    },
  };
}

/** Sends progress to the submitter through job progress updates, at most about five a second. */
function progressForwarder(job: Job): { emit: (event: ProgressEvent) => void; flush: () => Promise<void> } {
  let pending: ProgressEvent[] = [];
  let timer: NodeJS.Timeout | undefined;
  let sending = Promise.resolve();
  const send = () => {
    timer = undefined;
    if (!pending.length) return;
    const events = pending;
    pending = [];
    sending = sending.then(() => job.updateProgress({ events }).catch(() => {}));
  };
  return {
    emit(event) {
      if (event.kind === "progress") {
        const same = pending.findIndex((e) => e.kind === "progress" && e.task === event.task);
        if (same >= 0) pending.splice(same, 1);
      }
      pending.push(event);
      timer ??= setTimeout(send, 200);
    },
    async flush() {
      if (timer) clearTimeout(timer);
      send();
      await sending;
    },
  };
}
