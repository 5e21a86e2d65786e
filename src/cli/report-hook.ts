import type { RunOptions } from "../pipeline/engine.js";
import { writeRunReport } from "../report/write.js";

/** The run report writer the `run` command passes to the engine: `<workdir>/reports/<runId>.html`. */
export function reportWriter(): RunOptions["writeReport"] {
  return (context) => writeRunReport(context);
}
