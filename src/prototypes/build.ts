import { DataError } from "../errors.js";
import { nearestRows, type Metric } from "./distances.js";
import { hdbscan, type HdbscanMethod } from "./hdbscan.js";
import type { NeighbourGraph } from "./hdbscan-approximate.js";
import { mulberry32 } from "../util/random.js";
import { kmeans } from "./kmeans.js";

/**
 * Prototype construction (METHOD.md §2, steps 4-7), a pure core over typed arrays:
 * surrogate labels (HDBSCAN over text embeddings, or rule-based lung zones), K-means inside each
 * label on [image ; text] with each half L2-normalised, and one prototype per sub-cluster.
 */
export interface PairedSamples {
  ids: string[];
  dim: number;
  /** n x dim, row-major. */
  images: Float32Array;
  /** n x dim, row-major (embeddings of the filtered report when a filter stage ran). */
  texts: Float32Array;
  /** Report text per sample; needed by `zones-mean` only. */
  reports?: (string | null)[];
}

export type NoiseHandling = "nearest" | "drop";
export type PrototypeMode = "hdbscan-kmeans" | "zones-mean";

export interface BuildOptions {
  mode: PrototypeMode;
  minClusterSize: number;
  minSamples?: number;
  metric: Metric;
  clusterSelection?: "eom" | "leaf";
  /** HDBSCAN path: exact (dense matrix over distinct texts), approximate (neighbour graph), or auto by size. */
  hdbscanMethod?: HdbscanMethod;
  /** Distinct texts up to which `auto` takes the exact path. */
  maxExactPoints?: number;
  /** Sub-clusters per surrogate label (capped by the label's size). */
  k: number;
  noise: NoiseHandling;
  seed: number;
  /** K-means runs per label (different k-means++ seeds); the lowest inertia wins. */
  restarts: number;
  maxIterations?: number;
  log?: (message: string) => void;
}

export interface Prototypes {
  dim: number;
  /** Surrogate label per prototype. */
  cluster: Int32Array;
  subcluster: Int32Array;
  /** Index of the sample the prototype was taken from, or -1 for a mean prototype. */
  sampleIndex: Int32Array;
  size: Int32Array;
  /** P x dim image-side prototypes. */
  queries: Float32Array;
  /** P x dim text-side prototypes. */
  responses: Float32Array;
}

export interface Assignment {
  sample: number;
  cluster: number;
  probability: number;
  subcluster: number;
}

export interface BuildResult {
  prototypes: Prototypes;
  assignments: Assignment[];
  numClusters: number;
  noisePoints: number;
  droppedPoints: number;
}

const ZONE_WORDS: Record<string, number[]> = {
  upper: [0],
  uppper: [0],
  upp: [0],
  top: [0],
  middle: [1],
  midlle: [1],
  mid: [1],
  lower: [2],
  lowe: [2],
  bottom: [2],
  all: [0, 1, 2],
  entire: [0, 1, 2],
  whole: [0, 1, 2],
};

/** Words between zone words and their side word that keep the zones pending ("upper and middle parts of the left lung"). */
const ZONE_FILLER_WORDS = new Set(["lung", "lungs", "and", "the", "of", "in", "part", "parts", "zone", "zones", "lobe", "lobes"]);

/**
 * The official code's rule-based surrogate label: a 6-zone multi-hot vector [upper L, middle L,
 * lower L, upper R, middle R, lower R] read from the report. Zone words ("upper", "middle",
 * "lower", "all", common typos) apply to the next side word ("left", "right", "both",
 * "bilateral" when followed by "lung"); a side with no zone words before it means the whole side.
 */
