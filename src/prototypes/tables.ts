import { defineTable } from "../io/columns.js";

/** prototypes.parquet: one row per prototype; the row index is the prototype id. */
export const PROTOTYPES_TABLE = defineTable(
  "prototypes",
  "prototypes.parquet",
  "One row per prototype (row index = prototype id): the query (image) and response (text) halves.",
  [
    { name: "prototype_id", type: "int32", nullable: false, description: "Prototype id (= row index)." },
    { name: "cluster", type: "int32", nullable: false, description: "Surrogate label (HDBSCAN cluster or lung-zone label)." },
    { name: "subcluster", type: "int32", nullable: false, description: "K-means sub-cluster within the cluster." },
    { name: "sample_id", type: "utf8", nullable: true, description: "The sample nearest the centroid; null for zones-mean prototypes." },
    { name: "size", type: "int32", nullable: false, description: "Members of the sub-cluster." },
    { name: "query", type: "embedding", nullable: false, description: "Query half: mean image embedding." },
    { name: "response", type: "embedding", nullable: false, description: "Response half: mean text embedding." },
  ] as const,
);

/** assignments.parquet: one row per paired training sample (per zone for zones-mean). */
export const ASSIGNMENTS_TABLE = defineTable(
  "prototypes",
  "assignments.parquet",
  "One row per paired training sample (zones-mean: one per lung zone it joins): its cluster and sub-cluster.",
  [
    { name: "id", type: "utf8", nullable: false, description: "Sample id." },
    { name: "cluster", type: "int32", nullable: false, description: "Cluster; -1 for noise dropped with `noise: drop`." },
    { name: "probability", type: "float32", nullable: false, description: "HDBSCAN membership probability (1 for zones-mean)." },
    { name: "subcluster", type: "int32", nullable: false, description: "Sub-cluster; -1 for dropped noise." },
  ] as const,
);
