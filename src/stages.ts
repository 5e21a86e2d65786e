import type { StageDefinition } from "./pipeline/stage.js";
import type { StageRegistry } from "./pipeline/spec.js";
import { embedStage } from "./embed/stage.js";

/**
 * The one registry of stages, in topological order. The pipeline schema, the CLI help, the docs
 * and the workers' allow-list all derive from it; the engine never imports a stage directly.
 * Adding a stage = one module exporting a defineStage(...) definition, plus one line here.
 */
const STAGE_LIST: StageDefinition[] = [
  embedStage,
];

export const STAGES: StageRegistry = new Map(STAGE_LIST.map((s) => [s.name, s]));