export function parseLungZones(report: string): Uint8Array {
  const zones = new Uint8Array(6);
  const words = report
    .toLowerCase()
    .replace(/[^a-z]+/g, " ")
    .trim()
    .split(" ");
  let pending: number[] = [];
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    const zoneList = ZONE_WORDS[word];
    if (zoneList) {
      pending.push(...zoneList);
      continue;
    }
    let sides: number[] | undefined;
    if (word === "left") sides = [0];
    else if (word === "right") sides = [3];
    else if ((word === "both" || word === "bilateral") && /^lungs?$/.test(words[i + 1] ?? "")) sides = [0, 3];
    if (sides) {
      const levels = pending.length ? pending : [0, 1, 2];
      for (const side of sides) for (const level of levels) zones[side + level] = 1;
      pending = [];
    } else if (!ZONE_FILLER_WORDS.has(word)) {
      pending = [];
    }
  }
  return zones;
}

/** [image ; text] of one sample, each half L2-normalised, into `out` (2 x dim). */
function featureRow(samples: PairedSamples, i: number, out: Float32Array | number[]): void {
  const { dim } = samples;
  for (const [offset, source] of [
    [0, samples.images],
    [dim, samples.texts],
  ] as const) {
    let sum = 0;
    for (let k = 0; k < dim; k++) sum += source[i * dim + k]! ** 2;
    const inv = sum > 0 ? 1 / Math.sqrt(sum) : 0;
    for (let k = 0; k < dim; k++) out[offset + k] = source[i * dim + k]! * inv;
  }
}

/** Rows [image ; text] of the given samples, float32, each half L2-normalised. */
function featureRows(samples: PairedSamples, members: ArrayLike<number>): Float32Array {
  const width = 2 * samples.dim;
  const out = new Float32Array(members.length * width);
  const row = new Array<number>(width);
  for (let m = 0; m < members.length; m++) {
    featureRow(samples, members[m]!, row);
    for (let x = 0; x < width; x++) out[m * width + x] = row[x]!;
  }
  return out;
}

/**
 * Members of a label beyond which K-means is fitted on a seeded sample of this many, and every
 * member then joins its nearest centroid: the fit costs the same at 4,000 or 400,000 members,
 * and features are built a block of members at a time.
 */
export const KMEANS_FIT_SAMPLE = 4096;
const ASSIGN_BLOCK = 4096;

interface SubclusterResult {
  /** Per member, its centroid (0..k-1). */
  clusters: Int32Array;
  /** Per member, its squared distance to its centroid. */
  distances: Float64Array;
}

async function kmeansSubclusters(
  samples: PairedSamples,
  members: number[],
  k: number,
  seed: number,
  restarts: number,
  maxIterations?: number,
): Promise<SubclusterResult> {
  const width = 2 * samples.dim;
  let fitMembers = members;
  if (members.length > KMEANS_FIT_SAMPLE) {
    const random = mulberry32(seed ^ 0x5a3d1e);
    const order = members.slice();
    for (let s = 0; s < KMEANS_FIT_SAMPLE; s++) {
      const t = s + Math.floor(random() * (order.length - s));
      [order[s], order[t]] = [order[t]!, order[s]!];
    }
    fitMembers = order.slice(0, KMEANS_FIT_SAMPLE).sort((a, b) => a - b);
  }
  const fit = await kmeans(featureRows(samples, fitMembers), fitMembers.length, width, k, { seed, restarts, maxIterations });
  const clusters = new Int32Array(members.length);
  const distances = new Float64Array(members.length);
  const row = new Array<number>(width);
  const distanceTo = (m: number, c: number) => {
    featureRow(samples, members[m]!, row);
    let d = 0;
    for (let x = 0; x < width; x++) d += (row[x]! - fit.centroids[c * width + x]!) ** 2;
    return d;
  };
  if (fitMembers === members) {
    clusters.set(fit.clusters);
  } else {
    for (let start = 0; start < members.length; start += ASSIGN_BLOCK) {
      const block = members.slice(start, start + ASSIGN_BLOCK);
      const nearest = await nearestRows(featureRows(samples, block), block.length, fit.centroids, k, width, "euclidean");
      clusters.set(nearest.index, start);
    }
  }
  for (let m = 0; m < members.length; m++) distances[m] = distanceTo(m, clusters[m]!);
  return { clusters, distances };
}

