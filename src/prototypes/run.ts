// The prototypes stage's implementation; its definition (./stage.ts) imports this module when the stage runs.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { DataError, StageError } from "../errors.js";
import { writeParquetFile } from "../io/parquet.js";
import { readTable, withTable } from "../io/tables.js";
import { EMBEDDINGS_TABLE } from "../embed/tables.js";
import { SAMPLES_TABLE } from "../ingest/tables.js";
import type { StageContext } from "../pipeline/stage.js";
import { sha256 } from "../util/hash.js";
import { PACKAGE_VERSION } from "../version.js";
import { assignmentsTable, prototypesTable, writeArtifactManifest, type Lineage } from "./artifact.js";
import { buildPrototypes, type BuildResult, type PairedSamples } from "./build.js";
import { PrototypeSpace, type QueryOptions } from "./psa.js";
import { ArtifactRegistry } from "./registry.js";
import type { PrototypesParams } from "./stage.js";
import { mulberry32 } from "../util/random.js";
import { centredCosinePerRow, mean, norms, ownReportAucPerRow, standardError } from "./retrieval.js";

/** Rows a slice of embeddings.parquet holds; one slice of every column read is in memory at a time. */
const SLICE_ROWS = 4096;

export interface PairedRows {
  dim: number;
  train: PairedSamples;
  validation: PairedSamples;
  /** Available reports whose text embedding is all zero (left out). */
  emptyTexts: number;
}

/**
 * Reads the training and validation pairs from embeddings.parquet in slices through the table
 * reader: a first pass over ids, splits and text embeddings picks the rows, a second copies only
 * those rows' embeddings, so memory holds the kept pairs and one slice, never the whole table.
 */
export async function readPairedRows(file: string, sliceRows = SLICE_ROWS): Promise<PairedRows> {
  return withTable(EMBEDDINGS_TABLE, file, async (reader) => {
    const kept = new Int8Array(reader.numRows); // 1 train, 2 val, 0 neither
    const ids: [string[], string[]] = [[], []];
    let emptyTexts = 0;
    for await (const { offset, rows } of reader.slices(["id", "split", "report_available", "text_embedding"], sliceRows)) {
      const text = rows.text_embedding;
      for (let r = 0; r < rows.numRows; r++) {
        if (!rows.report_available[r] || !text.valid[r]) continue;
        // An all-zero text embedding (a report with no known token) carries no text to cluster or compare.
        let norm = 0;
        for (let k = 0; k < text.dim; k++) norm += text.values[r * text.dim + k]! ** 2;
        if (!(norm > 0)) {
          emptyTexts++;
          continue;
        }
        const which = rows.split[r] === "train" ? 1 : rows.split[r] === "val" ? 2 : 0;
        if (which === 0) continue;
        kept[offset + r] = which;
        ids[which - 1]!.push(rows.id[r]!);
      }
    }
    let dim = -1;
    let train: PairedSamples = { ids: ids[0], dim: 0, images: new Float32Array(0), texts: new Float32Array(0) };
    let validation: PairedSamples = { ids: ids[1], dim: 0, images: new Float32Array(0), texts: new Float32Array(0) };
    const filled = [0, 0];
    for await (const { offset, rows } of reader.slices(["image_embedding", "text_embedding"], sliceRows)) {
      const { image_embedding: image, text_embedding: text } = rows;
      if (dim < 0) {
        dim = image.dim;
        train = { ids: ids[0], dim, images: new Float32Array(ids[0].length * dim), texts: new Float32Array(ids[0].length * dim) };
        validation = { ids: ids[1], dim, images: new Float32Array(ids[1].length * dim), texts: new Float32Array(ids[1].length * dim) };
      }
      if (image.dim !== dim && image.valid.includes(1))
        throw new DataError(`image embeddings change width from ${dim} to ${image.dim} at row ${offset}`, { location: { file, row: offset } });
      if (text.dim !== dim && text.valid.includes(1))
        throw new DataError(`image (${dim}-d) and text (${text.dim}-d) embeddings differ in width`, { location: { file } });
      for (let r = 0; r < rows.numRows; r++) {
        const which = kept[offset + r]!;
        if (which === 0) continue;
        const target = which === 1 ? train : validation;
        const row = filled[which - 1]!++;
        target.images.set(image.values.subarray(r * dim, (r + 1) * dim), row * dim);
        target.texts.set(text.values.subarray(r * dim, (r + 1) * dim), row * dim);
      }
    }
    return { dim: Math.max(dim, 0), train, validation, emptyTexts };
  });
}

