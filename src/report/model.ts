import type { StageWarning } from "../pipeline/stage.js";
/**
 * What the run report shows, as plain data: gathered from the run's stage outputs by gather.ts,
 * turned into HTML by html.ts. Every part that may be missing says why instead of inventing
 * numbers: the stage is not in the pipeline, did not run, failed, or its output was unreadable.
 */
export type Part<T> = { state: "ok"; data: T } | { state: "absent"; message: string } | { state: "error"; message: string };

export interface ReportOptions {
  /** Dataset thumbnails, spread over the splits. */
  maxThumbnails: number;
  /** Reports shown with token shading. */
  maxTokenExamples: number;
  /** Points drawn in the 2-D projection (an even sample of the clustered reports). */
  maxPoints: number;
  /** Prototype cards in the gallery (round-robin over clusters). */
  maxGallery: number;
  /** Test predictions shown next to their ground truth. */
  maxExamples: number;
  /** Longest side of a thumbnail in pixels. */
  thumbnailSize: number;
}

export const DEFAULT_REPORT_OPTIONS: ReportOptions = {
  maxThumbnails: 24,
  maxTokenExamples: 6,
  maxPoints: 2000,
  maxGallery: 36,
  maxExamples: 6,
  thumbnailSize: 96,
};

export interface OverviewStage {
  name: string;
  status: "ran" | "cached" | "failed" | "skipped" | "not run";
  reason: string;
  seconds: number | null;
  cacheKey: string | null;
  digest: string | null;
  error?: string;
  /** Scalar entries of the stage's summary, "key.sub" for one level of nesting. */
  summary: [string, string][];
  /** Checks that did not pass (a cached stage: those of the run that produced its output). */
  warnings: StageWarning[];
}

export interface Thumbnail {
  uri: string;
  width: number;
  height: number;
}

export interface DatasetPart {
  rows: number;
  splits: { split: string; samples: number; withReport: number; reportAvailable: number; emptyMasks: number | null }[];
  quarantine: Part<{ total: number; reasons: { reason: string; count: number; kept: number; examples: string[] }[] }>;
  fingerprint: [string, string][] | null;
  thumbnails: (Thumbnail & { id: string; split: string; maskEmpty: boolean })[];
}

export interface FilteringPart {
  reports: number;
  tokens: number;
  keptTokens: number;
  threshold: number | null;
  examples: { id: string; filtered: string; tokens: { text: string; score: number; kept: boolean }[] }[];
}

export interface ProjectionPart {
  /** One point per distinct embedding; `count` reports share it (identical reports embed identically). */
  points: { x: number; y: number; cluster: number; id: string; count: number }[];
  prototypes: { x: number; y: number; cluster: number; id: number }[];
  explained: [number, number];
  /** How many embedded reports the projection drew from, before sampling. */
  population: number;
}

export interface PrototypesPart {
  prototypes: number;
  clusters: { cluster: number; members: number; prototypes: number }[];
  /** Reports HDBSCAN left as noise, as the stage counted them (its summary), else the -1 rows of assignments. */
  noise: number;
  /** Of those, how many the stage gave the nearest label (noise: nearest), so they count in `clusters`. */
  noiseReassigned: number;
  assigned: number;
  projection: Part<ProjectionPart>;
  gallery: Part<{
    total: number;
    cards: {
      prototypeId: number;
      cluster: number;
      subcluster: number;
      size: number;
      sampleId: string | null;
      thumbnail: Thumbnail | null;
      report: string | null;
    }[];
  }>;
}

export interface HistoryPart {
  epochs: number;
  /** Per-epoch numeric fields, by name; `loss` ones and quality ones (Dice/IoU) are charted apart. */
  series: { name: string; points: { x: number; y: number }[] }[];
  bestEpoch: number | null;
}

export interface MetricsPart {
  columns: string[];
  rows: (string | number | boolean | null)[][];
  /** Index of the row that holds the baseline, when one is labelled so. */
  baselineRow: number | null;
}

export interface ExamplesPart {
  total: number;
  items: { id: string; image: Thumbnail; truth: Thumbnail; prediction: Thumbnail; baseline: Thumbnail | null; scores: [string, number][] }[];
}

export interface TrainingPart {
  history: Part<HistoryPart>;
  /** The image-only U-Net's curves (evaluate's baseline-history.json); absent without a baseline. */
  baselineHistory: Part<HistoryPart>;
  metrics: Part<MetricsPart>;
  examples: Part<ExamplesPart>;
}

export interface ReportModel {
  runId: string;
  pipeline: string;
  status: "ok" | "failed";
  seconds: number;
  startedAt: string | null;
  trigger: string | null;
  executor: string | null;
  generatedAt: string;
  workdir: string;
  dataset: { kind: string; root: string; layout: string; textAvailability: number; seed: number };
  totals: { ran: number; cached: number; failed: number; skipped: number };
  stages: OverviewStage[];
  /** Every stage's warnings, in stage order, for the header. */
  warnings: (StageWarning & { stage: string })[];
  sections: {
    dataset: Part<DatasetPart>;
    filtering: Part<FilteringPart>;
    prototypes: Part<PrototypesPart>;
    training: Part<TrainingPart>;
  };
}
