import { z } from "zod";
import { defineStage } from "../pipeline/stage.js";
import { METRICS } from "./metric-names.js";
import { ASSIGNMENTS_TABLE, PROTOTYPES_TABLE } from "./tables.js";

// The definition only: clustering, Parquet and the artifact registry live in ./run.ts and
// are imported when the stage runs.

export const prototypesParams = z.strictObject({
  mode: z
    .enum(["hdbscan-kmeans", "zones-mean"])
    .default("hdbscan-kmeans")
    .describe(
      "`hdbscan-kmeans` (paper: HDBSCAN surrogate labels, K-means, nearest-sample prototypes) or `zones-mean` (official code: lung-zone labels parsed from the report, K-means, cluster means).",
    ),
  minClusterSize: z
    .number()
    .int()
    .min(2)
    .default(5)
    .describe(
      "HDBSCAN minimum cluster size (surrogate labels smaller than this are not clusters). 5 keeps clusters at the 1% text setting (~57 QaTa reports) while still merging templated reports; see docs/prototypes.md.",
    ),
  minSamples: z.number().int().min(1).optional().describe("HDBSCAN core-distance k, the point itself counted (default: minClusterSize)."),
  metric: z.enum(METRICS).default("cosine").describe("Distance between text embeddings for HDBSCAN and for assigning noise."),
  clusterSelection: z.enum(["eom", "leaf"]).default("eom").describe("HDBSCAN flat clustering: excess of mass or the condensed tree's leaves."),
  hdbscan: z
    .strictObject({
      method: z
        .enum(["auto", "exact", "approximate"])
        .default("auto")
        .describe(
          "`exact`: dense distance matrix over the distinct report embeddings (identical reports collapse to one weighted point, with the expanded input's labels); `approximate`: k-nearest-neighbour graph + MST, for more distinct reports than the matrix can hold; `auto`: exact up to maxExactPoints distinct reports. See docs/prototypes.md.",
        ),
      maxExactPoints: z
        .number()
        .int()
        .min(2)
        .default(16384)
        .describe("Distinct report embeddings up to which `auto` takes the exact path (the matrix takes 4 bytes a pair: 16,384 -> 1 GiB)."),
    })
    .default({ method: "auto", maxExactPoints: 16384 })
    .describe("How HDBSCAN scales: the exact or the approximate path."),
  k: z.number().int().min(1).default(16).describe("K-means sub-clusters per surrogate label (capped by the label's size); code zoo: 2, 4, 8, 16."),
  restarts: z.number().int().min(1).default(3).describe("K-means++ runs per label with different seeds; the lowest inertia wins."),
  noise: z
    .enum(["nearest", "drop"])
    .default("nearest")
    .describe("HDBSCAN noise: join the cluster of the nearest clustered report (default, keeps every paired sample) or drop it."),
  topK: z.number().int().min(1).default(3).describe("Prototypes mixed per query (used by the usefulness check; recorded for consumers)."),
  temperature: z.number().positive().default(1).describe("Softmax temperature over the top-k cosine similarities."),
  seed: z.number().int().min(0).optional().describe("Seed for K-means and the random-prototype baseline (default: the dataset seed)."),
  usefulnessSamples: z
    .number()
    .int()
    .min(50)
    .default(2000)
    .describe(
      "Validation rows the usefulness check scores at most: beyond this many it draws a seeded sample (the check compares every row's approximation with every other row's report, n^2 work; 2,000 rows give a standard error near 0.005 on the AUC).",
    ),
  onUseless: z
    .enum(["warn", "fail"])
    .default("warn")
    .describe(
      "When the usefulness check finds PSA no better than the mean training report or a random prototype: `warn` (publish, and end the stage ok with the warning `prototypes-not-useful`, shown by status and the report) or `fail` (stop before publishing the artifact, a gate for scheduled runs).",
    ),
});

export type PrototypesParams = z.output<typeof prototypesParams>;

export const prototypesStage = defineStage({
  name: "prototypes",
  version: "3",
  description: "Prototype space (PSA): surrogate labels, K-means sub-clusters, nearest-sample query/response prototypes; published as a versioned artifact.",
  params: prototypesParams,
  inputs: ["embed"],
  optionalInputs: ["ingest"],
  outputs: ["prototypes.parquet", "assignments.parquet", "manifest.json"],
  tables: [PROTOTYPES_TABLE, ASSIGNMENTS_TABLE],
  // The gate never changes the artifact's bytes: adding it must not re-run (and so re-train
  // downstream of) every cached prototype space.
  nonKeyParams: ["onUseless"],
  run: async (ctx) => (await import("./run.js")).runPrototypes(ctx),
});
