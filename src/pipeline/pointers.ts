import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";

/**
 * Stable per-pipeline names for the current outputs: `<workdir>/pipelines/<pipeline>/<stage>/<file>`,
 * refreshed after every successful run, plus `current.json` saying which run and cache key each
 * stage folder came from. A query or a notebook points there instead of globbing the
 * content-addressed store, where every pipeline of the workdir and every superseded run sit side
 * by side.
 *
 * The entries are hard links to the store's files: a plain file to every reader (DuckDB's globs
 * and pyarrow's datasets skip or refuse symlinks on some platforms, and Windows needs extra rights
 * to create them), no extra space, and the bytes survive `prolearn gc` removing a superseded store
 * folder. Where a hard link cannot be made (a filesystem without them) the file is copied. Either
 * way the entries are read-only by convention: writing into one writes into the store.
 */
export const POINTERS_DIR = "pipelines";
export const CURRENT_FILE = "current.json";

export interface CurrentStage {
  runId: string;
  cacheKey: string;
  /** Output name -> file in the store it was linked from. */
  store: Record<string, string>;
  /** Output name -> the stable path. */
  files: Record<string, string>;
  /** "hardlink" or "copy": how the stable files were made. */
  method: "hardlink" | "copy";
}

export interface CurrentPointers {
  pipeline: string;
  updatedAt: string;
  stages: Record<string, CurrentStage>;
}

export function pipelinePointerDir(workdir: string, pipeline: string): string {
  return path.join(workdir, POINTERS_DIR, pipeline);
}

export function stagePointerDir(workdir: string, pipeline: string, stage: string): string {
  return path.join(pipelinePointerDir(workdir, pipeline), stage);
}

export function readCurrentPointers(workdir: string, pipeline: string): CurrentPointers | undefined {
  const file = path.join(pipelinePointerDir(workdir, pipeline), CURRENT_FILE);
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, "utf8")) as CurrentPointers;
  } catch {
    return undefined;
  }
}

/**
 * Points `<workdir>/pipelines/<pipeline>/<stage>/` at the given stage outputs. Each file is linked
 * under a temporary name and renamed over the old one, so a reader sees the old or the new file,
 * never a missing or half one; files the stage no longer writes are removed afterwards. Stages not
 * given keep their folder (a `--until` run leaves later stages at their last successful output).
 */
export function updatePointers(
  workdir: string,
  pipeline: string,
  runId: string,
  stages: { name: string; cacheKey: string | null; outputs: Record<string, string> }[],
): CurrentPointers {
  const root = pipelinePointerDir(workdir, pipeline);
  mkdirSync(root, { recursive: true });
  const current: CurrentPointers = readCurrentPointers(workdir, pipeline) ?? { pipeline, updatedAt: "", stages: {} };
  for (const stage of stages) {
    if (!stage.cacheKey || !Object.keys(stage.outputs).length) continue;
    const dir = path.join(root, stage.name);
    mkdirSync(dir, { recursive: true });
    const files: Record<string, string> = {};
    let method: CurrentStage["method"] = "hardlink";
    for (const [name, source] of Object.entries(stage.outputs)) {
      const target = path.join(dir, name);
      mkdirSync(path.dirname(target), { recursive: true });
      const temporary = `${target}.${process.pid}.${randomBytes(3).toString("hex")}.tmp`;
      try {
        linkSync(source, temporary);
      } catch {
        copyFileSync(source, temporary);
        method = "copy";
      }
      renameSync(temporary, target);
      files[name] = target;
    }
    for (const stale of listRelative(dir)) if (!(stale in files)) rmSync(path.join(dir, stale), { force: true });
    current.stages[stage.name] = { runId, cacheKey: stage.cacheKey, store: { ...stage.outputs }, files, method };
  }
  current.updatedAt = new Date().toISOString();
  const file = path.join(root, CURRENT_FILE);
  const temporary = `${file}.${process.pid}.${randomBytes(3).toString("hex")}.tmp`;
  writeFileSync(temporary, JSON.stringify(current, null, 2) + "\n");
  renameSync(temporary, file);
  return current;
}

/** Every file path under the pointer folders, for `gc` (their store originals are "current"). */
export function allPointedStoreFiles(workdir: string): Set<string> {
  const files = new Set<string>();
  const root = path.join(workdir, POINTERS_DIR);
  if (!existsSync(root)) return files;
  for (const pipeline of readdirSync(root)) {
    const current = readCurrentPointers(workdir, pipeline);
    for (const stage of Object.values(current?.stages ?? {})) for (const file of Object.values(stage.store)) files.add(path.resolve(file));
  }
  return files;
}

function listRelative(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...listRelative(path.join(dir, entry.name), rel));
    else out.push(rel);
  }
  return out;
}

export function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}
