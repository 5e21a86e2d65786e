import type { RunOptions } from "../pipeline/engine.js";

/**
 * The run report writer the `run` command passes to the engine: `<workdir>/reports/<runId>.html`.
 * The report module (Parquet, thumbnails through sharp) is imported when a report is written,
 * after the stages, not when the command loads.
 */
export function reportWriter(): RunOptions["writeReport"] {
  return async (context) => (await import("../report/write.js")).writeRunReport(context);
}
