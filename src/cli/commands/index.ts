import type { CommandSpec } from "../command.js";

/**
 * Every CLI command, loaded lazily so `prolearn --help` stays instant. The key is the command's
 * words ("cluster hdbscan"); the summary is repeated here so the top-level help needs no import.
 */
export const COMMANDS: Record<string, { summary: string; load: () => Promise<CommandSpec> }> = {
  demo: { summary: "Generate a synthetic dataset (if absent) and run the demo pipeline end to end", load: async () => (await import("./demo.js")).default },
  run: { summary: "Run a pipeline; cached stages are reused, changed ones rerun", load: async () => (await import("./run.js")).default },
  plan: { summary: "Show what `run` would execute and why, without running anything", load: async () => (await import("./plan.js")).default },
  verify: {
    summary: "Re-hash every published output and artifact in a workdir; exit 1 if any is damaged",
    load: async () => (await import("./verify.js")).default,
  },
  "catalog rebuild": {
    summary: "Recover a lost or damaged catalog: keep it aside, salvage readable rows, re-register artifacts from their manifests",
    load: async () => (await import("./catalog.js")).rebuild,
  },
  status: { summary: "Recent runs and their stages, from the workdir's catalog", load: async () => (await import("./status.js")).default },
  outputs: {
    summary: "Print the current output files of a pipeline (its last successful run), or of one stage",
    load: async () => (await import("./outputs.js")).default,
  },
  diff: {
    summary: "Compare two runs: changed params, inputs and code versions, and their metrics side by side",
    load: async () => (await import("./diff.js")).default,
  },
  gc: {
    summary: "Remove outputs of old runs, unreferenced reports and checkpoints (keeps the last N runs and every artifact)",
    load: async () => (await import("./gc.js")).default,
  },
  report: {
    summary: "Print the path of a run's HTML report (the latest run by default); --open opens it",
    load: async () => (await import("./report.js")).default,
  },
  sweep: {
    summary: "Run a pipeline per value of a key (e.g. text availability) and print a Table-1-like comparison",
    load: async () => (await import("./sweep.js")).default,
  },
  "inspect filter": {
    summary: "Show a report's tokens with their filter relevance scores and which were kept",
    load: async () => (await import("./inspect-filter.js")).default,
  },
  fixtures: {
    summary: "Write a synthetic dataset in a real on-disk layout (images, masks, reports from the masks)",
    load: async () => (await import("./fixtures.js")).default,
  },
  "embed texts": {
    summary: "Embed the texts of a CSV, JSON (annotation.json) or Parquet file into Parquet",
    load: async () => (await import("./embed-texts.js")).default,
  },
  "embed images": { summary: "Embed every PNG/JPEG image under folders into Parquet", load: async () => (await import("./embed-images.js")).default },
  "cluster hdbscan": {
    summary: "Cluster points (CSV or Parquet) with HDBSCAN; writes one label per input row (-1 = noise)",
    load: async () => (await import("./cluster-hdbscan.js")).default,
  },
  "prototypes query": {
    summary: "Approximate text embeddings for image embeddings with a prototype space (PSA)",
    load: async () => (await import("./prototypes-query.js")).default,
  },
  "artifacts list": { summary: "List published prototype spaces: name, version, digest, aliases", load: async () => (await import("./artifacts.js")).list },
  "artifacts show": { summary: "Show one artifact's lineage manifest, path and alias history", load: async () => (await import("./artifacts.js")).show },
  "artifacts promote": {
    summary: "Point an alias (e.g. production) at NAME@VERSION; moves are recorded",
    load: async () => (await import("./artifacts.js")).promote,
  },
  "artifacts verify": {
    summary: "Recompute the digests of published artifacts and report any tampering",
    load: async () => (await import("./artifacts.js")).verify,
  },
  "artifacts export": {
    summary: "Write Q.npy, R.npy, prototypes.parquet and manifest.json to a folder",
    load: async () => (await import("./artifacts.js")).exportCommand,
  },
  worker: {
    summary: "Run stage jobs from a BullMQ queue (for `run --executor bullmq`) until SIGTERM",
    load: async () => (await import("./worker.js")).default,
  },
  scheduler: { summary: "Run pipelines on their `schedule` (cron, time zone) until SIGTERM", load: async () => (await import("./scheduler.js")).default },
  backends: {
    summary: "Which TensorFlow.js training backends start on this machine, on what, and why the others do not",
    load: async () => (await import("./backends.js")).default,
  },
  "bench train": {
    summary: "Time training steps of the reference U-Net (or the ProLearn segmenter) on a TensorFlow.js backend",
    load: async () => (await import("./bench-train.js")).default,
  },
};
