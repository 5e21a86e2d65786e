import { existsSync } from "node:fs";
import { ProlearnError } from "../errors.js";
import type { RunResult, StageResult } from "../pipeline/engine.js";
import type { ResolvedPipeline } from "../pipeline/spec.js";
import type { Part } from "./model.js";

/** Finds stage output files of this run and explains, in words, why one is not there. */
export class StageOutputs {
  private readonly byName: Map<string, StageResult>;
  constructor(
    readonly pipeline: ResolvedPipeline,
    readonly result: RunResult,
  ) {
    this.byName = new Map(result.stages.map((s) => [s.name, s]));
  }

  /** In the pipeline file, or in the run's record (a report rebuilt with a pipeline file edited since). */
  inPipeline(stage: string): boolean {
    return stage in this.pipeline.stages || this.byName.has(stage);
  }

  /** Why the stage's outputs are unavailable, or undefined when they are there. */
  missing(stage: string): string | undefined {
    if (!this.inPipeline(stage)) return `This pipeline has no \`${stage}\` stage.`;
    const s = this.byName.get(stage);
    if (!s) return `The \`${stage}\` stage was not selected in this run (--until / --only).`;
    if (s.status === "failed")
      return sentence(
        `The \`${stage}\` stage failed in this run: ${(s.error ?? s.reason).split("\n")[0]!.replace(new RegExp(`^stage ${stage} failed: `), "")}`,
      );
    if (s.status === "skipped") return sentence(`The \`${stage}\` stage was skipped: ${s.reason}`);
    return undefined;
  }

  /** Absolute path of an output file; throws when the stage ran but the file is gone. */
  file(stage: string, name: string): string {
    const s = this.byName.get(stage);
    const file = s?.outputs[name];
    if (!file) throw new Error(`the \`${stage}\` stage published no ${name} (outputs: ${Object.keys(s?.outputs ?? {}).join(", ") || "none"})`);
    if (!existsSync(file)) throw new Error(`${file} no longer exists (the store was cleaned?); rerun the pipeline to rebuild it`);
    return file;
  }

  optionalFile(stage: string, name: string): string | undefined {
    const file = this.byName.get(stage)?.outputs[name];
    return file && existsSync(file) ? file : undefined;
  }
}

function sentence(text: string): string {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** A section whose data cannot be read shows the error in place; the rest of the report stands. */
export async function guarded<T>(fn: () => Promise<Part<T>>): Promise<Part<T>> {
  try {
    return await fn();
  } catch (error) {
    return { state: "error", message: describeError(error) };
  }
}

function describeError(error: unknown): string {
  if (error instanceof ProlearnError) return error.format();
  return (error as Error)?.message ?? String(error);
}

/** Up to `limit` key/value pairs of a JSON summary, one level of nesting flattened to `a.b`. */
export function flattenSummary(summary: Record<string, unknown>, limit = 8): [string, string][] {
  const out: [string, string][] = [];
  const add = (key: string, value: unknown, depth: number) => {
    if (out.length >= limit) return;
    if (typeof value === "number") out.push([key, Number.isInteger(value) ? String(value) : value.toPrecision(4).replace(/\.?0+$/, "")]);
    else if (typeof value === "string") out.push([key, value.length > 60 ? `${value.slice(0, 57)}...` : value]);
    else if (typeof value === "boolean") out.push([key, String(value)]);
    else if (value && typeof value === "object" && !Array.isArray(value) && depth === 0) for (const [k, v] of Object.entries(value)) add(`${key}.${k}`, v, 1);
  };
  for (const [key, value] of Object.entries(summary ?? {})) add(key, value, 0);
  return out;
}

/** `count` items spread evenly over `rows` (all of them when there are fewer). */
export function spread<T>(rows: readonly T[], count: number): T[] {
  if (rows.length <= count) return [...rows];
  const out: T[] = [];
  for (let i = 0; i < count; i++) out.push(rows[Math.floor(((i + 0.5) * rows.length) / count)]!);
  return out;
}