async function readReports(file: string, ids: string[]): Promise<(string | null)[]> {
  const table = await readTable(SAMPLES_TABLE, file, ["id", "report_normalized", "report_available"]);
  const byId = new Map<string, string | null>();
  for (let i = 0; i < table.numRows; i++) byId.set(table.id[i]!, table.report_available[i] ? table.report_normalized[i]! : null);
  return ids.map((id) => byId.get(id) ?? null);
}

function cosine(a: Float32Array, aOffset: number, b: Float32Array, bOffset: number, dim: number): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let k = 0; k < dim; k++) {
    const x = a[aOffset + k]!;
    const y = b[bOffset + k]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
}

export interface UsefulnessCheck {
  samples: number;
  /**
   * Mean over held-out images of the fraction of the other held-out reports that are less
   * cosine-similar to the image's PSA approximation than its own report (ties half): 0.5 = chance.
   */
  ownReportAuc: number;
  /** Mean cos(PSA - m, own report - m), m = the mean training report: what the approximation says beyond the constant. */
  centredCosine: number;
  /** Uncentred cos(PSA, own report) minus cos(mean training report, own report) (kept for comparison; see docs/prototypes.md). */
  marginOverMean: number;
  /** Uncentred cos(PSA, own report) minus cos(one random prototype response, own report). */
  marginOverRandom: number;
  /** Both figures with the prototypes' responses permuted among them (the same queries), averaged over the permutations. */
  shuffled: { ownReportAuc: number; centredCosine: number; permutations: number };
  /** Paired per-image gains over the shuffled space and their standard errors; `passed` needs each gain > 2 standard errors. */
  gains: { ownReportAuc: number; ownReportAucSe: number; centredCosine: number; centredCosineSe: number };
  passed: boolean;
  /** Mean uncentred cosines behind the two margins. */
  cosine: { psa: number; meanTrainingReport: number; randomPrototype: number };
}

/** Shuffled spaces averaged per image; 8 keep the baseline's own noise well below the gains' standard error. */
const SHUFFLES = 8;

function meanRows(values: Float32Array, dim: number): Float64Array {
  const rows = values.length / dim;
  const out = new Float64Array(dim);
  for (let i = 0; i < rows; i++) for (let k = 0; k < dim; k++) out[k] += values[i * dim + k]! / rows;
  return out;
}

/**
 * The usefulness check (issue 15): on held-out images with reports, does PSA's approximated
 * text find the image's own report among the others (ownReportAuc), and does it point the way
 * the report departs from the mean report (centredCosine)? Each is compared, image by image,
 * with the same space whose responses are permuted among the prototypes: a space whose
 * retrieval carries no information about the report scores like its shuffled copy. The
 * segmenter's linear layers absorb any constant offset, so the uncentred margins over the mean
 * report are reported but do not decide.
 */
