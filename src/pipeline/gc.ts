import { existsSync, lstatSync, readdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { UsageError } from "../errors.js";
import { ArtifactRegistry } from "../prototypes/registry.js";
import { Catalog } from "./catalog.js";
import { readCurrentPointers, POINTERS_DIR } from "./pointers.js";

export interface GcOptions {
  /** Only this pipeline's runs are thinned; every other pipeline's outputs are kept whole. */
  pipeline?: string;
  /** Outputs and reports of the last `keep` runs of each pipeline are kept. */
  keep: number;
}

export interface GcItem {
  kind: "output" | "report" | "checkpoint";
  path: string;
  bytes: number;
  /** Why it goes, in words. */
  reason: string;
  /** For outputs: the cache key the catalog forgets with the folder. */
  cacheKey?: string;
  /** For reports: the runs whose report this was. */
  runIds?: string[];
}

export interface GcPlan {
  workdir: string;
  keep: number;
  pipeline: string | null;
  remove: GcItem[];
  bytes: number;
  /** What is kept on purpose, counted: current outputs, outputs of kept runs, registered artifacts... */
  kept: { outputs: number; reports: number; checkpoints: number; artifacts: number; unfinishedCheckpoints: number };
}

/**
 * Decides what `prolearn gc` removes, without removing anything. Kept, always: the current output
 * of every stage of every pipeline (what `prolearn outputs` and `<workdir>/pipelines/` point at),
 * the outputs and reports of the last `keep` runs of each pipeline, the prototypes outputs that
 * published a registered artifact version, the registered artifacts themselves (never touched),
 * and checkpoints of unfinished trainings (a resumed run needs them). Removed: other store folders,
 * reports no kept run refers to, and finished checkpoints no kept output names.
 */
export function planGc(workdir: string, options: GcOptions): GcPlan {
  if (!Number.isInteger(options.keep) || options.keep < 1) throw new UsageError(`--keep expects a whole number of runs of at least 1, got ${options.keep}`);
  if (!existsSync(path.join(workdir, "catalog.sqlite"))) throw new UsageError(`no catalog in ${workdir}`, { hint: "pass --workdir DIR or a pipeline file" });
  const catalog = new Catalog(workdir);
  try {
    const live = catalog.runs({ limit: 100_000 }).filter((r) => r.status === "running");
    if (live.length) {
      throw new UsageError(`run ${live[0]!.id} of ${live[0]!.pipeline} is in progress in ${workdir} (pid ${live[0]!.pid})`, {
        hint: "run gc when no run is going on: it could remove what that run is publishing",
      });
    }
    const pipelines = catalog.pipelines();
    if (options.pipeline && !pipelines.includes(options.pipeline)) {
      throw new UsageError(`no runs of pipeline ${options.pipeline} in ${workdir}`, {
        hint: pipelines.length ? `pipelines there: ${pipelines.join(", ")}` : "nothing to clean",
      });
    }
    const inScope = (pipeline: string) => !options.pipeline || options.pipeline === pipeline;

    // Runs kept per pipeline: the last N of the pipelines in scope, all of the others.
    const keptRuns = new Set<string>();
    const allRuns = catalog.runs({ limit: 1_000_000 });
    for (const pipeline of pipelines) {
      const runs = allRuns.filter((r) => r.pipeline === pipeline);
      for (const run of inScope(pipeline) ? runs.slice(0, options.keep) : runs) keptRuns.add(run.id);
    }

    const references = catalog.outputReferences();
    const protectedKeys = new Map<string, string>();
    for (const ref of references) if (keptRuns.has(ref.runId)) protectedKeys.set(ref.cacheKey, `used by run ${ref.runId}`);
    for (const pipeline of pipelines) {
      for (const s of catalog.currentStageRuns(pipeline)) if (s.cacheKey) protectedKeys.set(s.cacheKey, `current output of ${pipeline}`);
      for (const stage of Object.values(readCurrentPointers(workdir, pipeline)?.stages ?? {}))
        protectedKeys.set(stage.cacheKey, `current output of ${pipeline}`);
    }
    const registry = new ArtifactRegistry(catalog.db, workdir);
    const registered = registry.list();
    const registeredDigests = new Set(registered.map((v) => v.digest));
    const outputs = catalog.allOutputs();
    for (const output of outputs) {
      const artifact = output.summary.artifact as { digest?: string; name?: string; version?: number } | undefined;
      if (artifact?.digest && registeredDigests.has(artifact.digest)) protectedKeys.set(output.cacheKey, `published ${artifact.name}@${artifact.version}`);
    }

    const remove: GcItem[] = [];
    const removedKeys = new Set<string>();
    // Store folders: store/<stage>/<cacheKey>/.
    const referencedBy = new Map<string, Set<string>>();
    for (const ref of references) (referencedBy.get(ref.cacheKey) ?? referencedBy.set(ref.cacheKey, new Set()).get(ref.cacheKey)!).add(ref.pipeline);
    const storeRoot = path.join(workdir, "store");
    for (const stage of listDirs(storeRoot)) {
      for (const key of listDirs(path.join(storeRoot, stage))) {
        if (protectedKeys.has(key)) continue;
        const users = referencedBy.get(key);
        if (options.pipeline && (!users || [...users].some((p) => p !== options.pipeline))) continue;
        const dir = path.join(storeRoot, stage, key);
        remove.push({
          kind: "output",
          path: dir,
          bytes: du(dir),
          cacheKey: key,
          reason: users ? `${stage} output used only by runs older than the last ${options.keep}` : `${stage} output no run refers to`,
        });
        removedKeys.add(key);
      }
    }

    // Reports: kept when a kept run names it.
    const keptReports = new Set(allRuns.filter((r) => keptRuns.has(r.id) && r.report).map((r) => path.resolve(r.report!)));
    const reportRuns = new Map<string, string[]>();
    for (const run of allRuns)
      if (run.report) (reportRuns.get(path.resolve(run.report)) ?? reportRuns.set(path.resolve(run.report), []).get(path.resolve(run.report))!).push(run.id);
    const reportsDir = path.join(workdir, "reports");
    let keptReportCount = 0;
    if (existsSync(reportsDir)) {
      for (const name of readdirSync(reportsDir)) {
        const file = path.resolve(reportsDir, name);
        if (keptReports.has(file)) {
          keptReportCount++;
          continue;
        }
        const runs = reportRuns.get(file);
        if (options.pipeline && (!runs || runs.some((id) => allRuns.find((r) => r.id === id)?.pipeline !== options.pipeline))) continue;
        remove.push({
          kind: "report",
          path: file,
          bytes: du(file),
          runIds: runs ?? [],
          reason: runs ? `report of run${runs.length > 1 ? "s" : ""} ${runs.join(", ")} (older than the last ${options.keep})` : "report no run refers to",
        });
      }
    }

    // Checkpoints: kept when an output that stays names it, or when its training is unfinished.
    const named = new Map<string, Set<string>>();
    for (const output of outputs)
      for (const name of checkpointNames(output.summary)) (named.get(name) ?? named.set(name, new Set()).get(name)!).add(output.cacheKey);
    const checkpointsDir = path.join(workdir, "checkpoints");
    let keptCheckpoints = 0;
    let unfinished = 0;
    for (const name of listDirs(checkpointsDir)) {
      const dir = path.join(checkpointsDir, name);
      const users = [...(named.get(name) ?? [])];
      if (users.some((key) => !removedKeys.has(key))) {
        keptCheckpoints++;
        continue;
      }
      if (!users.length) {
        if (options.pipeline) continue;
        if (!checkpointFinished(dir)) {
          unfinished++;
          continue;
        }
      }
      remove.push({
        kind: "checkpoint",
        path: dir,
        bytes: du(dir),
        reason: users.length ? "its outputs are removed too" : "finished training no output refers to",
      });
    }

    const keptOutputs = listDirs(storeRoot).reduce((n, stage) => n + listDirs(path.join(storeRoot, stage)).length, 0) - removedKeys.size;
    return {
      workdir,
      keep: options.keep,
      pipeline: options.pipeline ?? null,
      remove,
      bytes: remove.reduce((a, r) => a + r.bytes, 0),
      kept: { outputs: keptOutputs, reports: keptReportCount, checkpoints: keptCheckpoints, artifacts: registered.length, unfinishedCheckpoints: unfinished },
    };
  } finally {
    catalog.close();
  }
}

/** Removes what the plan lists and makes the catalog forget it. Returns the bytes freed. */
export function applyGc(plan: GcPlan): number {
  const catalog = new Catalog(plan.workdir);
  let freed = 0;
  try {
    for (const item of plan.remove) {
      // Never below the workdir's own folders: the plan is data and could have been edited.
      const relative = path.relative(plan.workdir, item.path);
      if (relative.startsWith("..") || path.isAbsolute(relative) || relative.startsWith(POINTERS_DIR) || relative.startsWith("artifacts")) {
        throw new UsageError(`gc refuses to remove ${item.path}: not a store folder, report or checkpoint of ${plan.workdir}`);
      }
      rmSync(item.path, { recursive: true, force: true });
      freed += item.bytes;
      if (item.kind === "output" && item.cacheKey) catalog.forgetOutput(item.cacheKey);
      if (item.kind === "report") for (const id of item.runIds ?? []) catalog.clearRunReport(id);
    }
  } finally {
    catalog.close();
  }
  return freed;
}

function checkpointNames(value: unknown, out: string[] = []): string[] {
  if (value && typeof value === "object") {
    for (const [key, child] of Object.entries(value)) {
      if (key === "checkpoint" && typeof child === "string") out.push(child);
      else checkpointNames(child, out);
    }
  }
  return out;
}

function checkpointFinished(dir: string): boolean {
  try {
    const state = JSON.parse(readFileSync(path.join(dir, "state.json"), "utf8")) as { finished?: boolean; epochsDone?: number };
    return state.finished === true;
  } catch {
    // No readable state: nothing to resume from either.
    return true;
  }
}

function listDirs(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name);
}

/** Bytes under a path (files counted once per path; hard links shared with pointers count here too). */
function du(target: string): number {
  let stat: ReturnType<typeof lstatSync>;
  try {
    stat = lstatSync(target);
  } catch {
    return 0;
  }
  if (!stat.isDirectory()) return stat.size;
  let total = 0;
  for (const entry of readdirSync(target)) total += du(path.join(target, entry));
  return total;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}
