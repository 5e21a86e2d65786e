import { z } from "zod";
import { buildPipelineSchema } from "./pipeline/spec.js";
import { STAGES } from "./stages.js";
import { samplesJsonSchema } from "./ingest/schema.js";

/**
 * JSON Schemas published in schemas/, generated from the zod schemas that validate at run
 * time. `npm run schemas` writes them; CI's `npm run schemas:check` fails on drift.
 */
export async function generatedSchemas(): Promise<Record<string, unknown>> {
  const pipeline = z.toJSONSchema(buildPipelineSchema(STAGES), { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
  return {
    "pipeline.schema.json": { $id: "https://prolearn.dev/schemas/pipeline.schema.json", title: "prolearn pipeline", ...pipeline },
    "samples.schema.json": samplesJsonSchema(),
  };
}
