import { canonicalJson } from "../util/hash.js";
import type { Catalog, RunRecord, StageRunRecord } from "./catalog.js";

/** One changed value between two runs: dotted path, before, after. */
export interface ValueChange {
  path: string;
  a: unknown;
  b: unknown;
}

/** A numeric figure of a stage's summary in both runs (null where that run has none). */
export interface MetricRow {
  path: string;
  a: number | null;
  b: number | null;
  /** b - a when both are numbers. */
  delta: number | null;
}

export interface StageComparison {
  stage: string;
  statusA: string | null;
  statusB: string | null;
  /** Same cache key: the same work (the output was reused or recomputed identically). */
  sameKey: boolean;
  sameOutput: boolean;
  code: { a: string | null; b: string | null } | null;
  params: ValueChange[];
  dataset: ValueChange[];
  /** Upstream outputs and external resources (dataset folder, model folder) whose digest changed. */
  inputs: ValueChange[];
  metrics: MetricRow[];
}

export interface RunComparison {
  a: RunRecord;
  b: RunRecord;
  stages: StageComparison[];
}

interface KeyParts {
  version?: string;
  params?: unknown;
  dataset?: unknown;
  inputs?: Record<string, string>;
  resources?: Record<string, string>;
}

/**
 * What differs between two recorded runs, stage by stage: code version, params and dataset
 * settings, input and resource digests (from the cache-key parts the catalog keeps for every
 * stage execution), and the numbers of the stages' summaries side by side.
 */
export function compareRuns(catalog: Catalog, a: RunRecord, b: RunRecord): RunComparison {
  const stagesA = new Map(catalog.stageRuns(a.id).map((s) => [s.stage, s]));
  const stagesB = new Map(catalog.stageRuns(b.id).map((s) => [s.stage, s]));
  const names = [...stagesA.keys(), ...[...stagesB.keys()].filter((n) => !stagesA.has(n))];
  const stages = names.map((stage) => compareStage(catalog, stage, stagesA.get(stage), stagesB.get(stage)));
  return { a, b, stages };
}

function compareStage(catalog: Catalog, stage: string, a: StageRunRecord | undefined, b: StageRunRecord | undefined): StageComparison {
  const partsA = parse(a?.keyParts);
  const partsB = parse(b?.keyParts);
  const params: ValueChange[] = [];
  const dataset: ValueChange[] = [];
  const inputs: ValueChange[] = [];
  if (partsA && partsB) {
    diffValues("", partsA.params, partsB.params, params);
    diffValues("", partsA.dataset, partsB.dataset, dataset);
    diffValues("input ", partsA.inputs ?? {}, partsB.inputs ?? {}, inputs);
    diffValues("resource ", partsA.resources ?? {}, partsB.resources ?? {}, inputs);
  }
  const summaryA = summaryOf(catalog, a);
  const summaryB = summaryOf(catalog, b);
  const numbersA = numericLeaves(summaryA);
  const numbersB = numericLeaves(summaryB);
  const metrics: MetricRow[] = [];
  for (const path of [...numbersA.keys(), ...[...numbersB.keys()].filter((k) => !numbersA.has(k))]) {
    const x = numbersA.get(path) ?? null;
    const y = numbersB.get(path) ?? null;
    metrics.push({ path, a: x, b: y, delta: x !== null && y !== null ? y - x : null });
  }
  const versionA = partsA?.version ?? null;
  const versionB = partsB?.version ?? null;
  return {
    stage,
    statusA: a?.status ?? null,
    statusB: b?.status ?? null,
    sameKey: Boolean(a?.cacheKey && a.cacheKey === b?.cacheKey),
    sameOutput: Boolean(a?.outputDigest && a.outputDigest === b?.outputDigest),
    code: versionA !== versionB ? { a: versionA, b: versionB } : null,
    params,
    dataset,
    inputs,
    metrics,
  };
}

function parse(text: string | null | undefined): KeyParts | undefined {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as KeyParts;
  } catch {
    return undefined;
  }
}

