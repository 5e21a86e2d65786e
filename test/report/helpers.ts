import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { runPipeline, type RunResult } from "../../src/pipeline/engine.js";
import { loadPipelineFile, type ResolvedPipeline, type StageRegistry } from "../../src/pipeline/spec.js";
import { writeRunReport } from "../../src/report/write.js";
import { demoPipelineYaml, demoRegistry } from "./fixtures.js";
export { cli } from "../helpers/cli.js";

/** Debian's chromium (CI installs it), or $PROLEARN_CHROMIUM. */
export const CHROMIUM = process.env.PROLEARN_CHROMIUM ?? "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/** Screenshots for CI to keep as artifacts (git-ignored). */
export const SCREENSHOT_DIR = path.resolve(import.meta.dirname, "../../test-output/report");

/** A scratch project with the demo pipeline file; `stages` picks which demo stages it lists. */
export function demoProject(stages?: string[]): { dir: string; file: string; workdir: string } {
  const dir = mkdtempSync(path.join(tmpdir(), "prolearn-report-"));
  mkdirSync(path.join(dir, "data"));
  const file = path.join(dir, "pipeline.yaml");
  writeFileSync(file, demoPipelineYaml(stages));
  return { dir, file, workdir: path.join(dir, ".prolearn") };
}

/** Runs the demo pipeline through the real engine with the report writer the CLI uses. */
export async function runDemo(file: string, registry: StageRegistry = demoRegistry()): Promise<{ pipeline: ResolvedPipeline; result: RunResult }> {
  const pipeline = loadPipelineFile(file, registry);
  const result = await runPipeline(pipeline, { registry, writeReport: (context) => writeRunReport(context) });
  return { pipeline, result };
}
