import type { RunResult } from "../pipeline/engine.js";
import type { Headline } from "./stage.js";

/** One variant of a sweep: the swept value and what its evaluate stage reported. */
export interface SweepRow {
  value: unknown;
  status: "ok" | "failed";
  prolearn: Headline | null;
  baseline: Headline | null;
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
  const raw = assignment.slice(eq + 1).split(",").map((v) => v.trim()).filter((v) => v !== "");
  return { key: assignment.slice(0, eq), values: raw.map((v) => (v === "true" ? true : v === "false" ? false : Number.isFinite(Number(v)) ? Number(v) : v)) };
}

/** Reads the evaluate stage's headline metrics out of a run result. */
export function sweepRowFromRun(value: unknown, result: RunResult): SweepRow {
  const evaluate = result.stages.find((s) => s.name === "evaluate");
  const summary = (evaluate?.summary ?? {}) as { prolearn?: Headline; baseline?: Headline | null };
  const failed = result.stages.find((s) => s.status === "failed");
  const usefulness = (result.stages.find((s) => s.name === "prototypes")?.summary as { usefulness?: { ownReportAuc?: number } } | undefined)?.usefulness;
  return {
    value,
    status: result.status,
    prolearn: summary.prolearn ?? null,
    baseline: summary.baseline ?? null,
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

/**
 * A table in the shape of the paper's Table 1: one row per swept value, Dice and mIoU (per-image
 * means) for ProLearn and the image-only baseline, plus the pooled Dice and the cache use.
 */
export function formatSweepTable(key: string, rows: readonly SweepRow[]): string {
  const header = [key.split(".").at(-1)!, "ProLearn Dice", "ProLearn mIoU", "U-Net Dice", "U-Net mIoU", "ProLearn Dice (pooled)", "PSA own-report AUC", "stages ran/cached"];
  const body = rows.map((r) =>
    r.status === "failed"
      ? [formatValue(key, r.value), `failed: ${r.error ?? "see the run"}`, "", "", "", "", "", `${r.ran}/${r.cached}`]
      : [formatValue(key, r.value), cell(r.prolearn?.dice), cell(r.prolearn?.iou), cell(r.baseline?.dice), cell(r.baseline?.iou), cell(r.prolearn?.dicePooled), cell(r.psaOwnReportAuc), `${r.ran}/${r.cached}`],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}