/** Best-of-`restarts` seeded k-means++ over number rows (see ./kmeans.ts). */
export async function bestKmeans(
  rows: number[][],
  k: number,
  seed: number,
  restarts: number,
  maxIterations = 100,
): Promise<{ clusters: Int32Array; inertia: number }> {
  const width = rows[0]?.length ?? 0;
  const flat = new Float32Array(rows.length * width);
  rows.forEach((r, i) => flat.set(r, i * width));
  return kmeans(flat, rows.length, width, k, { seed, restarts, maxIterations });
}

interface PrototypeRow {
  cluster: number;
  subcluster: number;
  sampleIndex: number;
  size: number;
  query: Float32Array;
  response: Float32Array;
}

function packPrototypes(rows: PrototypeRow[], dim: number): Prototypes {
  const out: Prototypes = {
    dim,
    cluster: new Int32Array(rows.length),
    subcluster: new Int32Array(rows.length),
    sampleIndex: new Int32Array(rows.length),
    size: new Int32Array(rows.length),
    queries: new Float32Array(rows.length * dim),
    responses: new Float32Array(rows.length * dim),
  };
  rows.forEach((r, p) => {
    out.cluster[p] = r.cluster;
    out.subcluster[p] = r.subcluster;
    out.sampleIndex[p] = r.sampleIndex;
    out.size[p] = r.size;
    out.queries.set(r.query, p * dim);
    out.responses.set(r.response, p * dim);
  });
  return out;
}

function checkSamples(samples: PairedSamples): number {
  const n = samples.ids.length;
  if (samples.images.length !== n * samples.dim || samples.texts.length !== n * samples.dim) {
    throw new DataError(`expected ${n} x ${samples.dim} image and text embeddings, got ${samples.images.length} and ${samples.texts.length} values`);
  }
  if (n === 0)
    throw new DataError("no paired samples (training rows with an available report and a text embedding)", {
      hint: "raise dataset.textAvailability or check the embed stage output",
    });
  return n;
}

export async function buildPrototypes(samples: PairedSamples, options: BuildOptions): Promise<BuildResult> {
  checkSamples(samples);
  return options.mode === "zones-mean" ? buildZonesMean(samples, options) : buildHdbscanKmeans(samples, options);
}

