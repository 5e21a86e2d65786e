import { canonicalJson, hashJson } from "../util/hash.js";

/**
 * What a stage's cache key is made of. Stored with every execution (catalog `key_parts`), so the
 * next decision can say what changed, part by part.
 */
export interface KeyParts {
  stage: string;
  version: string;
  params: unknown;
  dataset: Record<string, unknown>;
  /** Input ref (`ingest`, or `ingest:samples.parquet`) -> digest of the output or of that file. */
  inputs: Record<string, string>;
  resources: Record<string, string>;
}

export function cacheKeyOf(parts: KeyParts): string {
  return hashJson(parts).slice(0, 32);
}

/**
 * Why a stage runs, is reused or is left out: data, so `plan` and `run` say the same thing,
 * `--json` carries the fields, and the words come from one renderer (formatReason).
 */
export type Reason =
  | { code: "never-ran" }
  | { code: "forced" }
  | { code: "param-changed"; path: string; from: unknown; to: unknown }
  | { code: "dataset-changed"; path: string; from: unknown; to: unknown }
  | { code: "input-changed"; input: string; from: string | null; to: string | null }
  | { code: "resource-changed"; resource: string; from: string | null; to: string | null }
  | { code: "code-changed"; from: string; to: string }
  | { code: "output-missing" }
  | { code: "output-damaged"; problems: string[] }
  | { code: "upstream-will-run"; stages: string[] }
  | { code: "unchanged" }
  | { code: "published-while-waiting" }
  | { code: "not-selected" }
  | { code: "earlier-stage-failed" }
  | { code: "input-has-no-output"; stages: string[]; only: boolean };

export type ReasonCode = Reason["code"];

export type Action = "run" | "cached" | "skip";

export interface Decision {
  action: Action;
  reasons: Reason[];
}

/** Everything the decision depends on, gathered by the engine before it decides. */
export interface StageState {
  selected: boolean;
  forced: boolean;
  /** An earlier stage of this run failed (the run stops starting stages). */
  runFailed: boolean;
  /** Upstream stages that are not selected and have no output to read. */
  missingInputs: string[];
  /** Upstream stages that will run first, so this stage's key is not known yet. */
  pendingInputs: string[];
  /** The cache key's parts, when every input's digest is known. */
  parts?: KeyParts;
  /** A complete output for this key is in the store. */
  cached: boolean;
  /** What is wrong with the store's entry for this key, when it is there but damaged. */
  damaged?: string[];
  /** The key parts of this stage's last successful execution in this pipeline. */
  previous?: KeyParts;
  /** Whether this stage ever ran (or was reused) in this pipeline. */
  ranBefore: boolean;
  /** `--only` was given (an input without output must be computed by a run without it). */
  only: boolean;
}

/** The one decision, shared by `plan` and `run`: pure, so it is tested on states alone. */
export function decide(state: StageState): Decision {
  if (!state.selected) return { action: "skip", reasons: [{ code: "not-selected" }] };
  if (state.runFailed) return { action: "skip", reasons: [{ code: "earlier-stage-failed" }] };
  if (state.missingInputs.length) return { action: "skip", reasons: [{ code: "input-has-no-output", stages: state.missingInputs, only: state.only }] };
  if (state.pendingInputs.length || !state.parts) return { action: "run", reasons: [{ code: "upstream-will-run", stages: state.pendingInputs }] };
  if (state.forced) return { action: "run", reasons: [{ code: "forced" }] };
  if (state.cached) return { action: "cached", reasons: [{ code: "unchanged" }] };
  if (state.damaged?.length) return { action: "run", reasons: [{ code: "output-damaged", problems: state.damaged }] };
  const changes = changedParts(state.previous, state.parts);
  if (changes.length) return { action: "run", reasons: changes };
  return { action: "run", reasons: [{ code: state.ranBefore ? "output-missing" : "never-ran" }] };
}

/** What differs between the key parts of the last execution and now, one reason per leaf. */
export function changedParts(previous: KeyParts | undefined, current: KeyParts): Reason[] {
  if (!previous) return [];
  const reasons: Reason[] = [];
  if (previous.version !== current.version) reasons.push({ code: "code-changed", from: previous.version, to: current.version });
  for (const change of diffValues("params", previous.params, current.params)) reasons.push({ code: "param-changed", ...change });
  for (const change of diffValues("dataset", previous.dataset, current.dataset)) reasons.push({ code: "dataset-changed", ...change });
  for (const input of unionKeys(previous.inputs, current.inputs)) {
    if (previous.inputs[input] !== current.inputs[input])
      reasons.push({ code: "input-changed", input, from: previous.inputs[input] ?? null, to: current.inputs[input] ?? null });
  }
  for (const resource of unionKeys(previous.resources, current.resources)) {
    if (previous.resources[resource] !== current.resources[resource])
      reasons.push({ code: "resource-changed", resource, from: previous.resources[resource] ?? null, to: current.resources[resource] ?? null });
  }
  return reasons;
}

function unionKeys(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])];
}

function diffValues(path: string, a: unknown, b: unknown): { path: string; from: unknown; to: unknown }[] {
  if (canonicalJson(a) === canonicalJson(b)) return [];
  if (a && b && typeof a === "object" && typeof b === "object" && !Array.isArray(a) && !Array.isArray(b)) {
    return unionKeys(a as Record<string, unknown>, b as Record<string, unknown>).flatMap((key) =>
      diffValues(`${path}.${key}`, (a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]),
    );
  }
  return [{ path, from: a, to: b }];
}

/** One reason in words, the same for `plan`, `run`, `status` and the report. */
export function formatReason(reason: Reason): string {
  switch (reason.code) {
    case "never-ran":
      return "never ran";
    case "forced":
      return "forced";
    case "param-changed":
    case "dataset-changed":
      return `${reason.path}: ${value(reason.from)} -> ${value(reason.to)}`;
    case "input-changed":
      return `input ${reason.input} changed (${short(reason.from)} -> ${short(reason.to)})`;
    case "resource-changed":
      return `resource ${reason.resource} changed (${short(reason.from)} -> ${short(reason.to)})`;
    case "code-changed":
      return `code version ${reason.from} -> ${reason.to}`;
    case "output-missing":
      return "output missing from the store";
    case "output-damaged":
      return `output damaged in the store (${reason.problems.join("; ")}): recomputed, the damaged copy moved to damaged/store/`;
    case "upstream-will-run":
      return `upstream ${reason.stages.join(", ")} will run`;
    case "unchanged":
      return "inputs, params and code unchanged";
    case "published-while-waiting":
      return "another run published this output while this one waited for it";
    case "not-selected":
      return "not selected";
    case "earlier-stage-failed":
      return "an earlier stage failed";
    case "input-has-no-output":
      return `input ${reason.stages.join(", ")} has no output${reason.only ? " (run it first, without --only)" : ""}`;
  }
}

export function formatReasons(reasons: readonly Reason[]): string {
  return reasons.map(formatReason).join("; ");
}

function value(v: unknown): string {
  return v === undefined ? "(unset)" : JSON.stringify(v);
}

function short(digest: string | null | undefined): string {
  return digest ? digest.slice(0, 8) : "none";
}
