import type { StageContext, StageSummary, StageWarning } from "./stage.js";

/**
 * Warnings travel inside the stage's summary (`summary.warnings`), which is plain JSON and so
 * crosses a queue worker unchanged; the engine takes them out before publishing, stores them in
 * the catalog with the stage's execution, and repeats them when a later run reuses the output.
 */
const collected = new WeakMap<object, StageWarning[]>();

/**
 * The ctx.warn of a stage context: collects into the context. It does not log: the CLI prints
 * each warning once, with the stage's end (where a cached rerun repeats it too).
 */
export function warningCollector(): { warn: StageContext<unknown>["warn"]; bind(ctx: object): void } {
  const list: StageWarning[] = [];
  return {
    warn: (code, message, figures) => {
      list.push(figures ? { code, message, figures } : { code, message });
    },
    bind: (ctx) => collected.set(ctx, list),
  };
}

/** The summary a stage returned, with what it recorded through ctx.warn appended to `warnings`. */
export function withCollectedWarnings(ctx: object, summary: StageSummary): StageSummary {
  const list = collected.get(ctx) ?? [];
  if (!list.length) return summary;
  const own = Array.isArray(summary.warnings) ? (summary.warnings as unknown[]) : [];
  return { ...summary, warnings: [...own, ...list] };
}

/** Splits a stage's summary into what is published and its warnings (checked, malformed ones named). */
export function takeWarnings(stage: string, summary: StageSummary): { summary: StageSummary; warnings: StageWarning[] } {
  if (summary.warnings === undefined) return { summary, warnings: [] };
  const { warnings: raw, ...rest } = summary;
  const list = Array.isArray(raw) ? raw : [raw];
  const warnings = list.map((w): StageWarning => {
    if (w && typeof w === "object" && typeof (w as StageWarning).code === "string" && typeof (w as StageWarning).message === "string") {
      const { code, message, figures } = w as StageWarning;
      return figures && typeof figures === "object" ? { code, message, figures } : { code, message };
    }
    return { code: "malformed-warning", message: `stage ${stage} returned a warning that is not { code, message }: ${JSON.stringify(w)}` };
  });
  return { summary: rest, warnings };
}

/** "prototypes-not-useful: PSA is no closer ... (marginOverMean -0.01, marginOverRandom 0.02)" */
export function formatWarning(warning: StageWarning): string {
  const figures = warning.figures
    ? Object.entries(warning.figures).map(([k, v]) => `${k} ${typeof v === "number" ? Number(v.toPrecision(4)) : String(v)}`)
    : [];
  return `${warning.code}: ${warning.message}${figures.length ? ` (${figures.join(", ")})` : ""}`;
}
