import type { CliIO } from "./command.js";
import type { EngineEvent, PlannedStage, RunResult } from "../pipeline/engine.js";
import type { StageWarning } from "../pipeline/stage.js";
import { formatWarning } from "../pipeline/warnings.js";

/**
 * Draws engine events for people on stderr: a live progress bar (rows or steps, rate, ETA) on
 * a TTY, and plain throttled lines elsewhere (CI logs). Machine output never goes through here.
 */
export class ProgressRenderer {
  private bar: { key: string; started: number; lastDraw: number; lastLogged: number } | undefined;

  constructor(
    private readonly io: CliIO,
    private readonly quiet = false,
  ) {}

  handle = (event: EngineEvent): void => {
    if (this.quiet) return;
    switch (event.kind) {
      case "run-start":
        this.line(`run ${event.runId} of ${event.pipeline}: ${event.stages.join(" -> ")}`);
        break;
      case "stage-start":
        this.line(`> ${event.stage}: running (${event.reason})`);
        break;
      case "stage-end": {
        const r = event.result;
        const icon = r.status === "ran" ? "+" : r.status === "cached" ? "=" : r.status === "failed" ? "x" : "-";
        this.line(
          `${icon} ${r.name}: ${r.status}${warningCount(r.warnings)} in ${r.seconds.toFixed(2)} s${r.status === "failed" && r.error ? `\n    ${r.error.replace(/\n/g, "\n    ")}` : ""}`,
        );
        // Once per stage, at its end; a cached stage repeats those of the run that produced its output.
        for (const w of r.warnings) this.line(`  ${r.name}: warning: ${formatWarning(w)}`);
        break;
      }
      case "log":
        this.line(`  ${event.stage}: ${event.level === "warn" ? "warning: " : ""}${withoutStagePrefix(event.stage, event.message)}`);
        break;
      case "progress":
        this.progress(event);
        break;
      case "run-end":
        break;
    }
  };

  private progress(event: Extract<EngineEvent, { kind: "progress" }>): void {
    const key = `${event.stage}/${event.task}`;
    const task = withoutStagePrefix(event.stage, event.task);
    const now = performance.now();
    if (!this.bar || this.bar.key !== key) this.bar = { key, started: now, lastDraw: 0, lastLogged: -1 };
    const elapsed = (now - this.bar.started) / 1000;
    const rate = elapsed > 0 ? event.done / elapsed : 0;
    // A rate needs something done over measurable time; the first tick has neither ("0.0/s" said nothing).
    const measured = event.done > 0 && elapsed >= 0.05;
    const unit = event.unit ?? "items";
    const total = event.total;
    const finished = total !== undefined && event.done >= total;
    if (this.io.interactive) {
      if (now - this.bar.lastDraw < 100 && !finished) return;
      this.bar.lastDraw = now;
      const width = 24;
      const fraction = total ? Math.min(1, event.done / total) : 0;
      const bar = total ? `[${"#".repeat(Math.round(fraction * width)).padEnd(width, ".")}] ` : "";
      const eta = total && rate > 0 ? ` ETA ${formatSeconds((total - event.done) / rate)}` : "";
      this.io.stderr.write(
        `\r  ${event.stage} ${task} ${bar}${event.done}${total ? `/${total}` : ""} ${unit}${measured ? ` ${rate.toFixed(1)}/s` : ""}${eta}\x1b[K${finished ? "\n" : ""}`,
      );
    } else if (total) {
      const decile = Math.floor((event.done / total) * 4);
      if (decile > this.bar.lastLogged) {
        this.bar.lastLogged = decile;
        this.io.stderr.write(`  ${event.stage} ${task}: ${event.done}/${total} ${unit}${measured ? ` (${rate.toFixed(1)}/s)` : ""}\n`);
      }
    }
  }

  private line(text: string): void {
    if (this.io.interactive && this.bar) this.io.stderr.write("\r\x1b[K");
    this.io.stderr.write(text + "\n");
  }
}

/**
 * A message or task without a leading repeat of the stage's name: the renderer already prefixes
 * it ("guide: guide: 12 paired ..." and "embed embed rows" read as stutters).
 */
export function withoutStagePrefix(stage: string, text: string): string {
  for (const prefix of [`${stage}: `, `${stage} `]) if (text.startsWith(prefix) && text.length > prefix.length) return text.slice(prefix.length);
  return text;
}

export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  if (seconds < 60) return `${seconds.toFixed(0)}s`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m}m${String(Math.round(seconds % 60)).padStart(2, "0")}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/** The `--json` document of a run: one object, stable field names. */
export function runToJson(result: RunResult) {
  return {
    runId: result.runId,
    pipeline: result.pipeline,
    status: result.status,
    seconds: round(result.seconds),
    totals: result.totals,
    report: result.report ?? null,
    stages: result.stages.map((s) => ({
      name: s.name,
      status: s.status,
      reason: s.reason,
      reasons: s.reasons,
      warnings: s.warnings,
      seconds: round(s.seconds),
      cacheKey: s.cacheKey,
      digest: s.digest,
      outputs: s.outputs,
      summary: s.summary,
      ...(s.error ? { error: s.error } : {}),
    })),
  };
}

/** The run's outcome; first, the one-line `headline` any ran or cached stage gave in its summary (evaluate's test scores). */
export function formatRunSummary(result: RunResult): string {
  const t = result.totals;
  const headlines = result.stages
    .filter((s) => (s.status === "ran" || s.status === "cached") && typeof s.summary?.headline === "string")
    .map((s) => `${s.name}: ${String(s.summary!.headline)}`);
  const warnings = result.stages.flatMap((s) => s.warnings.map((w) => `${s.name}: warning: ${formatWarning(w)}`));
  const count = warnings.length;
  const lines = [
    ...headlines,
    ...warnings,
    `run ${result.runId}: ${result.status}${count ? ` with ${count} warning${count === 1 ? "" : "s"}` : ""} in ${result.seconds.toFixed(2)} s (${t.ran} ran, ${t.cached} cached, ${t.failed} failed${t.skipped ? `, ${t.skipped} skipped` : ""})`,
  ];
  if (result.report) lines.push(`report: ${result.report}`);
  return lines.join("\n");
}

export function formatPlan(plan: PlannedStage[]): string {
  const width = Math.max(...plan.map((p) => p.name.length), 5);
  const lines = plan.map((p) => `  ${p.name.padEnd(width)}  ${p.action.padEnd(6)}  ${p.reason}`);
  const toRun = plan.filter((p) => p.action === "run").length;
  return [`${toRun === 0 ? "nothing to run" : `${toRun} stage${toRun === 1 ? "" : "s"} to run`}:`, ...lines].join("\n");
}

function warningCount(warnings: readonly StageWarning[]): string {
  return warnings.length ? ` with ${warnings.length} warning${warnings.length === 1 ? "" : "s"}` : "";
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