export async function usefulnessCheck(
  space: PrototypeSpace,
  queries: Float32Array,
  responses: Float32Array,
  trainingTexts: Float32Array,
  heldOut: PairedSamples,
  options: { topK: number; temperature: number; seed: number },
): Promise<UsefulnessCheck> {
  const { dim } = heldOut;
  const n = heldOut.ids.length;
  const centre = meanRows(trainingTexts, dim);
  const query = { topK: options.topK, temperature: options.temperature };
  const reportNorms = norms(heldOut.texts, n, dim);
  const aucOf = (predicted: Float32Array) =>
    inParts(
      n,
      AUC_ROWS_PER_PART,
      new Float64Array(n),
      (from, to, out) => void ownReportAucPerRow(predicted, heldOut.texts, n, dim, { from, to, out, reportNorms }),
    );
  const approx = await queryInParts(space, heldOut.images, n, dim, query);
  const auc = await aucOf(approx);
  const centred = centredCosinePerRow(approx, heldOut.texts, centre, n, dim);

  const random = mulberry32(options.seed ^ 0x5eed);
  const size = space.size;
  const shuffledAuc = new Float64Array(n);
  const shuffledCentred = new Float64Array(n);
  const permutations = size > 1 ? SHUFFLES : 0;
  for (let r = 0; r < permutations; r++) {
    const order = shuffledOrder(size, random);
    const permuted = new Float32Array(responses.length);
    for (let p = 0; p < size; p++) permuted.set(responses.subarray(order[p]! * dim, (order[p]! + 1) * dim), p * dim);
    const other = await queryInParts(new PrototypeSpace(queries, permuted, dim), heldOut.images, n, dim, query);
    const a = await aucOf(other);
    const c = centredCosinePerRow(other, heldOut.texts, centre, n, dim);
    for (let i = 0; i < n; i++) {
      shuffledAuc[i] += a[i]! / permutations;
      shuffledCentred[i] += c[i]! / permutations;
    }
  }
  if (permutations === 0) {
    // One prototype: every permutation is the space itself.
    shuffledAuc.set(auc);
    shuffledCentred.set(centred);
  }
  const aucGain = auc.map((v, i) => v - shuffledAuc[i]!);
  const centredGain = centred.map((v, i) => v - shuffledCentred[i]!);

  let psa = 0;
  let meanScore = 0;
  let randomScore = 0;
  const meanVector = Float32Array.from(centre);
  for (let i = 0; i < n; i++) {
    psa += cosine(approx, i * dim, heldOut.texts, i * dim, dim) / n;
    meanScore += cosine(meanVector, 0, heldOut.texts, i * dim, dim) / n;
    const p = Math.floor(random() * size);
    randomScore += cosine(responses, p * dim, heldOut.texts, i * dim, dim) / n;
  }
  const gains = {
    ownReportAuc: mean(aucGain),
    ownReportAucSe: standardError(aucGain),
    centredCosine: mean(centredGain),
    centredCosineSe: standardError(centredGain),
  };
  // A one-sided paired test at about the 2.3% level on each figure: gains of less than two
  // standard errors are what a space without information shows on n held-out images by chance.
  const passed = gains.ownReportAuc > 2 * gains.ownReportAucSe && gains.centredCosine > 2 * gains.centredCosineSe;
  return {
    samples: n,
    ownReportAuc: mean(auc),
    centredCosine: mean(centred),
    marginOverMean: psa - meanScore,
    marginOverRandom: psa - randomScore,
    shuffled: { ownReportAuc: mean(shuffledAuc), centredCosine: mean(shuffledCentred), permutations },
    gains,
    passed,
    cosine: { psa, meanTrainingReport: meanScore, randomPrototype: randomScore },
  };
}

// The check runs in parts with a turn of the event loop between them: on a queue worker a
// synchronous minute would stop the job's lock renewal, and BullMQ would count the job as stalled
// (found at 30,000 images: bench/executors-30k.ts).
const QUERY_ROWS_PER_PART = 256;
const AUC_ROWS_PER_PART = 128;
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** `work(from, to, out)` over rows 0..n-1 in parts of `rows`, yielding between parts; returns `out`. */
async function inParts<T>(n: number, rows: number, out: T, work: (from: number, to: number, out: T) => void): Promise<T> {
  for (let from = 0; from < n; from += rows) {
    work(from, Math.min(n, from + rows), out);
    await nextTurn();
  }
  return out;
}