function summaryOf(catalog: Catalog, record: StageRunRecord | undefined): Record<string, unknown> {
  if (!record?.cacheKey || (record.status !== "ran" && record.status !== "cached")) return {};
  return catalog.getOutput(record.cacheKey)?.summary ?? {};
}

/** Dotted path -> number for every finite number in a summary (arrays are left out: curves, lists). */
export function numericLeaves(value: unknown, prefix = "", out = new Map<string, number>()): Map<string, number> {
  if (typeof value === "number" && Number.isFinite(value)) out.set(prefix, value);
  else if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, child] of Object.entries(value)) numericLeaves(child, prefix ? `${prefix}.${key}` : key, out);
  }
  return out;
}

function diffValues(prefix: string, a: unknown, b: unknown, out: ValueChange[]): void {
  if (canonicalJson(a ?? null) === canonicalJson(b ?? null)) return;
  if (a && b && typeof a === "object" && typeof b === "object" && !Array.isArray(a) && !Array.isArray(b)) {
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const path = prefix.endsWith(" ") || !prefix ? `${prefix}${key}` : `${prefix}.${key}`;
      diffValues(path, (a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], out);
    }
    return;
  }
  out.push({ path: prefix.trim(), a: a ?? null, b: b ?? null });
}

/** The comparison as text, for people. */
export function formatComparison(c: RunComparison): string {
  const lines = [
    `A: run ${c.a.id}  ${c.a.pipeline}  ${c.a.status}  started ${c.a.startedAt}`,
    `B: run ${c.b.id}  ${c.b.pipeline}  ${c.b.status}  started ${c.b.startedAt}`,
  ];
  const show = (v: unknown) =>
    v === null || v === undefined ? "(unset)" : typeof v === "string" && /^[0-9a-f]{16,}$/.test(v) ? v.slice(0, 12) : JSON.stringify(v);
  for (const s of c.stages) {
    lines.push("", `${s.stage}: ${s.statusA ?? "absent"} -> ${s.statusB ?? "absent"}${s.sameKey ? " (same work: cache key unchanged)" : ""}`);
    if (s.code) lines.push(`  code version ${s.code.a ?? "?"} -> ${s.code.b ?? "?"}`);
    for (const v of s.params) lines.push(`  params.${v.path}: ${show(v.a)} -> ${show(v.b)}`);
    for (const v of s.dataset) lines.push(`  dataset.${v.path}: ${show(v.a)} -> ${show(v.b)}`);
    for (const v of s.inputs) lines.push(`  ${v.path} changed: ${show(v.a)} -> ${show(v.b)}`);
    if (!s.sameKey && s.statusA && s.statusB && !s.code && !s.params.length && !s.dataset.length && !s.inputs.length)
      lines.push("  nothing in its key changed (forced, or the output was missing)");
    const rows = s.metrics;
    if (s.sameOutput && rows.every((r) => r.delta === 0)) {
      if (rows.length) lines.push(`  same output: its ${rows.length} figures are equal (--json lists them)`);
    } else if (rows.length) {
      const width = Math.min(40, Math.max(...rows.map((r) => r.path.length)));
      lines.push(`  ${"metric".padEnd(width)}  ${"A".padStart(12)}  ${"B".padStart(12)}  ${"B - A".padStart(12)}`);
      for (const r of rows) {
        lines.push(
          `  ${r.path.padEnd(width)}  ${fmt(r.a).padStart(12)}  ${fmt(r.b).padStart(12)}  ${(r.delta === null ? "" : r.delta === 0 ? "=" : (r.delta > 0 ? "+" : "") + fmt(r.delta)).padStart(12)}`,
        );
      }
    }
  }
  return lines.join("\n");
}

function fmt(x: number | null): string {
  if (x === null) return "-";
  if (Number.isInteger(x)) return String(x);
  const abs = Math.abs(x);
  return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? x.toExponential(3) : x.toFixed(4);
}
