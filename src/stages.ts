import type { StageDefinition } from "./pipeline/stage.js";
import type { StageRegistry } from "./pipeline/spec.js";
import { ingestStage } from "./ingest/stage.js";
import { embedStage } from "./embed/stage.js";
import { prototypesStage } from "./prototypes/stage.js";
import { guideStage } from "./guide/stage.js";
import { filterStage } from "./filter/stage.js";
import { trainStage } from "./train/stage.js";
import { evaluateStage } from "./evaluate/stage.js";

/**
 * The one registry of stages, in topological order. The pipeline schema, the CLI help, the docs
 * and the workers' allow-list all derive from it; the engine never imports a stage directly.
 * Adding a stage = one module exporting a defineStage(...) definition, plus one line here. Keep
 * that module light (loading this registry must not load TensorFlow.js, ONNX Runtime, sharp,
 * Arrow or Parquet): its run/sharding functions import the implementation module when the stage
 * runs (docs/pipelines.md, "Adding a stage"; test/pipeline/lazy-stages.test.ts).
 */
const STAGE_LIST: StageDefinition[] = [
  ingestStage,
  guideStage,
  filterStage,
  embedStage,
  prototypesStage,
  trainStage,
  evaluateStage,
];

export const STAGES: StageRegistry = new Map(STAGE_LIST.map((s) => [s.name, s]));