/** PSA's approximations of n image embeddings, in parts (see above). */
async function queryInParts(space: PrototypeSpace, images: Float32Array, n: number, dim: number, query: QueryOptions): Promise<Float32Array> {
  return inParts(n, QUERY_ROWS_PER_PART, new Float32Array(n * dim), (from, to, out) => {
    out.set(space.query(images.subarray(from * dim, to * dim), query).embeddings, from * dim);
  });
}

/** A permutation of 0..size-1 that moves every index (a derangement when size > 1), seeded. */
function shuffledOrder(size: number, random: () => number): number[] {
  const order = Array.from({ length: size }, (_, i) => i);
  for (let i = size - 1; i > 0; i--) {
    const j = Math.floor(random() * i); // Sattolo's algorithm: one cycle, so no prototype keeps its response
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

export function formatUsefulness(u: UsefulnessCheck): string {
  const f = (v: number) => v.toFixed(4);
  const signed = (v: number) => `${v >= 0 ? "+" : ""}${v.toFixed(4)}`;
  return (
    `usefulness on ${u.samples} validation samples: own-report AUC ${f(u.ownReportAuc)} (shuffled prototypes ${f(u.shuffled.ownReportAuc)}, gain ${signed(u.gains.ownReportAuc)} +- ${f(u.gains.ownReportAucSe)}), ` +
    `centred cosine ${f(u.centredCosine)} (shuffled ${f(u.shuffled.centredCosine)}, gain ${signed(u.gains.centredCosine)} +- ${f(u.gains.centredCosineSe)}); ` +
    `uncentred margin over the mean training report ${signed(u.marginOverMean)}, over a random prototype ${signed(u.marginOverRandom)}` +
    (u.passed ? "" : " (PSA does NOT beat its shuffled copy by two standard errors on both figures)")
  );
}

function upstreamFile(ctx: StageContext<PrototypesParams>, stage: string, name: string): string {
  const file = ctx.inputs[stage]?.files[name];
  if (!file || !existsSync(file))
    throw new StageError("prototypes", `input ${stage}/${name} is missing`, { hint: `the ${stage} stage must publish ${name} (docs/data-contracts.md)` });
  return file;
}

export async function runPrototypes(ctx: StageContext<PrototypesParams>) {
  const params = ctx.params;
  const seed = params.seed ?? ctx.pipeline.dataset.seed;
  const embeddingsFile = upstreamFile(ctx, "embed", "embeddings.parquet");
  const rows = await readPairedRows(embeddingsFile);
  const { emptyTexts } = rows;
  const train = rows.train.ids;
  if (emptyTexts > 0) ctx.log(`${emptyTexts} report(s) have an all-zero text embedding and are left out`, "warn");
  if (train.length === 0) {
    throw new StageError("prototypes", "no training row has an available report with a text embedding", {
      location: { file: embeddingsFile },
      hint: "raise dataset.textAvailability, or check that the embed stage embedded the reports",
    });
  }
  const samples = rows.train;
  if (params.mode === "zones-mean") {
    if (!ctx.inputs.ingest)
      throw new StageError("prototypes", "mode zones-mean reads the report texts from the ingest stage, which is not in the pipeline", {
        hint: "add `ingest: {}` under stages",
      });
    samples.reports = await readReports(upstreamFile(ctx, "ingest", "samples.parquet"), samples.ids);
  }
  ctx.log(`building prototypes from ${train.length} paired training samples (${params.mode})`);
  ctx.emit({ kind: "progress", stage: ctx.stage, task: "prototypes", done: 0, total: 3 });
  const built: BuildResult = await buildPrototypes(samples, {
    mode: params.mode,
    minClusterSize: params.minClusterSize,
    minSamples: params.minSamples,
    metric: params.metric,
    clusterSelection: params.clusterSelection,
    hdbscanMethod: params.hdbscan.method,
    maxExactPoints: params.hdbscan.maxExactPoints,
    k: params.k,
    noise: params.noise,
    seed,
    restarts: params.restarts,
    log: (message) => ctx.log(message, message.startsWith("hdbscan:") ? "info" : "warn"),
  });
  ctx.emit({ kind: "progress", stage: ctx.stage, task: "prototypes", done: 1, total: 3 });
  const p = built.prototypes;
  await writeParquetFile(path.join(ctx.outDir, "prototypes.parquet"), prototypesTable(p, samples.ids));
  await writeParquetFile(path.join(ctx.outDir, "assignments.parquet"), assignmentsTable(built.assignments, samples.ids));

  const lineage = lineageOf(ctx, seed, rows.dim, built, train.length);
  const manifest = await writeArtifactManifest(ctx.outDir, lineage);
  ctx.emit({ kind: "progress", stage: ctx.stage, task: "prototypes", done: 2, total: 3 });

  const usefulness = await checkUsefulness(ctx, seed, built, samples.texts, rows.validation);

  const registry = ArtifactRegistry.open(ctx.pipeline.workdir);
  let artifact: Awaited<ReturnType<ArtifactRegistry["publish"]>>;
  try {
    artifact = await registry.publish(ctx.pipeline.name, ctx.outDir);
  } finally {
    registry.close();
  }
  ctx.log(`${artifact.isNew ? "published" : "unchanged:"} ${artifact.name}@${artifact.version} (${artifact.digest.slice(0, 12)})`);
  ctx.emit({ kind: "progress", stage: ctx.stage, task: "prototypes", done: 3, total: 3 });
  return {
    mode: params.mode,
    pairedSamples: train.length,
    emptyTexts,
    surrogateLabels: built.numClusters,
    noise: built.noisePoints,
    dropped: built.droppedPoints,
    prototypes: p.cluster.length,
    dim: p.dim,
    usefulness,
    artifact: { name: artifact.name, version: artifact.version, digest: manifest.digest, isNew: artifact.isNew, path: artifact.path },
  };
}

/** What the artifact's manifest records of where the space came from (docs/prototypes.md, "Lineage"). */
function lineageOf(ctx: StageContext<PrototypesParams>, seed: number, dim: number, built: BuildResult, pairedSamples: number): Lineage {
  const encoderFile = ctx.inputs.embed?.files["encoder.json"];
  const encoder =
    encoderFile && existsSync(encoderFile) ? (JSON.parse(readFileSync(encoderFile, "utf8")) as { id?: string; dim?: number; digest?: string }) : {};
  const fingerprintFile = ctx.inputs.ingest?.files["fingerprint.json"];
  const upstream: Record<string, string> = {};
  for (const [stage, input] of Object.entries(ctx.inputs)) upstream[stage] = input.digest;
  return {
    pipeline: ctx.pipeline.name,
    datasetFingerprint: fingerprintFile && existsSync(fingerprintFile) ? sha256(readFileSync(fingerprintFile)) : null,
    upstream,
    encoder: { id: encoder.id ?? null, dim: encoder.dim ?? dim, digest: encoder.digest ?? null },
    params: { ...withoutGate(ctx.params), seed },
    seed,
    packageVersion: PACKAGE_VERSION,
    counts: {
      pairedSamples,
      prototypes: built.prototypes.cluster.length,
      surrogateLabels: built.numClusters,
      noise: built.noisePoints,
      dropped: built.droppedPoints,
    },
  };
}

/**
 * The usefulness check on (a seeded sample of) the validation rows, logged; a space that fails
 * it is a warning (`onUseless: warn`) or a DataError before anything is published (`fail`).
 */
async function checkUsefulness(
  ctx: StageContext<PrototypesParams>,
  seed: number,
  built: BuildResult,
  trainingTexts: Float32Array,
  validation: PairedSamples,
): Promise<UsefulnessCheck | { samples: 0; skipped: string }> {
  const params = ctx.params;
  const p = built.prototypes;
  const space = new PrototypeSpace(p.queries, p.responses, p.dim);
  if (validation.ids.length === 0) {
    const skipped = { samples: 0 as const, skipped: "no validation sample has an available report with a text embedding" };
    ctx.warn("usefulness-check-skipped", `the usefulness check did not run: ${skipped.skipped}`);
    return skipped;
  }
  const heldOut = sampleRows(validation, params.usefulnessSamples, seed);
  if (heldOut.ids.length < validation.ids.length)
    ctx.log(`usefulness check on a seeded sample of ${heldOut.ids.length} of the ${validation.ids.length} validation rows (usefulnessSamples)`);
  const usefulness = await usefulnessCheck(space, p.queries, p.responses, trainingTexts, heldOut, { topK: params.topK, temperature: params.temperature, seed });
  ctx.log(formatUsefulness(usefulness), usefulness.passed ? "info" : "warn");
  if (!usefulness.passed && params.onUseless === "warn") {
    ctx.warn(
      "prototypes-not-useful",
      `on ${usefulness.samples} validation samples PSA's approximation does not find an image's own report better than its shuffled copy (own-report AUC ${usefulness.ownReportAuc.toFixed(4)} vs ${usefulness.shuffled.ownReportAuc.toFixed(4)}, centred cosine ${usefulness.centredCosine.toFixed(4)} vs ${usefulness.shuffled.centredCosine.toFixed(4)})`,
      {
        samples: usefulness.samples,
        ownReportAuc: usefulness.ownReportAuc,
        centredCosine: usefulness.centredCosine,
        shuffledOwnReportAuc: usefulness.shuffled.ownReportAuc,
        shuffledCentredCosine: usefulness.shuffled.centredCosine,
        marginOverMean: usefulness.marginOverMean,
        marginOverRandom: usefulness.marginOverRandom,
      },
    );
  }
  if (!usefulness.passed && params.onUseless === "fail") {
    throw new DataError(
      `the prototype space is not useful: on ${usefulness.samples} validation samples PSA's approximation finds an image's own report with AUC ${usefulness.ownReportAuc.toFixed(4)} and centred cosine ${usefulness.centredCosine.toFixed(4)}, against ${usefulness.shuffled.ownReportAuc.toFixed(4)} and ${usefulness.shuffled.centredCosine.toFixed(4)} with the responses shuffled among the prototypes (gains ${usefulness.gains.ownReportAuc.toFixed(4)} +- ${usefulness.gains.ownReportAucSe.toFixed(4)} and ${usefulness.gains.centredCosine.toFixed(4)} +- ${usefulness.gains.centredCosineSe.toFixed(4)}; both must exceed two standard errors); nothing was published`,
      {
        hint: "image embeddings that cannot find their reports make PSA noise: use encoder: learned or biomedclip (docs/embed.md), or onUseless: warn to train anyway",
      },
    );
  }
  return usefulness;
}

/** The params that shape the artifact (the usefulness check and its gate do not), for its lineage. */
function withoutGate(params: PrototypesParams): Omit<PrototypesParams, "onUseless" | "usefulnessSamples"> {
  const { onUseless: _gate, usefulnessSamples: _samples, ...rest } = params;
  return rest;
}

/** At most `limit` rows of `rows`, a seeded sample in table order (all of them when there are fewer). */
export function sampleRows(rows: PairedSamples, limit: number, seed: number): PairedSamples {
  const n = rows.ids.length;
  if (n <= limit) return rows;
  const random = mulberry32(seed ^ 0x7a11);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < limit; i++) {
    const j = i + Math.floor(random() * (n - i));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const picked = order.slice(0, limit).sort((a, b) => a - b);
  const { dim } = rows;
  const images = new Float32Array(limit * dim);
  const texts = new Float32Array(limit * dim);
  picked.forEach((row, i) => {
    images.set(rows.images.subarray(row * dim, (row + 1) * dim), i * dim);
    texts.set(rows.texts.subarray(row * dim, (row + 1) * dim), i * dim);
  });
  return { ids: picked.map((row) => rows.ids[row]!), dim, images, texts };
}