async function buildHdbscanKmeans(samples: PairedSamples, options: BuildOptions): Promise<BuildResult> {
  const n = samples.ids.length;
  const { dim } = samples;
  const clustering =
    n >= 2
      ? await hdbscan(samples.texts, {
          dim,
          minClusterSize: options.minClusterSize,
          minSamples: options.minSamples,
          metric: options.metric,
          clusterSelection: options.clusterSelection,
          method: options.hdbscanMethod,
          maxExactPoints: options.maxExactPoints,
          seed: options.seed,
          log: options.log,
        })
      : { labels: new Int32Array(n).fill(-1), probabilities: new Float32Array(n), numClusters: 0 };
  const labels = Int32Array.from(clustering.labels);
  const probabilities = Float32Array.from(clustering.probabilities);
  let numClusters = clustering.numClusters;
  const noiseIndices: number[] = [];
  for (let i = 0; i < n; i++) if (labels[i]! < 0) noiseIndices.push(i);
  let dropped = 0;
  if (numClusters === 0) {
    if (options.noise === "drop") {
      throw new DataError(`HDBSCAN found no cluster among ${n} reports (all noise) and noise is "drop"`, {
        hint: "lower minClusterSize / minSamples, or use noise: nearest (all reports then form one label)",
      });
    }
    options.log?.(`HDBSCAN found no cluster among ${n} reports; all of them form one surrogate label`);
    labels.fill(0);
    numClusters = 1;
  } else if (noiseIndices.length > 0) {
    if (options.noise === "drop") dropped = noiseIndices.length;
    else await assignNoiseToNearest(samples, labels, noiseIndices, options.metric, clustering as { distinctOf?: Int32Array; neighbours?: NeighbourGraph });
  }
  // Members per label in one pass (labels x samples scans would cost 1,000 x 200,000).
  const membersOf: number[][] = Array.from({ length: numClusters }, () => []);
  for (let i = 0; i < n; i++) if (labels[i]! >= 0) membersOf[labels[i]!]!.push(i);
  const rows: PrototypeRow[] = [];
  const subclusterOf = new Int32Array(n).fill(-1);
  for (let c = 0; c < numClusters; c++) {
    const members = membersOf[c]!;
    if (members.length === 0) continue;
    const k = Math.min(options.k, members.length);
    const result = await kmeansSubclusters(samples, members, k, options.seed + c * 7919, options.restarts, options.maxIterations);
    let subcluster = 0;
    for (let j = 0; j < k; j++) {
      let nearest = -1;
      let nearestDistance = Infinity;
      let size = 0;
      for (let m = 0; m < members.length; m++) {
        if (result.clusters[m] !== j) continue;
        size++;
        if (result.distances[m]! < nearestDistance) {
          nearestDistance = result.distances[m]!;
          nearest = members[m]!;
        }
      }
      if (nearest < 0) continue; // k-means left this centroid without members: no sample to take
      for (let m = 0; m < members.length; m++) if (result.clusters[m] === j) subclusterOf[members[m]!] = subcluster;
      rows.push({
        cluster: c,
        subcluster,
        sampleIndex: nearest,
        size,
        query: samples.images.slice(nearest * dim, (nearest + 1) * dim),
        response: samples.texts.slice(nearest * dim, (nearest + 1) * dim),
      });
      subcluster++;
    }
  }
  const assignments: Assignment[] = [];
  for (let i = 0; i < n; i++) {
    const wasNoise = clustering.labels[i]! < 0;
    const isDropped = wasNoise && options.noise === "drop" && clustering.numClusters > 0;
    assignments.push({ sample: i, cluster: isDropped ? -1 : labels[i]!, probability: probabilities[i]!, subcluster: isDropped ? -1 : subclusterOf[i]! });
  }
  return { prototypes: packPrototypes(rows, dim), assignments, numClusters, noisePoints: noiseIndices.length, droppedPoints: dropped };
}

/**
 * Each noise report joins the label of its nearest clustered report. Works on distinct texts
 * (a repeated report is looked up once); on the approximate path a noise text's own neighbour
 * list answers first, and only texts with no clustered neighbour are compared with every
 * clustered text, in bounded blocks.
 */
