import type { RunOptions } from "../pipeline/engine.js";

/** The run report writer, once the report module exists; runs without one write no report. */
export function reportWriter(): RunOptions["writeReport"] {
  return undefined;
}
