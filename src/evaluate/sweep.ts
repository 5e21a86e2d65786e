import type { RunResult } from "../pipeline/engine.js";
import { MODEL_NAMES, type Headline, type ModelName } from "./stage.js";

/** One variant of a sweep: the swept value and what its evaluate stage reported. */
export interface SweepRow {
  value: unknown;
  status: "ok" | "failed";
  prolearn: Headline | null;
  baseline: Headline | null;
  /** Seed means of the controls evaluate scored (shuffled-psa, mean-text, own-report). */
  controls?: Partial<Record<ModelName, Headline>>;
  /** ProLearn minus each other model, per-image Dice, seeds pooled, with the paired bootstrap 95% interval. */
  paired?: { b: ModelName; meanDiff: number; ci95: [number, number] }[];
  seeds?: number;
  /**
   * The prototypes stage's usefulness check: how often PSA's approximated text ranks an image's
   * own report above the other validation reports (0.5: PSA is noise; docs/prototypes.md).
   */
  psaOwnReportAuc?: number | null;
  /** How many stages ran vs came from the cache, to show what the variants shared. */
  ran: number;
  cached: number;
  error?: string;
}

/** Splits `--set key=a,b,c` into the swept key and its values (numbers where they parse). */
export function parseSweepAssignment(assignment: string): { key: string; values: unknown[] } | undefined {
  const eq = assignment.indexOf("=");
  if (eq <= 0) return undefined;
  const raw = assignment
    .slice(eq + 1)
    .split(",")
    .map((v) => v.trim())
    .filter((v) => v !== "");
  return { key: assignment.slice(0, eq), values: raw.map((v) => (v === "true" ? true : v === "false" ? false : Number.isFinite(Number(v)) ? Number(v) : v)) };
}

/** Reads the evaluate stage's headline metrics out of a run result. */
export function sweepRowFromRun(value: unknown, result: RunResult): SweepRow {
  const evaluate = result.stages.find((s) => s.name === "evaluate");
  const summary = (evaluate?.summary ?? {}) as {
    prolearn?: Headline;
    baseline?: Headline | null;
    controls?: Partial<Record<ModelName, Headline>>;
    paired?: { b: ModelName; meanDiff: number; ci95: [number, number] }[];
    seeds?: number[];
  };
  const failed = result.stages.find((s) => s.status === "failed");
  const usefulness = (result.stages.find((s) => s.name === "prototypes")?.summary as { usefulness?: { ownReportAuc?: number } } | undefined)?.usefulness;
  return {
    value,
    status: result.status,
    prolearn: summary.prolearn ?? null,
    baseline: summary.baseline ?? null,
    controls: summary.controls ?? {},
    paired: (summary.paired ?? []).map((p) => ({ b: p.b, meanDiff: p.meanDiff, ci95: p.ci95 })),
    seeds: summary.seeds?.length ?? 1,
    psaOwnReportAuc: typeof usefulness?.ownReportAuc === "number" ? usefulness.ownReportAuc : null,
    ran: result.totals.ran,
    cached: result.totals.cached,
    error: failed ? (failed.error ?? `stage ${failed.name} failed: ${failed.reason}`) : undefined,
  };
}

function formatValue(key: string, value: unknown): string {
  if (key.endsWith("textAvailability") && typeof value === "number") return `${+(value * 100).toFixed(2)}%`;
  return String(value);
}

function cell(n: number | undefined | null): string {
  return n === undefined || n === null || !Number.isFinite(n) ? "-" : n.toFixed(4);
}

function signed(n: number | undefined | null): string {
  return n === undefined || n === null || !Number.isFinite(n) ? "-" : `${n >= 0 ? "+" : ""}${n.toFixed(4)}`;
}

function difference(p: { meanDiff: number; ci95: [number, number] } | undefined): string {
  if (!p || !Number.isFinite(p.meanDiff)) return "-";
  return `${signed(p.meanDiff)} [${signed(p.ci95[0])}, ${signed(p.ci95[1])}]`;
}

const SHORT: Record<ModelName, string> = {
  prolearn: "ProLearn",
  unet: "U-Net",
  "shuffled-psa": "shuffled-PSA",
  "image-embedding": "image-embedding",
  "mean-text": "mean-text",
  "own-report": "own-report",
};

/**
 * A table in the shape of the paper's Table 1: one row per swept value, Dice and mIoU (per-image
 * means, averaged over seeds) for ProLearn and the image-only baseline, the controls' Dice, the
 * pooled Dice, ProLearn minus each other model with its paired bootstrap 95% interval, and the
 * cache use. Control and difference columns appear for the models some row has.
 */
export function formatSweepTable(key: string, rows: readonly SweepRow[]): string {
  const controls = MODEL_NAMES.filter((m) => m !== "prolearn" && m !== "unet" && rows.some((r) => r.controls?.[m]));
  const compared = MODEL_NAMES.filter((m) => rows.some((r) => r.paired?.some((p) => p.b === m)));
  const header = [
    key.split(".").at(-1)!,
    "ProLearn Dice",
    "ProLearn mIoU",
    "U-Net Dice",
    "U-Net mIoU",
    ...controls.map((m) => `${SHORT[m]} Dice`),
    "ProLearn Dice (pooled)",
    ...compared.map((m) => `ProLearn - ${SHORT[m]} [95% CI]`),
    "PSA own-report AUC",
    ...(rows.some((r) => (r.seeds ?? 1) > 1) ? ["seeds"] : []),
    "stages ran/cached",
  ];
  const withSeeds = header.includes("seeds");
  const body = rows.map((r) =>
    r.status === "failed"
      ? [formatValue(key, r.value), `failed: ${r.error ?? "see the run"}`, ...header.slice(2, -1).map(() => ""), `${r.ran}/${r.cached}`]
      : [
          formatValue(key, r.value),
          cell(r.prolearn?.dice),
          cell(r.prolearn?.iou),
          cell(r.baseline?.dice),
          cell(r.baseline?.iou),
          ...controls.map((m) => cell(r.controls?.[m]?.dice)),
          cell(r.prolearn?.dicePooled),
          ...compared.map((m) => difference(r.paired?.find((p) => p.b === m))),
          cell(r.psaOwnReportAuc),
          ...(withSeeds ? [String(r.seeds ?? 1)] : []),
          `${r.ran}/${r.cached}`,
        ],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}