async function assignNoiseToNearest(
  samples: PairedSamples,
  labels: Int32Array,
  noiseIndices: number[],
  metric: Metric,
  clustering: { distinctOf?: Int32Array; neighbours?: NeighbourGraph },
): Promise<void> {
  const { dim } = samples;
  const n = labels.length;
  const distinctOf = clustering.distinctOf ?? Int32Array.from({ length: n }, (_, i) => i);
  let distinctCount = 0;
  for (let i = 0; i < n; i++) if (distinctOf[i]! + 1 > distinctCount) distinctCount = distinctOf[i]! + 1;
  const representative = new Int32Array(distinctCount).fill(-1);
  const distinctLabel = new Int32Array(distinctCount).fill(-1);
  for (let i = 0; i < n; i++) {
    const g = distinctOf[i]!;
    if (representative[g]! < 0) representative[g] = i;
    distinctLabel[g] = labels[i]!;
  }
  const answer = new Int32Array(distinctCount).fill(-2);
  const unresolved: number[] = [];
  const seen = new Uint8Array(distinctCount);
  for (const i of noiseIndices) {
    const g = distinctOf[i]!;
    if (seen[g]) continue;
    seen[g] = 1;
    const graph = clustering.neighbours;
    if (graph) {
      for (let r = 0; r < graph.k; r++) {
        const j = graph.index[g * graph.k + r]!;
        if (j < 0) break;
        if (distinctLabel[j]! >= 0) {
          answer[g] = distinctLabel[j]!;
          break;
        }
      }
    }
    if (answer[g] === -2) unresolved.push(g);
  }
  if (unresolved.length > 0) {
    const clustered: number[] = [];
    for (let g = 0; g < distinctCount; g++) if (distinctLabel[g]! >= 0) clustered.push(g);
    const gather = (groups: number[]) => {
      const out = new Float32Array(groups.length * dim);
      groups.forEach((g, r) => out.set(samples.texts.subarray(representative[g]! * dim, (representative[g]! + 1) * dim), r * dim));
      return out;
    };
    const nearest = await nearestRows(gather(unresolved), unresolved.length, gather(clustered), clustered.length, dim, metric);
    unresolved.forEach((g, r) => (answer[g] = distinctLabel[clustered[nearest.index[r]!]!]!));
  }
  for (const i of noiseIndices) labels[i] = answer[distinctOf[i]!]!;
}

/** Official-code variant: lung-zone labels (a sample may join several), K-means per label, prototype = member mean. */
async function buildZonesMean(samples: PairedSamples, options: BuildOptions): Promise<BuildResult> {
  const n = samples.ids.length;
  const { dim } = samples;
  if (!samples.reports) {
    throw new DataError("mode zones-mean needs the report texts", {
      hint: "add the ingest stage to the pipeline (prototypes reads report_normalized from it)",
    });
  }
  const zonesOf = samples.reports.map((r) => (r ? parseLungZones(r) : new Uint8Array(6)));
  const rows: PrototypeRow[] = [];
  const assignments: Assignment[] = [];
  let unzoned = 0;
  for (let i = 0; i < n; i++) if (!zonesOf[i]!.some((z) => z === 1)) unzoned++;
  // Reports naming no zone ("no pulmonary infection") form a 7th label so every sample is represented.
  for (let label = 0; label < 7; label++) {
    const members: number[] = [];
    for (let i = 0; i < n; i++) {
      const z = zonesOf[i]!;
      if (label < 6 ? z[label] === 1 : !z.some((v) => v === 1)) members.push(i);
    }
    if (members.length === 0) continue;
    const k = Math.min(options.k, members.length);
    const result = await kmeansSubclusters(samples, members, k, options.seed + label * 7919, options.restarts, options.maxIterations);
    let subcluster = 0;
    for (let j = 0; j < k; j++) {
      const query = new Float32Array(dim);
      const response = new Float32Array(dim);
      let size = 0;
      for (let m = 0; m < members.length; m++) {
        if (result.clusters[m] !== j) continue;
        const i = members[m]!;
        size++;
        for (let x = 0; x < dim; x++) {
          query[x] += samples.images[i * dim + x]!;
          response[x] += samples.texts[i * dim + x]!;
        }
      }
      if (size === 0) continue;
      for (let x = 0; x < dim; x++) {
        query[x] /= size;
        response[x] /= size;
      }
      for (let m = 0; m < members.length; m++)
        if (result.clusters[m] === j) assignments.push({ sample: members[m]!, cluster: label, probability: 1, subcluster });
      rows.push({ cluster: label, subcluster, sampleIndex: -1, size, query, response });
      subcluster++;
    }
  }
  assignments.sort((a, b) => a.sample - b.sample || a.cluster - b.cluster);
  const labelsUsed = new Set(rows.map((r) => r.cluster)).size;
  return { prototypes: packPrototypes(rows, dim), assignments, numClusters: labelsUsed, noisePoints: unzoned, droppedPoints: 0 };
}
