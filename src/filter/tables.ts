import { defineTable } from "../io/columns.js";

/** filtered.parquet: one row per training sample with an available report. */
export const FILTERED_TABLE = defineTable(
  "filter",
  "filtered.parquet",
  "One row per training sample with an available report: its tokens, their relevance scores and which were kept.",
  [
    { name: "id", type: "utf8", nullable: false, description: "Sample id (samples.parquet `id`)." },
    { name: "report", type: "utf8", nullable: false, description: "The normalised report the filter read (`report_normalized`)." },
    { name: "filtered_report", type: "utf8", nullable: false, description: "The report with the tokens below the threshold removed." },
    { name: "tokens", type: "list<utf8>", nullable: false, description: "The report's words, in order." },
    { name: "scores", type: "list<float32>", nullable: false, description: "Each token's cross-attention relevance score (the guide model's)." },
    { name: "kept", type: "list<bool>", nullable: false, description: "Whether each token reached the threshold." },
    { name: "threshold", type: "float32", nullable: false, description: "The relevance threshold used." },
  ] as const,
);
