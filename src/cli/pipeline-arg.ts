import { existsSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { UsageError } from "../errors.js";
import { stringOption, type OptionSpec, type ParsedArgs } from "./command.js";
import type { SelectionOptions } from "../pipeline/engine.js";
import { loadPipelineFile, missingPipelineFile, resolvePipeline, setPath, type ResolvedPipeline } from "../pipeline/spec.js";
import { STAGES } from "../stages.js";

/**
 * Loads a pipeline named on the command line: YAML/JSON, or a JS/TS module whose default export
 * is a definePipeline({...}) object. `--set key=value` overrides are applied before validation.
 */
export async function loadPipelineArg(file: string, sets: string[] = []): Promise<ResolvedPipeline> {
  const overrides: Record<string, unknown> = {};
  for (const assignment of sets) {
    const eq = assignment.indexOf("=");
    if (eq <= 0) throw new UsageError(`--set expects key=value, got "${assignment}"`, { hint: "e.g. --set dataset.textAvailability=0.1" });
    overrides[assignment.slice(0, eq)] = parseValue(assignment.slice(eq + 1));
  }
  if (/\.(m?js|ts)$/.test(file)) {
    const absolute = path.resolve(file);
    if (!existsSync(absolute)) throw missingPipelineFile(file, absolute);
    const module = (await import(pathToFileURL(absolute).href)) as { default?: unknown };
    if (!module.default) throw new UsageError(`${file} has no default export`, { hint: "export default definePipeline({...})" });
    const data = structuredClone(module.default) as object;
    for (const [key, value] of Object.entries(overrides)) setPath(data, key.split("."), value);
    return resolvePipeline(data, STAGES, { file: absolute });
  }
  return loadPipelineFile(file, STAGES, overrides);
}

/** "0.5" -> 0.5, "true" -> true, anything else stays a string. */
export function parseValue(raw: string): unknown {
  if (raw === "true") return true;
  if (raw === "false") return false;
  if (raw !== "" && Number.isFinite(Number(raw))) return Number(raw);
  return raw;
}

/** Options that pick stages, shared by `run` and `plan` (verb: "run" or "plan"). */
export function selectionOptionSpecs(verb: "run" | "plan"): Record<string, OptionSpec> {
  return {
    until: { type: "string", valueName: "STAGE", description: `${verb} this stage and what it depends on` },
    only: { type: "string", valueName: "STAGE", description: `${verb} only this stage (its inputs must be cached)` },
    force: {
      type: "string",
      valueName: "STAGE|all",
      multiple: true,
      description: verb === "run" ? "rerun this stage even if cached" : "treat this stage as forced",
    },
    set: { type: "string", valueName: "KEY=VALUE", multiple: true, description: "override a pipeline key, e.g. dataset.textAvailability=0.1" },
  };
}

/** The --until / --only / --force values as the engine takes them. */
export function selectionFromArgs(args: ParsedArgs): SelectionOptions {
  const force = (args.options.force as string[] | undefined) ?? [];
  return { until: stringOption(args, "until"), only: stringOption(args, "only"), force: force.includes("all") ? "all" : force };
}

/** Where a command that reads the catalog looks: the pipeline's name and workdir. */
export interface PipelineTarget {
  name: string;
  workdir: string;
  /** The loaded pipeline when a file was given. */
  pipeline?: ResolvedPipeline;
}

/**
 * A pipeline named on the command line either by its file (YAML/JSON/JS/TS: name and workdir come
 * from it) or by its name, looked up in `workdir` (e.g. `prolearn outputs demo --workdir demo/.prolearn`).
 */
export async function pipelineTarget(arg: string, workdir: string): Promise<PipelineTarget> {
  if (existsSync(arg) || /\.(ya?ml|json|m?js|ts)$/.test(arg) || arg.includes("/") || arg.includes(path.sep)) {
    const pipeline = await loadPipelineArg(arg);
    return { name: pipeline.name, workdir: pipeline.workdir, pipeline };
  }
  return { name: arg, workdir: path.resolve(workdir) };
}

export const WORKDIR_OPTION: OptionSpec = {
  type: "string",
  valueName: "DIR",
  description: "workdir whose catalog to read when a pipeline is given by name, not by file",
  default: ".prolearn",
};
