import { defineTable } from "../io/columns.js";

/** embeddings.parquet: one row per ingested sample, in samples.parquet's order. */
export const EMBEDDINGS_TABLE = defineTable(
  "embed",
  "embeddings.parquet",
  "One row per ingested sample, in samples.parquet's order: its image embedding and, where a report is available, its text embedding.",
  [
    { name: "id", type: "utf8", nullable: false, description: "Sample id (samples.parquet `id`)." },
    { name: "split", type: "utf8", nullable: false, description: "Split of the sample.", enum: ["train", "val", "test"] },
    { name: "report_available", type: "bool", nullable: false, description: "The sample's report may be used (samples.parquet `report_available`)." },
    { name: "image_embedding", type: "embedding", nullable: false, description: "Image embedding." },
    {
      name: "text_embedding",
      type: "embedding",
      nullable: true,
      description: "Text embedding of `filtered_report` when a filter stage ran, else of `report_normalized`; null where no report is available.",
    },
  ] as const,
);
