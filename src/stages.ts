import type { z } from "zod";
import type { StageDefinition } from "./pipeline/stage.js";
import { definePipeline as defineAnyPipeline, type PipelineInput as AnyPipelineInput, type StageRegistry } from "./pipeline/spec.js";
import { ingestStage } from "./ingest/stage.js";
import { embedStage } from "./embed/stage.js";
import { prototypesStage } from "./prototypes/stage.js";
import { guideStage } from "./guide/stage.js";
import { filterStage } from "./filter/stage.js";
import { trainStage } from "./train/stage.js";
import { baselineStage } from "./baseline/stage.js";
import { evaluateStage } from "./evaluate/stage.js";

/**
 * The one registry of stages, in topological order. The pipeline schema, the CLI help, the docs,
 * the workers' allow-list and the types below all derive from it; the engine never imports a
 * stage directly. Adding a stage = one module exporting a defineStage(...) definition, plus one
 * line here. Keep that module light (loading this registry must not load TensorFlow.js, ONNX
 * Runtime, sharp, Arrow or Parquet): its run/sharding functions import the implementation module
 * when the stage runs (docs/pipelines.md, "Adding a stage"; test/pipeline/lazy-stages.test.ts).
 */
const STAGE_LIST = [ingestStage, guideStage, filterStage, embedStage, prototypesStage, trainStage, baselineStage, evaluateStage] as const;

type RegisteredStage = (typeof STAGE_LIST)[number];

/** The name of a registered stage: "ingest" | "guide" | ... */
export type StageName = RegisteredStage["name"];

/** Under `stages:` of a pipeline: each registered stage, optional, with its params as written (defaults not applied). */
export type PipelineStagesInput = { [S in RegisteredStage as S["name"]]?: z.input<S["params"]> };

/** A pipeline over the built-in stages, as written in YAML or passed to definePipeline. */
export type PipelineInput = AnyPipelineInput<PipelineStagesInput>;

export const STAGES: StageRegistry = new Map(STAGE_LIST.map((s) => [s.name, s as unknown as StageDefinition]));

export const STAGE_NAMES: readonly StageName[] = STAGE_LIST.map((s) => s.name);

/** Typed helper for pipelines written in TypeScript: stage names and params are checked by the compiler. */
export function definePipeline(input: PipelineInput): PipelineInput {
  return defineAnyPipeline(input);
}
